"""Notebook 09's experiment: what a pretrained backbone buys, with all the labels and with few.

``pretrain`` trains a model on the drawn pretraining set (``pretraining.make_pretraining_set``,
the course's "ImageNet in miniature") with the default recipe, through ``runs.train_or_load``,
so a finished run is loaded, not trained again. ``label_efficiency`` then trains on the birds,
at each training fraction and seed, three ways on the same validation split:

- **from scratch**: random weights, the default recipe;
- **linear probe**: the pretrained backbone frozen, only the head learns, on features computed
  once (``finetune.linear_probe``);
- **fine-tuning**: every weight learns from the pretrained start, with a peak learning rate ten
  times smaller (``FINETUNE_LR``) and the same epochs as from scratch.

Each run is a row: ``method``, ``train_fraction``, ``seed``, ``train_images``, ``val_acc`` (the
last epoch's), ``best_val_acc``, ``seconds``, the ``history`` and the run's ``checkpoint`` (None
for the probe). ``summary`` gives the mean and range over seeds, ``gains`` what one method adds
to another seed by seed. ``benchmarks/bench_transfer.py`` records the same runs as JSON lines.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from . import config
from .data import find_bird_data, load_birds
from .finetune import freeze_backbone, linear_probe
from .models import get_model
from .pretrained import normalization_for
from .pretraining import DEFAULT_SPECIES, make_pretraining_set
from .recipe import DEFAULT_LR, DEFAULT_OPTIMIZER
from .runs import TrainedRun, train_or_load
from .training import set_seed

__all__ = [
    "METHODS",
    "FRACTIONS",
    "FINETUNE_LR",
    "PROBE_LR",
    "pretraining_folder",
    "pretrain",
    "bird_loaders",
    "label_efficiency",
    "summary",
    "gains",
    "summary_table",
]

METHODS = ("from scratch", "linear probe", "fine-tuning")
#: Fractions of the training split: all of it, a quarter, a tenth (452, 112 and 45 bird images).
FRACTIONS = (1.0, 0.25, 0.1)
#: Fine-tuning's peak learning rate: a tenth of the default, so the first steps with a fresh head
#: do not wreck the pretrained features (the usual choice; not tuned on the validation images).
FINETUNE_LR = DEFAULT_LR[DEFAULT_OPTIMIZER] / 10
#: The linear probe's learning rate (Adam on the head, ``finetune.linear_probe``'s default).
PROBE_LR = 1e-3


def pretraining_folder(species: int, per_species: int, seed: int = 0) -> Path:
    """Where the drawn set with these options lives: ``data/pretraining_<N>x<K>_seed<S>``, one
    folder per set, so fast mode's small set never replaces the full one."""
    return config.REPO_ROOT / "data" / f"pretraining_{species}x{per_species}_seed{seed}"


def pretrain(
    model_name: str = "resnet50",
    species: int = DEFAULT_SPECIES,
    per_species: int | None = None,
    seed: int = 0,
    progress: bool = True,
    folder: Path | None = None,
) -> TrainedRun:
    """Draw the pretraining set (or find it drawn) and train ``model_name`` on it for
    ``settings().pretraining_epochs`` epochs with the default recipe, or load that finished run.
    ``per_species`` defaults to ``settings().pretraining_per_species``; the set is drawn into
    ``folder`` (default ``pretraining_folder(...)``)."""
    settings = config.settings()
    per_species = per_species or settings.pretraining_per_species
    folder = pretraining_folder(species, per_species, seed) if folder is None else folder
    root = make_pretraining_set(folder, species, per_species, seed)
    train_loader, val_loader, class_names = load_birds(
        root, image_size=settings.image_size, batch_size=settings.batch_size
    )
    return train_or_load(
        f"pretrain-{model_name}-{species}x{per_species}-seed{seed}",
        model_name,
        epochs=settings.pretraining_epochs,
        train_loader=train_loader,
        val_loader=val_loader,
        class_names=class_names,
        progress=progress,
    )


def _row(
    method: str, fraction: float, seed: int, train_loader, history: Sequence[dict], checkpoint: Path | None = None
) -> dict:
    return {
        "method": method,
        "train_fraction": fraction,
        "seed": seed,
        "train_images": len(train_loader.dataset),
        "val_acc": history[-1]["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history),
        "seconds": sum(r["seconds"] for r in history),
        "history": list(history),
        "checkpoint": checkpoint,
    }


def bird_loaders(model_name: str, weights: Path | None, fraction: float, root: Path | None = None):
    """``load_birds`` at the settings' image and batch size, with ``fraction`` of the training
    split and the input scaling ``weights`` expect (None: from scratch); the validation split is
    the same whatever the fraction and scaling. ``root`` defaults to ``find_bird_data``'s."""
    settings = config.settings()
    root = find_bird_data(verbose=False)[0] if root is None else root
    return load_birds(
        root,
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        normalization=normalization_for(model_name, weights),
        train_fraction=fraction,
    )


def label_efficiency(
    weights: Path,
    source: str,
    model_name: str = "resnet50",
    fractions: Sequence[float] = FRACTIONS,
    seeds: Sequence[int] | None = None,
    root: Path | None = None,
    progress: bool = False,
) -> list[dict]:
    """From scratch, linear probe and fine-tuning from ``weights`` at each fraction of the bird
    training split and each seed (default ``range(settings().transfer_seeds)``), every run
    ``settings().transfer_epochs`` epochs (15 at the default settings; the probe as many head epochs), on the
    same validation split. ``source`` names the weights in the run folders' names ("drawn",
    "imagenet"), so runs from other weights are never mixed up. Finished runs are loaded."""
    settings = config.settings()
    seeds = range(settings.transfer_seeds) if seeds is None else seeds
    root = find_bird_data()[0] if root is None else root
    rows = []
    for fraction in fractions:
        for seed in seeds:
            percent = f"{fraction:.0%}"
            train, val, class_names = bird_loaders(model_name, None, fraction, root)
            run = train_or_load(
                f"transfer-{model_name}-scratch-{percent}-seed{seed}",
                model_name,
                epochs=settings.transfer_epochs,
                seed=seed,
                train_loader=train,
                val_loader=val,
                class_names=class_names,
                progress=progress,
                train_fraction=fraction,
            )
            rows.append(_row(METHODS[0], fraction, seed, train, run.history, run.checkpoint))
            train, val, class_names = bird_loaders(model_name, weights, fraction, root)
            set_seed(seed)
            model = freeze_backbone(
                get_model(model_name, num_classes=len(class_names), weights=weights, class_names=class_names)
            )
            history = linear_probe(model, train, val, epochs=settings.transfer_epochs, lr=PROBE_LR, seed=seed)
            rows.append(_row(METHODS[1], fraction, seed, train, history))
            run = train_or_load(
                f"transfer-{model_name}-finetune-{source}-{percent}-seed{seed}",
                model_name,
                epochs=settings.transfer_epochs,
                lr=FINETUNE_LR,
                seed=seed,
                weights=weights,
                train_loader=train,
                val_loader=val,
                class_names=class_names,
                progress=progress,
                train_fraction=fraction,
            )
            rows.append(_row(METHODS[2], fraction, seed, train, run.history, run.checkpoint))
    return rows


def summary(rows: Sequence[dict]) -> list[dict]:
    """Per method and fraction: the seeds' mean, lowest and highest final validation accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["train_fraction"]), []).append(row)
    return [
        {
            "method": method,
            "train_fraction": fraction,
            "train_images": runs[0]["train_images"],
            "seeds": len(runs),
            "mean": statistics.mean(r["val_acc"] for r in runs),
            "low": min(r["val_acc"] for r in runs),
            "high": max(r["val_acc"] for r in runs),
        }
        for (method, fraction), runs in groups.items()
    ]


def gains(rows: Sequence[dict], method: str = METHODS[2], baseline: str = METHODS[0]) -> dict[float, list[float]]:
    """Per training fraction, ``method``'s final validation accuracy minus ``baseline``'s, seed by
    seed. Every seed trains on the same subset (``load_birds`` draws it with its own split seed)
    and validates on the same split; the seed sets the initial head (and, from scratch, every
    weight), the order of the batches and the augmentation."""
    found: dict[tuple, float] = {(r["method"], r["train_fraction"], r["seed"]): r["val_acc"] for r in rows}
    result: dict[float, list[float]] = {}
    for (name, fraction, seed), acc in found.items():
        if name == method and (baseline, fraction, seed) in found:
            result.setdefault(fraction, []).append(acc - found[baseline, fraction, seed])
    return result


def summary_table(rows: Sequence[dict]) -> str:
    """``summary`` as text: one line per fraction, one column per method (mean, range over seeds)."""
    cells = {(s["train_fraction"], s["method"]): s for s in summary(rows)}
    fractions = sorted({f for f, _ in cells}, reverse=True)
    lines = [f"{'training images':18}" + "".join(f"{m:>26}" for m in METHODS)]
    for fraction in fractions:
        first = next(cells[fraction, m] for m in METHODS if (fraction, m) in cells)
        text = f"{first['train_images']:>4} ({fraction:>4.0%})     "
        for method in METHODS:
            s = cells.get((fraction, method))
            text += f"{'':>26}" if s is None else f"{s['mean']:>10.1%} ({s['low']:.1%}-{s['high']:.1%})"
        lines.append(text)
    return "\n".join(lines)
