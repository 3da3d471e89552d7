"""The command line's options: one parser per command, the sane range of every number, and a
parser that says a mistake in one line with exit code 2. ``cli`` runs the commands.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from . import config
from .device import FP32_ENV
from .models import MODEL_NAMES
from .pretraining import DEFAULT_PER_SPECIES, DEFAULT_SPECIES, SPECIES
from .recipe import DEFAULT_LR, DEFAULT_OPTIMIZER, DEFAULT_WARMUP_EPOCHS, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, SCHEDULES

__all__ = ["EXIT_USAGE", "EXAMPLES", "CourseArgumentParser", "number_in", "build_parser"]

#: The exit code of a mistake in how the command was called (and of every other refusal).
EXIT_USAGE = 2

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


class CourseArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake in the options is one line (``error: ...`` and where the help is) and
    exit code 2, like every other refusal of the command line: ``error: --epochs must be at least 1, not 0``."""

    def error(self, message: str):
        message = re.sub(r"^argument (--[\w-]+): must be ", r"\1 must be ", message)
        self.exit(EXIT_USAGE, f"error: {message} (see: {self.prog} --help)\n")


def number_in(
    kind: type, low: float, high: float, low_text: str, *, high_excluded: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` (int or float) from ``low`` to ``high`` (``high``
    itself excluded if ``high_excluded``). Anything else is refused saying what is allowed: a
    fraction where a whole number is due, nan, inf, below ``low`` ("must be {low_text}"), above ``high``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {'a whole number' if kind is int else 'a number'}, not {text!r}"
            ) from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be {low_text}, not {value}")
        if value > high or (high_excluded and value == high):
            raise argparse.ArgumentTypeError(f"must be {'below' if high_excluded else 'at most'} {high:g}, not {value}")
        return value

    return parse


#: The sane range of every numeric option, defined once: a value outside it is refused before any work.
EPOCHS = number_in(int, 1, 10_000, "at least 1")
IMAGE_SIZE = number_in(int, 16, 1024, "at least 16")
BATCH_SIZE = number_in(int, 1, 1024, "at least 1")
# --lr, --weight-decay, --warmup-epochs and --label-smoothing are plain floats here: recipe.validate,
# the one check of the recipe (fit's too), refuses them in cmd_train, naming the option.
SEED = number_in(int, 0, 2**32 - 1, "a whole number >= 0")
NUM_WORKERS = number_in(int, 0, 256, "0 (load in the training process) or more")
TOPK = number_in(int, 1, 1000, "at least 1")


def add_train_parser(commands) -> None:
    """The ``train`` command: what to train on what and where, then the recipe, how the run is
    done and what it starts from."""
    defaults = config.settings()
    train = commands.add_parser(
        "train",
        help="train a model; writes OUT/checkpoint.pt, OUT/best.pt and OUT/history.json",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a ResNet on the bird photos (or the stand-in). A checkpoint is written after "
        "every epoch; --resume continues an interrupted or finished run up to --epochs. "
        "Under torchrun, --batch-size is per process (global batch = batch size x processes).",
    )
    train.add_argument("--model", default="resnet50", choices=MODEL_NAMES, help="architecture (default: %(default)s)")
    train.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="folder with one sub-folder per class (default: the real photos in "
        "data/bird_photos or $RESNET_COURSE_DATA, else the offline stand-in)",
    )
    train.add_argument(
        "--epochs",
        type=EPOCHS,
        default=defaults.epochs,
        help="total epochs, counting resumed ones (default: %(default)s)",
    )
    train.add_argument(
        "--image-size", type=IMAGE_SIZE, default=defaults.image_size, help="image side in pixels (default: %(default)s)"
    )
    train.add_argument(
        "--batch-size",
        type=BATCH_SIZE,
        default=defaults.batch_size,
        help="images per step, per process (default: %(default)s)",
    )
    train.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/MODEL)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    _add_recipe_options(train)
    _add_run_options(train)
    _add_starting_point_options(train)


def _add_recipe_options(train: argparse.ArgumentParser) -> None:
    """``train``'s recipe: optimiser, learning rate, weight decay, warm-up, schedule, zero-init and
    label smoothing (checked by ``recipe.validate`` in ``cli.cmd_train``)."""
    train.add_argument(
        "--optimizer",
        default=DEFAULT_OPTIMIZER,
        choices=OPTIMIZERS,
        help=f"adamw (lr {DEFAULT_LR['adamw']}, weight decay {DEFAULT_WEIGHT_DECAY['adamw']}; "
        "the default), "
        f"sgd (momentum 0.9, lr {DEFAULT_LR['sgd']}, weight decay {DEFAULT_WEIGHT_DECAY['sgd']}) "
        f"or adam (lr {DEFAULT_LR['adam']}, no decay)",
    )
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per optimiser)")
    train.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="weight decay on conv and linear weights, never on BN or biases (default: per optimiser)",
    )
    train.add_argument(
        "--warmup-epochs",
        type=float,
        default=DEFAULT_WARMUP_EPOCHS,
        help="epochs of linear learning-rate warm-up (default: %(default)s)",
    )
    train.add_argument(
        "--schedule",
        default="cosine",
        choices=SCHEDULES,
        help="learning-rate schedule after the warm-up, stepped every batch (default: %(default)s)",
    )
    train.add_argument(
        "--no-zero-init",
        action="store_true",
        help="don't start each residual branch at zero (zero_init_residual, on by default)",
    )
    train.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        help="label smoothing for the training loss (default: %(default)s)",
    )


def _add_run_options(train: argparse.ArgumentParser) -> None:
    """How ``train`` runs: precision, seed, loader processes, progress bars."""
    train.add_argument(
        "--fp32", action="store_true", help=f"plain fp32 instead of automatic mixed precision (or set {FP32_ENV}=1)"
    )
    train.add_argument(
        "--seed", type=SEED, default=0, help="seed for weights, data order and augmentation (default: %(default)s)"
    )
    train.add_argument(
        "--num-workers",
        type=NUM_WORKERS,
        default=None,
        help="data loading processes (default: 0 on a CPU, up to 4 with a GPU)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars (per-epoch lines still print)")


def _add_starting_point_options(train: argparse.ArgumentParser) -> None:
    """What ``train`` starts from and how much of the training split it uses: starting weights,
    a fraction of the training images, a frozen backbone."""
    train.add_argument(
        "--weights",
        default=None,
        metavar="imagenet|PATH",
        help="start from ImageNet weights: 'imagenet' (torchvision's for v1, Keras "
        "Applications' for v2; cached or downloaded), a local weights file, or a "
        "checkpoint written by train (its backbone; the head is kept only for the same "
        "classes); the head is fresh (default: random initialisation)",
    )
    train.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        metavar="F",
        help="train on a stratified, deterministic fraction 0 < F <= 1 of the training split; "
        "the validation split never changes (default: %(default)s)",
    )
    train.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train only the head (needs --weights); the backbone's BatchNorm keeps its statistics",
    )


def add_predict_parser(commands) -> None:
    """The ``predict`` command's arguments."""
    predict = commands.add_parser(
        "predict",
        help="classify image files with a trained checkpoint",
        description="Print the predicted class and its probability for each image.",
    )
    predict.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.pt or best.pt from train")
    predict.add_argument("--topk", type=TOPK, default=1, help="also list the K most likely classes")
    predict.add_argument("--fp32", action="store_true", help="plain fp32 instead of automatic mixed precision")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size, any mode)")


def add_standin_parser(commands) -> None:
    """The ``make-standin`` command's arguments."""
    standin = commands.add_parser(
        "make-standin",
        help="draw the offline stand-in dataset",
        description="Draw 565 procedural bird images (not photos) with the course's classes and counts.",
    )
    standin.add_argument("--out", default=None, metavar="DIR", help="target folder (default: data/standin_birds)")
    standin.add_argument("--seed", type=SEED, default=0, help="drawing seed")


def add_pretraining_parser(commands) -> None:
    """The ``make-pretraining-set`` command's arguments."""

    parser = commands.add_parser(
        "make-pretraining-set",
        help="draw the pretraining set of other species (ImageNet in miniature)",
        description="Draw a class-folder dataset of invented bird species that are not the course's four, "
        "with the stand-in's drawing code (224 px, the same scenes and clutter), to pretrain a "
        "backbone on where ImageNet weights are not available. Deterministic per seed.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    parser.add_argument(
        "--species",
        type=int,
        default=DEFAULT_SPECIES,
        help=f"number of species, 2 to {len(SPECIES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--per-species", type=int, default=DEFAULT_PER_SPECIES, help="images per species (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="drawing seed (default: %(default)s)")


def add_kaggle_parser(commands) -> None:
    """The ``import-kaggle`` command's arguments."""
    kaggle = commands.add_parser(
        "import-kaggle",
        help="copy the four classes out of a Kaggle BIRDS 525 download",
        description="Copy BANANAQUIT, BLACK SKIMMER, BLACK THROATED BUSHTIT and COCKATOO "
        "from an unpacked Kaggle 'BIRDS 525 SPECIES' download.",
    )
    kaggle.add_argument("src", metavar="SRC", help="the unpacked download (holding train/, valid/, test/)")
    kaggle.add_argument("--out", default=None, metavar="DIR", help="target folder (default: data/bird_photos)")


def add_download_parser(commands) -> None:
    """The ``download-weights`` command's arguments."""
    download = commands.add_parser(
        "download-weights",
        help="download ImageNet weights files for later offline use",
        description="Download the published ImageNet weights (torchvision's .pth for v1, Keras "
        "Applications' .h5 with and without top for v2) into torch.hub's cache "
        "($TORCH_HOME/hub/checkpoints), where --weights imagenet finds them offline.",
    )
    download.add_argument(
        "--model",
        action="append",
        choices=MODEL_NAMES,
        metavar="NAME",
        help="model whose weights to fetch; repeat for several (default: resnet50 and resnet50v2)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-command per command, its name in ``args.command``."""
    parser = CourseArgumentParser(
        prog="python -m resnet_course",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train ResNets on the four-class bird dataset, predict with a checkpoint, get the data.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in (
        add_train_parser,
        add_predict_parser,
        add_standin_parser,
        add_pretraining_parser,
        add_kaggle_parser,
        add_download_parser,
    ):
        add_parser(commands)
    return parser
