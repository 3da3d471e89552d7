"""Nothing saved is ever lost or silently mixed: a run folder belongs to one training, a crash at
any file write is repaired on resume, a resumed run is the same run, a diverging run stops
without being saved, and a file that is not a course checkpoint is refused in one clear message.

Most tests call the command line in-process (``cli.main``: an escaping exception would fail the
test, so exit code 2 with a message means no traceback). The crash tests need real processes that
die by SIGKILL: one driver process imports the package once and forks a child per command (the
``RESNET_COURSE_CRASH_AT`` hook makes a child kill itself at a chosen file write); two concurrent
trainings are two ``python -m resnet_course`` processes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_course.birds import CLASS_NAMES
from resnet_course.cli import main
from resnet_course.evaluation import load_checkpoint
from resnet_course.runfolder import LOCK_NAME, RunFolderError, RunFolderLock, SaveFailed
from resnet_course.training import TrainingDiverged, fit

EPOCH_FILES = ["best.pt", "checkpoint.pt", "history.json", "run.json"]


@pytest.fixture(scope="module")
def birds(tmp_path_factory, bird_folder):
    """5 small JPEGs per course class (16 train / 4 val), each class a different colour."""
    return bird_folder(tmp_path_factory.mktemp("safety") / "birds")


def train_args(birds, out, *extra):
    return [
        "train",
        "--model",
        "resnet18",
        "--data",
        str(birds),
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "--fp32",
        *map(str, extra),
    ]


@pytest.fixture(scope="module")
def one_epoch_run(birds, fast_disk):
    """A finished one-epoch resnet18 run at 32 px, trained in-process."""
    out = fast_disk / "r18"
    assert main(train_args(birds, out)) == 0
    return out


def files_of(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


# ------------------------------------------------------------------------------------------
# Small models on tensors, for what needs no real model
# ------------------------------------------------------------------------------------------


class Named(TensorDataset):
    """A TensorDataset that lists file names, as the bird datasets do (so it has a data fingerprint)."""

    def __init__(self, images, labels, prefix):
        super().__init__(images, labels)
        self.samples = [(f"{prefix}{i}.jpg", int(label)) for i, label in enumerate(labels)]


def tiny_loaders(prefix="img", batch_size=8, poison=None):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 4
    images = torch.randn(32, 3, 8, 8, generator=g)
    for c in range(3):
        images[labels == c, c] += 2.0
    train = DataLoader(
        Named(images, labels, prefix), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    val = DataLoader(Named(images[:16], labels[:16], prefix + "v"), batch_size=8)
    return (train if poison is None else PoisonedLoader(train, *poison)), val


class PoisonedLoader:
    """Wraps a loader; at a given epoch and step (1-based) its images are NaN, so the loss becomes NaN."""

    def __init__(self, loader, epoch, step):
        self.loader, self.epoch, self.step, self.started = loader, epoch, step, 0
        self.dataset, self.batch_size, self.generator, self.sampler = (
            loader.dataset,
            loader.batch_size,
            loader.generator,
            loader.sampler,
        )

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.started += 1
        for step, (images, labels) in enumerate(self.loader, 1):
            if self.started == self.epoch and step == self.step:
                images = torch.full_like(images, float("nan"))
            yield images, labels


def tiny_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )


def tiny_fit(out, epochs=1, resume=False, seed=0, **kwargs):
    loaders = kwargs.pop("loaders", None) or tiny_loaders()
    return fit(
        tiny_net(), *loaders, epochs, out_dir=out, resume=resume, progress=False, precision="fp32", seed=seed, **kwargs
    )


# ------------------------------------------------------------------------------------------
# A resumed run is the same run
# ------------------------------------------------------------------------------------------


def test_resume_with_another_recipe_is_refused_naming_every_difference(tmp_path):
    tiny_fit(tmp_path, optimizer="sgd")
    before = files_of(tmp_path)
    with pytest.raises(RunFolderError) as refused:  # was: KeyError 'step' deep inside Adam
        tiny_fit(
            tmp_path,
            2,
            resume=True,
            optimizer="adam",
            lr=0.1,
            label_smoothing=0.1,
            schedule="step",
            weight_decay=0.5,
            warmup_epochs=0,
            loaders=tiny_loaders(batch_size=4),
        )
    for difference in (
        "optimizer: 'sgd' there, 'adam' now",
        "lr: 0.01 there, 0.1 now",
        "batch_size: 8 there, 4 now",
        "label_smoothing: 0.0 there, 0.1 now",
        "schedule: 'cosine' there, 'step' now",
        "weight_decay: 0.0001 there, 0.5 now",
        "warmup_epochs: 1.0 there, 0 now",
    ):
        assert difference in str(refused.value)
    with pytest.raises(RunFolderError, match="data: '[0-9a-f]+' there, '[0-9a-f]+' now"):
        tiny_fit(tmp_path, 2, resume=True, loaders=tiny_loaders(prefix="other"))
    assert files_of(tmp_path) == before
    assert len(tiny_fit(tmp_path, 2, resume=True, optimizer="sgd")) == 2  # the same recipe continues


def test_cli_resume_with_other_data_size_batch_or_model_exits_2_and_keeps_the_run(
    one_epoch_run, birds, tmp_path, capsys
):
    other = tmp_path / "other_birds"
    for name in CLASS_NAMES:
        (other / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (40, 36), (9 * i, 50, 90)).save(other / name / f"photo{i}.jpg")
    before = files_of(one_epoch_run)
    base = train_args(birds, one_epoch_run, "--resume")
    for change, named in (
        (["--image-size", "48", "--batch-size", "2"], ["image_size: 32 there, 48 now", "batch_size: 4 there, 2 now"]),
        (["--lr", "0.05"], ["lr: 0.001 there, 0.05 now"]),
        (["--model", "resnet34"], ["model_name: 'resnet18' there, 'resnet34' now"]),
        (["--data", other], ["data: "]),
    ):
        capsys.readouterr()
        assert main(base + [str(c) for c in change]) == 2
        err = capsys.readouterr().err
        assert "trained differently" in err and all(text in err for text in named), err
    assert files_of(one_epoch_run) == before


# ------------------------------------------------------------------------------------------
# A run owns its folder; earlier files are never overwritten
# ------------------------------------------------------------------------------------------


def test_a_new_run_never_overwrites_best_and_history_left_without_a_checkpoint(tmp_path):
    tiny_fit(tmp_path)
    (tmp_path / "checkpoint.pt").unlink()
    before = files_of(tmp_path)
    for resume in (False, True):
        with pytest.raises(RunFolderError, match="best.pt and history.json of an earlier run"):
            tiny_fit(tmp_path, resume=resume)
    assert files_of(tmp_path) == before


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl.flock is POSIX")
def test_a_folder_locked_by_another_training_is_refused_and_a_dead_lock_is_not(tmp_path):
    import fcntl

    lock = tmp_path / LOCK_NAME
    with open(lock, "a+") as other:  # another open file: to flock, another training
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("PID 4242 on elsewhere, since 2026-01-01 00:00:00\n")
        other.flush()
        with pytest.raises(RunFolderError, match=r"in use by another training \(PID 4242 on elsewhere"):
            tiny_fit(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # nothing written meanwhile
    # the lock file of a training that died (the OS released its lock) does not stop the next one
    tiny_fit(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == EPOCH_FILES
    with RunFolderLock(tmp_path):
        assert f"PID {os.getpid()}" in lock.read_text()
        with RunFolderLock(tmp_path):  # the same process may take it again (train_or_load around fit)
            pass
        assert lock.exists()
    assert not lock.exists()


@pytest.mark.slow
def test_two_trainings_into_one_folder_one_refuses_and_nothing_is_lost(birds, fast_disk):
    env = {**os.environ, "RESNET_COURSE_FAST": "1", "OMP_NUM_THREADS": "1"}
    run = fast_disk / "two_at_once"
    command = [sys.executable, "-m", "resnet_course", *train_args(birds, run)]
    both = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    finished = [(p.wait(timeout=300), *p.communicate()) for p in both]
    codes = sorted(code for code, _, _ in finished)
    assert codes == [0, 2], finished
    refusal = next(err for code, _, err in finished if code == 2)
    assert (
        "in use by another training" in refusal or "already holds a training run" in refusal
    ) and "Traceback" not in refusal
    assert sorted(p.name for p in run.iterdir()) == EPOCH_FILES
    state = load_checkpoint(run / "checkpoint.pt")
    assert json.loads((run / "history.json").read_text()) == state["history"] and len(state["history"]) == 1
    assert load_checkpoint(run / "best.pt")["val_acc"] == state["history"][0]["val_acc"]


# ------------------------------------------------------------------------------------------
# A crash at any file write: repaired on resume, no temporary file left
# ------------------------------------------------------------------------------------------

DRIVER = r"""
import json, os, sys
from resnet_course import cli, data, evaluation, models, training  # imported once, before forking
for argv, crash_at, log in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:  # the child: one command line, as `python -m resnet_course` would run it
        os.environ.pop("RESNET_COURSE_CRASH_AT", None)
        if crash_at:
            os.environ["RESNET_COURSE_CRASH_AT"] = crash_at
        output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(output, 1)
        os.dup2(output, 2)
        code = cli.main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    out = argv[argv.index("--out") + 1]
    print(json.dumps({"code": code, "files": sorted(os.listdir(out)) if os.path.isdir(out) else []}), flush=True)
"""
#: Where a training is killed: right after the file is in place, or (tmp:) after its temporary
#: file is complete, before it replaces the old one.
CRASH_POINTS = [
    "tmp:checkpoint.pt",
    "checkpoint.pt",
    "tmp:best.pt",
    "best.pt",
    "tmp:history.json",
    "history.json",
    "tmp:run.json",
    "run.json",
]


def _folder(point):
    return ("while_writing_" if point.startswith("tmp:") else "after_") + point.split(":")[-1].split(".")[0]


@pytest.fixture(scope="module")
def crashed_and_resumed(birds, fast_disk):
    """For each file write of an epoch: a training killed (SIGKILL) right there, then ``--resume``;
    plus a training that was never killed, and a training into a folder locked by this process.
    Returns the folder, then per command its exit code and files afterwards, and its output."""
    root = fast_disk / "crashes"
    root.mkdir()
    plan = [(train_args(birds, root / "straight"), None, str(root / "straight.log"))]
    for point in CRASH_POINTS:
        out = root / _folder(point)
        plan += [
            (train_args(birds, out), point, str(root / f"{out.name}.killed.log")),
            (train_args(birds, out, "--resume"), None, str(root / f"{out.name}.resumed.log")),
        ]
    locked = root / "locked"
    locked.mkdir()
    plan.append((train_args(birds, locked), None, str(root / "locked.log")))
    env = {**os.environ, "RESNET_COURSE_FAST": "1", "OMP_NUM_THREADS": "1"}
    with RunFolderLock(locked):
        finished = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps(plan)], capture_output=True, text=True, env=env, timeout=600
        )
    assert finished.returncode == 0, finished.stderr
    results = [json.loads(line) for line in finished.stdout.splitlines()]
    logs = [Path(log).read_text() for _, _, log in plan]
    return root, results, logs


@pytest.mark.slow
def test_a_crash_at_any_write_is_repaired_on_resume(crashed_and_resumed):
    root, results, logs = crashed_and_resumed
    assert results[0]["code"] == 0, logs[0]
    straight = load_checkpoint(root / "straight" / "checkpoint.pt")
    for i, point in enumerate(CRASH_POINTS):
        killed, resumed = results[1 + 2 * i], results[2 + 2 * i]
        assert killed["code"] == -9, (point, logs[1 + 2 * i])  # SIGKILL: no clean-up ran
        assert resumed["code"] == 0, (point, logs[2 + 2 * i])
        out = root / _folder(point)
        assert resumed["files"] == EPOCH_FILES, point  # no temporary file, no lock left
        state = load_checkpoint(out / "checkpoint.pt")
        assert json.loads((out / "history.json").read_text()) == state["history"], point
        best = load_checkpoint(out / "best.pt")
        assert (best["epoch"], best["val_acc"]) == (1, state["history"][0]["val_acc"]), point
        for key, value in straight["model"].items():  # the same weights as a run never killed
            assert torch.equal(state["model"][key], value) and torch.equal(best["model"][key], value), (point, key)
    after_checkpoint = CRASH_POINTS.index("checkpoint.pt")
    assert results[1 + 2 * after_checkpoint]["files"] == ["checkpoint.pt", LOCK_NAME]
    assert "Repaired after a crash: best.pt now holds epoch 1" in logs[2 + 2 * after_checkpoint]
    while_checkpoint = CRASH_POINTS.index("tmp:checkpoint.pt")
    assert any(".checkpoint.pt.tmp-" in name for name in results[1 + 2 * while_checkpoint]["files"])


@pytest.mark.slow
def test_a_killed_training_does_not_leave_its_folder_locked(crashed_and_resumed):
    _, results, logs = crashed_and_resumed
    for i in range(len(CRASH_POINTS)):
        assert LOCK_NAME in results[1 + 2 * i]["files"]  # the killed run's lock file stays behind,
        assert results[2 + 2 * i]["code"] == 0 and "in use" not in logs[2 + 2 * i]  # but holds nothing


@pytest.mark.slow
def test_a_training_into_a_folder_another_process_holds_exits_2(crashed_and_resumed):
    _, results, logs = crashed_and_resumed
    assert results[-1] == {"code": 2, "files": [LOCK_NAME]}
    assert f"in use by another training (PID {os.getpid()}" in logs[-1] and "Traceback" not in logs[-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resume_repairs_best_and_history_left_stale_by_a_crash(tmp_path, seed):
    """A crash after checkpoint.pt of an improving epoch 2, before best.pt and history.json. Epoch 1
    warms the learning rate up, so epoch 2, at the full rate, improves on it whatever the seed."""
    recipe = dict(optimizer="sgd", lr=0.3, schedule="none", warmup_epochs=1, seed=seed)
    tiny_fit(tmp_path, 1, **recipe)
    stale = {name: (tmp_path / name).read_bytes() for name in ("best.pt", "history.json")}
    history = tiny_fit(tmp_path, 2, resume=True, **recipe)
    assert history[1]["val_acc"] > history[0]["val_acc"]  # epoch 2 improved, so best.pt was rewritten
    for name, data in stale.items():
        (tmp_path / name).write_bytes(data)
    assert len(tiny_fit(tmp_path, 2, resume=True, **recipe)) == 2
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert json.loads((tmp_path / "history.json").read_text()) == state["history"]
    best = load_checkpoint(tmp_path / "best.pt")
    assert (best["epoch"], best["val_acc"]) == (2, history[1]["val_acc"])
    assert all(torch.equal(best["model"][k], v) for k, v in state["model"].items())


# ------------------------------------------------------------------------------------------
# A run that diverges stops and is never saved
# ------------------------------------------------------------------------------------------


def test_a_loss_that_becomes_nan_stops_training_naming_epoch_and_step(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 2/3, step 3/4") as stopped:
        tiny_fit(tmp_path, 3, loaders=tiny_loaders(poison=(2, 3)))
    assert "still holds epoch 1, the last good one" in str(stopped.value)
    assert len(stopped.value.history) == 1
    state, best = load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(tmp_path / "best.pt")
    assert state["epoch"] == best["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert len(json.loads((tmp_path / "history.json").read_text())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == EPOCH_FILES  # the lock is released


@pytest.mark.parametrize("lr", ["nan", "inf", "-inf", "0"])
def test_a_learning_rate_that_is_not_a_positive_number_is_refused(birds, tmp_path, lr, capsys):
    assert main(train_args(birds, tmp_path / "run", f"--lr={lr}")) == 2
    assert f"--lr must be a positive number, not {float(lr)}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_enormous_learning_rate_stops_with_a_message_and_saves_nothing(birds, tmp_path, capsys):
    assert main(train_args(birds, tmp_path / "run", "--lr", "1e30")) == 2
    err = capsys.readouterr().err
    assert "Training stopped: the training loss became" in err and "at epoch 1/1, step " in err
    assert "no epoch had finished, so nothing was saved" in err and "smaller learning rate" in err
    assert list((tmp_path / "run").iterdir()) == []


# ------------------------------------------------------------------------------------------
# Files that are not course checkpoints
# ------------------------------------------------------------------------------------------


def _bad_checkpoints(folder, good):
    import torchvision

    folder.mkdir()
    whole = good.read_bytes()
    files = {
        "truncated": (whole[: len(whole) // 2], "damaged or truncated"),
        "empty": (b"", "empty file"),
        "random": (bytes(range(256)) * 40, "not a PyTorch file"),
        "json": (json.dumps({"model": "resnet18", "epoch": 3}).encode(), "looks like JSON"),
    }
    for name, (data, _) in files.items():
        (folder / f"{name}.pt").write_bytes(data)
    torch.save(nn.Linear(3, 2), folder / "whole_model.pt")
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), folder / "torchvision.pt")
    expected = {name: what for name, (_, what) in files.items()}
    expected.update(whole_model="whole model saved with torch.save(model)", torchvision="plain state_dict")
    return expected


def test_a_file_that_is_not_a_course_checkpoint_exits_2_saying_what_it_is_not(one_epoch_run, birds, tmp_path, capsys):
    expected = _bad_checkpoints(tmp_path / "bad", one_epoch_run / "best.pt")
    photo = birds / CLASS_NAMES[0] / "0.jpg"
    for name, what in expected.items():
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(tmp_path / "bad" / f"{name}.pt"), str(photo)]) == 2, name
        err = capsys.readouterr().err
        assert f"{name}.pt is not a course checkpoint: " in err and what in err, (name, err)
        assert "A course checkpoint is the checkpoint.pt or best.pt" in err
        assert "weights_only" not in err, (name, err)  # never the advice to unpickle an untrusted file


def test_resume_from_a_damaged_checkpoint_exits_2_and_keeps_it(one_epoch_run, birds, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in EPOCH_FILES:
        (out / name).write_bytes((one_epoch_run / name).read_bytes())
    (out / "checkpoint.pt").write_bytes((one_epoch_run / "checkpoint.pt").read_bytes()[:100_000])
    before = files_of(out)
    assert main(train_args(birds, out, "--resume", "--epochs", "2")) == 2
    assert "checkpoint.pt is not a course checkpoint: it is a damaged or truncated" in capsys.readouterr().err
    assert files_of(out) == before


def test_predict_refuses_a_checkpoint_with_diverged_weights(one_epoch_run, tmp_path, birds, capsys):
    state = load_checkpoint(one_epoch_run / "best.pt")
    state["model"]["fc.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "nan.pt"), str(birds / CLASS_NAMES[0] / "0.jpg")]) == 2
    captured = capsys.readouterr()
    assert "not finite numbers" in captured.err and "nan%" not in captured.out


# ------------------------------------------------------------------------------------------
# Bad options and bad places: one message, exit 2, before any work
# ------------------------------------------------------------------------------------------


def test_out_that_is_a_file_or_lies_under_one_is_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    missing_data = tmp_path / "no_such_data"  # would fail later: the folder is checked first
    for out, says in ((a_file, "it is a file"), (a_file / "run", "lies under")):
        assert main(train_args(missing_data, out)) == 2
        err = capsys.readouterr().err
        assert says in err and "does not exist" not in err
    assert a_file.read_text() == "mine"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder nobody can write")
def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    assert main(train_args(tmp_path / "no_such_data", "/proc/resnet_course_run")) == 2
    assert "cannot write into /proc/resnet_course_run" in capsys.readouterr().err


def test_batch_size_one_where_batchnorm_would_fail_is_refused(birds, tmp_path, capsys):
    assert main(train_args(birds, tmp_path / "run", "--batch-size", "1")) == 2
    assert "--batch-size 1 cannot train resnet18 at 32 px" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_negative_workers_and_topk_zero_are_clear_errors(birds, one_epoch_run, tmp_path, capsys):
    assert main(train_args(birds, tmp_path / "run", "--num-workers", "-1")) == 2
    assert "--num-workers must be 0" in capsys.readouterr().err
    photo = birds / CLASS_NAMES[0] / "0.jpg"
    assert main(["predict", "--checkpoint", str(one_epoch_run / "best.pt"), "--topk", "0", str(photo)]) == 2
    assert "--topk must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_is_named_and_the_last_epoch_survives(tmp_path):
    def fill_the_disk(record):  # after epoch 1: the next checkpoint.pt goes to a full device
        os.symlink("/dev/full", tmp_path / f".checkpoint.pt.tmp-{os.getpid()}")

    with pytest.raises(
        SaveFailed,
        match=r"could not write .*checkpoint.pt: the disk is full.*previous "
        r"checkpoint.pt is kept",
    ) as failed:
        tiny_fit(tmp_path, 2, on_epoch_end=fill_the_disk)
    assert "inline_container" not in str(failed.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == EPOCH_FILES
    assert len(tiny_fit(tmp_path, 2, resume=True)) == 2  # and the run continues once there is room


@pytest.mark.parametrize("variable", ["RESNET_COURSE_FAST", "RESNET_COURSE_FP32"])
def test_an_on_off_variable_set_to_neither_exits_2_with_a_message(birds, tmp_path, monkeypatch, capsys, variable):
    monkeypatch.setenv(variable, "maybe")
    assert main(train_args(birds, tmp_path / "run")) == 2
    assert f"error: {variable}='maybe' is neither on nor off" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resuming_a_checkpoint_whose_optimiser_state_does_not_fit_is_one_clear_error(tmp_path):
    """A checkpoint from before the recipe split weight decay into two parameter groups holds one
    group; resuming it must say so (RunFolderError, the CLI's exit 2), not fail inside torch."""
    tiny_fit(tmp_path, optimizer="sgd")
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    groups = state["optimizer"]["param_groups"]
    state["optimizer"]["param_groups"] = [{**groups[0], "params": groups[0]["params"] + groups[1]["params"]}]
    torch.save(state, tmp_path / "checkpoint.pt")
    before = files_of(tmp_path)
    with pytest.raises(RunFolderError, match="optimiser state does not fit the current recipe"):
        tiny_fit(tmp_path, 2, resume=True, optimizer="sgd")
    assert files_of(tmp_path) == before
    assert not (tmp_path / LOCK_NAME).exists()  # the lock was released
