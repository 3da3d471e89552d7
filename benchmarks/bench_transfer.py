"""What pretraining buys: from scratch vs linear probe vs full fine-tuning, at fractions of the
training images, from a backbone pretrained on the drawn other species (``make-pretraining-set``).

1. Draws the pretraining set (``--species`` x ``--per-species``, seed ``--pretraining-seed``) and
   pretrains ``--model`` on it for ``--pretrain-epochs`` with ``fit``'s default recipe; the run is
   kept in ``--work`` (``fit`` resumes it), and its validation accuracy is recorded beside 1/N.
2. On the bird data (the offline stand-in when no photos are present, or ``--data``), for every
   seed and training fraction: trains from scratch and fine-tunes the pretrained backbone for the
   same ``--epochs``, and fits a linear probe on its cached features (``--probe-epochs``). The
   validation split is the same in every run.

Every run is appended to ``--out`` as one JSON line as soon as it ends, so runs made in several
processes can be tabulated together with ``--table`` (mean and spread over seeds).

    python benchmarks/bench_transfer.py                        # the targets: ResNet-50, 112 px (hours on a CPU)
    python benchmarks/bench_transfer.py --table                # print what was run
    python benchmarks/bench_transfer.py --tiny --data DIR --work /tmp/w --out /tmp/runs.jsonl   # a smoke run

Targets (issue 18): with 10 % of the training images, fine-tuning from the drawn-world backbone
beats training from scratch by at least 20 points (mean of 3 seeds, same epochs); with 100 % it is
at least as good; the linear probe's head epochs on cached features take seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_course.data import find_bird_data, load_birds  # noqa: E402
from resnet_course.finetune import freeze_backbone, linear_probe  # noqa: E402
from resnet_course.models import get_model  # noqa: E402
from resnet_course.pretrained import normalization_for  # noqa: E402
from resnet_course.pretraining import (  # noqa: E402
    DEFAULT_PER_SPECIES,
    DEFAULT_SPECIES,
    PRETRAINING_EPOCHS,
    make_pretraining_set,
)
from resnet_course.training import fit, set_seed  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "transfer_runs.jsonl"
DEFAULT_WORK = ROOT / "runs" / "bench_transfer"
METHODS = ("scratch", "probe", "finetune")
#: The settings of ``--tiny``: every step runs, in seconds, and means nothing.
TINY = {"model": "resnet18", "image_size": 32, "batch_size": 4, "epochs": 1, "probe_epochs": 2,
        "pretrain_epochs": 1, "species": 3, "per_species": 5, "seeds": [0], "fractions": [1.0, 0.5]}


def machine() -> dict:
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor()}


def append(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as file:
        file.write(json.dumps(row) + "\n")


def pretrain(args: argparse.Namespace) -> tuple[Path, dict]:
    """Draw the pretraining set and pretrain the backbone on it (resumed if already there)."""
    name = f"pretraining_set_{args.species}x{args.per_species}_seed{args.pretraining_seed}"
    drawn = make_pretraining_set(args.work / name, species=args.species, per_species=args.per_species,
                                 seed=args.pretraining_seed)
    train_loader, val_loader, class_names = load_birds(drawn, image_size=args.image_size, batch_size=args.batch_size)
    out_dir = args.work / f"pretrain_{args.model}_{args.image_size}px_{args.pretrain_epochs}ep_{drawn.name}"
    set_seed(0)
    model = get_model(args.model, num_classes=len(class_names))
    start = time.perf_counter()
    history = fit(model, train_loader, val_loader, args.pretrain_epochs, out_dir=out_dir, resume=True,
                  progress=False, precision="fp32", seed=0, class_names=class_names, model_name=args.model,
                  image_size=args.image_size, on_epoch_end=lambda r: print(
                      f"  pretrain epoch {r['epoch']}: train {r['train_acc']:.1%} val {r['val_acc']:.1%} "
                      f"({r['seconds']:.0f} s)", flush=True))
    row = {"kind": "pretrain", "model": args.model, "image_size": args.image_size, "epochs": args.pretrain_epochs,
           "species": args.species, "per_species": args.per_species, "pretraining_seed": args.pretraining_seed,
           "train_images": len(train_loader.dataset), "val_images": len(val_loader.dataset),
           "final_val_acc": history[-1]["val_acc"], "best_val_acc": max(r["val_acc"] for r in history),
           "chance": 1 / len(class_names), "val_acc_per_epoch": [r["val_acc"] for r in history],
           "minutes": (time.perf_counter() - start) / 60, **machine()}
    return out_dir / "checkpoint.pt", row


def transfer_run(method: str, fraction: float, seed: int, weights: Path, root: Path,
                 args: argparse.Namespace) -> dict:
    """One run on the bird data: ``scratch``, ``probe`` or ``finetune`` at ``fraction`` of the training images."""
    uses_weights = method != "scratch"
    train_loader, val_loader, class_names = load_birds(
        root, image_size=args.image_size, batch_size=args.batch_size, train_fraction=fraction,
        normalization=normalization_for(args.model, weights if uses_weights else None))
    set_seed(seed)
    model = get_model(args.model, num_classes=len(class_names), weights=weights if uses_weights else None,
                      class_names=class_names)
    start = time.perf_counter()
    if method == "probe":
        history = linear_probe(freeze_backbone(model), train_loader, val_loader, args.probe_epochs, seed=seed,
                               precision="fp32")
    else:
        history = fit(model, train_loader, val_loader, args.epochs, progress=False, precision="fp32", seed=seed,
                      class_names=class_names, model_name=args.model, image_size=args.image_size)
    val_split = [(Path(p).name, label) for p, label in val_loader.dataset.samples]
    return {"kind": "transfer", "method": method, "train_fraction": fraction, "seed": seed, "model": args.model,
            "image_size": args.image_size, "epochs": args.probe_epochs if method == "probe" else args.epochs,
            "weights": weights.parent.name if uses_weights else None, "data": root.name,
            "train_images": len(train_loader.dataset), "val_images": len(val_split),
            "val_split": hash_of(val_split), "final_val_acc": history[-1]["val_acc"],
            "best_val_acc": max(r["val_acc"] for r in history), "chance": 1 / len(class_names),
            "val_acc_per_epoch": [r["val_acc"] for r in history],
            "feature_seconds": history[0].get("feature_seconds"),
            "head_seconds_per_epoch": (statistics.mean(r["seconds"] for r in history[1:])
                                       if method == "probe" and len(history) > 1 else None),
            "minutes": (time.perf_counter() - start) / 60, **machine()}


def hash_of(items: list) -> str:
    """A short, stable fingerprint of the validation split (the same in every run of a table)."""
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


def table(rows: list[dict]) -> str:
    """Mean final validation accuracy over seeds (with min-max) per method and fraction, after the
    pretraining runs; one line per distinct setting."""
    lines = []
    for r in (r for r in rows if r["kind"] == "pretrain"):
        lines.append(f"pretraining: {r['model']} {r['image_size']} px, {r['species']} species x {r['per_species']}, "
                     f"{r['epochs']} epochs: val {r['final_val_acc']:.1%} (chance {r['chance']:.1%}), "
                     f"{r['minutes']:.1f} min")
    lines += ["", "| model | px | method | fraction | train images | epochs | seeds | final val (mean) | min-max | "
              "minutes (mean) |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in (r for r in rows if r["kind"] == "transfer"):
        key = (r["model"], r["image_size"], METHODS.index(r["method"]), -r["train_fraction"], r["epochs"])
        groups.setdefault(key, []).append(r)
    for (model, size, method, fraction, epochs), runs in sorted(groups.items(), key=lambda kv: (kv[0][3], kv[0][2])):
        accs = [r["final_val_acc"] for r in runs]
        lines.append(f"| {model} | {size} | {METHODS[method]} | {-fraction:.0%} | {runs[0]['train_images']} | "
                     f"{epochs} | {len(runs)} | {statistics.mean(accs):.1%} | {min(accs):.1%}-{max(accs):.1%} | "
                     f"{statistics.mean(r['minutes'] for r in runs):.1f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of from-scratch and fine-tuning runs")
    parser.add_argument("--probe-epochs", type=int, default=30, help="head epochs of the linear probe")
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAINING_EPOCHS)
    parser.add_argument("--species", type=int, default=DEFAULT_SPECIES)
    parser.add_argument("--per-species", type=int, default=DEFAULT_PER_SPECIES)
    parser.add_argument("--pretraining-seed", type=int, default=0, help="drawing seed of the pretraining set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--data", type=Path, default=None, help="bird data (default: photos, else the stand-in)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the drawn set and pretraining live")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON lines file the runs are appended to")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run in seconds (numbers mean nothing)")
    parser.add_argument("--table", action="store_true", help="only print the table of the runs in --out")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        print(table([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    weights, row = pretrain(args)
    append(args.out, row)
    print(table([row]).splitlines()[0], flush=True)
    root = args.data if args.data is not None else find_bird_data()[0]
    for seed in args.seeds:
        for fraction in args.fractions:
            for method in args.methods:
                row = transfer_run(method, fraction, seed, weights, root, args)
                append(args.out, row)
                print(f"  {method} {fraction:.0%} seed {seed}: val {row['final_val_acc']:.1%} "
                      f"({row['minutes']:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
