"""Does the default training recipe train the course's models? Accuracy, not speed.

Trains each model for ``--epochs`` at ``--image-size`` on the bird data (the offline stand-in when
no photos are present; seed 0 by default) with ``fit``'s default recipe, or with the options given,
and prints one row per run: final and best validation accuracy, training accuracy, and each
class's recall at the end. Every run is also appended to ``--out`` (JSON lines), so runs made in
several processes can be tabulated together with ``--table``.

    python benchmarks/bench_recipe.py --models resnet50 resnet50v2            # the targets
    python benchmarks/bench_recipe.py --models resnet50 --optimizer sgd --lr 0.01 --warmup-epochs 0
    python benchmarks/bench_recipe.py --table                                  # print what was run

Targets (issue: "Training that works"): at 112 px, 10 epochs, stand-in seed 0, ResNet-50 and
ResNet50V2 each >= 80 % final validation accuracy with every class recalled >= 50 %.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_course import images  # noqa: E402
from resnet_course.data import find_bird_data, load_birds  # noqa: E402
from resnet_course.evaluation import evaluate  # noqa: E402
from resnet_course.models import get_model  # noqa: E402
from resnet_course.training import fit, set_seed  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "recipe_runs.jsonl"


def run(model_name: str, args: argparse.Namespace, root: Path) -> dict:
    train_loader, val_loader, class_names = load_birds(root, image_size=args.image_size, batch_size=args.batch_size)
    set_seed(args.seed)
    model = get_model(model_name, num_classes=len(class_names), zero_init_residual=not args.no_zero_init)
    recipe = {
        key: getattr(args, key)
        for key in ("optimizer", "lr", "weight_decay", "warmup_epochs", "schedule", "label_smoothing")
    }
    recipe = {key: value for key, value in recipe.items() if value is not None}
    start = time.perf_counter()
    history = fit(
        model,
        train_loader,
        val_loader,
        args.epochs,
        seed=args.seed,
        progress=False,
        precision="fp32",
        class_names=class_names,
        model_name=model_name,
        on_epoch_end=lambda r: print(
            f"  {model_name} epoch {r['epoch']}: train {r['train_acc']:.1%} "
            f"val {r['val_acc']:.1%} ({r['seconds']:.0f} s)",
            flush=True,
        ),
        **recipe,
    )
    report = evaluate(model, val_loader, class_names, precision="fp32")
    return {
        "model": model_name,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "zero_init_residual": not args.no_zero_init,
        "recipe": recipe,
        "crop_scale": images.TRAIN_CROP_SCALE,
        "data": str(root.name),
        "final_val_acc": history[-1]["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history),
        "final_train_acc": history[-1]["train_acc"],
        "recall": {row["class"]: row["recall"] for row in report["per_class"]},
        "val_acc_per_epoch": [r["val_acc"] for r in history],
        "minutes": (time.perf_counter() - start) / 60,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor(),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | px | ep | seed | recipe | zero-init | final val | best val | train | min recall | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        recipe = ", ".join(f"{k}={v}" for k, v in r["recipe"].items()) or "default"
        if tuple(r.get("crop_scale", images.DEFAULT_TRAIN_CROP_SCALE)) != images.DEFAULT_TRAIN_CROP_SCALE:
            recipe += f", crops {r['crop_scale'][0]}-{r['crop_scale'][1]}"
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['epochs']} | {r['seed']} | {recipe} | "
            f"{'yes' if r['zero_init_residual'] else 'no'} | {r['final_val_acc']:.1%} | "
            f"{r['best_val_acc']:.1%} | {r['final_train_acc']:.1%} | {min(r['recall'].values()):.0%} | "
            f"{r['minutes']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet50v2"])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--optimizer", default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--warmup-epochs", type=float, default=None)
    parser.add_argument("--schedule", default=None)
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument("--no-zero-init", action="store_true")
    parser.add_argument(
        "--crop-scale",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help=f"area range of the training crops (default: {images.TRAIN_CROP_SCALE})",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON lines file the runs are appended to")
    parser.add_argument("--table", action="store_true", help="only print the table of the runs in --out")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]))
        return
    if args.crop_scale:
        images.TRAIN_CROP_SCALE = tuple(args.crop_scale)
    if args.threads:
        torch.set_num_threads(args.threads)
    root, _ = find_bird_data()
    for seed in args.seeds:
        for model_name in args.models:
            args.seed = seed
            row = run(model_name, args, root)
            with open(args.out, "a") as file:
                file.write(json.dumps(row) + "\n")
            print(table([row]).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
