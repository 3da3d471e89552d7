"""Comparing architectures over several seeds, and what 113 validation images can tell apart.

One training run is one draw: the seed sets the initial weights, the data order and the
augmentation, and on a small validation set one image is almost a percentage point. So the course
compares models by the spread of a few seeds each, and sets that spread beside the binomial
standard error of an accuracy measured on ``n`` images, sqrt(p (1 - p) / n).

The runs come from ``benchmarks/bench_recipe.py``, which appends one JSON line per finished run
(model, image size, epochs, seed, recipe, final and best validation accuracy, recall per class).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from .config import REPO_ROOT
from .images import DEFAULT_TRAIN_CROP_SCALE
from .plots import chance_lines
from .tables import text_table

__all__ = ["BENCHMARK_RUNS", "load_runs", "seed_summary", "binomial_se", "seed_table", "plot_seed_comparison"]

#: Where ``benchmarks/bench_recipe.py`` records its runs.
BENCHMARK_RUNS = REPO_ROOT / "benchmarks" / "recipe_runs.jsonl"


def load_runs(
    path: str | os.PathLike = BENCHMARK_RUNS,
    *,
    models: Sequence[str] | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    default_recipe: bool = True,
) -> list[dict]:
    """The recorded runs in ``path`` (one JSON object per line) that match: ``models`` (in that
    order), ``image_size``, ``epochs`` and, with ``default_recipe``, only runs of the course's
    default recipe (no option changed, zero-init on, the default crops). Blank lines are skipped;
    a line that is not JSON is a ``ValueError`` naming the file and line."""
    path = Path(path)
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON record ({error.msg})") from None
        if models is not None and run.get("model") not in models:
            continue
        if image_size is not None and run.get("image_size") != image_size:
            continue
        if epochs is not None and run.get("epochs") != epochs:
            continue
        if default_recipe and (
            run.get("recipe")
            or not run.get("zero_init_residual", True)
            or tuple(run.get("crop_scale", DEFAULT_TRAIN_CROP_SCALE)) != DEFAULT_TRAIN_CROP_SCALE
        ):
            continue
        runs.append(run)
    if models is not None:
        runs.sort(key=lambda r: (list(models).index(r["model"]), r["seed"]))
    return runs


def seed_summary(runs: Iterable[Mapping], key: str = "final_val_acc") -> list[dict]:
    """Per model (in first-seen order): the seeds, each seed's ``key``, their mean, their sample
    standard deviation (n - 1; None for a single run), minimum and maximum. A seed recorded twice
    for one model is an error: it would count one draw twice."""
    by_model: dict[str, dict[int, float]] = {}
    for run in runs:
        seeds = by_model.setdefault(run["model"], {})
        if run["seed"] in seeds:
            raise ValueError(f"{run['model']} seed {run['seed']} is recorded twice")
        seeds[run["seed"]] = float(run[key])
    summary = []
    for model, seeds in by_model.items():
        values = list(seeds.values())
        summary.append(
            {
                "model": model,
                "seeds": list(seeds),
                "values": values,
                "n": len(values),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "min": min(values),
                "max": max(values),
            }
        )
    return summary


def binomial_se(accuracy: float, num_images: int) -> float:
    """Standard error of an accuracy measured on ``num_images`` independent images:
    sqrt(p (1 - p) / n). At p = 0.7 on 113 images it is 4.3 points."""
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy is a fraction in [0, 1], got {accuracy!r}")
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images!r}")
    return math.sqrt(accuracy * (1 - accuracy) / num_images)


def seed_table(summary: Sequence[Mapping], num_images: int) -> str:
    """``seed_summary`` as text: each seed's accuracy, mean ± standard deviation over the seeds,
    the range, and the binomial standard error of one run at the mean accuracy."""
    rows = []
    for row in summary:
        each = "  ".join(f"{v:.1%}" for v in row["values"])
        spread = "" if row["std"] is None else f" ± {row['std']:.1%}"
        rows.append(
            [
                row["model"],
                row["n"],
                each,
                f"{row['mean']:.1%}{spread}",
                f"{row['min']:.1%} to {row['max']:.1%}",
                f"{binomial_se(row['mean'], num_images):.1%}",
            ]
        )
    return text_table(
        ["model", "seeds", "final val acc of each seed", "mean ± std", "range", f"binomial SE on {num_images}"], rows
    )


def plot_seed_comparison(
    summary: Sequence[Mapping],
    num_images: int,
    title: str = "Final validation accuracy",
    num_classes: int | None = None,
):
    """One column per model: each seed's accuracy as a dot, the mean as a bar with whiskers of one
    standard deviation over the seeds, and beside it (grey) the binomial standard error of a
    single run at that mean, so the two kinds of noise can be compared. ``num_classes`` draws
    the chance level 1/k."""
    fig = Figure(figsize=(1.6 + 1.5 * len(summary), 4), layout="constrained")
    ax = fig.add_subplot()
    for x, row in enumerate(summary):
        values = [100 * v for v in row["values"]]
        offsets = [x - 0.12 + 0.24 * i / max(len(values) - 1, 1) for i in range(len(values))]
        ax.scatter(offsets, values, color=f"C{x}", zorder=3, label=None)
        mean = 100 * row["mean"]
        ax.hlines(mean, x - 0.25, x + 0.25, color=f"C{x}", linewidth=2.5)
        if row["std"] is not None:
            ax.errorbar(x, mean, yerr=100 * row["std"], color=f"C{x}", capsize=6, linewidth=1.5)
        se = 100 * binomial_se(row["mean"], num_images)
        ax.errorbar(x + 0.35, mean, yerr=se, color="0.55", capsize=4, linewidth=1.2)
    for level, label in chance_lines(num_classes, None):  # the same chance line as plot_history's
        ax.axhline(level, color="0.4", linestyle=(0, (1, 2)), linewidth=1.2, label=label)
    ax.errorbar([], [], yerr=[], color="0.55", capsize=4, label=f"binomial SE of one run on {num_images} images")
    ax.errorbar([], [], yerr=[], color="0.2", capsize=6, label="mean ± std over the seeds (dots: each seed)")
    ax.set_xticks(range(len(summary)), [f"{row['model']}\n({row['n']} seeds)" for row in summary])
    ax.set_xlim(-0.6, len(summary) - 0.3)
    ax.set_ylim(0, 100)
    ax.set_ylabel("final validation accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    return fig
