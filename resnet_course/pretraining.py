"""The course's "ImageNet in miniature": a class-folder dataset of drawn birds of *other* species.

Notebook 09 shows what pretraining buys. The original course started ResNet-50 from ImageNet
weights; where those files cannot be had, the course pretrains its own backbone on this set
instead: ``make_pretraining_set`` draws species that are not the course's four (invented names,
their own plumage, crest, bill, tail, face and wing marks: ``SPECIES``) with the stand-in's
drawing code, in the same kinds of scenes, clutter, lighting and noise, at the same 224 px.

What it is not: ImageNet. ImageNet has 1.28 million photos of 1000 classes; this has a couple of
thousand drawings of a dozen invented birds. A backbone pretrained on it has learned what the
drawn world looks like (drawn birds, drawn foliage, JPEG noise), which is also what the offline
stand-in looks like, so the transfer it shows is from a near domain and can be larger than what
real photos would show. It says nothing about ImageNet's numbers; it shows the mechanism.

Size: the defaults (12 species x 150 images = 1800 images, split 80/20 by ``load_birds``) keep
pretraining ResNet-50 with the default recipe at 112 px for ``PRETRAINING_EPOCHS`` = 20 epochs
under about 45 minutes on a 2-core CPU. ResNet-50 trains at about 16 images per second there
(benchmarks/README: 0.49 s per step of 8 images at 112 px) and evaluates about three times faster,
so an epoch is 1440 / 16 + 360 / 48 = 97.5 s and 20 epochs take about 33 minutes
(``pretraining_minutes``), a quarter of the budget left for a busier machine. Measured on a quiet
2-core CPU: 42-44 s per epoch and 21.3 minutes in all (benchmarks/README, the full run); the estimate
is deliberately pessimistic.
"""

from __future__ import annotations

import io
import os
import random
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .birds import BirdDataError
from .drawing import BODY_PLANS, FieldMarks, draw_marked_bird
from .standin import SCENES, draw_scene_with_bird

__all__ = [
    "SPECIES",
    "DEFAULT_SPECIES",
    "DEFAULT_PER_SPECIES",
    "MIN_PER_SPECIES",
    "MAX_PER_SPECIES",
    "PRETRAINING_EPOCHS",
    "PRETRAINING_MARKER",
    "species_names",
    "pretraining_file_names",
    "pretraining_set_is_complete",
    "check_pretraining_options",
    "make_pretraining_set",
    "draw_pretraining_jpeg",
    "pretraining_minutes",
    "preview",
]

#: Bumped whenever the drawing changes, so that an older set on disk is redrawn.
GENERATOR_VERSION = 1
#: The file in the set's root that says what it is.
PRETRAINING_MARKER = "PRETRAINING.txt"
DEFAULT_SPECIES = 12
DEFAULT_PER_SPECIES = 150
#: With 20 % held out for validation, 5 images per species leave one to validate on.
MIN_PER_SPECIES = 5
MAX_PER_SPECIES = 5000
#: The epochs the size above is budgeted for (ResNet-50, default recipe, 112 px, 2-core CPU).
PRETRAINING_EPOCHS = 20
#: Scenes are chosen with the stand-in's weights for perching birds (trees more often than sand).
SCENE_WEIGHTS = (3, 3, 2, 1, 2, 2)

#: The drawn species, in label order of a set with that many species (``--species N`` takes the
#: first N). Invented names; none is, or is named like, one of the course's four classes. Each
#: differs from every other in at least two shapes, and none has the four's combinations (a
#: white upright bird with a yellow crest and a hooked bill, a black-and-white one with a long red
#: bill, a grey long-tailed one with a black mask and throat, a dark one with a yellow breast).
SPECIES: tuple[tuple[str, FieldMarks], ...] = (
    (
        "Azure Fantail",
        FieldMarks(
            back=(45, 85, 190),
            belly=(170, 195, 225),
            head=(40, 75, 175),
            wing=(30, 60, 150),
            tail=(35, 65, 160),
            bill=(40, 40, 45),
            mark=(240, 240, 235),
            face=(240, 240, 235),
            crest_colour=(40, 75, 175),
            body="round",
            tail_shape="fan",
            bill_shape="short",
            wing_mark="bars",
        ),
    ),
    (
        "Crimson Spikecrest",
        FieldMarks(
            back=(185, 35, 35),
            belly=(235, 150, 140),
            head=(205, 30, 30),
            wing=(140, 25, 30),
            tail=(120, 25, 25),
            bill=(235, 190, 60),
            mark=(90, 20, 20),
            face=(40, 20, 20),
            crest_colour=(215, 40, 35),
            body="round",
            crest="spiky",
            bill_shape="conical",
            face_mark="mask",
        ),
    ),
    (
        "Emerald Longbill",
        FieldMarks(
            back=(35, 135, 70),
            belly=(185, 215, 150),
            head=(30, 120, 65),
            wing=(25, 100, 55),
            tail=(25, 95, 55),
            bill=(30, 30, 30),
            mark=(240, 205, 40),
            face=(30, 120, 65),
            crest_colour=(30, 120, 65),
            body="slim",
            tail_shape="short",
            bill_shape="long",
            wing_mark="patch",
        ),
    ),
    (
        "Ochre Forktail",
        FieldMarks(
            back=(165, 115, 50),
            belly=(235, 215, 170),
            head=(150, 105, 45),
            wing=(130, 90, 40),
            tail=(110, 75, 35),
            bill=(50, 45, 40),
            mark=(245, 240, 225),
            face=(25, 25, 25),
            crest_colour=(150, 105, 45),
            body="slim",
            tail_shape="forked",
            face_mark="cap",
            wing_mark="spots",
        ),
    ),
    (
        "Violet Hookbill",
        FieldMarks(
            back=(110, 55, 150),
            belly=(195, 165, 215),
            head=(125, 65, 165),
            wing=(90, 45, 125),
            tail=(80, 40, 110),
            bill=(225, 215, 190),
            mark=(70, 200, 190),
            face=(235, 235, 230),
            crest_colour=(125, 65, 165),
            body="upright",
            tail_shape="long",
            bill_shape="hooked",
            face_mark="eyering",
            wing_mark="patch",
        ),
    ),
    (
        "Slate Plumehead",
        FieldMarks(
            back=(95, 105, 120),
            belly=(235, 235, 230),
            head=(85, 95, 110),
            wing=(75, 85, 100),
            tail=(70, 80, 95),
            bill=(230, 150, 40),
            mark=(235, 235, 230),
            face=(85, 95, 110),
            crest_colour=(30, 30, 35),
            body="round",
            tail_shape="long",
            crest="plume",
            bill_shape="short",
            wing_mark="bars",
        ),
    ),
    (
        "Rust Eyering",
        FieldMarks(
            back=(170, 80, 40),
            belly=(230, 195, 150),
            head=(175, 85, 45),
            wing=(140, 65, 35),
            tail=(150, 70, 35),
            bill=(60, 50, 45),
            mark=(240, 225, 190),
            face=(245, 245, 240),
            crest_colour=(175, 85, 45),
            body="round",
            tail_shape="short",
            bill_shape="decurved",
            face_mark="eyering",
            wing_mark="spots",
        ),
    ),
    (
        "Teal Tuftcrest",
        FieldMarks(
            back=(30, 130, 130),
            belly=(200, 215, 90),
            head=(35, 145, 140),
            wing=(25, 105, 110),
            tail=(25, 100, 105),
            bill=(45, 45, 50),
            mark=(225, 90, 40),
            face=(35, 145, 140),
            crest_colour=(235, 120, 40),
            body="upright",
            tail_shape="fan",
            crest="tuft",
            bill_shape="conical",
            wing_mark="dark tip",
        ),
    ),
    (
        "Scarlet Bibbed Finchlet",
        FieldMarks(
            back=(120, 120, 115),
            belly=(240, 238, 230),
            head=(125, 125, 120),
            wing=(100, 100, 95),
            tail=(90, 90, 85),
            bill=(225, 170, 60),
            mark=(240, 238, 230),
            face=(215, 35, 45),
            crest_colour=(125, 125, 120),
            body="round",
            tail_shape="forked",
            bill_shape="conical",
            face_mark="throat",
            wing_mark="bars",
        ),
    ),
    (
        "Golden Plumebill",
        FieldMarks(
            back=(120, 85, 55),
            belly=(240, 225, 180),
            head=(225, 175, 40),
            wing=(100, 70, 45),
            tail=(95, 65, 40),
            bill=(60, 55, 50),
            mark=(230, 175, 40),
            face=(225, 175, 40),
            crest_colour=(230, 180, 45),
            body="slim",
            tail_shape="long",
            crest="plume",
            bill_shape="long",
            wing_mark="bars",
        ),
    ),
    (
        "Indigo Swallowtail",
        FieldMarks(
            back=(40, 45, 120),
            belly=(205, 110, 70),
            head=(45, 50, 130),
            wing=(35, 40, 105),
            tail=(30, 35, 95),
            bill=(30, 30, 30),
            mark=(35, 40, 105),
            face=(190, 80, 50),
            crest_colour=(45, 50, 130),
            body="slim",
            tail_shape="forked",
            bill_shape="short",
            face_mark="throat",
            wing_mark="dark tip",
        ),
    ),
    (
        "Olive Spotwing",
        FieldMarks(
            back=(110, 120, 50),
            belly=(200, 200, 130),
            head=(100, 110, 45),
            wing=(85, 95, 40),
            tail=(80, 90, 40),
            bill=(180, 110, 60),
            mark=(240, 215, 70),
            face=(60, 60, 35),
            crest_colour=(100, 110, 45),
            body="upright",
            tail_shape="short",
            crest="spiky",
            bill_shape="decurved",
            face_mark="mask",
            wing_mark="spots",
        ),
    ),
    (
        "Rose Capped Hookbill",
        FieldMarks(
            back=(150, 150, 155),
            belly=(235, 170, 185),
            head=(220, 140, 165),
            wing=(125, 125, 130),
            tail=(115, 115, 120),
            bill=(245, 235, 200),
            mark=(235, 170, 185),
            face=(175, 40, 90),
            crest_colour=(220, 140, 165),
            body="round",
            tail_shape="long",
            bill_shape="hooked",
            face_mark="cap",
            wing_mark="patch",
        ),
    ),
    (
        "Cinnamon Barwing",
        FieldMarks(
            back=(190, 130, 80),
            belly=(225, 190, 150),
            head=(185, 125, 75),
            wing=(160, 105, 60),
            tail=(150, 100, 55),
            bill=(40, 40, 40),
            mark=(35, 30, 30),
            face=(240, 240, 235),
            crest_colour=(185, 125, 75),
            body="slim",
            tail_shape="fan",
            crest="tuft",
            bill_shape="hooked",
            face_mark="eyering",
            wing_mark="bars",
        ),
    ),
    (
        "Jade Capwing",
        FieldMarks(
            back=(60, 160, 120),
            belly=(235, 240, 230),
            head=(55, 150, 115),
            wing=(45, 125, 95),
            tail=(40, 115, 90),
            bill=(35, 35, 35),
            mark=(30, 60, 150),
            face=(30, 60, 150),
            crest_colour=(55, 150, 115),
            body="upright",
            tail_shape="forked",
            bill_shape="short",
            face_mark="cap",
            wing_mark="patch",
        ),
    ),
    (
        "Copper Longtail",
        FieldMarks(
            back=(175, 95, 50),
            belly=(200, 200, 200),
            head=(60, 60, 65),
            wing=(150, 80, 45),
            tail=(160, 85, 45),
            bill=(215, 200, 60),
            mark=(240, 240, 235),
            face=(60, 60, 65),
            crest_colour=(60, 60, 65),
            body="slim",
            tail_shape="long",
            crest="spiky",
            bill_shape="conical",
            wing_mark="spots",
        ),
    ),
)


def species_names(species: int = DEFAULT_SPECIES) -> list[str]:
    """The folder (class) names of a set with ``species`` species: the first of ``SPECIES``."""
    return [name for name, _ in SPECIES[:species]]


def pretraining_file_names(species_name: str, per_species: int) -> list[str]:
    """The files of one species: ``<species>_0000.jpg``, ``<species>_0001.jpg``, ..."""
    return [f"{species_name}_{i:04d}.jpg" for i in range(per_species)]


def check_pretraining_options(species: int, per_species: int) -> None:
    """Raise ``ValueError`` (one sentence) unless 2 <= species <= len(SPECIES) and
    ``MIN_PER_SPECIES`` <= per_species <= ``MAX_PER_SPECIES``."""
    if not isinstance(species, int) or not 2 <= species <= len(SPECIES):
        raise ValueError(
            f"species must be a whole number from 2 to {len(SPECIES)} (the drawn species there are), not {species!r}"
        )
    if not isinstance(per_species, int) or not MIN_PER_SPECIES <= per_species <= MAX_PER_SPECIES:
        raise ValueError(
            f"per-species must be a whole number from {MIN_PER_SPECIES} (one image left to "
            f"validate on) to {MAX_PER_SPECIES}, not {per_species!r}"
        )


def pretraining_minutes(
    species: int = DEFAULT_SPECIES,
    per_species: int = DEFAULT_PER_SPECIES,
    epochs: int = PRETRAINING_EPOCHS,
    train_images_per_second: float = 16.0,
    val_split: float = 0.2,
) -> float:
    """Estimated minutes to pretrain on the set: training images at ``train_images_per_second``
    (ResNet-50 at 112 px on 2 CPU cores: about 16) and validation images three times as fast."""
    total = species * per_species
    train_seconds = total * (1 - val_split) / train_images_per_second
    seconds_per_epoch = train_seconds + total * val_split / (3 * train_images_per_second)
    return epochs * seconds_per_epoch / 60


def _marker_text(species: int, per_species: int, seed: int) -> str:
    return (
        'This folder is the course\'s drawn pretraining set, its "ImageNet in miniature": procedurally drawn\n'
        "birds of invented species that are NOT the course's four classes, made by resnet_course.pretraining.\n"
        "Not photos, and not ImageNet.\n"
        f"generator version: {GENERATOR_VERSION}\nspecies: {species}\nper species: {per_species}\nseed: {seed}\n"
    )


def pretraining_set_is_complete(
    root: str | os.PathLike, species: int = DEFAULT_SPECIES, per_species: int = DEFAULT_PER_SPECIES, seed: int = 0
) -> bool:
    """True if ``root`` holds exactly this set (these options, this generator version)."""
    root = Path(root)
    marker = root / PRETRAINING_MARKER
    if not marker.is_file() or marker.read_text(encoding="utf-8") != _marker_text(species, per_species, seed):
        return False
    if {p.name for p in root.iterdir() if not p.name.startswith(".")} != {PRETRAINING_MARKER, *species_names(species)}:
        return False
    for name in species_names(species):
        folder = root / name
        present = {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()
        if present != set(pretraining_file_names(name, per_species)):
            return False
        if any((folder / f).stat().st_size == 0 for f in present):
            return False
    return True


def _is_own_drawing(path: Path) -> bool:
    """A file this generator writes: ``<species>/<species>_NNNN.jpg`` for a species of ``SPECIES``."""
    stem, _, number = path.stem.rpartition("_")
    return (
        path.is_file() and path.suffix == ".jpg" and stem == path.parent.name and len(number) == 4 and number.isdigit()
    )


def _foreign_files(root: Path) -> list[Path]:
    """What in a drawn set's ``root`` the generator did not write (hidden files don't count)."""
    own_folders = set(species_names(len(SPECIES)))
    found = []
    for path in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if path.name == PRETRAINING_MARKER and path.is_file():
            continue
        if path.name not in own_folders or not path.is_dir():
            found.append(path)
            continue
        found += [p for p in sorted(path.iterdir()) if not p.name.startswith(".") and not _is_own_drawing(p)]
    return found


def _refuse_to_mix(root: Path) -> None:
    """Raise ``BirdDataError`` if drawing into ``root`` would delete or mix with anything that is
    not an earlier drawn set's own files: the same rule as ``make-standin``."""
    if not root.exists():
        return
    if not root.is_dir():
        raise BirdDataError(f"{root} is a file, not a folder; choose a new or empty folder for the pretraining set.")
    if not (root / PRETRAINING_MARKER).is_file():
        if any(not p.name.startswith(".") for p in root.iterdir()):
            raise BirdDataError(
                f"{root} is not empty and is not a drawn pretraining set (no {PRETRAINING_MARKER}); "
                "choose a new or empty folder for the pretraining set."
            )
        return
    foreign = _foreign_files(root)
    if foreign:
        shown = ", ".join(p.relative_to(root).as_posix() for p in foreign[:5])
        raise BirdDataError(
            f"{root} is a drawn pretraining set, but also holds {len(foreign)} file(s) or folder(s) "
            f"that are not its drawings ({shown}{' ...' if len(foreign) > 5 else ''}). Redrawing would "
            "delete or mix with them: move them away first, or choose another folder."
        )


def _remove_old_drawings(root: Path) -> None:
    for folder in (root / name for name in species_names(len(SPECIES))):
        if folder.is_dir():
            for path in folder.iterdir():
                if _is_own_drawing(path):
                    path.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()


def draw_pretraining_jpeg(species_index: int, number: int, seed: int = 0) -> bytes:
    """The JPEG bytes of image ``number`` of species ``SPECIES[species_index]``: its own random
    generator, seeded by (seed, species, number), so the same seed gives the same bytes."""
    name, marks = SPECIES[species_index]
    rng = random.Random(f"pretraining/{seed}/{name}/{number}")
    nrng = np.random.default_rng(rng.getrandbits(64))
    scene = rng.choices(SCENES, weights=SCENE_WEIGHTS)[0]
    image = draw_scene_with_bird(scene, partial(draw_marked_bird, marks), BODY_PLANS[marks.body]["scale"], rng, nrng)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(55, 92))
    return buffer.getvalue()


def make_pretraining_set(
    out: str | os.PathLike, species: int = DEFAULT_SPECIES, per_species: int = DEFAULT_PER_SPECIES, seed: int = 0
) -> Path:
    """Draw ``out/<species name>/<species name>_NNNN.jpg`` (``per_species`` 224 px JPEGs for each
    of the first ``species`` of ``SPECIES``) and ``out/PRETRAINING.txt``; returns ``out``.

    Deterministic per seed. A complete set with these options is left as it is; an older or other
    drawn set in ``out`` is redrawn; a folder holding anything else is refused with a
    ``BirdDataError`` (nothing is deleted), as ``make-standin`` does. Bad options: ``ValueError``.
    About 8 ms per image on one core (the default 1800 in about 15 s)."""
    check_pretraining_options(species, per_species)
    root = Path(out).expanduser()
    if pretraining_set_is_complete(root, species, per_species, seed):
        return root
    _refuse_to_mix(root)
    if root.exists():
        _remove_old_drawings(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / PRETRAINING_MARKER).write_text(_marker_text(species, per_species, seed), encoding="utf-8")
    for index, name in enumerate(species_names(species)):
        folder = root / name
        folder.mkdir(exist_ok=True)
        for number, file_name in enumerate(pretraining_file_names(name, per_species)):
            (folder / file_name).write_bytes(draw_pretraining_jpeg(index, number, seed))
    return root


def preview(species: int = DEFAULT_SPECIES, seed: int = 0, size: int = 112) -> Image.Image:
    """One image of each species side by side (a contact sheet for notebooks and checks)."""
    sheet = Image.new("RGB", (size * species, size))
    for index in range(species):
        image = Image.open(io.BytesIO(draw_pretraining_jpeg(index, 0, seed))).resize((size, size))
        sheet.paste(image, (index * size, 0))
    return sheet
