"""Several processes under ``torchrun``: what ``training.fit`` does differently when
``WORLD_SIZE > 1``.

Each process joins the process group (``init_distributed``), trains on its own GPU
(``process_setup``) with its share of the data (``loader_for_run``) and a model wrapped in
DistributedDataParallel (``wrap_model``), and the epoch's sums are added over processes
(``all_reduce_sums``). An ordinary run (one process) goes through the same functions, which then
change nothing.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .device import ComputeSetup

__all__ = ["init_distributed", "process_setup", "loader_for_run", "wrap_model", "all_reduce_sums"]


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` with ``WORLD_SIZE > 1`` (gloo on CPU,
    NCCL on GPU); returns ``(rank, world_size)``, ``(0, 1)`` for an ordinary run. Idempotent."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return dist.get_rank(), dist.get_world_size()


def process_setup(setup: ComputeSetup, world_size: int) -> ComputeSetup:
    """``setup`` on this process's own GPU (the one ``init_distributed`` chose) when several
    processes share a machine's GPUs; otherwise ``setup`` as it is."""
    if world_size > 1 and setup.device.type == "cuda":
        return replace(setup, device=torch.device("cuda", torch.cuda.current_device()))
    return setup


def loader_for_run(loader: DataLoader | None, rank: int, world_size: int, train: bool, seed: int) -> DataLoader | None:
    """The loader ``fit`` iterates (None for no loader). Under torchrun each process sees its share:
    for training a DistributedSampler (it pads the last round by repeating a few images, as usual),
    for validation every ``world_size``-th image, without padding, so the summed metrics count each
    image once. Loader processes are started afresh every epoch (never persistent), so that they
    are seeded from the run's generators and a resumed run draws the same augmentations."""
    if loader is None or (world_size == 1 and not getattr(loader, "persistent_workers", False)):
        return loader
    sampler, drop_last = loader.sampler, loader.drop_last
    if world_size > 1 and train:
        sampler = DistributedSampler(
            loader.dataset, world_size, rank, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed
        )
        # a last batch of one image would make BatchNorm fail in training mode
        drop_last = drop_last or len(sampler) % loader.batch_size == 1
    elif world_size > 1:
        sampler = list(range(rank, len(loader.dataset), world_size))
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=drop_last,
        generator=loader.generator,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=False,
    )


def wrap_model(model: nn.Module, setup: ComputeSetup, world_size: int) -> nn.Module:
    """What forward calls: ``model`` in DistributedDataParallel under torchrun (gradients averaged
    over processes; BatchNorm statistics stay per process, as in torchvision's references), else
    ``model`` itself."""
    if world_size == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None
    )


def all_reduce_sums(values: Sequence[float], device: torch.device, world_size: int) -> list[float]:
    """``values`` summed over every process (as they are for one process)."""
    if world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
