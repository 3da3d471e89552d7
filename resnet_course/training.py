"""Training: seeds, the ``fit`` loop, checkpoints, and multi-process runs.

``fit`` is an ordinary PyTorch loop (forward, loss, backward, step) with four additions a course
needs: the fastest safe precision for the machine, progress bars, a checkpoint after every epoch
that an interrupt cannot damage, and ``resume=True`` continuing exactly where the last finished
epoch left off. Launched by ``torchrun`` it trains with DistributedDataParallel.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from .checkpoints import (
    BEST_NAME,
    CHECKPOINT_NAME,
    HISTORY_NAME,
    CheckpointError,
    RunFolderError,
    atomic_write,
    check_same_run,
    claim_run_folder,
    data_fingerprint,
    read_checkpoint,
)
from .device import ComputeSetup, autocast, place_batch, place_model, resolve_setup
from .recipe import (
    DEFAULT_LR,
    DEFAULT_OPTIMIZER,
    DEFAULT_WARMUP_EPOCHS,
    DEFAULT_WEIGHT_DECAY,
    OPTIMIZERS,
    SCHEDULES,
    check_number,
    lr_factor,
    make_optimizer,
)

__all__ = [
    "set_seed", "init_distributed", "TrainingInterrupted", "TrainingDiverged", "fit", "save_checkpoint",
    "load_checkpoint", "load_model",
    # the recipe's names, defined in recipe, kept importable from here
    "DEFAULT_LR", "DEFAULT_WEIGHT_DECAY", "DEFAULT_OPTIMIZER", "DEFAULT_WARMUP_EPOCHS", "OPTIMIZERS", "SCHEDULES",
]

CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------

def set_seed(seed: int, deterministic: bool = False) -> int:
    """Seed Python's, NumPy's and PyTorch's random generators (CPU and GPU) so a run repeats.

    ``deterministic=True`` also asks PyTorch for deterministic kernels (slower on GPU; warns
    instead of failing where none exists). Returns ``seed`` so a notebook can print it.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return seed


# --------------------------------------------------------------------------------------------
# Several processes (torchrun)
# --------------------------------------------------------------------------------------------

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


def _sharded_loader(loader: DataLoader, rank: int, world_size: int, train: bool, seed: int) -> DataLoader:
    """The same loader, but each process sees its share: for training a DistributedSampler (it
    pads the last round by repeating a few images, as usual), for validation every
    ``world_size``-th image, without padding, so the summed metrics count each image once."""
    drop_last = loader.drop_last
    if train:
        sampler = DistributedSampler(loader.dataset, world_size, rank,
                                     shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
        # a last batch of one image would make BatchNorm fail in training mode
        drop_last = drop_last or len(sampler) % loader.batch_size == 1
    else:
        sampler = list(range(rank, len(loader.dataset), world_size))
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=drop_last,
                      worker_init_fn=loader.worker_init_fn,
                      persistent_workers=loader.num_workers > 0 and loader.persistent_workers)


def _all_reduce_sums(values: Sequence[float], device: torch.device, world_size: int) -> list[float]:
    if world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Save a checkpoint dict atomically (see ``checkpoints.atomic_write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: torch.save(state, file))
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by ``fit``. Uses ``weights_only=True``: checkpoints hold only
    tensors, numbers, strings, lists and dicts, so loading one cannot run code. A file that is not
    a course checkpoint (truncated, a whole pickled model, a plain state_dict ...) raises
    ``checkpoints.CheckpointError`` saying what it is not."""
    return read_checkpoint(path, map_location=map_location)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was trained as (``models.get_model``), load its weights and
    return ``(model in eval mode, meta)``; ``meta`` holds model_name, num_classes, class_names,
    image_size and normalization (the input scaling, also set as ``model.input_normalization``)."""
    from .models import get_model

    checkpoint = load_checkpoint(path)
    meta = dict(checkpoint.get("meta") or {})
    if not meta.get("model_name") or not meta.get("num_classes"):
        raise CheckpointError(f"{path} does not record which model it holds (model_name/num_classes); "
                              "build the model yourself and load load_checkpoint(path)['model'] into it.")
    bad = [name for name, tensor in checkpoint["model"].items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"{path} holds weights that are not finite numbers (NaN or infinite, in "
                              f"{bad[0]} and {len(bad) - 1} more): the training it comes from diverged.")
    model = get_model(meta["model_name"], num_classes=meta["num_classes"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(f"{path} says it holds a {meta['model_name']} with {meta['num_classes']} "
                              f"classes, but its weights do not fit one ({first})") from None
    model.input_normalization = meta.get("normalization") or "imagenet"  # older checkpoints: ImageNet
    return model.to(device).eval(), meta


def _rng_state(loader_generators: Sequence[torch.Generator]) -> dict:
    """Every random generator's state, as tensors and lists (no NumPy objects, so the checkpoint
    loads with ``weights_only=True``)."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "loader": [g.get_state() for g in loader_generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict, loader_generators: Sequence[torch.Generator]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    for generator, saved in zip(loader_generators, state.get("loader", [])):
        generator.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader_generators(loader) -> list[torch.Generator]:
    """The generators that decide a loader's shuffling (the loader's own and its sampler's)."""
    found: list[torch.Generator] = []
    candidates = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    for generator in candidates:
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _best_state(state: dict) -> dict:
    """What best.pt holds: the epoch's weights, meta and validation accuracy (no optimiser)."""
    best = {key: state[key] for key in ("format", "epoch", "model", "meta")}
    return {**best, "val_acc": state["history"][state["epoch"] - 1]["val_acc"]}


def _save_epoch_files(out_dir: Path, state: dict, improved: bool) -> None:
    """After an epoch: checkpoint.pt (to resume), best.pt (weights and meta only, when the
    validation accuracy improved) and history.json, each replaced atomically. checkpoint.pt comes
    first: after a crash before the other two, ``_repair_epoch_files`` rebuilds them from it."""
    save_checkpoint(state, out_dir / CHECKPOINT_NAME)
    if improved:
        save_checkpoint(_best_state(state), out_dir / BEST_NAME)
    _write_history(out_dir, state["history"])


def _write_history(out_dir: Path, history: list[dict]) -> None:
    history_json = json.dumps(history, indent=1).encode()
    atomic_write(out_dir / HISTORY_NAME, lambda file: file.write(history_json))


def _repair_epoch_files(out_dir: Path, state: dict) -> list[str]:
    """Make history.json and best.pt agree with checkpoint.pt again after a crash between their
    writes (see ``_save_epoch_files``); returns what was repaired, in words."""
    repaired = []
    history = state["history"]
    try:
        on_disk = json.loads((out_dir / HISTORY_NAME).read_text())
    except (OSError, ValueError):
        on_disk = None
    if on_disk != json.loads(json.dumps(history)):
        _write_history(out_dir, history)
        repaired.append(f"{HISTORY_NAME} now lists the {len(history)} epoch(s) of {CHECKPOINT_NAME}")
    scored = [r for r in history if r.get("val_acc") is not None]
    if not scored:
        return repaired
    best = max(scored, key=lambda r: r["val_acc"])  # the first of equals, as fit keeps it
    try:
        saved = load_checkpoint(out_dir / BEST_NAME)
        saved = (saved.get("epoch"), saved.get("val_acc"))
    except (OSError, ValueError):
        saved = None
    if saved != (best["epoch"], best["val_acc"]):
        if best["epoch"] == state["epoch"]:  # the weights of the best epoch are the checkpoint's
            save_checkpoint(_best_state(state), out_dir / BEST_NAME)
            repaired.append(f"{BEST_NAME} now holds epoch {best['epoch']} ({best['val_acc']:.1%})")
        else:
            warnings.warn(f"{out_dir / BEST_NAME} does not hold the best epoch ({best['epoch']}, "
                          f"{best['val_acc']:.1%}) and its weights are gone; it is left as it is.", stacklevel=2)
    return repaired


def _restore_training_state(state: dict, model, optimizer, scheduler, scaler, generators, path: Path) -> None:
    """Put weights, optimiser, scheduler, gradient scaler and random states back as saved (from ``path``)."""
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as error:  # e.g. one parameter group saved, two now
        raise RunFolderError(
            f"{path}: its optimiser state does not fit the current recipe ({error}); it was "
            "probably saved by an earlier version of the course (before weight decay was split into "
            "groups). Train into another folder, or delete that one to train afresh.") from None
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    _restore_rng_state(state["rng"], generators)


# --------------------------------------------------------------------------------------------
# The training loop
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


def _what_was_kept(checkpoint_path: Path | None, saved_epochs: int) -> str:
    if checkpoint_path is not None and saved_epochs:
        return (f"kept {checkpoint_path} with {saved_epochs} finished epoch(s); "
                "resume=True (--resume) continues from there.")
    if checkpoint_path is not None:
        return "no epoch had finished, so nothing was saved."
    return "no out_dir was given, so nothing was saved; the model holds the half-trained weights."


def _diverged(what: str, lr: float, checkpoint_path: Path | None, saved_epochs: int,
              history: list[dict]) -> TrainingDiverged:
    """The error that stops a run whose loss is no longer a number; nothing of the epoch is saved."""
    if checkpoint_path is not None and saved_epochs:
        kept = f"{checkpoint_path} still holds epoch {saved_epochs}, the last good one (best.pt is as it was)."
    elif checkpoint_path is not None:
        kept = "no epoch had finished, so nothing was saved."
    else:
        kept = "no out_dir was given; the model holds the diverged weights."
    message = (f"Training stopped: {what} (learning rate {lr:.3g}), so the weights are no longer "
               f"numbers. Nothing of this epoch was saved: {kept} Try a smaller learning rate (--lr).")
    return TrainingDiverged(message, history[:saved_epochs] if checkpoint_path else list(history),
                            checkpoint_path if saved_epochs else None)


def _num_outputs(model: nn.Module) -> int | None:
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last_linear[-1].out_features if last_linear else None


def _train_step(model, images, targets, optimizer, scaler, criterion, setup):
    """One optimisation step on a batch already on the device (autocast forward, fp32 loss,
    scaled backward, update); returns the logits and the loss."""
    with autocast(setup):
        logits = model(images)
    loss = criterion(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


def _train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion, setup, bar
                     ) -> tuple[list[float], int, tuple[int, float] | None]:
    """One pass over ``loader``, stepping the learning-rate schedule after every batch; returns
    ([summed loss, correct predictions, images] of this process, the image side seen, None or
    (step, loss) of the first step whose loss was NaN or infinite: the pass stops there). On a GPU
    the flag is read where the progress bar reads the loss anyway (every 10 steps), so the check
    costs no extra synchronisation; on a CPU every step."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
    correct = torch.zeros((), dtype=torch.float64, device=setup.device)
    first_bad = torch.zeros(2, dtype=torch.float64, device=setup.device)  # (step, loss); step 0 = none
    seen = 0
    for step, (images, targets) in enumerate(loader, 1):
        images, targets = place_batch(images, setup), targets.to(setup.device, non_blocking=True)
        logits, loss = _train_step(model, images, targets, optimizer, scaler, criterion, setup)
        scheduler.step()
        new_bad = (first_bad[0] == 0) & ~torch.isfinite(loss.detach())
        first_bad = torch.where(new_bad, torch.stack([torch.full_like(first_bad[0], step), loss.detach().double()]),
                                first_bad)
        loss_sum += loss.detach() * len(targets)
        correct += (logits.argmax(1) == targets).sum()
        seen += len(targets)
        bar.update(1)
        shown = step % 10 == 0 or step == len(loader)
        if shown or setup.device.type == "cpu":  # on a CPU reading the flag costs nothing: stop at once
            if dist.is_available() and dist.is_initialized():  # every process stops at the same step
                dist.all_reduce(first_bad, op=dist.ReduceOp.MAX)
            bad_step, bad_loss = first_bad.tolist()
            if bad_step:
                return [loss_sum.item(), correct.item(), float(seen)], int(images.shape[-1]), (int(bad_step), bad_loss)
        if shown:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.1%}")
    if seen == 0:
        raise ValueError("the training loader yielded no batches (is the dataset empty?)")
    return [loss_sum.item(), correct.item(), float(seen)], int(images.shape[-1]), None


def _validate(model, loader, setup) -> tuple[float, float, float]:
    """Validation of this process's share; (summed loss, correct, images). Plain cross-entropy on
    fp32 logits, the same numbers ``evaluation.evaluate`` reports."""
    from .evaluation import collect_predictions

    logits, targets = collect_predictions(model, loader, precision=setup)
    loss = nn.functional.cross_entropy(logits, targets, reduction="sum").item() if len(targets) else 0.0
    return loss, float((logits.argmax(1) == targets).sum()), float(len(targets))


def fit(model: nn.Module, train_loader, val_loader, epochs: int, *, optimizer: str = DEFAULT_OPTIMIZER,
        lr: float | None = None, weight_decay: float | None = None,
        warmup_epochs: float = DEFAULT_WARMUP_EPOCHS, schedule: str = "cosine", label_smoothing: float = 0.0,
        out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True,
        precision: str | ComputeSetup = "auto", seed: int | None = None,
        class_names: Sequence[str] | None = None, model_name: str | None = None,
        image_size: int | None = None,
        on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs in total and return the history: one dict per epoch
    with epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds.

    - The recipe: ``optimizer`` "adamw" (lr 1e-3, weight decay 0.05; the default), "sgd" (lr 0.01,
      momentum 0.9, weight decay 1e-4) or "adam" (lr 1e-3, no decay); ``weight_decay`` overrides
      the optimiser's and applies to conv and linear weights only (``parameter_groups``);
      ``warmup_epochs`` of linear warm-up, then ``schedule`` "cosine", "step" or "none", stepped
      after every batch (``lr_factor``); ``label_smoothing`` for the training loss.
    - ``precision``: "auto" (see ``choose_device_and_precision``) or "fp32". The model is moved to
      the chosen device. Losses and accuracies are always computed from fp32 logits.
    - ``out_dir``: after every epoch ``checkpoint.pt`` (everything needed to resume: weights,
      optimiser, scheduler, random states, history, meta) and ``history.json`` are replaced
      atomically; ``best.pt`` holds the weights with the best validation accuracy. An existing
      checkpoint is never overwritten unless ``resume=True``, which continues from it (or starts
      afresh if there is none) up to ``epochs`` in total. The schedule always spans ``epochs``: a
      run resumed with a larger total continues on the longer schedule (with "none", training
      2 epochs and resuming to 4 equals training 4 straight away).
    - ``seed``: reseeds every random generator (and the loader's shuffling) with ``seed + epoch``
      at the start of each epoch, so epoch k sees the same data order and augmentation however
      the run was split up. Exact resumption also needs ``num_workers=0`` (workers keep their own
      random state).
    - Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each
      process gets a share of the data with the loader's batch size (so the global batch is
      batch_size x processes), metrics are summed over processes, and only rank 0 shows progress
      and writes files. BatchNorm statistics stay per process (no SyncBatchNorm), as in
      torchvision's reference scripts by default.
    - An interrupt during an epoch raises ``TrainingInterrupted`` (a ``KeyboardInterrupt``) saying
      what was kept; the last finished epoch's checkpoint is intact. A loss that becomes NaN or
      infinite raises ``TrainingDiverged`` naming the epoch and step; that epoch is not saved, so
      a diverged model never becomes checkpoint.pt or best.pt.
    - The folder is the run's while it trains (``checkpoints.RunFolderLock``: a second training
      into it is refused). ``resume=True`` refuses a checkpoint trained with another recipe
      (model, classes, data, image size, batch size, optimiser, lr, weight decay, warm-up,
      schedule, label smoothing, seed; see ``checkpoints.RECIPE_KEYS``), naming every difference,
      and first repairs best.pt/history.json if a crash came between their writes. Earlier
      best.pt/history.json without a checkpoint.pt are never overwritten.
    ``on_epoch_end(record)`` is called on rank 0 after each epoch (the CLI prints a line there).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    check_number("label_smoothing", label_smoothing)
    if label_smoothing >= 1:
        raise ValueError(f"label_smoothing must be below 1, not {label_smoothing}")
    setup = resolve_setup(precision)
    rank, world_size = init_distributed()
    if world_size > 1 and setup.device.type == "cuda":
        setup = replace(setup, device=torch.device("cuda", torch.cuda.current_device()))
    main_process = rank == 0
    show = progress and main_process
    out_dir = Path(out_dir) if out_dir is not None else None
    checkpoint_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None

    if world_size > 1:  # each process's share decides the number of steps per epoch
        train_loader = _sharded_loader(train_loader, rank, world_size, train=True, seed=seed or 0)
        if val_loader is not None:
            val_loader = _sharded_loader(val_loader, rank, world_size, train=False, seed=0)
    place_model(model, setup)
    base_model = model
    optim = make_optimizer(model, optimizer, lr, weight_decay)
    steps_per_epoch = len(train_loader)
    schedule_factor = lr_factor(schedule, epochs, steps_per_epoch, warmup_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, schedule_factor)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.grad_scaler)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    generators = _loader_generators(train_loader)
    meta = {"model_name": model_name, "num_classes": len(class_names) if class_names else _num_outputs(model),
            "class_names": list(class_names) if class_names else None, "image_size": image_size,
            "optimizer": optimizer, "lr": scheduler.base_lrs[0], "weight_decay": optim.param_groups[0]["weight_decay"],
            "warmup_epochs": warmup_epochs, "schedule": schedule,
            "label_smoothing": label_smoothing, "epochs": epochs, "seed": seed,
            "batch_size": getattr(train_loader, "batch_size", None), "world_size": world_size,
            "precision": setup.description, "data": data_fingerprint(train_loader, val_loader),
            # the input scaling the weights expect ("imagenet" or "tf"); predict uses the same
            "normalization": getattr(model, "input_normalization", "imagenet"),
            "weights": (getattr(model, "weights_source", None) or {}).get("file"),
            "backbone_frozen": bool(getattr(model, "backbone_frozen", False))}

    history: list[dict] = []
    best_val_acc = -1.0
    # rank 0 owns the folder while it trains: checked, created and locked before any work
    lock = claim_run_folder(out_dir) if main_process and out_dir is not None else None
    try:
        if checkpoint_path is not None and checkpoint_path.exists():
            if not resume:
                raise FileExistsError(f"{checkpoint_path} already holds a training run; pass resume=True "
                                      "(--resume) to continue it, or choose another output folder.")
            state = load_checkpoint(checkpoint_path)  # on the CPU: random states must stay there
            check_same_run(checkpoint_path, state["meta"], meta)
            if lock is not None:
                for repaired in _repair_epoch_files(out_dir, state):
                    tqdm.write(f"Repaired after a crash: {repaired}.", file=sys.stderr)
            _restore_training_state(state, base_model, optim, scheduler, scaler, generators, checkpoint_path)
            for group, base_lr in zip(optim.param_groups, scheduler.base_lrs):  # the schedule for `epochs`
                group["lr"] = base_lr * schedule_factor(scheduler.last_epoch)
            history, best_val_acc = list(state["history"]), state["best_val_acc"]
            meta = {**meta, **state["meta"], "epochs": epochs, "world_size": world_size,
                    "precision": setup.description}
            if show:
                tqdm.write(f"Resuming {checkpoint_path}: {len(history)} of {epochs} epochs done.", file=sys.stderr)
        if world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                base_model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
    except BaseException:
        if lock is not None:
            lock.release()
        raise

    epoch = saved_epochs = len(history)
    try:
        for epoch in range(len(history), epochs):
            if seed is not None:
                set_seed(seed + epoch)
                for generator in generators:
                    generator.manual_seed(seed + epoch)
            if isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            current_lr = optim.param_groups[0]["lr"]
            with tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                      disable=not show, file=sys.stderr, leave=True, dynamic_ncols=True) as bar:
                sums, seen_size, diverged = _train_one_epoch(model, train_loader, optim, scheduler, scaler,
                                                             criterion, setup, bar)
                if diverged:
                    raise _diverged(f"the training loss became {diverged[1]} at epoch {epoch + 1}/{epochs}, "
                                    f"step {diverged[0]}/{len(train_loader)}", current_lr,
                                    checkpoint_path, saved_epochs, history)
                loss, correct, seen = _all_reduce_sums(sums, setup.device, world_size)
                val_loss = val_acc = None
                if val_loader is not None:
                    v_loss, v_correct, v_seen = _all_reduce_sums(_validate(base_model, val_loader, setup),
                                                                 setup.device, world_size)
                    val_loss, val_acc = v_loss / max(v_seen, 1), v_correct / max(v_seen, 1)
                    if not math.isfinite(val_loss):
                        raise _diverged(f"the validation loss after epoch {epoch + 1}/{epochs} is {val_loss}",
                                        current_lr, checkpoint_path, saved_epochs, history)
                    bar.set_postfix(loss=f"{loss / seen:.3f}", acc=f"{correct / seen:.1%}",
                                    val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.1%}")
            record = {"epoch": epoch + 1, "train_loss": loss / seen, "train_acc": correct / seen,
                      "val_loss": val_loss, "val_acc": val_acc, "lr": current_lr,
                      "seconds": time.perf_counter() - start}
            history.append(record)
            meta["image_size"] = meta["image_size"] or seen_size
            improved = val_acc is not None and val_acc > best_val_acc
            best_val_acc = max(best_val_acc, val_acc) if val_acc is not None else best_val_acc
            if main_process and out_dir is not None:
                state = {"format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": base_model.state_dict(),
                         "optimizer": optim.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict() if setup.grad_scaler else None,
                         "rng": _rng_state(generators), "history": history,
                         "best_val_acc": best_val_acc, "meta": meta}
                _save_epoch_files(out_dir, state, improved)
                saved_epochs = len(history)
            if main_process and on_epoch_end is not None:
                on_epoch_end(record)
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, TrainingInterrupted):
            raise
        kept = _what_was_kept(checkpoint_path, saved_epochs)
        message = f"Training interrupted during epoch {epoch + 1}/{epochs}: {kept}"
        if show:
            tqdm.write(message, file=sys.stderr)
        raise TrainingInterrupted(message, history[:saved_epochs] if checkpoint_path else history,
                                  checkpoint_path if saved_epochs else None) from None
    finally:
        if lock is not None:
            lock.release()
    if world_size > 1:  # every process returns once rank 0's files are written, and they leave together
        dist.barrier()
    base_model.eval()
    return history
