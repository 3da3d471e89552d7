"""ImageNet weights files: which published file each model takes, where the course keeps them,
finding them offline and downloading them. ``pretrained`` reads and loads them.

- v1 (``resnet18`` ... ``resnet152``): torchvision's published state_dicts (``IMAGENET1K_V1``, a
  plain ``.pth``), named in ``TORCHVISION_ENUMS``.
- v2 (``resnet50v2``/``101v2``/``152v2``): the HDF5 files Keras Applications publishes
  (``resnet50v2_weights_tf_dim_ordering_tf_kernels.h5`` and ``..._notop.h5``), with their MD5s in
  ``KERAS_WEIGHTS_MD5``.

Files are kept in torch.hub's cache (``cache_dir``); ``find_weights`` never touches the network,
``download_weights`` verifies the checksum and writes atomically, and ``imagenet_weights`` (what
``get_model(weights="imagenet")`` uses) fails in seconds with instructions when the file is
neither cached nor downloadable, or when ``RESNET_COURSE_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision.models

from .config import env_flag

__all__ = [
    "OFFLINE_ENV",
    "TORCHVISION_ENUMS",
    "KERAS_WEIGHTS_MD5",
    "WEIGHTS_SOURCE",
    "DOWNLOAD_TIMEOUT",
    "WeightsUnavailable",
    "WeightsFile",
    "cache_dir",
    "model_key",
    "imagenet_file",
    "weights_files",
    "find_weights",
    "download_weights",
    "imagenet_weights",
]

#: Set ``RESNET_COURSE_OFFLINE=1`` and ``"imagenet"`` never touches the network: cached files only.
OFFLINE_ENV = "RESNET_COURSE_OFFLINE"
#: torchvision's weights enum per v1 model; "imagenet" means its IMAGENET1K_V1 entry.
TORCHVISION_ENUMS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
}
#: Where Keras Applications publishes its ResNet weights (``keras.applications.resnet``).
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
#: MD5 of the published files, (with top, notop), as in Keras' ``resnet.WEIGHTS_HASHES``.
KERAS_WEIGHTS_MD5 = {
    "resnet50v2": ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
    "resnet101v2": ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
    "resnet152v2": ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
}
#: Who publishes each model's ImageNet weights, read off the two tables above: torchvision (v1,
#: ``models.V1_NAMES``) or Keras Applications (v2, ``models.V2_NAMES``).
WEIGHTS_SOURCE = {**dict.fromkeys(TORCHVISION_ENUMS, "torchvision"), **dict.fromkeys(KERAS_WEIGHTS_MD5, "keras")}
#: Seconds to wait for the download server before giving up (a dead network fails fast).
DOWNLOAD_TIMEOUT = 10.0


class WeightsUnavailable(FileNotFoundError):
    """``"imagenet"`` weights are neither cached nor downloadable here; the message says which
    file is needed, where to put it and where it comes from."""


@dataclass(frozen=True)
class WeightsFile:
    """One published weights file: its name, URL and checksum, and whether it holds the classifier."""

    model_name: str
    filename: str
    url: str
    checksum: str  # a sha256 prefix (torchvision puts it in the file name) or an MD5 (Keras)
    include_top: bool
    source: str  # "torchvision" or "keras"

    @property
    def path(self) -> Path:
        """Where the course keeps it: torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/``."""
        return cache_dir() / self.filename


def cache_dir() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``, by default
    ``~/.cache/torch/hub/checkpoints``), where torchvision keeps its weights; Keras' files go there too."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def model_key(model_name: str) -> str:
    """``model_name`` as the weights files know it (lower case); a ValueError for a model without
    ImageNet weights."""
    key = str(model_name).strip().lower()
    if key not in WEIGHTS_SOURCE:
        raise ValueError(f"no ImageNet weights for {model_name!r}; models with weights: {', '.join(WEIGHTS_SOURCE)}")
    return key


def imagenet_file(model_name: str, include_top: bool = True) -> WeightsFile:
    """The published ImageNet file for ``model_name``: torchvision's ``IMAGENET1K_V1`` for v1
    (always with the classifier), Keras Applications' ``.h5`` (or ``_notop.h5``) for v2."""
    key = model_key(model_name)
    if WEIGHTS_SOURCE[key] == "torchvision":
        url = getattr(torchvision.models, TORCHVISION_ENUMS[key]).IMAGENET1K_V1.url
        filename = url.rsplit("/", 1)[-1]
        return WeightsFile(key, filename, url, filename.rsplit("-", 1)[-1].split(".")[0], True, "torchvision")
    filename = f"{key}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
    md5 = KERAS_WEIGHTS_MD5[key][0 if include_top else 1]
    return WeightsFile(key, filename, KERAS_WEIGHTS_URL + filename, md5, include_top, "keras")


def weights_files(model_name: str) -> list[WeightsFile]:
    """Every published file for ``model_name``: one for v1, with and without top for v2."""
    key = model_key(model_name)
    if WEIGHTS_SOURCE[key] == "torchvision":
        return [imagenet_file(key)]
    return [imagenet_file(key, True), imagenet_file(key, False)]


def _candidates(file: WeightsFile) -> list[Path]:
    places = [file.path]
    if file.source == "keras":  # where keras.applications itself caches them
        places.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / file.filename)
    return places


def find_weights(model_name: str, include_top: bool = True) -> Path | None:
    """The cached ImageNet file for ``model_name``, or None; never touches the network.

    For v2 without the top, the full file does as well (its classifier is then left out)."""
    wanted = [imagenet_file(model_name, include_top)]
    if not include_top:
        wanted.append(imagenet_file(model_name, True))
    for file in wanted:
        for place in _candidates(file):
            if place.is_file() and place.stat().st_size > 0:
                return place
    return None


def _how_to_get(file: WeightsFile) -> str:
    return (
        f"The {file.model_name} ImageNet weights are the file {file.filename}, published at\n"
        f"  {file.url}\n"
        f"Download it on a machine with internet (python -m resnet_course download-weights "
        f"--model {file.model_name}, or any browser) and put it at\n  {file.path}\n"
        f"(torch.hub's cache; set TORCH_HOME to move it), or pass the file's path as the weights."
    )


def _open_url(url: str, timeout: float):
    """Open ``url`` for reading (one place, so tests can check the network is never touched)."""
    return urllib.request.urlopen(url, timeout=timeout)


def _checksum_ok(path: Path, file: WeightsFile) -> bool:
    digest = hashlib.sha256() if file.source == "torchvision" else hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(file.checksum)


def download_weights(
    model_name: str,
    include_top: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT,
    progress: Callable[[str], None] | None = print,
) -> Path:
    """Download one published file into ``cache_dir()`` (checksum verified, written atomically)
    and return its path; a file already there is returned as it is.

    Raises ``WeightsUnavailable`` (with ``_how_to_get``'s instructions) when the network fails,
    after at most ``timeout`` seconds of silence from the server."""
    file = imagenet_file(model_name, include_top)
    if file.path.is_file():
        return file.path
    file.path.parent.mkdir(parents=True, exist_ok=True)
    partial = file.path.with_name(f".{file.filename}.part-{os.getpid()}")
    try:
        if progress:
            progress(f"Downloading {file.url} -> {file.path}")
        with _open_url(file.url, timeout) as response, open(partial, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        if not _checksum_ok(partial, file):
            raise WeightsUnavailable(
                f"The download of {file.filename} is damaged (checksum mismatch); try again.\n{_how_to_get(file)}"
            )
        os.replace(partial, file.path)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        if isinstance(error, WeightsUnavailable):
            raise
        raise WeightsUnavailable(
            f"Could not download {file.filename} ({_reason(error)}).\n{_how_to_get(file)}"
        ) from None
    finally:
        if partial.exists():
            partial.unlink()
    return file.path


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return f"{type(error).__name__}: {reason}"


def _offline() -> bool:

    return env_flag(OFFLINE_ENV)


def imagenet_weights(model_name: str, include_top: bool = True) -> Path:
    """The ImageNet file for ``model_name``: from the cache, else downloaded (unless
    ``RESNET_COURSE_OFFLINE=1``). Without both, ``WeightsUnavailable`` says which file is needed,
    where to put it and where it comes from; it fails in seconds, never hangs."""
    found = find_weights(model_name, include_top)
    if found is not None:
        return found
    file = imagenet_file(model_name, include_top)
    if _offline():
        raise WeightsUnavailable(
            f"No cached {file.filename} (looked in "
            f"{', '.join(str(p.parent) for p in _candidates(file))}) and "
            f"downloading is off.\n{_how_to_get(file)}"
        )
    return download_weights(model_name, include_top)
