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
"""

from __future__ import annotations

import copy
import html
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from resnet_course.explain import evaluating

#: Channel counts of the ResNet family, used to explain a parameter-count difference.
RESNET_CHANNELS = (3, 64, 128, 256, 512, 1024, 2048)

# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """The outcome of a checker: ``ok`` is True when every check passed; ``messages`` are the
    lines to show ("✓ ..." / "✗ ..."); ``failures`` the texts of the failed checks."""

    title: str
    checks: List[Tuple[bool, str]] = field(default_factory=list)

    def add(self, ok: bool, text: str) -> None:
        if (ok, text) not in self.checks:  # the same finding in two cases is said once
            self.checks.append((ok, text))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)

    @property
    def messages(self) -> List[str]:
        return [f"{'✓' if ok else '✗'} {text}" for ok, text in self.checks]

    @property
    def failures(self) -> List[str]:
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


def count_parameters(module) -> int:
    """Number of trainable values (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters()) if isinstance(module, nn.Module) else 0


def difference_hint(difference: int, channels: Iterable[int] = RESNET_CHANNELS, num_classes: Optional[int] = None) -> str:
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


def _randomize_batch_norms(module: nn.Module, skip: Sequence[nn.Module] = ()) -> None:
    """Give every BatchNorm random statistics and affine parameters, so that in eval mode it is
    not (almost) the identity and a misplaced BN changes the output."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(m is s for s in skip):
                if m.running_mean is not None:
                    m.running_mean.normal_(0, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.5)


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _conv_text(conv: nn.Conv2d) -> str:
    k = conv.kernel_size
    stride = f", stride {conv.stride[0]}" if conv.stride[0] != 1 else ""
    return f"{k[0]}×{k[1]} conv {conv.in_channels}→{conv.out_channels}{stride}"


# --------------------------------------------------------------------------------------------
# ResNet v1 blocks: BasicBlock and Bottleneck
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Case:
    inplanes: int
    planes: int
    stride: int
    projection: bool


@dataclass(frozen=True)
class _Expected:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class _BlockSpec:
    name: str
    reference: type
    expansion: int
    kernels: Tuple[int, ...]  # kernel size of each conv of the residual branch, in order
    stride_index: int  # which conv carries the stride (torchvision)
    cases: Tuple[_Case, ...]
    branch_text: str

    def expected_convs(self, case: _Case) -> List[_Expected]:
        n = len(self.kernels)
        chans = [case.inplanes] + [case.planes] * (n - 1) + [case.planes * self.expansion]
        return [
            _Expected(chans[i], chans[i + 1], k, case.stride if i == self.stride_index else 1)
            for i, k in enumerate(self.kernels)
        ]


BASIC_SPEC = _BlockSpec(
    name="BasicBlock",
    reference=tv_resnet.BasicBlock,
    expansion=1,
    kernels=(3, 3),
    stride_index=0,
    cases=(_Case(64, 64, 1, False), _Case(64, 128, 2, True)),
    branch_text="3×3 conv (with the stride) → BN → ReLU → 3×3 conv → BN",
)

BOTTLENECK_SPEC = _BlockSpec(
    name="Bottleneck",
    reference=tv_resnet.Bottleneck,
    expansion=4,
    kernels=(1, 3, 1),
    stride_index=1,
    cases=(_Case(256, 64, 1, False), _Case(256, 128, 2, True)),
    branch_text="1×1 conv (reduce) → BN → ReLU → 3×3 conv (with the stride) → BN → ReLU → 1×1 conv (expand ×4) → BN",
)


def _projection(case: _Case, expansion: int) -> nn.Sequential:
    """torchvision's ``downsample``: 1×1 conv with the block's stride, no bias, then BN."""
    out = case.planes * expansion
    return nn.Sequential(nn.Conv2d(case.inplanes, out, 1, stride=case.stride, bias=False), nn.BatchNorm2d(out))


def _call_text(spec: _BlockSpec, case: _Case) -> str:
    if case.projection:
        return f"{spec.name}({case.inplanes}, {case.planes}, stride={case.stride}, downsample=1×1 conv + BN)"
    return f"{spec.name}({case.inplanes}, {case.planes})"


def _input_for(case: _Case) -> Tensor:
    return torch.randn(2, case.inplanes, 8, 8)


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _module_order(block: nn.Module, x: Tensor, skip: Sequence[nn.Module]):
    """Run ``block(x)`` while recording the order its convs and BNs (outside ``skip``) are
    called; returns (convs, bns, output or None, error or None). Modules never called follow in
    the order they were registered."""
    skip_ids = {id(m) for s in skip for m in s.modules()}
    watched = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and id(m) not in skip_ids]
    called: List[nn.Module] = []

    def record(module, inputs):
        if not any(module is c for c in called):
            called.append(module)

    handles = [m.register_forward_pre_hook(record) for m in watched]
    output, error = None, None
    try:
        output = block(x.clone())
    except Exception as e:  # the learner's forward may fail in any way; we explain it below
        error = e
    finally:
        for h in handles:
            h.remove()
    order = called + [m for m in watched if not any(m is c for c in called)]
    convs = [m for m in order if isinstance(m, nn.Conv2d)]
    bns = [m for m in order if isinstance(m, nn.BatchNorm2d)]
    return convs, bns, output, error


def _role(i: int, module: nn.Module, names: dict) -> str:
    role = f"conv{i + 1}"
    name = names.get(id(module), role)
    return role if name == role else f"{role} (your `{name}`)"


def _structure_problems(spec: _BlockSpec, case: _Case, convs, bns, names) -> dict:
    """What is wrong with the residual branch, as {kind of problem: message}."""
    expected = spec.expected_convs(case)
    problems: dict = {}
    if len(convs) != len(expected):
        return {"conv count": (
            f"the residual branch should have {len(expected)} convolutions ({spec.branch_text}); "
            f"yours has {len(convs)} outside `downsample`"
            + ("; build no shortcut of your own: use the `downsample` passed in" if len(convs) > len(expected) else "")
        )}
    roles = [_role(i, c, names) for i, c in enumerate(convs)]
    for i, (conv, want) in enumerate(zip(convs, expected)):
        role = roles[i]
        if conv.in_channels != want.in_channels:
            if i > 0 and conv.in_channels == case.inplanes and want.in_channels == case.planes:
                problems.setdefault(("in", i),
                    f"{role} should take `planes` input channels, not `inplanes`: it reads conv{i}'s "
                    f"output, which has `planes` channels ({case.planes} here; yours expects {case.inplanes})"
                )
            else:
                problems.setdefault(("in", i), f"{role} should take {want.in_channels} input channels, yours takes {conv.in_channels}")
        if conv.out_channels != want.out_channels:
            if want.out_channels == case.planes * spec.expansion != case.planes and conv.out_channels == case.planes:
                problems.setdefault(("out", i),
                    f"{role} should expand to `planes * expansion` = {want.out_channels} channels, not "
                    f"`planes` = {case.planes}: a Bottleneck's output is {spec.expansion}× wider than its 3×3 conv"
                )
            else:
                problems.setdefault(("out", i), f"{role} should have {want.out_channels} output channels, yours has {conv.out_channels}")
        if tuple(conv.kernel_size) != (want.kernel, want.kernel):
            problems.setdefault(("kernel", i), f"{role} should be a {want.kernel}×{want.kernel} conv, yours is {conv.kernel_size[0]}×{conv.kernel_size[1]}")
        elif tuple(conv.padding) != (want.kernel // 2,) * 2:
            problems.setdefault(("padding", i), f"{role} needs padding={want.kernel // 2} so that the {want.kernel}×{want.kernel} conv keeps the feature-map size")
    strides = [conv.stride[0] for conv in convs]
    if case.stride > 1 and strides[spec.stride_index] != case.stride:
        where = [i for i, s in enumerate(strides) if s == case.stride]
        if not where:
            problems.setdefault("stride",
                f"no convolution has stride {case.stride}: with stride={case.stride} the block must halve the "
                f"feature map (torchvision puts the stride on {roles[spec.stride_index]})"
            )
        elif spec.name == "Bottleneck" and where[0] == 0:
            problems.setdefault("stride",
                f"the stride sits on the first 1×1 conv (the original paper's v1): torchvision's ResNet "
                f"(\"v1.5\") puts it on the 3×3 conv, {roles[1]}, which sees every pixel instead of 1 in 4"
            )
        else:
            problems.setdefault("stride", f"the stride belongs on {roles[spec.stride_index]} (as in torchvision), yours is on {roles[where[0]]}")
    elif case.stride == 1 and any(s != 1 for s in strides):
        problems.setdefault("stride", "with stride=1 every convolution should have stride 1")
    with_bias = [roles[i] for i, conv in enumerate(convs) if conv.bias is not None]
    if with_bias:
        problems.setdefault("bias",
            f"{', '.join(with_bias)} {'has a bias' if len(with_bias) == 1 else 'have biases'}: a conv followed by "
            "BatchNorm needs none (bias=False); the BN's shift does that job"
        )
    if len(bns) != len(expected):
        problems.setdefault("bn count", f"the residual branch should have {len(expected)} BatchNorm layers, one after each conv; yours has {len(bns)}")
    else:
        for i, (bn, want) in enumerate(zip(bns, expected)):
            if bn.num_features != want.out_channels:
                problems.setdefault(("bn", i), f"bn{i + 1} should normalize {want.out_channels} channels (conv{i + 1}'s output), yours {bn.num_features}")
    return problems


def _branch(convs, bns, x: Tensor, inner_relu: bool = True) -> Tensor:
    """The v1 residual branch from the learner's own modules: conv → BN (→ ReLU between)."""
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        x = bn(conv(x))
        if inner_relu and i < len(convs) - 1:
            x = torch.relu(x)
    return x


def _forward_error_message(error, case: _Case, convs, bns, x: Tensor, downsample) -> str:
    if isinstance(error, TypeError) and "NoneType" in str(error) and not case.projection:
        return (
            "forward fails when there is no `downsample` (it is None): the shortcut is then the input "
            "itself; call `self.downsample(x)` only when `self.downsample is not None`"
        )
    h = x
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        if h.shape[1] != conv.in_channels:
            return f"forward fails at conv{i + 1}: it receives {h.shape[1]} channels but expects {conv.in_channels}"
        try:
            h = torch.relu(bn(conv(h)))
        except Exception:
            break
    else:
        if len(convs) == len(bns) and convs:
            branch = _branch(convs, bns, x)
            shortcut = downsample(x) if case.projection else x
            if branch.shape != x.shape and branch.shape == shortcut.shape:
                return (
                    f"the addition fails: the branch gives {_shape(branch)} but the input `x` is {_shape(x)}; "
                    "when the block changes shape, add `downsample(x)` (the projection shortcut), not `x`"
                )
            if branch.shape != shortcut.shape:
                return (
                    f"the addition fails: the branch gives {_shape(branch)} but the shortcut gives "
                    f"{_shape(shortcut)}; both must have the same shape"
                )
    return f"forward fails: {_first_line(error)}"


def _formula_verdict(spec: _BlockSpec, case: _Case, out: Tensor, convs, bns, x: Tensor, downsample) -> Tuple[bool, str]:
    branch = _branch(convs, bns, x)
    shortcut = downsample(x) if case.projection else x
    if _close(out, torch.relu(branch + shortcut)):
        return True, "forward computes relu(F(x) + shortcut(x)): the ReLU comes after the addition (He et al. 2015, Fig. 2)"
    if _close(out, torch.relu(branch) + shortcut):
        return False, (
            "the ReLU comes before the addition (relu(F(x)) + x): ResNet v1 adds the shortcut first and "
            "applies the ReLU after, relu(F(x) + x) (He et al. 2015, Fig. 2)"
        )
    if _close(out, branch + shortcut):
        return False, (
            "the final ReLU is missing: your block's output has negative values; apply the ReLU after "
            "the addition, relu(F(x) + x)"
        )
    if _close(out, torch.relu(branch)) or _close(out, branch):
        return False, (
            "the shortcut is missing: the block returns F(x) alone; add its input (or `downsample(x)` when "
            "the shape changes) before the last ReLU, relu(F(x) + x)"
        )
    if _close(out, torch.relu(_branch(convs, bns, x, inner_relu=False) + shortcut)):
        return False, "a ReLU inside the residual branch is missing: every conv → BN except the last is followed by a ReLU"
    return False, f"the output differs from relu(F(x) + shortcut(x)) with F = {spec.branch_text}: check the order of the operations in forward"


def _check_v1_case(block, spec: _BlockSpec, case: _Case, downsample) -> dict:
    """Every finding about one built block: structure problems, parameter counts, forward."""
    reference = spec.reference(case.inplanes, case.planes, case.stride, copy.deepcopy(downsample))
    names = {id(m): name for name, m in block.named_modules()}
    block.eval()
    _randomize_batch_norms(block)
    x = _input_for(case)
    with torch.no_grad():
        convs, bns, out, error = _module_order(block, x, [downsample] if downsample is not None else [])
        problems = _structure_problems(spec, case, convs, bns, names)
        if case.projection and not any(m is downsample for m in block.modules()):
            problems["downsample"] = "the `downsample` passed to the constructor is not kept: store it (`self.downsample = downsample`)"
        n, ref = count_parameters(block), count_parameters(reference)
        biases = sum(conv.bias.numel() for conv in convs if conv.bias is not None)
        if biases and n - ref == biases:
            hint = " = your conv biases"
        else:
            hint = difference_hint(n - ref, {case.inplanes, case.planes, case.planes * spec.expansion})
        call = _call_text(spec, case)
        params = None if n == ref else f"{call} has {_count_text(n)}, torchvision's has {ref:,} (difference {n - ref:+,}{hint})"
        side = _out_size(8, case.stride)
        shape = (2, case.planes * spec.expansion, side, side)
        if error is not None:
            forward = (False, f"{call}: " + _forward_error_message(error, case, convs, bns, x, downsample))
        elif not isinstance(out, Tensor) or tuple(out.shape) != shape:
            got = _shape(out) if isinstance(out, Tensor) else f"a {type(out).__name__}"
            forward = (False, f"{call} returns {got}, expected {shape}")
        elif len(convs) == len(bns) == len(spec.kernels):
            forward = _formula_verdict(spec, case, out, convs, bns, x, downsample)
        else:
            forward = (None, "")  # the structure problems say why we can't compare the computation
    shape_ok = error is None and isinstance(out, Tensor) and tuple(out.shape) == shape
    return {"call": call, "problems": problems, "params": params, "ref": ref, "shape": shape,
            "shape_ok": shape_ok, "forward": forward}


def _check_v1_block(block_cls, spec: _BlockSpec) -> CheckResult:
    """Build the learner's block in each case of ``spec`` and report, for each kind of check,
    the first case that fails it (a learner fixes one thing at a time) or one ✓ for all."""
    result = CheckResult(f"Checking your {spec.name} against torchvision's")
    expansion = getattr(block_cls, "expansion", None)
    if expansion != spec.expansion:
        result.add(False, f"{spec.name} needs the class attribute `expansion = {spec.expansion}` (yours: {expansion}); "
                          "ResNet's _make_layer reads it to know the block's output channels")
    findings = []
    with _seeded():
        for case in spec.cases:
            downsample = _projection(case, spec.expansion) if case.projection else None
            try:
                block = block_cls(case.inplanes, case.planes, case.stride, downsample)
            except Exception as error:
                result.add(False, f"{_call_text(spec, case)} fails: {_first_line(error)} (the constructor takes "
                                  "(inplanes, planes, stride=1, downsample=None), as torchvision's)")
                continue
            if not isinstance(block, nn.Module):
                result.add(False, f"{_call_text(spec, case)} is not an nn.Module (subclass nn.Module and call super().__init__())")
                continue
            findings.append(_check_v1_case(block, spec, case, downsample))
    if not findings:
        return result
    result.add(True, "builds: " + " and ".join(f["call"] for f in findings))
    problems = {}
    for f in findings:
        for key, text in f["problems"].items():
            problems.setdefault(key, text)
    for text in problems.values():
        result.add(False, text)
    if not problems and len(findings) == len(spec.cases):
        result.add(True, f"residual branch: {spec.branch_text}, no conv biases")
    wrong_params = [f["params"] for f in findings if f["params"]]
    if wrong_params:
        result.add(False, wrong_params[0])
    elif len(findings) == len(spec.cases):
        counts = " and ".join(f"{f['ref']:,}" for f in findings)
        result.add(True, f"parameters: {counts}, as torchvision's {spec.name}")
    verdicts = [f["forward"] for f in findings]
    failed = [text for ok, text in verdicts if ok is False]
    if failed:
        result.add(False, failed[0])
    elif len(findings) == len(spec.cases) and all(ok for ok, _ in verdicts):
        result.add(True, verdicts[0][1])
    if len(findings) == len(spec.cases) and all(f["shape_ok"] for f in findings):
        result.add(True, "output shapes: " + "; ".join(f"{f['shape']} for {f['call']}" for f in findings))
    return result


def check_basic_block(block_cls) -> CheckResult:
    """Check a learner's ResNet-18/34 BasicBlock (He et al. 2015, Fig. 5 left) against torchvision's.

    Your class must take ``(inplanes, planes, stride=1, downsample=None)`` like torchvision's:
    ``downsample`` is the projection shortcut (1×1 conv + BN) built by the caller, applied to
    ``x`` when given. It is built as ``BasicBlock(64, 64)`` (identity shortcut) and as
    ``BasicBlock(64, 128, stride=2, downsample=...)`` (projection shortcut), then checked for:
    the convs of the residual branch (channels, kernel, stride, padding, bias), the parameter
    count, the output shape, and that forward computes relu(F(x) + shortcut(x)).
    """
    return _check_v1_block(block_cls, BASIC_SPEC)


def check_bottleneck(block_cls) -> CheckResult:
    """Check a learner's ResNet-50/101/152 Bottleneck (He et al. 2015, Fig. 5 right) against
    torchvision's ("v1.5": the stride on the 3×3 conv; ``expansion = 4``).

    Same signature as torchvision's: ``(inplanes, planes, stride=1, downsample=None)``. Built as
    ``Bottleneck(256, 64)`` (identity) and ``Bottleneck(256, 128, stride=2, downsample=...)``.
    """
    return _check_v1_block(block_cls, BOTTLENECK_SPEC)


# --------------------------------------------------------------------------------------------
# Shortcuts
# --------------------------------------------------------------------------------------------


def _as_shortcut(fn_or_module, in_channels: int, out_channels: int, stride: int):
    """A module, a function of x, or a factory ``(in_channels, out_channels, stride) -> module``."""
    if isinstance(fn_or_module, nn.Module):
        return fn_or_module
    if isinstance(fn_or_module, type) or len(inspect.signature(fn_or_module).parameters) >= 3:
        return fn_or_module(in_channels, out_channels, stride)
    return fn_or_module


def check_shortcut(fn_or_module, in_channels: int, out_channels: int, stride: int = 1) -> CheckResult:
    """Check that a learner's shortcut matches the residual branch it is added to.

    ``fn_or_module`` is a module, a function of ``x``, or a factory called as
    ``(in_channels, out_channels, stride)``. The branch turns (N, in_channels, H, W) into
    (N, out_channels, H / stride, W / stride); the shortcut must give exactly that shape. When the
    shapes already match it should be the identity (no parameters, He et al. 2015 Eq. 1); when
    they don't, torchvision uses a 1×1 conv with the stride + BN (option B, Eq. 2).
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
            with torch.no_grad():
                if isinstance(shortcut, nn.Module):
                    with evaluating(shortcut):
                        y = shortcut(x.clone())
                else:
                    y = shortcut(x.clone())
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
            result.add(False, f"the shortcut gives {y.shape[1]} channels, the branch {out_channels}: "
                              f"a 1×1 conv must map {in_channels} → {out_channels} channels")
        if y.ndim == 4 and tuple(y.shape[2:]) != (size, size):
            result.add(False, f"the shortcut gives {y.shape[2]}×{y.shape[3]} maps, the branch {size}×{size}: "
                              f"the shortcut must use the block's stride ({stride})")
        return result
    n = count_parameters(shortcut)
    if in_channels == out_channels and stride == 1:
        if n == 0 and torch.equal(y, x):
            result.add(True, "identity: the input passes unchanged, with no parameters (He et al. 2015, Eq. 1)")
        else:
            result.add(False, f"the shapes already match, so the shortcut should be the identity (x itself); "
                              f"yours changes the input and has {_count_text(n)}")
        return result
    reference = in_channels * out_channels + 2 * out_channels
    if n == reference:
        result.add(True, f"projection: {n:,} parameters, as torchvision's 1×1 conv + BN (He et al. 2015, Eq. 2)")
    elif n == 0:
        result.add(True, "parameter-free shortcut (option A of He et al. 2015: subsample and pad with zeros); "
                         "torchvision uses option B, a 1×1 conv + BN")
    else:
        wide = [m for m in shortcut.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
        if wide:
            hint = f": a {wide[0].kernel_size[0]}×{wide[0].kernel_size[1]} kernel where a 1×1 does"
        else:
            hint = difference_hint(n - reference, (in_channels, out_channels))
        result.add(False, f"{_count_text(n)}, torchvision's 1×1 conv (no bias) + BN has {reference:,} "
                          f"(difference {n - reference:+,}{hint})")
    return result


# --------------------------------------------------------------------------------------------
# ResNet v2: the pre-activation bottleneck
# --------------------------------------------------------------------------------------------


PREACT_CASES = ((64, 64, 1, True), (256, 64, 1, False), (256, 64, 2, False))


def check_preact_block(block_cls) -> CheckResult:
    """Check a learner's pre-activation bottleneck against the course's ``PreActBottleneck``
    (Keras Applications' Block2; He et al. 2016, Fig. 4e: "full pre-activation").

    Your class must take ``(inplanes, planes, stride=1, conv_shortcut=False)``. It is built as the
    first block of a stage (``block(64, 64, conv_shortcut=True)``), an identity block
    (``block(256, 64)``) and a strided block (``block(256, 64, stride=2)``), and checked for:
    parameters, output shape, BN → ReLU before every conv (and before the projection shortcut),
    and nothing after the addition. For each kind of check the first failing case is reported.
    """
    from resnet_course.blocks import PreActBottleneck

    result = CheckResult("Checking your pre-activation block against the course's PreActBottleneck")
    findings = []
    with _seeded():
        for inplanes, planes, stride, conv_shortcut in PREACT_CASES:
            extras = (f", stride={stride}" if stride != 1 else "") + (", conv_shortcut=True" if conv_shortcut else "")
            call = f"block({inplanes}, {planes}{extras})"
            try:
                block = block_cls(inplanes, planes, stride, conv_shortcut)
            except Exception as error:
                result.add(False, f"{call} fails: {_first_line(error)} (the constructor takes "
                                  "(inplanes, planes, stride=1, conv_shortcut=False))")
                continue
            reference = PreActBottleneck(inplanes, planes, stride, conv_shortcut)
            findings.append(_preact_case(block, reference, call, inplanes, planes, stride, conv_shortcut))
    if not findings:
        return result
    complete = len(findings) == len(PREACT_CASES)
    result.add(True, "builds: " + ", ".join(f["call"] for f in findings))
    for kind, success in (
        ("params", lambda: "parameters: " + ", ".join(f"{f['ref']:,}" for f in findings) + ", as the reference"),
        ("shape", lambda: "output shapes: " + ", ".join(str(f["expected_shape"]) for f in findings)),
        ("order", lambda: "BN → ReLU come first and the branch ends with a convolution (He et al. 2016, Fig. 4e)"),
        ("relu", lambda: "every convolution, and the projection shortcut, reads BN → ReLU output"),
        ("after_add", lambda: "nothing after the addition: with the branch zeroed the block returns its shortcut "
                              "(x, or x[:, :, ::2, ::2] when it strides: a 1×1 max pool)"),
    ):
        failures = [f[kind] for f in findings if f.get(kind)]
        checked = [f for f in findings if kind != "after_add" or not f["conv_shortcut"]]
        if failures:
            result.add(False, failures[0])
        elif complete and all(kind in f for f in checked):  # a case that failed early was not checked
            result.add(True, success())
    return result


def _preact_case(block, reference, call, inplanes, planes, stride, conv_shortcut) -> dict:
    """Findings for one built pre-activation block: {kind: failure message or None}."""
    found = {"call": call, "conv_shortcut": conv_shortcut, "ref": count_parameters(reference)}
    n, ref = count_parameters(block), found["ref"]
    found["params"] = None if n == ref else (
        f"{call} has {_count_text(n)}, the reference {ref:,} "
        f"(difference {n - ref:+,}{difference_hint(n - ref, (inplanes, planes, 4 * planes))})"
    )
    if not isinstance(block, nn.Module):
        found["shape"] = f"{call} is not an nn.Module"
        return found
    block.eval()
    _randomize_batch_norms(block)
    x = torch.randn(2, inplanes, 8, 8)
    side = _out_size(8, stride)
    found["expected_shape"] = shape = (2, 4 * planes, side, side)
    try:
        with torch.no_grad():
            calls, out = _watch_conv_inputs(block, x)
    except Exception as error:
        found["shape"] = f"{call}: forward fails: {_first_line(error)}"
        return found
    if not isinstance(out, Tensor) or tuple(out.shape) != shape:
        got = _shape(out) if isinstance(out, Tensor) else f"a {type(out).__name__}"
        found["shape"] = f"{call} returns {got}, expected {shape}"
        return found
    found["shape"] = None
    found["order"], found["relu"] = _preact_order_problems(calls, call, 4 * planes)
    if not conv_shortcut:
        found["after_add"] = _after_add_problem(block, calls, x, stride)
    return found


def _watch_conv_inputs(block: nn.Module, x: Tensor):
    """Run ``block(x)`` and return (calls, output): ``calls`` lists (module, smallest input value,
    whether the input is ``x`` itself) for every Conv2d and BatchNorm2d in the order they ran."""
    calls: List[Tuple[nn.Module, float, bool]] = []

    def record(module, inputs):
        calls.append((module, float(inputs[0].min()), inputs[0].shape == x.shape and torch.equal(inputs[0], x)))

    watched = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    handles = [m.register_forward_pre_hook(record) for m in watched]
    try:
        output = block(x.clone())
    finally:
        for h in handles:
            h.remove()
    return calls, output


def _preact_order_problems(calls, call: str, out_channels: int) -> Tuple[Optional[str], Optional[str]]:
    """(order problem, missing-ReLU problem) from the order convs and BNs ran and their inputs."""
    kinds = ["BN" if isinstance(m, nn.BatchNorm2d) else "conv" for m, _, _ in calls]
    order = None
    if not kinds:
        order = f"{call}: no Conv2d or BatchNorm2d ran in forward"
    elif kinds[0] != "BN":
        order = ("the block starts with a convolution: in full pre-activation BN → ReLU come first, "
                 "before every conv (He et al. 2016, Fig. 4e)")
    elif kinds[-1] == "BN":
        order = ("a BatchNorm runs after the last convolution: in full pre-activation the branch ends "
                 "with the 1×1 conv and the addition is the last operation")
    unactivated = [m for m, low, _ in calls if isinstance(m, nn.Conv2d) and low < 0]
    raw = [m for m, _, is_input in calls if isinstance(m, nn.Conv2d) and is_input]
    relu = None
    branch_end = [m for m, _, _ in calls if isinstance(m, nn.Conv2d)][-1:]
    if raw and raw[0].out_channels == out_channels and raw[0] not in branch_end:
        relu = ("the projection shortcut reads the raw input: with conv_shortcut=True, Keras' Block2 applies it "
                "to the pre-activated input (the preact BN → ReLU output), like the residual branch")
    elif unactivated:
        relu = (f"a convolution ({_conv_text(unactivated[0])}) reads values that went through no ReLU: every conv, "
                "and the projection shortcut, should read BN → ReLU output")
    return order, relu


def _after_add_problem(block, calls, x: Tensor, stride: int) -> Optional[str]:
    """Zero the branch's last conv: then the block must return exactly its shortcut."""
    convs = [m for m, _, _ in calls if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    with torch.no_grad():
        saved = [p.clone() for p in convs[-1].parameters()]
        for p in convs[-1].parameters():
            p.zero_()
        try:
            zeroed = block(x.clone())
        finally:
            for p, s in zip(convs[-1].parameters(), saved):
                p.copy_(s)
    shortcut = x[:, :, ::stride, ::stride]
    if _close(zeroed, shortcut):
        return None
    if _close(zeroed, torch.relu(shortcut)):
        return ("a ReLU follows the addition: in full pre-activation nothing comes after the add, so the "
                "shortcut path stays a clean identity (He et al. 2016, Sec. 3 and Fig. 4e)")
    if stride > 1 and zeroed.shape == shortcut.shape:
        return (f"with stride {stride} and no conv shortcut, the shortcut should be a 1×1 max pool with stride "
                f"{stride} on the raw input (Keras' Block2), i.e. x[:, :, ::{stride}, ::{stride}]")
    return ("with the branch zeroed the block does not return its shortcut: something after the addition "
            "(or in the shortcut) changes the output")


# --------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------


def check_param_count(model: nn.Module, expected: int, num_classes: Optional[int] = None) -> CheckResult:
    """Compare a model's parameter count with ``expected`` and, when they differ, guess which
    layer the difference could be ("one 3×3 conv 64→64?")."""
    result = CheckResult("Checking the parameter count")
    n = count_parameters(model)
    if n == expected:
        result.add(True, f"{n:,} parameters, as expected")
    else:
        hint = difference_hint(n - expected, RESNET_CHANNELS, num_classes)
        result.add(False, f"you have {n:,} parameters, expected {expected:,} (difference {n - expected:+,}{hint})")
    return result


def _reference_model(name: str, num_classes: int) -> Tuple[nn.Module, str]:
    from resnet_course.models import MODEL_NAMES, get_model

    if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes), f"torchvision's {name}"
    if name in MODEL_NAMES:
        return get_model(name, num_classes=num_classes), f"the course's {name} (Keras layout)"
    raise ValueError(f"unknown reference model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def _children_report(model: nn.Module, reference: nn.Module, ref_text: str) -> List[str]:
    lines = []
    mine = dict(model.named_children())
    for name, ref_child in reference.named_children():
        child = mine.get(name)
        n_ref = count_parameters(ref_child)
        if child is None:
            if n_ref:
                lines.append(f"`{name}` is missing (in {ref_text} it has {n_ref:,} parameters)")
            continue
        n = count_parameters(child)
        if n != n_ref:
            mine_blocks = ref_blocks = ""
            if isinstance(child, nn.Sequential) and isinstance(ref_child, nn.Sequential) and len(child) != len(ref_child):
                mine_blocks, ref_blocks = f" in {len(child)} blocks", f" in {len(ref_child)} blocks"
            lines.append(f"`{name}` has {n:,} parameters{mine_blocks}; in {ref_text}: {n_ref:,}{ref_blocks}")
    return lines


def _first_difference(model: nn.Module, reference: nn.Module, x: Tensor) -> Optional[str]:
    """The first top-level part (in the reference's order) whose output differs."""
    outputs = {}

    def keeper(key):
        def keep(module, inputs, output):  # returns None: the forward pass goes on unchanged
            if key not in outputs:
                outputs[key] = output.clone() if isinstance(output, Tensor) else output  # before in-place ReLUs
        return keep

    handles = [child.register_forward_hook(keeper((tag, name)))
               for tag, net in (("mine", model), ("ref", reference)) for name, child in net.named_children()]
    try:
        model(x)
        reference(x)
    finally:
        for h in handles:
            h.remove()
    for name, _ in reference.named_children():
        a, b = outputs.get(("mine", name)), outputs.get(("ref", name))
        if isinstance(a, Tensor) and isinstance(b, Tensor) and not _close(a, b):
            return name
    return None


def check_model(model: nn.Module, reference_name: str, num_classes: Optional[int] = None) -> CheckResult:
    """Compare a learner's whole network with a reference (``"resnet34"`` → torchvision's,
    ``"resnet50v2"`` → the course's): parameter count (with the parts that differ), output shape,
    state_dict keys and shapes, and, when the reference's weights load, the same logits.

    ``num_classes`` defaults to the size of the learner's output.
    """
    result = CheckResult(f"Checking your model against {reference_name}")
    with _seeded():
        x = torch.randn(2, 3, 64, 64)
        try:
            with torch.no_grad(), evaluating(model):
                out = model(x)
        except Exception as error:
            result.add(False, f"your model fails on a {_shape(x)} batch: {_first_line(error)}")
            out = None
        if num_classes is None:
            num_classes = out.shape[-1] if isinstance(out, Tensor) and out.ndim == 2 else 1000
        reference, ref_text = _reference_model(reference_name, num_classes)
        n, n_ref = count_parameters(model), count_parameters(reference)
        if n == n_ref:
            result.add(True, f"{n:,} parameters, as {ref_text}")
        else:
            hint = difference_hint(n - n_ref, RESNET_CHANNELS, num_classes)
            result.add(False, f"you have {n:,} parameters, {ref_text} has {n_ref:,} (difference {n - n_ref:+,}{hint})")
            for line in _children_report(model, reference, ref_text):
                result.add(False, line)
        if isinstance(out, Tensor):
            if tuple(out.shape) == (2, num_classes):
                result.add(True, f"output shape (2, {num_classes}) for a (2, 3, 64, 64) batch")
            else:
                result.add(False, f"output shape {_shape(out)} for a (2, 3, 64, 64) batch, expected (2, {num_classes})")
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        ref = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        missing = [k for k in ref if k not in mine]
        unexpected = [k for k in mine if k not in ref]
        mismatched = [f"{k} {mine[k]} vs {ref[k]}" for k in ref if k in mine and mine[k] != ref[k]]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("with another shape", mismatched)):
            if items:
                more = f" and {len(items) - 3} more" if len(items) > 3 else ""
                result.add(False, f"state_dict entries {label} ({len(items)}): {', '.join(items[:3])}{more}")
        if missing or unexpected or mismatched:
            return result
        result.add(True, f"state_dict: the same names and shapes as in {ref_text}, so its weights load strictly")
        twin = copy.deepcopy(model)
        _randomize_batch_norms(reference)
        twin.load_state_dict(reference.state_dict())
        twin.eval()
        reference.eval()
        with torch.no_grad():
            try:
                same = _close(twin(x), reference(x))
            except Exception as error:
                result.add(False, f"with the weights of {ref_text} your model fails: {_first_line(error)}")
                return result
            if same:
                result.add(True, f"with the weights of {ref_text}, your model gives the same logits")
            else:
                where = _first_difference(twin, reference, x)
                place = f" from `{where}` on" if where else ""
                result.add(False, f"with the weights of {ref_text}, your logits differ{place}: same weights, different "
                                  "computation (check the order of operations and the strides)")
    return result


# --------------------------------------------------------------------------------------------
# Grad-CAM (notebook 08)
# --------------------------------------------------------------------------------------------


def _grad_cam_variants(model: nn.Module, image: Tensor, layer: nn.Module, class_idx: int) -> dict:
    """Grad-CAM of one image as learners commonly get it wrong, keyed by the bug, to name a
    mismatch. (The right map comes from ``explain.grad_cam``, the one source of truth.)"""
    import torch.nn.functional as F

    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(image[None])
            activations = captured[0]
            logit_grad, = torch.autograd.grad(logits[0, class_idx], activations, retain_graph=True)
            prob_grad, = torch.autograd.grad(logits.softmax(1)[0, class_idx], activations)
    finally:
        handle.remove()
    a = activations.detach()

    def per_channel(gradients):
        return (gradients.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True)

    def finish(cam, mode="bilinear", align_corners=False):
        options = {"align_corners": align_corners} if mode == "bilinear" else {}
        cam = F.interpolate(cam, size=image.shape[-2:], mode=mode, **options)[0, 0]
        return cam / cam.max() if cam.max() > 0 else torch.zeros_like(cam)

    right = F.relu(per_channel(logit_grad))
    return {
        "position by position": finish(F.relu((logit_grad * a).sum(1, keepdim=True))),
        "softmax": finish(F.relu(per_channel(prob_grad))),
        "no relu": finish(per_channel(logit_grad)),
        "nearest": finish(right, mode="nearest"),
        "align_corners": finish(right, align_corners=True),
    }


_GRAD_CAM_BUGS = {
    "position by position": "you multiplied the gradients with the activations position by position; Grad-CAM "
                            "first averages each channel's gradient over the map into one weight per channel, "
                            "a_k = mean_ij dy_c/dA_k(i, j) (Selvaraju et al. 2017, eq. 1), then weighs the whole map",
    "softmax": "you took the gradient of the softmax probability; Grad-CAM uses the class score before the "
               "softmax (the logit), whose gradient does not fade away when the model is confident",
    "no relu": "the map keeps negative evidence: apply ReLU to the weighted sum before dividing by the maximum "
               "(Grad-CAM shows only what speaks *for* the class)",
    "nearest": "you upsampled with nearest-neighbour; use bilinear interpolation (F.interpolate(..., "
               "mode='bilinear', align_corners=False))",
    "align_corners": "you upsampled with align_corners=True; use align_corners=False, which maps pixel "
                     "areas rather than pixel corners",
}


def check_grad_cam(fn) -> CheckResult:
    """Check a learner's Grad-CAM, ``fn(model, image, layer, class_idx)`` → an ``(H, W)`` map in
    [0, 1] for one ``(3, H, W)`` image, against ``explain.grad_cam`` on a small seeded ResNet
    (CIFAR ResNet-8 at 32 px, its middle stage ``stage2`` with 16×16 maps: on the last stage,
    followed only by pooling and a linear layer, the gradient is the same at every position and
    some bugs would not show), for the predicted class and for another class.

    A mismatch is named when it is one of the classic bugs: gradients not averaged per channel,
    the softmax instead of the logit, no ReLU, the wrong class, no or the wrong upsampling, no
    division by the maximum; and a hook left registered on the layer is reported.
    """
    from resnet_course.explain import grad_cam, stage_feature_maps
    from resnet_course.models import cifar_resnet

    result = CheckResult("Checking your Grad-CAM against explain.grad_cam")
    with _seeded():
        model = cifar_resnet(8, num_classes=4)
        _randomize_batch_norms(model)
        model.eval()
        images = torch.randn(2, 3, 32, 32)
    layer = model.stage2
    with torch.no_grad():
        ranked = model(images).argsort(dim=1, descending=True)
    cases = [(images[0], int(ranked[0, 0]), "the predicted class"), (images[1], int(ranked[1, 1]), "another class")]
    size = tuple(images.shape[-2:])
    call = "my_grad_cam(model, image, model.stage2, class_idx)"
    for image, class_idx, which in cases:
        hooks_before = sum(len(m._forward_hooks) for m in model.modules())
        try:
            out = fn(model, image.clone(), layer, class_idx)
        except Exception as error:
            result.add(False, f"{call} raised {_first_line(error)}")
            return result
        if sum(len(m._forward_hooks) for m in model.modules()) != hooks_before:
            result.add(False, "a forward hook is still registered after your function returned: keep the handle "
                              "register_forward_hook gives you and call handle.remove() (in a finally: block)")
        try:
            cam = torch.as_tensor(out.detach() if isinstance(out, Tensor) else out, dtype=torch.float32).cpu()
        except Exception:
            result.add(False, f"your function returned {type(out).__name__}, expected an (H, W) tensor")
            return result
        while cam.ndim > 2 and cam.shape[0] == 1:
            cam = cam[0]
        if tuple(cam.shape) != size:
            layer_size = tuple(stage_feature_maps(model, image)["stage2"].shape[-2:])
            if tuple(cam.shape) == layer_size:
                result.add(False, f"the map is {cam.shape[0]}×{cam.shape[1]}, the size of the layer's output: "
                                  f"upsample it to the image's {size[0]}×{size[1]} (F.interpolate, bilinear)")
            else:
                result.add(False, f"the map has shape {_shape(cam)}; expected {size}, the image's height and width")
            return result
        result.add(True, f"the map has the image's size, {size[0]}×{size[1]}")
        reference = grad_cam(model, image, target_layer=layer, class_idx=class_idx)[0]
        if torch.allclose(cam, reference, atol=1e-4):
            result.add(True, f"the same map as explain.grad_cam for {which}")
            continue
        if which == "another class":
            predicted = grad_cam(model, image, target_layer=layer, class_idx=int(ranked[1, 0]))[0]
            if torch.allclose(cam, predicted, atol=1e-4):
                result.add(False, "asked for a class the model does not predict, you returned the map of the "
                                  "predicted class: take the logit of class_idx, not of the argmax")
                return result
        if cam.min() < -1e-6:
            result.add(False, _GRAD_CAM_BUGS["no relu"])
            return result
        if cam.max() > 1 + 1e-4 or (cam.max() < 1 - 1e-4 and reference.max() > 0):
            result.add(False, f"the map's maximum is {cam.max().item():.3g}: divide by the maximum, so the "
                              "strongest evidence is 1")
            return result
        variants = _grad_cam_variants(model, image, layer, class_idx)
        named = [bug for bug, variant in variants.items() if torch.allclose(cam, variant, atol=1e-4)]
        if named:
            result.add(False, _GRAD_CAM_BUGS[named[0]])
        else:
            difference = (cam - reference).abs().max().item()
            result.add(False, f"for {which} your map differs from explain.grad_cam by up to {difference:.2f} "
                              "(check the three steps: weights = mean gradient per channel, ReLU of the weighted "
                              "sum, bilinear upsampling and division by the maximum)")
        return result
    return result


__all__ = [
    "CheckResult", "RESNET_CHANNELS", "count_parameters", "difference_hint", "check_basic_block",
    "check_bottleneck", "check_shortcut", "check_preact_block", "check_param_count", "check_model",
    "check_grad_cam",
]
