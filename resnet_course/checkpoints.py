"""Keeping a run folder safe: one training at a time, files that survive a crash, checkpoint
files checked before they are trusted, and a resumed run that is the same run.

What ``training.fit`` and the command line promise (see the README, "What train and resume
promise"):

- While a training writes into a folder it holds ``training.lock`` there (an OS lock on an open
  file, which the OS lets go of when the process dies, so a crashed run never leaves it stuck); a
  second training into the same folder is refused.
- Every file is written to a temporary file and renamed over the old one (``atomic_write``), so a
  crash or a full disk leaves the old file whole. ``checkpoint.pt`` is written first in an epoch;
  ``best.pt`` and ``history.json`` follow it and are repaired from it on resume if a crash came in
  between; temporary files a crash left behind are removed.
- A resumed run must have the same recipe (``RECIPE_KEYS``): every difference is named.
- A file that is not a course checkpoint raises ``CheckpointError`` saying what it is not. Files
  are read with ``torch.load(weights_only=True)``: loading one can never run code.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Callable

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "HISTORY_NAME", "LOCK_NAME", "RECIPE_KEYS", "CRASH_ENV",
           "CheckpointError", "RunFolderError", "SaveFailed", "atomic_write", "check_writable_folder",
           "RunFolderLock", "remove_temporary_files", "claim_run_folder", "data_fingerprint",
           "recipe_differences", "check_same_run", "read_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
#: The lock file a training holds in its output folder while it runs (removed when it ends).
LOCK_NAME = "training.lock"
#: What makes a resumed run the same run: a checkpoint that recorded another value for any of
#: these is not continued. The number of epochs may grow; device, precision and process count may
#: change.
RECIPE_KEYS = ("model_name", "num_classes", "class_names", "image_size", "batch_size", "optimizer",
               "lr", "weight_decay", "warmup_epochs", "schedule", "label_smoothing", "seed", "data")
#: For tests only: ``RESNET_COURSE_CRASH_AT=checkpoint.pt`` makes the process kill itself (SIGKILL,
#: no clean-up) right after it replaced ``checkpoint.pt``; ``tmp:checkpoint.pt`` right after the
#: temporary file is complete but before it replaces the old one. Any file name written with
#: ``atomic_write`` works. That is how the tests check that a crash at any write loses nothing.
CRASH_ENV = "RESNET_COURSE_CRASH_AT"
WHAT_A_CHECKPOINT_IS = ("A course checkpoint is the checkpoint.pt or best.pt that "
                        "`python -m resnet_course train` (training.fit) writes: a dict with the weights "
                        "('model') and a record of the model, classes and image size ('meta').")


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (in use, not writable, holding another run); the
    message says why and what to do."""


class CheckpointError(ValueError):
    """A file is not a usable course checkpoint; the message says what it is not."""


class SaveFailed(OSError):
    """A file could not be written (disk full, read-only, removed folder). The previous version of
    the file, if any, is whole: the message says which file and why."""


# --------------------------------------------------------------------------------------------
# Writing files so that a crash leaves the old one whole
# --------------------------------------------------------------------------------------------

def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_failure(path: Path, error: BaseException) -> str:
    """Why writing ``path`` failed, in words: the operating system's reason, which torch's zip
    writer hides behind its own message, or "the disk is full"."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    try:
        if shutil.disk_usage(path.parent).free < 1 << 20:
            return "the disk is full"
    except OSError:
        pass
    if isinstance(cause, OSError):
        return cause.strerror or str(cause)
    return str(error)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it over
    ``path``: an interrupt, a crash or a full disk leaves the old file whole, never a half-written
    one. A failure raises ``SaveFailed`` naming the file and the real reason."""
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        _crash_point(f"tmp:{path.name}")
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        reason = _write_failure(path, error)
        kept = f"; the previous {path.name} is kept as it was" if path.exists() else ""
        raise SaveFailed(f"could not write {path}: {reason}{kept}") from error
    finally:
        if temporary.exists() or temporary.is_symlink():
            temporary.unlink()
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself survive a power cut
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        except OSError:
            pass
        finally:
            os.close(folder)
    _crash_point(path.name)


def remove_temporary_files(folder: Path, names: list[str]) -> list[Path]:
    """Delete the temporary files a killed process left next to ``names`` (``.NAME.tmp-PID``);
    call it only while holding the folder's lock, so no live writer owns them."""
    removed = []
    for name in names:
        for leftover in Path(folder).glob(f".{name}.tmp-*"):
            leftover.unlink()
            removed.append(leftover)
    return removed


def check_writable_folder(out_dir: str | os.PathLike, what: str = "the run") -> Path:
    """Refuse early (``RunFolderError``), before any training, an output folder that is a file,
    lies under a file, or cannot be written. Creates nothing: the folder is made by the training.
    ``what`` names what would be written there, for the message."""
    out_dir = Path(out_dir)
    for place in (out_dir, *out_dir.parents):
        if place.exists():
            if not place.is_dir():
                where = "is a file" if place == out_dir else f"lies under {place}, which is a file"
                raise RunFolderError(f"cannot write {what} into {out_dir}: it {where}, not a folder. "
                                     "Choose another --out folder.")
            try:  # a real write: permissions alone don't tell (root, read-only disks, /proc)
                with tempfile.TemporaryFile(dir=place, prefix=".write-test-"):
                    pass
            except OSError as error:
                what = "" if place == out_dir else f" (nor create it in {place})"
                raise RunFolderError(f"cannot write into {out_dir}{what}: {error.strerror or error}. "
                                     "Choose another --out folder.") from None
            break
    return out_dir


# --------------------------------------------------------------------------------------------
# One training per folder
# --------------------------------------------------------------------------------------------

def _try_lock(file: IO[str]) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            file.seek(0)
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


class RunFolderLock:
    """Hold ``training.lock`` in a run folder so that no other training writes there at the same
    time. The lock is the operating system's lock on the open file (``flock``): it ends with the
    process, so a killed training never leaves the folder locked. Re-entrant within one process
    (``runs.train_or_load`` holds it around ``fit``, which takes it again)."""

    _held: dict[Path, list] = {}  # folder -> [open lock file, depth]

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME

    def acquire(self) -> RunFolderLock:
        key = self.path.resolve()
        if key in self._held:
            self._held[key][1] += 1
            return self
        while True:
            file = open(self.path, "a+", encoding="utf-8")
            if not _try_lock(file):
                file.seek(0)
                owner = file.read().strip() or "another process"
                file.close()
                raise RunFolderError(f"{self.folder} is in use by another training ({owner}). Wait for it "
                                     "to finish, or train into another --out folder.")
            try:  # the file we locked may have been removed by its previous owner meanwhile
                same = os.path.samestat(os.fstat(file.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            file.close()
        file.seek(0)
        file.truncate()
        file.write(f"PID {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        file.flush()
        self._held[key] = [file, 1]
        return self

    def release(self) -> None:
        key = self.path.resolve()
        entry = self._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del self._held[key]
        if fcntl is not None:  # removed while still locked: a waiting process sees it is gone
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        entry[0].close()

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# The same run: recipe and data
# --------------------------------------------------------------------------------------------

def data_fingerprint(train_loader, val_loader) -> str | None:
    """A short hash of which files (by class and file name) are in each split, so a run trained
    on the stand-in is not mistaken for one trained on real photos, or on another split. None if
    the loaders' datasets don't list their ``samples``."""
    digest = hashlib.sha256()
    for split, loader in (("train", train_loader), ("val", val_loader)):
        samples = getattr(getattr(loader, "dataset", None), "samples", None)
        if samples is None:
            return None
        for path, label in samples:
            digest.update(f"{split}\t{label}\t{Path(path).name}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def recipe_differences(saved: Mapping, now: Mapping) -> list[str]:
    """``"key: X there, Y now"`` for every setting in ``now`` that ``saved`` recorded otherwise
    (settings either side left unrecorded, None, are not compared)."""
    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    return [f"{key}: {saved[key]!r} there, {value!r} now" for key, value in now.items()
            if value is not None and saved.get(key) is not None and plain(saved[key]) != plain(value)]


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
        remove_temporary_files(out_dir, [CHECKPOINT_NAME, BEST_NAME, HISTORY_NAME])
        leftovers = [name for name in (BEST_NAME, HISTORY_NAME) if (out_dir / name).exists()]
        if leftovers and not (out_dir / CHECKPOINT_NAME).exists():
            raise RunFolderError(f"{out_dir} holds {' and '.join(leftovers)} of an earlier run but no "
                                 f"{CHECKPOINT_NAME} to continue it from, and a new run would overwrite "
                                 "them. Move them away, or train into another folder.")
    except BaseException:
        lock.release()
        raise
    return lock


def check_same_run(checkpoint_path: Path, saved_meta: dict, meta: dict) -> None:
    """Refuse to resume a checkpoint trained with another recipe (``checkpoints.RECIPE_KEYS``),
    naming every difference: continuing it would silently mix two runs."""
    differences = recipe_differences(saved_meta, {key: meta.get(key) for key in RECIPE_KEYS})
    if differences:
        raise RunFolderError(f"{checkpoint_path} holds a run trained differently (" + "; ".join(differences)
                             + "). Resume it with the settings it was trained with, or train into "
                             "another folder.")


# --------------------------------------------------------------------------------------------
# Reading a checkpoint without trusting it
# --------------------------------------------------------------------------------------------

def _what_file_is(path: Path, error: BaseException) -> str:
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
            return ("it is a PyTorch file holding Python objects other than tensors, numbers and "
                    "strings (for example a whole model saved with torch.save(model)); such a file is "
                    "not opened, because unpickling it can run any code")
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
        return ("it is a pickle holding Python objects other than tensors, numbers and strings; such "
                "a file is not opened, because unpickling it can run any code")
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
        raise CheckpointError(f"{path} is not a course checkpoint: {_what_file_is(path, error)}. "
                              + WHAT_A_CHECKPOINT_IS) from None
    if not isinstance(state, dict):
        what = f"it holds a {type(state).__name__}, not a dict"
    elif "model" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            what = ("it is a plain state_dict (weights only, such as torchvision's), without the "
                    "course's record of which model, classes and image size it belongs to")
        else:
            what = "it is a dict without model weights ('model')"
    elif not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        what = "its 'model' entry is not a dict of weights"
    else:
        return state
    raise CheckpointError(f"{path} is not a course checkpoint: {what}. {WHAT_A_CHECKPOINT_IS}")
