"""Exercise checkers: is the learner's block or model right, and if not, why not?

Each checker builds the learner's code in the cases that matter (identity and projection
shortcut), compares it with a reference (torchvision's blocks and models for v1, the course's
``PreActBottleneck`` and ``resnet50v2`` for v2) and returns a :class:`CheckResult`: one line per
check, "✓ ..." or "✗ ...", where a ✗ names the bug (the second 3×3 conv taking ``inplanes``, a
missing shortcut, a ReLU on the wrong side of the addition ...).

The checks look at behaviour, not at names: your modules may be called anything, as long as the
constructor takes the arguments torchvision's blocks take. Everything runs seeded, on small
inputs, without touching the global random state, and messages hold no random numbers, so a
notebook can check a checker's output (``# NBVAL_CHECK_OUTPUT``).

Split by topic: ``core`` (the result and small tools), ``v1_blocks`` (BasicBlock, Bottleneck,
shortcuts), ``preact`` (the pre-activation bottleneck), ``networks`` (whole models),
``grad_cam`` and ``training_step`` (one batch of training). Import the checkers from here:
``from resnet_course.checkers import check_model``.
"""

from __future__ import annotations

from .core import RESNET_CHANNELS, CheckResult, difference_hint
from .grad_cam import check_grad_cam
from .networks import check_model, check_param_count
from .preact import check_preact_block
from .shortcut import check_shortcut
from .training_step import TRAIN_STEP_MISTAKES, check_train_step
from .v1_blocks import check_basic_block, check_bottleneck

__all__ = [
    "CheckResult",
    "RESNET_CHANNELS",
    "difference_hint",
    "check_basic_block",
    "check_bottleneck",
    "check_shortcut",
    "check_preact_block",
    "check_param_count",
    "check_model",
    "check_grad_cam",
    "check_train_step",
    "TRAIN_STEP_MISTAKES",
]
