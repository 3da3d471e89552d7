"""Training runs a notebook can reopen: "load the checkpoint if it exists, else train".

``train_or_load("resnet50")`` trains ResNet-50 on the bird data at the course settings
(``config.settings()``) and keeps the run in ``config.run_dir("resnet50")``. Called again (later
in the same notebook, in notebook 07 or 08, after a restart or an interrupt) it loads that run
instead of training again, or finishes it if it was interrupted (``training.fit`` with
``resume=True``). The checkpoint records what the run was trained with, and ``fit`` checks it
before anything is written, so a folder trained on other data or other settings is never
silently reused.

The helpers below turn a finished run into what notebooks 06 and 07 show: a table per epoch, a
comparison of runs, a per-class table, and a sample of validation predictions for a grid.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import config
from .birds import CLASS_NAMES
from .checkpoints import BEST_NAME, CHECKPOINT_NAME, HISTORY_NAME, best_record, read_resumable
from .data import find_bird_data, load_birds
from .device import place_batch, place_model, resolve_setup
from .evaluation import collect_predictions
from .models import get_model
from .pretrained import normalization_for
from .recipe import DEFAULT_OPTIMIZER, DEFAULT_WARMUP_EPOCHS
from .runfolder import read_json
from .tables import text_table
from .training import fit, set_seed, train_step

__all__ = [
    "TrainedRun",
    "train_or_load",
    "epoch_table",
    "compare_runs",
    "per_class_table",
    "validation_predictions",
    "seconds_per_step",
]


@dataclass
class TrainedRun:
    """A training run, trained or loaded: the model (eval mode, last epoch's weights), its history
    (one dict per epoch, as ``fit`` returns), where its files are, and the loaders it used."""

    name: str
    model_name: str
    model: nn.Module
    history: list[dict]
    out_dir: Path
    class_names: list[str]
    image_size: int
    train_loader: object
    val_loader: object
    epochs_trained_now: int  # 0 when the finished run was only loaded

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: the last epoch, with everything needed to resume."""
        return self.out_dir / CHECKPOINT_NAME

    @property
    def best_checkpoint(self) -> Path:
        """``best.pt``: the weights of the epoch with the best validation accuracy."""
        return self.out_dir / BEST_NAME


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _finished_epochs(out_dir: Path) -> int:
    """Epochs the run in ``out_dir`` has finished (0 without checkpoint.pt), for the message
    before ``fit``: history.json's count, or the checkpoint's own where history.json is damaged
    (``fit`` then repairs it). The checkpoint is otherwise left for ``fit`` to read, once."""
    if not (out_dir / CHECKPOINT_NAME).is_file():
        return 0
    history = read_json(out_dir / HISTORY_NAME)
    if isinstance(history, list):
        return len(history)
    return len(read_resumable(out_dir / CHECKPOINT_NAME)["history"])


def _bird_loaders(model_name: str, weights, image_size: int, batch_size: int, train_fraction: float) -> tuple:
    """The bird data (``find_bird_data`` says which it is) split by ``load_birds``, in the input
    scaling the starting weights expect: (train loader, validation loader, class names)."""
    root, _ = find_bird_data()
    return load_birds(
        root,
        image_size=image_size,
        batch_size=batch_size,
        normalization=normalization_for(model_name, weights),
        train_fraction=train_fraction,
    )


def _what_happens(model_name: str, out_dir: Path, done: int, epochs: int) -> str:
    """The line ``train_or_load`` prints first: whether it loads, continues or starts the run."""
    where = config.display_path(out_dir)
    if done >= epochs:
        return f"Loading the finished run in {where} ({_epochs(done)}); delete that folder to train afresh."
    if done:
        return f"Continuing the run in {where}: {done} of {epochs} epochs were done."
    return f"Training {model_name} for {_epochs(epochs)} into {where}."


def train_or_load(
    name: str,
    model_name: str | None = None,
    *,
    epochs: int | None = None,
    optimizer: str = DEFAULT_OPTIMIZER,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: float = DEFAULT_WARMUP_EPOCHS,
    zero_init_residual: bool = True,
    label_smoothing: float = 0.0,
    seed: int = 0,
    train_loader=None,
    val_loader=None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    progress: bool = True,
    precision="auto",
    weights=None,
    train_fraction: float = 1.0,
) -> TrainedRun:
    """Train ``model_name`` (default: ``name``) into ``config.run_dir(name)``, or load it if that
    run is finished, or finish it if it was interrupted. Returns a :class:`TrainedRun`.

    Defaults come from ``config.settings()`` (epochs, image size, batch size); without loaders the
    bird data is found (``find_bird_data``, which says which data it is) and split with
    ``load_birds``. The recipe is ``fit``'s default (AdamW, one epoch of warm-up, cosine decay)
    on a model built with ``zero_init_residual=True``; ``lr=None`` and ``weight_decay=None`` mean
    the optimiser's defaults (``recipe.DEFAULT_LR``, ``DEFAULT_WEIGHT_DECAY``). The weights are
    initialised with ``set_seed(seed)`` and ``fit`` reseeds every epoch, so a run repeats on the
    same machine with the same number of CPU threads (with another thread count the
    floating-point sums are split, and so rounded, differently, and training amplifies that).
    A run is never shortened: asking for fewer epochs than are saved returns the saved run. A
    folder whose checkpoint records another recipe is an error from ``fit`` naming every
    difference, raised before anything in the folder is written.
    ``weights`` (None, "imagenet" or a file, see ``models.get_model``) starts from pretrained
    weights (an ImageNet file or a checkpoint ``train`` wrote), and the loaders it makes then use the
    input scaling those weights expect; ``train_fraction`` < 1 trains on a stratified subset of
    the training split (``data.training_subset``), the validation split unchanged.
    """
    defaults = config.settings()
    model_name = model_name or name
    epochs = defaults.epochs if epochs is None else epochs
    image_size = image_size or defaults.image_size
    if train_loader is None or val_loader is None:
        train_loader, val_loader, class_names = _bird_loaders(
            model_name, weights, image_size, defaults.batch_size, train_fraction
        )
    class_names = list(class_names or CLASS_NAMES)
    out_dir = config.run_dir(name)
    done = _finished_epochs(out_dir)
    print(_what_happens(model_name, out_dir, done, epochs))
    set_seed(seed)
    model = get_model(
        model_name,
        num_classes=len(class_names),
        weights=weights,
        zero_init_residual=zero_init_residual,
        class_names=class_names,
    )
    history = fit(
        model,
        train_loader,
        val_loader,
        max(epochs, done),
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        out_dir=out_dir,
        resume=True,
        progress=progress and done < epochs,
        precision=precision,
        seed=seed,
        class_names=class_names,
        model_name=model_name,
        image_size=image_size,
    )
    return TrainedRun(
        name,
        model_name,
        model,
        history,
        out_dir,
        class_names,
        image_size,
        train_loader,
        val_loader,
        len(history) - done,
    )


# --------------------------------------------------------------------------------------------
# Tables and samples for the notebooks
# --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def epoch_table(history: Sequence[dict]) -> str:
    """One line per epoch: training and validation loss and accuracy, the learning rate at the
    epoch's first step (it changes every step: warm-up, then cosine), seconds."""
    rows = [
        [
            r["epoch"],
            f"{r['train_loss']:.3f}",
            _percent(r["train_acc"]),
            "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}",
            _percent(r["val_acc"]),
            f"{r['lr']:.2g}",
            f"{r['seconds']:.0f}",
        ]
        for r in history
    ]
    return text_table(["epoch", "train loss", "train acc", "val loss", "val acc", "first lr", "seconds"], rows)


def _run_summary(history: Sequence[dict]) -> dict:
    scored = [r for r in history if r.get("val_acc") is not None]
    best = best_record(history)
    return {
        "epochs": len(history),
        "final_val_acc": scored[-1]["val_acc"] if scored else None,
        "best_val_acc": best["val_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "seconds_per_epoch": sum(r["seconds"] for r in history) / max(len(history), 1),
    }


def compare_runs(histories: Mapping[str, Sequence[dict]]) -> str:
    """A table of runs side by side: epochs, final and best validation accuracy (with its epoch)
    and mean seconds per epoch. Accepts the histories ``fit`` returns, keyed by a label."""
    rows = []
    for label, history in histories.items():
        s = _run_summary(history)
        best = "-" if s["best_val_acc"] is None else f"{s['best_val_acc']:.1%} (epoch {s['best_epoch']})"
        rows.append([label, s["epochs"], _percent(s["final_val_acc"]), best, f"{s['seconds_per_epoch']:.0f}"])
    return text_table(["run", "epochs", "final val acc", "best val acc", "seconds/epoch"], rows)


def per_class_table(report: dict) -> str:
    """Precision, recall and number of images per class, from ``evaluation.evaluate``'s report."""
    rows = [[c["class"], f"{c['precision']:.2f}", f"{c['recall']:.2f}", c["support"]] for c in report["per_class"]]
    return text_table(["class", "precision", "recall", "images"], rows)


@torch.no_grad()
def validation_predictions(
    model: nn.Module, loader, n: int = 12, precision="auto"
) -> tuple[torch.Tensor, list[int], list[int], torch.Tensor]:
    """``n`` validation images spread evenly over ``loader``'s dataset (so every class shows up;
    the same images every time), with true labels, predicted labels and softmax probabilities:
    the arguments ``plots.plot_prediction_grid(images, true, predicted, class_names, probs)`` takes."""
    dataset = loader.dataset
    if len(dataset) == 0:
        raise ValueError("the validation set is empty")
    n = min(n, len(dataset))
    indices = [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)]
    images, labels = zip(*(dataset[i] for i in indices))
    batch = [(torch.stack(images), torch.tensor(labels))]
    logits, targets = collect_predictions(model, batch, precision=precision)
    return torch.stack(images), targets.tolist(), logits.argmax(1).tolist(), logits.softmax(1)


def seconds_per_step(
    models: Mapping[str, nn.Module], loader, steps: int = 5, warmup: int = 1, precision="auto"
) -> dict[str, float]:
    """Median wall-clock seconds of one training step (``training.train_step``, here with plain
    SGD: forward, backward, update) for each model, on the same batches from ``loader``, measured
    on copies so the models stay as they are.

    The models take turns step by step, so a change in the machine's load hits them alike: a fair
    comparison of their cost, which the seconds in histories recorded at different times are not.
    The median ignores a step slowed down by something else running.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    setup = resolve_setup(precision)
    twins, optimizers = {}, {}
    for label, model in models.items():
        twins[label] = place_model(copy.deepcopy(model), setup).train()
        optimizers[label] = torch.optim.SGD(twins[label].parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.grad_scaler)
    batches = iter(loader)
    timings: dict[str, list[float]] = {label: [] for label in models}
    for step in range(warmup + steps):
        try:
            images, targets = next(batches)
        except StopIteration:
            raise ValueError(f"the loader has fewer than {warmup + steps} batches") from None
        images, targets = place_batch(images, setup), targets.to(setup.device)
        for label, twin in twins.items():
            start = time.perf_counter()
            train_step(twin, images, targets, optimizers[label], scaler, nn.functional.cross_entropy, setup)
            if setup.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                timings[label].append(time.perf_counter() - start)
    return {label: statistics.median(times) for label, times in timings.items()}
