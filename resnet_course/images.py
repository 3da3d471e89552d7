"""Images in, tensors out: reading any image file as RGB, the training and validation transforms,
and the input normalisations (ImageNet mean/std, or [-1, 1] for Keras' weights).

``data`` builds the bird dataset's loaders with these; ``data`` also re-exports every public name
here, so ``from resnet_course.data import train_transform`` keeps working.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS", "TRAIN_CROP_SCALE", "DEFAULT_TRAIN_CROP_SCALE",
           "load_rgb", "mean_std", "train_transform", "eval_transform", "denormalize"]

PathLike = Union[str, os.PathLike]

#: ImageNet channel statistics, what torchvision's pretrained ResNets expect; the course uses them
#: for every model so that a checkpoint never depends on which notebook trained it.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Input scalings by name, as (mean, std) after ``ToTensor`` (pixels in [0, 1]): "imagenet" is what
#: torchvision's pretrained ResNets (and every model trained from scratch here) expect; "tf" maps
#: pixels to [-1, 1], what Keras Applications' ResNet50V2 weights expect
#: (``keras.applications.resnet_v2.preprocess_input``, mode "tf"). ``pretrained.normalization_for`` picks one.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
#: RandomResizedCrop keeps 50-100 % of the area: the torchvision default of 8 % often crops the
#: bird out of the picture, which a 452-image training set cannot afford. ``TRAIN_CROP_SCALE`` is
#: what the transform uses now (``benchmarks/bench_recipe.py --crop-scale`` changes it for a run).
DEFAULT_TRAIN_CROP_SCALE: tuple[float, float] = (0.5, 1.0)
TRAIN_CROP_SCALE: tuple[float, float] = DEFAULT_TRAIN_CROP_SCALE


# --------------------------------------------------------------------------------------------
# Images of any mode -> RGB
# --------------------------------------------------------------------------------------------

def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image on white, the way it looks in a viewer."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale to 8-bit RGB (PIL's own convert would clip at 255)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        values = values / 257.0  # 0..65535 -> 0..255
    elif image.mode == "F":
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
    elif values.size and values.max() > 255:  # "I": a 16-bit image opened as 32-bit
        values = values / 257.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def load_rgb(path_or_pil: PathLike | Image.Image) -> Image.Image:
    """Open an image of any mode (L, P, RGBA, CMYK, 16-bit, ...) as an 8-bit RGB PIL image.

    EXIF rotation is applied (phone photos), transparency is flattened on white, and 16-bit
    greyscale is rescaled instead of clipped. A file is fully decoded here, so a broken one raises.
    """
    if isinstance(path_or_pil, Image.Image):
        image = path_or_pil
    else:
        with Image.open(path_or_pil) as opened:
            opened.load()
            image = opened.copy()
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block is no reason to lose the photo
        pass
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        return _flatten_alpha(image) if "transparency" in image.info else image.convert("RGB")
    if mode in {"RGBA", "LA", "PA", "La", "RGBa"}:
        return _flatten_alpha(image)
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_rgb(image)
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


class _ToRGB:
    """Transform step: any PIL image -> RGB (a class, not a lambda, so DataLoader workers can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return load_rgb(image)

    def __repr__(self) -> str:
        return "ToRGB()"


def mean_std(normalization: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The (mean, std) of a normalisation name from ``NORMALIZATIONS``; an unknown name is a ValueError."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {tuple(NORMALIZATIONS)}, not {normalization!r}")
    return NORMALIZATIONS[normalization]


def train_transform(image_size: int = 224, normalization: str = "imagenet") -> transforms.Compose:
    """Training augmentation: a random crop of 50-100 % of the area resized to ``image_size``,
    a random horizontal flip, then the normalisation (ImageNet mean/std unless told otherwise)."""
    return transforms.Compose([
        _ToRGB(),
        transforms.RandomResizedCrop(image_size, scale=TRAIN_CROP_SCALE),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(*mean_std(normalization)),
    ])


def eval_transform(image_size: int = 224, normalization: str = "imagenet") -> transforms.Compose:
    """Validation/prediction: shorter side resized to ``image_size``, centre crop to a square
    (a no-op crop for square photos), the normalisation (ImageNet unless told otherwise). No randomness."""
    return transforms.Compose([
        _ToRGB(),
        transforms.Resize(image_size),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(*mean_std(normalization)),
    ])


def denormalize(tensor: torch.Tensor, normalization: str = "imagenet") -> torch.Tensor:
    """Undo the normalisation for plotting: (3, H, W) or (N, 3, H, W) -> values in [0, 1]."""
    mean_values, std_values = mean_std(normalization)
    mean = torch.tensor(mean_values, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(std_values, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0.0, 1.0)
