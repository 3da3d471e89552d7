"""What the course's bird dataset is: its four classes (names, other accepted folder names, photo
counts) and the error and warning raised about a bird folder.

A leaf that ``data`` (reading folders) and ``standin`` (drawing the offline stand-in) both use, so
neither needs the other for these facts.
"""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "CLASS_ALIASES", "CLASS_COUNTS", "KAGGLE_SPLITS", "BirdDataError", "BirdDataWarning"]

#: The course's classes, in label order (index 0..3). Folder names exactly as learners have them,
#: including the course's spelling "Bushtiti".
CLASS_NAMES: tuple[str, ...] = ("Bananaquit", "Black Skimmer", "Black Throated Bushtiti", "Cockatoo")
#: Other folder names accepted for a course class. All folder names are matched ignoring case,
#: underscores and extra spaces, so Kaggle's "BLACK THROATED BUSHTIT" works too.
CLASS_ALIASES: dict[str, str] = {"Black Throated Bushtit": "Black Throated Bushtiti"}
#: Photo counts per class in the course's 565-photo set (the stand-in uses the same).
CLASS_COUNTS: dict[str, int] = dict(zip(CLASS_NAMES, (166, 122, 111, 166)))
#: The split folders of the Kaggle "BIRDS 525 SPECIES" download (see ``kaggle.import_kaggle``).
KAGGLE_SPLITS = ("train", "valid", "test")


class BirdDataError(ValueError):
    """The bird folder cannot be used as it is; the message says why and how to fix it."""


class BirdDataWarning(UserWarning):
    """Something in the bird folder was skipped or ignored; the message names it."""
