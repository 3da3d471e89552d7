"""Notebook 08's Grad-CAM exercise: ``checkers.check_grad_cam`` accepts a correct Grad-CAM
written independently of ``explain.grad_cam`` and names each classic bug in a learner's version."""

import pytest
import torch
import torch.nn.functional as F

from resnet_course import checkers
from resnet_course.explain import grad_cam


def learner_grad_cam(
    model,
    image,
    layer,
    class_idx,
    *,
    average=True,
    score="logit",
    relu=True,
    upsample="bilinear",
    rescale="max",
    use_argmax=False,
    remove_hook=True,
):
    """Grad-CAM as a learner writes it (Selvaraju et al. 2017), with switches for the usual bugs."""
    kept = []
    handle = layer.register_forward_hook(lambda module, inputs, output: kept.append(output))
    try:
        logits = model(image[None])
    finally:
        if remove_hook:
            handle.remove()
    target = int(logits.argmax()) if use_argmax else class_idx
    y = logits[0, target] if score == "logit" else logits.softmax(1)[0, target]
    (grads,) = torch.autograd.grad(y, kept[0])
    activations = kept[0].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True) if average else grads
    cam = (weights * activations).sum(dim=1, keepdim=True)
    if relu:
        cam = cam.clamp(min=0)
    if upsample == "bilinear":
        cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)
    elif upsample == "align_corners":
        cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=True)
    elif upsample == "nearest":
        cam = F.interpolate(cam, size=image.shape[-2:], mode="nearest")
    cam = cam[0, 0]
    if rescale == "max":
        cam = cam / cam.max()
    return cam


def test_a_correct_grad_cam_written_from_the_paper_passes():
    result = checkers.check_grad_cam(learner_grad_cam)
    assert result.ok, str(result)


def test_the_course_grad_cam_passes_its_own_checker():
    result = checkers.check_grad_cam(
        lambda model, image, layer, c: grad_cam(model, image, target_layer=layer, class_idx=c)
    )
    assert result.ok, str(result)


@pytest.mark.parametrize(
    "bug, words",
    [
        (dict(average=False), "position by position"),
        (dict(score="softmax"), "softmax"),
        (dict(relu=False), "ReLU"),
        (dict(upsample="nearest"), "nearest"),
        (dict(upsample="align_corners"), "align_corners=True"),
        (dict(upsample=None), "upsample it to the image's 32×32"),
        (dict(rescale=None), "divide by the maximum"),
        (dict(use_argmax=True), "not of the argmax"),
    ],
)
def test_the_checker_names_each_classic_grad_cam_bug(bug, words):
    result = checkers.check_grad_cam(lambda *args: learner_grad_cam(*args, **bug))
    assert not result.ok
    assert any(words in failure for failure in result.failures), str(result)


def test_the_checker_reports_a_hook_left_behind():
    result = checkers.check_grad_cam(lambda *args: learner_grad_cam(*args, remove_hook=False))
    assert any("handle.remove()" in failure for failure in result.failures), str(result)


def test_the_checker_reports_an_error_instead_of_raising():
    def broken(model, image, layer, class_idx):
        return model(image)  # forgot the batch dimension

    result = checkers.check_grad_cam(broken)
    assert not result.ok and "raised" in result.failures[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_checker_cases_can_tell_every_bug_from_the_right_map(seed):
    """On the checker's seeded model and images the right maps are not trivial (not all zero,
    not constant) and every buggy variant differs from them, so no bug can pass unnoticed; on
    other seeds too, so the checker does not rely on a lucky draw."""
    model, cases = checkers.grad_cam._grad_cam_cases(seed)
    for image, c, _ in cases:
        right = grad_cam(model, image, target_layer=model.stage2, class_idx=c)[0]
        assert right.max() == 1 and right.std() > 0.05
        for bug, variant in checkers.grad_cam._grad_cam_variants(model, image, model.stage2, c).items():
            assert (variant - right).abs().max() > 1e-3, bug
