"""The five residual-unit orderings of He et al. 2016 (Fig. 4), read off the code and compared at initialisation.

- ``operation_order``: what a unit's ``forward`` does, in order ("BN → ReLU → conv → ... → add"),
  read from a ``torch.fx`` trace of the code itself rather than written by hand.
- ``signal_propagation``: a stack of 100+ units of one ordering (same shape throughout, so every
  shortcut is the identity), one forward and one backward pass at initialisation: how the signal
  (the spread of each unit's output, and how much of the input it still carries) and the gradient
  (its norm at each unit) change from unit to unit. This is the paper's argument (Sec. 3-4, Eq.
  4-5) measured directly: with nothing on the shortcut path, the input and the gradient reach every
  unit unchanged, plus what the branches add. It says nothing about accuracy after training: the
  paper's numbers for that are ``PAPER_CIFAR10_ERRORS`` and ``PAPER_IMAGENET_TOP1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import UNIT_ORDERINGS, ResidualUnit
from .device import torch_threads
from .tables import text_table
from .tracing import trace_operations

__all__ = [
    "UNIT_LABELS",
    "PAPER_CIFAR10_ERRORS",
    "PAPER_IMAGENET_TOP1",
    "operation_order",
    "zero_branch",
    "Propagation",
    "propagate",
    "signal_propagation",
    "by_unit",
    "format_propagation",
]

#: The five orderings of a residual unit (He et al. 2016, "Identity Mappings in Deep Residual
#: Networks", Fig. 4 (a)-(e); names from ``blocks.UNIT_ORDERINGS``) in plain words.
UNIT_LABELS = dict(
    zip(
        UNIT_ORDERINGS,
        ("original", "BN after addition", "ReLU before addition", "ReLU-only pre-activation", "full pre-activation"),
    )
)

#: He et al. 2016, Table 2: CIFAR-10 test error (%) of each unit ordering, for (ResNet-110,
#: ResNet-164). The paper reports the median of 5 runs.
PAPER_CIFAR10_ERRORS = {
    "original": (6.61, 5.93),
    "bn_after_add": (8.17, 6.50),
    "relu_before_add": (7.84, 6.14),
    "relu_only_preact": (6.71, 5.91),
    "full_preact": (6.37, 5.46),
}

#: He et al. 2016, Table 5: ImageNet top-1 error (%, 320x320 crop test) of the original unit and
#: of full pre-activation, for (ResNet-152, ResNet-200).
PAPER_IMAGENET_TOP1 = {"ResNet-152": (21.3, 21.1), "ResNet-200": (21.8, 20.7)}

# --------------------------------------------------------------------------------------------
# The order of operations
# --------------------------------------------------------------------------------------------


def operation_order(module: nn.Module, skip: Sequence[str] = ("shortcut", "downsample")) -> list[str]:
    """The operations ``module.forward`` performs, in order, e.g. ``["conv", "BN", "ReLU", ..., "add"]``.

    Read from a ``torch.fx`` trace (``tracing.trace_operations``, which ``diagrams`` draws from too), so
    it is what the code does. Submodules are named by kind ("conv", "BN", "ReLU", "max pool",
    "fc"), additions are "add"; the shortcut's own operations
    (submodules whose name starts with one of ``skip``) and identities are left out, so a unit
    reads like a column of He et al. 2016, Fig. 4. A forward with data-dependent control flow
    cannot be traced and raises fx's error.
    """
    return [op.kind for op in trace_operations(module) if op.target.split(".")[0] not in skip]


# --------------------------------------------------------------------------------------------
# Signal and gradient through a deep stack of units, at initialisation
# --------------------------------------------------------------------------------------------


def zero_branch(unit: ResidualUnit) -> ResidualUnit:
    """Make the unit's residual branch output exactly 0 by zeroing its last operation: the last BN's
    scale where the branch ends in a BN (torchvision's ``zero_init_residual``), the last conv's
    weights where it ends in a conv (BN after addition, full pre-activation). Returns the unit."""
    with torch.no_grad():
        if unit.ordering in ("bn_after_add", "full_preact"):
            unit.conv2.weight.zero_()
        else:
            unit.bn2.weight.zero_()
    return unit


@dataclass
class Propagation:
    """One stack of ``len(std) - 1`` units of one ordering, measured at initialisation.

    Index 0 is the stack's input x_0, index l the output x_l of unit l. ``std``: the standard
    deviation of x_l; ``input_corr``: the correlation of x_l with x_0 over all its values (1: the
    input is all there is, 0: none of it is left); ``grad``: the norm of dE/dx_l divided by that of
    dE/dx_L, the gradient arriving at the last unit; ``negative``: the fraction of x_l below 0;
    ``min_step``: the smallest value of x_l - x_(l-1) over every unit (>= 0: each unit only adds).
    """

    unit: str
    seed: int
    std: list
    input_corr: list
    grad: list
    negative: list
    min_step: float
    zero_branches: bool = False


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    denominator = (a.norm() * b.norm()).item()
    return (a @ b).item() / denominator if denominator > 0 else 0.0


def propagate(
    ordering: str,
    num_units: int = 100,
    seed: int = 0,
    channels: int = 16,
    image_size: int = 8,
    batch_size: int = 16,
    zero_branches: bool = False,
) -> Propagation:
    """Stack ``num_units`` ``ResidualUnit(channels, channels, ordering=ordering)`` (identity
    shortcuts), pass a standard-normal batch x_0 through it and back, and measure every unit.

    The units are in training mode, as at the first step of training (BN normalises with the
    batch's own statistics; in eval mode a fresh BN is the identity and would hide the orderings'
    differences). The backward pass starts from a fixed random gradient dE/dx_L (E = sum(g * x_L)
    with g standard normal), so only the stack shapes it. ``zero_branches=True`` zeroes every
    branch (``zero_branch``), leaving the shortcut path alone. The weights, x_0 and g depend on
    ``seed`` only; the global random state is left as it was.
    """
    if ordering not in UNIT_ORDERINGS:
        raise ValueError(f"unknown unit ordering {ordering!r}; choose from {UNIT_ORDERINGS}")
    if num_units < 1:
        raise ValueError(f"num_units must be at least 1, got {num_units}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        units = [ResidualUnit(channels, channels, ordering=ordering).train() for _ in range(num_units)]
        x0 = torch.randn(batch_size, channels, image_size, image_size, requires_grad=True)
        g = torch.randn(batch_size, channels, image_size, image_size)
    if zero_branches:
        for unit in units:
            zero_branch(unit)
    outputs = [x0]
    for unit in units:
        outputs.append(unit(outputs[-1]))
        outputs[-1].retain_grad()
    (outputs[-1] * g).sum().backward()
    last = g.norm().item()
    with torch.no_grad():
        x0 = x0.detach()
        steps = [(b - a).min().item() for a, b in zip(outputs, outputs[1:])]
        return Propagation(
            ordering,
            seed,
            std=[x.std().item() for x in outputs],
            input_corr=[_corr(x, x0) for x in outputs],
            grad=[x.grad.norm().item() / last for x in outputs],
            negative=[(x < 0).float().mean().item() for x in outputs],
            min_step=min(steps),
            zero_branches=zero_branches,
        )


def signal_propagation(
    num_units: int = 100,
    seeds: Iterable[int] = (0, 1, 2),
    units: Iterable[str] = UNIT_ORDERINGS,
    zero_branches: bool = False,
    num_threads: int | None = 1,
    **kwargs,
) -> list[Propagation]:
    """``propagate`` for every ordering in ``units`` (the paper's order) and every seed, on
    ``num_threads`` threads (1 by default; None keeps PyTorch's setting). ``kwargs`` go to
    ``propagate`` (channels, image_size, batch_size)."""
    units = list(units)
    unknown = [u for u in units if u not in UNIT_ORDERINGS]
    if unknown:
        raise ValueError(f"unknown unit ordering(s) {unknown}; choose from {UNIT_ORDERINGS}")
    with torch_threads(num_threads):
        return [
            propagate(unit, num_units, seed, zero_branches=zero_branches, **kwargs) for unit in units for seed in seeds
        ]


def by_unit(results: Iterable[Propagation]) -> dict[str, list[Propagation]]:
    """``{ordering: [its Propagation of each seed]}`` in the paper's order (what the plot and table take)."""
    results = list(results)
    return {u: [r for r in results if r.unit == u] for u in UNIT_ORDERINGS if any(r.unit == u for r in results)}


def _spread(values: Sequence[float], digits: int) -> str:
    """``mean (min to max)`` over seeds, or the one value (never "-0.00")."""
    mean = sum(values) / len(values)

    def text(value: float) -> str:
        return f"{value + 0.0:.{digits}f}".replace("-0." + "0" * digits, "0." + "0" * digits)

    if len(values) == 1:
        return text(mean)
    return f"{text(mean)} ({text(min(values))} to {text(max(values))})"


def format_propagation(results: Iterable[Propagation]) -> str:
    """One row per ordering: at the last unit L, the output's std, its correlation with the input
    x_0 and the fraction of negative values; the gradient at the input relative to the last unit's;
    whether any unit lowered a value (the smallest x_l - x_(l-1)). Each as the mean over seeds with
    the range (min to max)."""
    rows = []
    for unit, runs in by_unit(results).items():
        negative = 100 * sum(r.negative[-1] for r in runs) / len(runs)
        rows.append(
            [
                UNIT_LABELS[unit],
                _spread([r.std[-1] for r in runs], 2),
                _spread([r.input_corr[-1] for r in runs], 2),
                _spread([r.grad[0] for r in runs], 2),
                f"{negative:.0f}",
                f"{min(r.min_step for r in runs):.2g}",
            ]
        )
    return text_table(
        ["residual unit", "std of x_L", "corr(x_L, x_0)", "grad at x_0 / at x_L", "x_L < 0 (%)", "min step"], rows
    )
