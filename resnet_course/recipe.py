"""The training recipe: optimiser, weight decay, learning-rate warm-up and schedule.

The course's default trains ResNet-50 and ResNet50V2 from scratch on a few hundred images with
batch 8: AdamW (Loshchilov & Hutter 2019) with decoupled weight decay on conv and linear weights
only, a linear warm-up over the first epoch, then a cosine decay stepped every batch, on models
whose residual branches start at zero (``models.get_model(..., zero_init_residual=True)``;
Goyal et al. 2017, "Accurate, Large Minibatch SGD", Sec. 5.1). ``training.fit`` uses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_WEIGHT_DECAY",
    "OPTIMIZERS",
    "DEFAULT_OPTIMIZER",
    "DEFAULT_WARMUP_EPOCHS",
    "SCHEDULES",
    "RECIPE_OPTIONS",
    "RecipeError",
    "validate",
    "parameter_groups",
    "make_optimizer",
    "lr_factor",
]

#: Learning rates that work for each optimiser on this task when none is given.
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3}
#: Weight decay per optimiser, applied to conv and linear weights only (never to BN or biases).
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adam": 0.0, "adamw": 0.05}
OPTIMIZERS = tuple(DEFAULT_LR)
#: The course's default recipe (see ``fit``): AdamW with a one-epoch linear warm-up and a cosine
#: decay stepped every batch; models are built with ``zero_init_residual=True``.
DEFAULT_OPTIMIZER = "adamw"
DEFAULT_WARMUP_EPOCHS = 1.0
SCHEDULES = ("cosine", "step", "none")


class RecipeError(ValueError):
    """A recipe setting that cannot train; ``option`` names it, and ``message(flag)`` says what it
    must be with option names written by ``flag`` (the command line writes ``--warmup-epochs``)."""

    def __init__(self, option: str, requirement: str, value: object):
        self.option, self.requirement, self.value = option, requirement, value
        super().__init__(self.message())

    def message(self, flag: Callable[[str], str] = str) -> str:
        names = {name: flag(name) for name in RECIPE_OPTIONS}
        return f"{flag(self.option)} must be {self.requirement.format(**names)}, not {self.value!r}"


#: The settings ``validate`` checks, in the order the command line lists them.
RECIPE_OPTIONS = ("epochs", "optimizer", "lr", "weight_decay", "warmup_epochs", "schedule", "label_smoothing")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(
    epochs: int,
    optimizer: str = DEFAULT_OPTIMIZER,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: float = DEFAULT_WARMUP_EPOCHS,
    schedule: str = "cosine",
    label_smoothing: float = 0.0,
) -> dict:
    """Check a training recipe before any work and return it whole, with ``lr`` and
    ``weight_decay`` resolved to the optimiser's defaults where None. The one check of the recipe:
    ``training.fit`` and the command line both call it; a bad value raises ``RecipeError``."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise RecipeError("epochs", "at least 1", epochs)
    if optimizer not in OPTIMIZERS:
        raise RecipeError("optimizer", f"one of {', '.join(OPTIMIZERS)}", optimizer)
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    weight_decay = DEFAULT_WEIGHT_DECAY[optimizer] if weight_decay is None else weight_decay
    if not (_finite(lr) and lr > 0):
        raise RecipeError("lr", "a positive number", lr)
    if not (_finite(weight_decay) and weight_decay >= 0):
        raise RecipeError("weight_decay", "a number >= 0", weight_decay)
    if not (_finite(warmup_epochs) and 0 <= warmup_epochs <= epochs):
        raise RecipeError("warmup_epochs", f"between 0 and {{epochs}} ({epochs})", warmup_epochs)
    if schedule not in SCHEDULES:
        raise RecipeError("schedule", f"one of {', '.join(SCHEDULES)}", schedule)
    if not (_finite(label_smoothing) and 0 <= label_smoothing < 1):
        raise RecipeError("label_smoothing", "in [0, 1)", label_smoothing)
    return {
        "optimizer": optimizer,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "warmup_epochs": warmup_epochs,
        "schedule": schedule,
        "label_smoothing": label_smoothing,
    }


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv and linear weights (decayed) and BN parameters and biases (not decayed).

    Decaying BN's gamma and beta or a bias only pulls them towards zero without regularising
    anything useful, so they are left out ("no bias decay", He et al. 2019, "Bag of Tricks for
    Image Classification", Sec. 3.1). Parameters with ``requires_grad=False`` (a frozen backbone)
    are left out of both groups.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module, name: str, lr: float | None, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (He et al. 2015, Sec. 3.4), Adam, or AdamW (Loshchilov & Hutter
    2019: decoupled weight decay). ``lr`` and ``weight_decay`` default per optimiser
    (``DEFAULT_LR``, ``DEFAULT_WEIGHT_DECAY``); decay applies to weights, not BN or biases."""
    if name not in OPTIMIZERS:
        raise RecipeError("optimizer", f"one of {', '.join(OPTIMIZERS)}", name)
    lr = DEFAULT_LR[name] if lr is None else lr
    weight_decay = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else weight_decay
    groups = parameter_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr)


def lr_factor(
    schedule: str, epochs: int, steps_per_epoch: int = 1, warmup_epochs: float = 0.0
) -> Callable[[int], float]:
    """Learning-rate multiplier for optimisation step ``s`` (0-based), stepped every batch.

    A linear warm-up over the first ``warmup_epochs`` (the rate grows as (s + 1) / warm-up steps,
    so the first step already moves; Goyal et al. 2017, Sec. 2.2), then over the remaining steps
    a cosine decay from 1 towards 0, a step down by 10x after each third of the epochs, or a
    constant. Without warm-up, the value at the start of epoch ``e`` is the per-epoch schedule's:
    cosine 0.5 (1 + cos(pi e / epochs)), step 0.1 ** (e // round(epochs / 3)).
    """
    validate(epochs, warmup_epochs=warmup_epochs, schedule=schedule)
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    step_epochs = max(1, round(epochs / 3))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))
        if schedule == "step":
            return 0.1 ** ((step // steps_per_epoch) // step_epochs)
        return 1.0

    return factor
