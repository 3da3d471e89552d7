"""Inside a trained ResNet (notebook 08): the feature maps of each stage, and Grad-CAM.

Both work on any course model (``stages()``) and on torchvision ResNets, and both leave the model
as they found it: same train/eval mode, no hooks left behind, no gradients accumulated in
``.grad``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import evaluating
from .stages import model_stages

__all__ = ["stage_feature_maps", "default_gradcam_layer", "grad_cam"]

#: Modules that act on each value separately; a head may start with them before pooling (the
#: final BN-ReLU of a pre-activation net), and Grad-CAM then looks at their output.
_ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Identity)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_batch(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"expected an image tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (C, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    return images


def stage_feature_maps(model: nn.Module, image_tensor: Tensor) -> OrderedDict[str, Tensor]:
    """The output of the stem and of every stage for one image: ``{stage name: (C, H, W)}``.

    Stages come from ``stages.model_stages`` (``stem``, ``layer1``..``layer4`` for v1,
    ``stem``, ``conv2``..``conv5`` for v2); the head (pooling and classifier) is left out
    because its output is no longer a map. Runs in eval mode without gradients.
    """
    batch = _as_batch(image_tensor)
    if batch.shape[0] != 1:
        raise ValueError(f"stage_feature_maps takes one image, got a batch of {batch.shape[0]}")
    maps: OrderedDict[str, Tensor] = OrderedDict()
    x = batch.to(_device_of(model))
    with torch.no_grad(), evaluating(model):
        for name, module in model_stages(model)[:-1]:
            x = module(x)
            maps[name] = x[0].detach().cpu()
    return maps


def default_gradcam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at by default: the output of the last stage.

    For v1 (``layer4``) that output already ends with a ReLU. A pre-activation net (v2,
    ``conv5``) ends its last stage with a bare addition and applies a final BN and ReLU at the
    start of the head (``post_bn``, ``post_relu``); we take the output of that ReLU, which is
    the map the pooling and classifier actually see, so v1 and v2 heatmaps mean the same thing.
    """
    stages = model_stages(model)
    if len(stages) < 2:
        raise ValueError("the model has no stage before its head; pass target_layer explicitly")
    target = stages[-2][1]
    head = stages[-1][1]
    if isinstance(head, nn.Sequential):
        for module in head:
            if not isinstance(module, _ELEMENTWISE):
                break
            target = module
    return target


def _resolve_layer(model: nn.Module, target_layer: None | str | nn.Module) -> nn.Module:
    if target_layer is None:
        return default_gradcam_layer(model)
    if isinstance(target_layer, nn.Module):
        if not any(m is target_layer for m in model.modules()):
            raise ValueError(f"target_layer ({type(target_layer).__name__}) is not part of the model")
        return target_layer
    try:
        stages = dict(model_stages(model))
    except TypeError:  # not a ResNet: only module paths can name a layer
        stages = {}
    if target_layer in stages:
        return stages[target_layer]
    try:
        return model.get_submodule(target_layer)
    except AttributeError:
        raise ValueError(
            f"no layer named {target_layer!r}: use a stage name ({', '.join(stages)}) or a module "
            "path such as 'layer4.1.conv2'"
        ) from None


def _class_indices(class_idx, logits: Tensor) -> Tensor:
    n, num_classes = logits.shape
    if class_idx is None:
        classes = logits.argmax(dim=1)
    else:
        classes = torch.as_tensor(class_idx, dtype=torch.long, device=logits.device).reshape(-1)
        if classes.numel() == 1:
            classes = classes.expand(n)
        if classes.numel() != n:
            raise ValueError(f"class_idx has {classes.numel()} entries for {n} images")
    if (classes < 0).any() or (classes >= num_classes).any():
        raise ValueError(f"class_idx must be between 0 and {num_classes - 1}, got {classes.tolist()}")
    return classes


def grad_cam(
    model: nn.Module,
    images: Tensor,
    target_layer: None | str | nn.Module = None,
    class_idx: None | int | Sequence[int] | Tensor = None,
) -> Tensor:
    """Grad-CAM heatmaps (Selvaraju et al. 2017), shape ``(N, H, W)``, values in [0, 1].

    For class c with score y_c (the logit, before softmax) and activations A_k of the target
    layer: weight each channel by its spatially averaged gradient, a_k = mean_ij dy_c/dA_k(i, j),
    then take ReLU(sum_k a_k A_k): the places whose features raise the class score. The map is
    upsampled bilinearly to the input size and divided by its maximum (an all-zero map stays
    zero: no evidence anywhere).

    ``target_layer``: a module, a stage name (``"layer4"``, ``"conv5"``) or a module path; by
    default the last stage (see ``default_gradcam_layer``). ``class_idx``: None for each image's
    predicted class, an int for the same class everywhere, or one class per image. Runs in eval
    mode; the model's mode, hooks and ``.grad`` fields are left unchanged.
    """
    batch = _as_batch(images)
    layer = _resolve_layer(model, target_layer)
    captured: list[Tensor] = []

    def keep_activation(module, inputs, output):
        if not output.requires_grad:  # frozen model: make the activation a leaf we can differentiate
            output = output.detach().requires_grad_()
        captured.append(output)
        return output

    handle = layer.register_forward_hook(keep_activation)
    try:
        with evaluating(model), torch.enable_grad():
            logits = model(batch.to(_device_of(model)))
            if len(captured) != 1:
                raise ValueError(
                    f"the target layer ran {len(captured)} times in one forward pass; pick a module "
                    "that runs once (a stage, or a conv), not a shared one such as a block's ReLU"
                )
            classes = _class_indices(class_idx, logits)
            score = logits.gather(1, classes[:, None]).sum()  # images are independent in eval mode
            activations = captured[0]
            (gradients,) = torch.autograd.grad(score, activations)
    finally:
        handle.remove()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    return cam.clamp(0, 1).cpu()
