"""Checkers for whole models: parameter count and layer-by-layer equality with torchvision."""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import Tensor, nn

from resnet_course.models import MODEL_NAMES, V1_NAMES, get_model, like_a_trained_net

from ..device import evaluating
from ..stages import count_params
from .core import (
    CHECKER_BN,
    RESNET_CHANNELS,
    CheckResult,
    _close,
    _first_line,
    _seeded,
    _shape,
    difference_hint,
)

# --------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------


def check_param_count(model: nn.Module, expected: int, num_classes: int | None = None) -> CheckResult:
    """Compare a model's parameter count with ``expected`` and, when they differ, guess which
    layer the difference could be ("one 3×3 conv 64→64?")."""
    result = CheckResult("Checking the parameter count")
    n = count_params(model)
    if n == expected:
        result.add(True, f"{n:,} parameters, as expected")
    else:
        hint = difference_hint(n - expected, RESNET_CHANNELS, num_classes)
        result.add(False, f"you have {n:,} parameters, expected {expected:,} (difference {n - expected:+,}{hint})")
    return result


def _reference_model(name: str, num_classes: int) -> tuple[nn.Module, str]:

    classes = "" if num_classes == 1000 else f" with {num_classes} classes"  # ImageNet's 1000 go unsaid
    if name in V1_NAMES:
        reference = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        return reference, f"torchvision's {name}{classes}"
    if name in MODEL_NAMES:
        return get_model(name, num_classes=num_classes), f"the course's {name}{classes} (Keras layout)"
    raise ValueError(f"unknown reference model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def _children_report(model: nn.Module, reference: nn.Module, ref_text: str) -> list[str]:
    lines = []
    mine = dict(model.named_children())
    for name, ref_child in reference.named_children():
        child = mine.get(name)
        n_ref = count_params(ref_child)
        if child is None:
            if n_ref:
                lines.append(f"`{name}` is missing (in {ref_text} it has {n_ref:,} parameters)")
            continue
        n = count_params(child)
        if n != n_ref:
            mine_blocks = ref_blocks = ""
            both_sequential = isinstance(child, nn.Sequential) and isinstance(ref_child, nn.Sequential)
            if both_sequential and len(child) != len(ref_child):
                mine_blocks, ref_blocks = f" in {len(child)} blocks", f" in {len(ref_child)} blocks"
            lines.append(f"`{name}` has {n:,} parameters{mine_blocks}; in {ref_text}: {n_ref:,}{ref_blocks}")
    return lines


def _first_difference(model: nn.Module, reference: nn.Module, x: Tensor) -> str | None:
    """The first top-level part (in the reference's order) whose output differs."""
    outputs = {}

    def keeper(key):
        def keep(module, inputs, output):  # returns None: the forward pass goes on unchanged
            if key not in outputs:
                outputs[key] = output.clone() if isinstance(output, Tensor) else output  # before in-place ReLUs

        return keep

    handles = [
        child.register_forward_hook(keeper((tag, name)))
        for tag, net in (("mine", model), ("ref", reference))
        for name, child in net.named_children()
    ]
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


def check_model(model: nn.Module, reference_name: str, num_classes: int | None = None) -> CheckResult:
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
        n, n_ref = count_params(model), count_params(reference)
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
        like_a_trained_net(reference, **CHECKER_BN)
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
                result.add(
                    False,
                    f"with the weights of {ref_text}, your logits differ{place}: same weights, different "
                    "computation (check the order of operations and the strides)",
                )
    return result
