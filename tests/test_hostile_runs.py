"""Hostile cases against train, resume and predict: each is refused with one message and exit
code 2 (130 for an interrupt), no traceback, and every file that existed before is unchanged.

One finished one-epoch resnet18 run at 32 px (from random weights) and one started from a weights
file (a torchvision-format resnet18 state_dict made here) are copied for each case, which then
damages the copy or its data the way a hurried student or an attacker would, and runs the command
line in-process (``cli.main``: an escaping exception fails the test, so exit code 2 with a message
means no traceback).
"""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import tiny_train_args
from resnet_course import cli, config
from resnet_course.checkpoints import RUN_FILE
from resnet_course.data import load_birds
from resnet_course.evaluation import load_checkpoint
from resnet_course.runfolder import LOCK_NAME, RunFolderError
from resnet_course.runs import train_or_load
from resnet_course.training import fit, set_seed

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def train_args(data, out, *extra):
    return tiny_train_args(data, out, "--fp32", *extra)


def tree(*folders) -> dict:
    """Every file under ``folders`` with a hash of its bytes (symlinks by their target)."""
    found = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18-lookalike.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def finished_runs(bird_folder, weights_file, fast_disk):
    """A finished run from random weights and one from ``weights_file``."""
    root = fast_disk / "finished"
    data = bird_folder(root / "birds")
    assert cli.main(train_args(data, root / "scratch")) == 0
    assert cli.main(train_args(data, root / "weighted", "--weights", weights_file)) == 0
    return root


@pytest.fixture
def case_dir(fast_disk, request):
    """A folder of its own for one case, in memory where possible (see ``fast_disk``)."""
    folder = fast_disk / f"case-{request.node.name}".replace("/", "_").replace(" ", "_")
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _copy_run(finished_runs, tmp_path, which="scratch"):
    shutil.copytree(finished_runs / which, tmp_path / "run")
    shutil.copytree(finished_runs / "birds", tmp_path / "birds")
    return tmp_path / "run", tmp_path / "birds"


def _damage_meta(run, **changes):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["meta"] = changes.pop("meta") if "meta" in changes else {**state["meta"], **changes}
    torch.save(state, run / "checkpoint.pt")


def _replace_a_photo(data):
    photo = sorted((data / "Cockatoo").iterdir())[0]
    photo.write_bytes((data / "Bananaquit" / "0.jpg").read_bytes())  # same name, other bytes


# name: (which run to copy, how to damage it (run, data, weights) -> None, extra options, message)
RESUME_CASES = {
    "resume adding --weights": ("scratch", None, lambda w: ["--weights", w], "weights: None there"),
    "resume dropping --weights": ("weighted", None, lambda w: [], "now"),
    "resume adding --freeze-backbone": (
        "weighted",
        None,
        lambda w: ["--weights", w, "--freeze-backbone"],
        "backbone_frozen: False there, True now",
    ),
    "resume with --no-zero-init": (
        "scratch",
        None,
        lambda w: ["--no-zero-init"],
        "zero_init_residual: True there, False now",
    ),
    "resume with another seed": ("scratch", None, lambda w: ["--seed", "1"], "seed: 0 there, 1 now"),
    "resume with another --train-fraction": (
        "scratch",
        None,
        lambda w: ["--train-fraction", "0.5"],
        "train_fraction: 1.0 there, 0.5 now",
    ),
    "same file names, new image bytes": ("scratch", lambda run, data: _replace_a_photo(data), lambda w: [], "data: "),
    "best.pt copied to checkpoint.pt": (
        "scratch",
        lambda run, data: shutil.copy(run / "best.pt", run / "checkpoint.pt"),
        lambda w: [],
        "cannot be resumed: it holds weights but not the training",
    ),
    "meta is a list": (
        "scratch",
        lambda run, data: _damage_meta(run, meta=["resnet18", 4]),
        lambda w: [],
        "cannot be resumed: its history or meta",
    ),
    "meta names another model": (
        "scratch",
        lambda run, data: _damage_meta(run, model_name="resnet9000"),
        lambda w: [],
        "model_name: 'resnet9000' there, 'resnet18' now",
    ),
    "checkpoint.pt is a folder": (
        "scratch",
        lambda run, data: (os.remove(run / "checkpoint.pt"), os.mkdir(run / "checkpoint.pt")),
        lambda w: [],
        "checkpoint.pt",
    ),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
@pytest.mark.slow
def test_a_resume_that_would_not_be_the_same_run_exits_2_and_changes_nothing(
    case, finished_runs, weights_file, case_dir, capsys
):
    which, damage, extra, message = RESUME_CASES[case]
    run, data = _copy_run(finished_runs, case_dir, which)
    if damage is not None:
        damage(run, data)
    if case == "resume dropping --weights":
        message = f"weights: {str(weights_file)!r} there, None now"
    before = tree(run, data)
    capsys.readouterr()
    code = cli.main(train_args(data, run, "--resume", "--epochs", "2", *extra(weights_file)))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert message in err, err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert tree(run, data) == before


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "nan", "inf"])
def test_a_train_fraction_outside_0_to_1_exits_2_before_any_work(value, finished_runs, case_dir, capsys):
    out = case_dir / "run"
    assert cli.main(train_args(finished_runs / "birds", out, "--train-fraction", value)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--train-fraction must be in (0, 1], not {float(value)}" in err and "Traceback" not in err, err
    assert not out.exists()


WEIGHTS_FILES = {  # name: (how to write it, what the message says it is)
    "empty": (lambda path: path.write_bytes(b""), "it is an empty file (0 bytes)"),
    "a pickled whole model": (lambda path: torch.save(torch.nn.Linear(2, 2), path), "unpickling it can run any code"),
    "JSON": (lambda path: path.write_text('{"model": "resnet18"}'), "looks like JSON"),
    "a truncated checkpoint": (lambda path: path.write_bytes(b"PK\x03\x04" + bytes(100)), "damaged or truncated"),
}


@pytest.mark.parametrize("case", list(WEIGHTS_FILES))
def test_weights_that_are_not_weights_exit_2_saying_what_the_file_is(case, finished_runs, case_dir, capsys):
    write, what = WEIGHTS_FILES[case]
    weights = case_dir / "weights.pth"
    write(weights)
    before = tree(case_dir, finished_runs / "birds")
    assert cli.main(train_args(finished_runs / "birds", case_dir / "run", "--weights", weights)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert what in err and err.count("error:") == 1 and "Traceback" not in err, err
    assert "weights_only" not in err  # never torch's advice to unpickle an untrusted file
    assert tree(case_dir, finished_runs / "birds") == before and not (case_dir / "run").exists()


# name: (how to damage the checkpoint's meta, message)
PREDICT_CASES = {
    "unknown model name": (dict(model_name="resnet9000"), "names a model the course does not build"),
    "negative class count": (dict(num_classes=-4), "number of classes (-4)"),
    "huge class count": (dict(num_classes=10**12), "number of classes (1000000000000)"),
    "class count not a number": (dict(num_classes="4"), "number of classes ('4')"),
    "class names of the wrong length": (dict(class_names=["a", "b"]), "class names do not list 4 names"),
    "huge image size": (dict(image_size=10**9), "image size (1000000000)"),
    "meta a list": (dict(meta=[1, 2, 3]), "'meta') is a list, not a dict"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
@pytest.mark.slow
def test_predict_with_a_checkpoint_whose_meta_is_nonsense_exits_2(case, finished_runs, case_dir, capsys):
    changes, message = PREDICT_CASES[case]
    run, data = _copy_run(finished_runs, case_dir)
    _damage_meta(run, **changes)
    before = tree(run, data)
    capsys.readouterr()
    code = cli.main(["predict", "--checkpoint", str(run / "checkpoint.pt"), str(data / "Cockatoo" / "0.jpg")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and message in err, err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    assert tree(run, data) == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_when_the_lock_is_taken_exits_2_and_leaves_no_empty_lock(finished_runs, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to("/dev/full")  # writing the lock's owner line fails, as on a full disk
    assert cli.main(train_args(finished_runs / "birds", run)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"could not write {run / LOCK_NAME}: " in err and err.count("error:") == 1, err
    assert "Traceback" not in err and list(run.iterdir()) == []


@pytest.mark.slow
def test_an_interrupt_while_best_pt_is_written_exits_130_and_keeps_the_run(
    finished_runs, case_dir, capsys, monkeypatch
):
    run, data = _copy_run(finished_runs, case_dir)
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "best.pt")}
    real_save = torch.save

    def interrupted_save(obj, file, *args, **kwargs):
        if "best.pt" in getattr(file, "name", ""):
            try:  # as torch's zip writer does when Ctrl-C arrives inside it
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed") from None
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    code = cli.main(train_args(data, case_dir / "new", "--epochs", "1"))
    err = capsys.readouterr().err
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "could not write" not in err
    assert {name: (run / name).read_bytes() for name in before} == before


def test_the_done_line_never_points_to_a_best_pt_that_cannot_be_read(finished_runs, case_dir, capsys):
    run, data = _copy_run(finished_runs, case_dir)
    assert cli.main(train_args(data, run, "--epochs", "2", "--resume")) == 0
    (run / "best.pt").write_bytes(b"damaged")
    capsys.readouterr()
    assert cli.main(train_args(data, run, "--epochs", "2", "--resume")) == 0
    out = capsys.readouterr().out
    try:
        best = load_checkpoint(run / "best.pt")
    except ValueError:
        best = None
    if best is None:  # the best epoch was not the last one: its weights are gone, and the line says so
        assert "does not hold it" in out and "best val accuracy" not in out, out
    else:  # repaired from checkpoint.pt (the best epoch was the last one)
        assert f"best val accuracy {best['val_acc']:.1%} (epoch {best['epoch']})" in out, out


# ------------------------------------------------------------------------------------------
# train_or_load: nothing written before the checks pass; damaged side files are repaired
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaders_and_run(bird_folder, fast_disk):
    """Loaders over a tiny bird folder, and a finished one-epoch train_or_load run on them."""
    root = fast_disk / "train_or_load"
    train_loader, val_loader, class_names = load_birds(bird_folder(root / "birds"), image_size=32, batch_size=4)
    loaders = dict(train_loader=train_loader, val_loader=val_loader, class_names=class_names, image_size=32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "RUNS_DIR", root / "runs")
        run = train_or_load("r18", "resnet18", epochs=1, progress=False, **loaders)
    return loaders, root / "runs", run.history


@pytest.fixture
def tiny_loaders(loaders_and_run, case_dir, monkeypatch):
    """The loaders, with RUNS_DIR a copy of the finished run's for this case alone."""
    loaders, runs, _ = loaders_and_run
    shutil.copytree(runs, case_dir / "runs")
    monkeypatch.setattr(config, "RUNS_DIR", case_dir / "runs")
    return loaders


def test_a_wrong_call_of_train_or_load_writes_nothing_and_the_right_one_still_loads(tiny_loaders, loaders_and_run):
    out_dir = config.run_dir("r18")
    (out_dir / RUN_FILE).unlink()  # a folder from before run.json, or a student who deleted it
    before = tree(out_dir)
    with pytest.raises(RunFolderError, match="lr: 0.001 there, 0.1 now"):
        train_or_load("r18", "resnet18", epochs=1, lr=0.1, progress=False, **tiny_loaders)
    assert tree(out_dir) == before
    again = train_or_load("r18", "resnet18", epochs=1, progress=False, **tiny_loaders)
    assert again.epochs_trained_now == 0 and again.history == loaders_and_run[2]


@pytest.mark.parametrize(
    "damage", ["run.json garbage", "run.json a list", "history.json garbage", "history.json a number"]
)
def test_damaged_run_and_history_files_are_repaired_from_the_checkpoint(tiny_loaders, loaders_and_run, damage):
    out_dir = config.run_dir("r18")
    name, what = damage.split(" ", 1)
    (out_dir / name).write_text({"garbage": "{not json", "a list": "[1, 2]", "a number": "7"}[what])
    again = train_or_load("r18", "resnet18", epochs=1, progress=False, **tiny_loaders)
    assert again.epochs_trained_now == 0 and again.history == loaders_and_run[2]
    assert (out_dir / "history.json").read_text().startswith("[")
    assert '"model_name": "resnet18"' in (out_dir / RUN_FILE).read_text()


# ------------------------------------------------------------------------------------------
# A resumed run is the same run, with loader processes too
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_with_loader_processes_a_resumed_run_equals_one_never_stopped(bird_folder, tiny_net, case_dir):
    data = bird_folder(case_dir / "birds", per_class=4)

    def run(out, epochs, resume=False):
        train, val, names = load_birds(data, image_size=32, batch_size=4, num_workers=2)
        set_seed(0)
        model = tiny_net()
        history = fit(
            model,
            train,
            val,
            epochs,
            out_dir=out,
            resume=resume,
            progress=False,
            precision="fp32",
            seed=0,
            class_names=names,
            image_size=32,
        )
        return history, model

    straight, straight_model = run(case_dir / "straight", 2)
    run(case_dir / "split", 1)
    split, split_model = run(case_dir / "split", 2, resume=True)
    assert [r["train_loss"] for r in split] == [r["train_loss"] for r in straight]
    assert [r["val_acc"] for r in split] == [r["val_acc"] for r in straight]
    for key, value in straight_model.state_dict().items():
        assert torch.equal(split_model.state_dict()[key], value), key
