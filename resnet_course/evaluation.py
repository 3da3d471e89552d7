"""Evaluation: accuracy, loss, the confusion matrix, per-class precision and recall, top-k
accuracy, a trained model read back from the checkpoint ``training.fit`` wrote (``load_model``),
predictions for single image files, and a mean-colour baseline that says how much of a dataset
colour alone gives away.

Everything is computed from fp32 logits collected once (``collect_predictions``), so the numbers
are the same whichever precision the forward pass ran in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .birds import CLASS_NAMES
from .checkpoints import CheckpointError, meta_problem, read_checkpoint
from .config import printable_path
from .data import scan_bird_folder, split_samples
from .device import ComputeSetup, autocast, place_batch, resolve_setup
from .images import eval_transform, load_rgb
from .models import MODEL_NAMES, get_model

__all__ = [
    "collect_predictions",
    "confusion_matrix",
    "per_class_metrics",
    "topk_accuracy",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "predict",
    "mean_colours",
    "mean_colour_baseline",
]


@torch.no_grad()
def collect_predictions(
    model: nn.Module, loader, precision: str | ComputeSetup = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` (in eval mode, moved to the chosen device) over ``loader``; returns
    ``(logits, targets)`` on the CPU, logits as fp32 of shape (N, num_classes)."""
    setup = resolve_setup(precision)
    model.to(setup.device).eval()
    all_logits, all_targets = [], []
    for images, targets in loader:
        with autocast(setup):
            logits = model(place_batch(images, setup))
        all_logits.append(logits.float().cpu())
        all_targets.append(torch.as_tensor(targets).cpu())
    if not all_logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_targets).long()


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts; row = true class, column = predicted class."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_metrics(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Precision (of the images predicted as a class, the share that are it), recall (of the
    images of a class, the share found) and support (images of the class) from a confusion
    matrix. A class never predicted gets precision 0 (scikit-learn's convention)."""
    confusion = confusion.double()
    correct = confusion.diag()
    predicted, support = confusion.sum(0), confusion.sum(1)
    precision = torch.where(predicted > 0, correct / predicted.clamp(min=1), torch.zeros_like(correct))
    recall = torch.where(support > 0, correct / support.clamp(min=1), torch.zeros_like(correct))
    return {"precision": precision.tolist(), "recall": recall.tolist(), "support": [int(s) for s in support.tolist()]}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1,)) -> dict[int, float]:
    """For each k, the share of images whose true class is among the k highest-scoring ones."""
    num_classes = logits.shape[1]
    for k in topk:
        if not 1 <= k <= num_classes:
            raise ValueError(f"top-k needs 1 <= k <= {num_classes} classes, got k={k}")
    if len(targets) == 0:
        return {k: float("nan") for k in topk}
    ranked = logits.topk(max(topk), dim=1).indices
    hits = ranked == targets[:, None]
    return {k: hits[:, :k].any(1).double().mean().item() for k in topk}


def evaluate(
    model: nn.Module,
    loader,
    class_names: Sequence[str] | None = None,
    topk: Sequence[int] = (1,),
    precision: str | ComputeSetup = "auto",
) -> dict:
    """Accuracy, mean cross-entropy loss, confusion matrix (rows true, columns predicted, as
    lists), per-class precision/recall/support and top-k accuracy of ``model`` on ``loader``.

    Returns a dict with keys ``accuracy``, ``loss``, ``num_images``, ``class_names``,
    ``confusion``, ``per_class`` (a list of dicts: class, precision, recall, support) and
    ``topk`` ({k: accuracy}).
    """
    logits, targets = collect_predictions(model, loader, precision)
    num_classes = logits.shape[1] if len(targets) else len(class_names or [])
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} outputs")
    confusion = confusion_matrix(targets, logits.argmax(1), num_classes)
    metrics = per_class_metrics(confusion)
    return {
        "accuracy": confusion.diag().sum().item() / max(len(targets), 1),
        "loss": nn.functional.cross_entropy(logits, targets).item() if len(targets) else float("nan"),
        "num_images": len(targets),
        "class_names": names,
        "confusion": confusion.tolist(),
        "per_class": [
            {"class": name, "precision": p, "recall": r, "support": s}
            for name, p, r, s in zip(names, metrics["precision"], metrics["recall"], metrics["support"])
        ],
        "topk": topk_accuracy(logits, targets, topk) if num_classes else {},
    }


# --------------------------------------------------------------------------------------------
# A trained model, read back from its checkpoint
# --------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by ``fit`` with ``weights_only=True`` (loading one cannot run
    code). A file that is not a course checkpoint raises ``CheckpointError`` saying what it is not."""
    return read_checkpoint(path, map_location=map_location)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was trained as (``models.get_model``), load its weights and
    return ``(model in eval mode, meta)``; ``meta`` holds model_name, num_classes, class_names,
    image_size and normalization (the input scaling, also set as ``model.input_normalization``).
    The meta is checked before anything is built from it (``checkpoints.meta_problem``)."""
    checkpoint = load_checkpoint(path)
    problem = meta_problem(checkpoint.get("meta"), MODEL_NAMES)
    if problem:
        raise CheckpointError(
            f"{path} cannot be used: {problem}. Build the model yourself and load "
            "load_checkpoint(path)['model'] into it, or use the checkpoint train wrote."
        )
    meta = dict(checkpoint["meta"])
    bad = [
        name
        for name, tensor in checkpoint["model"].items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise CheckpointError(
            f"{path} holds weights that are not finite numbers (NaN or infinite, in "
            f"{bad[0]} and {len(bad) - 1} more): the training it comes from diverged."
        )
    model = get_model(meta["model_name"], num_classes=meta["num_classes"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        lines = str(error).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(error)
        raise CheckpointError(
            f"{path} says it holds a {meta['model_name']} with {meta['num_classes']} "
            f"classes, but its weights do not fit one ({first})"
        ) from None
    model.input_normalization = meta.get("normalization") or "imagenet"
    return model.to(device).eval(), meta


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Iterable | str | os.PathLike | Image.Image,
    class_names: Sequence[str],
    image_size: int = 224,
    topk: int = 1,
    precision: str | ComputeSetup = "auto",
    batch_size: int = 16,
    normalization: str | None = None,
) -> list[dict]:
    """Classify image files or PIL images of any size and mode (resized and centre-cropped to
    ``image_size`` like validation images). Returns one dict per image: ``image`` (the file name,
    or "image 0", ... for PIL images), ``label`` (predicted class), ``probability`` and ``topk``
    (a list of (class, probability) pairs, best first). ``normalization`` defaults to the model's
    ``input_normalization`` (set by ``get_model`` and ``load_model``), else "imagenet"."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    images = list(images)
    topk = min(topk, len(class_names))
    transform = eval_transform(image_size, normalization or getattr(model, "input_normalization", "imagenet"))
    setup = resolve_setup(precision)
    model.to(setup.device).eval()
    results = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = torch.stack([transform(load_rgb(image)) for image in chunk])
        with autocast(setup):
            logits = model(place_batch(batch, setup))
        probabilities = logits.float().softmax(1).cpu()
        best = probabilities.topk(topk, dim=1)
        for offset, (image, values, indices) in enumerate(zip(chunk, best.values, best.indices)):
            name = printable_path(image) if isinstance(image, (str, os.PathLike)) else f"image {start + offset}"
            ranked = [(class_names[i], p) for i, p in zip(indices.tolist(), values.tolist())]
            results.append({"image": name, "label": ranked[0][0], "probability": ranked[0][1], "topk": ranked})
    return results


# --------------------------------------------------------------------------------------------
# How hard is the dataset? A mean-colour baseline
# --------------------------------------------------------------------------------------------


def mean_colours(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Each image's mean RGB in [0, 1], shape (N, 3)."""
    return np.stack([np.asarray(load_rgb(p), np.float32).reshape(-1, 3).mean(0) / 255 for p in paths])


def mean_colour_baseline(root: str | os.PathLike, val_split: float = 0.2, seed: int = 123) -> dict[str, float]:
    """Validation accuracy of classifiers that see only each image's mean colour, on the course split.

    Returns accuracies for a nearest-centroid classifier, softmax (logistic) regression and 5-nearest
    neighbours, all trained on the training split. A stand-in that these classify well would let a
    network score without learning what a bird looks like.
    """
    train, val = split_samples(scan_bird_folder(root), val_split=val_split, seed=seed)
    x_train, x_val = mean_colours([p for p, _ in train]), mean_colours([p for p, _ in val])
    y_train, y_val = np.array([y for _, y in train]), np.array([y for _, y in val])
    mu, sigma = x_train.mean(0), x_train.std(0) + 1e-8
    x_train, x_val = (x_train - mu) / sigma, (x_val - mu) / sigma
    classes = np.arange(len(CLASS_NAMES))

    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    nearest = ((x_val[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)

    weights, bias = np.zeros((3, len(classes))), np.zeros(len(classes))
    onehot = np.eye(len(classes))[y_train]
    for _ in range(2000):  # plain gradient descent on the softmax cross-entropy
        logits = x_train @ weights + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - onehot) / len(x_train)
        weights -= 0.5 * x_train.T @ grad
        bias -= 0.5 * grad.sum(0)
    logistic = (x_val @ weights + bias).argmax(1)

    distances = ((x_val[:, None, :] - x_train[None]) ** 2).sum(-1)
    neighbours = y_train[np.argsort(distances, axis=1, kind="stable")[:, :5]]
    knn = np.array([np.bincount(row, minlength=len(classes)).argmax() for row in neighbours])

    return {
        "nearest_centroid": float((nearest == y_val).mean()),
        "logistic_regression": float((logistic == y_val).mean()),
        "knn5": float((knn == y_val).mean()),
    }
