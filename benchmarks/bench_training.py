"""Training speed in one run, printed as a markdown table of ratios and images/second.

    python benchmarks/bench_training.py            # about 5-15 minutes on a 2-core CPU
    python benchmarks/bench_training.py --steps 3 --sizes 64

What it compares (ResNet-50, 4 classes, synthetic images so that data loading is not measured,
batch 8; each number is the fastest of ``--repeats`` timed epochs of ``--steps`` steps, after one
warm-up epoch: the fastest epoch is the one least disturbed by other work on a shared machine):

1. our ``resnet50`` vs torchvision's ``resnet50``, both trained by ``fit`` at automatic
   precision (target: ratio >= 0.95, i.e. ours is as fast);
2. ``fit`` at automatic precision vs a minimal hand-written fp32 loop over torchvision's ResNet-50
   (target >= 2x at 224 px on a CPU with AMX or on a GPU; 1x where "auto" is fp32 anyway);
3. ``fit`` forced to fp32 vs the same loop (target >= 0.95: fit adds no overhead);
4. images/second of ``fit`` at automatic precision at each image size.
Timings on a shared machine are noisy: compare ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_course.device import ComputeSetup, choose_device_and_precision
from resnet_course.models import resnet50
from resnet_course.training import fit

NUM_CLASSES = 4


def synthetic_loader(size: int, steps: int, batch_size: int) -> DataLoader:
    images = torch.randn(steps * batch_size, 3, size, size)
    labels = torch.arange(steps * batch_size) % NUM_CLASSES
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def fit_images_per_second(make_model, size, steps, batch_size, precision, repeats) -> float:
    """Images/second of ``fit`` in its fastest timed epoch (no validation, no checkpoint)."""
    torch.manual_seed(0)
    history = fit(
        make_model(),
        synthetic_loader(size, steps, batch_size),
        None,
        1 + repeats,
        precision=precision,
        schedule="none",
        progress=False,
    )
    return steps * batch_size / min(record["seconds"] for record in history[1:])


def hand_loop_images_per_second(size, steps, batch_size, device, repeats) -> float:
    """The reference: the shortest correct fp32 training loop over torchvision's ResNet-50."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=NUM_CLASSES).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = synthetic_loader(size, steps, batch_size)
    seconds = []
    for _ in range(1 + repeats):
        _sync(device)
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return steps * batch_size / min(seconds[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="training steps per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs (the fastest counts)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    parser.add_argument(
        "--extra", action="store_true", help="also time bf16 + channels-last and fp32 + channels-last forced on"
    )
    args = parser.parse_args()
    auto = choose_device_and_precision()
    fp32 = choose_device_and_precision(force_fp32=True)
    steps, batch, top, repeats = args.steps, args.batch_size, max(args.sizes), args.repeats
    print(
        f"device: {auto.description}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"batch {batch}, best of {repeats} epochs of {steps} steps\n"
    )

    ours = fit_images_per_second(lambda: resnet50(NUM_CLASSES), top, steps, batch, auto, repeats)
    theirs = fit_images_per_second(
        lambda: torchvision.models.resnet50(num_classes=NUM_CLASSES), top, steps, batch, auto, repeats
    )
    loop = hand_loop_images_per_second(top, steps, batch, auto.device, repeats)
    ours_fp32 = fit_images_per_second(lambda: resnet50(NUM_CLASSES), top, steps, batch, fp32, repeats)

    print(f"| comparison (ResNet-50, {top} px) | img/s | reference img/s | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| our resnet50 vs torchvision, both fit auto | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} | >= 0.95 |")
    print(
        f"| fit auto vs hand-written fp32 loop (torchvision) | {ours:.1f} | {loop:.1f} | {ours / loop:.2f} | >= 2 "
        "with AMX/GPU |"
    )
    print(
        f"| fit fp32 vs hand-written fp32 loop (torchvision) | {ours_fp32:.1f} | {loop:.1f} | "
        f"{ours_fp32 / loop:.2f} | >= 0.95 |"
    )
    if args.extra and auto.device.type == "cpu":
        for name, setup in (
            ("bf16 + channels-last", ComputeSetup(auto.device, torch.bfloat16, True, False, "bf16 cl")),
            ("fp32 + channels-last", ComputeSetup(auto.device, None, True, False, "fp32 cl")),
        ):
            speed = fit_images_per_second(lambda: resnet50(NUM_CLASSES), top, steps, batch, setup, repeats)
            print(
                f"| fit {name} (forced) vs hand-written fp32 loop | {speed:.1f} | {loop:.1f} | {speed / loop:.2f} | "
                "(info) |"
            )

    print("\n| image size | fit auto img/s | ms per step |")
    print("|---|---|---|")
    for size in args.sizes:
        speed = (
            ours
            if size == top
            else fit_images_per_second(lambda: resnet50(NUM_CLASSES), size, steps, batch, auto, repeats)
        )
        print(f"| {size} | {speed:.1f} | {1000 * batch / speed:.0f} |")


if __name__ == "__main__":
    main()
