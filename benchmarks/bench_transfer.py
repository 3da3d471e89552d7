"""What pretraining buys: from scratch vs linear probe vs full fine-tuning, at fractions of the
training images, from a backbone pretrained on the drawn other species (``make-pretraining-set``).

The runs are notebook 09's, made by the same functions (``resnet_course.transfer``) into the same
run folders (``runs/full/...``, or ``--work``), so a run made here is loaded by the notebook and
the other way round:

1. ``transfer.pretrain`` draws the pretraining set (``--species`` x ``--per-species``) and trains
   ``--model`` on it with the default recipe for ``settings().pretraining_epochs`` epochs (or
   loads that run); its validation accuracy is recorded beside 1/N.
2. ``transfer.label_efficiency`` trains on the bird data (the offline stand-in when no photos are
   present, or ``--data``), for every seed and training fraction: from scratch and fine-tuning
   from the pretrained backbone for the same ``settings().transfer_epochs``, and a linear probe on its
   cached features. The validation split is the same in every run (its fingerprint is recorded).

Every run is appended to ``--out`` as one JSON line, with the torch threads and the load average
at the time it was written; ``--table`` prints mean and range over seeds.

    python benchmarks/bench_transfer.py                 # ResNet-50, 112 px, 3 seeds x 100/25/10 %
    python benchmarks/bench_transfer.py --table         # print what was run
    python benchmarks/bench_transfer.py --tiny --data DIR --work /tmp/w --out /tmp/runs.jsonl   # a smoke run

Targets (issue 18): with 10 % of the training images, fine-tuning from the drawn-world backbone
beats training from scratch by at least 20 points (mean of 3 seeds, same epochs); with 100 % it is
at least as good; the linear probe's head epochs on cached features take seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_course import config, transfer  # noqa: E402
from resnet_course.pretraining import DEFAULT_SPECIES  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "transfer_runs.jsonl"
METHODS = ("scratch", "probe", "finetune")
#: transfer.METHODS in the short names of the JSON lines.
KEYS = dict(zip(transfer.METHODS, METHODS))


def machine() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor(),
        "load_average": round(os.getloadavg()[0], 1),
    }


def append(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as file:
        file.write(json.dumps(row) + "\n")


def pretrain_row(run, args: argparse.Namespace) -> dict:
    """The pretraining run as a JSON line: its validation accuracy beside chance (1/N)."""
    settings = config.settings()
    history = run.history
    return {
        "kind": "pretrain",
        "model": args.model,
        "image_size": settings.image_size,
        "epochs": len(history),
        "species": len(run.class_names),
        "per_species": args.per_species or settings.pretraining_per_species,
        "pretraining_seed": 0,
        "train_images": len(run.train_loader.dataset),
        "val_images": len(run.val_loader.dataset),
        "final_val_acc": history[-1]["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history),
        "chance": 1 / len(run.class_names),
        "val_acc_per_epoch": [r["val_acc"] for r in history],
        "minutes": sum(r["seconds"] for r in history) / 60,
        **machine(),
    }


def transfer_row(row: dict, weights: Path, val_split: str, args: argparse.Namespace) -> dict:
    """One run of ``transfer.label_efficiency`` as a JSON line."""
    history = row["history"]
    probe = row["method"] == transfer.METHODS[1]
    return {
        "kind": "transfer",
        "method": KEYS[row["method"]],
        "train_fraction": row["train_fraction"],
        "seed": row["seed"],
        "model": args.model,
        "image_size": config.settings().image_size,
        "epochs": len(history),
        "weights": None if row["method"] == transfer.METHODS[0] else weights.parent.name,
        "data": args.data.name if args.data else "found",
        "train_images": row["train_images"],
        "val_images": args.val_images,
        "val_split": val_split,
        "final_val_acc": row["val_acc"],
        "best_val_acc": row["best_val_acc"],
        "chance": 0.25,
        "val_acc_per_epoch": [r["val_acc"] for r in history],
        "feature_seconds": history[0].get("feature_seconds") if probe else None,
        "head_seconds_per_epoch": (
            statistics.mean(r["seconds"] for r in history[1:]) if probe and len(history) > 1 else None
        ),
        "minutes": row["seconds"] / 60,
        **machine(),
    }


def hash_of(items: list) -> str:
    """A short, stable fingerprint of the validation split (the same in every run of a table)."""
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


def table(rows: list[dict]) -> str:
    """Mean final validation accuracy over seeds (with min-max) per method and fraction, after the
    pretraining runs; one line per distinct setting."""
    lines = []
    for r in (r for r in rows if r["kind"] == "pretrain"):
        lines.append(
            f"pretraining: {r['model']} {r['image_size']} px, {r['species']} species x {r['per_species']}, "
            f"{r['epochs']} epochs: val {r['final_val_acc']:.1%} (chance {r['chance']:.1%}), "
            f"{r['minutes']:.1f} min"
        )
    lines += [
        "",
        "| model | px | method | fraction | train images | epochs | seeds | final val (mean) | min-max | "
        "minutes (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in (r for r in rows if r["kind"] == "transfer"):
        key = (r["model"], r["image_size"], METHODS.index(r["method"]), -r["train_fraction"], r["epochs"])
        groups.setdefault(key, []).append(r)
    for (model, size, method, fraction, epochs), runs in sorted(groups.items(), key=lambda kv: (kv[0][3], kv[0][2])):
        accs = [r["final_val_acc"] for r in runs]
        lines.append(
            f"| {model} | {size} | {METHODS[method]} | {-fraction:.0%} | {runs[0]['train_images']} | "
            f"{epochs} | {len(runs)} | {statistics.mean(accs):.1%} | {min(accs):.1%}-{max(accs):.1%} | "
            f"{statistics.mean(r['minutes'] for r in runs):.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--species", type=int, default=DEFAULT_SPECIES)
    parser.add_argument(
        "--per-species",
        type=int,
        default=None,
        help="drawn images per species (default: settings().pretraining_per_species)",
    )
    parser.add_argument("--data", type=Path, default=None, help="bird data (default: photos, else the stand-in)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: settings().transfer_seeds")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(transfer.FRACTIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON lines file the runs are appended to")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="fast mode (64 px, 1 epoch, a small drawn set), runs under --work: seconds, means nothing",
    )
    parser.add_argument("--work", type=Path, default=None, help="runs folder (default: runs/, as the notebooks)")
    parser.add_argument("--table", action="store_true", help="only print the table of the runs in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        print(table([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]))
        return
    os.environ[config.FAST_ENV] = "1" if args.tiny else os.environ.get(config.FAST_ENV, "0")
    if args.work is not None:
        os.environ[config.RUNS_ENV] = str(args.work)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = None if args.work is None else args.work / "pretraining_set"
    run = transfer.pretrain(args.model, args.species, args.per_species, progress=False, folder=folder)
    append(args.out, pretrain_row(run, args))
    print(table([pretrain_row(run, args)]).splitlines()[0], flush=True)
    rows = transfer.label_efficiency(
        run.checkpoint, "drawn", args.model, fractions=args.fractions, seeds=args.seeds, root=args.data
    )
    _, val_loader, _ = transfer.bird_loaders(args.model, None, 1.0, args.data)
    args.val_images = len(val_loader.dataset)
    val_split = hash_of([(Path(p).name, label) for p, label in val_loader.dataset.samples])
    for row in rows:
        append(args.out, transfer_row(row, run.checkpoint, val_split, args))
    print(transfer.summary_table(rows))


if __name__ == "__main__":
    main()
