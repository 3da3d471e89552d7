"""Tests for resnet_course.device: which device, precision and memory layout a machine gets."""

import pytest
import torch

from resnet_course import device
from resnet_course.device import FP32_ENV, choose_device_and_precision


def test_amx_probe_agrees_with_proc_cpuinfo():
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    assert device.cpu_has_bf16_matrix_units() == ("amx_bf16" in flags)


def test_cpu_with_amx_gets_bf16_and_channels_last(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_has_bf16_matrix_units", lambda: True)
    monkeypatch.delenv(FP32_ENV, raising=False)
    setup = choose_device_and_precision()
    assert (setup.device.type, setup.amp_dtype, setup.channels_last) == ("cpu", torch.bfloat16, True)
    forced = choose_device_and_precision(force_fp32=True)
    assert (forced.amp_dtype, forced.channels_last) == (None, False)
    monkeypatch.setenv(FP32_ENV, "1")
    assert choose_device_and_precision().amp_dtype is None


def test_cpu_without_amx_trains_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_has_bf16_matrix_units", lambda: False)
    setup = choose_device_and_precision()
    assert (setup.device.type, setup.amp_dtype, setup.channels_last) == ("cpu", None, False)
