"""Gradient norms per layer, the deep MLPs, the synthetic task and the degradation problem in miniature."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_course.gradients import (
    deep_mlp,
    degradation_experiment,
    degradation_table,
    gradient_norms,
    synthetic_textures,
)
from resnet_course.models import cifar_resnet, plain_cifar_net


@pytest.fixture
def batch():
    return batch_for(seed=0)


def batch_for(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 32, generator=g), torch.randint(0, 10, (64,), generator=g)


def norms_of(model, batch):
    torch.manual_seed(0)
    return [norm for _, norm in gradient_norms(model, *batch)]


@pytest.mark.parametrize("seed", [0, 1, 2])  # weights and batch: no claim rests on one lucky draw
def test_sigmoid_gradients_vanish_towards_the_input(seed):
    torch.manual_seed(seed)
    norms = norms_of(deep_mlp(20, activation="sigmoid"), batch_for(seed))
    assert len(norms) == 20
    # Each sigmoid layer multiplies the gradient by at most 0.25 x |W|: orders of magnitude in 20 layers.
    assert norms[0] < 1e-8 * norms[-2]
    assert all(earlier < later for earlier, later in zip(norms[:-1], norms[1:]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(activation="sigmoid", residual=True),
        dict(activation="relu", residual=True),
        dict(activation="relu", batchnorm=True),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortcuts_or_batchnorm_keep_the_first_layer_learning(kwargs, seed):
    torch.manual_seed(seed)
    norms = norms_of(deep_mlp(20, **kwargs), batch_for(seed))
    assert norms[0] > 1e-2 * norms[-2]
    assert min(norms) > 1e-3


def test_reported_norm_equals_autograd_on_that_weight(batch):
    torch.manual_seed(0)
    model = deep_mlp(12, activation="tanh", batchnorm=True, residual=True)
    reported = dict(gradient_norms(model, *batch))
    for name in ("0.linear", "5.linear", "11"):
        weight = model.get_submodule(name).weight
        (grad,) = torch.autograd.grad(F.cross_entropy(model(batch[0]), batch[1]), weight)
        assert reported[name] == pytest.approx(grad.norm().item(), rel=1e-5)


def test_custom_loss_is_used(batch):
    torch.manual_seed(0)
    model = deep_mlp(4, activation="relu")
    doubled = gradient_norms(model, *batch, loss_fn=lambda out, y: 2 * F.cross_entropy(out, y))
    single = gradient_norms(model, *batch)
    assert [d for _, d in doubled] == pytest.approx([2 * s for _, s in single], rel=1e-5)


@pytest.mark.parametrize(
    "build, inputs",
    [
        (lambda: deep_mlp(6, residual=True, batchnorm=True), torch.randn(4, 32)),
        (lambda: cifar_resnet(8), torch.randn(2, 3, 16, 16)),
        (lambda: plain_cifar_net(8), torch.randn(2, 3, 16, 16)),
    ],
)
def test_layers_are_listed_in_forward_order(build, inputs):
    model = build()
    called = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.register_forward_hook(lambda *_, name=name: called.append(name))
    names = [name for name, _ in gradient_norms(model, inputs, torch.zeros(len(inputs), dtype=torch.long))]
    assert names == called


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_left_unchanged(batch, training):
    model = deep_mlp(4, batchnorm=True).train(training)
    gradient_norms(model, *batch)
    assert all(module.training == training for module in model.modules())


def test_deep_mlp_has_depth_linear_layers_with_shortcuts_inside():
    model = deep_mlp(10, width=16, in_features=8, num_classes=3, residual=True)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 10
    assert model(torch.randn(5, 8)).shape == (5, 3)
    hidden = model[3]
    x = torch.randn(5, 16)
    assert torch.allclose(hidden(x), x + torch.sigmoid(hidden.linear(x)))


def test_deep_mlp_refuses_bad_arguments_clearly():
    with pytest.raises(ValueError, match="depth"):
        deep_mlp(1)
    with pytest.raises(ValueError, match="activation"):
        deep_mlp(5, activation="gelu")


def test_synthetic_textures_are_deterministic_balanced_and_standardised():
    images, labels = synthetic_textures(200, num_classes=10, image_size=12, seed=3)
    again, labels_again = synthetic_textures(200, num_classes=10, image_size=12, seed=3)
    other, _ = synthetic_textures(200, num_classes=10, image_size=12, seed=4)
    assert images.shape == (200, 3, 12, 12) and labels.dtype == torch.long
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    assert not torch.equal(images, other)
    assert torch.bincount(labels).tolist() == [20] * 10
    assert images.mean().item() == pytest.approx(0, abs=1e-5)
    assert images.std().item() == pytest.approx(1, abs=1e-5)


def test_degradation_records_have_the_same_budget_and_are_reproducible():
    first = degradation_experiment(depths=(8,), steps=3, image_size=8, num_images=64)
    again = degradation_experiment(depths=(8,), steps=3, image_size=8, num_images=64)
    assert [(r["name"], r["depth"], r["residual"]) for r in first] == [("plain-8", 8, False), ("resnet-8", 8, True)]
    assert all(len(r["train_loss"]) == len(r["train_acc"]) == 3 for r in first)
    assert [r["train_loss"] for r in first] == [r["train_loss"] for r in again]
    assert first[0]["params"] == sum(p.numel() for p in plain_cifar_net(8).parameters())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deeper_plain_nets_train_worse_but_residual_nets_do_not(seed):
    """He et al. 2015, Fig. 1/6 in miniature: same data, steps and optimiser for every run."""
    records = degradation_experiment(depths=(8, 20), steps=100, seed=seed)
    loss = {(r["residual"], r["depth"]): r["final_loss"] for r in records}
    assert loss[False, 20] > loss[False, 8] + 0.2  # plain: deeper is worse on the training set
    assert loss[True, 20] < loss[False, 20] - 0.2  # the same depth with shortcuts is not
    assert loss[True, 20] < loss[True, 8] + 0.2


def test_degradation_table_shows_each_depth_plain_beside_residual():
    records = [
        {"depth": d, "residual": r, "final_loss": loss, "final_acc": acc}
        for d, r, loss, acc in [
            (8, False, 0.25, 0.9),
            (20, False, 1.5, 0.45),
            (8, True, 0.2, 0.93),
            (20, True, 0.3124, 0.87),
        ]
    ]
    lines = degradation_table(records).splitlines()
    assert lines[1].split() == ["8", "0.250", "(90%)", "0.200", "(93%)"]
    assert lines[2].split() == ["20", "1.500", "(45%)", "0.312", "(87%)"]
    only_plain = degradation_table(records[:1]).splitlines()
    assert only_plain[1].split() == ["8", "0.250", "(90%)", "-"]
