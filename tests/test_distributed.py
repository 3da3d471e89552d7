"""DistributedDataParallel: two CPU processes under torchrun train exactly like one process with
the same global batch.

The model has no BatchNorm on purpose: under DDP each process normalises with its own half-batch
statistics (no SyncBatchNorm), which would make the two runs differ slightly by design. Without
it, the only difference is the order of floating-point sums in the gradient all-reduce.
"""

import json
import os
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent('''
    """Train a tiny conv net on fixed synthetic data with fit(); run alone or under torchrun."""
    import sys

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from resnet_course.training import fit, set_seed


    def main(out_dir, batch_size):
        set_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8, 4))
        generator = torch.Generator().manual_seed(0)
        images, labels = torch.randn(64, 3, 8, 8, generator=generator), torch.arange(64) % 4
        images[labels == 1, 0] += 1.0
        train = DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)
        val = DataLoader(TensorDataset(images[:22], labels[:22]), batch_size=batch_size)
        return fit(model, train, val, 2, optimizer="sgd", lr=0.1, schedule="cosine", precision="fp32",
                   progress=False, seed=0, out_dir=out_dir)


    if __name__ == "__main__":
        main(sys.argv[1], int(sys.argv[2]))
''')


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path / "ddp"),
        "4",
    ]  # 2 processes x 4 images = a global batch of 8
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]

    single_history = runpy.run_path(str(script))["main"](str(tmp_path / "single"), 8)

    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["meta"]["world_size"] == 2 and single["meta"]["world_size"] == 1
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, atol=1e-5, rtol=1e-4, msg=key)
    assert len(ddp["history"]) == len(single_history) == 2
    for d, s in zip(ddp["history"], single_history):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert d[key] == pytest.approx(s[key], rel=1e-5), key
    assert json.loads((tmp_path / "ddp" / "history.json").read_text()) == ddp["history"]
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == ["best.pt", "checkpoint.pt", "history.json", "run.json"]
