"""The four-class bird dataset: finding it, checking it, splitting it, and loading it.

Learners' layout is ``bird_photos/<class>/<file>.jpg`` with the four folders in ``CLASS_NAMES``.
The folder is scanned once, up front: files that are not images are ignored, images that cannot
be decoded are skipped *and named*, and a folder that cannot work raises ``BirdDataError`` with a
message that says how to get the photos. So nothing crashes mid-epoch and nothing shrinks silently.
Folders that are not one of the four classes (say ``GANG GANG COCKATOO``) are not used, since the
models have four outputs, and a warning names them. A folder none of whose class folders is a
course class (a drawn pretraining set, your own classes) is any other dataset, read as torchvision's
ImageFolder reads one: its classes are its sorted folder names (``scan_dataset_folder``).

Without the real photos the course uses an offline stand-in (``resnet_course.standin``) with the
same class names, counts and image size; ``find_bird_data`` picks one and says which.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch
from torch.utils.data import DataLoader, Dataset

from . import config
from .birds import CLASS_ALIASES, CLASS_COUNTS, CLASS_NAMES, KAGGLE_SPLITS, BirdDataError, BirdDataWarning
from .config import printable_path
from .images import (
    UnreadableImage,
    check_image,
    eval_transform,
    file_problem,
    load_rgb,
    mean_std,
    train_transform,
)
from .standin import STANDIN_MARKER, check_can_draw_into, standin_is_complete
from .standin import make_standin_birds as _draw_standin

__all__ = [
    "IMAGE_EXTENSIONS",
    "ScanResult",
    "BirdDataset",
    "course_class_for",
    "list_image_files",
    "scan_bird_folder",
    "is_bird_folder",
    "scan_class_folders",
    "scan_dataset_folder",
    "split_samples",
    "check_train_fraction",
    "training_subset",
    "load_birds",
    "find_bird_data",
    "is_standin_folder",
    "make_standin_birds",
]

#: File extensions treated as images; every other file (.DS_Store, notes.txt, ...) is ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

HOW_TO_GET_PHOTOS = (
    "How to get the bird photos:\n"
    "  * put them in data/bird_photos/<class>/ with one folder per class: "
    + ", ".join(CLASS_NAMES)
    + " (or set RESNET_COURSE_DATA to your folder);\n"
    "  * or copy them from a Kaggle 'BIRDS 525 SPECIES' download: "
    "python -m resnet_course import-kaggle SRC;\n"
    "  * or work offline with the procedurally drawn stand-in: python -m resnet_course make-standin"
)

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------
# Scanning a folder
# --------------------------------------------------------------------------------------------


def _normalise_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


_FOLDER_TO_CLASS: dict[str, str] = {_normalise_name(c): c for c in CLASS_NAMES}
_FOLDER_TO_CLASS.update({_normalise_name(alias): c for alias, c in CLASS_ALIASES.items()})


def course_class_for(folder_name: str) -> str | None:
    """The course class a folder name means ("BLACK THROATED BUSHTIT" -> "Black Throated Bushtiti"),
    or None. Exact names only: "GANG GANG COCKATOO" is not the course's Cockatoo."""
    return _FOLDER_TO_CLASS.get(_normalise_name(folder_name))


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.startswith("~$")


def _is_image_name(path: Path) -> bool:
    return not _is_hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS


LINKED_FOLDER = "a link to a folder (not followed: put the photos themselves in the class folder)"


def _skip_reason(path: Path) -> str | None:
    """Why the scan skips ``path`` (see ``images.check_image``), or None to use it."""
    if path.is_symlink() and path.is_dir():
        return LINKED_FOLDER
    return check_image(path)


def _usable_images(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """The images of one class folder that decode; the others are appended to ``skipped`` with why."""
    usable = []
    for path in list_image_files(folder):
        reason = _skip_reason(path)
        if reason is None:
            usable.append(path)
        else:
            skipped.append((path, reason))
    return usable


@dataclass
class ScanResult:
    """What ``scan_bird_folder`` found: usable image files per class, and what it skipped and why."""

    root: Path
    files: dict[str, list[Path]]  # class name -> sorted image paths, in CLASS_NAMES order
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images + reason
    ignored_folders: list[str] = field(default_factory=list)  # subfolders that are not course classes

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(paths) for name, paths in self.files.items()}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def class_names(self) -> list[str]:
        """The classes in label order: ``CLASS_NAMES`` for bird data, else the sorted folder names."""
        return list(self.files)

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """(path, label) pairs, label = index in ``class_names``, like torchvision's ImageFolder."""
        return [(path, label) for label, paths in enumerate(self.files.values()) for path in paths]

    def report(self) -> str:
        """A short plain-text report: counts per class, then every skipped file with its reason."""
        counts = ", ".join(f"{n}: {c}" for n, c in self.counts.items())
        lines = [f"{printable_path(self.root)}: {self.total} images ({counts})"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable file(s):")
            lines += [f"  {printable_path(path.relative_to(self.root))}: {reason}" for path, reason in self.skipped]
        if self.ignored_folders:
            lines.append(
                "ignored folders that are not course classes: " + ", ".join(map(printable_path, self.ignored_folders))
            )
        return "\n".join(lines)


def list_image_files(folder: Path) -> list[Path]:
    """Everything under ``folder`` named like an image (subfolders included, hidden ones not),
    sorted by relative path: regular files, and also what a reader must not open (a link that leads
    nowhere, a pipe) and links to folders (not followed), so that the scan names them, not drops them."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in linked]
        found += [Path(dirpath) / name for name in filenames if _is_image_name(Path(dirpath) / name)]
        found += [Path(dirpath) / name for name in linked if not _is_hidden(Path(dirpath) / name)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan_bird_folder(root: PathLike) -> ScanResult:
    """Scan ``root/<class>/`` once, up front, and return the usable images per class.

    Non-image files and hidden files are ignored silently; images that fail to decode are skipped
    and listed in ``skipped``. Folders that are not
    course classes are listed in ``ignored_folders`` and not used: the models have four outputs.
    Raises ``BirdDataError`` for a missing folder, a missing or empty class folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise BirdDataError(f"The bird photo folder {printable_path(root)} does not exist.\n{HOW_TO_GET_PHOTOS}")
    if not root.is_dir():
        raise BirdDataError(f"{printable_path(root)} is a file, not a folder of class folders.\n{HOW_TO_GET_PHOTOS}")

    class_dirs: dict[str, list[Path]] = {name: [] for name in CLASS_NAMES}
    ignored = []
    subfolders = sorted((p for p in root.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)
    for folder in subfolders:
        name = course_class_for(folder.name)
        if name is None:
            ignored.append(folder.name)
        else:
            class_dirs[name].append(folder)

    missing = [name for name, dirs in class_dirs.items() if not dirs]
    if missing:
        raise BirdDataError(_missing_classes_message(root, missing, subfolders))
    doubled = {name: [d.name for d in dirs] for name, dirs in class_dirs.items() if len(dirs) > 1}
    if doubled:
        raise BirdDataError(
            f"{printable_path(root)} has more than one folder for the same class: {doubled}. "
            "Keep one folder per class (merge the photos into it)."
        )

    _refuse_overlapping_class_folders(root, [class_dirs[name][0] for name in CLASS_NAMES])
    files: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    for name in CLASS_NAMES:
        files[name] = _usable_images(class_dirs[name][0], skipped)

    empty = [printable_path(class_dirs[name][0].name) for name, paths in files.items() if not paths]
    if empty:
        detail = "".join(f"\n  {printable_path(p.relative_to(root))}: {r}" for p, r in skipped)
        raise BirdDataError(
            f"No readable images in the class folder(s) {', '.join(empty)} under "
            f"{printable_path(root)}."
            + (f"\nSkipped as unreadable:{detail}" if detail else "")
            + f"\n{HOW_TO_GET_PHOTOS}"
        )
    return ScanResult(root=root, files=files, skipped=skipped, ignored_folders=ignored)


def _refuse_overlapping_class_folders(root: Path, folders: list[Path]) -> None:
    """``BirdDataError`` if a class folder is (a link to) the photo folder or a folder above it, or
    two class folders are the same folder or one holds the other: their photos would be read under
    two labels, wrong in silence."""
    resolved = [folder.resolve() for folder in folders]
    for folder, place in zip(folders, resolved):
        if place == root.resolve() or place in root.resolve().parents:
            raise BirdDataError(
                f"The class folder {printable_path(folder)} leads to {printable_path(place)}, the "
                "photo folder itself or a folder above it: each class needs its own folder."
            )
        for other, other_place in zip(folders, resolved):
            if other != folder and (other_place == place or place in other_place.parents):
                raise BirdDataError(
                    f"The class folders {printable_path(folder.name)} and {printable_path(other.name)} "
                    f"overlap (both lead into {printable_path(place)}): their photos would get two "
                    "labels. Each class needs its own folder."
                )


def _not_folders(root: Path, missing: list[str]) -> str:
    """What stands where a missing class folder should be (a file, a link that leads nowhere or
    in a loop), as text for the message; empty if nothing does."""
    found = []
    for entry in sorted(root.iterdir()):
        if course_class_for(entry.name) in missing and not _is_hidden(entry):
            problem = file_problem(entry)
            found.append(f"{printable_path(entry.name)}: {'a file, not a folder' if problem is None else problem}")
    return f" ({'; '.join(found)})" if found else ""


def _missing_classes_message(root: Path, missing: list[str], subfolders: list[Path]) -> str:
    found = [printable_path(p.name) for p in subfolders]
    shown_root = printable_path(root)
    if not found:
        message = f"{shown_root} has no class folders (expected {', '.join(CLASS_NAMES)}){_not_folders(root, missing)}."
    else:
        message = (
            f"{shown_root} is missing the class folder(s) {', '.join(missing)}{_not_folders(root, missing)}. "
            f"Found: {', '.join(found[:12])}{' ...' if len(found) > 12 else ''}."
        )
    splits = [p.name for p in subfolders if p.name.lower() in {"train", "valid", "test"}]
    if splits:
        message += (
            f"\nThis looks like the Kaggle 'BIRDS 525 SPECIES' layout ({', '.join(splits)}); "
            "copy the course's four classes out of it with: python -m resnet_course import-kaggle "
            f"{shown_root}"
        )
    elif len(subfolders) == 1:
        message += f"\nDid you mean the folder inside it, {printable_path(subfolders[0])}?"
    return f"{message}\n{HOW_TO_GET_PHOTOS}"


def _visible_subfolders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)


def is_bird_folder(root: PathLike) -> bool:
    """True if ``root`` is read as the course's bird data: it does not exist, has no class folders,
    or one of them is a course class (or an alias) or a Kaggle split (train/valid/test). Any other
    folder of class folders (a drawn pretraining set, your own classes) is a general dataset."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return True
    names = [p.name for p in _visible_subfolders(root)]
    return not names or any(course_class_for(n) is not None or n.lower() in KAGGLE_SPLITS for n in names)


def scan_class_folders(root: PathLike) -> ScanResult:
    """Scan any folder of class folders, as torchvision's ImageFolder reads one: the classes are the
    sorted names of its visible subfolders, each needs at least one readable image, and unreadable
    images are skipped and listed as in ``scan_bird_folder``. Raises ``BirdDataError`` for fewer
    than two classes or a class without a readable image."""
    root = Path(root).expanduser()
    folders = _visible_subfolders(root)
    if len(folders) < 2:
        found = f" (only {folders[0].name}; did you mean that folder?)" if folders else ""
        raise BirdDataError(f"{root} needs one folder per class and at least two classes{found}.")
    files: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    for folder in folders:
        files[folder.name] = _usable_images(folder, skipped)
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise BirdDataError(
            f"No readable images in the class folder(s) {empty} under {root}: every class "
            "folder needs at least one image."
        )
    return ScanResult(root=root, files=files, skipped=skipped)


def scan_dataset_folder(root: PathLike) -> ScanResult:
    """``scan_bird_folder`` for the course's bird data (``is_bird_folder``), else
    ``scan_class_folders``: any folder of class folders is a dataset."""
    scan = scan_bird_folder if is_bird_folder(root) else scan_class_folders
    return scan(root)


# --------------------------------------------------------------------------------------------
# The deterministic split, the Dataset and the loaders
# --------------------------------------------------------------------------------------------


def _split_key(seed: int, class_name: str, relative_path: str) -> str:
    """A stable pseudo-random key per file: the same on every machine, OS and Python version,
    and independent of the order in which the file system lists the files."""
    return hashlib.sha256(os.fsencode(f"{seed}/{class_name}/{relative_path}")).hexdigest()  # any file name


def split_samples(
    scan: ScanResult, val_split: float = 0.2, seed: int = 123
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Split into (train, val) lists of (path, label): stratified by class, deterministic.

    The validation set has ``round(total * val_split)`` images (113 of 565), shared out over the
    classes in proportion to their size (largest remainders get the extra ones: 33/25/22/33).
    Within a class, files are ordered by a SHA-256 hash of (seed, class, file name).
    """
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}")
    counts = scan.counts
    names = scan.class_names
    n_val_total = int(round(scan.total * val_split))
    exact = {name: count * val_split for name, count in counts.items()}
    n_val = {name: int(exact[name]) for name in counts}
    by_remainder = sorted(counts, key=lambda n: (-(exact[n] - n_val[n]), names.index(n)))
    for name in by_remainder[: n_val_total - sum(n_val.values())]:
        n_val[name] += 1

    train, val = [], []
    for label, name in enumerate(names):
        folder_root = scan.root
        ordered = sorted(
            scan.files[name],
            key=lambda p: _split_key(seed, name, p.relative_to(folder_root).as_posix().split("/", 1)[-1]),
        )
        val += [(p, label) for p in sorted(ordered[: n_val[name]])]
        train += [(p, label) for p in sorted(ordered[n_val[name] :])]
    return train, val


class BirdDataset(Dataset):
    """(image tensor, label) pairs from a list of (path, label); ``samples``, ``targets``,
    ``classes`` and ``class_to_idx`` as in torchvision's ImageFolder."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform=None, class_names: Sequence[str] = CLASS_NAMES):
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.classes = list(class_names)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except UnreadableImage as error:  # the file changed after the up-front scan
            raise BirdDataError(f"{error} (it was readable when the folder was scanned)") from None
        return (self.transform(image) if self.transform else image), label


def check_train_fraction(fraction: float, name: str = "train_fraction") -> None:
    """A ValueError naming the option (``name``, as the caller spells it) unless 0 < fraction <= 1."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"{name} must be in (0, 1], not {fraction!r}")


def training_subset(train: Sequence[tuple[Path, int]], fraction: float, seed: int = 123) -> list[tuple[Path, int]]:
    """A deterministic, stratified ``fraction`` of the training samples: ``round(n * fraction)``
    images of each class's ``n`` (at least one), chosen by a SHA-256 hash of (seed, label, file
    name), so a smaller fraction keeps a subset of a larger one. The validation split is not touched."""
    check_train_fraction(fraction)
    by_label: dict[int, list[tuple[Path, int]]] = {}
    for sample in train:
        by_label.setdefault(sample[1], []).append(sample)
    kept = []
    for label, samples in by_label.items():
        ordered = sorted(samples, key=lambda s: _split_key(seed, f"fraction/{label}", Path(s[0]).name))
        kept += ordered[: max(1, round(len(samples) * fraction))]
    return sorted(kept, key=lambda s: (s[1], str(s[0])))


def load_birds(
    root: PathLike | None = None,
    image_size: int = 224,
    batch_size: int = 8,
    val_split: float = 0.2,
    seed: int = 123,
    num_workers: int = 0,
    normalization: str = "imagenet",
    train_fraction: float = 1.0,
) -> tuple[DataLoader, DataLoader, list[str]]:
    """The course's data loaders: ``(train_loader, val_loader, class_names)``.

    ``root`` defaults to ``config.data_dir()``. The folder is scanned first (skipped files are
    reported in a ``BirdDataWarning``), split deterministically (452/113 for 565 photos), the
    training loader shuffles with a generator seeded by ``seed`` and augments; validation doesn't.
    ``loader.dataset.samples`` holds the (path, label) pairs, e.g. for prediction grids.
    ``normalization`` ("imagenet" or "tf", see ``NORMALIZATIONS``) must match the model's weights:
    ``pretrained.normalization_for(name, weights)`` or ``model.input_normalization`` says which.
    Any folder of class folders works (``scan_dataset_folder``: the classes are then its sorted
    folder names); ``train_fraction`` < 1 trains on a stratified subset (``training_subset``).
    """
    mean_std(normalization)  # an unknown name fails here, not in the first batch
    scan = scan_dataset_folder(config.data_dir() if root is None else root)
    warn_about_skipped(scan)
    train_samples, val_samples = split_samples(scan, val_split=val_split, seed=seed)
    if train_fraction != 1:
        train_samples = training_subset(train_samples, train_fraction, seed=seed)
    _warn_about_empty_splits(train_samples, val_samples, val_split, scan.class_names)
    train_set = BirdDataset(train_samples, train_transform(image_size, normalization), scan.class_names)
    train_set.train_fraction = train_fraction  # recorded by training.fit; a resume must keep it
    val_set = BirdDataset(val_samples, eval_transform(image_size, normalization), scan.class_names)
    generator = torch.Generator().manual_seed(seed)
    pin = torch.cuda.is_available()
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=num_workers > 0,
        # a last batch of one image would make BatchNorm fail in training mode
        drop_last=len(train_set) % batch_size == 1,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=num_workers > 0,
    )
    return train_loader, val_loader, scan.class_names


def _warn_about_empty_splits(
    train: Sequence[tuple[Path, int]],
    val: Sequence[tuple[Path, int]],
    val_split: float,
    class_names: Sequence[str] = CLASS_NAMES,
) -> None:
    """A ``BirdDataWarning`` naming the classes with no training image or, when there is a
    validation split, no validation image: with so few photos per class, training cannot learn
    that class or validation cannot measure it."""
    for split, samples, wanted in (("training", train, True), ("validation", val, val_split > 0)):
        present = {label for _, label in samples}
        missing = [name for label, name in enumerate(class_names) if label not in present]
        if wanted and missing:
            warnings.warn(
                f"No {split} image for {', '.join(missing)} (too few photos to split "
                f"{1 - val_split:.0%}/{val_split:.0%}): the {split} "
                f"{'cannot learn' if split == 'training' else 'accuracy does not measure'} "
                f"{'that class' if len(missing) == 1 else 'those classes'}.",
                BirdDataWarning,
                stacklevel=3,
            )


def warn_about_skipped(scan: ScanResult) -> None:
    """Issue a ``BirdDataWarning`` naming every skipped file and ignored folder, if any."""
    if scan.skipped:
        names = "\n".join(f"  {printable_path(p.relative_to(scan.root))}: {reason}" for p, reason in scan.skipped)
        warnings.warn(
            f"Skipped {len(scan.skipped)} unreadable image(s) in {printable_path(scan.root)} "
            f"(using the other {scan.total}):\n{names}",
            BirdDataWarning,
            stacklevel=3,
        )
    if scan.ignored_folders:
        warnings.warn(
            f"Ignored folder(s) in {printable_path(scan.root)} that are not course classes: "
            f"{', '.join(map(printable_path, scan.ignored_folders))}",
            BirdDataWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------
# Getting the data: Kaggle import, real photos or stand-in
# --------------------------------------------------------------------------------------------


def find_bird_data(verbose: bool = True) -> tuple[Path, bool]:
    """``(root, is_standin)``: the real photos at ``config.data_dir()`` if they are there and
    usable, else the offline stand-in at ``config.STANDIN_DIR`` (generated if missing or
    incomplete). Prints one line saying which data the course is using.

    If ``RESNET_COURSE_DATA`` names a folder that cannot be used, that is an error; if the default
    ``data/bird_photos`` exists but cannot be used, a warning says why and the stand-in is used.
    """
    real = config.data_dir()
    explicit = bool(os.environ.get(config.DATA_ENV))
    if real.exists() or explicit:
        try:
            scan = scan_bird_folder(real)
        except BirdDataError as error:
            if explicit:
                raise BirdDataError(f"{config.DATA_ENV} names a folder the course cannot use: {error}") from None
            warnings.warn(f"Not using {real}: {error}", BirdDataWarning, stacklevel=2)
        else:
            warn_about_skipped(scan)
            if verbose:
                print(f"Using real photos at {real}: {scan.total} images.")
            return real, False

    standin = Path(config.STANDIN_DIR)
    if not standin_is_complete(standin):
        _generate_standin_atomically(standin)
    if verbose:
        print(
            f"Using the offline stand-in (procedurally drawn birds, not real photos) at "
            f"{config.display_path(standin)}: {sum(CLASS_COUNTS.values())} images."
        )
    return standin, True


def is_standin_folder(root: PathLike) -> bool:
    """True if ``root`` is a generated stand-in (it holds the ``STANDIN.txt`` marker), not photos."""
    return (Path(root) / STANDIN_MARKER).is_file()


def _generate_standin_atomically(root: Path) -> None:
    """Draw the stand-in into a temporary sibling folder, then move it into place, so that an
    interrupted run or two notebooks running at once never leave a half-written stand-in."""
    if (root / STANDIN_MARKER).is_file():
        check_can_draw_into(root)  # before drawing: a photo put among the drawings must not be deleted
    root.parent.mkdir(parents=True, exist_ok=True)
    temporary = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    make_standin_birds(temporary)
    if root.exists():
        if not (root / STANDIN_MARKER).exists() and any(root.iterdir()):
            shutil.rmtree(temporary)
            raise BirdDataError(
                f"{printable_path(root)} exists, is not a generated stand-in and is not usable; "
                "move it away so the stand-in can be generated there."
            )
        if standin_is_complete(root):  # another process finished first
            shutil.rmtree(temporary)
            return
        try:
            check_can_draw_into(root)  # again: something may have been put there while drawing
        except Exception:
            shutil.rmtree(temporary)
            raise
        shutil.rmtree(root)
    try:
        os.replace(temporary, root)
    except OSError:  # another process moved its copy into place in the meantime
        shutil.rmtree(temporary, ignore_errors=True)
        if not standin_is_complete(root):
            raise


def make_standin_birds(root: PathLike, seed: int = 0) -> Path:
    """Draw the offline stand-in into ``root/<class>/``: 565 procedurally drawn 224x224 JPEGs with
    the course's class names and counts (see ``resnet_course.standin``). Returns ``root``."""
    return _draw_standin(root, seed=seed)
