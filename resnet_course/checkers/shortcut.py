"""The checker for a shortcut on its own (He et al. 2015, Sec. 3.3: option A, zero-padding, and
option B, a 1x1 projection), checked by what it carries, not only its shape."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ..device import evaluating
from ..stages import count_params
from .core import CheckResult, _close, _count_text, _first_line, _out_size, _seeded, _shape, difference_hint


def _as_shortcut(fn_or_module, in_channels: int, out_channels: int, stride: int):
    """A module, a function of x, or a factory ``(in_channels, out_channels, stride) -> module``."""
    if isinstance(fn_or_module, nn.Module):
        return fn_or_module
    if isinstance(fn_or_module, type) or len(inspect.signature(fn_or_module).parameters) >= 3:
        return fn_or_module(in_channels, out_channels, stride)
    return fn_or_module


def check_shortcut(fn_or_module, in_channels: int, out_channels: int, stride: int = 1) -> CheckResult:
    """Check that a learner's shortcut matches the residual branch it is added to, in shape and in
    what it carries.

    ``fn_or_module`` is a module, a function of ``x``, or a factory called as
    ``(in_channels, out_channels, stride)``. The branch turns (N, in_channels, H, W) into
    (N, out_channels, H / stride, W / stride); the shortcut must give exactly that shape. When the
    shapes already match it should be the identity (no parameters, He et al. 2015 Eq. 1); when
    they don't, torchvision uses a 1×1 conv with the stride + BN (option B, Eq. 2), and option A
    (Sec. 3.3) subsamples and pads with zero channels. The values are checked too: a shortcut of
    zeros fails, so does one that samples other positions than the branch's strided conv is
    centred on (``x[:, :, 1::2, 1::2]`` instead of ``x[:, :, ::2, ::2]``), one that mixes
    neighbouring positions, option A with copies instead of zeros, option B with a ReLU after.
    """
    title = f"Checking your shortcut for {in_channels} → {out_channels} channels, stride {stride}"
    result = CheckResult(title)
    with _seeded():
        try:
            shortcut = _as_shortcut(fn_or_module, in_channels, out_channels, stride)
        except Exception as error:
            result.add(False, f"building the shortcut fails: {_first_line(error)}")
            return result
        x = torch.randn(2, in_channels, 8, 8)
        size = _out_size(8, stride)
        expected = (2, out_channels, size, size)
        try:
            y = _run_shortcut(shortcut, x)
        except Exception as error:
            result.add(False, f"the shortcut fails on a {_shape(x)} input: {_first_line(error)}")
            return result
    if not isinstance(y, Tensor):
        result.add(False, f"the shortcut returns a {type(y).__name__}, not a tensor")
        return result
    if tuple(y.shape) == expected:
        result.add(True, f"output shape {expected} matches the residual branch")
    else:
        if y.ndim != 4:
            result.add(False, f"the shortcut returns shape {_shape(y)}, the branch gives {expected}")
        if y.ndim == 4 and y.shape[1] != out_channels:
            if y.shape[1] < out_channels:  # both of He et al. 2015's options (Sec. 3.3) fit here
                how = (
                    f"pad the {out_channels - y.shape[1]} missing channels with zeros (option A, no parameters) "
                    f"or project with a 1×1 conv {in_channels} → {out_channels} (option B)"
                )
            else:
                how = f"a 1×1 conv must map {in_channels} → {out_channels} channels"
            result.add(False, f"the shortcut gives {y.shape[1]} channels, the branch {out_channels}: {how}")
        if y.ndim == 4 and tuple(y.shape[2:]) != (size, size):
            result.add(
                False,
                f"the shortcut gives {y.shape[2]}×{y.shape[3]} maps, the branch {size}×{size}: "
                f"the shortcut must use the block's stride ({stride})",
            )
        return result
    n = count_params(shortcut) if isinstance(shortcut, nn.Module) else 0
    if in_channels == out_channels and stride == 1:
        if n == 0 and torch.equal(y, x):
            result.add(True, "identity: the input passes unchanged, with no parameters (He et al. 2015, Eq. 1)")
        else:
            result.add(
                False,
                f"the shapes already match, so the shortcut should be the identity (x itself); "
                f"yours changes the input and has {_count_text(n)}",
            )
        return result
    reference = in_channels * out_channels + 2 * out_channels
    if n == reference:
        result.add(True, f"projection: {n:,} parameters, as torchvision's 1×1 conv + BN (He et al. 2015, Eq. 2)")
    elif n == 0:
        result.add(
            True,
            "no parameters, as option A of He et al. 2015 (subsample, pad with zeros) needs none; "
            "torchvision uses option B, a 1×1 conv + BN",
        )
    else:
        wide = [m for m in shortcut.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
        if wide:
            hint = f": a {wide[0].kernel_size[0]}×{wide[0].kernel_size[1]} kernel where a 1×1 does"
        else:
            hint = difference_hint(n - reference, (in_channels, out_channels))
        result.add(
            False,
            f"{_count_text(n)}, torchvision's 1×1 conv (no bias) + BN has {reference:,} "
            f"(difference {n - reference:+,}{hint})",
        )
    _check_shortcut_values(result, shortcut, x, y, stride, n == 0)
    return result


def _run_shortcut(shortcut, x: Tensor) -> Tensor:
    with torch.no_grad():
        if isinstance(shortcut, nn.Module):
            with evaluating(shortcut):
                return shortcut(x.clone())
        return shortcut(x.clone())


def _sampled_positions(stride: int) -> str:
    return ", ".join(str(i) for i in range(0, 3 * stride, stride))


def _check_shortcut_values(result: CheckResult, shortcut, x: Tensor, y: Tensor, stride: int, free: bool) -> None:
    """What the shortcut carries: not zeros, the positions the branch's strided conv is centred
    on (0, s, 2s, ...), and for option A the input itself beside zero channels, for option B
    BN(conv1×1(x)) with nothing after."""
    if not y.any():
        result.add(
            False,
            "the shortcut returns only zeros: it must carry the input forward (option A: "
            f"x[:, :, ::{stride}, ::{stride}] beside zero channels; option B: a 1×1 conv + BN)",
        )
        return
    if stride > 1:
        on_grid = torch.zeros(x.shape[-2:], dtype=torch.bool)
        on_grid[::stride, ::stride] = True
        with _seeded(1):
            noise = torch.randn_like(x) * 3
        reads_between = not _close(_run_shortcut(shortcut, torch.where(on_grid, x, noise)), y)
        reads_grid = not _close(_run_shortcut(shortcut, torch.where(on_grid, noise, x)), y)
        if reads_between and not reads_grid:
            result.add(
                False,
                f"the shortcut samples other positions than the branch: the branch's stride-{stride} "
                f"conv is centred on rows and columns {_sampled_positions(stride)}, ... "
                f"(x[:, :, ::{stride}, ::{stride}]); yours reads the positions in between "
                f"(x[:, :, 1::{stride}, 1::{stride}]?), so the two added maps are misaligned",
            )
            return
        if reads_between:
            result.add(
                False,
                f"the shortcut mixes neighbouring positions (a wider kernel or a pooling window?): "
                f"like the branch's stride-{stride} conv it should read one position in "
                f"{stride}×{stride}, x[:, :, ::{stride}, ::{stride}]",
            )
            return
        result.add(
            True,
            f"the shortcut reads the positions the branch's stride-{stride} conv is centred on "
            f"(x[:, :, ::{stride}, ::{stride}])",
        )
    if free:
        _check_option_a(result, x[:, :, ::stride, ::stride], y)
    elif isinstance(shortcut, nn.Module):
        _check_option_b(result, shortcut, x, y)


def _check_option_a(result: CheckResult, sampled: Tensor, y: Tensor) -> None:
    """Option A: the sampled input, its channels in order, and zeros in every other channel."""
    c = sampled.shape[1]
    carried = [i for i in range(y.shape[1]) if y[:, i].any()]
    start = carried[0] if carried else 0
    if carried == list(range(start, start + c)) and _close(y[:, start : start + c], sampled):
        result.add(True, f"option A: the input's {c} channels pass unchanged, the {y.shape[1] - c} others are zeros")
    elif len(carried) > c:
        result.add(
            False,
            f"option A pads with zeros: {len(carried)} of the {y.shape[1]} channels carry values, "
            f"only the input's {c} should (the extra channels must be zeros, not copies)",
        )
    else:
        result.add(
            False,
            f"option A passes the input's {c} channels unchanged (x[:, :, ::s, ::s]) and adds zero "
            "channels; yours changes the values",
        )


def _check_option_b(result: CheckResult, shortcut: nn.Module, x: Tensor, y: Tensor) -> None:
    """Option B: exactly BN(conv1×1(x)), with the learner's own conv and BN."""
    convs = [m for m in shortcut.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in shortcut.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != 1 or len(bns) != 1:
        result.add(
            False,
            f"option B is one 1×1 conv then one BatchNorm; yours has {len(convs)} conv(s) and {len(bns)} BatchNorm(s)",
        )
        return
    if bns[0].num_features != convs[0].out_channels:
        result.add(
            False,
            f"the BatchNorm normalises {bns[0].num_features} channels: option B puts it after the "
            f"1×1 conv, on its {convs[0].out_channels} output channels",
        )
        return
    with torch.no_grad(), evaluating(shortcut):
        expected = bns[0](convs[0](x.clone()))
    if _close(y, expected):
        result.add(True, "option B: the output is BN(conv1×1(x)), nothing after")
    elif _close(y, torch.relu(expected)):
        result.add(
            False,
            "a ReLU follows the projection's BN: the shortcut is 1×1 conv → BN only; the block's "
            "ReLU comes after the addition",
        )
    else:
        result.add(
            False, "the output is not BN(conv1×1(x)): option B applies the 1×1 conv, then the BN, and nothing else"
        )
