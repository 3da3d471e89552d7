"""The naive-port slips of notebook 04: each builds a different function from the faithful ResNet50V2.

References are independent of the code under test: parameter counts worked out from the Keras
layer list (which convs carry biases), PyTorch's own max pool for the -inf padding, and the
closed form sqrt(1.001e-5 / 1e-5) - 1 for the epsilon slip on a dead channel.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_course.blocks import KERAS_BN_EPS
from resnet_course.models import like_a_trained_net, resnet50v2
from resnet_course.porting import (
    NAIVE_PORT_PITFALLS,
    PITFALL_LABELS,
    dead_channel_bn_eps_change,
    like_a_trained_keras_net,
    naive_port,
    pitfall_effects,
    slipped,
)
from resnet_course.stages import count_params

# Keras ResNet50V2's biased convs: the stem (64), one shortcut conv per stage (256 + 512 + 1024 + 2048)
# and the last 1x1 conv of each of the 3 + 4 + 6 + 3 blocks (256, 512, 1024, 2048 channels).
V2_CONV_BIASES = 64 + (256 + 512 + 1024 + 2048) + (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048)


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(0)
    return like_a_trained_net(resnet50v2().eval(), seed=0)


def test_like_a_trained_net_sets_biases_and_bn_statistics_deterministically():
    a = like_a_trained_net(nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8)), seed=3)
    b = like_a_trained_net(nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8)), seed=3)
    conv, bn = a
    assert torch.equal(conv.bias, b[0].bias) and torch.equal(bn.running_var, b[1].running_var)
    assert conv.bias.abs().min() > 0
    assert bn.running_var.min() >= 0.5 and bn.running_var.max() <= 1.5
    assert bn.weight.min() >= 0.5 and bn.running_mean.abs().max() > 0


def test_like_a_trained_net_can_draw_wider_statistics_and_keep_the_biases():
    """The checkers' setting: shifts ~ N(0, 0.5), variances ~ U(0.5, 2), conv biases as built."""
    conv = nn.Conv2d(3, 64, 3, bias=True)
    bias = conv.bias.detach().clone()
    _, bn = like_a_trained_net(nn.Sequential(conv, nn.BatchNorm2d(64)), shift_std=0.5, max_variance=2.0, biases=False)
    assert torch.equal(conv.bias, bias)
    assert bn.running_var.min() >= 0.5 and bn.running_var.max() <= 2.0 and bn.running_var.max() > 1.5
    assert bn.weight.min() >= 0.5 and bn.weight.max() <= 1.5 and bn.running_mean.abs().max() > 0.5


class _FakeKerasLayer:
    """What like_a_trained_keras_net uses of a Keras layer: its name of kind, get/set_weights."""

    def __init__(self, *arrays):
        self.arrays = [np.asarray(a, dtype=np.float32) for a in arrays]

    def get_weights(self):
        return [a.copy() for a in self.arrays]

    def set_weights(self, arrays):
        assert [a.shape for a in arrays] == [a.shape for a in self.arrays]
        self.arrays = list(arrays)


class BatchNormalization(_FakeKerasLayer):  # named as Keras names it
    pass


class _FakeKerasModel:
    def __init__(self):
        self.layers = [
            _FakeKerasLayer(np.ones((3, 3, 3, 8)), np.zeros(8)),  # conv with bias
            BatchNormalization(np.ones(8), np.zeros(8), np.zeros(8), np.ones(8)),  # as initialised
            _FakeKerasLayer(np.ones((1, 1, 8, 8))),  # conv without bias
            _FakeKerasLayer(),
        ]  # no weights (an activation)


def test_like_a_trained_keras_net_sets_biases_and_bn_statistics_and_keeps_kernels():
    model = like_a_trained_keras_net(_FakeKerasModel(), seed=3)
    conv, bn, plain, _ = model.layers
    np.testing.assert_array_equal(conv.arrays[0], np.ones((3, 3, 3, 8)))
    np.testing.assert_array_equal(plain.arrays[0], np.ones((1, 1, 8, 8)))
    assert np.all(conv.arrays[1] != 0) and conv.arrays[1].dtype == np.float32
    gamma, beta, mean, variance = bn.arrays
    for positive in (gamma, variance):  # no longer the identity BN: gamma 1, variance 1
        assert np.all((0.5 <= positive) & (positive <= 1.5)) and len(set(positive.tolist())) == 8
    assert np.all(beta != 0) and np.all(mean != 0) and np.abs(beta).max() < 1
    again = like_a_trained_keras_net(_FakeKerasModel(), seed=3)
    assert all(np.array_equal(a, b) for x, y in zip(model.layers, again.layers) for a, b in zip(x.arrays, y.arrays))
    other = like_a_trained_keras_net(_FakeKerasModel(), seed=4)
    assert not np.array_equal(other.layers[1].arrays[0], gamma)


def test_like_a_trained_net_leaves_the_global_random_state_alone():
    conv = nn.Conv2d(3, 4, 1, bias=True)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    like_a_trained_net(conv)
    assert torch.equal(torch.rand(3), expected)


def test_dropping_biases_removes_exactly_keras_biased_convs():
    naive = naive_port(resnet50v2(), "no_conv_biases")
    assert count_params(resnet50v2()) - count_params(naive) == V2_CONV_BIASES == 19_008
    assert count_params(naive) == 25_549_352


def test_pytorch_bn_eps_reaches_every_batch_norm():
    naive = naive_port(resnet50v2(), "pytorch_bn_eps")
    bns = [m for m in naive.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 + 16 * 3  # post_bn; preact_bn, bn1, bn2 in each of the 16 blocks
    assert all(m.eps == 1e-5 for m in bns)


def test_neg_inf_padding_is_pytorchs_padded_max_pool_and_differs_where_a_border_is_negative():
    naive = naive_port(resnet50v2(), "neg_inf_maxpool")
    stem = -1 - torch.rand(1, 2, 6, 6)  # all negative, as a not-ReLU'd stem output can be
    expected_naive = F.max_pool2d(stem, 3, 2, padding=1)
    keras_like = F.max_pool2d(F.pad(stem, (1, 1, 1, 1), value=0.0), 3, 2)
    assert torch.equal(naive.pool1(stem), expected_naive)
    assert torch.equal(resnet50v2().pool1(stem), keras_like)
    assert (keras_like[..., 0, :] == 0).all() and (expected_naive < 0).all()
    positive = stem.abs()  # after a ReLU both paddings agree
    assert torch.equal(naive.pool1(positive), resnet50v2().pool1(positive))


@pytest.mark.parametrize("seed", [0, 1, 2])  # weights, statistics and images: not one lucky draw
def test_every_slip_changes_the_logits_and_the_epsilon_slip_is_tiny(seed):
    torch.manual_seed(seed)
    model = like_a_trained_net(resnet50v2().eval(), seed=seed)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    effects = pitfall_effects(model, images)
    assert list(effects) == list(NAIVE_PORT_PITFALLS) == list(PITFALL_LABELS)
    assert effects["neg_inf_maxpool"] > 1e-3
    assert effects["no_conv_biases"] > 1e-3
    assert 1e-12 < effects["pytorch_bn_eps"] < 1e-4 * min(effects["neg_inf_maxpool"], effects["no_conv_biases"])


def test_pitfall_effects_leave_the_model_as_it_was(trained_like):
    before = {k: v.clone() for k, v in trained_like.state_dict().items()}
    trained_like.train()
    pitfall_effects(trained_like, torch.randn(1, 3, 32, 32))
    assert trained_like.training and next(trained_like.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in trained_like.state_dict().items())
    trained_like.eval()


def test_epsilon_slip_on_a_dead_channel_is_five_in_ten_thousand():
    dead = nn.BatchNorm2d(1, eps=KERAS_BN_EPS).double().eval()
    dead.running_var.zero_()
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        keras_out = dead(x)
        dead.eps = 1e-5
        naive_out = dead(x)
    measured = (naive_out / keras_out).max().item() - 1
    assert measured == pytest.approx(dead_channel_bn_eps_change(), rel=1e-6)
    assert dead_channel_bn_eps_change() == pytest.approx(4.9988e-4, rel=1e-4)


def test_unknown_slip_lists_the_known_ones():
    with pytest.raises(ValueError, match="neg_inf_maxpool"):
        naive_port(resnet50v2(), "wrong_stride")


@pytest.mark.parametrize("pitfall", NAIVE_PORT_PITFALLS)
def test_a_slip_inside_with_equals_the_naive_port_and_is_undone_after(trained_like, pitfall):
    model = copy.deepcopy(trained_like).double()  # float64: the epsilon slip is below float32 rounding
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        naive = naive_port(model, pitfall)(x)
        with slipped(model, pitfall):
            inside = model(x)
        after = model(x)
    assert torch.equal(inside, naive) and not torch.equal(inside, before)
    assert torch.equal(after, before)
    assert count_params(model) == 25_568_360
