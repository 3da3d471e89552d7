"""One matplotlib figure per idea of the course.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``: a
notebook displays the returned figure (make it the cell's last expression), a script saves it
with ``fig.savefig("x.png")``. The figures are built without pyplot, so a notebook shows each
one exactly once and nothing accumulates in pyplot's figure list. Axes are labelled, titles are
plain words, and sizes are chosen to read well at notebook width.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .ablation import UNIT_LABELS, by_unit
from .images import load_rgb, to_display_image

RIGHT_COLOR = "tab:green"
WRONG_COLOR = "red"


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _figure(nrows: int = 1, ncols: int = 1, figsize=(8, 4), squeeze: bool = True):
    """A pyplot-free figure with a grid of axes and constrained layout (titles never overlap)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _grid(n: int, ncols: int, cell: float = 2.6, extra_height: float = 0.0):
    """A figure with ``n`` image axes in rows of ``ncols``; unused cells are removed."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = _figure(nrows, ncols, figsize=(cell * ncols, (cell + extra_height) * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    for ax in flat[:n]:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, flat[:n]


def _mark(ax, color: str) -> None:
    """Draw a coloured border around an image axis (used to flag mistakes)."""
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)


def plot_prediction_grid(images, true_labels, pred_labels, class_names, probs=None, ncols: int = 4) -> Figure:
    """True vs predicted class for each image; mistakes get a red title and a red border.

    ``images`` are normalized (C, H, W) tensors (a batch tensor works too) or PIL images.
    ``probs`` is optional: either the confidence of each prediction (N,) or the softmax over all
    classes (N, num_classes), from which the predicted class's probability is shown.
    """
    images = list(images)
    true_labels = [int(t) for t in true_labels]
    pred_labels = [int(p) for p in pred_labels]
    if not (len(images) == len(true_labels) == len(pred_labels)):
        raise ValueError(
            f"need one true and one predicted label per image: got {len(images)} images, "
            f"{len(true_labels)} true labels, {len(pred_labels)} predictions"
        )
    if not images:
        raise ValueError("no images to plot")
    confidence = None
    if probs is not None:
        p = torch.as_tensor(np.asarray(probs, dtype=np.float32))
        confidence = p[torch.arange(len(pred_labels)), torch.tensor(pred_labels)] if p.ndim == 2 else p
        confidence = confidence.tolist()
    fig, axes = _grid(len(images), ncols, cell=3.1, extra_height=0.45)
    n_wrong = 0
    for i, ax in enumerate(axes):
        ax.imshow(to_display_image(images[i]))
        right = true_labels[i] == pred_labels[i]
        n_wrong += not right
        pred = class_names[pred_labels[i]]
        if confidence is not None:
            pred += f" ({confidence[i]:.0%})"
        color = RIGHT_COLOR if right else WRONG_COLOR
        ax.set_title(f"true: {class_names[true_labels[i]]}\npredicted: {pred}", fontsize=9, color=color)
        if not right:
            _mark(ax, WRONG_COLOR)
    summary = f"Predictions: {len(images) - n_wrong} of {len(images)} right (mistakes in red)"
    fig.suptitle(summary.replace(" (", "\n(") if ncols < 3 else summary)  # a narrow figure gets two lines
    return fig


def _cheap_labels(dataset):
    """The label of every item if the dataset exposes them without loading images, else None."""
    if hasattr(dataset, "targets"):
        return list(dataset.targets)
    if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):  # torch.utils.data.Subset
        inner = _cheap_labels(dataset.dataset)
        if inner is not None:
            return [inner[i] for i in dataset.indices]
    return None


def plot_sample_grid(dataset_or_items, class_names, per_class: int = 4) -> Figure:
    """A grid of example images, one row per class, ``per_class`` images per row.

    Takes a dataset (an ``ImageFolder``, a ``Subset`` of one, anything yielding
    ``(image, label)``) or a list of ``(image, label)`` pairs; images may be tensors, PIL images
    or file paths. The first ``per_class`` images of each class are shown, so the grid is the
    same on every run.
    """
    chosen: dict[int, list] = {c: [] for c in range(len(class_names))}
    labels = _cheap_labels(dataset_or_items)
    if labels is not None:
        for index, label in enumerate(labels):
            if len(chosen[int(label)]) < per_class:
                chosen[int(label)].append(index)
        chosen = {c: [dataset_or_items[i][0] for i in idx] for c, idx in chosen.items()}
    else:
        for image, label in dataset_or_items:
            if len(chosen[int(label)]) < per_class:
                chosen[int(label)].append(image)
            if all(len(v) == per_class for v in chosen.values()):
                break
    fig, axes = _figure(len(class_names), per_class, figsize=(2.2 * per_class, 2.2 * len(class_names)), squeeze=False)
    for c, row in enumerate(axes):
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(chosen[c]):
                ax.imshow(to_display_image(chosen[c][j]))
            else:
                ax.axis("off")
        row[0].axis("on")
        row[0].set_frame_on(bool(chosen[c]))
        row[0].set_ylabel(class_names[c], fontsize=10)
    fig.suptitle(f"Example images, {per_class} per class")
    return fig


def plot_augmentations(image, transform, n: int = 8, seed: int = 0, ncols: int = 5) -> Figure:
    """The original image and ``n`` random augmentations of it by ``transform``.

    The random draws are seeded (``seed``) without touching the global random state, so a
    notebook shows the same preview every run. ``image`` is a PIL image or a path.
    """
    if isinstance(image, (str, Path)):
        image = load_rgb(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        augmented = [transform(image) for _ in range(n)]
    fig, axes = _grid(n + 1, ncols)
    axes[0].imshow(to_display_image(image))
    axes[0].set_title("original", fontsize=10)
    for i, (ax, picture) in enumerate(zip(axes[1:], augmented), start=1):
        ax.imshow(to_display_image(picture))
        ax.set_title(f"augmented {i}", fontsize=10)
    fig.suptitle("Training augmentations of one image")
    return fig


# --------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------


def _history_rows(history) -> list[dict]:
    """A training history as a list of per-epoch dicts (also accepts a path to history.json or
    a dict of lists, Keras style)."""
    if isinstance(history, (str, Path)):
        history = json.loads(Path(history).read_text())
    if isinstance(history, Mapping):
        keys = list(history)
        history = [dict(zip(keys, values)) for values in zip(*history.values())]
    rows = list(history)
    if not rows:
        raise ValueError("the history is empty: train for at least one epoch first")
    return rows


def _series(rows, key):
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    pairs = [(e, row[key]) for e, row in zip(epochs, rows) if row.get(key) is not None]
    return [e for e, _ in pairs], [v for _, v in pairs]


def _as_percent(rows_list) -> bool:
    """Accuracies stored as fractions (all <= 1) are shown in percent."""
    values = [row[k] for rows in rows_list for row in rows for k in ("train_acc", "val_acc") if row.get(k) is not None]
    return bool(values) and max(values) <= 1.0


def _draw_history(axes, rows, label_prefix: str = "", color=None, percent: bool = True) -> None:
    marker = "o" if len(rows) <= 30 else None
    for ax, metric in zip(axes, ("acc", "loss")):
        for split, style in (("train", "-"), ("val", "--")):
            x, y = _series(rows, f"{split}_{metric}")
            if not y:
                continue
            if metric == "acc" and percent:
                y = [100 * v for v in y]
            name = "training" if split == "train" else "validation"
            ax.plot(x, y, style, marker=marker, color=color, label=f"{label_prefix}{name}")


def chance_lines(num_classes: int | None, majority: float | None) -> list[tuple[float, str]]:
    """The chance levels to draw on an accuracy axis, as (accuracy in %, legend label)."""
    lines = []
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}")
        lines.append((100 / num_classes, f"chance: 1/{num_classes} classes = {100 / num_classes:.0f} %"))
    if majority is not None:
        if not 0 < majority <= 1:
            raise ValueError(f"majority is a fraction of the images, in (0, 1]; got {majority!r}")
        lines.append((100 * majority, f"always the majority class: {100 * majority:.0f} %"))
    return lines


def _finish_history_axes(axes, percent: bool, num_classes: int | None = None, majority: float | None = None) -> None:
    for level, (y, label) in enumerate(chance_lines(num_classes, majority)):
        axes[0].axhline(
            y if percent else y / 100, color="0.4", linestyle=(0, (1, 2 + 2 * level)), linewidth=1.2, label=label
        )
    axes[0].set_title("Accuracy")
    axes[0].set_ylabel("accuracy (%)" if percent else "accuracy")
    axes[1].set_title("Loss")
    axes[1].set_yscale("log")  # one bad epoch's spike does not flatten the rest of the curve
    axes[1].set_ylabel("cross-entropy loss (log scale)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)


def plot_history(
    history, title: str = "Training history", num_classes: int | None = None, majority: float | None = None
) -> Figure:
    """Accuracy and loss per epoch, training vs validation, side by side; the loss on a log axis.

    ``history`` is what ``training.fit`` returns (a list of dicts with ``epoch``, ``train_loss``,
    ``train_acc``, ``val_loss``, ``val_acc``), or the path of a ``history.json``. ``num_classes``
    draws the chance level of guessing uniformly (1/num_classes), ``majority`` (a fraction) that of
    always answering the most frequent class; the legend says which.
    """
    rows = _history_rows(history)
    percent = _as_percent([rows])
    fig, axes = _figure(1, 2, figsize=(11, 4))
    _draw_history(axes, rows, percent=percent)
    _finish_history_axes(axes, percent, num_classes, majority)
    fig.suptitle(title)
    return fig


def plot_histories(
    histories: Mapping,
    title: str = "Training histories compared",
    num_classes: int | None = None,
    majority: float | None = None,
) -> Figure:
    """Several training histories on the same accuracy and loss axes, e.g. ResNet50 vs
    ResNet50V2: one colour per model, solid for training, dashed for validation. ``num_classes``
    and ``majority`` draw chance levels as in ``plot_history``."""
    if not histories:
        raise ValueError("no histories to compare")
    named = {name: _history_rows(h) for name, h in histories.items()}
    percent = _as_percent(list(named.values()))
    fig, axes = _figure(1, 2, figsize=(11, 4))
    for i, (name, rows) in enumerate(named.items()):
        _draw_history(axes, rows, label_prefix=f"{name} ", color=f"C{i}", percent=percent)
    _finish_history_axes(axes, percent, num_classes, majority)
    # With several runs the legend grows; below the axes it hides no point.
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=9)
    fig.suptitle(title)
    return fig


def plot_label_efficiency(
    summary_rows, num_classes: int | None = None, title: str = "Validation accuracy against training images"
) -> Figure:
    """Validation accuracy against the number of training images, one line per method through the
    mean over seeds, a bar from the lowest to the highest seed at each point, and the chance
    level of guessing among ``num_classes``. ``summary_rows`` are ``transfer.summary``'s dicts
    (``method``, ``train_images``, ``mean``, ``low``, ``high``, ``seeds``). The x axis is
    logarithmic (45, 112 and 452 bird images are a tenth, a quarter and all), ticked at the counts."""
    if not summary_rows:
        raise ValueError("no runs to plot")
    fig, ax = _figure(figsize=(8, 4.5))
    methods = list(dict.fromkeys(row["method"] for row in summary_rows))
    for i, method in enumerate(methods):
        rows = sorted((r for r in summary_rows if r["method"] == method), key=lambda r: r["train_images"])
        x = [r["train_images"] for r in rows]
        mean = np.array([100 * r["mean"] for r in rows])
        spread = np.array(
            [[100 * r["mean"] - 100 * r["low"] for r in rows], [100 * r["high"] - 100 * r["mean"] for r in rows]]
        )
        seeds = sorted({r["seeds"] for r in rows})
        label = f"{method} (mean of {'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''}, bar: range)"
        ax.errorbar(x, mean, yerr=spread, marker="o", capsize=4, color=f"C{i}", label=label)
    for level, (y, label) in enumerate(chance_lines(num_classes, None)):
        ax.axhline(y, color="0.4", linestyle=(0, (1, 2 + 2 * level)), linewidth=1.2, label=label)
    counts = sorted({r["train_images"] for r in summary_rows})
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("final validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def plot_confusion_matrix(cm, class_names, normalize: bool = False, title: str = "Confusion matrix") -> Figure:
    """The confusion matrix (rows: true class, columns: predicted class) with every cell's count
    written in it. ``normalize=True`` colours each row by its fraction (the per-class recall on
    the diagonal) and writes the percentage above the count."""
    counts = np.asarray(torch.as_tensor(cm).cpu(), dtype=np.int64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({k}, {k}) for {k} class names")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = counts / np.maximum(row_totals, 1)
    shown = fractions if normalize else counts
    size = 1.2 + 1.1 * k
    fig, ax = _figure(figsize=(size + 1.5, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, counts.max()))
    cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of the true class" if normalize else "number of images")
    threshold = (1 if normalize else max(1, counts.max())) / 2
    for i in range(k):
        for j in range(k):
            text = f"{fractions[i, j]:.0%}\n({counts[i, j]})" if normalize else f"{counts[i, j]}"
            ax.text(j, i, text, ha="center", va="center", color="white" if shown[i, j] > threshold else "black")
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(1, counts.sum())
    ax.set_title(f"{title} (accuracy {accuracy:.1%}, {counts.sum()} images)")
    return fig


# --------------------------------------------------------------------------------------------
# Depth experiments (notebook 01) and the unit orderings at initialisation (notebook 04)
# --------------------------------------------------------------------------------------------


def plot_gradient_norms(norms_by_label: Mapping, title: str = "Gradient norm of each layer") -> Figure:
    """Per-layer gradient norms (log scale) of several networks, one line each, input layer on
    the left. Each value is a list of norms or of ``(layer name, norm)`` pairs, as
    ``gradients.gradient_norms`` returns. A flat line means every layer learns; a line that
    falls to the left is a vanishing gradient (notebook 01)."""
    if not norms_by_label:
        raise ValueError("no gradient norms to plot")
    fig, ax = _figure(figsize=(9, 4.5))
    for label, norms in norms_by_label.items():
        values = [n[1] if isinstance(n, (tuple, list)) else n for n in norms]
        values = [float(v) for v in values]
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=str(label))
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel("gradient norm (log scale)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def plot_training_losses(
    records, xlabel: str = "training step", title: str = "Training loss: plain vs residual"
) -> Figure:
    """Training-loss curves of plain and residual networks of growing depth (He et al. 2015,
    Fig. 1 and 6 in miniature): colour by depth, solid line for residual, dashed for plain.

    ``records`` are what ``gradients.degradation_experiment`` returns: dicts with ``depth``,
    ``residual`` (bool) and ``train_loss`` (one value per step).
    """
    records = list(records)
    if not records:
        raise ValueError("no training records to plot")
    depths = sorted({r["depth"] for r in records})
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(depths)))
    color_of = dict(zip(depths, colors))
    fig, ax = _figure(figsize=(9, 4.5))
    for r in sorted(records, key=lambda r: (r["residual"], r["depth"])):
        family = "residual" if r["residual"] else "plain"
        ax.plot(
            range(1, len(r["train_loss"]) + 1),
            r["train_loss"],
            linestyle="-" if r["residual"] else "--",
            color=color_of[r["depth"]],
            label=f"{family}, {r['depth']} layers",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_signal_propagation(
    results, zero_results=None, title: str = "Signal and gradient through a deep stack of units, at initialisation"
) -> Figure:
    """How the five residual-unit orderings (He et al. 2016, Fig. 4) pass the signal forward and
    the gradient backward through a deep stack, from ``ablation.signal_propagation``.

    Columns: the standard deviation of each unit's output x_l (log scale), its correlation with the
    stack's input x_0, and the gradient norm at x_l relative to the last unit's (log scale). One line
    per ordering (mean over seeds) with a band from the smallest to the largest seed. The first row
    is ``results`` (default initialisation); ``zero_results`` (every branch zeroed, so only the
    shortcut path acts) adds a second row.
    """
    rows = [("default initialisation", results)]
    if zero_results is not None:
        rows.append(("residual branches zeroed (shortcut path only)", zero_results))
    grouped = [(label, by_unit(r)) for label, r in rows]
    if not all(group for _, group in grouped):
        raise ValueError("no propagation results to plot")
    fig, axes = _figure(len(rows), 3, figsize=(14, 4 * len(rows)), squeeze=False)
    columns = (
        ("std", "std of unit output x_l (log scale)", True),
        ("input_corr", "correlation of x_l with the input x_0", False),
        ("grad", "gradient norm at x_l / at the last unit (log scale)", True),
    )
    for row, (label, group) in zip(axes, grouped):
        for ax, (key, ylabel, log) in zip(row, columns):
            for i, unit in enumerate(UNIT_LABELS):
                if unit not in group:
                    continue
                values = np.array([getattr(r, key) for r in group[unit]], dtype=float)
                x = np.arange(values.shape[1])
                ax.plot(x, values.mean(axis=0), color=f"C{i}", label=UNIT_LABELS[unit])
                if len(values) > 1:
                    ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=f"C{i}", alpha=0.25)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("unit l (0 = the stack's input)")
            ax.set_ylabel(ylabel)
            ax.set_title(label, fontsize=10)
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# Inside the network (notebook 08)
# --------------------------------------------------------------------------------------------


def plot_feature_maps(
    feature_maps_by_stage: Mapping, n_channels: int = 8, title: str = "Feature maps of each stage"
) -> Figure:
    """One row per stage, ``n_channels`` channels per row, for a single image.

    Values are ``(C, H, W)`` (or ``(1, C, H, W)``) activations, e.g. from
    ``explain.stage_feature_maps``. Each row shows the channels with the largest mean
    activation, so the picture is the same on every run and shows channels that respond, on one
    colour scale per stage with its colour bar beside the row.
    """
    if not feature_maps_by_stage:
        raise ValueError("no feature maps to plot")
    rows = len(feature_maps_by_stage)
    fig, axes = _figure(rows, n_channels, figsize=(1.5 * n_channels, 1.6 * rows), squeeze=False)
    for row, (stage, fmap) in zip(axes, feature_maps_by_stage.items()):
        fmap = torch.as_tensor(fmap).detach().float().cpu()
        if fmap.ndim == 4:
            fmap = fmap[0]
        strongest = fmap.mean(dim=(1, 2)).argsort(descending=True, stable=True)[:n_channels]
        # One colour scale per stage, shown beside the row: within a stage, brighter is larger.
        low, high = float(fmap[strongest].min()), float(fmap[strongest].max())
        image = None
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(strongest):
                image = ax.imshow(fmap[strongest[j]].numpy(), cmap="viridis", vmin=low, vmax=max(high, low + 1e-6))
                ax.set_title(f"channel {int(strongest[j])}", fontsize=7)
            else:
                ax.axis("off")
        fig.colorbar(image, ax=list(row), shrink=0.9, pad=0.01, aspect=10)
        c, h, w = fmap.shape
        row[0].set_ylabel(f"{stage}\n{c}×{h}×{w}", fontsize=9)
    fig.suptitle(title)
    return fig


def plot_gradcam(images, cams, titles=None, alpha: float = 0.45, ncols: int = 4) -> Figure:
    """Grad-CAM heatmaps (Selvaraju et al. 2017) laid over their images: bright regions are
    where the evidence for the class came from. ``cams`` are (H, W) maps in [0, 1] at the image
    size, e.g. from ``explain.grad_cam``, which divides each map by its own maximum: a colour means
    "this much of the strongest evidence in this image", not an amount comparable between images;
    the colorbar and the title say so. ``titles`` one string per image (optional)."""
    images = list(images)
    cams = [torch.as_tensor(c).detach().float().cpu().numpy() for c in cams]
    if len(images) != len(cams):
        raise ValueError(f"need one heatmap per image: got {len(images)} images and {len(cams)} heatmaps")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"need one title per image: got {len(titles)} titles for {len(images)} images")
    if not images:
        raise ValueError("no images to plot")
    fig, axes = _grid(len(images), ncols, cell=2.8, extra_height=0.3)
    for i, ax in enumerate(axes):
        picture = to_display_image(images[i])
        h, w = picture.shape[:2]
        ax.imshow(picture)
        heat = ax.imshow(cams[i], cmap="jet", alpha=alpha, vmin=0, vmax=1, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    bar = fig.colorbar(heat, ax=axes, shrink=0.8, pad=0.02)
    bar.solids.set_alpha(1)
    bar.set_label("Grad-CAM, as a fraction of this image's own maximum")
    fig.suptitle(
        "Grad-CAM: where the evidence for the class comes from\n"
        "(each map is normalised by its own maximum: compare places within an image, not between images)"
    )
    return fig


# --------------------------------------------------------------------------------------------
# Small notebook outputs for photographs
# --------------------------------------------------------------------------------------------

#: What a figure of photographs is shown at in a notebook: enough to see a bird, small to store.
PHOTO_DPI, PHOTO_QUALITY = 72, 80


class PhotoFigure:
    """A figure of photographs that a notebook shows, and stores, as one JPEG.

    A notebook keeps a returned ``Figure`` as a PNG, which is lossless and so large for photos
    (several hundred kB per grid); as a JPEG at ``PHOTO_DPI`` the same grid takes a fraction of
    that. Make it the cell's last expression (``as_photo(plot_sample_grid(...))``); ``figure`` is
    the matplotlib figure itself, for saving at full quality.
    """

    def __init__(self, figure: Figure, dpi: int = PHOTO_DPI, quality: int = PHOTO_QUALITY) -> None:
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be between 1 and 95, got {quality}")
        if dpi <= 0:
            raise ValueError(f"dpi must be positive, got {dpi}")
        self.figure, self.dpi, self.quality = figure, dpi, quality

    def jpeg(self) -> bytes:
        """The figure as JPEG bytes (white background: JPEG has no transparency)."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.dpi, facecolor="white")
        buffer.seek(0)
        out = io.BytesIO()
        Image.open(buffer).convert("RGB").save(out, format="JPEG", quality=self.quality, optimize=True)
        return out.getvalue()

    def _repr_jpeg_(self) -> bytes:
        return self.jpeg()

    def __repr__(self) -> str:
        width, height = self.figure.get_size_inches()
        return f"<PhotoFigure {width * self.dpi:.0f}x{height * self.dpi:.0f} px JPEG>"


def as_photo(figure: Figure, dpi: int = PHOTO_DPI, quality: int = PHOTO_QUALITY) -> PhotoFigure:
    """``figure`` shown (and stored in the notebook) as a JPEG at ``dpi``: for photo grids."""
    return PhotoFigure(figure, dpi, quality)
