"""A run folder and its checkpoints: what a checkpoint holds (this module owns the format), the
order an epoch's files are written in and their repair, files checked before they are trusted, and
a resumed run that is the same run. How each file is written so that a crash leaves the old one
whole, and the lock that keeps one training per folder, are ``runfolder``'s.

What ``training.fit`` and the command line promise (see the README, "What train and resume
promise"):

- Before a training writes into a folder it claims it (``claim_run_folder``): the folder is
  checked writable, locked (``runfolder.RunFolderLock``: a second training into it is refused),
  cleared of the temporary files a crash left behind, and refused if it holds best.pt or
  history.json of an earlier run without the checkpoint.pt to continue it.
- Every file is replaced atomically (``runfolder.atomic_write``). ``checkpoint.pt`` is written
  first in an epoch (``save_epoch_files``); ``best.pt``, ``history.json`` and ``run.json`` follow it
  and are repaired from it on resume if a crash came in between (``repair_epoch_files``).
- A resumed run must have the same recipe: the meta the checkpoint recorded is compared with the
  new run's (``RECIPE_KEYS``, ``check_same_run``), and every difference is named.
- A file that is not a course checkpoint raises ``CheckpointError`` saying what it is not; its
  meta is checked (``meta_problem``) before anything is built from it, and only a checkpoint.pt,
  not a best.pt, can be resumed (``read_resumable``). Files are read with
  ``torch.load(weights_only=True)``: loading one can never run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .runfolder import (
    RunFolderError,
    RunFolderLock,
    atomic_write,
    check_writable_folder,
    read_json,
    remove_temporary_files,
    write_json,
)

__all__ = [
    "CHECKPOINT_NAME",
    "BEST_NAME",
    "HISTORY_NAME",
    "RUN_FILE",
    "CHECKPOINT_FORMAT",
    "RECIPE_KEYS",
    "RESUME_KEYS",
    "CheckpointError",
    "save_checkpoint",
    "claim_run_folder",
    "data_fingerprint",
    "run_meta",
    "recipe_differences",
    "check_same_run",
    "read_checkpoint",
    "read_resumable",
    "meta_problem",
    "rng_state",
    "restore_rng_state",
    "best_state",
    "save_epoch_files",
    "repair_epoch_files",
    "what_file_is",
    "best_record",
    "saved_best",
]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
#: A readable copy of the recipe the checkpoint records (``RECIPE_KEYS``), for people; the
#: checkpoint's own record is the one a resume is checked against.
RUN_FILE = "run.json"
CHECKPOINT_FORMAT = 1
#: What makes a resumed run the same run: a checkpoint that recorded another value for any of
#: these is not continued. The number of epochs may grow; device, precision and process count may
#: change.
RECIPE_KEYS = (
    "model_name",
    "num_classes",
    "class_names",
    "image_size",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "schedule",
    "label_smoothing",
    "seed",
    "data",
    "zero_init_residual",
    "weights",
    "normalization",
    "backbone_frozen",
    "train_fraction",
)
#: What checkpoint.pt holds besides weights and meta, so a run can go on (best.pt holds none of it).
RESUME_KEYS = ("epoch", "optimizer", "scheduler", "rng", "history", "best_val_acc")
WHAT_A_CHECKPOINT_IS = (
    "A course checkpoint is the checkpoint.pt or best.pt that "
    "`python -m resnet_course train` (training.fit) writes: a dict with the weights "
    "('model') and a record of the model, classes and image size ('meta')."
)


class CheckpointError(ValueError):
    """A file is not a usable course checkpoint; the message says what it is not."""


# --------------------------------------------------------------------------------------------
# The same run: recipe and data
# --------------------------------------------------------------------------------------------


def _content_key(path: str | os.PathLike) -> str:
    """A file's size and a hash of its first 4 KiB: new bytes under an old name change it, and it
    costs one small read per image."""
    try:
        with open(path, "rb") as file:
            head = file.read(4096)
            size = os.fstat(file.fileno()).st_size
    except OSError:
        return "unreadable"
    return f"{size}:{hashlib.sha256(head).hexdigest()[:16]}"


def data_fingerprint(train_loader, val_loader) -> str | None:
    """A short hash of which files (by class, file name, size and first 4 KiB) are in each split,
    so a run trained on the stand-in is not mistaken for one trained on real photos, on another
    split, or on files whose bytes were replaced under the same names. None if the loaders'
    datasets don't list their ``samples``."""
    digest = hashlib.sha256()
    for split, loader in (("train", train_loader), ("val", val_loader)):
        samples = getattr(getattr(loader, "dataset", None), "samples", None)
        if samples is None:
            return None
        for path, label in samples:
            line = f"{split}\t{label}\t{Path(path).name}\t{_content_key(path)}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))  # names need not be UTF-8
    return digest.hexdigest()[:16]


def _num_outputs(model: torch.nn.Module) -> int | None:
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return last_linear[-1].out_features if last_linear else None


def run_meta(
    model: torch.nn.Module,
    recipe: Mapping,
    train_loader,
    val_loader,
    *,
    epochs: int,
    seed: int | None,
    precision: str,
    world_size: int,
    class_names,
    model_name,
    image_size,
) -> dict:
    """The run's record (``"meta"``), saved in every checkpoint: what it trains, on what, with which
    recipe (``RECIPE_KEYS``), and where (precision, processes)."""
    return {
        "model_name": model_name,
        "num_classes": len(class_names) if class_names else _num_outputs(model),
        "class_names": list(class_names) if class_names else None,
        "image_size": image_size,
        **recipe,
        "epochs": epochs,
        "seed": seed,
        "batch_size": getattr(train_loader, "batch_size", None),
        "world_size": world_size,
        "precision": precision,
        "data": data_fingerprint(train_loader, val_loader),
        # the input scaling the weights expect ("imagenet" or "tf"); predict uses the same
        "normalization": getattr(model, "input_normalization", "imagenet"),
        "weights": (getattr(model, "weights_source", None) or {}).get("file"),
        "backbone_frozen": bool(getattr(model, "backbone_frozen", False)),
        "zero_init_residual": getattr(model, "zero_init_residual", None),
        "train_fraction": getattr(getattr(train_loader, "dataset", None), "train_fraction", None),
    }


#: Settings where "none" is itself a setting (no weights file, not frozen): a run recorded with
#: None differs from one asked for with a value, and the other way round.
COMPARED_EVEN_IF_NONE = ("weights", "normalization", "backbone_frozen", "zero_init_residual")


def recipe_differences(saved: Mapping, now: Mapping) -> list[str]:
    """``"key: X there, Y now"`` for every setting in ``now`` that ``saved`` recorded otherwise.
    Settings left unrecorded (None) either side are not compared, except ``COMPARED_EVEN_IF_NONE``
    where ``saved`` has the key at all."""

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    def compared(key, value):
        if key in COMPARED_EVEN_IF_NONE and key in saved:
            return True
        return value is not None and saved.get(key) is not None

    return [
        f"{key}: {saved.get(key)!r} there, {value!r} now"
        for key, value in now.items()
        if compared(key, value) and plain(saved.get(key)) != plain(value)
    ]


def claim_run_folder(out_dir: Path) -> RunFolderLock:
    """Before any training: check ``out_dir`` can be written, create it and lock it (one training
    per folder), remove the temporary files a killed run left there, and refuse to start over the
    best.pt/history.json of an earlier run whose checkpoint.pt is gone (they would be overwritten)."""
    check_writable_folder(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create the output folder {out_dir}: {error.strerror or error}") from None
    lock = RunFolderLock(out_dir).acquire()
    try:
        remove_temporary_files(out_dir, [CHECKPOINT_NAME, BEST_NAME, HISTORY_NAME, RUN_FILE])
        leftovers = [name for name in (BEST_NAME, HISTORY_NAME) if (out_dir / name).exists()]
        if leftovers and not (out_dir / CHECKPOINT_NAME).exists():
            raise RunFolderError(
                f"{out_dir} holds {' and '.join(leftovers)} of an earlier run but no "
                f"{CHECKPOINT_NAME} to continue it from, and a new run would overwrite "
                "them. Move them away, or train into another folder."
            )
    except BaseException:
        lock.release()
        raise
    return lock


def check_same_run(checkpoint_path: Path, saved_meta: dict, meta: dict) -> None:
    """Refuse to resume a checkpoint trained with another recipe (``checkpoints.RECIPE_KEYS``),
    naming every difference: continuing it would silently mix two runs."""
    differences = recipe_differences(saved_meta, {key: meta.get(key) for key in RECIPE_KEYS})
    if differences:
        raise RunFolderError(
            f"{checkpoint_path} holds a run trained differently ("
            + "; ".join(differences)
            + "). Resume it with the settings it was trained with, or train into "
            "another folder."
        )


# --------------------------------------------------------------------------------------------
# What a checkpoint holds: weights, meta, and for checkpoint.pt the state to resume from
# --------------------------------------------------------------------------------------------


def rng_state(loader_generators: Sequence[torch.Generator]) -> dict:
    """Every random generator's state, as tensors and lists (no NumPy objects, so the checkpoint
    loads with ``weights_only=True``)."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "loader": [g.get_state() for g in loader_generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, loader_generators: Sequence[torch.Generator]) -> None:
    """Put back what ``rng_state`` saved."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    for generator, saved in zip(loader_generators, state.get("loader", [])):
        generator.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def best_state(state: dict) -> dict:
    """What best.pt holds: the epoch's weights, meta and validation accuracy (no optimiser)."""
    best = {key: state[key] for key in ("format", "epoch", "model", "meta")}
    return {**best, "val_acc": state["history"][state["epoch"] - 1]["val_acc"]}


def recipe_of(meta: Mapping) -> dict:
    """The part of a checkpoint's meta that makes a run the run it is (``RECIPE_KEYS``)."""
    return {key: meta.get(key) for key in RECIPE_KEYS}


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Save a checkpoint dict with ``torch.save``, atomically (``atomic_write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: torch.save(state, file))
    return path


def save_epoch_files(out_dir: Path, state: dict, improved: bool) -> None:
    """After an epoch: checkpoint.pt (to resume), best.pt (weights and meta only, when the
    validation accuracy improved), history.json and run.json, each replaced atomically.
    checkpoint.pt comes first: after a crash before the others, ``repair_epoch_files`` rebuilds
    them from it."""
    save_checkpoint(state, out_dir / CHECKPOINT_NAME)
    if improved:
        save_checkpoint(best_state(state), out_dir / BEST_NAME)
    write_json(out_dir / HISTORY_NAME, state["history"])
    write_json(out_dir / RUN_FILE, recipe_of(state["meta"]))


def best_record(history: Sequence[dict]) -> dict | None:
    """The history's epoch with the best validation accuracy (the first of equals, as ``fit``
    keeps it), or None if no epoch was validated."""
    scored = [r for r in history if r.get("val_acc") is not None]
    return max(scored, key=lambda r: r["val_acc"]) if scored else None


def saved_best(path: Path) -> tuple | None:
    """(epoch, validation accuracy) that best.pt at ``path`` holds, or None if it cannot be read."""
    try:
        saved = read_checkpoint(path)
    except (OSError, ValueError):
        return None
    return saved.get("epoch"), saved.get("val_acc")


def repair_epoch_files(out_dir: Path, state: dict) -> list[str]:
    """Make history.json, run.json and best.pt agree with checkpoint.pt again after a crash
    between their writes (see ``save_epoch_files``); returns what was repaired, in words."""
    repaired = []
    history = state["history"]
    if read_json(out_dir / HISTORY_NAME) != json.loads(json.dumps(history)):
        write_json(out_dir / HISTORY_NAME, history)
        repaired.append(f"{HISTORY_NAME} now lists the {len(history)} epoch(s) of {CHECKPOINT_NAME}")
    recipe = recipe_of(state["meta"])
    if read_json(out_dir / RUN_FILE) != json.loads(json.dumps(recipe)):
        write_json(out_dir / RUN_FILE, recipe)
    best = best_record(history)
    if best is None:
        return repaired
    if saved_best(out_dir / BEST_NAME) == (best["epoch"], best["val_acc"]):
        return repaired
    if best["epoch"] == state["epoch"]:  # the weights of the best epoch are the checkpoint's
        save_checkpoint(best_state(state), out_dir / BEST_NAME)
        repaired.append(f"{BEST_NAME} now holds epoch {best['epoch']} ({best['val_acc']:.1%})")
    else:
        warnings.warn(
            f"{out_dir / BEST_NAME} does not hold the best epoch ({best['epoch']}, "
            f"{best['val_acc']:.1%}) and its weights are gone; it is left as it is.",
            stacklevel=2,
        )
    return repaired


#: Bounds a checkpoint's meta must keep before anything is built from it.
MAX_CLASSES = 100_000
IMAGE_SIZES = range(8, 4097)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def meta_problem(meta: object, model_names: Sequence[str]) -> str | None:
    """What is wrong with a checkpoint's meta, in words, or None: checked before a model is built
    from it, so a file cannot make the course allocate a model of a billion classes."""
    if not isinstance(meta, dict):
        return f"its record of the run ('meta') is a {type(meta).__name__}, not a dict"
    name, classes = meta.get("model_name"), meta.get("num_classes")
    if not name or not classes:
        return "it does not record which model it holds (model_name/num_classes)"
    if name not in model_names:
        return f"it names a model the course does not build ({name!r})"
    if not _is_int(classes) or not 1 <= classes <= MAX_CLASSES:
        return f"its number of classes ({classes!r}) is not a whole number from 1 to {MAX_CLASSES:,}"
    names = meta.get("class_names")
    if names is not None and (
        not isinstance(names, list) or len(names) != classes or not all(isinstance(n, str) for n in names)
    ):
        return f"its class names do not list {classes} names"
    size = meta.get("image_size")
    if size is not None and (not _is_int(size) or size not in IMAGE_SIZES):
        return f"its image size ({size!r}) is not a whole number of pixels from 8 to 4096"
    return None


def read_resumable(path: Path) -> dict:
    """Read checkpoint.pt to resume from it: a course checkpoint that also holds the optimiser,
    scheduler, random states and history (best.pt holds weights only)."""
    state = read_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed: it holds weights but not the training state "
            f"({', '.join(missing)}), as best.pt does. Resume from the run's own "
            f"{CHECKPOINT_NAME}, or train into another folder."
        )
    if not isinstance(state["history"], list) or not isinstance(state.get("meta"), dict):
        raise CheckpointError(f"{path} cannot be resumed: its history or meta is not what train writes.")
    return state


# --------------------------------------------------------------------------------------------
# Reading a checkpoint without trusting it
# --------------------------------------------------------------------------------------------


def what_file_is(path: Path, error: BaseException) -> str:
    """What ``path`` is, given that ``torch.load(weights_only=True)`` failed on it with ``error``
    (torch's own text is not shown: it advises loading with weights_only=False, which would run
    whatever code an untrusted file holds)."""
    with open(path, "rb") as file:
        head = file.read(64)
    if not head:
        return "it is an empty file (0 bytes)"
    is_pickle_refusal = type(error).__name__ == "UnpicklingError"
    if head.startswith(b"PK\x03\x04"):
        if is_pickle_refusal:
            return (
                "it is a PyTorch file holding Python objects other than tensors, numbers and "
                "strings (for example a whole model saved with torch.save(model)); such a file is "
                "not opened, because unpickling it can run any code"
            )
        return "it is a damaged or truncated PyTorch file (it cannot be read to the end)"
    text = head.lstrip()
    if text[:1] in (b"{", b"[") or text.startswith(b'"'):
        return "it is a text file that looks like JSON, not a PyTorch file"
    try:
        head.decode("utf-8")
        return "it is a text file, not a PyTorch file"
    except UnicodeDecodeError:
        pass
    if head[:1] == b"\x80" and is_pickle_refusal:
        return (
            "it is a pickle holding Python objects other than tensors, numbers and strings; such "
            "a file is not opened, because unpickling it can run any code"
        )
    return "it is not a PyTorch file (its bytes are not in a format torch.save writes)"


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a course checkpoint with ``weights_only=True`` and check it is one: a dict holding
    'model' (a dict of tensors) and 'meta'. Anything else raises ``CheckpointError`` saying what
    the file is not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types: UnpicklingError, RuntimeError, EOFError, OSError ...
        raise CheckpointError(
            f"{path} is not a course checkpoint: {what_file_is(path, error)}. " + WHAT_A_CHECKPOINT_IS
        ) from None
    if not isinstance(state, dict):
        what = f"it holds a {type(state).__name__}, not a dict"
    elif "model" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            what = (
                "it is a plain state_dict (weights only, such as torchvision's), without the "
                "course's record of which model, classes and image size it belongs to"
            )
        else:
            what = "it is a dict without model weights ('model')"
    elif not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        what = "its 'model' entry is not a dict of weights"
    else:
        return state
    raise CheckpointError(f"{path} is not a course checkpoint: {what}. {WHAT_A_CHECKPOINT_IS}")
