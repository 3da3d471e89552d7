"""Course-wide settings, defined once: paths, fast mode, and the defaults every notebook uses.

``RESNET_COURSE_FAST=1`` shrinks image size and epochs so the whole course runs in minutes on a
CPU. It never changes the dataset, the split or which code runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FAST_ENV = "RESNET_COURSE_FAST"
DATA_ENV = "RESNET_COURSE_DATA"

#: Where learners put the real photos: ``data/bird_photos/<class>/<file>.jpg``.
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "bird_photos"
#: Where the offline stand-in is generated when the real photos are absent.
STANDIN_DIR = REPO_ROOT / "data" / "standin_birds"
#: Where notebooks and the command line write checkpoints and histories.
RUNS_DIR = REPO_ROOT / "runs"
#: Another folder for the notebooks' runs (the browser tests train into one of their own).
RUNS_ENV = "RESNET_COURSE_RUNS"


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def env_flag(name: str) -> bool:
    """The on/off environment variable ``name``: 1/true/yes/on is True; 0/false/no/off, empty or
    unset is False (case and surrounding spaces ignored). Anything else is a mistake worth
    saying, not a silent False: ``ValueError`` naming the variable and the allowed values."""
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(
        f"{name}={os.environ[name]!r} is neither on nor off: use one of "
        f"{', '.join(TRUE_WORDS)} to turn it on, or {', '.join(FALSE_WORDS[:-1])} (or leave it "
        "empty or unset) to turn it off."
    )


#: What torchrun sets for each process of a distributed run; the course reads WORLD_SIZE and LOCAL_RANK.
DISTRIBUTED_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Folders other libraries keep downloaded weights in (torch.hub, Keras Applications).
CACHE_VARIABLES = ("TORCH_HOME", "KERAS_HOME")


def _check_distributed_variables() -> None:
    """``ValueError`` if torchrun's variables are not whole numbers, or WORLD_SIZE asks for several
    processes without the rest of what torchrun sets."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and not (value.strip().isdigit() and (name != "WORLD_SIZE" or int(value) >= 1)):
            raise ValueError(
                f"{name}={value!r} is not a process count or number: torchrun sets it; unset it "
                "to train in one process."
            )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        missing = [name for name in DISTRIBUTED_VARIABLES if not os.environ.get(name)]
        if missing:
            raise ValueError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} asks for a distributed run, but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: launch it "
                "with torchrun (torchrun --nproc_per_node=2 -m resnet_course train ...), or unset "
                "WORLD_SIZE."
            )


def check_environment(*flags: str) -> None:
    """Check every environment variable the course reads, up front: the on/off ``flags`` (and
    ``RESNET_COURSE_FAST``), torchrun's process numbers, and the weight caches (a folder, not a
    file). ``ValueError`` with one message naming the variable and what it should be."""
    for name in (FAST_ENV, *flags):
        env_flag(name)
    _check_distributed_variables()
    for name in (*CACHE_VARIABLES, DATA_ENV, RUNS_ENV):
        value = os.environ.get(name)
        if not value:
            continue
        place = Path(value).expanduser()
        for parent in (place, *place.parents):
            if parent.exists():
                if not parent.is_dir():
                    where = "is a file" if parent == place else f"lies under {printable_path(parent)}, a file"
                    raise ValueError(f"{name}={printable_path(value)!r} {where}; it should name a folder.")
                break


#: The notebooks' switch (``use_fast_mode``) for this process: None follows the environment.
_switch: bool | None = None


def fast_mode() -> bool:
    """The notebook's ``FAST`` switch where one set it (``use_fast_mode``), else whether
    ``RESNET_COURSE_FAST`` is on (see ``env_flag``)."""
    return env_flag(FAST_ENV) if _switch is None else _switch


def data_dir() -> Path:
    """The real-photo folder: ``$RESNET_COURSE_DATA`` if set, else ``data/bird_photos``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR).expanduser()


@dataclass(frozen=True)
class Settings:
    """The knobs fast mode turns; everything else about a run stays the same."""

    fast: bool
    image_size: int  # 112 px (the original course: 224 px); 64 px in fast mode
    epochs: int  # 30 epochs at 112 px cost about what 10 at 224 px did; 1 in fast mode
    batch_size: int  # 8, as in the original course, in both modes
    demo_steps: int  # training steps of the small in-notebook experiments (notebooks 01 and 04)
    demo_seeds: int = 3  # seeds per unit ordering in the signal-propagation experiment (notebook 04)
    propagation_units: int = 300  # residual units stacked in that experiment (ResNet-1001 has 333)
    # depths of the plain vs residual nets in notebook 01 (He et al. 2015 Fig. 1 compares 20 and 56)
    degradation_depths: tuple = (8, 20, 56)
    # notebook 09: the drawn pretraining set and the label-efficiency runs on the birds
    pretraining_per_species: int = 150  # images per drawn species (12 species: 1800 images)
    pretraining_epochs: int = 20  # measured: 21.3 minutes for ResNet-50 at 112 px on 2 CPU cores (benchmarks/README)
    transfer_epochs: int = 15  # each of the 27 runs on the birds (3 methods x 3 fractions x 3 seeds)
    transfer_seeds: int = 3  # seeds per method and training fraction


def settings() -> Settings:
    """The settings for this run, read from ``RESNET_COURSE_FAST`` each time it is called."""
    if fast_mode():
        return Settings(
            fast=True,
            image_size=64,
            epochs=1,
            batch_size=8,
            demo_steps=60,
            demo_seeds=2,
            propagation_units=30,
            degradation_depths=(8, 20),
            pretraining_per_species=10,
            pretraining_epochs=1,
            transfer_epochs=1,
            transfer_seeds=1,
        )
    return Settings(
        fast=False,
        image_size=112,
        epochs=30,
        batch_size=8,
        demo_steps=300,
        demo_seeds=3,
        propagation_units=300,
        degradation_depths=(8, 20, 56),
    )


def use_fast_mode(fast: bool | None = None) -> Settings:
    """The notebooks' visible fast-mode switch: ``True`` or ``False`` sets fast mode for this
    process, so ``settings()``, ``run_dir`` and ``train_or_load`` all agree with it; ``None``
    follows ``RESNET_COURSE_FAST`` (the test suite sets it to 1), also after an earlier ``True``
    or ``False`` in the same kernel. The environment itself is never written. Returns ``settings()``."""
    global _switch
    if fast is not None and not isinstance(fast, bool):
        raise TypeError(f"FAST must be True, False or None, not {fast!r}")
    _switch = fast
    return settings()


def run_dir(name: str) -> Path:
    """Where a training run named ``name`` keeps its checkpoint and history.

    Fast-mode runs live apart from full runs (``runs/fast/<name>``), so a quick check never
    resumes from, or overwrites, a full training run. ``$RESNET_COURSE_RUNS`` replaces ``runs/``.
    """
    return Path(os.environ.get(RUNS_ENV) or RUNS_DIR) / ("fast" if fast_mode() else "full") / name


def printable_path(path: str | os.PathLike) -> str:
    """``path`` as text any terminal prints as one line: bytes of a file name that are not UTF-8
    (which Python keeps as surrogates) and control characters (a newline, a terminal escape) are
    shown as backslash escapes, so ``b"bad\\xff.jpg"`` is shown as ``bad\\xff.jpg``."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (short, machine-independent
    messages), else as given; printable either way (``printable_path``)."""
    try:
        return printable_path(Path(path).resolve().relative_to(REPO_ROOT).as_posix())
    except ValueError:
        return printable_path(path)
