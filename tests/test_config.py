"""Tests for resnet_course.config: the one parser of on/off environment variables, and fast mode."""

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
    assert config.fast_mode() is False and config.settings().image_size == 224
    monkeypatch.setenv(config.FAST_ENV, "YES")
    assert config.fast_mode() is True and config.settings().image_size == 64
    monkeypatch.setenv(config.FAST_ENV, "maybe")
    with pytest.raises(ValueError, match="RESNET_COURSE_FAST='maybe'"):
        config.settings()
    monkeypatch.setenv(FP32_ENV, "sometimes")
    with pytest.raises(ValueError, match="RESNET_COURSE_FP32='sometimes'"):
        choose_device_and_precision()
