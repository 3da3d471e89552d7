"""Blocks checked by behaviour: shapes, torchvision's blocks, Keras' Block2, the five orderings."""

import pytest
import torch
import torchvision.models.resnet as tv_resnet
from torch import nn

from resnet_course.blocks import (
    KERAS_BN_EPS,
    UNIT_ORDERINGS,
    BasicBlock,
    Bottleneck,
    PlainUnit,
    PreActBottleneck,
    ResidualUnit,
    conv1x1,
)
from resnet_course.models import like_a_trained_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def projection(inplanes, outplanes, stride):
    return nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))


# --------------------------------------------------------------------------------------------
# BasicBlock and Bottleneck (v1)
# --------------------------------------------------------------------------------------------


def test_basic_block_keeps_shape_with_identity_shortcut():
    block = BasicBlock(64, 64)
    assert block(torch.randn(2, 64, 8, 8)).shape == (2, 64, 8, 8)


def test_basic_block_with_projection_halves_size_and_doubles_channels():
    block = BasicBlock(64, 128, stride=2, downsample=projection(64, 128, 2))
    assert block(torch.randn(2, 64, 8, 8)).shape == (2, 128, 4, 4)


def test_identity_shortcut_cannot_add_when_the_shape_changes():
    block = BasicBlock(64, 128, stride=2)  # the classic bug: no projection shortcut
    with pytest.raises(RuntimeError, match="size of tensor"):
        block(torch.randn(1, 64, 8, 8))


@pytest.mark.parametrize(
    "ours_cls,theirs_cls,inplanes,planes,stride",
    [
        (BasicBlock, tv_resnet.BasicBlock, 64, 128, 2),
        (BasicBlock, tv_resnet.BasicBlock, 64, 64, 1),
        (Bottleneck, tv_resnet.Bottleneck, 256, 128, 2),
        (Bottleneck, tv_resnet.Bottleneck, 256, 64, 1),
    ],
)
def test_v1_blocks_match_torchvision_blocks(ours_cls, theirs_cls, inplanes, planes, stride):
    out = planes * ours_cls.expansion
    needs_projection = stride != 1 or inplanes != out
    theirs = theirs_cls(inplanes, planes, stride, projection(inplanes, out, stride) if needs_projection else None)
    ours = ours_cls(inplanes, planes, stride, projection(inplanes, out, stride) if needs_projection else None)
    like_a_trained_net(theirs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, inplanes, 8, 8)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs(x))


def test_bottleneck_reduces_then_expands_four_times():
    block = Bottleneck(256, 64)
    assert [block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels] == [64, 64, 256]
    assert [block.conv1.kernel_size, block.conv2.kernel_size, block.conv3.kernel_size] == [(1, 1), (3, 3), (1, 1)]
    assert block(torch.randn(1, 256, 8, 8)).shape == (1, 256, 8, 8)


def test_stride_in_1x1_skips_three_of_every_four_pixels():
    """v1: a strided 1x1 conv sees only every second row and column, so the block's output equals
    the unstrided block applied to the subsampled input (v1.5's 3x3 conv sees every pixel)."""
    strided = like_a_trained_net(Bottleneck(256, 128, 2, projection(256, 512, 2), stride_in_1x1=True)).eval()
    unstrided = Bottleneck(256, 128, 1, projection(256, 512, 1), stride_in_1x1=True)
    unstrided.load_state_dict(strided.state_dict())
    x = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        assert torch.allclose(strided(x), unstrided.eval()(x[:, :, ::2, ::2]), atol=1e-6)
        v15 = Bottleneck(256, 128, 2, projection(256, 512, 2))
        v15.load_state_dict(strided.state_dict())
        assert not torch.allclose(v15.eval()(x), strided(x), atol=1e-3)


# --------------------------------------------------------------------------------------------
# PreActBottleneck (Keras Block2)
# --------------------------------------------------------------------------------------------


def test_preact_block_biases_and_epsilon_as_in_keras():
    block = PreActBottleneck(64, 64, conv_shortcut=True)
    assert block.shortcut.bias is not None and block.conv3.bias is not None
    assert block.conv1.bias is None and block.conv2.bias is None
    assert all(
        m.eps == KERAS_BN_EPS == 1.001e-5 and m.momentum == 0.01
        for m in block.modules()
        if isinstance(m, nn.BatchNorm2d)
    )


def test_preact_block_shortcuts():
    x = torch.randn(2, 256, 7, 7)
    assert isinstance(PreActBottleneck(256, 64).shortcut, nn.Identity)
    strided = PreActBottleneck(256, 64, stride=2)
    assert torch.equal(strided.shortcut(x), x[:, :, ::2, ::2])  # 1x1 max pool with stride 2
    assert strided.eval()(x).shape == (2, 256, 4, 4)
    assert PreActBottleneck(64, 128, conv_shortcut=True)(torch.randn(2, 64, 7, 7)).shape == (2, 512, 7, 7)
    with pytest.raises(ValueError, match="conv_shortcut"):
        PreActBottleneck(64, 64)


def zero_last_conv(block):
    with torch.no_grad():
        block.conv3.weight.zero_()
        block.conv3.bias.zero_()
    return block


def test_preact_block_has_nothing_after_the_addition():
    """With the residual branch silenced the output is the raw input, negatives included."""
    block = zero_last_conv(like_a_trained_net(PreActBottleneck(256, 64)).eval())
    x = torch.randn(2, 256, 5, 5)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_preact_conv_shortcut_sees_the_preactivated_input():
    block = zero_last_conv(like_a_trained_net(PreActBottleneck(64, 64, conv_shortcut=True)).eval())
    x = torch.randn(2, 64, 5, 5)
    with torch.no_grad():
        preact = torch.relu(
            nn.functional.batch_norm(
                x,
                block.preact_bn.running_mean,
                block.preact_bn.running_var,
                block.preact_bn.weight,
                block.preact_bn.bias,
                eps=KERAS_BN_EPS,
            )
        )
        assert torch.allclose(block(x), block.shortcut(preact), atol=1e-6)
        assert not torch.allclose(block(x), block.shortcut(x), atol=1e-3)


# --------------------------------------------------------------------------------------------
# The five orderings of He et al. 2016, Fig. 4
# --------------------------------------------------------------------------------------------


def test_orderings_are_the_papers_five_in_order():
    assert UNIT_ORDERINGS == ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")


def unit(ordering, inplanes=16, planes=16, stride=1):
    return like_a_trained_net(ResidualUnit(inplanes, planes, stride, ordering)).eval()


@pytest.mark.parametrize("ordering", UNIT_ORDERINGS)
def test_unit_shapes_with_identity_and_projection_shortcut(ordering):
    x = torch.randn(2, 16, 8, 8)
    same = unit(ordering)
    assert isinstance(same.shortcut, nn.Identity) and same(x).shape == (2, 16, 8, 8)
    down = unit(ordering, 16, 32, stride=2)
    assert isinstance(down.shortcut[0], nn.Conv2d) and down.shortcut[0].stride == (2, 2)
    assert down(x).shape == (2, 32, 4, 4)


@pytest.mark.parametrize("ordering", ["original", "bn_after_add"])
def test_post_activation_orderings_end_with_relu(ordering):
    with torch.no_grad():
        assert unit(ordering)(torch.randn(2, 16, 8, 8)).min() >= 0


@pytest.mark.parametrize("ordering", ["relu_before_add", "relu_only_preact", "full_preact"])
def test_orderings_without_activation_after_add_can_output_negatives(ordering):
    with torch.no_grad():
        assert unit(ordering)(torch.randn(2, 16, 8, 8)).min() < 0


def test_bn_after_add_normalises_the_sum():
    block = ResidualUnit(16, 16, ordering="bn_after_add").train()
    block.bn2.momentum = 1.0  # running mean := this batch's mean
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        expected = (block.residual(x) + x).mean(dim=(0, 2, 3))
        block(x)
    assert torch.allclose(block.bn2.running_mean, expected, atol=1e-5)


def test_relu_before_add_can_only_increase_its_input():
    """F ends with a ReLU, so F >= 0 and x + F(x) >= x: the reason (c) hurts (He et al. 2016, 4.1)."""
    block = unit("relu_before_add")
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert block.residual(x).min() >= 0
        assert torch.all(block(x) >= x)


def test_relu_only_preact_branch_sees_only_the_positive_part_of_its_input():
    block = unit("relu_only_preact")
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(block.residual(x), block.residual(torch.relu(x)))
        assert not torch.equal(block(x), block(torch.relu(x)))  # the shortcut carries negatives


def test_full_preact_branch_starts_with_batch_norm_of_the_input():
    block = unit("full_preact")
    assert block.bn1.num_features == 16 and isinstance(block.conv2, nn.Conv2d)
    x1, x2 = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert not torch.equal(block.residual(x1), block.residual(x2))
        block.bn1.bias.fill_(-100.0)  # BN -> ReLU of the input is now 0 whatever the input
        assert torch.equal(block.residual(x1), block.residual(x2))


def silence_branch(block):
    """Make the residual branch output exactly zero by zeroing its last layer."""
    with torch.no_grad():
        if block.ordering in ("original", "relu_before_add", "relu_only_preact"):
            block.bn2.weight.zero_()
            block.bn2.bias.zero_()
        else:  # bn_after_add and full_preact end their branch with conv2 (no bias)
            block.conv2.weight.zero_()
    return block


@pytest.mark.parametrize(
    "ordering,is_identity",
    [
        ("original", False),
        ("bn_after_add", False),
        ("relu_before_add", True),
        ("relu_only_preact", True),
        ("full_preact", True),
    ],
)
def test_only_units_with_nothing_after_the_add_are_clean_identities(ordering, is_identity):
    """He et al. 2016, Sec. 3: with F = 0, x_{l+1} = x_l only if nothing follows the addition."""
    block = silence_branch(unit(ordering))
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x) == is_identity


def test_plain_unit_has_no_shortcut():
    block = PlainUnit(16, 16)
    assert not any(isinstance(m, nn.Identity) for m in block.modules())
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        assert torch.count_nonzero(block.eval()(torch.randn(2, 16, 8, 8))) == 0
    assert PlainUnit(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_unknown_ordering_lists_the_five():
    with pytest.raises(ValueError, match="original.*full_preact"):
        ResidualUnit(16, 16, ordering="preact")
