"""Checkers for the ResNet v1 blocks (BasicBlock, Bottleneck); the shortcut on its own is ``shortcut``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from ..models import like_a_trained_net
from ..stages import count_params
from .core import (
    CHECKER_BN,
    CheckResult,
    _close,
    _count_text,
    _first_line,
    _out_size,
    _seeded,
    _shape,
    difference_hint,
)

# --------------------------------------------------------------------------------------------
# ResNet v1 blocks: BasicBlock and Bottleneck
# --------------------------------------------------------------------------------------------

#: BatchNorm epsilon of torchvision's ResNets (PyTorch's default).
TORCHVISION_BN_EPS = 1e-5


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
    kernels: tuple[int, ...]  # kernel size of each conv of the residual branch, in order
    stride_index: int  # which conv carries the stride (torchvision)
    cases: tuple[_Case, ...]
    branch_text: str

    def expected_convs(self, case: _Case) -> list[_Expected]:
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


def _module_order(block: nn.Module, x: Tensor, skip: Sequence[nn.Module]):
    """Run ``block(x)`` while recording the order its convs and BNs (outside ``skip``) are
    called; returns (convs, bns, output or None, error or None, {id: number of calls}). Modules
    never called follow in the order they were registered."""
    skip_ids = {id(m) for s in skip for m in s.modules()}
    watched = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and id(m) not in skip_ids]
    called: list[nn.Module] = []
    counts: dict[int, int] = {}

    def record(module, inputs):
        counts[id(module)] = counts.get(id(module), 0) + 1
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
    return convs, bns, output, error, counts


def _usage_problems(convs, bns, counts: dict, names: dict) -> dict:
    """Layers used twice or never, and BatchNorms with another epsilon than torchvision's."""
    problems = {}
    for m in [*convs, *bns]:
        name, n = names.get(id(m), "?"), counts.get(id(m), 0)
        if n > 1:
            problems[("reused", name)] = (
                f"`{name}` runs {n} times in forward: each conv of the branch has its "
                "own weights and its own BatchNorm, used once"
            )
        elif n == 0:
            problems[("unused", name)] = f"`{name}` is built but never used in forward"
    wrong_eps = [(names.get(id(bn), "?"), bn.eps) for bn in bns if abs(bn.eps - TORCHVISION_BN_EPS) > 1e-12]
    if wrong_eps:
        problems["eps"] = (
            f"`{wrong_eps[0][0]}` has eps {wrong_eps[0][1]:g}: torchvision's blocks use PyTorch's "
            "default 1e-5, which its trained weights expect"
        )
    return problems


def _training_verdict(block, convs, bns, x: Tensor, shortcut_fn) -> str | None:
    """In train mode, with gradients: the same output and the same gradient with respect to the
    input as relu(F(x) + shortcut(x)) built from the block's own layers (nothing that only
    shows in training, such as dropout, and the shortcut not cut off from the gradient)."""
    mine_x, formula_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.enable_grad(), torch.random.fork_rng(devices=[]):
        block.train()
        out = block(mine_x)
        expected = torch.relu(_branch(convs, bns, formula_x) + shortcut_fn(formula_x))
        if not _close(out.detach(), expected.detach()):
            return (
                "in train mode your block computes something else than relu(F(x) + shortcut(x)) (dropout, or "
                "something that depends on self.training?): torchvision's block has none"
            )
        weights = torch.randn_like(out)
        (mine,) = torch.autograd.grad((out * weights).sum(), mine_x)
        (wanted,) = torch.autograd.grad((expected * weights).sum(), formula_x)
    block.eval()
    if not _close(mine, wanted):
        return (
            "the gradient does not flow through the shortcut (detached, or computed under no_grad?): the "
            "shortcut is the path that carries the gradient straight back to earlier layers "
            "(He et al. 2016, Eq. 5)"
        )
    return None


def _role(i: int, module: nn.Module, names: dict) -> str:
    role = f"conv{i + 1}"
    name = names.get(id(module), role)
    return role if name == role else f"{role} (your `{name}`)"


def _stride_problem(spec: _BlockSpec, case: _Case, strides: list[int], roles: list[str]) -> str | None:
    """Which conv carries the block's stride: torchvision's ("v1.5") puts it on ``spec.stride_index``."""
    if case.stride == 1:
        return "with stride=1 every convolution should have stride 1" if any(s != 1 for s in strides) else None
    if strides[spec.stride_index] == case.stride:
        return None
    where = [i for i, s in enumerate(strides) if s == case.stride]
    if not where:
        return (
            f"no convolution has stride {case.stride}: with stride={case.stride} the block must halve the "
            f"feature map (torchvision puts the stride on {roles[spec.stride_index]})"
        )
    if spec.name == "Bottleneck" and where[0] == 0:
        return (
            f"the stride sits on the first 1×1 conv (the original paper's v1): torchvision's ResNet "
            f'("v1.5") puts it on the 3×3 conv, {roles[1]}, which sees every pixel instead of 1 in 4'
        )
    return f"the stride belongs on {roles[spec.stride_index]} (as in torchvision), yours is on {roles[where[0]]}"


def _structure_problems(spec: _BlockSpec, case: _Case, convs, bns, names) -> dict:
    """What is wrong with the residual branch, as {kind of problem: message}."""
    expected = spec.expected_convs(case)
    problems: dict = {}
    if len(convs) != len(expected):
        return {
            "conv count": (
                f"the residual branch should have {len(expected)} convolutions ({spec.branch_text}); "
                f"yours has {len(convs)} outside `downsample`"
                + (
                    "; build no shortcut of your own: use the `downsample` passed in"
                    if len(convs) > len(expected)
                    else ""
                )
            )
        }
    roles = [_role(i, c, names) for i, c in enumerate(convs)]
    for i, (conv, want) in enumerate(zip(convs, expected)):
        role = roles[i]
        if conv.in_channels != want.in_channels:
            if i > 0 and conv.in_channels == case.inplanes and want.in_channels == case.planes:
                problems.setdefault(
                    ("in", i),
                    f"{role} should take `planes` input channels, not `inplanes`: it reads conv{i}'s "
                    f"output, which has `planes` channels ({case.planes} here; yours expects {case.inplanes})",
                )
            else:
                problems.setdefault(
                    ("in", i), f"{role} should take {want.in_channels} input channels, yours takes {conv.in_channels}"
                )
        if conv.out_channels != want.out_channels:
            if want.out_channels == case.planes * spec.expansion != case.planes and conv.out_channels == case.planes:
                problems.setdefault(
                    ("out", i),
                    f"{role} should expand to `planes * expansion` = {want.out_channels} channels, not "
                    f"`planes` = {case.planes}: a Bottleneck's output is {spec.expansion}× wider than its 3×3 conv",
                )
            else:
                problems.setdefault(
                    ("out", i), f"{role} should have {want.out_channels} output channels, yours has {conv.out_channels}"
                )
        if tuple(conv.kernel_size) != (want.kernel, want.kernel):
            problems.setdefault(
                ("kernel", i),
                f"{role} should be a {want.kernel}×{want.kernel} conv, yours is "
                f"{conv.kernel_size[0]}×{conv.kernel_size[1]}",
            )
        elif tuple(conv.padding) != (want.kernel // 2,) * 2:
            problems.setdefault(
                ("padding", i),
                f"{role} needs padding={want.kernel // 2} so that the "
                f"{want.kernel}×{want.kernel} conv keeps the feature-map size",
            )
    stride = _stride_problem(spec, case, [conv.stride[0] for conv in convs], roles)
    if stride:
        problems.setdefault("stride", stride)
    with_bias = [roles[i] for i, conv in enumerate(convs) if conv.bias is not None]
    if with_bias:
        problems.setdefault(
            "bias",
            f"{', '.join(with_bias)} {'has a bias' if len(with_bias) == 1 else 'have biases'}: a conv followed by "
            "BatchNorm needs none (bias=False); the BN's shift does that job",
        )
    if len(bns) != len(expected):
        problems.setdefault(
            "bn count",
            f"the residual branch should have {len(expected)} BatchNorm layers, one after "
            f"each conv; yours has {len(bns)}",
        )
    else:
        for i, (bn, want) in enumerate(zip(bns, expected)):
            if bn.num_features != want.out_channels:
                problems.setdefault(
                    ("bn", i),
                    f"bn{i + 1} should normalize {want.out_channels} channels "
                    f"(conv{i + 1}'s output), yours {bn.num_features}",
                )
    return problems


def _branch(convs, bns, x: Tensor, inner_relu: bool = True) -> Tensor:
    """The v1 residual branch from the learner's own modules: conv → BN (→ ReLU between)."""
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        x = bn(conv(x))
        if inner_relu and i < len(convs) - 1:
            x = torch.relu(x)
    return x


def _relu_before_bn_branch(convs, bns, x: Tensor) -> Tensor:
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        x = conv(x)
        x = bn(torch.relu(x)) if i < len(convs) - 1 else bn(x)
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


def _formula_verdict(spec: _BlockSpec, case: _Case, out: Tensor, convs, bns, x: Tensor, downsample) -> tuple[bool, str]:
    branch = _branch(convs, bns, x)
    shortcut = downsample(x) if case.projection else x
    if _close(out, torch.relu(branch + shortcut)):
        return True, (
            "forward computes relu(F(x) + shortcut(x)): the ReLU comes after the addition (He et al. 2015, Fig. 2)"
        )
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
    if _close(out, torch.relu(torch.relu(branch) + shortcut)):
        return False, (
            "a ReLU follows the last BN of the branch: F(x) ends with conv → BN, and the only ReLU after "
            "it comes after the addition, relu(F(x) + x)"
        )
    if _close(out, torch.relu(_relu_before_bn_branch(convs, bns, x) + shortcut)):
        return False, (
            "the ReLU comes before the BatchNorm inside the branch: the order is conv → BN → ReLU "
            "(Ioffe & Szegedy 2015, as in He et al. 2015)"
        )
    if _close(out, torch.relu(_branch(convs, bns, x, inner_relu=False) + shortcut)):
        return False, (
            "a ReLU inside the residual branch is missing: every conv → BN except the last is followed by a ReLU"
        )
    return False, (
        f"the output differs from relu(F(x) + shortcut(x)) with F = {spec.branch_text}: check the order "
        "of the operations in forward"
    )


def _check_v1_case(block, spec: _BlockSpec, case: _Case, downsample) -> dict:
    """Every finding about one built block: structure problems, parameter counts, forward."""
    reference = spec.reference(case.inplanes, case.planes, case.stride, copy.deepcopy(downsample))
    names = {id(m): name for name, m in block.named_modules()}
    block.eval()
    like_a_trained_net(block, **CHECKER_BN)
    x = _input_for(case)
    with torch.no_grad():
        convs, bns, out, error, counts = _module_order(block, x, [downsample] if downsample is not None else [])
        problems = _structure_problems(spec, case, convs, bns, names)
        if error is None:
            problems.update(_usage_problems(convs, bns, counts, names))
        if case.projection and not any(m is downsample for m in block.modules()):
            problems["downsample"] = (
                "the `downsample` passed to the constructor is not kept: store it (`self.downsample = downsample`)"
            )
        n, ref = count_params(block), count_params(reference)
        biases = sum(conv.bias.numel() for conv in convs if conv.bias is not None)
        if biases and n - ref == biases:
            hint = " = your conv biases"
        else:
            hint = difference_hint(n - ref, {case.inplanes, case.planes, case.planes * spec.expansion})
        call = _call_text(spec, case)
        params = (
            None
            if n == ref
            else (f"{call} has {_count_text(n)}, torchvision's has {ref:,} (difference {n - ref:+,}{hint})")
        )
        side = _out_size(8, case.stride)
        shape = (2, case.planes * spec.expansion, side, side)
        if error is not None:
            forward = (False, f"{call}: " + _forward_error_message(error, case, convs, bns, x, downsample))
        elif not isinstance(out, Tensor) or tuple(out.shape) != shape:
            got = _shape(out) if isinstance(out, Tensor) else f"a {type(out).__name__}"
            forward = (False, f"{call} returns {got}, expected {shape}")
        elif len(convs) == len(bns) == len(spec.kernels):
            forward = _formula_verdict(spec, case, out, convs, bns, x, downsample)
            if forward[0]:
                training = _training_verdict(block, convs, bns, x, downsample if case.projection else (lambda t: t))
                forward = (False, training) if training else forward
        else:
            forward = (None, "")  # the structure problems say why we can't compare the computation
    shape_ok = error is None and isinstance(out, Tensor) and tuple(out.shape) == shape
    return {
        "call": call,
        "problems": problems,
        "params": params,
        "ref": ref,
        "shape": shape,
        "shape_ok": shape_ok,
        "forward": forward,
    }


def _check_v1_block(block_cls, spec: _BlockSpec) -> CheckResult:
    """Build the learner's block in each case of ``spec`` and report, for each kind of check,
    the first case that fails it (a learner fixes one thing at a time) or one ✓ for all."""
    result = CheckResult(f"Checking your {spec.name} against torchvision's")
    expansion = getattr(block_cls, "expansion", None)
    if expansion != spec.expansion:
        result.add(
            False,
            f"{spec.name} needs the class attribute `expansion = {spec.expansion}` (yours: {expansion}); "
            "ResNet's _make_layer reads it to know the block's output channels",
        )
    findings = []
    with _seeded():
        for case in spec.cases:
            downsample = _projection(case, spec.expansion) if case.projection else None
            try:
                block = block_cls(case.inplanes, case.planes, case.stride, downsample)
            except Exception as error:
                result.add(
                    False,
                    f"{_call_text(spec, case)} fails: {_first_line(error)} (the constructor takes "
                    "(inplanes, planes, stride=1, downsample=None), as torchvision's)",
                )
                continue
            if not isinstance(block, nn.Module):
                result.add(
                    False,
                    f"{_call_text(spec, case)} is not an nn.Module (subclass nn.Module and call super().__init__())",
                )
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
