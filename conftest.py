"""Shared test setup for tests/ and notebooks/: fast mode by default, and the real-photo sample when it exists."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

# Notebooks run through nbval inherit this environment: fast mode unless the instructor asked
# otherwise (RESNET_COURSE_FAST=0 pytest runs the course at default settings).
os.environ.setdefault("RESNET_COURSE_FAST", "1")

# README's test command runs two pytest-xdist workers (`pytest -n 2`). Each gets its share of the
# cores, set before torch is imported: two workers with two OpenMP threads each on two cores mostly
# wait for each other. Notebook kernels and command-line subprocesses inherit the setting.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // _WORKERS))

import matplotlib  # noqa: E402  (after the environment is set)
from torch import nn  # noqa: E402

from resnet_course import config  # noqa: E402
from resnet_course.birds import CLASS_NAMES  # noqa: E402
from resnet_course.device import torch_threads  # noqa: E402

matplotlib.use("Agg")  # for tests/ only: notebook kernels keep their inline backend

REPO_ROOT = Path(__file__).resolve().parent
BIRDS_SAMPLE = Path(os.environ.get("RESNET_COURSE_SAMPLE", REPO_ROOT.parent / "shared" / "birds-sample"))


#: Notebooks 07 and 08 load the runs notebook 06 trains, and the browser test reuses them: under
#: xdist they run on one worker, in this order (collection order), never beside each other.
SHARED_RUNS = {"06_train_resnet50.ipynb", "07_train_resnet50v2.ipynb", "08_inside_resnet.ipynb", "test_browser.py"}

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # plain `pytest` runs one process; nothing to schedule
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:

    class CourseScheduling(LoadScopeScheduling):
        """README's ``pytest -n 2``: every file goes whole to one worker (a notebook's cells share
        one kernel, a module fixture is built once), and the files in ``SHARED_RUNS`` go together."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "shared-runs" if path.rsplit("/", 1)[-1] in SHARED_RUNS else path

    def pytest_xdist_make_scheduler(config, log):
        return CourseScheduling(config, log)


@pytest.fixture(scope="session")
def birds_sample() -> Path:
    """The 20 real photos (5 per class) in ../shared/birds-sample, read in place, never copied."""
    if not BIRDS_SAMPLE.is_dir():
        pytest.skip(f"real-photo sample not found at {BIRDS_SAMPLE}")
    return BIRDS_SAMPLE


@pytest.fixture(autouse=True)
def no_fast_mode_switch_left_behind():
    """A test that flips the notebooks' FAST switch (``config.use_fast_mode``) leaves it unset,
    so the next test follows ``RESNET_COURSE_FAST`` as the suite set it."""
    yield
    config.use_fast_mode(None)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module on one thread: on a busy shared CPU two OpenMP threads mostly wait for
    each other (a ResNet-50 forward pass took 2.9 s on two threads, 0.15 s on one)."""
    with torch_threads(1):
        yield


#: One colour per course class, so even a tiny net can tell the tiny birds apart.
BIRD_COLOURS = [(230, 200, 30), (20, 20, 20), (120, 90, 60), (240, 240, 240)]


def make_bird_folder(
    root: Path, per_class: int = 5, prefix: str = "", size: tuple = (40, 36), shade_step: int = 9
) -> Path:
    """A tiny bird folder: ``per_class`` small JPEGs ``{prefix}{i}.jpg`` in each course class
    folder, each class its own colour (``BIRD_COLOURS``), image i that colour lightened by
    ``shade_step * i``."""
    for name, colour in zip(CLASS_NAMES, BIRD_COLOURS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(min(255, c + shade_step * i) for c in colour)
            Image.new("RGB", size, shade).save(root / name / f"{prefix}{i}.jpg")
    return root


def tiny_train_args(data, out, *extra) -> list:
    """The command line of the tests' tiny training run: ResNet-18 at 32 px, batch 4, one epoch on
    ``data`` into ``out``, no progress bars; ``extra`` options follow (a later ``--epochs`` wins)."""
    return ["train", "--model", "resnet18", "--data", str(data), "--image-size", "32", "--batch-size", "4",
            "--epochs", "1", "--out", str(out), "--no-progress", *map(str, extra)]  # fmt: skip


@pytest.fixture(scope="session")
def bird_colours() -> list:
    """The colour of each course class in the tiny bird folders (``BIRD_COLOURS``)."""
    return BIRD_COLOURS


@pytest.fixture(scope="session")
def bird_folder():
    """``bird_folder(root, per_class=5, prefix="", size=(40, 36))`` makes a tiny bird folder at
    ``root`` (see ``make_bird_folder``) and returns it."""
    return make_bird_folder


def make_tiny_net(num_classes: int = 4) -> nn.Module:
    """A small conv net without BatchNorm (its forward is the same in train and eval mode)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


@pytest.fixture(scope="session")
def tiny_net():
    """``tiny_net(num_classes=4)`` builds a small conv net without BatchNorm (see ``make_tiny_net``)."""
    return make_tiny_net


@pytest.fixture(scope="session")
def fast_disk(tmp_path_factory):
    """A folder in memory (/dev/shm) where there is one, for tests that train into run folders:
    every checkpoint is flushed to disk (fsync), and a one-epoch resnet18 checkpoint with its AdamW
    state is 128 MB, which takes seconds to reach a slow shared disk; what these tests check does
    not depend on the disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path_factory.mktemp("runs")
        return
    folder = Path(tempfile.mkdtemp(prefix="resnet-course-tests-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
