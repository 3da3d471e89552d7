"""Tests for resnet_course.runs: "load the checkpoint if it exists, else train", and the tables
and prediction samples notebooks 06 and 07 show."""

import json

import pytest
import torch
from torch import nn

from conftest import make_bird_folder
from resnet_course import config
from resnet_course.checkpoints import RUN_FILE, data_fingerprint
from resnet_course.data import load_birds
from resnet_course.runs import (
    compare_runs,
    epoch_table,
    per_class_table,
    seconds_per_step,
    train_or_load,
    validation_predictions,
)


def _bird_folder(root, prefix="img"):
    return make_bird_folder(root, prefix=prefix)


@pytest.fixture
def tiny_birds(tmp_path, monkeypatch):
    """Loaders over a 20-image folder at 32 px, and run folders inside tmp_path."""
    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    root = _bird_folder(tmp_path / "birds")
    train_loader, val_loader, class_names = load_birds(root, image_size=32, batch_size=4)
    return dict(train_loader=train_loader, val_loader=val_loader, class_names=class_names, image_size=32)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_second_call_loads_the_finished_run_instead_of_training(tiny_birds):
    first = train_or_load("r18", "resnet18", epochs=1, progress=False, **tiny_birds)
    assert first.epochs_trained_now == 1 and len(first.history) == 1
    assert first.out_dir == config.RUNS_DIR / ("fast" if config.fast_mode() else "full") / "r18"
    saved_at = first.checkpoint.stat().st_mtime_ns

    again = train_or_load("r18", "resnet18", epochs=1, lr=1e-3, progress=False, **tiny_birds)  # AdamW's default lr
    assert again.epochs_trained_now == 0
    assert again.history == first.history
    assert _same_weights(again.model, first.model)
    assert again.checkpoint.stat().st_mtime_ns == saved_at  # nothing was trained or rewritten
    assert sorted(p.name for p in again.out_dir.iterdir()) == ["best.pt", "checkpoint.pt", "history.json", RUN_FILE]


@pytest.mark.slow
def test_an_unfinished_run_is_continued_not_restarted(tiny_birds):
    first = train_or_load("r18", "resnet18", epochs=1, progress=False, **tiny_birds)
    longer = train_or_load("r18", "resnet18", epochs=2, progress=False, **tiny_birds)
    assert longer.epochs_trained_now == 1
    assert [r["epoch"] for r in longer.history] == [1, 2]
    assert longer.history[0] == first.history[0]
    # a run is never shortened: asking for fewer epochs returns the saved two
    shorter = train_or_load("r18", "resnet18", epochs=1, progress=False, **tiny_birds)
    assert shorter.epochs_trained_now == 0 and len(shorter.history) == 2


@pytest.mark.slow
def test_a_run_trained_differently_is_refused_and_kept(tiny_birds, tmp_path):
    run = train_or_load("r18", "resnet18", epochs=1, progress=False, **tiny_birds)
    before = run.checkpoint.read_bytes()
    with pytest.raises(ValueError, match="lr: 0.001 there, 0.1 now"):
        train_or_load("r18", "resnet18", epochs=1, lr=0.1, progress=False, **tiny_birds)
    with pytest.raises(ValueError, match="zero_init_residual: True there, False now"):
        train_or_load("r18", "resnet18", epochs=1, zero_init_residual=False, progress=False, **tiny_birds)
    with pytest.raises(ValueError, match="model_name: 'resnet18' there, 'resnet34' now"):
        train_or_load("r18", "resnet34", epochs=1, progress=False, **tiny_birds)
    other = _bird_folder(tmp_path / "other", prefix="photo")
    train_loader, val_loader, names = load_birds(other, image_size=32, batch_size=4)
    with pytest.raises(ValueError, match="data: "):
        train_or_load(
            "r18",
            "resnet18",
            epochs=1,
            progress=False,
            train_loader=train_loader,
            val_loader=val_loader,
            class_names=names,
            image_size=32,
        )
    assert run.checkpoint.read_bytes() == before
    assert json.loads((run.out_dir / RUN_FILE).read_text())["lr"] == 0.001


def test_data_fingerprint_tells_other_files_and_other_splits_apart(tmp_path):
    a = load_birds(_bird_folder(tmp_path / "a"), image_size=32, batch_size=4)
    same = load_birds(_bird_folder(tmp_path / "same"), image_size=64, batch_size=2)
    renamed = load_birds(_bird_folder(tmp_path / "renamed", prefix="x"), image_size=32, batch_size=4)
    other_split = load_birds(tmp_path / "a", image_size=32, batch_size=4, seed=7)
    assert data_fingerprint(a[0], a[1]) == data_fingerprint(same[0], same[1])  # names, not places or sizes
    assert data_fingerprint(a[0], a[1]) != data_fingerprint(renamed[0], renamed[1])
    assert data_fingerprint(a[0], a[1]) != data_fingerprint(a[1], a[0])
    if [s[0].name for s in other_split[1].dataset.samples] != [s[0].name for s in a[1].dataset.samples]:
        assert data_fingerprint(*other_split[:2]) != data_fingerprint(a[0], a[1])


HISTORY = [
    {"epoch": 1, "train_loss": 1.25, "train_acc": 0.5, "val_loss": 1.5, "val_acc": 0.5, "lr": 0.01, "seconds": 10.0},
    {
        "epoch": 2,
        "train_loss": 0.75,
        "train_acc": 0.625,
        "val_loss": 1.0,
        "val_acc": 0.75,
        "lr": 0.005,
        "seconds": 20.0,
    },
    {
        "epoch": 3,
        "train_loss": 0.5,
        "train_acc": 0.875,
        "val_loss": 1.25,
        "val_acc": 0.625,
        "lr": 0.001,
        "seconds": 30.0,
    },
]


def test_epoch_table_shows_each_epoch_in_percent():
    lines = epoch_table(HISTORY).splitlines()
    assert lines[0].split() == [
        "epoch",
        "train",
        "loss",
        "train",
        "acc",
        "val",
        "loss",
        "val",
        "acc",
        "first",
        "lr",
        "seconds",
    ]
    assert lines[2].split() == ["1", "1.250", "50.0%", "1.500", "50.0%", "0.01", "10"]
    assert lines[4].split() == ["3", "0.500", "87.5%", "1.250", "62.5%", "0.001", "30"]


def test_compare_runs_reports_final_and_best_accuracy_and_mean_seconds():
    table = compare_runs({"ResNet50": HISTORY, "short": HISTORY[:1]}).splitlines()
    assert table[2].split() == ["ResNet50", "3", "62.5%", "75.0%", "(epoch", "2)", "20"]
    assert table[3].split() == ["short", "1", "50.0%", "50.0%", "(epoch", "1)", "10"]


def test_per_class_table_from_an_evaluation_report():
    from resnet_course.evaluation import evaluate

    class Fixed(nn.Module):  # predicts class 0 for everything
        def forward(self, x):
            return torch.tensor([[1.0, 0.0]]).repeat(len(x), 1)

    loader = [(torch.zeros(4, 3, 8, 8), torch.tensor([0, 0, 1, 1]))]
    report = evaluate(Fixed(), loader, class_names=["a", "b"], precision="fp32")
    lines = per_class_table(report).splitlines()
    assert lines[2].split() == ["a", "0.50", "1.00", "2"]  # half of the "a" predictions are right
    assert lines[3].split() == ["b", "0.00", "0.00", "2"]


class _LabelledImages(torch.utils.data.Dataset):
    """Image i is filled with the value of its label, so a model can read the label back."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.full((3, 8, 8), float(self.labels[i])), self.labels[i]


class _ReadsTheLabel(nn.Module):
    def forward(self, x):
        value = x.mean(dim=(1, 2, 3))
        return -((value[:, None] - torch.arange(3.0)) ** 2)  # highest for the class equal to the value


def test_validation_predictions_spread_over_the_set_with_the_models_answers():
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    loader = torch.utils.data.DataLoader(_LabelledImages(labels), batch_size=4)
    images, true, predicted, probs = validation_predictions(_ReadsTheLabel(), loader, n=4, precision="fp32")
    assert true == [labels[i] for i in (0, 3, 6, 9)]  # evenly spread, first and last included
    assert predicted == true
    assert images.shape == (4, 3, 8, 8) and probs.shape == (4, 3)
    assert torch.allclose(probs.sum(1), torch.ones(4))
    assert validation_predictions(_ReadsTheLabel(), loader, n=50, precision="fp32")[1] == labels


class _CountingLoader:
    """Yields the same small batch ``n`` times and counts how many were taken."""

    def __init__(self, n):
        self.n, self.taken = n, 0

    def __iter__(self):
        for _ in range(self.n):
            self.taken += 1
            yield torch.randn(2, 3, 8, 8), torch.tensor([0, 1])


def test_seconds_per_step_times_each_model_on_the_same_batches_and_leaves_them_untouched():
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 2)).eval()
    other = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    loader = _CountingLoader(10)
    seconds = seconds_per_step({"small": small, "other": other}, loader, steps=3, warmup=1, precision="fp32")
    assert list(seconds) == ["small", "other"] and all(s > 0 for s in seconds.values())
    assert loader.taken == 4  # one batch per step, shared by both models
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())  # weights and BN statistics
    assert not small.training
    with pytest.raises(ValueError, match="fewer than 12 batches"):
        seconds_per_step({"small": small}, _CountingLoader(10), steps=11, precision="fp32")
