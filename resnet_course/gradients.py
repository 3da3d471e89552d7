"""Why depth alone fails, measured: per-layer gradient norms and the degradation problem in miniature.

- ``gradient_norms`` + ``deep_mlp``: after one backward pass, how large is the gradient reaching each
  layer? In a deep sigmoid network it shrinks by orders of magnitude from the last layer to the
  first (the statistics Karpathy plots per layer in "makemore part 3"); BatchNorm or shortcuts
  ``x + F(x)`` keep it alive, because d(x + F(x))/dx = 1 + dF/dx.
- ``degradation_experiment``: plain CIFAR-style nets of growing depth, trained with the same budget,
  end with a *higher training loss* the deeper they are, while residual nets of the same depths
  do not (He et al. 2015, Fig. 1 and Fig. 6), on a small synthetic texture task that needs no
  download.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import settings
from .device import torch_threads
from .models import cifar_resnet, plain_cifar_net
from .tables import text_table

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def gradient_norms(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[tuple[str, float]]:
    """``(layer name, L2 norm of d loss / d weight)`` for every Linear/Conv layer, in registration order.

    One forward and backward pass on ``inputs``/``targets`` (cross-entropy unless ``loss_fn`` is
    given), after zeroing the gradients; the model's train/eval mode is left as it is, and the
    gradients stay in ``.grad`` for a closer look. For the nets built here registration order is
    forward order, so the first entry is the layer nearest the input.
    """
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layers to measure")
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    return [(name, 0.0 if module.weight.grad is None else module.weight.grad.norm().item()) for name, module in layers]


class MLPLayer(nn.Module):
    """``activation(batchnorm(linear(x)))``, plus ``x`` itself when ``residual`` (an identity shortcut)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "sigmoid",
        batchnorm: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError("an identity shortcut needs in_features == out_features")
        self.residual = residual
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features) if batchnorm else nn.Identity()
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.norm(self.linear(x)))
        return x + out if self.residual else out


def deep_mlp(
    depth: int,
    width: int = 64,
    in_features: int = 32,
    num_classes: int = 10,
    activation: str = "sigmoid",
    batchnorm: bool = False,
    residual: bool = False,
) -> nn.Sequential:
    """A ``depth``-layer MLP (counting Linear layers, as He et al. count weight layers) for the gradient demo.

    An input layer to ``width`` units, ``depth - 2`` hidden layers of ``width`` units (with an
    identity shortcut each when ``residual``), and a Linear output layer. PyTorch's default
    initialisation, so the demo shows what plain depth does without any further help.
    """
    if not isinstance(depth, int) or depth < 2:
        raise ValueError(f"depth counts Linear layers and must be an int >= 2, got {depth!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {tuple(ACTIVATIONS)}")
    layers = [MLPLayer(in_features, width, activation, batchnorm)]
    layers += [MLPLayer(width, width, activation, batchnorm, residual) for _ in range(depth - 2)]
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# The degradation problem in miniature (He et al. 2015, Fig. 1 and Fig. 6)
# --------------------------------------------------------------------------------------------


def synthetic_textures(
    num_images: int = 1024, num_classes: int = 10, image_size: int = 16, noise: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny, deterministic image task: the class sets a grating's orientation and frequency.

    Each image is a sine grating of a random colour and phase (the class decides only its
    orientation and spatial frequency, with a little jitter), plus Gaussian noise. Returns
    ``(images, labels)``: float images of shape (N, 3, S, S) with mean 0 and std 1, int64 labels.
    Same arguments, same tensors, on any machine; nothing to download.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=g)]
    orientations = math.pi * (torch.arange(num_classes) % 5) / 5
    frequencies = torch.where(torch.arange(num_classes) // 5 % 2 == 0, 1.5, 3.0)
    theta = orientations[labels] + 0.1 * torch.randn(num_images, generator=g)
    freq = frequencies[labels] * (1 + 0.1 * torch.randn(num_images, generator=g))
    phase = 2 * math.pi * torch.rand(num_images, generator=g)
    coords = torch.linspace(0, 1, image_size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    along = xx * theta.cos()[:, None, None] + yy * theta.sin()[:, None, None]
    wave = torch.sin(2 * math.pi * freq[:, None, None] * along + phase[:, None, None])
    colour = torch.randn(num_images, 3, generator=g)
    images = colour[:, :, None, None] * wave[:, None] + noise * torch.randn(
        num_images, 3, image_size, image_size, generator=g
    )
    images = (images - images.mean()) / images.std()
    return images, labels


def train_steps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Train with SGD (momentum 0.9, ``weight_decay``) on random minibatches drawn with ``seed``;
    returns per-step training loss and accuracy. The demos' one small training loop (the full
    one, with devices, precision and checkpoints, is ``training.fit``). The learning rate stays ``lr``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    model.train()
    losses, accuracies = [], []
    for _ in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=g)
        logits = model(images[index])
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accuracies.append((logits.argmax(1) == labels[index]).float().mean().item())
    return losses, accuracies


def degradation_experiment(
    depths: Sequence[int] | None = None,
    residual: Iterable[bool] = (False, True),
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 0.03,
    image_size: int = 16,
    num_images: int = 1024,
    seed: int = 0,
    threads: int | None = 1,
    verbose: bool = False,
) -> list[dict]:
    """Train plain and residual CIFAR-style nets of each depth with the same budget; return their curves.

    Every run gets the same data (``synthetic_textures``), the same minibatches, optimiser (SGD,
    momentum 0.9, constant ``lr``) and number of ``steps``. ``depths`` and ``steps`` default to
    the course settings (``config.settings()``: degradation_depths and demo_steps). One record per
    run: ``depth``, ``residual``, ``name``, ``params``, ``train_loss``/``train_acc`` (one value per
    step), ``final_loss``/``final_acc`` (mean over the last tenth of the steps) and ``seconds``.
    The nets are tiny, so they train on one CPU thread by default (``threads``; None keeps
    PyTorch's setting): more threads barely help at this size and fight with whatever else runs
    on the machine. Expect what He et al. 2015 show in Fig. 1 and 6: the deeper plain nets end
    with a higher training loss; the residual nets of the same depths do not.
    """
    if depths is None:
        depths = settings().degradation_depths
    if steps is None:
        steps = settings().demo_steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    images, labels = synthetic_textures(num_images, image_size=image_size, seed=seed)
    with torch_threads(threads):
        return _train_each(depths, residual, images, labels, steps, batch_size, lr, seed, verbose)


def _train_each(depths, residual, images, labels, steps, batch_size, lr, seed, verbose) -> list[dict]:
    last = max(steps // 10, 1)
    records = []
    for is_residual in residual:
        for depth in depths:
            torch.manual_seed(seed)
            model = cifar_resnet(depth) if is_residual else plain_cifar_net(depth)
            start = time.perf_counter()
            losses, accuracies = train_steps(model, images, labels, steps, batch_size, lr, seed)
            record = {
                "depth": depth,
                "residual": bool(is_residual),
                "name": f"{'resnet' if is_residual else 'plain'}-{depth}",
                "params": sum(p.numel() for p in model.parameters()),
                "train_loss": losses,
                "train_acc": accuracies,
                "final_loss": sum(losses[-last:]) / last,
                "final_acc": sum(accuracies[-last:]) / last,
                "seconds": time.perf_counter() - start,
            }
            records.append(record)
            if verbose:
                print(
                    f"{record['name']:>10}: final train loss {record['final_loss']:.3f}, "
                    f"accuracy {record['final_acc']:.2f} ({record['seconds']:.0f} s)"
                )
    return records


def degradation_table(records: Sequence[dict]) -> str:
    """Final training loss (and accuracy) per depth, plain beside residual: the numbers behind Fig. 1."""
    by_run = {(r["depth"], r["residual"]): r for r in records}
    depths = sorted({r["depth"] for r in records})

    def cell(record: dict | None) -> str:
        return "-" if record is None else f"{record['final_loss']:.3f} ({record['final_acc']:.0%})"

    rows = [[d, cell(by_run.get((d, False))), cell(by_run.get((d, True)))] for d in depths]
    return text_table(
        ["depth", "plain: loss (acc)", "residual: loss (acc)"], rows, right=[True] * 3, widths=[5, 18, 20], rule=False
    )
