"""resnet_course.recipe, the default training recipe: AdamW, weight decay on weights only, linear warm-up then a cosine
decay stepped every batch, and residual branches that start at zero (Goyal et al. 2017)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_course.blocks import BasicBlock, Bottleneck, PreActBottleneck
from resnet_course.models import get_model
from resnet_course.recipe import (
    DEFAULT_LR,
    DEFAULT_OPTIMIZER,
    DEFAULT_WEIGHT_DECAY,
    lr_factor,
    parameter_groups,
)
from resnet_course.training import fit, set_seed


def small_net(num_classes: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def data(n: int = 32, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 4
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


# ------------------------------------------------------------------------------------------
# The learning-rate schedule
# ------------------------------------------------------------------------------------------


def expected_factor(step: int, total: int, warmup: int) -> float:
    """Goyal et al. 2017's gradual warm-up (linear in the step), then a half cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_warmup_grows_linearly_then_cosine_decays_at_every_step():
    epochs, steps_per_epoch, warmup_epochs = 4, 5, 1
    factor = lr_factor("cosine", epochs, steps_per_epoch, warmup_epochs)
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    assert [factor(s) for s in range(total)] == pytest.approx([expected_factor(s, total, warmup) for s in range(total)])
    assert [factor(s) for s in range(warmup)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factor(warmup) == 1.0 and 0 < factor(total - 1) < 0.02  # the last step still moves


def test_fractional_warmup_and_no_warmup():
    half = lr_factor("cosine", 2, 10, 0.5)
    assert [half(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    none = lr_factor("none", 3, 4, 0)
    assert {none(s) for s in range(12)} == {1.0}


def test_fit_takes_the_scheduled_rate_at_every_step():
    """fit's AdamW steps equal a hand-written AdamW loop whose rate is set by hand before each step."""
    loader = data(n=32)  # 4 steps per epoch
    epochs, warmup_epochs, lr, wd = 3, 1, 3e-3, 0.05
    set_seed(0)
    model = small_net()
    reference = small_net()
    reference.load_state_dict(model.state_dict())
    history = fit(
        model,
        loader,
        None,
        epochs,
        optimizer="adamw",
        lr=lr,
        weight_decay=wd,
        warmup_epochs=warmup_epochs,
        precision="fp32",
        progress=False,
    )

    decay = [p for p in reference.parameters() if p.ndim > 1]
    no_decay = [p for p in reference.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    total, warmup, step = epochs * len(loader), warmup_epochs * len(loader), 0
    reference.train()
    for _ in range(epochs):
        for images, targets in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr * expected_factor(step, total, warmup)
            loss = nn.functional.cross_entropy(reference(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)
    # the history's rate is the one of each epoch's first step
    assert [r["lr"] for r in history] == pytest.approx([lr * expected_factor(e * 4, total, warmup) for e in range(3)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=float("nan")), "lr"),
        (dict(lr=float("inf")), "lr"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-0.1), "lr"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
        (dict(warmup_epochs=float("nan")), "warmup_epochs"),
        (dict(warmup_epochs=3), "warmup_epochs"),
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(weight_decay=float("inf")), "weight_decay"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(label_smoothing=float("nan")), "label_smoothing"),
        (dict(label_smoothing=-0.1), "label_smoothing"),
    ],
)
def test_bad_recipe_values_are_clear_errors_before_training(kwargs, message):
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        fit(model, data(), None, 2, precision="fp32", progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was trained


# ------------------------------------------------------------------------------------------
# Weight decay on weights only
# ------------------------------------------------------------------------------------------


def test_weight_decay_skips_batchnorm_and_biases():
    model = get_model("resnet50v2", num_classes=4)
    decayed, exempt = parameter_groups(model, 0.05)
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    decayed_ids = {id(p) for p in decayed["params"]}
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            in_decay = id(param) in decayed_ids
            if isinstance(module, nn.BatchNorm2d) or pname == "bias":
                assert not in_decay, f"{name}.{pname} is decayed"
            else:
                assert isinstance(module, (nn.Conv2d, nn.Linear)) and pname == "weight" and in_decay, f"{name}.{pname}"
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out_of_the_optimiser():
    model = small_net()
    model[0].weight.requires_grad_(False)
    groups = parameter_groups(model, 0.1)
    assert all(p is not model[0].weight for group in groups for p in group["params"])


def test_default_recipe_is_adamw_with_decoupled_decay():
    assert DEFAULT_OPTIMIZER == "adamw" and DEFAULT_LR["adamw"] == 1e-3 and DEFAULT_WEIGHT_DECAY["adamw"] == 0.05


# ------------------------------------------------------------------------------------------
# Zero-initialised residual branches: every block starts as its shortcut
# ------------------------------------------------------------------------------------------


def _branch_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of each block's residual branch just before the addition: the last BN of a v1
    block, the last (biased) conv of a v2 block."""
    outputs, handles = {}, []
    for name, module in model.named_modules():
        last = {BasicBlock: "bn2", Bottleneck: "bn3", PreActBottleneck: "conv3"}.get(type(module))
        if last:
            handles.append(
                getattr(module, last).register_forward_hook(
                    lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach().clone())
                )
            )
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return outputs


@pytest.mark.parametrize("name, blocks", [("resnet18", 8), ("resnet50", 16), ("resnet50v2", 16)])
def test_zero_init_residual_makes_every_branch_output_exactly_zero(name, blocks):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    zeroed = _branch_outputs(get_model(name, num_classes=4, zero_init_residual=True).train(), x)
    assert len(zeroed) == blocks
    assert all(torch.count_nonzero(out) == 0 for out in zeroed.values())
    plain = _branch_outputs(get_model(name, num_classes=4).train(), x)  # torchvision's default init
    assert all(torch.count_nonzero(out) > 0 for out in plain.values())


def test_zero_init_block_returns_its_shortcut():
    """With the branch at zero, a v2 block outputs exactly its shortcut (identity, 1x1 max pool
    or projection of the pre-activation), and a v1 block ReLU(shortcut)."""
    torch.manual_seed(0)
    model = get_model("resnet50v2", num_classes=4, zero_init_residual=True).eval()
    x = torch.randn(1, 256, 8, 8)
    block = model.conv2.block3  # the strided last block of stage 2: shortcut = 1x1 max pool, stride 2
    with torch.no_grad():
        torch.testing.assert_close(block(x), x[:, :, ::2, ::2], rtol=0, atol=0)
    v1 = get_model("resnet50", num_classes=4, zero_init_residual=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(v1.layer1[1](x), torch.relu(x), rtol=0, atol=0)
