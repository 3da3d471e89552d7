"""The command line: ``python -m resnet_course train | predict | make-standin | import-kaggle |
download-weights``.

Each command checks what it was given, says what it is about to do, and calls the package
(``training.fit``, ``evaluation.predict``, ``data``). Mistakes a user can make (a missing folder,
an unknown model, an unreadable image) end with a one-paragraph message and exit code 2, not a
traceback. The options of each command, and their ranges, are ``arguments``'s.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import config
from .arguments import EXIT_USAGE, build_parser
from .birds import BirdDataError, BirdDataWarning
from .checkpoints import BEST_NAME, CHECKPOINT_NAME, HISTORY_NAME, CheckpointError, best_record, saved_best
from .data import check_train_fraction, find_bird_data, load_birds, make_standin_birds
from .device import FP32_ENV, choose_device_and_precision
from .distributed import init_distributed
from .evaluation import load_model, predict
from .finetune import freeze_backbone
from .imagenet import OFFLINE_ENV, download_weights, weights_files
from .images import UnreadableImage, check_image
from .kaggle import import_kaggle
from .models import get_model
from .pretrained import WeightsError, normalization_for
from .pretraining import (
    PRETRAINING_EPOCHS,
    check_pretraining_options,
    make_pretraining_set,
    pretraining_minutes,
    pretraining_set_is_complete,
)
from .recipe import RecipeError, validate
from .runfolder import RunFolderError, SaveFailed, check_writable_folder
from .standin import standin_is_complete
from .training import TrainingDiverged, TrainingInterrupted, fit, set_seed

EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in how the command was called; its message is shown without a traceback."""


def _say(message: str, rank: int = 0) -> None:
    if rank == 0:
        print(message, flush=True)


def _default_num_workers() -> int:
    """Loader processes: none on a CPU (they would compete with training for the cores), a few on
    a GPU machine so that JPEG decoding keeps up."""

    return min(4, max((os.cpu_count() or 1) - 1, 0)) if torch.cuda.is_available() else 0


def _epoch_line(record: dict, epochs: int) -> str:
    line = f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_acc']:6.1%}"
    if record["val_loss"] is not None:
        line += f"  |  val loss {record['val_loss']:.4f} acc {record['val_acc']:6.1%}"
    return line + f"  |  lr {record['lr']:.2e}  |  {record['seconds']:.1f} s"


def _check_batchnorm_can_train(model, model_name: str, batch_size: int, image_size: int) -> None:
    """BatchNorm in training mode needs more than one value per channel: with one image per batch
    every feature map must be larger than 1x1. Checked with one forward pass of a blank image,
    only when ``batch_size`` is 1, so that the refusal comes before any training."""

    if batch_size > 1:
        return
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, inputs, out: sizes.append(inputs[0].shape[-2:].numel()))
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    if sizes and min(sizes) <= 1:
        raise UsageError(
            f"--batch-size 1 cannot train {model_name} at {image_size} px: its last feature "
            "maps are 1x1 pixels, so BatchNorm would see a single value per channel. Use "
            "--batch-size 2 or more, or a larger --image-size."
        )


def _check_train_options(args: argparse.Namespace) -> dict:
    """Refuse bad options before any work (the parser has checked the ranges of the other numbers):
    the recipe through ``recipe.validate``, the one check ``fit`` uses too, its message naming the
    option as typed, then the starting weights. Returns the validated recipe."""
    try:
        recipe = validate(
            args.epochs,
            args.optimizer,
            args.lr,
            args.weight_decay,
            args.warmup_epochs,
            args.schedule,
            args.label_smoothing,
        )
    except RecipeError as error:
        raise UsageError(error.message(lambda name: "--" + name.replace("_", "-"))) from None
    try:
        check_train_fraction(args.train_fraction, "--train-fraction")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.freeze_backbone and args.weights is None:
        raise UsageError(
            "--freeze-backbone trains only the head on top of pretrained weights: "
            "add --weights imagenet or --weights PATH"
        )
    if (
        args.weights is not None
        and args.weights.strip().lower() != "imagenet"
        and not Path(args.weights).expanduser().is_file()
    ):
        raise UsageError(f"--weights: no file at {args.weights} (give 'imagenet' or the path of a weights file)")
    return recipe


def _training_data(args: argparse.Namespace, rank: int, world_size: int) -> tuple[Path, bool]:
    """The data folder and whether it is the stand-in; under torchrun rank 0 draws the stand-in
    if needed while the others wait, then find it in place."""
    if args.data is not None:
        return Path(args.data), False
    if rank == 0:
        found = find_bird_data()
    if world_size > 1:
        dist.barrier()
    return found if rank == 0 else find_bird_data(verbose=False)


def _done_line(history: list[dict], out_dir: Path) -> str:
    """The last line of a training: where the run is, and the best epoch if best.pt holds it."""
    line = f"Done: {len(history)} epochs in {out_dir / CHECKPOINT_NAME} and {HISTORY_NAME}"
    best = best_record(history)
    if best is None:
        return line
    if saved_best(out_dir / BEST_NAME) == (best["epoch"], best["val_acc"]):
        return line + f"; best val accuracy {best['val_acc']:.1%} (epoch {best['epoch']}) in {out_dir / BEST_NAME}"
    return line + (
        f"; the best epoch was {best['epoch']} ({best['val_acc']:.1%}), but {out_dir / BEST_NAME} "
        "does not hold it (it is missing or cannot be read)"
    )


def cmd_train(args: argparse.Namespace) -> int:
    recipe = _check_train_options(args)
    out_dir = Path(args.out) if args.out else config.RUNS_DIR / args.model
    check_writable_folder(out_dir)  # before any work, not after the first epoch
    if (out_dir / CHECKPOINT_NAME).exists() and not args.resume:
        raise UsageError(
            f"{out_dir / CHECKPOINT_NAME} already holds a training run; pass --resume to "
            "continue it, or choose another --out folder."
        )
    rank, world_size = init_distributed()
    root, standin = _training_data(args, rank, world_size)
    num_workers = _default_num_workers() if args.num_workers is None else args.num_workers
    normalization = normalization_for(args.model, args.weights)  # what the weights expect
    train_loader, val_loader, class_names = load_birds(
        root,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=num_workers,
        normalization=normalization,
        train_fraction=args.train_fraction,
    )
    setup = choose_device_and_precision(force_fp32=args.fp32)
    batch = f"{args.batch_size}" if world_size == 1 else f"{args.batch_size} per process x {world_size}"
    start = "random initialisation" if args.weights is None else f"weights {args.weights}"
    _say(
        f"Training {args.model} on {root}{' (the offline stand-in)' if standin else ''}: "
        f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, {args.image_size} px, "
        f"batch {batch}, {args.epochs} epochs, {args.optimizer}; {setup.description}. From {start}"
        f"{', backbone frozen (head only)' if args.freeze_backbone else ''}, inputs normalised "
        f"'{normalization}'. Output: {out_dir}",
        rank,
    )

    set_seed(args.seed)
    model = get_model(
        args.model,
        num_classes=len(class_names),
        weights=args.weights,
        zero_init_residual=not args.no_zero_init,
        class_names=class_names,
    )
    if args.freeze_backbone:
        freeze_backbone(model)
    _check_batchnorm_can_train(model, args.model, args.batch_size, args.image_size)
    history = fit(
        model,
        train_loader,
        val_loader,
        args.epochs,
        **recipe,
        out_dir=out_dir,
        resume=args.resume,
        progress=not args.no_progress,
        precision=setup,
        seed=args.seed,
        class_names=class_names,
        model_name=args.model,
        image_size=args.image_size,
        on_epoch_end=lambda record: _say(_epoch_line(record, args.epochs)),
    )
    _say(_done_line(history, out_dir), rank)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise UsageError(
            f"no checkpoint at {config.printable_path(checkpoint)} "
            "(train one with: python -m resnet_course train --out DIR)"
        )
    model, meta = load_model(checkpoint)
    class_names = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    readable, problems = [], []
    for image in args.images:  # every file is checked first: one bad photo does not stop the others
        reason = check_image(image)
        if reason is None:
            readable.append(image)
        else:
            problems.append(f"cannot read {config.printable_path(image)}: {reason}")
    try:
        results = (
            predict(
                model,
                readable,
                class_names,
                image_size=meta.get("image_size") or 224,
                topk=args.topk,
                precision="fp32" if args.fp32 else "auto",
                normalization=meta.get("normalization") or "imagenet",
            )
            if readable
            else []
        )
    except UnreadableImage as error:  # a file that changed since it was checked
        raise UsageError(str(error)) from None
    for result in results:
        line = f"{result['image']}: {result['label']} ({result['probability']:.1%})"
        if args.topk > 1:
            line += "  [" + ", ".join(f"{name} {p:.1%}" for name, p in result["topk"]) + "]"
        print(line)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else 0


def cmd_make_standin(args: argparse.Namespace) -> int:

    out = Path(args.out) if args.out else config.STANDIN_DIR
    if standin_is_complete(out, seed=args.seed):
        print(f"{out} already holds the complete stand-in (seed {args.seed}): nothing to draw.")
        return 0
    print(f"Drawing the offline stand-in (565 procedurally drawn 224 px images, not photos) into {out} ...")
    make_standin_birds(out, seed=args.seed)
    print(f"Done: {out}")
    return 0


def cmd_make_pretraining_set(args: argparse.Namespace) -> int:

    try:
        check_pretraining_options(args.species, args.per_species)
    except ValueError as error:
        raise UsageError(f"--{error}") from None
    out = Path(args.out)
    if pretraining_set_is_complete(out, args.species, args.per_species, args.seed):
        print(f"{out} already holds this pretraining set: nothing to draw.")
        return 0
    make_pretraining_set(out, species=args.species, per_species=args.per_species, seed=args.seed)
    print(
        f'Drew the pretraining set, the course\'s "ImageNet in miniature", into {out}: {args.species} invented '
        f"species that are not the course's four, {args.per_species} drawn 224 px images each (not photos, not "
        f"ImageNet). Pretraining ResNet-50 on it at 112 px for {PRETRAINING_EPOCHS} epochs takes about "
        f"{pretraining_minutes(args.species, args.per_species):.1f} minutes on a 2-core CPU."
    )
    return 0


def cmd_import_kaggle(args: argparse.Namespace) -> int:

    import_kaggle(args.src, Path(args.out) if args.out else None)
    return 0


def cmd_download_weights(args: argparse.Namespace) -> int:

    for name in args.model or ["resnet50", "resnet50v2"]:
        for file in weights_files(name):
            path = download_weights(name, include_top=file.include_top)
            print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    return 0


#: What each command runs (its options are ``arguments.build_parser``'s).
COMMANDS = {
    "train": cmd_train,
    "predict": cmd_predict,
    "make-standin": cmd_make_standin,
    "make-pretraining-set": cmd_make_pretraining_set,
    "import-kaggle": cmd_import_kaggle,
    "download-weights": cmd_download_weights,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The data's warnings (a skipped image, a class with no validation image) as one plain
    ``warning:`` line, not Python's file:line format with a line of source code."""

    if issubclass(category, BirdDataWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 for a usage or data error, a checkpoint or
    folder that cannot be used, a file that cannot be written, or a training that diverged; 130 if
    interrupted)."""
    try:  # an on/off variable set to neither (RESNET_COURSE_FAST=maybe) is a usage error too
        config.check_environment(FP32_ENV, OFFLINE_ENV)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exited:  # a mistake in the options, already said in one line; --help exits as usual
        if exited.code == EXIT_USAGE:
            return EXIT_USAGE
        raise
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return COMMANDS[args.command](args)
    except TrainingInterrupted as interrupted:
        print(str(interrupted), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        UsageError,
        BirdDataError,
        WeightsError,
        CheckpointError,
        RunFolderError,
        SaveFailed,
        TrainingDiverged,
        FileExistsError,
        FileNotFoundError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
