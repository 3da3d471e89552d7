"""Checker for the ResNet v2 pre-activation bottleneck."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..blocks import KERAS_BN_EPS, PreActBottleneck
from ..models import like_a_trained_net
from ..stages import count_params
from .core import (
    CHECKER_BN,
    CheckResult,
    _close,
    _conv_text,
    _count_text,
    _first_line,
    _out_size,
    _seeded,
    _shape,
    difference_hint,
)

# --------------------------------------------------------------------------------------------
# ResNet v2: the pre-activation bottleneck
# --------------------------------------------------------------------------------------------


PREACT_CASES = ((64, 64, 1, True), (256, 64, 1, False), (256, 64, 2, False))
EPS_TEXT = f"{KERAS_BN_EPS:.3e}".replace("e-05", "e-5")  # "1.001e-5", as the notebooks write it


def check_preact_block(block_cls) -> CheckResult:
    """Check a learner's pre-activation bottleneck against the course's ``PreActBottleneck``
    (Keras Applications' Block2; He et al. 2016, Fig. 4e: "full pre-activation").

    Your class must take ``(inplanes, planes, stride=1, conv_shortcut=False)``. It is built as the
    first block of a stage (``block(64, 64, conv_shortcut=True)``), an identity block
    (``block(256, 64)``) and a strided block (``block(256, 64, stride=2)``), and checked for:
    Keras' BatchNorm epsilon (1.001e-5, not PyTorch's 1e-5: the course's v2 reproduces Keras
    Applications' outputs), parameters, output shape, BN → ReLU before every conv (and before the
    projection shortcut), and nothing after the addition. For each kind of check the first failing case is reported.
    """
    result = CheckResult("Checking your pre-activation block against the course's PreActBottleneck")
    findings = []
    with _seeded():
        for inplanes, planes, stride, conv_shortcut in PREACT_CASES:
            extras = (f", stride={stride}" if stride != 1 else "") + (", conv_shortcut=True" if conv_shortcut else "")
            call = f"block({inplanes}, {planes}{extras})"
            try:
                block = block_cls(inplanes, planes, stride, conv_shortcut)
            except Exception as error:
                result.add(
                    False,
                    f"{call} fails: {_first_line(error)} (the constructor takes "
                    "(inplanes, planes, stride=1, conv_shortcut=False))",
                )
                continue
            reference = PreActBottleneck(inplanes, planes, stride, conv_shortcut)
            findings.append(_preact_case(block, reference, call, inplanes, planes, stride, conv_shortcut))
    if not findings:
        return result
    complete = len(findings) == len(PREACT_CASES)
    result.add(True, "builds: " + ", ".join(f["call"] for f in findings))
    for kind, success in (
        (
            "eps",
            lambda: (
                f"every BatchNorm has eps {EPS_TEXT} (Keras' value; PyTorch's default is 1e-5), as "
                "the course's ResNet50V2 needs to match Keras Applications' outputs (notebook 04)"
            ),
        ),
        ("params", lambda: "parameters: " + ", ".join(f"{f['ref']:,}" for f in findings) + ", as the reference"),
        ("shape", lambda: "output shapes: " + ", ".join(str(f["expected_shape"]) for f in findings)),
        ("order", lambda: "BN → ReLU come first and the branch ends with a convolution (He et al. 2016, Fig. 4e)"),
        ("relu", lambda: "every convolution, and the projection shortcut, reads BN → ReLU output"),
        (
            "after_add",
            lambda: (
                "nothing after the addition: with the branch zeroed the block returns its shortcut "
                "(x, or x[:, :, ::2, ::2] when it strides: a 1×1 max pool)"
            ),
        ),
        ("computation", lambda: "with the reference's weights copied in, your block gives the reference's output"),
    ):
        failures = [f[kind] for f in findings if f.get(kind)]
        checked = [f for f in findings if kind != "after_add" or not f["conv_shortcut"]]
        if kind == "computation" and not result.ok:
            continue  # the output differs because of the mistakes already named
        if failures:
            result.add(False, failures[0])
        elif complete and all(kind in f for f in checked):  # a case that failed early was not checked
            result.add(True, success())
    return result


def _preact_case(block, reference, call, inplanes, planes, stride, conv_shortcut) -> dict:
    """Findings for one built pre-activation block: {kind: failure message or None}."""
    found = {"call": call, "conv_shortcut": conv_shortcut, "ref": count_params(reference)}
    n, ref = count_params(block), found["ref"]
    hint = difference_hint(n - ref, (inplanes, planes, 4 * planes))
    if not hint and abs(n - ref) in (planes, 4 * planes):
        hint = (
            f" = the bias of a conv with {abs(n - ref)} outputs? Keras' Block2 gives conv3 and the projection "
            "shortcut a bias, and no other conv"
        )
    found["params"] = (
        None if n == ref else (f"{call} has {_count_text(n)}, the reference {ref:,} (difference {n - ref:+,}{hint})")
    )
    if not isinstance(block, nn.Module):
        found["shape"] = f"{call} is not an nn.Module"
        return found
    found["eps"] = _eps_problem(block)
    block.eval()
    like_a_trained_net(block, **CHECKER_BN)
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
    if not any(found.get(kind) for kind in ("params", "order", "relu", "after_add")):  # else those say why
        found["computation"] = _computation_problem(block, reference, calls, x)
    return found


def _weight_shapes(module: nn.Module) -> list:
    return [(type(module), tuple(t.shape)) for t in module.state_dict().values()]


def _computation_problem(block, reference, calls, x: Tensor) -> str | None:
    """Copy the reference's weights into the learner's layers (paired in the order they run, by
    kind and shape) and compare the outputs: any other difference in the computation shows."""
    reference.eval()
    like_a_trained_net(reference, **CHECKER_BN)
    with torch.no_grad():
        reference_calls, expected = _watch_conv_inputs(reference, x)
    names = {id(m): name for name, m in block.named_modules()}
    mine = list(dict.fromkeys(m for m, _, _ in calls))
    twin = copy.deepcopy(block)
    for layer in dict.fromkeys(m for m, _, _ in reference_calls):
        match = next((m for m in mine if _weight_shapes(m) == _weight_shapes(layer)), None)
        if match is None:
            return None  # the structure differs: the other checks say how
        mine.remove(match)
        twin.get_submodule(names[id(match)]).load_state_dict(layer.state_dict())
    with torch.no_grad():
        if _close(twin(x.clone()), expected):
            return None
    if any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride[0] > 1 for m, _, _ in calls):
        return "the stride sits on a 1×1 conv: Keras' Block2 puts it on the 3×3 conv (conv2), which sees every position"
    return (
        "with the reference's weights copied in, your block gives other outputs: the same layers compute "
        "something else (check that the stride sits on the 3×3 conv and the order BN → ReLU → conv)"
    )


def _eps_problem(block: nn.Module) -> str | None:
    """Keras' BatchNorm epsilon, 1.001e-5, in every BN of the block (He et al.'s v2 as Keras builds it)."""
    wrong = [
        (name, m.eps)
        for name, m in block.named_modules()
        if isinstance(m, nn.BatchNorm2d) and abs(m.eps - KERAS_BN_EPS) > 1e-12
    ]
    if not wrong:
        return None
    name, eps = wrong[0]
    return (
        f"`{name}` has eps {eps:g}: the checker asks for {EPS_TEXT}, Keras Applications' value in every "
        "BatchNorm of ResNet50V2 (PyTorch's default is 1e-5), because the course's v2 reproduces Keras' outputs "
        f"and loads its weights exactly (notebook 04); pass eps={EPS_TEXT} to each nn.BatchNorm2d"
    )


def _watch_conv_inputs(block: nn.Module, x: Tensor):
    """Run ``block(x)`` and return (calls, output): ``calls`` lists (module, smallest input value,
    whether the input is ``x`` itself) for every Conv2d and BatchNorm2d in the order they ran."""
    calls: list[tuple[nn.Module, float, bool]] = []

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


def _preact_order_problems(calls, call: str, out_channels: int) -> tuple[str | None, str | None]:
    """(order problem, missing-ReLU problem) from the order convs and BNs ran and their inputs."""
    kinds = ["BN" if isinstance(m, nn.BatchNorm2d) else "conv" for m, _, _ in calls]
    order = None
    if not kinds:
        order = f"{call}: no Conv2d or BatchNorm2d ran in forward"
    elif kinds[0] != "BN":
        order = (
            "the block starts with a convolution: in full pre-activation BN → ReLU come first, "
            "before every conv (He et al. 2016, Fig. 4e)"
        )
    elif kinds[-1] == "BN":
        order = (
            "a BatchNorm runs after the last convolution: in full pre-activation the branch ends "
            "with the 1×1 conv and the addition is the last operation"
        )
    unactivated = [m for m, low, _ in calls if isinstance(m, nn.Conv2d) and low < 0]
    raw = [m for m, _, is_input in calls if isinstance(m, nn.Conv2d) and is_input]
    relu = None
    branch_end = [m for m, _, _ in calls if isinstance(m, nn.Conv2d)][-1:]
    if raw and raw[0].out_channels == out_channels and raw[0] not in branch_end:
        relu = (
            "the projection shortcut reads the raw input: with conv_shortcut=True, Keras' Block2 applies it "
            "to the pre-activated input (the preact BN → ReLU output), like the residual branch"
        )
    elif unactivated:
        relu = (
            f"a convolution ({_conv_text(unactivated[0])}) reads values that went through no ReLU: every conv, "
            "and the projection shortcut, should read BN → ReLU output"
        )
    return order, relu


def _after_add_problem(block, calls, x: Tensor, stride: int) -> str | None:
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
        return (
            "a ReLU follows the addition: in full pre-activation nothing comes after the add, so the "
            "shortcut path stays a clean identity (He et al. 2016, Sec. 3 and Fig. 4e)"
        )
    if zeroed.shape == shortcut.shape and zeroed.min() >= 0 > shortcut.min():
        return (
            "the shortcut reads the pre-activated input (BN → ReLU output): without conv_shortcut, Keras' Block2 "
            "adds the raw input x (a 1×1 max pool of it when the block strides)"
        )
    if stride > 1 and zeroed.shape == shortcut.shape:
        return (
            f"with stride {stride} and no conv shortcut, the shortcut should be a 1×1 max pool with stride "
            f"{stride} on the raw input (Keras' Block2), i.e. x[:, :, ::{stride}, ::{stride}]"
        )
    return (
        "with the branch zeroed the block does not return its shortcut: something after the addition "
        "(or in the shortcut) changes the output"
    )
