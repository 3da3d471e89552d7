"""Using pretrained weights on the birds: a frozen backbone, features computed once, the fast
linear probe, and random stand-in weights for machines without the ImageNet files.

A linear probe trains only the classifier on top of a frozen, pretrained backbone. The backbone's
output for an image then never changes, so ``linear_probe`` computes it once and trains the head
on the stored vectors: seconds instead of minutes per epoch on a CPU
(``benchmarks/bench_linear_probe.py``). Full fine-tuning is ``training.fit`` on a model built with
``models.get_model(name, num_classes, weights=...)``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import config
from .data import BirdDataset
from .evaluation import collect_predictions
from .imagenet import find_weights, imagenet_file, model_key
from .images import eval_transform
from .models import V1_NAMES, get_model, like_a_trained_net
from .pretrained import write_keras_h5

__all__ = [
    "head_of",
    "freeze_backbone",
    "extract_features",
    "linear_probe",
    "save_standin_weights",
    "weights_or_standin",
]


def head_of(model: nn.Module) -> nn.Linear:
    """The classifier of a course model (``fc``), the only part a fresh head replaces."""
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear classifier `fc`")
    return head


def _train_with_frozen_backbone(self: nn.Module, mode: bool = True) -> nn.Module:
    nn.Module.train(self, mode)
    for module in self.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.weight.requires_grad:
            module.eval()  # a frozen BN keeps its pretrained statistics
    return self


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Train only the head: every parameter but ``fc``'s stops needing gradients, and the
    backbone's BatchNorm layers stay in eval mode even in ``model.train()``, so their running
    statistics keep the pretrained values. Returns ``model`` (changed in place)."""
    head = head_of(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    model.train = _train_with_frozen_backbone.__get__(model)  # instance method: survives fit's model.train()
    model.backbone_frozen = True
    return model.train(model.training)


@torch.no_grad()
def extract_features(model: nn.Module, loader, precision="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features the head sees (``(N, 2048)`` for ResNet-50) and the labels, computed
    once in eval mode: the model's own forward pass with ``fc`` swapped for an identity."""
    head = head_of(model)
    model.fc = nn.Identity()
    try:
        features, targets = collect_predictions(model, loader, precision=precision)
    finally:
        model.fc = head
    return features, targets


def _feature_loader(loader, image_size: int, normalization: str):
    """The same images as ``loader`` but with the deterministic validation transform, so each
    image has one feature vector to cache (a linear probe does not augment)."""

    dataset = loader.dataset
    if not hasattr(dataset, "samples"):
        return loader
    plain = BirdDataset(
        dataset.samples, eval_transform(image_size, normalization=normalization), class_names=dataset.classes
    )
    return DataLoader(plain, batch_size=loader.batch_size, shuffle=False, num_workers=0)


def linear_probe(
    model: nn.Module,
    train_loader,
    val_loader,
    epochs: int,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    image_size: int | None = None,
    normalization: str | None = None,
    seed: int = 0,
    precision="auto",
) -> list[dict]:
    """Fit only ``model.fc`` on cached features: the frozen backbone sees each image once
    (validation transform, no augmentation), then the head trains for ``epochs`` epochs of
    mini-batches (the loader's batch size, Adam) on the stored vectors, which takes seconds.

    Returns a history like ``training.fit``'s (epoch, train_loss, train_acc, val_loss, val_acc,
    lr, seconds); epoch 1's seconds include computing the features, which it also records
    separately as ``feature_seconds``. ``model.fc`` holds the
    trained head afterwards and the model is in eval mode."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    norm = normalization or getattr(model, "input_normalization", "imagenet")
    start = time.perf_counter()
    # the image side, read off one validation batch (no augmentation, no random numbers drawn)
    size = image_size or int(next(iter(val_loader if val_loader is not None else train_loader))[0].shape[-1])
    train_x, train_y = extract_features(model, _feature_loader(train_loader, size, norm), precision)
    val_x, val_y = extract_features(model, val_loader, precision) if val_loader is not None else (None, None)
    feature_seconds = time.perf_counter() - start

    device = next(model.parameters()).device
    head = head_of(model).cpu().float()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    batch = getattr(train_loader, "batch_size", None) or 32
    history = []
    for epoch in range(epochs):
        tick = time.perf_counter()
        head.train()
        order = torch.randperm(len(train_y), generator=generator)
        loss_sum = correct = 0.0
        for i in range(0, len(order), batch):
            index = order[i : i + batch]
            logits = head(train_x[index])
            loss = criterion(logits, train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == train_y[index]).sum().item()
        head.eval()
        val_loss = val_acc = None
        if val_x is not None and len(val_y):
            with torch.no_grad():
                val_logits = head(val_x)
            val_loss = nn.functional.cross_entropy(val_logits, val_y).item()
            val_acc = (val_logits.argmax(1) == val_y).double().mean().item()
        seconds = time.perf_counter() - tick + (feature_seconds if epoch == 0 else 0.0)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / len(train_y),
                "train_acc": correct / len(train_y),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
                "seconds": seconds,
            }
        )
    history[0]["feature_seconds"] = feature_seconds
    head.to(device)
    model.eval()
    return history


def save_standin_weights(model_name: str, path: str | os.PathLike, seed: int = 0, include_top: bool = True) -> Path:
    """Write *random* weights for ``model_name`` in the published file's format (a torchvision
    state_dict for v1, Keras' HDF5 for v2), with BN statistics and biases like a trained net's.

    Not ImageNet weights: where the real files are absent, notebook 09 loads this file through the
    very same loader, so every cell still runs (and says plainly that its numbers mean nothing
    about pre-training)."""
    key = model_key(model_name)
    torch.manual_seed(seed)
    model = like_a_trained_net(get_model(key, num_classes=1000), seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if key in V1_NAMES:
        torch.save(model.state_dict(), path)
    else:
        write_keras_h5(model, path, include_top=include_top)
    return path


def weights_or_standin(
    model_name: str, include_top: bool = False, folder: str | os.PathLike | None = None, verbose: bool = True
) -> tuple[Path, bool]:
    """``(path, is_imagenet)``: the cached ImageNet file for ``model_name`` if there is one (never
    downloads), else random stand-in weights in the same format (``save_standin_weights``, kept in
    ``folder``, default ``runs/standin_weights``). Prints one line saying plainly which it is."""
    found = find_weights(model_name, include_top)
    if found is not None:
        if verbose:
            print(f"{model_name}: ImageNet weights found at {found}.")
        return found, True
    file = imagenet_file(model_name, include_top)
    folder = Path(folder) if folder is not None else config.RUNS_DIR / "standin_weights"
    path = folder / f"STANDIN-random-{file.filename}"
    if not path.is_file():
        save_standin_weights(model_name, path, include_top=file.include_top)
    if verbose:
        print(
            f"{model_name}: NO ImageNet weights here ({file.filename} is not in {file.path.parent}). "
            f"Using RANDOM stand-in weights in the same format instead: {config.display_path(path)}"
        )
    return path, False
