"""Tests for resnet_course.comparison: seed spreads and the binomial noise of a small validation set."""

import json
import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from resnet_course.comparison import (
    BENCHMARK_RUNS,
    binomial_se,
    load_runs,
    plot_seed_comparison,
    seed_summary,
    seed_table,
)


def _record(model, seed, acc, **extra):
    return {
        "model": model,
        "image_size": 112,
        "epochs": 10,
        "seed": seed,
        "zero_init_residual": True,
        "recipe": {},
        "final_val_acc": acc,
        "best_val_acc": acc,
        **extra,
    }


@pytest.fixture
def runs_file(tmp_path):
    records = [
        _record("resnet50v2", 1, 0.6),
        _record("resnet50", 0, 0.5),
        _record("resnet50", 1, 0.7),
        _record("resnet50v2", 0, 0.8),
        _record("resnet50", 2, 0.6),
        _record("resnet50", 3, 0.9, recipe={"lr": 0.002}),  # another recipe
        _record("resnet50", 4, 0.9, crop_scale=[0.8, 1.0]),  # other crops
        _record("resnet50", 5, 0.9, zero_init_residual=False),
        _record("resnet50", 6, 0.9, image_size=224),
        _record("resnet18", 0, 0.4),
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    return path


def test_load_runs_keeps_only_the_default_recipe_at_the_asked_budget_in_model_order(runs_file):
    runs = load_runs(runs_file, models=["resnet50", "resnet50v2"], image_size=112, epochs=10)
    assert [(r["model"], r["seed"]) for r in runs] == [
        ("resnet50", 0),
        ("resnet50", 1),
        ("resnet50", 2),
        ("resnet50v2", 0),
        ("resnet50v2", 1),
    ]
    everything = load_runs(runs_file, default_recipe=False)
    assert len(everything) == 10


def test_load_runs_names_the_line_that_is_not_json(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_record("resnet50", 0, 0.5)) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"runs.jsonl, line 2: not a JSON record"):
        load_runs(path)


def test_seed_summary_mean_and_sample_standard_deviation(runs_file):
    summary = seed_summary(load_runs(runs_file, models=["resnet50", "resnet50v2", "resnet18"], image_size=112))
    v1, v2, r18 = summary
    # 0.5, 0.7, 0.6: mean 0.6, sample std sqrt(((-0.1)^2 + 0.1^2 + 0) / 2) = 0.1
    assert v1["seeds"] == [0, 1, 2] and v1["mean"] == pytest.approx(0.6) and v1["std"] == pytest.approx(0.1)
    assert (v1["min"], v1["max"]) == (0.5, 0.7)
    # two seeds 0.8 and 0.6: std = |0.8 - 0.6| / sqrt(2)
    assert v2["mean"] == pytest.approx(0.7) and v2["std"] == pytest.approx(0.2 / math.sqrt(2))
    assert r18["n"] == 1 and r18["std"] is None


def test_a_seed_recorded_twice_is_refused():
    with pytest.raises(ValueError, match="resnet50 seed 0 is recorded twice"):
        seed_summary([_record("resnet50", 0, 0.5), _record("resnet50", 0, 0.6)])


def test_binomial_standard_error_matches_simulated_validation_sets():
    assert binomial_se(0.7, 113) == pytest.approx(0.04311, abs=1e-5)  # sqrt(0.21 / 113)
    # the spread of accuracies on 113 images, each right with probability 0.7, drawn many times
    draws = np.random.default_rng(0).binomial(113, 0.7, size=200_000) / 113
    assert binomial_se(0.7, 113) == pytest.approx(draws.std(), rel=0.01)
    assert binomial_se(1.0, 113) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        binomial_se(70, 113)
    with pytest.raises(ValueError, match="at least 1"):
        binomial_se(0.5, 0)


def test_seed_table_and_plot_show_every_seed(runs_file):
    summary = seed_summary(load_runs(runs_file, models=["resnet50", "resnet50v2"], image_size=112))
    text = seed_table(summary, 113)
    assert "50.0%  70.0%  60.0%" in text and "60.0% ± 10.0%" in text and "50.0% to 70.0%" in text
    assert "4.6%" in text  # binomial SE at 60 % on 113 images: sqrt(0.24 / 113) = 4.61 points
    fig = plot_seed_comparison(summary, 113, num_classes=4)
    ax = fig.axes[0]
    dots = [
        point
        for collection in ax.collections
        if isinstance(collection, PathCollection)  # the scatter dots
        for point in collection.get_offsets().tolist()
    ]
    assert sorted(round(y) for _, y in dots) == [50, 60, 60, 70, 80]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["resnet50\n(3 seeds)", "resnet50v2\n(2 seeds)"]


def test_the_committed_benchmark_runs_hold_three_seeds_of_each_compared_model():
    # notebook 07 reads these records; bench_recipe.py wrote them
    runs = load_runs(BENCHMARK_RUNS, models=["resnet18", "resnet50", "resnet50v2"], image_size=112, epochs=10)
    summary = {row["model"]: row for row in seed_summary(runs)}
    assert set(summary) == {"resnet18", "resnet50", "resnet50v2"}
    assert all(row["n"] >= 3 for row in summary.values())
