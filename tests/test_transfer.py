"""Transfer learning inside the course: any folder of class folders is a dataset, a stratified
fraction of the training split, and a course checkpoint as the weights another run starts from."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from resnet_course import transfer
from resnet_course.birds import CLASS_NAMES, BirdDataError
from resnet_course.cli import main
from resnet_course.data import is_bird_folder, load_birds, scan_dataset_folder, split_samples, training_subset
from resnet_course.evaluation import load_checkpoint
from resnet_course.finetune import freeze_backbone, linear_probe
from resnet_course.models import get_model, like_a_trained_net
from resnet_course.plots import plot_label_efficiency
from resnet_course.pretrained import WeightsError, course_checkpoint_meta, normalization_for
from resnet_course.pretraining import make_pretraining_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parent.parent
COLOURS = ((200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40), (160, 40, 160))


def _class_folder(root: Path, counts: dict[str, int], size: int = 24) -> Path:
    """One folder per class with ``counts[name]`` small PNGs, each class its own colour."""
    for k, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((size, size, 3), COLOURS[k % len(COLOURS)], np.uint8)
            pixels[:, : size // 2] = 255 - pixels[:, : size // 2] if i % 2 else pixels[:, : size // 2]
            Image.fromarray(pixels).save(root / name / f"img_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def animals(tmp_path_factory) -> Path:
    """A dataset that is not the birds: three classes of 40, 26 and 11 images."""
    return _class_folder(tmp_path_factory.mktemp("animals") / "animals", {"owl": 40, "cat": 26, "newt": 11})


@pytest.fixture(scope="module")
def tiny_birds(tmp_path_factory) -> Path:
    return _class_folder(tmp_path_factory.mktemp("birds") / "birds", {name: 6 for name in CLASS_NAMES}, size=40)


# --------------------------------------------------------------------------------------------
# Any folder of class folders
# --------------------------------------------------------------------------------------------


def test_any_class_folder_loads_as_imagefolder_does(animals):
    train, val, class_names = load_birds(animals, image_size=16, batch_size=4)
    reference = torchvision.datasets.ImageFolder(animals)
    assert class_names == reference.classes == ["cat", "newt", "owl"]
    assert train.dataset.class_to_idx == reference.class_to_idx
    assert sorted((str(p), y) for p, y in train.dataset.samples + val.dataset.samples) == sorted(reference.samples)
    assert len(val.dataset) == round(77 * 0.2)
    images, labels = next(iter(val))
    assert images.shape[1:] == (3, 16, 16) and labels.max() < 3


def test_bird_rules_stay_for_bird_data(tmp_path):
    mixed = _class_folder(tmp_path / "mixed", {"Bananaquit": 3, "owl": 3})
    assert is_bird_folder(mixed)
    with pytest.raises(BirdDataError, match="missing the class folder"):
        load_birds(mixed)
    kaggle = _class_folder(tmp_path / "kaggle", {"train": 3, "valid": 3})
    with pytest.raises(BirdDataError, match="import-kaggle"):
        load_birds(kaggle)
    assert not is_bird_folder(_class_folder(tmp_path / "other", {"GANG GANG COCKATOO": 3, "owl": 3}))


def test_bushtit_alias_still_names_the_course_class(tmp_path):
    counts = {name: 5 for name in CLASS_NAMES[:2] + ("Black Throated Bushtit",) + CLASS_NAMES[3:]}
    _, _, class_names = load_birds(_class_folder(tmp_path / "b", counts), image_size=16)
    assert class_names == list(CLASS_NAMES)


@pytest.mark.parametrize(
    "counts, message",
    [
        ({"owl": 3}, "at least two classes"),
        ({"owl": 3, "cat": 0}, "No readable images in the class folder(s) ['cat']"),
    ],
)
def test_a_general_folder_that_cannot_work_is_a_clear_error(tmp_path, counts, message):
    root = _class_folder(tmp_path / "data", counts)
    with pytest.raises(BirdDataError) as error:
        scan_dataset_folder(root)
    assert message in str(error.value)


# --------------------------------------------------------------------------------------------
# A fraction of the training split
# --------------------------------------------------------------------------------------------


def _per_class(samples) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, label in samples:
        counts[label] = counts.get(label, 0) + 1
    return counts


@pytest.mark.parametrize("fraction", [1.0, 0.25, 0.1, 0.01])
def test_train_fraction_is_stratified_and_keeps_every_class(animals, fraction):
    full_train, full_val, _ = load_birds(animals, image_size=16)
    train, val, _ = load_birds(animals, image_size=16, train_fraction=fraction)
    full = _per_class(full_train.dataset.samples)
    assert _per_class(train.dataset.samples) == {label: max(1, round(n * fraction)) for label, n in full.items()}
    assert set(train.dataset.samples) <= set(full_train.dataset.samples)
    assert val.dataset.samples == full_val.dataset.samples  # validation never changes


def test_train_fraction_is_deterministic_nested_and_independent_of_listing_order(animals):
    scan = scan_dataset_folder(animals)
    train, _ = split_samples(scan)
    quarter = training_subset(train, 0.25)
    assert quarter == training_subset(list(reversed(train)), 0.25)
    assert set(training_subset(train, 0.1)) <= set(quarter)
    assert training_subset(train, 0.25, seed=7) != quarter


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, math.nan, "half"])
def test_bad_train_fraction_is_refused(animals, fraction):
    with pytest.raises(ValueError, match="train_fraction must be in"):
        load_birds(animals, image_size=16, train_fraction=fraction)


# --------------------------------------------------------------------------------------------
# A course checkpoint as weights
# --------------------------------------------------------------------------------------------


def _checkpoint(path: Path, model_name: str, class_names, normalization: str = "imagenet", seed: int = 0) -> dict:
    """A checkpoint in the format ``train`` writes, with weights like a trained net's."""
    torch.manual_seed(seed)
    model = like_a_trained_net(get_model(model_name, num_classes=len(class_names)), seed=seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    meta = {
        "model_name": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "image_size": 32,
        "normalization": normalization,
    }
    torch.save({"model": state, "meta": meta, "epoch": 1}, path)
    return state


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


SPECIES = ["Azure Fantail", "Crimson Spikecrest", "Emerald Longbill", "Ochre Forktail", "Violet Hookbill"]


def test_checkpoint_backbone_loads_with_a_fresh_head_for_other_classes(tmp_path):
    saved = _checkpoint(tmp_path / "pre.pt", "resnet18", SPECIES, normalization="tf")
    model = get_model("resnet18", num_classes=4, weights=tmp_path / "pre.pt", class_names=CLASS_NAMES)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in _backbone(saved).items())
    assert model.fc.weight.shape == (4, 512)
    assert model.input_normalization == "tf" == normalization_for("resnet18", tmp_path / "pre.pt")
    source = model.weights_source
    assert source["format"] == "course checkpoint" and source["fresh_head"] is True
    assert source["file"] == str(tmp_path / "pre.pt") and source["source_model"] == "resnet18"
    assert source["source_classes"] == SPECIES and source["tensors_loaded"] == len(_backbone(saved)) - 20
    # 20 BatchNorm step counters are not weights; every other backbone tensor came from the file


def test_same_number_of_other_classes_still_gets_a_fresh_head(tmp_path):
    saved = _checkpoint(tmp_path / "pre.pt", "resnet18", SPECIES[:4])
    model = get_model("resnet18", num_classes=4, weights=tmp_path / "pre.pt", class_names=CLASS_NAMES)
    assert model.weights_source["fresh_head"] is True and not torch.equal(model.fc.weight, saved["fc.weight"])
    same = get_model("resnet18", num_classes=4, weights=tmp_path / "pre.pt", class_names=SPECIES[:4])
    assert same.weights_source["fresh_head"] is False and torch.equal(same.fc.weight, saved["fc.weight"])


def test_checkpoint_for_a_v2_model_loads_too(tmp_path):
    saved = _checkpoint(tmp_path / "v2.pt", "resnet50v2", SPECIES[:3], normalization="tf")
    model = get_model("resnet50v2", num_classes=4, weights=tmp_path / "v2.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in _backbone(saved).items())
    assert model.input_normalization == "tf"


@pytest.mark.parametrize(
    "model_name, first",
    [
        ("resnet34", "no tensor for layer1.2.conv1.weight"),
        ("resnet50", "layer1.0.conv1.weight is (64, 64, 3, 3) in the file, (64, 64, 1, 1) in the model"),
    ],
)
def test_a_checkpoint_of_another_model_names_the_first_tensor_that_does_not_fit(tmp_path, model_name, first):
    _checkpoint(tmp_path / "r18.pt", "resnet18", SPECIES)
    with pytest.raises(WeightsError) as error:
        get_model(model_name, num_classes=4, weights=tmp_path / "r18.pt")
    assert first in str(error.value) and f"holds a resnet18, not a {model_name}" in str(error.value)


def test_a_checkpoint_missing_or_adding_a_tensor_is_refused(tmp_path):
    saved = _checkpoint(tmp_path / "ok.pt", "resnet18", SPECIES)
    checkpoint = torch.load(tmp_path / "ok.pt", weights_only=True)
    del checkpoint["model"]["layer2.1.bn2.running_var"]
    torch.save(checkpoint, tmp_path / "missing.pt")
    with pytest.raises(WeightsError, match=r"no tensor for layer2\.1\.bn2\.running_var"):
        get_model("resnet18", num_classes=4, weights=tmp_path / "missing.pt")
    checkpoint["model"] = {**saved, "layer5.0.conv1.weight": torch.zeros(1)}
    torch.save(checkpoint, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match=r"layer5\.0\.conv1\.weight has no place"):
        get_model("resnet18", num_classes=4, weights=tmp_path / "extra.pt")


def test_a_diverged_checkpoint_is_refused(tmp_path):
    _checkpoint(tmp_path / "ok.pt", "resnet18", SPECIES)
    checkpoint = torch.load(tmp_path / "ok.pt", weights_only=True)
    checkpoint["model"]["layer3.0.conv2.weight"][0, 0, 0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match=r"not finite numbers \(in layer3\.0\.conv2\.weight\)"):
        get_model("resnet18", num_classes=4, weights=tmp_path / "nan.pt")


def test_only_course_checkpoints_have_a_course_meta(tmp_path):
    _checkpoint(tmp_path / "ck.pt", "resnet18", SPECIES, normalization="tf")
    torch.save(get_model("resnet18").state_dict(), tmp_path / "plain.pth")
    (tmp_path / "text.pt").write_text("not weights")
    assert course_checkpoint_meta(tmp_path / "ck.pt")["class_names"] == SPECIES
    assert [course_checkpoint_meta(p) for p in (tmp_path / "plain.pth", tmp_path / "text.pt", "imagenet")] == [None] * 3
    assert normalization_for("resnet18", tmp_path / "plain.pth") == "imagenet"


def test_frozen_backbone_and_linear_probe_from_a_checkpoint(tmp_path, tiny_birds):
    saved = _checkpoint(tmp_path / "pre.pt", "resnet18", SPECIES)
    train, val, class_names = load_birds(tiny_birds, image_size=32, batch_size=4)
    model = freeze_backbone(get_model("resnet18", num_classes=4, weights=tmp_path / "pre.pt"))
    history = linear_probe(model, train, val, epochs=3, lr=1e-2)
    assert len(history) == 3 and history[-1]["train_acc"] >= history[0]["train_acc"]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in _backbone(saved).items())  # BN statistics included


# --------------------------------------------------------------------------------------------
# End to end: pretrain on drawn species, fine-tune on the birds
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_transfer_end_to_end(tmp_path, tiny_birds, capsys):
    drawn = make_pretraining_set(tmp_path / "drawn", species=3, per_species=5)
    common = [
        "--model",
        "resnet18",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--fp32",
        "--no-progress",
        "--seed",
        "0",
    ]
    assert main(["train", "--data", str(drawn), "--out", str(tmp_path / "pre"), *common]) == 0
    pretrained = load_checkpoint(tmp_path / "pre" / "checkpoint.pt")
    species = sorted(p.name for p in drawn.iterdir() if p.is_dir())
    assert pretrained["meta"]["class_names"] == species
    capsys.readouterr()
    image = next((drawn / species[0]).iterdir())
    assert main(["predict", "--checkpoint", str(tmp_path / "pre" / "checkpoint.pt"), "--fp32", str(image)]) == 0
    assert capsys.readouterr().out.split(": ", 1)[1].rsplit(" (", 1)[0] in species  # predict names a species

    weights = str(tmp_path / "pre" / "checkpoint.pt")
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_birds),
                "--out",
                str(tmp_path / "probe"),
                "--weights",
                weights,
                "--freeze-backbone",
                *common,
            ]
        )
        == 0
    )
    probe = load_checkpoint(tmp_path / "probe" / "checkpoint.pt")
    assert probe["meta"]["class_names"] == list(CLASS_NAMES) and probe["meta"]["weights"] == weights
    assert probe["meta"]["backbone_frozen"] is True
    assert all(torch.equal(probe["model"][k], v) for k, v in _backbone(pretrained["model"]).items())
    assert probe["model"]["fc.weight"].shape == (4, 512)

    assert (
        main(["train", "--data", str(tiny_birds), "--out", str(tmp_path / "fine"), "--weights", weights, *common]) == 0
    )
    fine = load_checkpoint(tmp_path / "fine" / "checkpoint.pt")
    assert not torch.equal(fine["model"]["layer4.1.conv2.weight"], pretrained["model"]["layer4.1.conv2.weight"])
    capsys.readouterr()


def test_cli_wrong_model_for_a_checkpoint_exits_2_naming_the_tensor(tmp_path, tiny_birds, capsys):
    _checkpoint(tmp_path / "r18.pt", "resnet18", SPECIES)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "resnet34",
            "--data",
            str(tiny_birds),
            "--out",
            str(out),
            "--weights",
            str(tmp_path / "r18.pt"),
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and "layer1.2.conv1.weight" in captured.err and "Traceback" not in captured.err
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.slow
def test_bench_transfer_runs_end_to_end_at_tiny_sizes(tmp_path, tiny_birds, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_transfer", REPO / "benchmarks" / "bench_transfer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("RESNET_COURSE_FAST", "1")  # what --tiny sets, undone after the test
    monkeypatch.setenv("RESNET_COURSE_RUNS", str(tmp_path / "work"))  # what --work sets, undone too
    out = tmp_path / "runs.jsonl"
    argv = ["--tiny", "--model", "resnet18", "--species", "3", "--per-species", "5", "--fractions", "1", "0.5"]
    argv += ["--seeds", "0", "1", "--data", str(tiny_birds), "--work", str(tmp_path / "work"), "--out", str(out)]
    bench.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["pretrain"] + ["transfer"] * 12
    assert rows[0]["chance"] == pytest.approx(1 / 3) and 0 <= rows[0]["final_val_acc"] <= 1
    assert rows[0]["species"] == 3 and rows[0]["per_species"] == 5 and rows[0]["image_size"] == 64
    transfer = rows[1:]
    assert [(r["method"], r["train_fraction"], r["seed"]) for r in transfer] == [
        (m, f, seed) for f in (1.0, 0.5) for seed in (0, 1) for m in ("scratch", "probe", "finetune")
    ]
    assert len({r["val_split"] for r in transfer}) == 1 and {r["val_images"] for r in transfer} == {5}
    assert {r["train_images"] for r in transfer if r["train_fraction"] == 1.0} == {19}
    assert {r["train_images"] for r in transfer if r["train_fraction"] == 0.5} == {8}  # round(n / 2) of 4, 5, 5, 5
    assert all(r["weights"] is None for r in transfer if r["method"] == "scratch")
    assert {r["weights"] for r in transfer if r["method"] != "scratch"} == {"pretrain-resnet18-3x5-seed0"}
    assert all(len(r["val_acc_per_epoch"]) == r["epochs"] == 1 for r in transfer)
    # the runs live where the notebook looks for them, and a second call loads them, training nothing
    assert sorted(p.name for p in (tmp_path / "work" / "fast").iterdir())[:3] == [
        "pretrain-resnet18-3x5-seed0",
        "transfer-resnet18-finetune-drawn-100%-seed0",
        "transfer-resnet18-finetune-drawn-100%-seed1",
    ]
    capsys.readouterr()
    bench.main(argv)  # the same command again
    printed = capsys.readouterr().out
    assert "Training" not in printed and printed.count("Loading the finished run") == 9
    again = [json.loads(line) for line in out.read_text().splitlines()][14:]
    assert [r["final_val_acc"] for r in again if r["method"] != "probe"] == [
        r["final_val_acc"] for r in transfer if r["method"] != "probe"
    ]
    bench.main(["--table", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "pretraining: resnet18 64 px, 3 species x 5" in printed
    assert printed.count("| resnet18 | 64 |") == 6


# --------------------------------------------------------------------------------------------
# Notebook 09's tables and figure (resnet_course.transfer, plots.plot_label_efficiency)
# --------------------------------------------------------------------------------------------


def _rows(table: dict) -> list[dict]:
    """Rows as label_efficiency returns them, from {(method, fraction): [acc per seed]}."""
    images = {1.0: 452, 0.25: 113, 0.1: 45}
    return [
        {
            "method": method,
            "train_fraction": fraction,
            "seed": seed,
            "train_images": images[fraction],
            "val_acc": acc,
            "best_val_acc": acc,
            "seconds": 1.0,
            "history": [],
            "checkpoint": None,
        }
        for (method, fraction), accs in table.items()
        for seed, acc in enumerate(accs)
    ]


TABLE = {
    ("from scratch", 1.0): [0.80, 0.70, 0.90],
    ("fine-tuning", 1.0): [0.85, 0.80, 0.90],
    ("from scratch", 0.1): [0.30, 0.40, 0.35],
    ("fine-tuning", 0.1): [0.70, 0.50, 0.60],
    ("linear probe", 0.1): [0.50, 0.50, 0.50],
}


def test_summary_is_the_mean_and_range_over_seeds():
    found = {(s["method"], s["train_fraction"]): s for s in transfer.summary(_rows(TABLE))}
    assert found["from scratch", 1.0] == {
        "method": "from scratch",
        "train_fraction": 1.0,
        "train_images": 452,
        "seeds": 3,
        "mean": pytest.approx(0.8),
        "low": 0.70,
        "high": 0.90,
    }
    assert found["fine-tuning", 0.1]["mean"] == pytest.approx(0.6) and found["linear probe", 0.1]["seeds"] == 3


def test_gains_pair_the_runs_of_the_same_seed():
    gains = transfer.gains(_rows(TABLE))
    assert gains[1.0] == pytest.approx([0.05, 0.10, 0.0]) and gains[0.1] == pytest.approx([0.40, 0.10, 0.25])
    assert transfer.gains(_rows(TABLE), "linear probe") == {0.1: pytest.approx([0.20, 0.10, 0.15])}
    # a seed missing one of the two runs is left out, not paired with another seed
    assert transfer.gains(_rows({("from scratch", 0.1): [0.3], ("fine-tuning", 0.1): [0.7, 0.9]})) == {
        0.1: [pytest.approx(0.4)]
    }


def test_summary_table_has_a_line_per_fraction_and_a_column_per_method():
    lines = transfer.summary_table(_rows(TABLE)).splitlines()
    assert lines[0].split() == ["training", "images", "from", "scratch", "linear", "probe", "fine-tuning"]
    assert lines[1].startswith(" 452 (100%)") and lines[2].startswith("  45 ( 10%)")
    assert "80.0% (70.0%-90.0%)" in lines[1] and "85.0% (80.0%-90.0%)" in lines[1]
    assert lines[2].split()[3:] == ["35.0%", "(30.0%-40.0%)", "50.0%", "(50.0%-50.0%)", "60.0%", "(50.0%-70.0%)"]
    assert lines[1].index("85.0%") > lines[2].index("50.0%")  # the probe's column is blank at 100 %


def test_label_efficiency_figure_draws_means_ranges_and_chance():
    fig = plot_label_efficiency(transfer.summary(_rows(TABLE)), num_classes=4)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["45", "452"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    chance = next(line for label, line in lines.items() if label.startswith("chance"))
    assert list(chance.get_ydata()) == [25, 25]
    bars = {c.get_label(): c for c in ax.containers}  # one errorbar container per method
    scratch = next(c for label, c in bars.items() if label.startswith("from scratch (mean of 3 seeds"))
    data_line, _, (range_bars,) = scratch.lines
    assert list(data_line.get_xdata()) == [45, 452] and list(data_line.get_ydata()) == pytest.approx([35, 80])
    assert np.allclose([s[:, 1] for s in range_bars.get_segments()], [[30, 40], [70, 90]])
    assert len(bars) == 3 and any(label.startswith("linear probe") for label in bars)
    with pytest.raises(ValueError, match="no runs"):
        plot_label_efficiency([])


def test_full_settings_match_the_pretraining_budget():
    from resnet_course import config, pretraining

    full = config.Settings(fast=False, image_size=112, epochs=30, batch_size=8, demo_steps=300)
    assert full.pretraining_per_species == pretraining.DEFAULT_PER_SPECIES
    assert full.pretraining_epochs == pretraining.PRETRAINING_EPOCHS and full.transfer_seeds == 3
    assert full.transfer_epochs == 15
    assert transfer.FINETUNE_LR == pytest.approx(1e-4) and transfer.FRACTIONS == (1.0, 0.25, 0.1)
    assert transfer.pretraining_folder(12, 10).name != transfer.pretraining_folder(12, 150).name
