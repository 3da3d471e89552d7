"""Checker for a learner's Grad-CAM (notebook 08)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_course.explain import grad_cam, stage_feature_maps
from resnet_course.models import cifar_resnet, like_a_trained_net

from ..device import evaluating
from .core import CHECKER_BN, CheckResult, _first_line, _seeded, _shape

# --------------------------------------------------------------------------------------------
# Grad-CAM (notebook 08)
# --------------------------------------------------------------------------------------------


def _grad_cam_variants(model: nn.Module, image: Tensor, layer: nn.Module, class_idx: int) -> dict:
    """Grad-CAM of one image as learners commonly get it wrong, keyed by the bug, to name a
    mismatch. (The right map comes from ``explain.grad_cam``, the one source of truth.)"""

    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(image[None])
            activations = captured[0]
            (logit_grad,) = torch.autograd.grad(logits[0, class_idx], activations, retain_graph=True)
            (prob_grad,) = torch.autograd.grad(logits.softmax(1)[0, class_idx], activations)
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


def _shows_every_bug(model: nn.Module, image: Tensor, class_idx: int) -> bool:
    """True when the right map of ``image`` for ``class_idx`` is not trivial (some positive
    evidence, not flat) and every classic bug gives another map: a case the checker can use."""
    right = grad_cam(model, image, target_layer=model.stage2, class_idx=class_idx)[0]
    variants = _grad_cam_variants(model, image, model.stage2, class_idx).values()
    return bool(right.std() > 0.05) and all((variant - right).abs().max() > 1e-3 for variant in variants)


def _grad_cam_cases(seed: int = 0) -> tuple[nn.Module, list[tuple[Tensor, int, str]]]:
    """The checker's CIFAR ResNet-8 (BatchNorm statistics as after training, eval mode) and its two
    cases ``(image, class_idx, which)``: an image with its predicted class, and another image with
    a class it does not predict, each one on which every classic bug shows (``_shows_every_bug``).

    A random net can be one whose predicted class has no negative evidence anywhere, so that a
    missing ReLU would pass: then the next seed's net is taken. Deterministic for ``seed``.
    """
    for model_seed in range(seed, seed + 20):
        with _seeded(model_seed):
            model = cifar_resnet(8, num_classes=4)
            like_a_trained_net(model, seed=model_seed, **CHECKER_BN)
            model.eval()
            images = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            ranked = model(images).argsort(dim=1, descending=True).tolist()
        predicted = [(i, ranked[i][0]) for i in range(len(images))]
        first = next((case for case in predicted if _shows_every_bug(model, images[case[0]], case[1])), None)
        if first is None:
            continue
        others = [(i, c) for i in range(len(images)) if i != first[0] for c in ranked[i][1:]]
        second = next((case for case in others if _shows_every_bug(model, images[case[0]], case[1])), None)
        if second is not None:
            return model, [
                (images[first[0]], first[1], "the predicted class"),
                (images[second[0]], second[1], "another class"),
            ]
    raise RuntimeError(f"no CIFAR ResNet-8 seeded {seed} to {seed + 19} shows every Grad-CAM bug")


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

    result = CheckResult("Checking your Grad-CAM against explain.grad_cam")
    model, cases = _grad_cam_cases()
    layer = model.stage2
    size = tuple(cases[0][0].shape[-2:])
    call = "my_grad_cam(model, image, model.stage2, class_idx)"
    for image, class_idx, which in cases:
        hooks_before = sum(len(m._forward_hooks) for m in model.modules())
        try:
            out = fn(model, image.clone(), layer, class_idx)
        except Exception as error:
            result.add(False, f"{call} raised {_first_line(error)}")
            return result
        if sum(len(m._forward_hooks) for m in model.modules()) != hooks_before:
            result.add(
                False,
                "a forward hook is still registered after your function returned: keep the handle "
                "register_forward_hook gives you and call handle.remove() (in a finally: block)",
            )
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
                result.add(
                    False,
                    f"the map is {cam.shape[0]}×{cam.shape[1]}, the size of the layer's output: "
                    f"upsample it to the image's {size[0]}×{size[1]} (F.interpolate, bilinear)",
                )
            else:
                result.add(False, f"the map has shape {_shape(cam)}; expected {size}, the image's height and width")
            return result
        result.add(True, f"the map has the image's size, {size[0]}×{size[1]}")
        reference = grad_cam(model, image, target_layer=layer, class_idx=class_idx)[0]
        if torch.allclose(cam, reference, atol=1e-4):
            result.add(True, f"the same map as explain.grad_cam for {which}")
            continue
        if which == "another class":
            predicted = grad_cam(model, image, target_layer=layer)[0]  # the model's own choice
            if torch.allclose(cam, predicted, atol=1e-4):
                result.add(
                    False,
                    "asked for a class the model does not predict, you returned the map of the "
                    "predicted class: take the logit of class_idx, not of the argmax",
                )
                return result
        if cam.min() < -1e-6:
            result.add(False, _GRAD_CAM_BUGS["no relu"])
            return result
        if cam.max() > 1 + 1e-4 or (cam.max() < 1 - 1e-4 and reference.max() > 0):
            result.add(
                False,
                f"the map's maximum is {cam.max().item():.3g}: divide by the maximum, so the strongest evidence is 1",
            )
            return result
        variants = _grad_cam_variants(model, image, layer, class_idx)
        named = [bug for bug, variant in variants.items() if torch.allclose(cam, variant, atol=1e-4)]
        if named:
            result.add(False, _GRAD_CAM_BUGS[named[0]])
        else:
            difference = (cam - reference).abs().max().item()
            result.add(
                False,
                f"for {which} your map differs from explain.grad_cam by up to {difference:.2f} "
                "(check the three steps: weights = mean gradient per channel, ReLU of the weighted "
                "sum, bilinear upsampling and division by the maximum)",
            )
        return result
    return result
