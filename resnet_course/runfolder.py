"""A run folder's plumbing: files that survive a crash, and one training per folder.

- Every file is written to a temporary file in the same folder, flushed to disk and renamed over
  the old one (``atomic_write``), so an interrupt, a crash or a full disk leaves the old file
  whole; a write that fails raises ``SaveFailed`` naming the file and the operating system's
  reason. Temporary files a killed process left behind are removed under the folder's lock
  (``remove_temporary_files``).
- While a training writes into a folder it holds ``training.lock`` there (``RunFolderLock``, an OS
  lock on an open file, which the OS lets go of when the process dies, so a crashed run never
  leaves it stuck); a second training into the same folder is refused with ``RunFolderError``.
- ``check_writable_folder`` refuses, before any work, a folder that is a file, lies under one or
  cannot be written.

``checkpoints`` decides which files a run folder holds and in which order they are written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Callable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = [
    "LOCK_NAME",
    "CRASH_ENV",
    "RunFolderError",
    "SaveFailed",
    "atomic_write",
    "write_json",
    "read_json",
    "remove_temporary_files",
    "check_writable_folder",
    "RunFolderLock",
]

#: The lock file a training holds in its output folder while it runs (removed when it ends).
LOCK_NAME = "training.lock"
#: For tests only: ``RESNET_COURSE_CRASH_AT=checkpoint.pt`` makes the process kill itself (SIGKILL,
#: no clean-up) right after it replaced ``checkpoint.pt``; ``tmp:checkpoint.pt`` right after the
#: temporary file is complete but before it replaces the old one. Any file name written with
#: ``atomic_write`` works. That is how the tests check that a crash at any write loses nothing.
CRASH_ENV = "RESNET_COURSE_CRASH_AT"


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (in use, not writable, holding another run); the
    message says why and what to do."""


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
        if isinstance(error.__context__, KeyboardInterrupt):  # torch's writer wraps Ctrl-C in its own error
            raise KeyboardInterrupt from None
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


def write_json(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON, atomically (``read_json`` reads it back)."""
    text = json.dumps(value, indent=1).encode()
    atomic_write(path, lambda file: file.write(text))


def read_json(path: Path) -> object:
    """What ``write_json`` wrote, or None if the file is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
                raise RunFolderError(
                    f"cannot write {what} into {out_dir}: it {where}, not a folder. Choose another --out folder."
                )
            try:  # a real write: permissions alone don't tell (root, read-only disks, /proc)
                with tempfile.TemporaryFile(dir=place, prefix=".write-test-"):
                    pass
            except OSError as error:
                what = "" if place == out_dir else f" (nor create it in {place})"
                raise RunFolderError(
                    f"cannot write into {out_dir}{what}: {error.strerror or error}. Choose another --out folder."
                ) from None
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
            try:
                file = open(self.path, "a+", encoding="utf-8")
            except OSError as error:
                raise SaveFailed(f"could not create {self.path}: {_write_failure(self.path, error)}") from None
            if not _try_lock(file):
                file.seek(0)
                owner = file.read().strip() or "another process"
                file.close()
                raise RunFolderError(
                    f"{self.folder} is in use by another training ({owner}). Wait for it "
                    "to finish, or train into another --out folder."
                )
            try:  # the file we locked may have been removed by its previous owner meanwhile
                same = os.path.samestat(os.fstat(file.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            file.close()
        try:
            file.seek(0)
            file.truncate()
            file.write(f"PID {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            file.flush()
        except OSError as error:  # a full disk: leave no empty lock file behind
            self.path.unlink(missing_ok=True)
            file.close()
            raise SaveFailed(f"could not write {self.path}: {_write_failure(self.path, error)}") from None
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
