"""What every checker shares: the result it returns, and small tools (seeded weights, BatchNorm
statistics, parameter counts, shapes as text).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

#: Channel counts of the ResNet family, used to explain a parameter-count difference.
RESNET_CHANNELS = (3, 64, 128, 256, 512, 1024, 2048)
#: How the checkers give BatchNorms statistics (``models.like_a_trained_net(module, **CHECKER_BN)``):
#: wider than a trained net's (shifts ~ N(0, 0.5), variances ~ U(0.5, 2)), so that a misplaced BN
#: changes the output clearly; conv biases stay as the learner built them.
CHECKER_BN = {"shift_std": 0.5, "max_variance": 2.0, "biases": False}

# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """The outcome of a checker: ``ok`` is True when every check passed; ``messages`` are the
    lines to show ("✓ ..." / "✗ ..."); ``failures`` the texts of the failed checks."""

    title: str
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def add(self, ok: bool, text: str) -> None:
        if (ok, text) not in self.checks:  # the same finding in two cases is said once
            self.checks.append((ok, text))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)

    @property
    def messages(self) -> list[str]:
        return [f"{'✓' if ok else '✗'} {text}" for ok, text in self.checks]

    @property
    def failures(self) -> list[str]:
        return [text for ok, text in self.checks if not ok]

    def __bool__(self) -> bool:
        return self.ok

    def verdict(self) -> str:
        failed = len(self.failures)
        if not failed:
            return f"All {len(self.checks)} checks passed."
        return f"{failed} of {len(self.checks)} checks failed."

    def __repr__(self) -> str:
        return "\n".join([self.title, *self.messages, self.verdict()])

    __str__ = __repr__

    def _repr_html_(self) -> str:
        lines = [f"<b>{html.escape(self.title)}</b>"]
        for ok, text in self.checks:
            color = "#1a7f37" if ok else "#cf222e"
            lines.append(f'<span style="color:{color}">{"✓" if ok else "✗"} {html.escape(text)}</span>')
        lines.append(f"<i>{html.escape(self.verdict())}</i>")
        return '<div style="font-family:monospace; white-space:pre-wrap">' + "<br>".join(lines) + "</div>"


# --------------------------------------------------------------------------------------------
# Small tools
# --------------------------------------------------------------------------------------------


@contextmanager
def _seeded(seed: int = 0):
    """Deterministic weights and inputs inside, the caller's random state untouched outside."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def difference_hint(difference: int, channels: Iterable[int] = RESNET_CHANNELS, num_classes: int | None = None) -> str:
    """Name the layers a parameter-count difference could be, e.g. " = one 3×3 conv 64→64?".

    Tries, most likely first: a whole BasicBlock or Bottleneck, a projection shortcut, a single
    conv (3×3, 1×1, 7×7) between channel counts a ResNet pairs (ratio at most 4, or from RGB),
    a BatchNorm, the final fully connected layer, and only then convs with a bias. Returns ""
    when nothing fits.
    """
    d = abs(difference)
    chans = sorted(set(channels))
    pairs = [(i, o) for i in chans for o in chans if i == 3 or max(i, o) <= 4 * min(i, o)]
    likely, with_bias = [], []
    for c in chans:
        if 18 * c * c + 4 * c == d:
            likely.append(f"one BasicBlock of {c} channels")
        if 17 * c * c + 12 * c == d:
            likely.append(f"one Bottleneck of width {c} ({4 * c} channels out)")
    for cin, cout in pairs:
        if cin * cout + 2 * cout == d:
            likely.append(f"one projection shortcut (1×1 conv {cin}→{cout} + BN)")
    for k in (3, 1, 7):
        for cin, cout in pairs:
            if k * k * cin * cout == d and cin <= cout:  # 64→128 and 128→64 have as many
                likely.append(f"one {k}×{k} conv {cin}→{cout}")
            if k * k * cin * cout + cout == d:
                with_bias.append(f"one {k}×{k} conv {cin}→{cout} with bias")
    for c in chans:
        if 2 * c == d:
            likely.append(f"one BatchNorm over {c} channels")
        if num_classes and c * num_classes + num_classes == d:
            likely.append(f"a fully connected layer {c}→{num_classes}")
    names = likely or with_bias
    return f" = {' or '.join(names[:2])}?" if names else ""


def _count_text(n: int) -> str:
    return f"{n:,} parameter{'s' if n != 1 else ''}"


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _out_size(size: int, stride: int) -> int:
    """Output side of a 3×3 padding-1 conv (or 1×1) with ``stride`` on a ``size`` input."""
    return (size - 1) // stride + 1


def _conv_text(conv: nn.Conv2d) -> str:
    k = conv.kernel_size
    stride = f", stride {conv.stride[0]}" if conv.stride[0] != 1 else ""
    return f"{k[0]}×{k[1]} conv {conv.in_channels}→{conv.out_channels}{stride}"
