"""Pictures of blocks and networks, drawn from the modules themselves.

``tracing.block_graph`` reads what a block's ``forward`` does with a ``torch.fx`` trace (the same
way ``ablation.operation_order`` reads it): every convolution, BatchNorm, ReLU, pooling and
addition, in forward order, and which of them feeds which. ``draw_block`` lays that graph out as
the papers do (residual branch down the middle, shortcut to the right, the addition where they
meet), so a change in ``blocks.py`` changes the picture and the picture cannot disagree with the
code.
``draw_network`` draws a whole network stage by stage from ``model.stages()`` with the output
shape of each stage, and ``draw_stage_tensors`` draws each stage's output tensor as a box whose
sides follow its channels, height and width (what the shape explorer shows).

Matplotlib only; every function returns a ``Figure`` built without pyplot (see ``plots``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Polygon
from torch import nn

from .stages import model_stages, stage_shapes
from .tables import shape_text
from .tracing import BlockGraph, block_graph, trace_operations

#: Box colours by kind of operation (the same in every figure of the course).
KIND_COLORS = {
    "conv": "#cfe2f3",
    "BN": "#fff2cc",
    "ReLU": "#d9ead3",
    "max pool": "#ead1dc",
    "avg pool": "#ead1dc",
    "fc": "#cfe2f3",
    "add": "#ffffff",
}
#: Edge colour of an operation that changes the spatial size (stride > 1): where the stride sits.
STRIDE_COLOR = "#cc0000"


# --------------------------------------------------------------------------------------------
# Drawing a block
# --------------------------------------------------------------------------------------------

_BOX_W, _BOX_H, _COL_DX, _ROW_DY, _ADD_R = 2.5, 0.66, 2.85, 0.95, 0.25


def _xy(column: int, row: int) -> tuple[float, float]:
    return column * _COL_DX, -row * _ROW_DY


def _box(ax, x: float, y: float, text: str, kind: str, stride: int, gid: str, width: float = _BOX_W) -> None:
    edge, lw = (STRIDE_COLOR, 2.2) if stride > 1 else ("#444444", 1.0)
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - _BOX_H / 2),
            width,
            _BOX_H,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=KIND_COLORS.get(kind, "#eeeeee"),
            ec=edge,
            lw=lw,
            zorder=2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5, linespacing=1.1, zorder=3, gid=gid)


def _arrow(ax, points: list, into: str, color: str = "#444444") -> None:
    """A polyline through ``points`` whose last segment ends with an arrowhead; ``into`` says
    what it points at ("box", "add" or "end") so the head stops at that shape's border."""
    clean = [points[0]]
    for p in points[1:]:
        if p != clean[-1]:
            clean.append(p)
    for a, b in zip(clean[:-2], clean[1:-1]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color=color, lw=1.1, zorder=1)
    (x0, y0), (x1, y1) = clean[-2], clean[-1]
    gap = {"box": _BOX_H / 2, "add": _ADD_R, "end": 0.0}[into]
    if into == "box" and abs(x1 - x0) > abs(y1 - y0):
        gap = _BOX_W / 2
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    end = (x1 - (x1 - x0) / length * gap, y1 - (y1 - y0) / length * gap)
    ax.annotate(
        "",
        xy=end,
        xytext=(x0, y0),
        zorder=1,
        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.1, shrinkA=0, shrinkB=0),
    )


def _draw_graph(ax, graph: BlockGraph, title: str = "") -> None:
    """Draw one block's graph on ``ax``: input on top, output at the bottom."""
    ops, column, row = graph.ops, graph.column, graph.row
    last_row = max(row, default=0) + 1
    positions = {-1: _xy(0, 0)}
    ax.text(
        *_xy(0, 0),
        "x",
        ha="center",
        va="center",
        fontsize=10,
        fontweight="bold",
        zorder=3,
        bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#444444"),
    )
    for i, op in enumerate(ops):
        positions[i] = _xy(column[i], row[i])
        gid = f"op{i}:{op.kind}"
        if op.kind == "add":
            x, y = positions[i]
            ax.add_patch(Circle((x, y), _ADD_R, fc="white", ec="#444444", lw=1.2, zorder=2))
            ax.text(x, y, "+", ha="center", va="center", fontsize=13, zorder=3, gid=gid)
        else:
            _box(ax, *positions[i], op.text, op.kind, op.stride, gid)
    shortcut_drawn = any(c == 1 for c in column)
    for i, op in enumerate(ops):
        x, y = positions[i]
        into = "add" if op.kind == "add" else "box"
        for j in op.inputs:
            sx, sy = positions[j]
            if column[i] == column[j] == 0 and (j < 0 and row[i] == 1 or j >= 0 and row[i] == row[j] + 1):
                _arrow(ax, [(sx, sy), (x, y)], into)
            elif column[i] == 0 and column[j] == 0:  # a skip along the main path: the identity shortcut
                rx = _COL_DX
                _arrow(ax, [(sx, sy), (rx, sy), (rx, y), (x, y)], into)
                if not shortcut_drawn:
                    ax.text(
                        rx + 0.1,
                        (sy + y) / 2,
                        "identity",
                        rotation=90,
                        ha="left",
                        va="center",
                        fontsize=8,
                        color="#444444",
                    )
            elif column[i] == 1 and column[j] == 0:  # the shortcut leaves the main path
                _arrow(ax, [(sx, sy), (x, sy), (x, y)], into)
            elif column[i] == 0 and column[j] == 1:  # the shortcut joins the addition
                _arrow(ax, [(sx, sy), (sx, y), (x, y)], into)
            else:
                _arrow(ax, [(sx, sy), (x, y)], into)
    final = len(ops) - 1 if ops else -1
    out_xy = _xy(0, last_row)
    _arrow(ax, [positions[final], out_xy], "end")
    ax.text(*out_xy, "out", ha="center", va="top", fontsize=10, fontweight="bold")
    ax.set_xlim(-_BOX_W / 2 - 0.2, _COL_DX + _BOX_W / 2 + 0.2)
    ax.set_ylim(-last_row * _ROW_DY - 0.45, 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)


def draw_blocks(blocks: Sequence[tuple[str, nn.Module]], title: str = "") -> Figure:
    """Blocks side by side, one panel each, titled by the given names.

    Each panel is ``block_graph`` of its module: the residual branch in the middle, the
    shortcut on the right, strided operations outlined in red.
    """
    graphs = [(name, block_graph(module)) for name, module in blocks]
    if not graphs:
        raise ValueError("draw_blocks needs at least one (title, module) pair")
    rows = max(max(g.row, default=0) for _, g in graphs) + 2
    fig = Figure(figsize=(2.85 * len(graphs), 0.5 + 0.42 * rows), layout="constrained")
    axes = fig.subplots(1, len(graphs), squeeze=False)[0]
    for ax, (name, graph) in zip(axes, graphs):
        _draw_graph(ax, graph, name)
        ax.set_ylim(-rows * _ROW_DY + 0.5, 0.5)
    if title:
        fig.suptitle(title)
    return fig


def draw_block(module: nn.Module, title: str = "") -> Figure:
    """One block drawn from its code (see ``draw_blocks``)."""
    return draw_blocks([(title, module)])


def drawn_operations(fig: Figure) -> list[list[str]]:
    """The kinds of the operations drawn in each panel of a ``draw_blocks`` figure, in forward order
    (read back from the figure's text labels, for tests and curious readers)."""
    panels = []
    for ax in fig.axes:
        labelled = [t.get_gid() for t in ax.texts if (t.get_gid() or "").startswith("op")]
        labelled.sort(key=lambda gid: int(gid[2 : gid.index(":")]))
        panels.append([gid.split(":", 1)[1] for gid in labelled])
    return panels


# --------------------------------------------------------------------------------------------
# Drawing a network stage by stage
# --------------------------------------------------------------------------------------------


def stage_summary(name: str, stage: nn.Module) -> dict:
    """What a stage is made of: ``blocks`` (how many), ``block`` (class name) and ``lines``
    (the first block's operations, convolutions with kernel, channels and stride), or for a
    stem/head without blocks, its own operations."""
    children = list(stage.children()) if isinstance(stage, nn.Sequential) else []
    # blocks are the course's own modules; torch.nn's layers (a stem's conv, BN, ...) are not
    if children and all(not type(c).__module__.startswith("torch.nn") for c in children):
        graphs = [block_graph(c) for c in children]
        first = graphs[0]
        convs = [
            op.text.replace("conv ", "").replace("\n", ", ")
            for op, col in zip(first.ops, first.column)
            if op.kind == "conv" and col == 0
        ]
        strided = [i + 1 for i, g in enumerate(graphs) if any(op.stride > 1 for op in g.ops)]
        lines = convs + ([f"stride 2 in block {', '.join(map(str, strided))}"] if strided else [])
        return {"stage": name, "blocks": len(children), "block": type(children[0]).__name__, "lines": lines}
    ops = trace_operations(stage)
    return {"stage": name, "blocks": 0, "block": "", "lines": [op.text.replace("\n", ", ") for op in ops]}


def draw_network(model: nn.Module, input_size: int = 224, title: str = "") -> Figure:
    """A network as a row of stages (``model.stages()``, stem first): what each stage holds
    (blocks x first block's convolutions, or the stem's and head's operations) and the shape
    it outputs for one ``input_size`` image, worked out by ``stages.stage_shapes``."""
    stages = model_stages(model)
    shapes = [row["shape"] for row in stage_shapes(model, input_size)]
    n = len(stages)
    fig = Figure(figsize=(1.85 * n + 0.3, 2.4), layout="constrained")
    ax = fig.subplots()
    width, height = 1.6, 1.55
    for i, ((name, stage), shape) in enumerate(zip(stages, shapes)):
        info = stage_summary(name, stage)
        x = i * 1.85
        ax.add_patch(
            FancyBboxPatch(
                (x, 0), width, height, boxstyle="round,pad=0.02,rounding_size=0.08", fc="#f3f3f3", ec="#444444"
            )
        )
        head = name if not info["blocks"] else f"{name}\n{info['blocks']} × {info['block']}"
        ax.text(
            x + width / 2,
            height - 0.08,
            head,
            ha="center",
            va="top",
            fontsize=8.5,
            fontweight="bold",
            gid=f"stage{i}:{name}:{info['blocks']}",
        )
        ax.text(
            x + width / 2,
            height - 0.55,
            "\n".join(info["lines"]),
            ha="center",
            va="top",
            fontsize=6.8,
            linespacing=1.25,
        )
        ax.text(
            x + width / 2,
            -0.12,
            shape_text(shape),
            ha="center",
            va="top",
            fontsize=8,
            color="#0b5394",
            gid=f"shape{i}:{shape_text(shape)}",
        )
        if i + 1 < n:
            ax.annotate(
                "",
                xy=(x + 1.85, height / 2),
                xytext=(x + width, height / 2),
                arrowprops=dict(arrowstyle="-|>", color="#444444", shrinkA=0, shrinkB=0),
            )
    ax.text(-0.05, -0.12, "out:", ha="right", va="top", fontsize=8, color="#0b5394")
    ax.set_xlim(-0.45, (n - 1) * 1.85 + width + 0.05)
    ax.set_ylim(-0.45, height + 0.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"{type(model).__name__}, {input_size}×{input_size} px input", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Tensors as boxes
# --------------------------------------------------------------------------------------------


def side_length(n: int) -> float:
    """The drawn length of a tensor side of ``n`` elements: log2(n) + 1, so 1 -> 1, 2048 -> 12
    (a linear scale would make 7×7 maps invisible next to 2048 channels)."""
    if n < 1:
        raise ValueError(f"a tensor side has at least one element, got {n}")
    return math.log2(n) + 1


def _chw(shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of a stage output; a pooled vector (C,) or (C, 1, 1) is C×1×1."""
    shape = tuple(shape)
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 3:
        return shape
    raise ValueError(f"expected a (C, H, W) or (C,) shape, got {shape}")


_DEPTH_SLANT = (0.5, 0.35)  # the C axis drawn as an oblique direction (x, y per unit length)


def _cuboid(ax, x: float, shape: Sequence[int], color: str, gid: str) -> float:
    """Draw one tensor as an oblique box standing on y = 0 at ``x``: W across, H up, C into the
    page (log lengths, see ``side_length``); returns the x where it ends."""
    c, h, w = _chw(shape)
    wl, hl, cl = side_length(w), side_length(h), side_length(c)
    dx, dy = cl * _DEPTH_SLANT[0], cl * _DEPTH_SLANT[1]
    front = [(x, 0), (x + wl, 0), (x + wl, hl), (x, hl)]
    top = [(x, hl), (x + wl, hl), (x + wl + dx, hl + dy), (x + dx, hl + dy)]
    side = [(x + wl, 0), (x + wl + dx, dy), (x + wl + dx, hl + dy), (x + wl, hl)]
    for points, shade in ((side, 0.75), (top, 0.9), (front, 1.0)):
        ax.add_patch(Polygon(points, closed=True, fc=color, ec="#333333", lw=0.8, alpha=shade, gid=gid))
    ax.text(x + wl / 2, -0.35, f"W {w}", ha="center", va="top", fontsize=7)
    ax.text(x - 0.2, hl / 2, f"H {h}", ha="right", va="center", fontsize=7, rotation=90)
    ax.text(
        x + wl + dx / 2 + 0.25,
        hl + dy / 2,
        f"C {c}",
        ha="left",
        va="center",
        fontsize=7,
        rotation=math.degrees(math.atan2(_DEPTH_SLANT[1], _DEPTH_SLANT[0])),
    )
    return x + wl + dx


def draw_stage_tensors(models: Sequence[tuple[str, Sequence[dict]]], input_size: int | None = None) -> Figure:
    """Each stage's output tensor as a box, one row per model (v1 above v2), stages left to right.

    ``models`` holds ``(name, stage_shapes rows)`` pairs. A box's width, height and depth are
    ``side_length`` of W, H and C, and the numbers are written on its sides; the stage name and
    the shape ``C×H×W`` are written under it.
    """
    models = [(name, rows) for name, rows in models if rows]
    if not models:
        raise ValueError("draw_stage_tensors needs at least one model with stage rows")
    colors = ("#9fc5e8", "#f9cb9c", "#b6d7a8")
    layouts = []
    for name, rows in models:
        x, boxes = 0.0, []
        for row in rows:
            start = x
            c, h, w = _chw(row["shape"])
            x = start + side_length(w) + side_length(c) * _DEPTH_SLANT[0] + 1.6
            boxes.append((start, row))
        layouts.append((name, boxes, x))
    width = max(end for _, _, end in layouts)
    heights = [
        max(side_length(_chw(r["shape"])[1]) + side_length(_chw(r["shape"])[0]) * _DEPTH_SLANT[1] for _, r in boxes)
        for _, boxes, _ in layouts
    ]
    band = max(heights) + 5.0  # name above, labels below
    top, bottom = heights[0] + 1.6, -(len(models) - 1) * band - 3.4
    inches = 13.0 / (width + 1.2)
    fig = Figure(figsize=(13.0, (top - bottom) * inches + 0.5), layout="constrained")
    ax = fig.subplots()
    for k, (name, boxes, _) in enumerate(layouts):
        y0 = -k * band
        ax.text(
            -1.0,
            y0 + heights[k] + 0.5,
            name,
            ha="left",
            va="bottom",
            fontsize=10,
            fontweight="bold",
            gid=f"model{k}:{name}",
        )
        for i, (x, row) in enumerate(boxes):
            shape = _chw(row["shape"])
            gid = f"box{k}.{i}:{row['stage']}:{shape_text(shape)}"
            before = len(ax.patches), len(ax.texts)
            _cuboid(ax, x, shape, colors[k % len(colors)], gid)
            for patch in ax.patches[before[0] :]:  # move the box into its model's row
                patch.set_xy([(px, py + y0) for px, py in patch.get_xy()])
            for text in ax.texts[before[1] :]:
                tx, ty = text.get_position()
                text.set_position((tx, ty + y0))
            ax.text(
                x + side_length(shape[2]) / 2,
                y0 - 1.3,
                f"{row['stage']}\n{shape_text(row['shape'])}",
                ha="center",
                va="top",
                fontsize=7.5,
                color="#0b5394",
            )
    ax.set_xlim(-1.2, width)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.axis("off")
    title = "Output of each stage, every side on a log scale: W across, H up, C into the page"
    ax.set_title(title + (f", {input_size}×{input_size} px input" if input_size else ""), fontsize=9.5)
    return fig


def drawn_boxes(fig: Figure) -> list[dict]:
    """The tensor boxes of a ``draw_stage_tensors`` figure: model row, stage, shape and the drawn
    width/height/depth read back from the polygons (for tests and curious readers)."""
    found: dict = {}
    for ax in fig.axes:
        for patch in ax.patches:
            gid = patch.get_gid() or ""
            if gid.startswith("box"):
                found.setdefault(gid, []).append(patch.get_xy())
    boxes = []
    for gid, polygons in found.items():
        where, stage, shape = gid[3:].split(":")
        model, index = (int(n) for n in where.split("."))
        front = polygons[-1]  # drawn last
        xs, ys = [p[0] for p in front], [p[1] for p in front]
        side = polygons[0]
        depth_x = max(p[0] for p in side) - max(xs)
        boxes.append(
            {
                "model": model,
                "index": index,
                "stage": stage,
                "shape": tuple(int(n) for n in shape.split("×")),
                "width": max(xs) - min(xs),
                "height": max(ys) - min(ys),
                "depth": depth_x / _DEPTH_SLANT[0],
            }
        )
    return sorted(boxes, key=lambda b: (b["model"], b["index"]))


__all__ = [
    "KIND_COLORS",
    "STRIDE_COLOR",
    "draw_blocks",
    "draw_block",
    "drawn_operations",
    "stage_summary",
    "draw_network",
    "side_length",
    "draw_stage_tensors",
    "drawn_boxes",
]
