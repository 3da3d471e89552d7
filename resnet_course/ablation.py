"""The five residual-unit orderings of He et al. 2016 (Fig. 4), read off the code and compared in miniature.

- ``operation_order``: what a unit's ``forward`` does, in order ("BN → ReLU → conv → ... → add"),
  read from a ``torch.fx`` trace of the code itself rather than written by hand.
- ``unit_ablation``: a 6n+2-layer CIFAR-style net (``models.cifar_resnet``) of each ordering,
  trained with the same budget on the synthetic texture task of ``gradients.synthetic_textures``
  (nothing to download), then tested on held-out images: a small version of the paper's Table 2
  (``plots.PAPER_CIFAR10_ERRORS``). A few hundred steps on a toy task cannot reproduce the
  paper's ranking reliably; ``format_ablation`` prints ours next to the paper's numbers.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from resnet_course.blocks import UNIT_ORDERINGS
from resnet_course.gradients import synthetic_textures
from resnet_course.models import cifar_resnet
from resnet_course.plots import PAPER_CIFAR10_ERRORS, UNIT_LABELS

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


@contextmanager
def _threads(num_threads: int | None):
    """Tiny convolutions gain little from several threads and lose much when cores are shared."""
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def classification_error(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Percentage of ``images`` the model misclassifies (eval mode, no gradients; mode restored)."""
    was_training = model.training
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size])
            wrong += (logits.argmax(1) != labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return 100.0 * wrong / len(images)


def train_cosine(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int,
                 batch_size: int = 32, lr: float = 0.1, weight_decay: float = 1e-4,
                 seed: int = 0) -> list[float]:
    """SGD (momentum 0.9, weight decay as in He et al.) on random minibatches, the learning rate
    falling from ``lr`` to 0 along a cosine, so the final model is not caught mid-bounce; returns
    the per-step training losses."""
    if steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    losses = []
    for _ in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=g)
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


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
    with _threads(num_threads), torch.random.fork_rng(devices=[]):
        for seed in seeds:
            for unit in units:
                start = time.perf_counter()
                torch.manual_seed(seed)
                model = cifar_resnet(depth, unit=unit)
                losses = train_cosine(model, train_images, train_labels, steps, batch_size, lr, seed=seed)
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
    header = f"{'residual unit':26}  {'paper 110':>9}  {'paper 164':>9}  {'ours: test error %':>20}  {'train loss':>10}"
    lines = [header, "-" * len(header)]
    for unit in UNIT_ORDERINGS:
        mine = [r for r in runs if r.unit == unit]
        if not mine:
            continue
        errors = [r.test_error for r in mine]
        spread = f" ({min(errors):.1f}-{max(errors):.1f})" if len(errors) > 1 else ""
        e110, e164 = paper.get(unit, (math.nan, math.nan))
        lines.append(f"{UNIT_LABELS[unit]:26}  {e110:9.2f}  {e164:9.2f}  {_mean(errors):>6.1f}{spread:>14}  "
                     f"{_mean([r.final_train_loss for r in mine]):10.3f}")
    return "\n".join(lines)


__all__ = ["operation_order", "AblationRun", "classification_error", "train_cosine", "unit_ablation",
           "errors_by_unit", "format_ablation"]
