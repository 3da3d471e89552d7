"""Look inside a network stage by stage: output shape, parameters and multiply-accumulates.

A ResNet is a stem, four stages and a head (He et al. 2015, Table 1). ``stage_shapes`` runs a
dummy image through those pieces one after the other and records what each one produces and
costs, which is the table notebook 03 builds at 224 px (and 352 px) and the shape explorer shows.
Operations are counted by ``torch.utils.flop_counter.FlopCounterMode``, not by hand: it counts
convolutions and matrix products, where FLOPs = 2 x MACs; batch norm, ReLU, pooling and the
residual additions are too cheap to matter and are not counted (as in the paper's "FLOPs").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from .device import evaluating
from .tables import shape_text, text_table

#: The attributes of a torchvision ResNet, in forward order (torchvision/models/resnet.py).
TORCHVISION_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


def model_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pieces whose chained application equals ``model(x)``.

    Course models provide ``model.stages()``; a torchvision ResNet is split the same way:
    ``stem`` (conv1, bn1, relu, maxpool), ``layer1``..``layer4`` and ``head`` (avgpool, flatten, fc).
    """
    if callable(getattr(model, "stages", None)):
        return list(model.stages())
    if all(isinstance(getattr(model, part, None), nn.Module) for part in TORCHVISION_RESNET_PARTS):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        head = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
        layers = [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
        return [("stem", stem), *layers, ("head", head)]
    raise TypeError(
        f"cannot split a {type(model).__name__} into stages: expected a course model with a "
        "stages() method or a torchvision ResNet (conv1, bn1, relu, maxpool, layer1..layer4, "
        "avgpool, fc)"
    )


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters; BatchNorm running statistics are buffers and never counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _image_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``(H, W)`` as an ``(H, W)`` tuple of positive ints, with a clear error otherwise."""
    if isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        try:
            size = tuple(input_size)
        except TypeError:
            size = ()
    if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise ValueError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    return size


def _input_channels(model: nn.Module) -> int:
    """Channels the first convolution expects (3 for every model in the course)."""
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first_conv.in_channels if first_conv is not None else 3


def _run_counted(stage: nn.Module, x: torch.Tensor, on_meta: bool) -> tuple[torch.Tensor, int]:
    """``stage(x)`` and the FLOPs it took; on the meta device only shapes are computed, no numbers."""
    counter = FlopCounterMode(display=False)
    with counter:
        if on_meta:
            tensors = {name: t.to("meta") for name, t in [*stage.named_parameters(), *stage.named_buffers()]}
            x = functional_call(stage, tensors, (x.to("meta"),))
        else:
            x = stage(x)
    return x, counter.get_total_flops()


def _stage_rows(stages: list[tuple[str, nn.Module]], x: torch.Tensor, on_meta: bool) -> list[dict]:
    rows = []
    for name, stage in stages:
        try:
            x, flops = _run_counted(stage, x, on_meta)
        except RuntimeError as error:
            raise ValueError(
                f"stage {name!r} cannot run on its input of shape {tuple(x.shape[1:])}: {error}"
            ) from error
        flops //= x.shape[0]
        rows.append(
            {
                "stage": name,
                "shape": tuple(x.shape[1:]),
                "params": count_params(stage),
                "macs": flops // 2,
                "flops": flops,
            }
        )
    return rows


def stage_shapes(model: nn.Module, input_size: int | Sequence[int] = 224, batch_size: int = 1) -> list[dict]:
    """One row per stage, in forward order: ``stage``, ``shape`` (C, H, W), ``params``, ``macs``, ``flops``.

    Each stage runs on the previous stage's output (eval mode, no gradients). ``macs`` and
    ``flops`` are per image; ``params`` counts the stage's trainable parameters, so the rows add
    up to ``count_params(model)``. The stages run on PyTorch's "meta" device, which works out
    shapes without doing the arithmetic, so even ResNet-152 at 512 px takes a moment on a laptop
    (any layer without a meta implementation makes it fall back to a real run). The model's
    train/eval flags are restored afterwards.
    """
    height, width = _image_size(input_size)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    stages = model_stages(model)
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    x = torch.zeros(batch_size, _input_channels(model), height, width, device=device, dtype=dtype)

    with torch.no_grad(), evaluating(model):
        try:
            return _stage_rows(stages, x, on_meta=True)
        except (NotImplementedError, ValueError):
            # A real run gives the same numbers, and the real error message if the input is bad.
            return _stage_rows(stages, x, on_meta=False)


def _mac_unit(rows: Iterable[dict]) -> tuple[str, float]:
    """GMACs for ImageNet-sized models, MMACs for the small CIFAR nets."""
    total = sum(row["macs"] for row in rows)
    return ("GMACs", 1e9) if total >= 1e8 else ("MMACs", 1e6)


def total_row(rows: Sequence[dict]) -> dict:
    """A "total" row for ``stage_shapes`` rows: the last shape, summed parameters and MACs."""
    return {
        "stage": "total",
        "shape": rows[-1]["shape"] if rows else (),
        "params": sum(r["params"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
    }


def row_cells(row: dict | None, scale: float, times: str = "x") -> list[str]:
    """A ``stage_shapes`` row as the text of its table cells: stage, output shape (its sides joined
    by ``times``), parameters, MACs divided by ``scale``; four empty cells for None."""
    if row is None:
        return ["", "", "", ""]
    return [row["stage"], shape_text(row["shape"], times), f"{row['params']:,}", f"{row['macs'] / scale:.3f}"]


def _render(header: list[str], body: list[list[str]]) -> str:
    """Text columns (numbers right-aligned), a rule under the header and above the total row."""
    numeric = [h == "params" or h.endswith("MACs") for h in header]
    return text_table(header, body, right=numeric, total=True)


def format_table(rows: Sequence[dict]) -> str:
    """The rows of ``stage_shapes`` as a small text table with a total row."""
    unit, scale = _mac_unit(rows)
    header = ["stage", "output shape", "params", unit]
    body = [row_cells(row, scale) for row in rows] + [row_cells(total_row(rows), scale)]
    return _render(header, body)


def compare_table(rows_a: Sequence[dict], rows_b: Sequence[dict], names: tuple[str, str] = ("v1", "v2")) -> str:
    """Two ``stage_shapes`` results side by side (e.g. ResNet-50 beside ResNet50V2), row by row."""
    unit, scale = _mac_unit([*rows_a, *rows_b])
    columns = ["stage", "output shape", "params", unit]
    length = max(len(rows_a), len(rows_b))
    body = [
        row_cells(rows_a[i] if i < len(rows_a) else None, scale)
        + ["|"]
        + row_cells(rows_b[i] if i < len(rows_b) else None, scale)
        for i in range(length)
    ]
    body.append(row_cells(total_row(rows_a), scale) + ["|"] + row_cells(total_row(rows_b), scale))
    text = _render(columns + ["|"] + columns, body)
    left_width = text.splitlines()[0].index("|")
    title = names[0].ljust(left_width) + "| " + names[1]
    return title + "\n" + text
