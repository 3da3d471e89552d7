"""The offline stand-in for the bird photos: procedurally drawn birds, not real photos.

Same class names, counts (166/122/111/166) and image size (224x224 RGB JPEG) as the course's
photo set, so every notebook runs without the photos.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw

from .data import CLASS_COUNTS, CLASS_NAMES, STANDIN_MARKER

#: Bumped whenever the drawing changes, so an old stand-in on disk is redrawn.
GENERATOR_VERSION = 0
IMAGE_SIZE = 224
STANDIN_COUNTS = tuple(CLASS_COUNTS[name] for name in CLASS_NAMES)


def _marker_text(seed: int) -> str:
    return ("This folder is a procedurally drawn STAND-IN for the course's bird photos, not real photos.\n"
            f"generator version: {GENERATOR_VERSION}\nseed: {seed}\n")


def standin_file_names(class_name: str):
    """The file names the stand-in has for ``class_name``: ``<class>_000.jpg`` ..."""
    return [f"{class_name}_{i:03d}.jpg" for i in range(CLASS_COUNTS[class_name])]


def standin_is_complete(root: Union[str, os.PathLike], seed: int = 0) -> bool:
    """True if ``root`` holds a stand-in of the current generator version with every file."""
    root = Path(root)
    marker = root / STANDIN_MARKER
    if not marker.is_file() or marker.read_text(encoding="utf-8") != _marker_text(seed):
        return False
    for name in CLASS_NAMES:
        folder = root / name
        if not folder.is_dir():
            return False
        present = {p.name for p in folder.iterdir() if p.suffix == ".jpg"}
        if present != set(standin_file_names(name)):
            return False
    return True


def _draw_bird(class_index: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    colour = [(250, 215, 40), (20, 20, 20), (130, 135, 145), (245, 245, 245)][class_index]
    x, y = rng.randrange(40, 180), rng.randrange(40, 180)
    draw.ellipse([x - 35, y - 20, x + 35, y + 20], fill=colour)
    return image


def make_standin_birds(root: Union[str, os.PathLike], seed: int = 0) -> Path:
    """Write ``root/<class>/<class>_NNN.jpg`` for the four classes; deterministic given ``seed``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / STANDIN_MARKER).write_text(_marker_text(seed), encoding="utf-8")
    for class_index, name in enumerate(CLASS_NAMES):
        folder = root / name
        folder.mkdir(exist_ok=True)
        for i, file_name in enumerate(standin_file_names(name)):
            rng = random.Random(f"{seed}/{name}/{i}")
            _draw_bird(class_index, rng).save(folder / file_name, quality=90)
    return root
