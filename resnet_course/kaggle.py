"""Copying the course's four classes out of a Kaggle "BIRDS 525 SPECIES" download.

The download's layout is ``train|valid|test/<UPPER CASE NAME>/...jpg``; ``import_kaggle`` copies
``BANANAQUIT``, ``BLACK SKIMMER``, ``BLACK THROATED BUSHTIT`` and ``COCKATOO`` into the course's
``bird_photos/<class>/`` layout, never ``GANG GANG COCKATOO`` or ``ROSE BREASTED COCKATOO`` (not
the course's Cockatoo), never a photo whose bytes are already in its class folder, and never into
a folder inside the download itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from . import config
from .birds import CLASS_NAMES, KAGGLE_SPLITS, BirdDataError
from .config import printable_path
from .data import PathLike, course_class_for, list_image_files
from .images import file_problem
from .runfolder import check_writable_folder

__all__ = ["import_kaggle"]


def _kaggle_class_folders(src: Path) -> list[tuple[str, Path, str]]:
    """(split prefix, folder, course class) for every course-class folder in a Kaggle-style tree."""
    found = []
    splits = [src / s for s in KAGGLE_SPLITS if (src / s).is_dir()]
    sources = [(s.name + "_", s) for s in splits] if splits else [("", src)]
    for prefix, split_dir in sources:
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            name = course_class_for(folder.name)
            if name is not None:
                found.append((prefix, folder, name))
    return found


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_or_problem(path: Path) -> tuple[str | None, str | None]:
    """``(SHA-256 of the file's bytes, None)``, or ``(None, why it cannot be read)`` for what is not
    a readable file (a pipe would block the reader forever)."""
    problem = file_problem(path)
    if problem is None:
        try:
            return _file_digest(path), None
        except OSError as error:
            problem = (error.strerror or str(error)).lower()
    return None, problem


def _refuse_nested_folders(src: Path, dst: Path) -> None:
    """``BirdDataError`` if the import would read what it writes: ``dst`` inside ``src`` (the copies
    would be read back, other species would land in a class folder), ``src`` inside ``dst``, or both
    the same folder."""
    source, target = src.resolve(), dst.resolve()
    if source == target or source in target.parents or target in source.parents:
        relation = (
            "is the same folder as" if source == target else "lies inside" if source in target.parents else "holds"
        )
        raise BirdDataError(
            f"--out {printable_path(dst)} {relation} the source {printable_path(src)}: the import "
            "would read its own copies. Choose an --out folder outside the download "
            "(the default is data/bird_photos)."
        )


def _copy_photo(path: Path, target: Path, copied: int) -> None:
    """Copy ``path`` to ``target`` through a hidden temporary file, so a full disk or an interruption
    never leaves half a photo under a real name; a failure is a ``BirdDataError`` saying what is in place."""
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        shutil.copy2(path, temporary)
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise BirdDataError(
            f"could not copy {printable_path(path)} to {printable_path(target)}: "
            f"{(error.strerror or str(error)).lower()}. The {copied} photo(s) copied before it are "
            "in place and nothing else changed; run import-kaggle again once it can write "
            "(photos already there are not copied twice)."
        ) from None


def _find_kaggle_classes(src: Path) -> list[tuple[str, Path, str]]:
    """The course-class folders of a Kaggle download at ``src`` (or one folder level below it);
    ``BirdDataError`` naming the classes it lacks."""
    if not src.is_dir():
        raise BirdDataError(
            f"{printable_path(src)} is not a folder. Point import-kaggle at the unpacked Kaggle "
            "'BIRDS 525 SPECIES' download (the folder holding train/, valid/, test/)."
        )
    found = _kaggle_class_folders(src)
    if not found:  # perhaps the zip unpacked into one more folder level
        for child in sorted(p for p in src.iterdir() if p.is_dir()):
            if any((child / s).is_dir() for s in KAGGLE_SPLITS):
                found = _kaggle_class_folders(child)
                break
    present = {name for _, _, name in found}
    missing = [name for name in CLASS_NAMES if name not in present]
    if missing:
        raise BirdDataError(
            f"{printable_path(src)} does not look like the Kaggle 'BIRDS 525 SPECIES' download: no folder for "
            f"{', '.join(missing)} (expected train/, valid/, test/ with folders such as BANANAQUIT, "
            "BLACK SKIMMER, BLACK THROATED BUSHTIT, COCKATOO)."
        )
    return found


def import_kaggle(src: PathLike, dst: PathLike | None = None, verbose: bool = True) -> dict[str, int]:
    """Copy the course's four classes out of a Kaggle "BIRDS 525 SPECIES" download into
    ``dst/<class>/`` (default ``config.data_dir()``); returns the photos per class now in place.

    ``src`` is the download's root (``train/ valid/ test/<UPPER CASE NAME>/``) or a folder holding
    the class folders directly. Every distinct photo from every split is kept; files are prefixed
    with their split (``train_1.jpg``) so names cannot collide. Nothing in ``dst`` is ever
    overwritten: a photo whose bytes are already in its class folder, under any name, is not copied
    again (a duplicate could sit in both the training and the validation split); a different one
    with a name already taken gets a numbered name. Only exact names count: GANG GANG COCKATOO and
    ROSE BREASTED COCKATOO are other species. Refused before copying anything (``BirdDataError``,
    ``RunFolderError``): ``dst`` and ``src`` inside one another, a ``dst`` that cannot be written.
    What is not a readable file (a pipe, a link that leads nowhere) is not copied, and named.
    """
    src = Path(src).expanduser()
    dst = config.data_dir() if dst is None else Path(dst).expanduser()
    found = _find_kaggle_classes(src)
    _refuse_nested_folders(src, dst)
    for name in CLASS_NAMES:
        check_writable_folder(dst / name, what="the photos")

    copied = duplicates = 0
    not_copied: list[str] = []
    present_by_class: dict[str, dict[str, Path]] = {}  # class -> content digest -> a file with it
    for prefix, folder, name in found:
        target_dir = dst / name
        target_dir.mkdir(parents=True, exist_ok=True)
        present = present_by_class.setdefault(
            name, {_file_digest(p): p for p in list_image_files(target_dir) if file_problem(p) is None}
        )
        for path in list_image_files(folder):
            digest, problem = _digest_or_problem(path)
            if problem is not None:
                not_copied.append(f"{printable_path(path.relative_to(src))} ({problem})")
                continue
            if digest in present:  # already there, perhaps under another name: a second copy would
                duplicates += 1  # put the same photo in both the training and the validation split
                continue
            relative = path.relative_to(folder).as_posix().replace("/", "_")
            target = target_dir / f"{prefix}{relative}"
            number = 1
            while os.path.lexists(target):
                target = target_dir / f"{prefix}{Path(relative).stem}_{number}{path.suffix}"
                number += 1
            _copy_photo(path, target, copied)
            present[digest] = target
            copied += 1
    counts = {name: len([p for p in list_image_files(dst / name) if file_problem(p) is None]) for name in CLASS_NAMES}
    if verbose:
        print(
            f"Imported from {printable_path(src)} into {printable_path(dst)}: {copied} photos copied, {duplicates} "
            "skipped as already there (the same bytes, under any name)"
            + (
                f", {len(not_copied)} not copied as they are not readable files: {', '.join(not_copied)}"
                if not_copied
                else ""
            )
            + ". The folder now holds "
            + ", ".join(f"{n}: {c}" for n, c in counts.items())
            + "."
        )
    return counts
