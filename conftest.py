"""Shared test setup for tests/ and notebooks/: fast mode by default, and the real-photo sample when it exists."""

import os
from pathlib import Path

import pytest

# Notebooks run through nbval inherit this environment: fast mode unless the instructor asked
# otherwise (RESNET_COURSE_FAST=0 pytest runs the course at default settings).
os.environ.setdefault("RESNET_COURSE_FAST", "1")

import matplotlib  # noqa: E402  (after the environment is set)

from resnet_course.device import torch_threads  # noqa: E402

matplotlib.use("Agg")  # for tests/ only: notebook kernels keep their inline backend

REPO_ROOT = Path(__file__).resolve().parent
BIRDS_SAMPLE = Path(os.environ.get("RESNET_COURSE_SAMPLE", REPO_ROOT.parent / "shared" / "birds-sample"))


@pytest.fixture(scope="session")
def birds_sample() -> Path:
    """The 20 real photos (5 per class) in ../shared/birds-sample, read in place, never copied."""
    if not BIRDS_SAMPLE.is_dir():
        pytest.skip(f"real-photo sample not found at {BIRDS_SAMPLE}")
    return BIRDS_SAMPLE


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module on one thread: on a busy shared CPU two OpenMP threads mostly wait for
    each other (a ResNet-50 forward pass took 2.9 s on two threads, 0.15 s on one)."""
    with torch_threads(1):
        yield
