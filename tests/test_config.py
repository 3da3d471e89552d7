"""Tests for resnet_course.config: the one parser of on/off environment variables, and fast mode."""

import os

import pytest

from resnet_course import config
from resnet_course.device import FP32_ENV, choose_device_and_precision

FLAG = "RESNET_COURSE_TEST_FLAG"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " On "])
def test_env_flag_on(monkeypatch, value):
    monkeypatch.setenv(FLAG, value)
    assert config.env_flag(FLAG) is True


@pytest.mark.parametrize("value", ["0", "false", "False", "NO", "off", "", "  "])
def test_env_flag_off(monkeypatch, value):
    monkeypatch.setenv(FLAG, value)
    assert config.env_flag(FLAG) is False


def test_env_flag_unset_is_off(monkeypatch):
    monkeypatch.delenv(FLAG, raising=False)
    assert config.env_flag(FLAG) is False


@pytest.mark.parametrize("value", ["maybe", "2", "-1", "yess", "enabled"])
def test_env_flag_rejects_anything_else_naming_the_variable_and_the_choices(monkeypatch, value):
    monkeypatch.setenv(FLAG, value)
    with pytest.raises(ValueError) as caught:
        config.env_flag(FLAG)
    message = str(caught.value)
    assert f"{FLAG}={value!r}" in message
    assert all(word in message for word in ("1, true, yes, on", "0, false, no, off"))


def test_fast_mode_and_fp32_use_the_same_parser(monkeypatch):
    monkeypatch.setenv(config.FAST_ENV, "Off")
    assert config.fast_mode() is False and config.settings().image_size == 112
    monkeypatch.setenv(config.FAST_ENV, "YES")
    assert config.fast_mode() is True and config.settings().image_size == 64
    monkeypatch.setenv(config.FAST_ENV, "maybe")
    with pytest.raises(ValueError, match="RESNET_COURSE_FAST='maybe'"):
        config.settings()
    monkeypatch.setenv(FP32_ENV, "sometimes")
    with pytest.raises(ValueError, match="RESNET_COURSE_FP32='sometimes'"):
        choose_device_and_precision()


def test_runs_folder_can_be_moved_by_environment(monkeypatch, tmp_path):
    # the browser tests train notebook 06 into a folder of their own, never into runs/
    monkeypatch.setenv(config.FAST_ENV, "1")
    monkeypatch.delenv(config.RUNS_ENV, raising=False)
    assert config.run_dir("resnet50") == config.RUNS_DIR / "fast" / "resnet50"
    monkeypatch.setenv(config.RUNS_ENV, str(tmp_path))
    assert config.run_dir("resnet50") == tmp_path / "fast" / "resnet50"


def test_the_notebooks_switch_sets_fast_mode_for_everything_that_reads_it(monkeypatch):
    # the FAST = ... cell at the top of notebooks 01, 04 and 06-09: run folders follow the switch too
    monkeypatch.setenv(config.FAST_ENV, "1")
    monkeypatch.delenv(config.RUNS_ENV, raising=False)
    full = config.use_fast_mode(False)
    assert not full.fast and (full.image_size, full.epochs) == (112, 30)
    assert config.settings() == full and config.run_dir("resnet50") == config.RUNS_DIR / "full" / "resnet50"
    fast = config.use_fast_mode(True)
    assert fast.fast and (fast.image_size, fast.epochs) == (64, 1)
    assert config.run_dir("resnet50") == config.RUNS_DIR / "fast" / "resnet50"
    assert os.environ[config.FAST_ENV] == "1"  # the switch never writes the environment
    assert config.use_fast_mode(None) == fast  # None follows the environment again: "1"
    monkeypatch.setenv(config.FAST_ENV, "0")
    assert config.use_fast_mode() == full


def test_none_after_a_switch_follows_the_environment_not_the_old_switch(monkeypatch):
    # issue 19: FAST = True, then FAST = None in the same kernel used to stay fast
    monkeypatch.setenv(config.FAST_ENV, "0")
    assert config.use_fast_mode(True).fast and config.fast_mode()
    assert not config.use_fast_mode(None).fast and not config.fast_mode()
    monkeypatch.delenv(config.FAST_ENV)
    assert config.use_fast_mode(True).fast and not config.use_fast_mode(None).fast
    assert config.FAST_ENV not in os.environ
    monkeypatch.setenv(config.FAST_ENV, "1")
    assert not config.use_fast_mode(False).fast and config.use_fast_mode(None).fast


@pytest.mark.parametrize("value", ["yes", 1, 0.0])
def test_the_switch_takes_only_true_false_or_none(monkeypatch, value):
    monkeypatch.setenv(config.FAST_ENV, "0")
    with pytest.raises(TypeError, match="FAST must be True, False or None"):
        config.use_fast_mode(value)
    assert config.fast_mode() is False


@pytest.mark.parametrize(
    "name, shown",
    [
        (b"bad\xff.jpg", "bad\\xff.jpg"),
        ("two\nlines.jpg", "two\\nlines.jpg"),
        ("red\x1b[31m.jpg", "red\\x1b[31m.jpg"),
        ("été 1.jpg", "été 1.jpg"),
    ],
)
def test_printable_path_escapes_what_a_terminal_cannot_show_on_one_line(name, shown):
    path = os.fsdecode(name)
    assert config.printable_path(path) == shown
    assert config.printable_path(path).encode("utf-8")  # never a UnicodeEncodeError when printed


def test_check_environment_accepts_a_clean_environment_and_names_the_first_bad_variable(monkeypatch, tmp_path):
    for name in (*config.DISTRIBUTED_VARIABLES, *config.CACHE_VARIABLES, config.DATA_ENV, config.RUNS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "not yet made"))  # a folder to be: fine
    config.check_environment(FP32_ENV)
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE='0' is not a process count"):
        config.check_environment()
