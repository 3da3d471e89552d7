"""The offline stand-in for the bird photos: procedurally drawn birds, not real photos.

Same class names, counts (166/122/111/166) and image size (224x224 RGB JPEG) as the course's
photo set, so every notebook runs without the photos. Each species is drawn with its field marks:

* Bananaquit: dark back and head, white eyebrow stripe, yellow breast and rump, short curved bill.
* Black Skimmer: black above, white below, long red-orange bill with a black tip whose lower
  mandible is longer than the upper; standing on sand or flying, often over water.
* Black-throated Bushtit: tiny, round, grey, with a rufous crown, black mask and black throat
  patch, and a long tail.
* Cockatoo: big white parrot with a yellow crest and a dark grey hooked bill.

Pose, size, position, background, clutter, lighting and JPEG noise vary, and backgrounds and clutter
share the birds' colours, so that colour alone is a weak cue: classifiers on an image's mean
colour get 25-34 % of the validation images right (notebook 05; chance 25 %, the largest class 29 %;
``evaluation.mean_colour_baseline``), while a small ResNet learns the shapes.

Birds of other species, for the drawn pretraining set (``pretraining``), are drawn by
``drawing.draw_marked_bird`` and placed in the same scenes (``draw_scene_with_bird``).
"""

from __future__ import annotations

import io
import math
import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .birds import CLASS_COUNTS, CLASS_NAMES, BirdDataError
from .config import printable_path
from .drawing import CANVAS, Colour, Point, circle, ellipse, jitter, legs, new_canvas, perch
from .runfolder import check_writable_folder

#: Bumped whenever the drawing changes, so that an older stand-in on disk is redrawn.
GENERATOR_VERSION = 1
IMAGE_SIZE = 224
#: The file in the stand-in's root that says it is a procedurally drawn stand-in, not photos.
STANDIN_MARKER = "STANDIN.txt"


# --------------------------------------------------------------------------------------------
# Files on disk
# --------------------------------------------------------------------------------------------


def _marker_text(seed: int) -> str:
    return (
        "This folder is a procedurally drawn STAND-IN for the course's bird photos: drawings made by\n"
        "resnet_course.standin, not real photos. Put real photos in data/bird_photos/<class>/ to use them.\n"
        f"generator version: {GENERATOR_VERSION}\nseed: {seed}\n"
    )


def standin_file_names(class_name: str) -> list[str]:
    """The stand-in's file names for ``class_name``: ``<class>_000.jpg``, ``<class>_001.jpg``, ..."""
    return [f"{class_name}_{i:03d}.jpg" for i in range(CLASS_COUNTS[class_name])]


def _marker_seed(root: Path) -> int | None:
    """The seed in ``root``'s marker if this generator version wrote it, else None (no marker, one
    of another version, or not the course's text)."""
    try:
        text = (root / STANDIN_MARKER).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(r"^seed: (-?\d+)$", text, re.MULTILINE)
    return int(found.group(1)) if found and text == _marker_text(int(found.group(1))) else None


def standin_is_complete(root: str | os.PathLike, seed: int = 0) -> bool:
    """True if ``root`` holds a stand-in of the current generator version with exactly its files."""
    root = Path(root)
    if _marker_seed(root) != seed:
        return False
    for name in CLASS_NAMES:
        folder = root / name
        if not folder.is_dir():
            return False
        present = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
        if present != set(standin_file_names(name)):
            return False
        if any(not (folder / f).is_file() or (folder / f).stat().st_size == 0 for f in present):
            return False
    return True


def _is_own_drawing(path: Path, class_index: int, number: int, seed: int | None) -> bool:
    """True if ``path`` holds drawing ``number`` of class ``class_index`` at ``seed`` (the marker's),
    whole or cut short by an interrupted write. Checked by bytes, not by name, so that a photo
    named like a drawing (``Cockatoo_000.jpg``) is never taken for one and overwritten."""
    if seed is None or not path.is_file():
        return False
    try:
        return draw_standin_jpeg(class_index, number, seed).startswith(path.read_bytes())
    except OSError:
        return False


def foreign_files(root: str | os.PathLike) -> list[Path]:
    """What in ``root`` is not the stand-in's own (its drawings, checked by bytes, and
    ``STANDIN.txt``): a photo a learner put there, even under a drawing's name, a note, another
    folder. Hidden files (.DS_Store) don't count. These must survive a redraw, so
    ``make_standin_birds`` refuses while there are any."""
    root = Path(root)
    if not root.is_dir():
        return []
    own = {STANDIN_MARKER, *CLASS_NAMES}
    found = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in own]
    seed = _marker_seed(root)
    for class_index, name in enumerate(CLASS_NAMES):
        folder = root / name
        if folder.is_dir():
            drawings = {file_name: number for number, file_name in enumerate(standin_file_names(name))}
            found += [
                p
                for p in folder.iterdir()
                if not p.name.startswith(".")
                and (p.name not in drawings or not _is_own_drawing(p, class_index, drawings[p.name], seed))
            ]
        elif folder.exists() or folder.is_symlink():
            found.append(folder)
    return sorted(found)


def check_can_draw_into(root: str | os.PathLike) -> None:
    """Raise ``BirdDataError`` (or ``RunFolderError`` for a place that cannot be written) if drawing
    the stand-in into ``root`` would delete or mix with anything that is not the stand-in's own."""
    root = Path(root)
    check_writable_folder(root, what="the stand-in")
    if not root.exists():
        return
    if not (root / STANDIN_MARKER).is_file():
        if any(not p.name.startswith(".") for p in root.iterdir()):
            raise BirdDataError(
                f"{printable_path(root)} is not empty and is not a generated stand-in (no "
                f"{STANDIN_MARKER}); choose an empty or new folder for the stand-in."
            )
        return
    foreign = foreign_files(root)
    if foreign:
        shown = ", ".join(printable_path(p.relative_to(root)) for p in foreign[:5])
        older = (
            ""
            if _marker_seed(root) is not None
            else f" Its {STANDIN_MARKER} is from another version of the course, whose drawings cannot be told "
            "apart from photos: if it holds only drawings, delete the folder and draw it again."
        )
        raise BirdDataError(
            f"{printable_path(root)} is a stand-in, but also holds {len(foreign)} file(s) that are "
            f"not its drawings ({shown}{' ...' if len(foreign) > 5 else ''}). Redrawing would "
            "delete or mix with them: move them away first (real photos go in data/bird_photos)." + older
        )


def make_standin_birds(root: str | os.PathLike, seed: int = 0) -> Path:
    """Write ``root/<class>/<class>_NNN.jpg`` (166/122/111/166 images) and ``root/STANDIN.txt``.

    Deterministic: each image is drawn from its own generator seeded by (seed, class, number), so
    the same seed gives the same pixels. Takes a few seconds on one core. A complete stand-in of
    this seed and generator version is left as it is (nothing to draw); an older or incomplete one
    in ``root`` is redrawn; a folder that holds anything else (``foreign_files``: a photo put among
    the drawings, even under a drawing's name, a folder without the marker) is left alone with a
    ``BirdDataError``, so that nothing is deleted and drawings never end up among real photos. A
    full or read-only disk is a ``BirdDataError`` too; each drawing is whole or absent.
    """
    root = Path(root)
    if standin_is_complete(root, seed):
        return root
    check_can_draw_into(root)
    try:
        _draw_all(root, seed)
    except OSError as error:
        raise BirdDataError(
            f"could not write the stand-in into {printable_path(root)}: "
            f"{(error.strerror or str(error)).lower()}. The drawings written so far are whole; "
            "draw it again once there is room (make-standin redraws an incomplete "
            "stand-in)."
        ) from None
    return root


def _draw_all(root: Path, seed: int) -> None:
    """Remove the old drawings (``check_can_draw_into`` has made sure they are drawings), write the
    marker, then every drawing through a hidden temporary file."""
    if root.exists():
        for name in CLASS_NAMES:
            for file_name in standin_file_names(name):
                if os.path.lexists(root / name / file_name):
                    (root / name / file_name).unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / STANDIN_MARKER).write_text(_marker_text(seed), encoding="utf-8")
    for class_index, name in enumerate(CLASS_NAMES):
        folder = root / name
        folder.mkdir(exist_ok=True)
        for number, file_name in enumerate(standin_file_names(name)):
            temporary = folder / f".{file_name}.tmp-{os.getpid()}"
            try:
                temporary.write_bytes(draw_standin_jpeg(class_index, number, seed))
                os.replace(temporary, folder / file_name)
            finally:
                temporary.unlink(missing_ok=True)


def draw_standin_jpeg(class_index: int, number: int, seed: int = 0) -> bytes:
    """The JPEG bytes of stand-in image ``number`` of class ``class_index``."""
    rng = random.Random(f"standin/{seed}/{CLASS_NAMES[class_index]}/{number}")
    image = draw_standin_image(class_index, rng)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(55, 92))
    return buffer.getvalue()


def draw_standin_image(class_index: int, rng: random.Random) -> Image.Image:
    """One stand-in picture: background, clutter behind, the bird, occluders, lighting, noise."""
    nrng = np.random.default_rng(rng.getrandbits(64))
    species = CLASS_NAMES[class_index]
    flying = species == "Black Skimmer" and rng.random() < 0.5
    scene = _choose_scene(species, rng)
    return draw_scene_with_bird(scene, BIRD_DRAWERS[species], BIRD_SCALE[species], rng, nrng, flying)


def draw_scene_with_bird(
    scene: str,
    draw_bird: Callable[[random.Random, bool], Image.Image],
    scale: tuple[float, float],
    rng: random.Random,
    nrng: np.random.Generator,
    flying: bool = False,
) -> Image.Image:
    """A picture of the bird ``draw_bird(rng, flying)`` draws on its canvas, in a ``scene`` (one of
    ``SCENES``) with clutter behind and in front, spanning ``scale`` of the frame, lit and noised
    as every stand-in picture is (``pretraining`` draws its other species with it)."""
    image = Image.fromarray(_background(scene, rng, nrng))
    _clutter(image, rng, count=rng.randint(2, 9))
    bird = draw_bird(rng, flying)
    _place_bird(image, bird, scale, flying, rng)
    _clutter(image, rng, count=rng.choice([0, 0, 1, 2]), occluders=True)
    return _lighting(image, rng, nrng)


# --------------------------------------------------------------------------------------------
# Backgrounds, clutter, lighting
# --------------------------------------------------------------------------------------------

SCENES = ("sky", "foliage", "water", "sand", "gradient", "texture")
#: Colours the clutter borrows from every species, so that no colour belongs to one class alone.
BIRD_LIKE_COLOURS: tuple[Colour, ...] = (
    (245, 210, 40),
    (25, 25, 30),
    (240, 240, 235),
    (215, 70, 35),
    (125, 130, 140),
    (170, 95, 55),
    (90, 90, 95),
)


def _choose_scene(species: str, rng: random.Random) -> str:
    weights = [3, 3, 2, 1, 2, 2]  # skimmers are often over water or on sand, the others in trees
    if species == "Black Skimmer":
        weights = [3, 2, 3, 2, 2, 2]
    return rng.choices(SCENES, weights=weights)[0]


def _random_colour(rng: random.Random) -> Colour:
    return tuple(rng.randrange(256) for _ in range(3))


def _smooth_noise(nrng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] at IMAGE_SIZE x IMAGE_SIZE (a small random grid, upsampled)."""
    grid = (nrng.random((cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(grid).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def _mix(a: Sequence[int], b: Sequence[int], t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours: t has shape (H, W) with values in [0, 1]."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _background(scene: str, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    size = IMAGE_SIZE
    rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None] * np.ones((1, size), np.float32)
    if scene == "sky":
        top = rng.choice([(70, 130, 210), (120, 170, 230), (160, 170, 185), (240, 150, 90), (200, 210, 225)])
        pixels = _mix(jitter(top, rng, 30), jitter((225, 230, 240), rng, 25), rows)
        clouds = np.clip(_smooth_noise(nrng, rng.randint(3, 6)) * 2 - rng.uniform(0.6, 1.4), 0, 1)
        pixels = pixels + (250 - pixels) * clouds[..., None] * 0.8
    elif scene == "foliage":
        dark = jitter((30, 70, 30), rng, 25)
        light = jitter(rng.choice([(110, 160, 60), (160, 170, 70), (90, 130, 90)]), rng, 30)
        pixels = _mix(dark, light, _smooth_noise(nrng, rng.randint(6, 16)))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(20, 60)):
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(5, 22)
            draw.polygon(
                ellipse(x, y, r, r * 0.45, rng.uniform(0, 180)), fill=jitter(rng.choice([dark, light]), rng, 30)
            )
        pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0))), np.float32)
    elif scene == "water":
        deep = jitter((30, 80, 130), rng, 30)
        shallow = jitter(rng.choice([(90, 150, 180), (120, 170, 160), (170, 190, 200)]), rng, 25)
        pixels = _mix(shallow, deep, rows)
        ys = np.arange(size, dtype=np.float32)[:, None]
        xs = np.arange(size, dtype=np.float32)[None, :]
        ripples = np.sin(ys * rng.uniform(0.25, 0.6) + 3 * np.sin(xs * rng.uniform(0.02, 0.06) + rng.uniform(0, 6)))
        pixels = pixels + (ripples * rng.uniform(8, 25))[..., None]
        if rng.random() < 0.5:  # a horizon with sky above
            horizon = rng.randint(20, 90)
            pixels[:horizon] = _mix(jitter((150, 185, 225), rng), (230, 235, 240), rows[:horizon] * 3)
    elif scene == "sand":
        pixels = _mix(
            jitter((215, 195, 150), rng, 30), jitter((170, 150, 110), rng, 30), _smooth_noise(nrng, rng.randint(4, 10))
        )
        pixels = pixels + nrng.standard_normal((size, size, 1), dtype=np.float32) * rng.uniform(4, 14)
        if rng.random() < 0.5:  # the sea line behind the beach
            horizon = rng.randint(30, 100)
            pixels[:horizon] = _mix(jitter((60, 110, 160), rng), jitter((170, 200, 220), rng), rows[:horizon] * 2)
    elif scene == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        xs = np.linspace(-1, 1, size, dtype=np.float32)
        t = (np.cos(angle) * xs[None, :] + np.sin(angle) * xs[:, None]) * 0.5 + 0.5
        pixels = _mix(_random_colour(rng), _random_colour(rng), np.clip(t, 0, 1))
    else:  # texture: blotches of two random colours, a bark- or rock-like surface
        pixels = _mix(_random_colour(rng), _random_colour(rng), _smooth_noise(nrng, rng.randint(8, 30)))
        pixels = pixels + nrng.standard_normal((size, size, 1), dtype=np.float32) * 10
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _clutter(image: Image.Image, rng: random.Random, count: int, occluders: bool = False) -> None:
    """Branches, leaves and random shapes; with ``occluders`` only leaves and twigs, in front."""
    draw = ImageDraw.Draw(image)
    size = IMAGE_SIZE
    for _ in range(count):
        kind = rng.choice(["branch", "leaves"] if occluders else ["branch", "leaves", "leaves", "shape", "shape"])
        if kind == "branch":
            colour = jitter(rng.choice([(95, 70, 45), (60, 45, 35), (130, 110, 90)]), rng, 20)
            start = (rng.uniform(-20, size + 20), rng.uniform(-20, size + 20))
            angle = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(60, 260)
            end = (start[0] + length * math.cos(angle), start[1] + length * math.sin(angle))
            draw.line([start, end], fill=colour, width=rng.randint(3, 4 if occluders else 10))
            for _ in range(rng.randint(0, 3)):  # twigs
                t = rng.uniform(0.2, 0.9)
                base = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
                twig = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
                tip = (base[0] + 40 * math.cos(twig), base[1] + 40 * math.sin(twig))
                draw.line([base, tip], fill=colour, width=2)
        elif kind == "leaves":
            green = jitter(rng.choice([(60, 120, 40), (100, 150, 50), (40, 90, 50), (150, 160, 60)]), rng, 25)
            cx, cy = rng.uniform(0, size), rng.uniform(0, size)
            for _ in range(rng.randint(1, 2 if occluders else 6)):
                x, y = cx + rng.uniform(-30, 30), cy + rng.uniform(-30, 30)
                r = rng.uniform(8, 18 if occluders else 26)
                draw.polygon(ellipse(x, y, r, r * 0.4, rng.uniform(0, 180)), fill=jitter(green, rng, 15))
        else:  # a shape in a colour borrowed from some bird, or any colour
            colour = jitter(rng.choice(BIRD_LIKE_COLOURS), rng, 20) if rng.random() < 0.7 else _random_colour(rng)
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(6, 30)
            if rng.random() < 0.5:
                draw.polygon(ellipse(x, y, r, r * rng.uniform(0.3, 1.0), rng.uniform(0, 180)), fill=colour)
            else:
                points = [
                    (x + r * math.cos(a), y + r * math.sin(a))
                    for a in sorted(rng.uniform(0, 2 * math.pi) for _ in range(rng.randint(3, 6)))
                ]
                draw.polygon(points, fill=colour)


def _lighting(image: Image.Image, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    """Contrast, exposure, a colour cast and gamma (one lookup table per channel), then uneven
    light (a bright or dark patch) and sensor noise."""
    contrast, exposure, gamma = rng.uniform(0.65, 1.3), rng.uniform(0.6, 1.35), rng.uniform(0.75, 1.35)
    levels = np.arange(256, dtype=np.float64) / 255
    table = []
    for _ in range(3):
        channel = ((levels - 0.5) * contrast + 0.5) * exposure * rng.uniform(0.8, 1.2)
        table += np.rint(np.clip(channel, 0, 1) ** gamma * 255).astype(int).tolist()
    x = np.asarray(image.point(table), dtype=np.float32)
    if rng.random() < 0.5:
        x = x * (1 + rng.uniform(-0.7, 0.7) * (_smooth_noise(nrng, 3) - 0.5))[..., None]
    x = x + nrng.standard_normal(x.shape, dtype=np.float32) * rng.uniform(1, 8)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------
# The birds (drawn facing right on a CANVAS x CANVAS transparent image)
# --------------------------------------------------------------------------------------------


def draw_bananaquit(rng: random.Random, flying: bool = False) -> Image.Image:
    """Plump and small: sooty back, wings and head; white eyebrow; yellow breast and rump; grey
    throat; short decurved black bill with a red spot at the gape."""
    canvas, draw = new_canvas()
    dark = jitter((38, 38, 45), rng, 12) + (255,)
    yellow = jitter((248, 212, 38), rng, 18) + (255,)
    tilt = rng.uniform(-25, 10)
    if rng.random() < 0.6:
        perch(draw, 352, rng)
    legs(draw, 250, 320, 352, (60, 60, 65, 255))
    draw.polygon([(190, 280), (85, 335 + rng.uniform(-25, 25)), (100, 352), (200, 300)], fill=dark)  # tail
    draw.polygon(ellipse(250, 275, 98, 62, tilt), fill=dark)  # body
    draw.polygon(ellipse(185, 258, 22, 16, tilt), fill=yellow)  # rump
    draw.polygon(ellipse(282, 300, 72, 44, tilt - 15), fill=yellow)  # breast and belly
    draw.polygon(ellipse(232, 262, 72, 30, tilt + 5), fill=jitter((28, 28, 34), rng, 8) + (255,))  # wing
    draw.polygon(ellipse(250, 258, 10, 6, tilt), fill=(235, 235, 230, 255))  # white wing spot
    hx, hy = 330, 208
    circle(draw, hx, hy, 46, dark)
    draw.polygon(ellipse(hx + 18, hy + 36, 26, 16, -10), fill=jitter((150, 150, 155), rng, 15) + (255,))  # throat
    draw.line(
        [(hx - 35, hy - 8), (hx - 5, hy - 18), (hx + 30, hy - 16)], fill=(245, 245, 240, 255), width=9, joint="curve"
    )
    circle(draw, hx + 12, hy - 2, 6, (10, 10, 10, 255))  # eye
    draw.polygon(
        [(hx + 38, hy - 4), (hx + 62, hy + 2), (hx + 78, hy + 18), (hx + 64, hy + 12), (hx + 40, hy + 10)],
        fill=(15, 15, 18, 255),
    )  # short curved bill
    circle(draw, hx + 40, hy + 6, 4, (220, 80, 90, 255))  # red gape
    return canvas


def draw_black_skimmer(rng: random.Random, flying: bool = False) -> Image.Image:
    """Black cap, back and wings; white face and underparts; a long red-orange bill with a black
    tip, the lower mandible longer than the upper. Standing (short red legs) or flying."""
    canvas, draw = new_canvas()
    black = jitter((22, 22, 26), rng, 10) + (255,)
    white = jitter((240, 240, 236), rng, 10) + (255,)
    red = jitter((226, 72, 36), rng, 18) + (255,)
    if flying:
        up = rng.uniform(-1, 1)  # wing beat: +1 up, -1 down

        def wing(shoulder: Point, span: float) -> list[Point]:  # long, pointed, broad at the wrist
            x, y = shoulder
            return [
                (x + 20, y),
                (x - 30 * span, y - 120 * up * span),
                (x - 170 * span, y - 190 * up * span),
                (x - 70 * span, y - 95 * up * span),
                (x - 50, y + 14),
            ]

        draw.polygon(wing((215, 262), 0.8), fill=black)  # far wing
        draw.polygon(ellipse(250, 270, 120, 36, 0), fill=white)  # body
        draw.polygon(ellipse(240, 255, 110, 22, -2), fill=black)  # back
        draw.polygon([(160, 268), (100, 250), (105, 270), (160, 280)], fill=black)  # tail
        near = wing((245, 266), 1.0)
        draw.polygon(near, fill=black)  # near wing
        draw.line([near[4], near[3], near[2]], fill=(205, 205, 205, 255), width=6)  # pale trailing edge
        hx, hy = 372, 262
    else:
        draw.polygon(ellipse(245, 290, 125, 50, -5), fill=white)  # body
        draw.polygon(ellipse(235, 272, 120, 30, -5), fill=black)  # back
        draw.polygon([(300, 265), (80, 252), (60, 262), (300, 295)], fill=black)  # long folded wings
        legs(draw, 250, 330, 372, red, width=7)
        hx, hy = 352, 240
    circle(draw, hx, hy, 40, white)
    draw.pieslice([hx - 40, hy - 40, hx + 40, hy + 40], 170, 360, fill=black)  # black cap
    draw.polygon(ellipse(hx - 18, hy + 10, 26, 14, 0), fill=black)  # nape joining the back
    draw.polygon(ellipse(hx + 22, hy + 6, 16, 10, 0), fill=white)  # white forehead and face
    circle(draw, hx + 8, hy - 6, 6, (5, 5, 5, 255))
    length = rng.uniform(95, 125)
    bx, by = hx + 30, hy + 4
    upper_tip = (bx + length * 0.78, by + 6)
    lower_tip = (bx + length, by + 16)
    draw.polygon([(bx, by - 6), upper_tip, (bx, by + 8)], fill=red)  # upper mandible
    draw.polygon([(bx, by + 8), lower_tip, (bx + length * 0.95, by + 20), (bx, by + 20)], fill=red)  # longer lower
    cut = 0.55
    draw.polygon([(bx + length * 0.78 * cut, by - 3), upper_tip, (bx + length * 0.78 * cut, by + 8)], fill=black)
    draw.polygon(
        [(bx + length * cut, by + 9), lower_tip, (bx + length * 0.95, by + 20), (bx + length * cut, by + 20)],
        fill=black,
    )
    return canvas


def draw_bushtit(rng: random.Random, flying: bool = False) -> Image.Image:
    """Tiny and round: grey back, wings and long tail; rufous crown and flanks; black mask through
    the eye and a black throat patch framed in white; a stubby bill."""
    canvas, draw = new_canvas()
    grey = jitter((125, 130, 142), rng, 15) + (255,)
    rufous = jitter((172, 96, 48), rng, 18) + (255,)
    black = (18, 18, 20, 255)
    white = jitter((238, 236, 228), rng, 10) + (255,)
    if rng.random() < 0.7:
        perch(draw, 342, rng)
    legs(draw, 275, 320, 342, (70, 60, 55, 255), width=4)
    droop = rng.uniform(-30, 40)
    draw.polygon(
        [(220, 262), (40, 275 + droop), (38, 295 + droop), (220, 292)],  # long tail
        fill=jitter((95, 98, 108), rng, 12) + (255,),
    )
    draw.polygon(ellipse(275, 275, 72, 56, 0), fill=grey)  # body
    draw.polygon(ellipse(292, 302, 52, 30, 0), fill=jitter((228, 220, 205), rng, 12) + (255,))  # pale belly
    draw.polygon(ellipse(270, 308, 50, 16, -8), fill=rufous)  # rufous flanks
    draw.polygon(ellipse(258, 268, 50, 26, -8), fill=jitter((100, 104, 115), rng, 10) + (255,))  # wing
    hx, hy = 338, 222
    circle(draw, hx, hy, 40, white)
    draw.pieslice([hx - 40, hy - 40, hx + 40, hy + 40], 180, 360, fill=rufous)  # rufous crown
    draw.polygon([(hx - 38, hy + 2), (hx + 30, hy - 8), (hx + 34, hy + 8), (hx - 34, hy + 16)], fill=black)  # mask
    draw.polygon(ellipse(hx + 6, hy + 28, 18, 12, 0), fill=black)  # black throat patch
    circle(draw, hx + 14, hy, 5, (235, 215, 120, 255))  # pale eye
    circle(draw, hx + 14, hy, 2.5, (5, 5, 5, 255))
    draw.polygon([(hx + 36, hy - 2), (hx + 52, hy + 4), (hx + 36, hy + 9)], fill=(20, 20, 20, 255))  # stubby bill
    return canvas


def draw_cockatoo(rng: random.Random, flying: bool = False) -> Image.Image:
    """A big white parrot sitting upright: yellow crest (raised or folded), dark grey hooked bill,
    dark eye in a pale ring, a yellow wash under the wings and tail."""
    canvas, draw = new_canvas()
    white = jitter((242, 242, 236), rng, 8) + (255,)
    shade = (200, 200, 196, 255)
    yellow = jitter((250, 214, 45), rng, 15) + (255,)
    bill = jitter((52, 52, 58), rng, 10) + (255,)
    if rng.random() < 0.8:
        perch(draw, 420, rng)
    for x in (235, 265):
        draw.line([(x, 400), (x + 6, 424)], fill=bill, width=9)
    draw.polygon([(215, 380), (180, 490), (250, 490), (262, 380)], fill=white, outline=shade, width=3)  # tail
    draw.polygon([(210, 430), (200, 488), (240, 488)], fill=jitter((240, 230, 150), rng, 10) + (255,))  # yellow wash
    lean = rng.uniform(10, 30)
    draw.polygon(ellipse(250, 300, 78, 112, lean), fill=white, outline=shade, width=3)  # body
    draw.polygon(
        ellipse(232, 305, 55, 95, lean + 8),
        fill=jitter((232, 232, 226), rng, 6) + (255,),  # wing
        outline=shade,
        width=3,
    )
    hx, hy = 300, 185
    raised = rng.uniform(0.2, 1.0)  # how far the crest is raised
    for k in range(6):  # crest feathers fan up and back from the crown
        a = math.radians(-150 + k * 18 * raised - 20 * (1 - raised))
        length = 85 + 20 * math.sin(k)
        base = (hx - 10 + 6 * k, hy - 40)
        tip = (base[0] + length * math.cos(a), base[1] + length * math.sin(a) * (0.6 + 0.6 * raised))
        draw.polygon([(base[0] - 12, base[1] + 6), tip, (base[0] + 12, base[1] + 4)], fill=yellow)
    circle(draw, hx, hy, 55, white, outline=shade, width=3)
    circle(draw, hx + 22, hy - 8, 12, jitter((205, 225, 240), rng, 10) + (255,))  # pale eye ring
    circle(draw, hx + 22, hy - 8, 7, (10, 10, 10, 255))
    draw.polygon(
        [(hx + 40, hy - 5), (hx + 78, hy + 10), (hx + 80, hy + 42), (hx + 66, hy + 30), (hx + 44, hy + 28)], fill=bill
    )  # hooked upper
    draw.polygon([(hx + 42, hy + 26), (hx + 64, hy + 32), (hx + 50, hy + 46)], fill=bill)  # lower mandible
    return canvas


BIRD_DRAWERS = {
    "Bananaquit": draw_bananaquit,
    "Black Skimmer": draw_black_skimmer,
    "Black Throated Bushtiti": draw_bushtit,
    "Cockatoo": draw_cockatoo,
}
#: Typical size of each species in the frame (fraction of the image width the canvas spans).
BIRD_SCALE = {
    "Bananaquit": (0.55, 0.95),
    "Black Skimmer": (0.6, 1.0),
    "Black Throated Bushtiti": (0.5, 0.9),
    "Cockatoo": (0.6, 1.0),
}


def _place_bird(
    image: Image.Image, bird: Image.Image, scale: tuple[float, float], flying: bool, rng: random.Random
) -> None:
    """Shade the bird (lit from above), mirror it at random, scale, rotate and paste it."""
    bird = bird.crop(bird.getbbox())
    if rng.random() < 0.5:
        bird = bird.transpose(Image.FLIP_LEFT_RIGHT)
    low, high = scale
    factor = IMAGE_SIZE * rng.uniform(low, high) / CANVAS
    size = (max(1, round(bird.width * factor)), max(1, round(bird.height * factor)))
    bird = bird.resize(size, Image.BICUBIC, reducing_gap=2.0)
    rgba = np.asarray(bird, dtype=np.float32).copy()
    rgba[..., :3] *= np.linspace(1.12, 0.8, bird.height, dtype=np.float32)[:, None, None]  # lit from above
    bird = Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), mode="RGBA")
    bird = bird.rotate(rng.uniform(-35, 35) if flying else rng.uniform(-20, 20), resample=Image.BICUBIC, expand=True)
    if rng.random() < 0.3:
        bird = bird.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))  # out of focus
    # mostly inside the frame: at most a fifth of the bird may be cut off on each side
    x = rng.uniform(-0.2 * bird.width, IMAGE_SIZE - 0.8 * bird.width)
    y = rng.uniform(-0.2 * bird.height, IMAGE_SIZE - 0.8 * bird.height)
    image.paste(bird, (round(x), round(y)), bird)
