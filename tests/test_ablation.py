"""The five residual-unit orderings read off the code, and the small ablation of notebook 04.

References: the columns of He et al. 2016, Fig. 4 written out by hand; the order in which forward
hooks see the modules run; hand-counted classification errors; the paper's Table 2 numbers.
"""

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from resnet_course.ablation import (
    PAPER_CIFAR10_ERRORS,
    UNIT_LABELS,
    AblationRun,
    classification_error,
    errors_by_unit,
    format_ablation,
    operation_order,
    unit_ablation,
)
from resnet_course.blocks import UNIT_ORDERINGS, Bottleneck, PreActBottleneck, ResidualUnit
from resnet_course.device import torch_threads
from resnet_course.gradients import synthetic_textures, train_steps
from resnet_course.models import cifar_resnet
from resnet_course.plots import plot_ablation

# He et al. 2016, Fig. 4 (a)-(e), read top to bottom; "add" is the addition of the shortcut.
FIG4 = {
    "original": "conv BN ReLU conv BN add ReLU",
    "bn_after_add": "conv BN ReLU conv add BN ReLU",
    "relu_before_add": "conv BN ReLU conv BN ReLU add",
    "relu_only_preact": "ReLU conv BN ReLU conv BN add",
    "full_preact": "BN ReLU conv BN ReLU conv add",
}


@pytest.mark.parametrize("ordering", UNIT_ORDERINGS)
def test_each_unit_does_what_he_et_al_2016_fig4_draws(ordering):
    assert operation_order(ResidualUnit(16, 16, ordering=ordering)) == FIG4[ordering].split()


@pytest.mark.parametrize("ordering", UNIT_ORDERINGS)
def test_projection_shortcut_is_left_out_of_the_order(ordering):
    assert operation_order(ResidualUnit(16, 32, stride=2, ordering=ordering)) == FIG4[ordering].split()


def _hooked_order(module, x):
    """The kinds of the leaf modules in the order they actually run (forward hooks)."""
    seen = []
    names = {"Conv2d": "conv", "BatchNorm2d": "BN", "ReLU": "ReLU"}
    in_branch = [m for n, m in module.named_modules()
                 if type(m).__name__ in names and not n.startswith(("shortcut", "downsample"))]
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(names[type(m).__name__])) for m in in_branch]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("block", [ResidualUnit(16, 16, ordering="bn_after_add"), Bottleneck(64, 16),
                                   PreActBottleneck(64, 16, conv_shortcut=True)])
def test_order_is_the_order_the_modules_run_in(block):
    order = operation_order(block)
    assert order.count("add") == 1
    x = torch.randn(1, block.conv1.in_channels, 8, 8)
    assert [op for op in order if op != "add"] == _hooked_order(block.eval(), x)


def test_a_relu_written_as_a_function_after_the_add_is_seen():
    class ReluAfterAdd(PreActBottleneck):
        def forward(self, x):
            return torch.relu(super().forward(x))

    assert operation_order(ReluAfterAdd(64, 16, conv_shortcut=True))[-2:] == ["add", "ReLU"]


def test_classification_error_counts_wrong_predictions():
    class Lookup(nn.Module):  # predicts class 0 for the first three images, class 1 for the rest
        def forward(self, x):
            return torch.stack([(x[:, 0] < 3).float(), (x[:, 0] >= 3).float()], dim=1)

    images = torch.arange(8.0).reshape(8, 1)
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 0, 1])  # wrong: image 2 (says 0) and image 6 (says 1)
    model = Lookup().train()
    assert classification_error(model, images, labels, batch_size=3) == 25.0
    assert model.training


def test_cosine_training_lowers_the_loss():
    images, labels = synthetic_textures(256, seed=0)
    torch.manual_seed(0)
    losses, _ = train_steps(cifar_resnet(8), images, labels, steps=30, batch_size=32, weight_decay=1e-4, cosine=True)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_ablation_trains_every_ordering_reproducibly_and_leaves_the_random_state_and_threads():
    kwargs = dict(steps=2, depth=8, seeds=(0, 1), batch_size=8, num_train=32, num_test=40)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with torch_threads(2):
        runs = unit_ablation(**kwargs)  # on one thread (num_threads=1), then back to two
        assert torch.get_num_threads() == 2
    assert torch.equal(torch.rand(2), expected)
    assert [(r.unit, r.seed) for r in runs] == [(u, s) for s in (0, 1) for u in UNIT_ORDERINGS]
    assert all(0 <= r.test_error <= 100 and len(r.train_losses) == 2 for r in runs)
    assert all(r.test_error * 40 / 100 == pytest.approx(round(r.test_error * 40 / 100)) for r in runs)
    again = unit_ablation(**kwargs)
    assert [(r.test_error, r.train_losses) for r in again] == [(r.test_error, r.train_losses) for r in runs]


def test_unknown_ordering_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="full_preact"):
        unit_ablation(steps=1, units=["preact"])


def _runs():
    return [AblationRun("original", 0, 3.0, [1.0, 0.5]), AblationRun("original", 1, 1.0, [1.0, 0.7]),
            AblationRun("full_preact", 0, 2.0, [1.0, 0.2])]


def test_errors_by_unit_in_the_papers_order_feed_the_ablation_plot():
    errors = errors_by_unit(reversed(_runs()))
    assert errors == {"original": [1.0, 3.0], "full_preact": [2.0]}
    assert list(errors) == ["original", "full_preact"]
    fig = plot_ablation(errors)
    _, ours = fig.axes
    heights = [bar.get_height() for bar in ours.patches]  # one bar per ordering, in UNIT_LABELS' order
    assert heights[0] == pytest.approx(2.0) and heights[-1] == pytest.approx(2.0)  # mean of 1 and 3; 2
    assert all(h != h for h in heights[1:-1])  # NaN: orderings without a run get no bar
    plt.close(fig)


def test_table_puts_our_mean_and_spread_next_to_the_papers_table_2():
    table = format_ablation(_runs()).splitlines()
    original = next(line for line in table if line.startswith("original"))
    assert original.split()[1:3] == ["6.61", "5.93"]
    assert "2.0" in original and "(1.0-3.0)" in original and original.endswith("0.600")
    preact = next(line for line in table if line.startswith("full pre-activation"))
    assert "6.37" in preact and "5.46" in preact and preact.endswith("0.200")
    assert not any(line.startswith("BN after addition") for line in table)


def test_paper_table_is_he_et_al_2016_table_2():
    # He et al. 2016, "Identity Mappings in Deep Residual Networks", Table 2: CIFAR-10 test error (%),
    # ResNet-110 / ResNet-164.
    assert PAPER_CIFAR10_ERRORS == {
        "original": (6.61, 5.93), "bn_after_add": (8.17, 6.50), "relu_before_add": (7.84, 6.14),
        "relu_only_preact": (6.71, 5.91), "full_preact": (6.37, 5.46),
    }
    assert tuple(UNIT_LABELS) == UNIT_ORDERINGS
