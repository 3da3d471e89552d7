"""Training: seeds and the ``fit`` loop.

``fit`` reads top to bottom like nanoGPT's ``train.py``: set up (device, optimiser, schedule),
resume if asked, then per epoch the learner's training step from notebook 06 (``train_step``:
forward, loss, zero_grad, backward, step) over the loader, a validation pass, and the epoch's
files. Around that it adds what a course needs: the fastest safe precision for the machine,
progress bars, checkpoints an interrupt cannot damage (``checkpoints``), a resume that continues
exactly where the last finished epoch left off, and DistributedDataParallel under ``torchrun``
(what differs there is ``distributed``'s).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    check_same_run,
    claim_run_folder,
    read_resumable,
    repair_epoch_files,
    restore_rng_state,
    rng_state,
    run_meta,
    save_epoch_files,
)
from .device import ComputeSetup, autocast, place_batch, place_model, resolve_setup
from .distributed import all_reduce_sums, init_distributed, loader_for_run, process_setup, wrap_model
from .evaluation import collect_predictions
from .recipe import DEFAULT_OPTIMIZER, DEFAULT_WARMUP_EPOCHS, lr_factor, make_optimizer, validate
from .runfolder import RunFolderError

__all__ = ["set_seed", "TrainingInterrupted", "TrainingDiverged", "train_step", "train_one_epoch", "fit"]


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def set_seed(seed: int) -> int:
    """Seed Python's, NumPy's and PyTorch's random generators (CPU and GPU) so a run repeats.
    Returns ``seed`` so a notebook can print it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def _loader_generators(loader) -> list[torch.Generator]:
    """The generators that decide a loader's shuffling and its workers' seeds (the loader's own
    and its sampler's)."""
    found: list[torch.Generator] = []
    candidates = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    for generator in candidates:
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


# --------------------------------------------------------------------------------------------
# Stopping early: interrupts and losses that are no longer numbers
# --------------------------------------------------------------------------------------------


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by ``fit`` when interrupted (Ctrl-C, a notebook's stop button) during an epoch.
    The last finished epoch's checkpoint is untouched; ``history`` holds the finished epochs."""

    def __init__(self, message: str, history: list[dict], checkpoint: Path | None):
        super().__init__(message)
        self.history = history
        self.checkpoint = checkpoint


class TrainingDiverged(RuntimeError):
    """Raised by ``fit`` when the loss becomes NaN or infinite (a learning rate far too large, for
    instance). Training stops at once; nothing of that epoch is saved, so the last finished epoch's
    checkpoint (and best.pt) stay as they were. ``history`` holds the finished epochs."""

    def __init__(self, message: str, history: list[dict], checkpoint: Path | None):
        super().__init__(message)
        self.history = history
        self.checkpoint = checkpoint


# --------------------------------------------------------------------------------------------
# One step, one epoch: the learner's loop from notebook 06
# --------------------------------------------------------------------------------------------


def train_step(model, images, labels, optimizer, scaler, criterion, setup):
    """One optimisation step, the learner's five lines from notebook 06 with the machine's
    precision around them: forward under autocast, the loss on fp32 logits, zero_grad, backward
    through the gradient scaler, step. Returns the logits and the loss."""
    with autocast(setup):
        logits = model(images)
    loss = criterion(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


@dataclass
class EpochTotals:
    """Summed loss, correct predictions and images of one pass, kept on the device (reading a GPU
    number costs a synchronisation), and the first step whose loss was not a finite number."""

    device: torch.device
    loss: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    first_bad: torch.Tensor = field(init=False)  # (step, loss); step 0 = none yet
    seen: int = 0
    image_side: int = 0

    def __post_init__(self):
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss, self.correct, self.first_bad = zero.clone(), zero.clone(), zero.new_zeros(2)

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        loss = loss.detach()
        is_new_bad = (self.first_bad[0] == 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(
            is_new_bad, torch.stack([torch.full_like(self.first_bad[0], step), loss.double()]), self.first_bad
        )
        self.loss += loss * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += len(labels)

    def diverged(self) -> tuple[int, float] | None:
        """(step, loss) of the first step whose loss was NaN or infinite, in any process."""
        if dist.is_available() and dist.is_initialized():  # every process stops at the same step
            dist.all_reduce(self.first_bad, op=dist.ReduceOp.MAX)
        step, loss = self.first_bad.tolist()
        return (int(step), loss) if step else None

    def sums(self) -> list[float]:
        return [self.loss.item(), self.correct.item(), float(self.seen)]

    def postfix(self) -> dict:
        return {"loss": f"{self.loss.item() / self.seen:.3f}", "acc": f"{self.correct.item() / self.seen:.1%}"}


def train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion, setup, bar) -> EpochTotals:
    """One pass over ``loader``: ``train_step`` on every batch, the learning-rate schedule stepped
    after every batch. Stops at the first loss that is not a finite number (see ``EpochTotals``):
    on a GPU that is read where the progress bar reads the loss anyway (every 10 steps), so the
    check costs no extra synchronisation; on a CPU every step."""
    model.train()
    totals = EpochTotals(setup.device)
    for step, (images, labels) in enumerate(loader, 1):
        images, labels = place_batch(images, setup), labels.to(setup.device, non_blocking=True)
        logits, loss = train_step(model, images, labels, optimizer, scaler, criterion, setup)
        scheduler.step()
        totals.add(step, loss, logits, labels)
        totals.image_side = int(images.shape[-1])
        bar.update(1)
        shown = step % 10 == 0 or step == len(loader)
        if (shown or setup.device.type == "cpu") and totals.diverged():
            return totals
        if shown:
            bar.set_postfix(totals.postfix())
    if totals.seen == 0:
        raise ValueError("the training loader yielded no batches (is the dataset empty?)")
    return totals


def _validate(model, loader, setup) -> tuple[float, float, float]:
    """Validation of this process's share; (summed loss, correct, images). Plain cross-entropy on
    fp32 logits, the same numbers ``evaluation.evaluate`` reports."""
    logits, targets = collect_predictions(model, loader, precision=setup)
    loss = nn.functional.cross_entropy(logits, targets, reduction="sum").item() if len(targets) else 0.0
    return loss, float((logits.argmax(1) == targets).sum()), float(len(targets))


# --------------------------------------------------------------------------------------------
# A run: what fit sets up once and carries from epoch to epoch
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything ``fit`` sets up once: the model (``model`` is what forward calls, the DDP wrapper
    under torchrun; ``base_model`` the model itself), optimiser, schedule, scaler, loss, this
    process's loaders and their generators, the recipe record (``meta``), and the history so far."""

    model: nn.Module
    base_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule_factor: Callable[[int], float]
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    setup: ComputeSetup
    train_loader: DataLoader
    val_loader: DataLoader | None
    generators: list[torch.Generator]
    meta: dict
    out_dir: Path | None
    rank: int = 0
    world_size: int = 1
    show: bool = True  # progress bars and messages (rank 0 only)
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = -1.0
    saved_epochs: int = 0

    @property
    def main_process(self) -> bool:
        """Rank 0: the process that writes the files."""
        return self.rank == 0

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def state(self, epoch: int) -> dict:
        """What checkpoint.pt holds after ``epoch``: weights, meta, and the state to resume from."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.base_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.setup.grad_scaler else None,
            "rng": rng_state(self.generators),
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "meta": self.meta,
        }

    def what_was_kept(self) -> str:
        if self.checkpoint_path is not None and self.saved_epochs:
            return (
                f"kept {self.checkpoint_path} with {self.saved_epochs} finished epoch(s); "
                "resume=True (--resume) continues from there."
            )
        if self.checkpoint_path is not None:
            return "no epoch had finished, so nothing was saved."
        return "no out_dir was given, so nothing was saved; the model holds the half-trained weights."

    def interrupted(self, epoch: int, epochs: int) -> TrainingInterrupted:
        """The error that ends a run interrupted during ``epoch`` (counted from 0), saying what was kept."""
        message = f"Training interrupted during epoch {epoch + 1}/{epochs}: {self.what_was_kept()}"
        if self.show:
            tqdm.write(message, file=sys.stderr)
        return TrainingInterrupted(message, self.kept_history(), self.checkpoint_path if self.saved_epochs else None)

    def kept_history(self) -> list[dict]:
        return self.history[: self.saved_epochs] if self.checkpoint_path else list(self.history)

    def diverged(self, what: str, lr: float) -> TrainingDiverged:
        """The error that stops a run whose loss is no longer a number; nothing of the epoch is saved."""
        if self.checkpoint_path is not None and self.saved_epochs:
            kept = (
                f"{self.checkpoint_path} still holds epoch {self.saved_epochs}, the last good one "
                "(best.pt is as it was)."
            )
        elif self.checkpoint_path is not None:
            kept = "no epoch had finished, so nothing was saved."
        else:
            kept = "no out_dir was given; the model holds the diverged weights."
        message = (
            f"Training stopped: {what} (learning rate {lr:.3g}), so the weights are no longer "
            f"numbers. Nothing of this epoch was saved: {kept} Try a smaller learning rate (--lr)."
        )
        return TrainingDiverged(message, self.kept_history(), self.checkpoint_path if self.saved_epochs else None)


def _start_run(
    model,
    train_loader,
    val_loader,
    epochs: int,
    recipe: dict,
    precision,
    seed,
    out_dir,
    progress: bool,
    class_names,
    model_name,
    image_size,
) -> Run:
    """Set up once: this process's device and share of the data (one process: the device chosen
    and the loaders as given), the model on its device, optimiser, per-step schedule, gradient
    scaler, loss, and the run's record."""
    setup = resolve_setup(precision)
    rank, world_size = init_distributed()
    setup = process_setup(setup, world_size)
    train_loader = loader_for_run(train_loader, rank, world_size, train=True, seed=seed or 0)
    val_loader = loader_for_run(val_loader, rank, world_size, train=False, seed=0)
    place_model(model, setup)
    optimizer = make_optimizer(model, recipe["optimizer"], recipe["lr"], recipe["weight_decay"])
    factor = lr_factor(recipe["schedule"], epochs, len(train_loader), recipe["warmup_epochs"])
    meta = run_meta(
        model,
        recipe,
        train_loader,
        val_loader,
        epochs=epochs,
        seed=seed,
        precision=setup.description,
        world_size=world_size,
        class_names=class_names,
        model_name=model_name,
        image_size=image_size,
    )
    return Run(
        model=model,
        base_model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
        schedule_factor=factor,
        scaler=torch.amp.GradScaler(setup.device.type, enabled=setup.grad_scaler),
        criterion=nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"]),
        setup=setup,
        train_loader=train_loader,
        val_loader=val_loader,
        generators=_loader_generators(train_loader),
        meta=meta,
        out_dir=Path(out_dir) if out_dir is not None else None,
        rank=rank,
        world_size=world_size,
        show=progress and rank == 0,
    )


def _resume(run: Run, epochs: int, resume: bool, owns_folder: bool) -> None:
    """Continue checkpoint.pt if the run folder holds one (or refuse to, without ``resume``): refuse
    another recipe (naming every difference), repair best.pt, history.json and run.json after a
    crash, then put weights, optimiser, schedule, scaler and random states back as saved, on the
    schedule for ``epochs``."""
    path = run.checkpoint_path
    if path is None or not path.exists():
        return
    if not resume:
        raise FileExistsError(
            f"{path} already holds a training run; pass resume=True (--resume) to continue "
            "it, or choose another output folder."
        )
    state = read_resumable(path)  # on the CPU: random states must stay there
    check_same_run(path, state["meta"], run.meta)
    if owns_folder:
        for repaired in repair_epoch_files(run.out_dir, state):
            tqdm.write(f"Repaired after a crash: {repaired}.", file=sys.stderr)
    run.base_model.load_state_dict(state["model"])
    try:
        run.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as error:  # e.g. one parameter group saved, two now
        raise RunFolderError(
            f"{path}: its optimiser state does not fit the current recipe ({error}); it was saved with "
            "other parameter groups (weight decay split otherwise, or another set of trainable "
            "layers). Train into another folder, or delete that one to train afresh."
        ) from None
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"], run.generators)
    for group, base_lr in zip(run.optimizer.param_groups, run.scheduler.base_lrs):  # the schedule for `epochs`
        group["lr"] = base_lr * run.schedule_factor(run.scheduler.last_epoch)
    run.history, run.best_val_acc = list(state["history"]), state["best_val_acc"]
    run.saved_epochs = len(run.history)
    run.meta = {
        **run.meta,
        **state["meta"],
        "epochs": epochs,
        "world_size": run.world_size,
        "precision": run.setup.description,
    }
    if run.show:
        tqdm.write(f"Resuming {path}: {len(run.history)} of {epochs} epochs done.", file=sys.stderr)


def _reseed_epoch(run: Run, epoch: int, seed: int | None) -> None:
    """Epoch ``epoch`` draws the same data order, augmentations and worker seeds however the run
    was split up: every generator is reseeded with ``seed + epoch``."""
    if seed is not None:
        set_seed(seed + epoch)
        for generator in run.generators:
            generator.manual_seed(seed + epoch)
    if isinstance(getattr(run.train_loader, "sampler", None), DistributedSampler):
        run.train_loader.sampler.set_epoch(epoch)


def _run_epoch(run: Run, epoch: int, epochs: int) -> dict:
    """Train one epoch and validate; returns the epoch's record for the history."""
    start, lr = time.perf_counter(), run.optimizer.param_groups[0]["lr"]
    train_loader, val_loader = run.train_loader, run.val_loader
    with tqdm(
        total=len(train_loader),
        desc=f"epoch {epoch + 1}/{epochs}",
        unit="batch",
        disable=not run.show,
        file=sys.stderr,
        leave=True,
        dynamic_ncols=True,
    ) as bar:
        totals = train_one_epoch(
            run.model, train_loader, run.optimizer, run.scheduler, run.scaler, run.criterion, run.setup, bar
        )
        bad = totals.diverged()
        if bad:
            raise run.diverged(
                f"the training loss became {bad[1]} at epoch {epoch + 1}/{epochs}, step {bad[0]}/{len(train_loader)}",
                lr,
            )
        loss, correct, seen = all_reduce_sums(totals.sums(), run.setup.device, run.world_size)
        val_loss = val_acc = None
        if val_loader is not None:
            v_loss, v_correct, v_seen = all_reduce_sums(
                _validate(run.base_model, val_loader, run.setup), run.setup.device, run.world_size
            )
            val_loss, val_acc = v_loss / max(v_seen, 1), v_correct / max(v_seen, 1)
            if not math.isfinite(val_loss):
                raise run.diverged(f"the validation loss after epoch {epoch + 1}/{epochs} is {val_loss}", lr)
            bar.set_postfix(
                loss=f"{loss / seen:.3f}",
                acc=f"{correct / seen:.1%}",
                val_loss=f"{val_loss:.3f}",
                val_acc=f"{val_acc:.1%}",
            )
    run.meta["image_size"] = run.meta["image_size"] or totals.image_side
    return {
        "epoch": epoch + 1,
        "train_loss": loss / seen,
        "train_acc": correct / seen,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": lr,
        "seconds": time.perf_counter() - start,
    }


def _end_epoch(run: Run, record: dict, on_epoch_end: Callable[[dict], None] | None) -> None:
    """Add the epoch to the history and, on rank 0, write its files (with an out_dir) and call
    ``on_epoch_end``."""
    run.history.append(record)
    improved = record["val_acc"] is not None and record["val_acc"] > run.best_val_acc
    if record["val_acc"] is not None:
        run.best_val_acc = max(run.best_val_acc, record["val_acc"])
    if run.main_process and run.out_dir is not None:
        save_epoch_files(run.out_dir, run.state(record["epoch"]), improved)
        run.saved_epochs = len(run.history)
    if run.main_process and on_epoch_end is not None:
        on_epoch_end(record)


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    epochs: int,
    *,
    optimizer: str = DEFAULT_OPTIMIZER,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: float = DEFAULT_WARMUP_EPOCHS,
    schedule: str = "cosine",
    label_smoothing: float = 0.0,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    precision: str | ComputeSetup = "auto",
    seed: int | None = None,
    class_names: Sequence[str] | None = None,
    model_name: str | None = None,
    image_size: int | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs in total and return the history: one dict per epoch
    with epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds.

    - The recipe (checked first by ``recipe.validate``): ``optimizer`` "adamw" (lr 1e-3, weight
      decay 0.05; the default), "sgd" (lr 0.01, momentum 0.9, weight decay 1e-4) or "adam" (lr
      1e-3, no decay); ``weight_decay`` applies to conv and linear weights only; ``warmup_epochs``
      of linear warm-up, then ``schedule`` "cosine", "step" or "none", stepped after every batch
      (``recipe.lr_factor``); ``label_smoothing`` for the training loss.
    - ``precision``: "auto" (see ``device.choose_device_and_precision``) or "fp32". The model is
      moved to the chosen device. Losses and accuracies are always computed from fp32 logits.
    - ``out_dir``: after every epoch ``checkpoint.pt`` (everything needed to resume), ``best.pt``
      (the weights with the best validation accuracy), ``history.json`` and ``run.json`` (a
      readable copy of the recipe), each replaced atomically (``checkpoints.save_epoch_files``).
      An existing checkpoint is never overwritten unless ``resume=True``, which continues from it
      (or starts afresh if there is none) up to ``epochs`` in total, on the schedule for
      ``epochs``. It refuses a checkpoint trained otherwise (``checkpoints.RECIPE_KEYS``: model,
      classes, data, image size, batch size, recipe, seed, starting weights, input scaling,
      frozen backbone, zero-init, fraction of the training images), naming every difference, and
      first repairs the other files if a crash came between their writes. The folder is the run's
      while it trains (a second training into it is refused).
    - ``seed``: reseeds every random generator (and the loader's shuffling and worker seeds) with
      ``seed + epoch`` at the start of each epoch, so epoch k sees the same data order and
      augmentation however the run was split up, with or without loader processes.
    - Under ``torchrun`` (WORLD_SIZE > 1): DistributedDataParallel, each process a share of the
      data at the loader's batch size, metrics summed over processes, only rank 0 shows progress
      and writes files; BatchNorm statistics stay per process, as in torchvision's references.
    - An interrupt raises ``TrainingInterrupted`` saying what was kept; a loss that becomes NaN or
      infinite raises ``TrainingDiverged`` naming the epoch and step, and that epoch is not saved.
    ``on_epoch_end(record)`` is called on rank 0 after each epoch (the CLI prints a line there).
    """
    recipe = validate(epochs, optimizer, lr, weight_decay, warmup_epochs, schedule, label_smoothing)
    run = _start_run(
        model,
        train_loader,
        val_loader,
        epochs,
        recipe,
        precision,
        seed,
        out_dir,
        progress,
        class_names,
        model_name,
        image_size,
    )
    lock = claim_run_folder(run.out_dir) if run.main_process and run.out_dir is not None else None
    epoch = 0
    try:
        _resume(run, epochs, resume, owns_folder=lock is not None)
        run.model = wrap_model(model, run.setup, run.world_size)
        for epoch in range(len(run.history), epochs):  # each epoch: train, validate, save its files
            _reseed_epoch(run, epoch, seed)
            record = _run_epoch(run, epoch, epochs)
            _end_epoch(run, record, on_epoch_end)
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, TrainingInterrupted):
            raise
        raise run.interrupted(epoch, epochs) from None
    finally:
        if lock is not None:
            lock.release()
    if run.world_size > 1:  # every process returns once rank 0's files are written, and they leave together
        dist.barrier()
    model.eval()
    return run.history
