"""Linear probe vs fine-tuning: what caching the frozen backbone's features buys, in one run.

    python benchmarks/bench_linear_probe.py                    # about 5 minutes on a 2-core CPU
    python benchmarks/bench_linear_probe.py --image-size 64    # a quick smoke run
    python benchmarks/bench_linear_probe.py --threads 1        # on a busy shared machine

On the bird data (the real photos if present, else the offline stand-in), ResNet-50 with 4
classes, batch 8, at the automatic precision. Times one epoch over the 452 training images of:

1. full fine-tuning (``fit``, every weight trained);
2. training the head with a frozen backbone through ``fit`` (``train --freeze-backbone``): the
   backbone still runs forward on every image in every epoch;
3. the linear probe (``finetune.linear_probe``): the backbone's features of each image are
   computed once (its own line), then each head epoch only touches the cached vectors.

Data loading and JPEG decoding are included, as a learner meets them; validation is not. The
weights are the ImageNet ones if cached, else random ones in the same format: the speed is the same.
Timings on a shared machine are noisy: compare numbers from one run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from resnet_course import finetune, imagenet
from resnet_course.data import find_bird_data, load_birds
from resnet_course.device import choose_device_and_precision
from resnet_course.models import get_model
from resnet_course.training import fit


def weights_file(folder: Path) -> tuple[Path, str]:
    found = imagenet.find_weights("resnet50")
    if found is not None:
        return found, "torchvision ImageNet weights"
    return finetune.save_standin_weights("resnet50", folder / "standin.pth"), "random stand-in weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--head-epochs", type=int, default=20, help="head epochs on cached features to average over")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root, standin = find_bird_data()
    train, _, names = load_birds(root, image_size=args.image_size, batch_size=args.batch_size)
    setup = choose_device_and_precision()
    with tempfile.TemporaryDirectory() as tmp:
        path, kind = weights_file(Path(tmp))
        print(
            f"ResNet-50, {len(train.dataset)} training images at {args.image_size} px, batch {args.batch_size}, "
            f"{setup.description}, {torch.get_num_threads()} threads, {kind}."
        )

        def model():
            torch.manual_seed(0)
            return get_model("resnet50", num_classes=len(names), weights=path)

        full = fit(model(), train, None, 1, progress=False, precision=setup, seed=0)[0]["seconds"]
        print(f"full fine-tuning: {full:.1f} s/epoch", flush=True)
        frozen = fit(finetune.freeze_backbone(model()), train, None, 1, progress=False, precision=setup, seed=0)[0][
            "seconds"
        ]
        print(f"frozen backbone through fit: {frozen:.1f} s/epoch", flush=True)
        history = finetune.linear_probe(
            model(), train, None, epochs=1 + args.head_epochs, image_size=args.image_size, precision=setup
        )
        features = history[0]["feature_seconds"]
        head = sum(r["seconds"] for r in history[1:]) / args.head_epochs
    print(f"linear probe: features once {features:.1f} s, then {head * 1000:.1f} ms per head epoch", flush=True)

    print()
    print(f"| ResNet-50, {args.image_size} px, one run | seconds | vs full fine-tuning epoch |")
    print("|---|---|---|")
    print(f"| full fine-tuning, one epoch | {full:.1f} | 1 |")
    print(f"| frozen backbone through `fit`, one epoch | {frozen:.1f} | {frozen / full:.2f} |")
    print(f"| linear probe: features of the training images, once | {features:.1f} | {features / full:.2f} |")
    print(f"| linear probe: one head epoch on cached features | {head:.4f} | {head / full:.5f} |")
    print(
        f"| linear probe, 10 epochs in all (features + 10 head epochs) | {features + 10 * head:.1f} | "
        f"{(features + 10 * head) / full:.2f} |"
    )
    print(
        f"\nA head epoch on cached features is {full / head:,.0f}x faster than a fine-tuning epoch; "
        f"10 probe epochs cost {(features + 10 * head) / (10 * full):.1%} of 10 fine-tuning epochs."
    )


if __name__ == "__main__":
    main()
