"""Where and how to compute: the device, the autocast precision and the memory layout; for a
while, a number of CPU threads (``torch_threads``) or eval mode (``evaluating``).

``choose_device_and_precision`` picks the fastest safe setting for this machine once; training,
evaluation and timing then use the same ``ComputeSetup`` to place the model (``place_model``),
move each batch (``place_batch``) and run the forward pass (``autocast``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .config import env_flag

__all__ = [
    "FP32_ENV",
    "ComputeSetup",
    "cpu_has_bf16_matrix_units",
    "choose_device_and_precision",
    "resolve_setup",
    "autocast",
    "place_model",
    "place_batch",
    "torch_threads",
    "evaluating",
]

#: Set ``RESNET_COURSE_FP32=1`` to force plain fp32 everywhere (e.g. to compare numbers exactly).
FP32_ENV = "RESNET_COURSE_FP32"


@dataclass(frozen=True)
class ComputeSetup:
    """Where and how to compute: the device, the autocast dtype (None = plain fp32), whether
    images and weights use the channels-last layout, and whether fp16 needs a gradient scaler."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    grad_scaler: bool
    description: str


def cpu_has_bf16_matrix_units() -> bool:
    """True if this CPU has AMX bf16 tiles (Intel Sapphire Rapids and later), where bf16 autocast
    with channels-last is about 2.5x faster than fp32 for ResNet-50 training. Guarded: the probe
    moved between PyTorch versions, so each way of asking is tried in turn."""
    try:
        return bool(torch.cpu.get_capabilities()["amx_bf16"])
    except Exception:
        pass
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return "amx_bf16" in cpuinfo.read().split()
    except OSError:
        return False


def choose_device_and_precision(force_fp32: bool = False) -> ComputeSetup:
    """The fastest safe setting for this machine.

    CUDA: mixed precision (bf16 where supported, else fp16 with a gradient scaler) and
    channels-last. CPU with AMX: bf16 autocast and channels-last. Apple MPS: fp32 on the GPU.
    Anything else: fp32 on the CPU. ``force_fp32=True`` or ``RESNET_COURSE_FP32=1`` keeps the
    device but computes in plain fp32 (contiguous layout).
    """
    fp32 = force_fp32 or env_flag(FP32_ENV)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
        if fp32:
            return ComputeSetup(device, None, False, False, f"CUDA ({name}), fp32")
        if torch.cuda.is_bf16_supported():
            return ComputeSetup(
                device, torch.bfloat16, True, False, f"CUDA ({name}), bf16 mixed precision, channels-last"
            )
        return ComputeSetup(
            device,
            torch.float16,
            True,
            True,
            f"CUDA ({name}), fp16 mixed precision with gradient scaling, channels-last",
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return ComputeSetup(torch.device("mps"), None, False, False, "Apple GPU (MPS), fp32")
    cpu = torch.device("cpu")
    if not fp32 and cpu_has_bf16_matrix_units():
        return ComputeSetup(cpu, torch.bfloat16, True, False, "CPU with AMX, bf16 mixed precision, channels-last")
    return ComputeSetup(cpu, None, False, False, "CPU, fp32" + (" (forced)" if fp32 else ""))


def resolve_setup(precision: str | ComputeSetup) -> ComputeSetup:
    """``precision`` as the functions taking it accept it: a ``ComputeSetup`` as given, "auto"
    (``choose_device_and_precision``) or "fp32" (the same device in plain fp32)."""
    if isinstance(precision, ComputeSetup):
        return precision
    if precision not in ("auto", "fp32"):
        raise ValueError(f"precision must be 'auto' or 'fp32', not {precision!r}")
    return choose_device_and_precision(force_fp32=precision == "fp32")


def autocast(setup: ComputeSetup):
    """The autocast context for ``setup`` (a no-op in fp32). Losses and metrics are computed
    outside it, on logits cast to fp32."""
    if setup.amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=setup.device.type, dtype=setup.amp_dtype)


def place_model(model: nn.Module, setup: ComputeSetup) -> nn.Module:
    """Move ``model`` to the setup's device, in channels-last layout where the setup uses it."""
    model.to(setup.device)
    return model.to(memory_format=torch.channels_last) if setup.channels_last else model


def place_batch(images: torch.Tensor, setup: ComputeSetup) -> torch.Tensor:
    """Move a batch of images to the setup's device, in channels-last layout where the setup uses
    it (the layout must match the model's, see ``place_model``)."""
    images = images.to(setup.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if setup.channels_last else images


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Inside, PyTorch uses ``num_threads`` CPU threads (None: unchanged); outside, as before.
    Tiny convolutions gain little from several threads and lose much when cores are shared."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run in eval mode (BN uses its running statistics and is not updated), then restore the
    mode of every submodule exactly as it was."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
