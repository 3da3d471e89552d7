"""Tests for the command line: train, resume, predict, the data commands, and clear errors."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from conftest import tiny_train_args
from resnet_course.birds import CLASS_NAMES
from resnet_course.cli import main


def run_module(*args, timeout=120):
    """Run ``python -m resnet_course ARGS`` in a fresh process, as a user would."""
    env = {**os.environ, "RESNET_COURSE_FAST": "1"}
    return subprocess.run(
        [sys.executable, "-m", "resnet_course", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def tiny_birds(tmp_path_factory, bird_folder):
    """8 small JPEGs per course class, each class a different colour."""
    return bird_folder(tmp_path_factory.mktemp("tiny") / "birds", per_class=8, shade_step=3)


@pytest.fixture(scope="module")
def trained_run(tiny_birds, fast_disk):
    """One epoch of resnet18 at 32 px, then resumed to two epochs; returns (out_dir, outputs)."""
    out = fast_disk / "cli-run"
    common = tiny_train_args(tiny_birds, out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        first = main(common + ["--epochs", "1"])
    first_history = json.loads((out / "history.json").read_text())
    second = main(common + ["--epochs", "2", "--resume", "--fp32"])
    return out, first, first_history, second, printed.getvalue()


@pytest.mark.slow
def test_train_writes_checkpoint_and_one_history_entry_per_epoch(trained_run):
    out, first_code, first_history, _, _ = trained_run
    assert first_code == 0
    assert [r["epoch"] for r in first_history] == [1]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= first_history[0].keys()
    assert (out / "checkpoint.pt").is_file() and (out / "best.pt").is_file()


def test_resume_continues_from_the_last_epoch(trained_run):
    out, _, first_history, second_code, _ = trained_run
    assert second_code == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0] == first_history[0]


def test_train_prints_what_it_does_and_one_line_per_epoch(trained_run):
    printed = trained_run[-1]
    assert "Training resnet18" in printed and re.search(r"\d+ train / \d+ val images", printed)
    assert "epoch 1/1" in printed and "val loss" in printed
    assert "best val accuracy" in printed


def test_train_refuses_to_overwrite_a_run_without_resume(trained_run, tiny_birds, capsys):
    out = trained_run[0]
    before = (out / "checkpoint.pt").read_bytes()
    code = main(tiny_train_args(tiny_birds, out))
    assert code == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_predict_prints_a_class_name_and_probability_per_image(trained_run, tmp_path, capsys, bird_colours):
    out = trained_run[0]
    photo = tmp_path / "bird.jpg"
    Image.new("RGB", (90, 60), bird_colours[0]).save(photo)
    odd = tmp_path / "odd.png"
    Image.new("RGBA", (13, 77), (10, 20, 30, 128)).save(odd)
    code = main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--topk", "2", str(photo), str(odd)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert [line.split(":")[0] for line in lines] == [str(photo), str(odd)]
    for line in lines:
        predicted = line.split(": ", 1)[1].split(" (")[0]
        assert predicted in CLASS_NAMES and "%" in line


def test_predict_reports_unreadable_images_and_still_predicts_the_others(trained_run, tmp_path, capsys, bird_colours):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (32, 32), bird_colours[1]).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    code = main(
        [
            "predict",
            "--checkpoint",
            str(trained_run[0] / "best.pt"),
            str(good),
            str(broken),
            str(tmp_path / "missing.jpg"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.startswith(str(good))
    assert "broken.jpg" in captured.err and "missing.jpg" in captured.err


def test_predict_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path / "nope.pt"), "x.jpg"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_bad_numbers_are_clear_errors(tiny_birds, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_birds), "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--lr", "nan", "--lr must be a positive number"),
        ("--lr", "inf", "--lr must be a positive number"),
        ("--lr", "0", "--lr must be a positive number"),
        ("--weight-decay", "-1", "--weight-decay must be"),
        ("--warmup-epochs", "-1", "--warmup-epochs must be between 0 and --epochs"),
        ("--warmup-epochs", "5", "--warmup-epochs must be between 0 and --epochs (2)"),
    ],
)
def test_bad_recipe_values_are_clear_errors_before_any_work(tiny_birds, tmp_path, capsys, option, value, message):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_birds), "--epochs", "2", "--out", str(out), option, value]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_unknown_model_exits_2_with_a_message_not_a_traceback(tmp_path):
    finished = run_module("train", "--model", "resnet9", "--out", tmp_path)
    assert finished.returncode == 2
    assert "invalid choice: 'resnet9'" in finished.stderr and "resnet50v2" in finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.slow
def test_missing_data_folder_exits_2_with_a_message_not_a_traceback(tmp_path):
    finished = run_module(
        "train",
        "--model",
        "resnet18",
        "--data",
        tmp_path / "no_such_folder",
        "--epochs",
        "1",
        "--out",
        tmp_path / "run",
    )
    assert finished.returncode == 2
    assert "no_such_folder does not exist" in finished.stderr and "make-standin" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_help_shows_the_commands_and_examples():
    finished = run_module("--help")
    assert finished.returncode == 0
    for word in ("train", "predict", "make-standin", "import-kaggle", "examples:", "torchrun"):
        assert word in finished.stdout
    for command in ("train", "predict", "make-standin", "import-kaggle"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0


def test_import_kaggle_copies_the_four_classes(tmp_path, capsys):
    src = tmp_path / "birds-525"
    for shade, split in enumerate(("train", "valid")):
        for folder in ("BANANAQUIT", "BLACK SKIMMER", "BLACK THROATED BUSHTIT", "COCKATOO", "GANG GANG COCKATOO"):
            (src / split / folder).mkdir(parents=True)  # two different photos (identical ones are one photo)
            Image.new("RGB", (8, 8), (100 * shade, 0, 0)).save(src / split / folder / "1.jpg")
    dst = tmp_path / "bird_photos"
    assert main(["import-kaggle", str(src), "--out", str(dst)]) == 0
    assert sorted(p.name for p in dst.iterdir()) == sorted(CLASS_NAMES)
    assert sorted(p.name for p in (dst / "Cockatoo").iterdir()) == ["train_1.jpg", "valid_1.jpg"]
    assert main(["import-kaggle", str(tmp_path / "nowhere"), "--out", str(dst)]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_make_standin_draws_565_images_in_the_course_classes(tmp_path):
    assert main(["make-standin", "--out", str(tmp_path / "standin")]) == 0
    counts = {p.name: len(list(p.glob("*.jpg"))) for p in (tmp_path / "standin").iterdir() if p.is_dir()}
    assert counts == {"Bananaquit": 166, "Black Skimmer": 122, "Black Throated Bushtiti": 111, "Cockatoo": 166}
