"""The command line: ``python -m resnet_course train | predict | make-standin | import-kaggle |
download-weights``.

Each command is a thin layer over the package (``training.fit``, ``evaluation.predict``,
``data``). Mistakes a user can make (a missing folder, an unknown model, an unreadable image)
end with a one-paragraph message and exit code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import config

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXAMPLES = """\
examples:
  python -m resnet_course train --model resnet50 --epochs 10 --out runs/resnet50
  python -m resnet_course train --model resnet50 --epochs 20 --out runs/resnet50 --resume
  python -m resnet_course train --model resnet50 --weights imagenet --freeze-backbone --out runs/probe
  python -m resnet_course download-weights --model resnet50v2
  python -m resnet_course predict --checkpoint runs/resnet50/checkpoint.pt photo1.jpg photo2.png
  python -m resnet_course make-standin
  python -m resnet_course make-pretraining-set --out data/pretraining_birds
  python -m resnet_course import-kaggle ~/Downloads/birds-525-species
  torchrun --nproc_per_node=2 -m resnet_course train --model resnet50 --out runs/ddp
"""


class UsageError(Exception):
    """A mistake in how the command was called; its message is shown without a traceback."""


def _say(message: str, rank: int = 0) -> None:
    if rank == 0:
        print(message, flush=True)


def _default_num_workers() -> int:
    """Loader processes: none on a CPU (they would compete with training for the cores), a few on
    a GPU machine so that JPEG decoding keeps up."""
    import torch

    return min(4, max((os.cpu_count() or 1) - 1, 0)) if torch.cuda.is_available() else 0


def _epoch_line(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:6.1%}")
    if record["val_loss"] is not None:
        line += f"  |  val loss {record['val_loss']:.4f} acc {record['val_acc']:6.1%}"
    return line + f"  |  lr {record['lr']:.2e}  |  {record['seconds']:.1f} s"


def _check_batchnorm_can_train(model, model_name: str, batch_size: int, image_size: int) -> None:
    """BatchNorm in training mode needs more than one value per channel: with one image per batch
    every feature map must be larger than 1x1. Checked with one forward pass of a blank image,
    only when ``batch_size`` is 1, so that the refusal comes before any training."""
    import torch
    from torch import nn

    if batch_size > 1:
        return
    sizes = []
    hooks = [m.register_forward_hook(lambda m, inputs, out: sizes.append(inputs[0].shape[-2:].numel()))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    if sizes and min(sizes) <= 1:
        raise UsageError(f"--batch-size 1 cannot train {model_name} at {image_size} px: its last feature "
                         "maps are 1x1 pixels, so BatchNorm would see a single value per channel. Use "
                         "--batch-size 2 or more, or a larger --image-size.")


def cmd_train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from .checkpoints import check_writable_folder
    from .data import find_bird_data, load_birds
    from .device import choose_device_and_precision
    from .finetune import freeze_backbone
    from .models import get_model
    from .pretrained import normalization_for
    from .training import CHECKPOINT_NAME, fit, init_distributed, set_seed

    for name, value, low in (("--epochs", args.epochs, 1), ("--image-size", args.image_size, 16),
                             ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, not {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number, not {args.lr}")
    if args.weight_decay is not None and not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UsageError(f"--weight-decay must be a number >= 0, not {args.weight_decay}")
    if not (math.isfinite(args.warmup_epochs) and 0 <= args.warmup_epochs <= args.epochs):
        raise UsageError(f"--warmup-epochs must be between 0 and --epochs ({args.epochs}), not {args.warmup_epochs}")
    if args.freeze_backbone and args.weights is None:
        raise UsageError("--freeze-backbone trains only the head on top of pretrained weights: "
                         "add --weights imagenet or --weights PATH")
    if args.weights is not None and args.weights.strip().lower() != "imagenet" \
            and not Path(args.weights).expanduser().is_file():
        raise UsageError(f"--weights: no file at {args.weights} (give 'imagenet' or the path of a weights file)")
    if not 0 <= args.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), not {args.label_smoothing}")
    if args.num_workers is not None and args.num_workers < 0:
        raise UsageError(f"--num-workers must be 0 (load in the training process) or more, not {args.num_workers}")
    out_dir = Path(args.out) if args.out else config.RUNS_DIR / args.model
    check_writable_folder(out_dir)  # before any work, not after the first epoch
    if (out_dir / CHECKPOINT_NAME).exists() and not args.resume:
        raise UsageError(f"{out_dir / CHECKPOINT_NAME} already holds a training run; pass --resume to "
                         "continue it, or choose another --out folder.")
    rank, world_size = init_distributed()
    if args.data is not None:
        root, standin = Path(args.data), False
    else:  # rank 0 generates the stand-in if needed; the others wait, then find it in place
        if rank == 0:
            root, standin = find_bird_data()
        if world_size > 1:
            dist.barrier()
        if rank != 0:
            root, standin = find_bird_data(verbose=False)
    num_workers = _default_num_workers() if args.num_workers is None else args.num_workers
    normalization = normalization_for(args.model, args.weights)  # what the weights expect
    train_loader, val_loader, class_names = load_birds(
        root, image_size=args.image_size, batch_size=args.batch_size, num_workers=num_workers,
        normalization=normalization)
    setup = choose_device_and_precision(force_fp32=args.fp32)
    batch = f"{args.batch_size}" if world_size == 1 else f"{args.batch_size} per process x {world_size}"
    start = "random initialisation" if args.weights is None else f"weights {args.weights}"
    _say(f"Training {args.model} on {root}{' (the offline stand-in)' if standin else ''}: "
         f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, {args.image_size} px, "
         f"batch {batch}, {args.epochs} epochs, {args.optimizer}; {setup.description}. From {start}"
         f"{', backbone frozen (head only)' if args.freeze_backbone else ''}, inputs normalised "
         f"'{normalization}'. Output: {out_dir}", rank)

    set_seed(args.seed)
    model = get_model(args.model, num_classes=len(class_names), weights=args.weights,
                      zero_init_residual=not args.no_zero_init)
    if args.freeze_backbone:
        freeze_backbone(model)
    _check_batchnorm_can_train(model, args.model, args.batch_size, args.image_size)
    history = fit(model, train_loader, val_loader, args.epochs, optimizer=args.optimizer, lr=args.lr,
                  weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                  schedule=args.schedule, label_smoothing=args.label_smoothing, out_dir=out_dir,
                  resume=args.resume, progress=not args.no_progress, precision=setup, seed=args.seed,
                  class_names=class_names, model_name=args.model, image_size=args.image_size,
                  on_epoch_end=lambda record: _say(_epoch_line(record, args.epochs)))
    if history and history[-1]["val_acc"] is not None:
        best = max(history, key=lambda r: r["val_acc"])
        _say(f"Done: {len(history)} epochs in {out_dir / 'checkpoint.pt'} and history.json; "
             f"best val accuracy {best['val_acc']:.1%} (epoch {best['epoch']}) in {out_dir / 'best.pt'}", rank)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import load_rgb
    from .evaluation import predict
    from .training import load_model

    checkpoint = Path(args.checkpoint)
    if args.topk < 1:
        raise UsageError(f"--topk must be at least 1, not {args.topk}")
    if not checkpoint.is_file():
        raise UsageError(f"no checkpoint at {checkpoint} (train one with: python -m resnet_course train --out DIR)")
    model, meta = load_model(checkpoint)
    class_names = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    readable, problems = [], []
    for image in args.images:
        try:
            load_rgb(image)
            readable.append(image)
        except (OSError, ValueError) as error:
            problems.append(f"cannot read {image}: {error}")
    results = predict(model, readable, class_names, image_size=meta.get("image_size") or 224,
                      topk=args.topk, precision="fp32" if args.fp32 else "auto",
                      normalization=meta.get("normalization") or "imagenet") if readable else []
    for result in results:
        line = f"{result['image']}: {result['label']} ({result['probability']:.1%})"
        if args.topk > 1:
            line += "  [" + ", ".join(f"{name} {p:.1%}" for name, p in result["topk"]) + "]"
        print(line)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else 0


def cmd_make_standin(args: argparse.Namespace) -> int:
    from .data import make_standin_birds
    from .standin import standin_is_complete

    out = Path(args.out) if args.out else config.STANDIN_DIR
    if standin_is_complete(out, seed=args.seed):
        print(f"{out} already holds the complete stand-in (seed {args.seed}): nothing to draw.")
        return 0
    print(f"Drawing the offline stand-in (565 procedurally drawn 224 px images, not photos) into {out} ...")
    make_standin_birds(out, seed=args.seed)
    print(f"Done: {out}")
    return 0


def cmd_make_pretraining_set(args: argparse.Namespace) -> int:
    from .pretraining import (
        PRETRAINING_EPOCHS,
        check_pretraining_options,
        make_pretraining_set,
        pretraining_minutes,
        pretraining_set_is_complete,
    )

    try:
        check_pretraining_options(args.species, args.per_species)
    except ValueError as error:
        raise UsageError(f"--{error}") from None
    out = Path(args.out)
    if pretraining_set_is_complete(out, args.species, args.per_species, args.seed):
        print(f"{out} already holds this pretraining set: nothing to draw.")
        return 0
    make_pretraining_set(out, species=args.species, per_species=args.per_species, seed=args.seed)
    print(f"Drew the pretraining set, the course's \"ImageNet in miniature\", into {out}: {args.species} invented "
          f"species that are not the course's four, {args.per_species} drawn 224 px images each (not photos, not "
          f"ImageNet). Pretraining ResNet-50 on it at 112 px for {PRETRAINING_EPOCHS} epochs takes about "
          f"{pretraining_minutes(args.species, args.per_species):.1f} minutes on a 2-core CPU.")
    return 0


def add_pretraining_parser(commands) -> None:
    """The ``make-pretraining-set`` command's arguments."""
    from .pretraining import DEFAULT_PER_SPECIES, DEFAULT_SPECIES, SPECIES

    parser = commands.add_parser(
        "make-pretraining-set", help="draw the pretraining set of other species (ImageNet in miniature)",
        description="Draw a class-folder dataset of invented bird species that are not the course's four, "
                    "with the stand-in's drawing code (224 px, the same scenes and clutter), to pretrain a "
                    "backbone on where ImageNet weights are not available. Deterministic per seed.")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    parser.add_argument("--species", type=int, default=DEFAULT_SPECIES,
                        help=f"number of species, 2 to {len(SPECIES)} (default: %(default)s)")
    parser.add_argument("--per-species", type=int, default=DEFAULT_PER_SPECIES,
                        help="images per species (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="drawing seed (default: %(default)s)")
    parser.set_defaults(run=cmd_make_pretraining_set)


def cmd_import_kaggle(args: argparse.Namespace) -> int:
    from .data import import_kaggle

    import_kaggle(args.src, Path(args.out) if args.out else None)
    return 0


def cmd_download_weights(args: argparse.Namespace) -> int:
    from .pretrained import download_weights, weights_files

    for name in args.model or ["resnet50", "resnet50v2"]:
        for file in weights_files(name):
            path = download_weights(name, include_top=file.include_top)
            print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .device import FP32_ENV
    from .models import MODEL_NAMES
    from .recipe import (
        DEFAULT_LR,
        DEFAULT_OPTIMIZER,
        DEFAULT_WARMUP_EPOCHS,
        DEFAULT_WEIGHT_DECAY,
        OPTIMIZERS,
        SCHEDULES,
    )

    defaults = config.settings()
    parser = argparse.ArgumentParser(
        prog="python -m resnet_course", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train ResNets on the four-class bird dataset, predict with a checkpoint, get the data.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model; writes OUT/checkpoint.pt, OUT/best.pt and OUT/history.json",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a ResNet on the bird photos (or the stand-in). A checkpoint is written after "
                    "every epoch; --resume continues an interrupted or finished run up to --epochs. "
                    "Under torchrun, --batch-size is per process (global batch = batch size x processes).")
    train.add_argument("--model", default="resnet50", choices=MODEL_NAMES, help="architecture (default: %(default)s)")
    train.add_argument("--data", default=None, metavar="DIR",
                       help="folder with one sub-folder per class (default: the real photos in "
                            "data/bird_photos or $RESNET_COURSE_DATA, else the offline stand-in)")
    train.add_argument("--epochs", type=int, default=defaults.epochs,
                       help="total epochs, counting resumed ones (default: %(default)s)")
    train.add_argument("--image-size", type=int, default=defaults.image_size,
                       help="image side in pixels (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="images per step, per process (default: %(default)s)")
    train.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/MODEL)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    train.add_argument("--optimizer", default=DEFAULT_OPTIMIZER, choices=OPTIMIZERS,
                       help=f"adamw (lr {DEFAULT_LR['adamw']}, weight decay {DEFAULT_WEIGHT_DECAY['adamw']}; "
                            "the default), "
                            f"sgd (momentum 0.9, lr {DEFAULT_LR['sgd']}, weight decay {DEFAULT_WEIGHT_DECAY['sgd']}) "
                            f"or adam (lr {DEFAULT_LR['adam']}, no decay)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per optimiser)")
    train.add_argument("--weight-decay", type=float, default=None,
                       help="weight decay on conv and linear weights, never on BN or biases "
                            "(default: per optimiser)")
    train.add_argument("--warmup-epochs", type=float, default=DEFAULT_WARMUP_EPOCHS,
                       help="epochs of linear learning-rate warm-up (default: %(default)s)")
    train.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                       help="learning-rate schedule after the warm-up, stepped every batch (default: %(default)s)")
    train.add_argument("--no-zero-init", action="store_true",
                       help="don't start each residual branch at zero (zero_init_residual, on by default)")
    train.add_argument("--label-smoothing", type=float, default=0.0,
                       help="label smoothing for the training loss (default: %(default)s)")
    train.add_argument("--fp32", action="store_true",
                       help=f"plain fp32 instead of automatic mixed precision (or set {FP32_ENV}=1)")
    train.add_argument("--seed", type=int, default=0,
                       help="seed for weights, data order and augmentation (default: %(default)s)")
    train.add_argument("--num-workers", type=int, default=None,
                       help="data loading processes (default: 0 on a CPU, up to 4 with a GPU)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (per-epoch lines still print)")
    train.add_argument("--weights", default=None, metavar="imagenet|PATH",
                       help="start from ImageNet weights: 'imagenet' (torchvision's for v1, Keras "
                            "Applications' for v2; cached or downloaded) or a local weights file; "
                            "the head is fresh (default: random initialisation)")
    train.add_argument("--freeze-backbone", action="store_true",
                       help="train only the head (needs --weights); the backbone's BatchNorm keeps its statistics")
    train.set_defaults(run=cmd_train)

    predict = commands.add_parser("predict", help="classify image files with a trained checkpoint",
                                  description="Print the predicted class and its probability for each image.")
    predict.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.pt or best.pt from train")
    predict.add_argument("--topk", type=int, default=1, help="also list the K most likely classes")
    predict.add_argument("--fp32", action="store_true", help="plain fp32 instead of automatic mixed precision")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size, any mode)")
    predict.set_defaults(run=cmd_predict)

    standin = commands.add_parser("make-standin", help="draw the offline stand-in dataset",
                                  description="Draw 565 procedural bird images (not photos) with the course's "
                                              "classes and counts.")
    standin.add_argument("--out", default=None, metavar="DIR", help="target folder (default: data/standin_birds)")
    standin.add_argument("--seed", type=int, default=0, help="drawing seed")
    standin.set_defaults(run=cmd_make_standin)

    add_pretraining_parser(commands)

    kaggle = commands.add_parser("import-kaggle", help="copy the four classes out of a Kaggle BIRDS 525 download",
                                 description="Copy BANANAQUIT, BLACK SKIMMER, BLACK THROATED BUSHTIT and COCKATOO "
                                             "from an unpacked Kaggle 'BIRDS 525 SPECIES' download.")
    kaggle.add_argument("src", metavar="SRC", help="the unpacked download (holding train/, valid/, test/)")
    kaggle.add_argument("--out", default=None, metavar="DIR", help="target folder (default: data/bird_photos)")
    kaggle.set_defaults(run=cmd_import_kaggle)

    download = commands.add_parser(
        "download-weights", help="download ImageNet weights files for later offline use",
        description="Download the published ImageNet weights (torchvision's .pth for v1, Keras "
                    "Applications' .h5 with and without top for v2) into torch.hub's cache "
                    "($TORCH_HOME/hub/checkpoints), where --weights imagenet finds them offline.")
    download.add_argument("--model", action="append", choices=MODEL_NAMES, metavar="NAME",
                          help="model whose weights to fetch; repeat for several "
                               "(default: resnet50 and resnet50v2)")
    download.set_defaults(run=cmd_download_weights)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The data's warnings (a skipped image, a class with no validation image) as one plain
    ``warning:`` line, not Python's file:line format with a line of source code."""
    from .birds import BirdDataWarning

    if issubclass(category, BirdDataWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 for a usage or data error, a checkpoint or
    folder that cannot be used, a file that cannot be written, or a training that diverged; 130 if
    interrupted)."""
    from .checkpoints import CheckpointError, RunFolderError, SaveFailed
    from .data import BirdDataError
    from .device import FP32_ENV
    from .pretrained import WeightsError
    from .training import TrainingDiverged, TrainingInterrupted

    try:  # an on/off variable set to neither (RESNET_COURSE_FAST=maybe) is a usage error too
        for name in (config.FAST_ENV, FP32_ENV):
            config.env_flag(name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except TrainingInterrupted as interrupted:
        print(str(interrupted), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, BirdDataError, WeightsError, CheckpointError, RunFolderError, SaveFailed, TrainingDiverged,
            FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
