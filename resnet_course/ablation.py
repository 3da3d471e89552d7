"""The five residual-unit orderings of He et al. 2016 (Fig. 4), read off the code and compared in miniature.

- ``operation_order``: what a unit's ``forward`` does, in order ("BN → ReLU → conv → ... → add"),
  read from a ``torch.fx`` trace of the code itself rather than written by hand.
- ``unit_ablation``: a 6n+2-layer CIFAR-style net (``models.cifar_resnet``) of each ordering,
  trained with the same budget on the synthetic texture task of ``gradients.synthetic_textures``
  (nothing to download), then tested on held-out images: a small version of the paper's Table 2
  (``PAPER_CIFAR10_ERRORS``). A few hundred steps on a toy task cannot reproduce the
  paper's ranking reliably; ``format_ablation`` prints ours next to the paper's numbers.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .blocks import UNIT_ORDERINGS
from .device import evaluating, torch_threads
from .gradients import synthetic_textures, train_steps
from .models import cifar_resnet
from .tables import text_table

__all__ = ["UNIT_LABELS", "PAPER_CIFAR10_ERRORS", "operation_order", "AblationRun", "classification_error",
           "unit_ablation", "errors_by_unit", "format_ablation"]

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

# --------------------------------------------------------------------------------------------
# The order of operations
# --------------------------------------------------------------------------------------------

#: How each kind of operation is written in an order of operations.
MODULE_LABELS = ((nn.Conv2d, "conv"), (nn.modules.batchnorm._BatchNorm, "BN"), (nn.ReLU, "ReLU"),
                 (nn.MaxPool2d, "max pool"), (nn.Linear, "fc"))
FUNCTION_LABELS = {operator.add: "add", operator.iadd: "add", torch.add: "add",
                   torch.relu: "ReLU", F.relu: "ReLU"}
METHOD_LABELS = {"add": "add", "add_": "add", "relu": "ReLU", "relu_": "ReLU"}


def _module_label(module: nn.Module) -> str:
    for kind, label in MODULE_LABELS:
        if isinstance(module, kind):
            return label
    return type(module).__name__


def operation_order(module: nn.Module, skip: Sequence[str] = ("shortcut", "downsample")) -> list[str]:
    """The operations ``module.forward`` performs, in order, e.g. ``["conv", "BN", "ReLU", ..., "add"]``.

    Read from a ``torch.fx`` trace, so it is what the code does. Submodules are named by kind
    ("conv", "BN", "ReLU", "max pool", "fc"), additions are "add"; the shortcut's own operations
    (submodules whose name starts with one of ``skip``) and identities are left out, so a unit
    reads like a column of He et al. 2016, Fig. 4. A forward with data-dependent control flow
    cannot be traced and raises fx's error.
    """
    traced = fx.symbolic_trace(module)
    order = []
    for node in traced.graph.nodes:
        if node.op == "call_module":
            if str(node.target).split(".")[0] in skip:
                continue
            submodule = traced.get_submodule(node.target)
            if isinstance(submodule, nn.Identity):
                continue
            order.append(_module_label(submodule))
        elif node.op == "call_function":
            order.append(FUNCTION_LABELS.get(node.target, getattr(node.target, "__name__", str(node.target))))
        elif node.op == "call_method":
            order.append(METHOD_LABELS.get(node.target, str(node.target)))
    return order


# --------------------------------------------------------------------------------------------
# The ablation
# --------------------------------------------------------------------------------------------

@dataclass
class AblationRun:
    """One trained net: its unit ordering, seed, test error (%) and per-step training losses."""

    unit: str
    seed: int
    test_error: float
    train_losses: list = field(default_factory=list, repr=False)
    seconds: float = 0.0

    @property
    def final_train_loss(self) -> float:
        """Mean training loss over the last tenth of the steps (a single minibatch is noisy)."""
        tail = self.train_losses[-max(1, len(self.train_losses) // 10):]
        return sum(tail) / len(tail)


def classification_error(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Percentage of ``images`` the model misclassifies (eval mode, no gradients; mode restored)."""
    wrong = 0
    with torch.no_grad(), evaluating(model):
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size])
            wrong += (logits.argmax(1) != labels[start:start + batch_size]).sum().item()
    return 100.0 * wrong / len(images)


def unit_ablation(steps: int, units: Iterable[str] = UNIT_ORDERINGS, depth: int = 20, seeds: Iterable[int] = (0,),
                  batch_size: int = 32, lr: float = 0.1, num_train: int = 2048, num_test: int = 1024,
                  image_size: int = 16, num_threads: int | None = 1, progress=None) -> list[AblationRun]:
    """Train a ``depth``-layer CIFAR-style net of each unit ordering for ``steps`` steps per seed.

    Every net sees the same training images (``synthetic_textures`` seed 0) and, for a given
    seed, the same initial random state and minibatches; the test error is measured on
    ``num_test`` held-out images (seed 1). Runs with ``num_threads`` threads (1 by default; None
    keeps PyTorch's setting). ``progress`` is called with each finished run. The paper trains
    ResNet-110/164 for 64k steps on CIFAR-10; this is a miniature of it, not a reproduction.
    """
    units = list(units)
    unknown = [u for u in units if u not in UNIT_ORDERINGS]
    if unknown:
        raise ValueError(f"unknown unit ordering(s) {unknown}; choose from {UNIT_ORDERINGS}")
    train_images, train_labels = synthetic_textures(num_train, image_size=image_size, seed=0)
    test_images, test_labels = synthetic_textures(num_test, image_size=image_size, seed=1)
    runs = []
    with torch_threads(num_threads), torch.random.fork_rng(devices=[]):
        for seed in seeds:
            for unit in units:
                start = time.perf_counter()
                torch.manual_seed(seed)
                model = cifar_resnet(depth, unit=unit)
                losses, _ = train_steps(model, train_images, train_labels, steps, batch_size, lr, seed=seed,
                                        weight_decay=1e-4, cosine=True)
                error = classification_error(model, test_images, test_labels)
                runs.append(AblationRun(unit, seed, error, losses, time.perf_counter() - start))
                if progress is not None:
                    progress(runs[-1])
    return runs


def errors_by_unit(runs: Iterable[AblationRun]) -> dict[str, list[float]]:
    """``{unit: [test error of each seed]}`` in the paper's order: what ``plots.plot_ablation`` takes."""
    runs = list(runs)
    return {u: [r.test_error for r in runs if r.unit == u] for u in UNIT_ORDERINGS if any(r.unit == u for r in runs)}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def format_ablation(runs: Iterable[AblationRun], paper: Mapping = PAPER_CIFAR10_ERRORS) -> str:
    """Our test errors (mean, min-max over seeds) and final training losses next to the paper's
    CIFAR-10 test errors for ResNet-110 and ResNet-164 (He et al. 2016, Table 2), one row per ordering."""
    runs = list(runs)
    rows = []
    for unit in UNIT_ORDERINGS:
        mine = [r for r in runs if r.unit == unit]
        if not mine:
            continue
        errors = [r.test_error for r in mine]
        spread = f" ({min(errors):.1f}-{max(errors):.1f})" if len(errors) > 1 else ""
        e110, e164 = paper.get(unit, (math.nan, math.nan))
        rows.append([UNIT_LABELS[unit], f"{e110:.2f}", f"{e164:.2f}", f"{_mean(errors):>6.1f}{spread:>14}",
                     f"{_mean([r.final_train_loss for r in mine]):.3f}"])
    return text_table(["residual unit", "paper 110", "paper 164", "ours: test error %", "train loss"], rows,
                      widths=[26, 9, 9, 20, 10])
