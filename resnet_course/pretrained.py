"""Starting weights for the course's models: reading the files and loading them exactly
(``finetune`` uses them: frozen backbone, linear probe). Which ImageNet file each model takes,
where it is kept and how it is downloaded is ``imagenet``'s.

- v1 (``resnet18`` ... ``resnet152``): torchvision's published state_dicts (``IMAGENET1K_V1``, a
  plain ``.pth``). Our v1 models use torchvision's module names, so the file loads key for key.
- v2 (``resnet50v2``/``101v2``/``152v2``): the HDF5 files Keras Applications publishes
  (``resnet50v2_weights_tf_dim_ordering_tf_kernels.h5`` and ``..._notop.h5``), read with h5py
  alone: Keras' legacy layout has one group per layer whose ``weight_names`` attribute lists its
  arrays (``conv1_conv/kernel:0`` in Keras 2 files, ``conv1_conv/kernel`` in what Keras 3 writes).

- every model: a checkpoint written by ``train`` for the same architecture (``load_course_checkpoint``),
  e.g. a backbone pretrained on the drawn other species (``pretraining``), the course's offline
  stand-in for ImageNet; its input normalisation comes with it.

Loading is strict: every tensor of the backbone must come from the file with the right shape and
every tensor in the file must find a place, else ``WeightsError`` names the first mismatch. The
classifier is loaded only when it fits (1000 classes); otherwise the model keeps a fresh head.

Each family expects its own input scaling (``NORMALIZATION_FOR_WEIGHTS``): torchvision's models
ImageNet mean/std, Keras' ResNet50V2 inputs scaled to [-1, 1] (``preprocess_input`` mode "tf").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from .checkpoints import what_file_is
from .imagenet import KERAS_WEIGHTS_MD5, TORCHVISION_ENUMS, WEIGHTS_SOURCE, imagenet_file, model_key

__all__ = [
    "WeightsError",
    "normalization_for",
    "course_checkpoint_meta",
    "load_course_checkpoint",
    "load_weights",
    "read_torch_state_dict",
    "read_keras_h5",
    "keras_to_torch",
    "write_keras_h5",
    "keras_v2_module_name",
    "keras_layer_name",
]

#: Input scaling each family of published weights was trained with (names from ``data.NORMALIZATIONS``).
NORMALIZATION_FOR_WEIGHTS = {"torchvision": "imagenet", "keras": "tf"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_BN_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


class WeightsError(ValueError):
    """A weights file does not fit the model or cannot be read; the message names the file and
    the first tensor that does not fit."""


def normalization_for(model_name: str, weights: str | os.PathLike | None) -> str:
    """The input scaling a model expects: ``"tf"`` ([-1, 1]) for v2 with Keras' weights,
    ``"imagenet"`` (mean/std) for v1 with torchvision's and for every model trained from scratch,
    and whatever a course checkpoint given as weights was trained with (its meta's normalization)."""
    if weights is None:
        return "imagenet"
    meta = course_checkpoint_meta(weights)
    if meta is not None:
        return meta.get("normalization") or "imagenet"
    return NORMALIZATION_FOR_WEIGHTS[WEIGHTS_SOURCE[model_key(model_name)]]


def _load_torch_file(path: Path) -> object:
    """``torch.load(weights_only=True)`` on the CPU, memory-mapped where the format allows (a
    checkpoint is then read only as far as needed)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def course_checkpoint_meta(path: str | os.PathLike) -> dict | None:
    """The record (``"meta"``) of a checkpoint written by ``train`` (``training.fit``), or None for
    anything else: "imagenet", a plain state_dict, a Keras file, a file that cannot be read."""
    path = Path(path).expanduser()
    if str(path).strip().lower() == "imagenet" or not path.is_file() or _file_kind(path) != "torch":
        return None
    try:
        state = _load_torch_file(path)
    except Exception:  # not readable as a checkpoint: the loader that follows says why
        return None
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("meta"), dict):
        return dict(state["meta"])
    return None


# --------------------------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == _HDF5_SIGNATURE:
        return "hdf5"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pth`` state_dict (torchvision's, or a course checkpoint's ``"model"``) as tensors."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's own text advises weights_only=False: never shown
        raise WeightsError(
            f"Cannot read {path} as a PyTorch state_dict: {what_file_is(path, error)} "
            "(an incomplete download, or another kind of file?)."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint written by training.fit
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors.")
    return dict(state)


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _keras_leaf(weight_name: str) -> str:
    """``conv1_conv/kernel:0`` (Keras 2) or ``conv1_conv/kernel`` (Keras 3) -> ``kernel``."""
    leaf = weight_name.rsplit("/", 1)[-1]
    return leaf[:-2] if leaf.endswith(":0") else leaf


def keras_to_torch(weight_name: str, array) -> tuple[str, torch.Tensor]:
    """One Keras weight as our ``(parameter name, tensor)``: a conv kernel goes from Keras'
    (kh, kw, in, out) to PyTorch's (out, in, kh, kw) and a dense kernel is transposed, both
    becoming ``weight``; ``bias`` stays; BN's gamma/beta/moving_mean/moving_variance become
    weight/bias/running_mean/running_var. ``weight_name`` may carry the layer and Keras 2's
    ``:0`` (``conv1_conv/kernel:0``). A ValueError for any other weight."""
    leaf, value = _keras_leaf(weight_name), torch.as_tensor(np.asarray(array))
    if leaf in _BN_LEAVES:
        return _BN_LEAVES[leaf], value
    if leaf == "kernel" and value.ndim == 4:
        return "weight", value.permute(3, 2, 0, 1).contiguous()
    if leaf == "kernel" and value.ndim == 2:
        return "weight", value.t().contiguous()
    if leaf == "bias":
        return "bias", value
    raise ValueError(f"weight {weight_name!r} {tuple(value.shape)} has no place in a ResNet*V2")


def read_keras_h5(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, str]]:
    """Keras' legacy HDF5 weights of a ResNet*V2 as ``{our state_dict key: (tensor, name in file)}``,
    each converted by ``keras_to_torch``. A layer or weight with no place in ``ResNetV2`` is a
    ``WeightsError``."""

    path = Path(path)
    out: dict[str, tuple[torch.Tensor, str]] = {}
    try:
        with h5py.File(path, "r") as handle:
            root = handle["model_weights"] if "model_weights" in handle else handle  # a whole saved model
            if "layer_names" not in root.attrs:
                raise WeightsError(
                    f"{path} is an HDF5 file but not Keras' legacy weights format (no 'layer_names' attribute)."
                )
            for layer in map(_text, root.attrs["layer_names"]):
                group = root[layer]
                names = [_text(n) for n in group.attrs.get("weight_names", [])]
                if not names:
                    continue
                try:
                    prefix = keras_v2_module_name(layer)
                except ValueError:
                    raise WeightsError(
                        f"{path}: layer {layer!r} has no place in a ResNet*V2 (is this a Keras ResNet v1 file?)."
                    ) from None
                for name in names:
                    try:
                        leaf, value = keras_to_torch(name, group[name])
                    except ValueError as error:
                        raise WeightsError(f"{path}: {error}.") from None
                    key = f"{prefix}.{leaf}"
                    if key in out:
                        raise WeightsError(f"{path}: {name!r} and {out[key][1]!r} both map to {key}.")
                    out[key] = (value.float().contiguous(), name)
    except WeightsError:
        raise
    except Exception as error:  # h5py: truncated file, missing dataset, not HDF5 ...
        raise WeightsError(
            f"Cannot read {path} as Keras HDF5 weights (incomplete download?): {str(error).splitlines()[0]}"
        ) from None
    return out


def keras_v2_module_name(keras_layer_name: str) -> str:
    """Where a Keras ResNet*V2 layer lives in ``ResNetV2``: ``conv3_block2_1_conv`` -> ``conv3.block2.conv1``.

    ``conv1_conv`` -> ``conv1``, ``post_bn`` -> ``post_bn``, ``predictions`` -> ``fc``,
    ``{stage}_{block}_0_conv`` -> ``{stage}.{block}.shortcut``, ``..._preact_bn`` -> ``...preact_bn``,
    ``..._{i}_conv`` / ``..._{i}_bn`` -> ``...conv{i}`` / ``...bn{i}``.
    """
    fixed = {"conv1_conv": "conv1", "post_bn": "post_bn", "predictions": "fc"}
    if keras_layer_name in fixed:
        return fixed[keras_layer_name]
    stage, block, *rest = keras_layer_name.split("_")
    part = "_".join(rest)
    if part == "preact_bn":
        return f"{stage}.{block}.preact_bn"
    if part == "0_conv":
        return f"{stage}.{block}.shortcut"
    index, kind = rest
    return f"{stage}.{block}.{kind}{index}"


def keras_layer_name(module_name: str) -> str:
    """The inverse of ``keras_v2_module_name``: ``conv3.block2.conv1`` -> ``conv3_block2_1_conv``."""
    fixed = {"conv1": "conv1_conv", "post_bn": "post_bn", "fc": "predictions"}
    if module_name in fixed:
        return fixed[module_name]
    stage, block, part = module_name.split(".")
    if part == "preact_bn":
        return f"{stage}_{block}_preact_bn"
    if part == "shortcut":
        return f"{stage}_{block}_0_conv"
    kind, index = part[:-1], part[-1]
    return f"{stage}_{block}_{index}_{kind}"


def write_keras_h5(
    model: nn.Module, path: str | os.PathLike, include_top: bool = True, keras2_names: bool = True
) -> Path:
    """Write a ``ResNetV2``'s weights in Keras' legacy HDF5 layout (the published files' format,
    Keras 2 names ``layer/kernel:0`` unless ``keras2_names=False``). The notebook uses it to
    exercise the Keras loader when the real file is absent."""

    leaves = {"weight": "kernel", "bias": "bias"}
    bn_leaves = {v: k for k, v in _BN_LEAVES.items()}
    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            continue
        if module_name == "fc" and not include_top:
            continue
        layer = keras_layer_name(module_name)
        if isinstance(module, nn.BatchNorm2d):
            arrays = [(bn_leaves[n], getattr(module, n)) for n in ("weight", "bias", "running_mean", "running_var")]
        else:
            arrays = [(leaves[n], t) for n, t in (("weight", module.weight), ("bias", module.bias)) if t is not None]
        converted = []
        for leaf, tensor in arrays:
            value = tensor.detach().float().cpu()
            if leaf == "kernel":
                value = value.permute(2, 3, 1, 0) if value.ndim == 4 else value.t()
            converted.append((f"{layer}/{leaf}{':0' if keras2_names else ''}", value.contiguous().numpy()))
        layers[layer] = converted
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([n.encode() for n in layers])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4" if keras2_names else b"3"
        for layer, arrays in sorted(layers.items()):
            group = handle.create_group(layer)
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in arrays])
            for name, value in arrays:
                group.create_dataset(name, data=value)
    return path


# --------------------------------------------------------------------------------------------
# Loading into a model, strictly
# --------------------------------------------------------------------------------------------


def _counter(key: str) -> bool:
    """BatchNorm's step counter: not a weight, absent from Keras files and from torchvision files
    saved before PyTorch 0.4.1 (PyTorch's own strict loading fills it in too)."""
    return key.endswith("num_batches_tracked")


def _load_strict(
    model: nn.Module, tensors: dict[str, tuple[torch.Tensor, str]], path: Path, load_head: bool = True
) -> dict:
    """Copy ``tensors`` into ``model``: the backbone exactly, the head (``fc.*``) when its shape fits
    (and ``load_head``).

    Mismatches are reported in the model's own order: the first tensor that is missing, has
    another shape, or (after all of the model's) is in the file but has no place in the model.
    ``tensors_loaded`` counts weights, biases and BN statistics (not BN's step counters)."""
    state = model.state_dict()
    head_keys = [k for k in state if k.startswith("fc.")]
    head_fits = load_head and all(k in tensors and tensors[k][0].shape == state[k].shape for k in head_keys)
    for key, target in state.items():
        if key in head_keys or (_counter(key) and key not in tensors):
            continue
        if key not in tensors:
            raise WeightsError(
                f"{path} does not fit {type(model).__name__}: it has no tensor for "
                f"{key} {tuple(target.shape)} (the first one missing; "
                f"{len(tensors)} tensors in the file, {len(state)} in the model)."
            )
        value, name = tensors[key]
        if value.shape != target.shape:
            where = key if name == key else f"{key} ({name} in the file)"
            raise WeightsError(
                f"{path} does not fit {type(model).__name__}: {where} is "
                f"{tuple(value.shape)} in the file, {tuple(target.shape)} in the model."
            )
    extra = [tensors[k][1] for k in tensors if k not in state]
    if extra:
        raise WeightsError(
            f"{path} does not fit {type(model).__name__}: {extra[0]} has no place "
            f"in the model ({len(extra)} such tensors)."
        )
    new_state = {
        k: (tensors[k][0].to(v.dtype) if k in tensors and (head_fits or k not in head_keys) else v)
        for k, v in state.items()
    }
    model.load_state_dict(new_state)
    loaded = sum(1 for k in state if k in tensors and not _counter(k) and (head_fits or k not in head_keys))
    return {"file": str(path), "tensors_loaded": loaded, "fresh_head": not head_fits}


def load_course_checkpoint(
    model: nn.Module, model_name: str, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> dict:
    """Start ``model`` (built as ``model_name``, any number of classes) from a checkpoint written by
    ``train``: the backbone strictly (``WeightsError`` names the first tensor that does not fit),
    the head only when the checkpoint was trained on exactly ``class_names``; otherwise the head
    stays fresh. Returns what ``load_weights`` returns, with the checkpoint's model, classes and
    input normalisation (``source_model``, ``source_classes``, ``normalization``)."""
    path = Path(path).expanduser()
    state = _load_torch_file(path)
    meta, weights = state["meta"], state["model"]
    bad = [name for name, tensor in weights.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise WeightsError(
            f"{path} holds weights that are not finite numbers (in {bad[0]}): the training it "
            "comes from diverged; start from another checkpoint."
        )
    source_classes = list(meta.get("class_names") or [])
    same_classes = class_names is not None and source_classes == list(class_names)
    try:
        info = _load_strict(model, {k: (v, k) for k, v in weights.items()}, path, load_head=same_classes)
    except WeightsError as error:
        source = meta.get("model_name")
        if source and source != model_name:
            raise WeightsError(
                f"{error} The checkpoint holds a {source}, not a {model_name}: start a "
                f"{source} from it, or train {model_name} from another checkpoint."
            ) from None
        raise
    return {
        **info,
        "format": "course checkpoint",
        "source_model": meta.get("model_name"),
        "source_classes": source_classes,
        "normalization": meta.get("normalization") or "imagenet",
    }


def load_weights(
    model: nn.Module, model_name: str, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> dict:
    """Load a weights file into ``model`` (a course model built as ``model_name``), strictly.

    v1 models take torchvision's ``.pth`` state_dict, v2 models Keras' HDF5 file, and every model
    a checkpoint written by ``train`` for the same architecture (``load_course_checkpoint``). The
    classifier comes along when it has the model's shape (for a checkpoint: when it was trained on
    ``class_names``); otherwise (another number of classes, a ``_notop`` file) the model keeps its
    fresh head. Returns ``{"file", "tensors_loaded", "fresh_head", "format"}``; raises
    ``WeightsError`` naming the first tensor that does not fit."""
    key = model_key(model_name)
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"No weights file at {path}.")
    if course_checkpoint_meta(path) is not None:
        return load_course_checkpoint(model, key, path, class_names)
    kind = _file_kind(path)
    if WEIGHTS_SOURCE[key] == "torchvision":
        if kind == "hdf5":
            raise WeightsError(
                f"{path} is an HDF5 (Keras) file; {key} takes torchvision's .pth "
                f"state_dict. Keras Applications' ResNet*V2 files are for "
                f"{', '.join(KERAS_WEIGHTS_MD5)}."
            )
        tensors = {k: (v, k) for k, v in read_torch_state_dict(path).items()}
        info = _load_strict(model, tensors, path)
        return {**info, "format": "torchvision"}
    if kind != "hdf5":
        raise WeightsError(
            f"{path} is not an HDF5 file; {key} takes the Keras Applications file "
            f"{imagenet_file(key).filename} (a .pth state_dict is for the v1 "
            f"models {', '.join(TORCHVISION_ENUMS)})."
        )
    tensors = read_keras_h5(path)
    info = _load_strict(model, tensors, path)
    return {**info, "format": "keras"}
