"""The shape explorer: pick a model and an input size, see every stage of v1 beside v2.

``explorer_rows``, ``explorer_figure`` and ``explorer_html`` are plain functions (tested);
``shape_explorer`` only wires them to a dropdown and a slider: the drawing of each stage's output
tensor (``diagrams.draw_stage_tensors``) on top, the table below. Models are built once per name and cached, because
building ResNet-152 takes a few seconds on a laptop; the stage table itself is computed on
PyTorch's meta device (see ``stages.stage_shapes``), so moving the slider is quick.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from functools import cache

import ipywidgets as widgets
from torch import nn

from .diagrams import draw_stage_tensors
from .models import MODEL_NAMES, get_model
from .stages import row_cells, stage_shapes, total_row

#: The dropdown's choices: (label, (v1 name, v2 name or None)).
EXPLORER_CHOICES = (
    ("ResNet-50 | ResNet50V2", ("resnet50", "resnet50v2")),
    ("ResNet-101 | ResNet101V2", ("resnet101", "resnet101v2")),
    ("ResNet-152 | ResNet152V2", ("resnet152", "resnet152v2")),
    ("ResNet-18 (v1 only)", ("resnet18", None)),
    ("ResNet-34 (v1 only)", ("resnet34", None)),
)
#: The input-size slider: 64 to 512 px in steps of 32, starting at the ImageNet 224.
SIZE_MIN, SIZE_MAX, SIZE_STEP, SIZE_DEFAULT = 64, 512, 32, 224


@cache
def cached_model(name: str) -> nn.Module:
    """``get_model(name)`` (1000 classes, as in the papers' tables), built once per name, in eval mode."""
    return get_model(name).eval()


def explorer_rows(
    v1_name: str = "resnet50", v2_name: str | None = "resnet50v2", input_size: int = 224
) -> list[tuple[dict | None, dict | None]]:
    """Pairs ``(v1 row, v2 row)`` of ``stage_shapes`` rows, stem first and head last.

    Either side is None where that model has no such row (or when ``v2_name`` is None).
    """
    for name in (v1_name, v2_name):
        if name is not None and name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    rows_v1 = stage_shapes(cached_model(v1_name), input_size)
    rows_v2 = stage_shapes(cached_model(v2_name), input_size) if v2_name else []
    length = max(len(rows_v1), len(rows_v2))
    return [(rows_v1[i] if i < len(rows_v1) else None, rows_v2[i] if i < len(rows_v2) else None) for i in range(length)]


def _cells(row: dict | None, tag: str = "td") -> str:
    if row is None:
        return f"<{tag}></{tag}>" * 4
    stage, *values = row_cells(row, 1e9, times="&times;")
    aligns = ["left", "left", "right", "right"]
    return "".join(f'<{tag} style="text-align:{a}">{v}</{tag}>' for v, a in zip([html.escape(stage), *values], aligns))


def _total(rows: Sequence[dict | None]) -> dict | None:
    present = [row for row in rows if row is not None]
    return total_row(present) if present else None


def explorer_html(v1_name: str = "resnet50", v2_name: str | None = "resnet50v2", input_size: int = 224) -> str:
    """The side-by-side table as HTML: stage, output shape, parameters and GMACs of each model."""
    pairs = explorer_rows(v1_name, v2_name, input_size)
    columns = "".join(f'<th style="text-align:left">{c}</th>' for c in ("stage", "output shape", "params", "GMACs")) * 2
    titles = (
        f'<th colspan="4" style="text-align:left">{html.escape(v1_name)}</th>'
        f'<th colspan="4" style="text-align:left">{html.escape(v2_name or "")}</th>'
    )
    body = "".join(f"<tr>{_cells(a)}{_cells(b)}</tr>" for a, b in pairs)
    totals = _cells(_total([a for a, _ in pairs]), "th") + _cells(_total([b for _, b in pairs]), "th")
    return (
        f"<p>Input {input_size}&times;{input_size} px, one image, 1000 classes.</p>"
        f"<table><thead><tr>{titles}</tr><tr>{columns}</tr></thead>"
        f"<tbody>{body}</tbody><tfoot><tr>{totals}</tr></tfoot></table>"
    )


def explorer_figure(v1_name: str = "resnet50", v2_name: str | None = "resnet50v2", input_size: int = 224):
    """Each stage's output tensor drawn as a box (``diagrams.draw_stage_tensors``), v1 above v2."""
    pairs = explorer_rows(v1_name, v2_name, input_size)
    models = [(v1_name, [a for a, _ in pairs if a is not None])]
    if v2_name:
        models.append((v2_name, [b for _, b in pairs if b is not None]))
    return draw_stage_tensors(models, input_size)


def explorer_png(
    v1_name: str = "resnet50", v2_name: str | None = "resnet50v2", input_size: int = 224, dpi: int = 80
) -> bytes:
    """``explorer_figure`` as PNG bytes, what the widget shows."""
    buffer = io.BytesIO()
    explorer_figure(v1_name, v2_name, input_size).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def shape_explorer():
    """An ipywidgets box: a model dropdown, an input-size slider, the live drawing and below it
    the side-by-side table."""
    dropdown = widgets.Dropdown(options=list(EXPLORER_CHOICES), value=EXPLORER_CHOICES[0][1], description="model")
    slider = widgets.IntSlider(
        value=SIZE_DEFAULT, min=SIZE_MIN, max=SIZE_MAX, step=SIZE_STEP, description="input px", continuous_update=False
    )
    picture = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    table = widgets.HTML()

    def update(_change=None) -> None:
        v1_name, v2_name = dropdown.value
        picture.value = explorer_png(v1_name, v2_name, slider.value)
        table.value = explorer_html(v1_name, v2_name, slider.value)

    dropdown.observe(update, names="value")
    slider.observe(update, names="value")
    update()
    return widgets.VBox([dropdown, slider, picture, table])
