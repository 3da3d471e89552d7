"""Images in, tensors out: reading any image file as RGB, the training and validation transforms,
and the input normalisations (ImageNet mean/std, or [-1, 1] for Keras' weights); and back, an image
as the array a figure shows (``to_display_image``).

Every image file the course reads is opened here (``open_image``), so every way a file can fail
(not a file, a pipe, empty, damaged, too large to decode safely, ...) becomes one ``UnreadableImage``
that names the file and says why, whatever Pillow raised or warned.

``data`` builds the bird dataset's loaders with these.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms

from .config import printable_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "TRAIN_CROP_SCALE",
    "DEFAULT_TRAIN_CROP_SCALE",
    "UnreadableImage",
    "file_problem",
    "open_image",
    "check_image",
    "to_rgb",
    "load_rgb",
    "mean_std",
    "train_transform",
    "eval_transform",
    "denormalize",
    "to_display_image",
]

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
# Opening an image file: every failure is one UnreadableImage
# --------------------------------------------------------------------------------------------


class UnreadableImage(ValueError):
    """An image file that cannot be used; ``reason`` says why, the message names the file too."""

    def __init__(self, path: PathLike, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"cannot read {printable_path(path)}: {reason}")


def file_problem(path: PathLike) -> str | None:
    """Why ``path`` is not a regular, non-empty file (a missing file, a dangling link, a folder, a
    pipe that would block the reader forever), or None if it is one."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a link to {printable_path(os.readlink(path))}, which does not exist"
        return "no such file"
    except OSError as error:  # permission denied on a folder, a symlink loop, a name too long
        return (error.strerror or str(error)).lower()
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def _pillow_failure_reason(error: Exception) -> str:
    """Plain words for whatever Pillow raised while opening or decoding a file."""
    if isinstance(error, Image.DecompressionBombError):
        size = re.search(r"\((\d+) pixels\)", str(error))
        shown = f" ({int(size.group(1)) / 1e6:,.0f} megapixels)" if size else ""
        return (
            f"too large to open safely{shown}: Pillow refuses images over "
            f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:,.0f} megapixels as possible decompression bombs"
        )
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image (cannot identify image file)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    if isinstance(error, MemoryError):
        return "not enough memory to decode it"
    text, kind = str(error), type(error).__name__
    if "truncated" in text.lower():
        return "the file is cut short (truncated: damaged, or not completely downloaded or copied)"
    if isinstance(error, (OSError, ValueError)) and text:
        return text
    return f"damaged image data ({kind}: {text})" if text else f"damaged image data ({kind})"


def open_image(path: PathLike, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode the image file ``path`` (any mode); every failure, whatever Pillow
    raises or warns, is an ``UnreadableImage``. A JPEG may be decoded at a reduced scale no smaller
    than ``draft_size`` (fast, still reads every byte). Images up to twice Pillow's
    ``MAX_IMAGE_PIXELS`` open without its warning; larger ones are refused before decoding."""
    reason = file_problem(path)
    if reason is not None:
        raise UnreadableImage(path, reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, odd EXIF or palettes: handled here
            with Image.open(path) as opened:
                if draft_size is not None and opened.format == "JPEG":
                    opened.draft(opened.mode, draft_size)
                opened.load()
                image = opened.copy()
    except Exception as error:  # Pillow raises many types: OSError, ValueError, SyntaxError, struct.error, ...
        raise UnreadableImage(path, _pillow_failure_reason(error)) from None
    if image.width < 1 or image.height < 1:
        raise UnreadableImage(path, "image has no pixels")
    return image


# --------------------------------------------------------------------------------------------
# Images of any mode -> RGB
# --------------------------------------------------------------------------------------------


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image on white, the way it looks in a viewer."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale to 8-bit RGB (PIL's own convert would clip at 255);
    NaN is black and infinities are the extremes."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=65535.0, neginf=0.0)
    if image.mode.startswith("I;16"):
        values = values / 257.0  # 0..65535 -> 0..255
    elif image.mode == "F":
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
    elif values.size and values.max() > 255:  # "I": a 16-bit image opened as 32-bit
        values = values / 257.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any mode (L, P, RGBA, CMYK, 16-bit, ...) as 8-bit RGB: EXIF rotation applied
    (phone photos), transparency flattened on white, 16-bit greyscale rescaled instead of clipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's advice on palettes with transparency, numpy's casts
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


def load_rgb(path_or_pil: PathLike | Image.Image, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image file (or take a PIL image) of any mode as an 8-bit RGB PIL image (``to_rgb``).
    A file is fully decoded here (``open_image``), so a broken one raises ``UnreadableImage``."""
    if isinstance(path_or_pil, Image.Image):
        return to_rgb(path_or_pil)
    image = open_image(path_or_pil, draft_size)
    try:
        return to_rgb(image)
    except Exception as error:
        raise UnreadableImage(path_or_pil, f"its {image.mode} pixels cannot be converted to RGB ({error})") from None


def check_image(path: PathLike) -> str | None:
    """None if the file ``path`` reads as an RGB image, else the reason it does not. Fast: a JPEG is
    decoded at 1/8 scale (every byte is still read)."""
    try:
        load_rgb(path, draft_size=(64, 64))
    except UnreadableImage as error:
        return error.reason
    return None


class _ToRGB:
    """Transform step: any PIL image -> RGB (a class, not a lambda, so DataLoader workers can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_rgb(image)

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
    return transforms.Compose(
        [
            _ToRGB(),
            transforms.RandomResizedCrop(image_size, scale=TRAIN_CROP_SCALE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(*mean_std(normalization)),
        ]
    )


def eval_transform(image_size: int = 224, normalization: str = "imagenet") -> transforms.Compose:
    """Validation/prediction: shorter side resized to ``image_size``, centre crop to a square
    (a no-op crop for square photos), the normalisation (ImageNet unless told otherwise). No randomness."""
    return transforms.Compose(
        [
            _ToRGB(),
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(*mean_std(normalization)),
        ]
    )


def denormalize(tensor: torch.Tensor, normalization: str = "imagenet") -> torch.Tensor:
    """Undo the normalisation for plotting: (3, H, W) or (N, 3, H, W) -> values in [0, 1]."""
    mean_values, std_values = mean_std(normalization)
    mean = torch.tensor(mean_values, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(std_values, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0.0, 1.0)


def to_display_image(image, normalized: bool = True) -> np.ndarray:
    """An image as an (H, W, 3) or (H, W) array matplotlib can show.

    Accepts a (C, H, W) tensor, a PIL image, an (H, W[, C]) array or an image path. Tensors are
    assumed to be normalized with the ImageNet mean/std (as the course's transforms do) and are
    denormalized unless ``normalized=False``; values end up clipped to [0, 1].
    """
    if isinstance(image, (str, Path)):
        return np.asarray(load_rgb(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        x = image.detach().to("cpu", torch.float32)
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"expected an image tensor of shape (C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
        if normalized and x.shape[0] == 3:
            x = denormalize(x)
        x = x.clamp(0, 1).permute(1, 2, 0).numpy()
        return x[..., 0] if x.shape[-1] == 1 else x
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image array of shape (H, W) or (H, W, C), got {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float32), 0, 1)
    return array
