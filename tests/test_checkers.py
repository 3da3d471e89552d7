"""The exercise checkers pass the reference implementations and name each classic bug.

Every checker against its list of wrong answers: each row is a test in this file unless another
file is named. Format: wrong answer → words of the ✗ line.

check_basic_block
    conv2 takes `inplanes` → "conv2 should take `planes` input channels"
    no shortcut → "the shortcut is missing"; `x` added where the shape changes → "add `downsample(x)`"
    downsample called when it is None → "(it is None)"
    no final ReLU → "the final ReLU is missing"; ReLU before the add → "the ReLU comes before the addition"
    no ReLU inside the branch → "a ReLU inside the residual branch is missing"
    ReLU before BN → "the ReLU comes before the BatchNorm"; ReLU after the last BN → "a ReLU follows the last BN"
    stride on conv2 → "the stride belongs on conv1"; conv biases → "needs none (bias=False)"
    no padding → "needs padding=1"; own shortcut → "use the `downsample` passed in"
    wrong signature → "(inplanes, planes, stride=1, downsample=None)"; no `expansion` → "`expansion = 1`"
    one BN used twice → "runs 2 times in forward", "is built but never used"
    BN eps 1e-3 → "torchvision's blocks use PyTorch's default 1e-5"
    dropout (shows only in train mode) → "in train mode your block computes something else"
    the shortcut detached from the gradient → "the gradient does not flow through the shortcut"
check_bottleneck
    conv3 not expanding → "expand to `planes * expansion`"; stride in the first 1×1 → "the original paper's v1"
    ReLU before the add → "before the addition"; bn3 unused → "`bn3` is built but never used"
    a ReLU after bn3 → "a ReLU follows the last BN"; a BasicBlock given → "`expansion = 4`"
check_shortcut
    identity where the shape changes → "gives 64 channels, the branch 128" and "must use the block's stride"
    subsampled, no zero channels → "pad the 64 missing channels"; 192 channels → "a 1×1 conv must map"
    no stride → "must use the block's stride"; 3×3 projection → "a 3×3 kernel where a 1×1 does"
    projection where the identity fits → "should be the identity"
    zeros of the right shape, or from unused layers → "the shortcut returns only zeros"
    option A or a projection reading x[:, :, 1::2, 1::2] → "misaligned"
    copies instead of zero channels → "not copies"; 2×2 average → "mixes neighbouring positions"
    scaled input → "passes the input's 64 channels unchanged"; ReLU after the BN → "a ReLU follows the projection's BN"
    BN before the conv → "puts it after the 1×1 conv"; conv with bias, no BN → "difference -128"
check_preact_block
    ReLU after the add → "a ReLU follows the addition"; projection on the raw input → "reads the raw input"
    no preact ReLU → "went through no ReLU"; post-activation order → "starts with a convolution"
    identity (a crop) where it strides → "a 1×1 max pool with stride 2"
    BN eps 1e-5 (PyTorch's) → "the checker asks for 1.001e-5, Keras Applications' value ... because"
    stride on the 1×1 conv → "the stride sits on a 1×1 conv"
    other computation with the same layers → "with the reference's weights copied in, ... other outputs"
    shortcut on the pre-activated input → "reads the pre-activated input"; conv3 without bias → "the bias of a conv"
check_param_count
    one extra 3×3 conv → "difference +36,864 = one 3×3 conv 64→64?"
check_model
    a block missing → "one BasicBlock of 256 channels?"; other computation → "your logits differ from `layer1` on"
    unknown reference → ValueError
    BN eps 1e-5 in a ResNet50V2: accepted on purpose, notebook 07 shows the logits cannot see it
    (tests/test_solutions.py); check_preact_block catches it at the block
check_grad_cam
    the classic Grad-CAM bugs → tests/test_inside_resnet.py, one parametrised case each
check_train_step
    the 28 wrong steps of ``checkers.TRAIN_STEP_MISTAKES`` → tested one by one below
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from resnet_course import checkers
from resnet_course.blocks import BasicBlock, Bottleneck, PreActBottleneck, conv1x1, conv3x3
from resnet_course.models import ResNet


def failed_with(result, fragment):
    """The checker failed, and one of its ✗ lines contains ``fragment``."""
    assert not result.ok, result
    assert any(fragment in text for text in result.failures), result
    return True


# --------------------------------------------------------------------------------------------
# BasicBlock
# --------------------------------------------------------------------------------------------


class LearnerBasicBlock(nn.Module):
    """A correct block as a learner writes it: own names, functional ReLU."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.first = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.first_bn = nn.BatchNorm2d(planes)
        self.second = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.second_bn = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.first_bn(self.first(x)))
        out = self.second_bn(self.second(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Conv2TakesInplanes(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv2 = conv3x3(inplanes, planes)


class NoShortcut(BasicBlock):
    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class AddsXInsteadOfDownsample(BasicBlock):
    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


class AlwaysCallsDownsample(BasicBlock):
    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + self.downsample(x))


class NoFinalRelu(BasicBlock):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity


class ReluBeforeAdd(BasicBlock):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))) + identity


class NoMiddleRelu(BasicBlock):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))) + identity)


class StrideOnConv2(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv1 = conv3x3(inplanes, planes)
        self.conv2 = conv3x3(planes, planes, stride)


class ConvBiases(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv1 = conv3x3(inplanes, planes, stride, bias=True)
        self.conv2 = conv3x3(planes, planes, bias=True)


class NoPadding(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv2 = nn.Conv2d(planes, planes, 3, bias=False)


class OwnShortcut(LearnerBasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, None)
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class OneBnTwice(BasicBlock):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn1(self.conv2(out)) + identity)


class ReluBeforeBn(BasicBlock):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.relu(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class OtherEps(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-3)


class WithDropout(BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.drop(self.relu(self.bn1(self.conv1(x))))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class DetachedShortcut(BasicBlock):
    def forward(self, x):
        identity = (x if self.downsample is None else self.downsample(x)).detach()
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class BottleneckWithoutBn3(Bottleneck):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.conv3(out) + identity)


class BottleneckReluAfterBn3(Bottleneck):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.relu(self.bn3(self.conv3(out))) + identity)


@pytest.mark.parametrize(
    "checker, block, message",
    [
        (checkers.check_basic_block, OneBnTwice, "`bn1` runs 2 times in forward"),
        (checkers.check_basic_block, OneBnTwice, "`bn2` is built but never used in forward"),
        (checkers.check_basic_block, ReluBeforeBn, "the ReLU comes before the BatchNorm inside the branch"),
        (checkers.check_basic_block, OtherEps, "`bn2` has eps 0.001: torchvision's blocks use PyTorch's default 1e-5"),
        (checkers.check_basic_block, WithDropout, "in train mode your block computes something else"),
        (checkers.check_basic_block, DetachedShortcut, "the gradient does not flow through the shortcut"),
        (checkers.check_bottleneck, BottleneckWithoutBn3, "`bn3` is built but never used in forward"),
        (checkers.check_bottleneck, BottleneckReluAfterBn3, "a ReLU follows the last BN of the branch"),
    ],
    ids=[
        "bn used twice",
        "bn unused",
        "relu before bn",
        "eps",
        "dropout",
        "detached shortcut",
        "no bn3",
        "relu after bn3",
    ],
)
def test_v1_block_checkers_name_wrong_values(checker, block, message):
    assert failed_with(checker(block), message)


@pytest.mark.parametrize("block", [BasicBlock, torchvision.models.resnet.BasicBlock, LearnerBasicBlock])
def test_basic_block_checker_passes_correct_blocks(block):
    result = checkers.check_basic_block(block)
    assert result.ok, result
    assert "✓ parameters: 73,984 and 230,144, as torchvision's BasicBlock" in result.messages


def test_second_conv_taking_inplanes_is_named():
    result = checkers.check_basic_block(Conv2TakesInplanes)
    assert failed_with(result, "conv2 should take `planes` input channels, not `inplanes`")
    assert failed_with(result, "forward fails at conv2: it receives 128 channels but expects 64")
    assert failed_with(result, "difference -73,728 = one 3×3 conv 64→128?")


def test_renamed_modules_are_named_in_the_message():
    class Renamed(LearnerBasicBlock):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__(inplanes, planes, stride, downsample)
            self.second = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)

    assert failed_with(checkers.check_basic_block(Renamed), "conv2 (your `second`) should take `planes` input channels")


def test_missing_shortcut_is_named():
    assert failed_with(checkers.check_basic_block(NoShortcut), "the shortcut is missing")


def test_adding_x_when_the_shape_changes_is_named():
    result = checkers.check_basic_block(AddsXInsteadOfDownsample)
    assert failed_with(result, "the addition fails: the branch gives (2, 128, 4, 4) but the input `x` is (2, 64, 8, 8)")
    assert failed_with(result, "add `downsample(x)`")


def test_calling_downsample_when_it_is_none_is_named():
    assert failed_with(checkers.check_basic_block(AlwaysCallsDownsample), "when there is no `downsample` (it is None)")


def test_missing_final_relu_is_named():
    assert failed_with(
        checkers.check_basic_block(NoFinalRelu), "the final ReLU is missing: your block's output has negative values"
    )


def test_relu_before_the_addition_is_named():
    assert failed_with(checkers.check_basic_block(ReluBeforeAdd), "the ReLU comes before the addition")


def test_missing_relu_inside_the_branch_is_named():
    assert failed_with(checkers.check_basic_block(NoMiddleRelu), "a ReLU inside the residual branch is missing")


def test_stride_on_the_wrong_conv_is_named():
    assert failed_with(
        checkers.check_basic_block(StrideOnConv2), "the stride belongs on conv1 (as in torchvision), yours is on conv2"
    )


def test_conv_biases_are_named_and_explain_the_count():
    result = checkers.check_basic_block(ConvBiases)
    assert failed_with(result, "conv1, conv2 have biases: a conv followed by BatchNorm needs none")
    assert failed_with(result, "has 74,112 parameters, torchvision's has 73,984 (difference +128 = your conv biases)")


def test_missing_padding_is_named():
    assert failed_with(checkers.check_basic_block(NoPadding), "conv2 needs padding=1")


def test_building_your_own_shortcut_is_named():
    result = checkers.check_basic_block(OwnShortcut)
    assert failed_with(result, "use the `downsample` passed in")
    assert failed_with(result, "the `downsample` passed to the constructor is not kept")


def test_wrong_constructor_signature_is_explained():
    class TwoArguments(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes):
            super().__init__()

    result = checkers.check_basic_block(TwoArguments)
    assert failed_with(result, "BasicBlock(64, 64) fails: TypeError")
    assert failed_with(result, "(inplanes, planes, stride=1, downsample=None)")


def test_missing_expansion_attribute_is_named():
    class NoExpansion(LearnerBasicBlock):
        expansion = None

    assert failed_with(checkers.check_basic_block(NoExpansion), "needs the class attribute `expansion = 1`")


# --------------------------------------------------------------------------------------------
# Bottleneck
# --------------------------------------------------------------------------------------------


class NoExpansionConv3(Bottleneck):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv3 = conv1x1(planes, planes)
        self.bn3 = nn.BatchNorm2d(planes)


class StrideInFirst1x1(Bottleneck):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample, stride_in_1x1=True)


class BottleneckReluBeforeAdd(Bottleneck):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out))) + identity


@pytest.mark.parametrize("block", [Bottleneck, torchvision.models.resnet.Bottleneck])
def test_bottleneck_checker_passes_correct_blocks(block):
    result = checkers.check_bottleneck(block)
    assert result.ok, result
    assert "✓ parameters: 70,400 and 379,392, as torchvision's Bottleneck" in result.messages


def test_bottleneck_without_expansion_is_named():
    result = checkers.check_bottleneck(NoExpansionConv3)
    assert failed_with(result, "conv3 should expand to `planes * expansion` = 256 channels, not `planes` = 64")
    assert failed_with(
        result, "the addition fails: the branch gives (2, 64, 8, 8) but the shortcut gives (2, 256, 8, 8)"
    )


def test_stride_in_the_first_1x1_is_v1_not_torchvision_v1_5():
    result = checkers.check_bottleneck(StrideInFirst1x1)
    assert failed_with(result, "the stride sits on the first 1×1 conv (the original paper's v1)")
    assert "✓ parameters: 70,400 and 379,392, as torchvision's Bottleneck" in result.messages  # same count


def test_bottleneck_relu_before_add_is_named():
    assert failed_with(checkers.check_bottleneck(BottleneckReluBeforeAdd), "the ReLU comes before the addition")


def test_a_basic_block_is_not_a_bottleneck():
    result = checkers.check_bottleneck(BasicBlock)
    assert failed_with(result, "needs the class attribute `expansion = 4`")
    assert failed_with(result, "the residual branch should have 3 convolutions")


# --------------------------------------------------------------------------------------------
# Shortcuts
# --------------------------------------------------------------------------------------------


def test_identity_shortcut_passes_when_shapes_match():
    assert checkers.check_shortcut(nn.Identity(), 64, 64, 1).ok
    assert checkers.check_shortcut(lambda x: x, 256, 256, 1).ok


def test_projection_shortcut_factory_passes():
    def make(in_channels, out_channels, stride):
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))

    result = checkers.check_shortcut(make, 64, 128, 2)
    assert result.ok, result
    assert "✓ projection: 8,448 parameters, as torchvision's 1×1 conv + BN (He et al. 2015, Eq. 2)" in result.messages


def test_identity_where_the_shape_changes_is_named():
    result = checkers.check_shortcut(lambda x: x, 64, 128, 2)
    assert failed_with(result, "the shortcut gives 64 channels, the branch 128")
    assert failed_with(
        result, "the shortcut gives 8×8 maps, the branch 4×4: the shortcut must use the block's stride (2)"
    )


def test_option_a_without_the_zero_channels_is_told_to_pad_them():
    # He et al. 2015, Sec. 3.3, option A: subsample and pad the extra channels with zeros (no parameters).
    result = checkers.check_shortcut(lambda x: x[:, :, ::2, ::2], 64, 128, 2)
    assert failed_with(
        result,
        "the shortcut gives 64 channels, the branch 128: pad the 64 missing channels with "
        "zeros (option A, no parameters) or project with a 1×1 conv 64 → 128 (option B)",
    )
    assert not any("must use the block's stride" in m for m in result.messages)


def test_option_a_shortcut_passes_without_parameters():
    def option_a(x):
        x = x[:, :, ::2, ::2]
        return torch.cat([x, torch.zeros_like(x)], dim=1)

    result = checkers.check_shortcut(option_a, 64, 128, 2)
    assert result.ok, result
    assert any("option A" in m for m in result.messages)


def test_too_many_channels_asks_for_a_projection():
    result = checkers.check_shortcut(lambda x: torch.cat([x, x, x], dim=1)[:, :, ::2, ::2], 64, 128, 2)
    assert failed_with(result, "the shortcut gives 192 channels, the branch 128: a 1×1 conv must map 64 → 128")


def test_shortcut_without_stride_is_named():
    shortcut = nn.Sequential(conv1x1(64, 128), nn.BatchNorm2d(128))
    assert failed_with(checkers.check_shortcut(shortcut, 64, 128, 2), "must use the block's stride (2)")


def test_3x3_projection_is_named():
    shortcut = nn.Sequential(conv3x3(64, 128, 2), nn.BatchNorm2d(128))
    assert failed_with(checkers.check_shortcut(shortcut, 64, 128, 2), "a 3×3 kernel where a 1×1 does")


def test_projection_where_identity_would_do_is_named():
    shortcut = nn.Sequential(conv1x1(64, 64), nn.BatchNorm2d(64))
    assert failed_with(checkers.check_shortcut(shortcut, 64, 64, 1), "the shortcut should be the identity")


def test_shortcut_checker_leaves_the_module_mode_alone():
    shortcut = nn.Sequential(conv1x1(64, 128, 2), nn.BatchNorm2d(128)).train()
    running_mean = shortcut[1].running_mean.clone()
    checkers.check_shortcut(shortcut, 64, 128, 2)
    assert shortcut.training and torch.equal(shortcut[1].running_mean, running_mean)


def _option_a(x):
    x = x[:, :, ::2, ::2]
    return torch.cat([x, torch.zeros_like(x)], dim=1)


def _option_a_padded_both_sides(x):
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 32, 32))  # the CIFAR variant: half the zeros on each side


def _option_a_misaligned(x):
    x = x[:, :, 1::2, 1::2]
    return torch.cat([x, torch.zeros_like(x)], dim=1)


def _option_a_copies(x):
    x = x[:, :, ::2, ::2]
    return torch.cat([x, x], dim=1)


def _option_a_average_pooled(x):
    x = F.avg_pool2d(x, 2)
    return torch.cat([x, torch.zeros_like(x)], dim=1)


def _option_a_scaled(x):
    return 2 * _option_a(x)


class MisalignedProjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv1x1(64, 128)
        self.bn = nn.BatchNorm2d(128)

    def forward(self, x):
        return self.bn(self.conv(x[:, :, 1::2, 1::2]))


class ProjectionWithUnusedLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv1x1(64, 128, 2)
        self.bn = nn.BatchNorm2d(128)

    def forward(self, x):
        return torch.zeros(x.shape[0], 128, x.shape[2] // 2, x.shape[3] // 2)


@pytest.mark.parametrize(
    "shortcut",
    [_option_a, _option_a_padded_both_sides, nn.Sequential(conv1x1(64, 128, 2), nn.BatchNorm2d(128))],
    ids=["option A", "option A, zeros on both sides", "option B"],
)
def test_shortcut_checker_passes_options_a_and_b_by_their_values(shortcut):
    result = checkers.check_shortcut(shortcut, 64, 128, 2)
    assert result.ok, result
    assert (
        "✓ the shortcut reads the positions the branch's stride-2 conv is centred on (x[:, :, ::2, ::2])"
        in result.messages
    )


#: Wrong shortcuts of the right shape (64 → 128 channels, stride 2), and the words of the ✗ line.
WRONG_SHORTCUTS = {
    "zeros of the right shape": (lambda x: torch.zeros(x.shape[0], 128, 4, 4), "the shortcut returns only zeros"),
    "option A sampling x[:, :, 1::2, 1::2]": (
        _option_a_misaligned,
        "yours reads the positions in between (x[:, :, 1::2, 1::2]?), so the two added maps are misaligned",
    ),
    "projection sampling x[:, :, 1::2, 1::2]": (MisalignedProjection(), "so the two added maps are misaligned"),
    "option A with copies instead of zeros": (_option_a_copies, "the extra channels must be zeros, not copies"),
    "option A averaging 2×2 windows": (_option_a_average_pooled, "the shortcut mixes neighbouring positions"),
    "option A scaling the input": (_option_a_scaled, "option A passes the input's 64 channels unchanged"),
    "option B with a ReLU after the BN": (
        nn.Sequential(conv1x1(64, 128, 2), nn.BatchNorm2d(128), nn.ReLU()),
        "a ReLU follows the projection's BN",
    ),
    "option B layers built but zeros returned": (ProjectionWithUnusedLayers(), "the shortcut returns only zeros"),
    "option B with BN before the conv": (
        nn.Sequential(nn.BatchNorm2d(64), conv1x1(64, 128, 2)),
        "option B puts it after the 1×1 conv",
    ),
    "option B with a conv bias and no BN": (nn.Conv2d(64, 128, 1, 2), "difference -128"),
}


@pytest.mark.parametrize("mistake", WRONG_SHORTCUTS)
def test_shortcut_checker_names_each_wrong_value(mistake):
    shortcut, message = WRONG_SHORTCUTS[mistake]
    result = checkers.check_shortcut(shortcut, 64, 128, 2)
    assert failed_with(result, message)
    assert not any("option A:" in m and m.startswith("✓") for m in result.messages)


# --------------------------------------------------------------------------------------------
# Pre-activation block (v2)
# --------------------------------------------------------------------------------------------


class ReluAfterAdd(PreActBottleneck):
    def forward(self, x):
        return torch.relu(super().forward(x))


class ShortcutOnRawInput(PreActBottleneck):
    def forward(self, x):
        preact = self.preact_relu(self.preact_bn(x))
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.shortcut(x) + self.conv3(out)


class NoPreactRelu(PreActBottleneck):
    def forward(self, x):
        preact = self.preact_bn(x)
        shortcut = self.shortcut(preact if self.conv_shortcut else x)
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.relu(self.bn2(self.conv2(out)))
        return shortcut + self.conv3(out)


class PostActivationOrder(PreActBottleneck):
    """The v1 ("original") ordering with v2's modules: conv first, BN after, ReLU after the add."""

    def __init__(self, inplanes, planes, stride=1, conv_shortcut=False):
        super().__init__(inplanes, planes, stride, conv_shortcut)
        self.preact_bn = nn.BatchNorm2d(planes * 4)  # now after conv3

    def forward(self, x):
        shortcut = self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.preact_bn(self.conv3(out)) + shortcut)


class IdentityWhenStriding(PreActBottleneck):
    def forward(self, x):
        preact = self.preact_relu(self.preact_bn(x))
        shortcut = self.shortcut(preact) if self.conv_shortcut else x
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.conv3(out)
        return shortcut[:, :, : out.shape[2], : out.shape[3]] + out  # top-left crop instead of stride


class PyTorchEps(PreActBottleneck):
    def __init__(self, inplanes, planes, stride=1, conv_shortcut=False):
        super().__init__(inplanes, planes, stride, conv_shortcut)
        self.bn2 = nn.BatchNorm2d(planes)  # PyTorch's default eps, 1e-5


class StrideOnTheFirst1x1(PreActBottleneck):
    def __init__(self, inplanes, planes, stride=1, conv_shortcut=False):
        super().__init__(inplanes, planes, stride, conv_shortcut)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)


class AbsInsteadOfRelu(PreActBottleneck):
    def forward(self, x):
        preact = self.preact_relu(self.preact_bn(x))
        shortcut = self.shortcut(preact) if self.conv_shortcut else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.bn2(self.conv2(out)).abs()
        return shortcut + self.conv3(out)


class ShortcutOnPreactWithoutConv(PreActBottleneck):
    def forward(self, x):
        preact = self.preact_relu(self.preact_bn(x))
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.shortcut(preact) + self.conv3(out)


class Conv3WithoutBias(PreActBottleneck):
    def __init__(self, inplanes, planes, stride=1, conv_shortcut=False):
        super().__init__(inplanes, planes, stride, conv_shortcut)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)


def test_preact_shortcut_on_the_preactivated_input_is_named():
    assert failed_with(
        checkers.check_preact_block(ShortcutOnPreactWithoutConv), "the shortcut reads the pre-activated input"
    )


def test_preact_missing_bias_is_named():
    assert failed_with(
        checkers.check_preact_block(Conv3WithoutBias), "difference -256 = the bias of a conv with 256 outputs?"
    )


def test_preact_checker_asks_for_keras_epsilon_and_says_why():
    result = checkers.check_preact_block(PyTorchEps)
    assert failed_with(result, "`bn2` has eps 1e-05: the checker asks for 1.001e-5, Keras Applications' value")
    assert failed_with(result, "because the course's v2 reproduces Keras' outputs")
    assert any(
        m.startswith("✓ every BatchNorm has eps 1.001e-5")
        for m in checkers.check_preact_block(PreActBottleneck).messages
    )


def test_preact_stride_on_the_1x1_conv_is_named():
    assert failed_with(checkers.check_preact_block(StrideOnTheFirst1x1), "the stride sits on a 1×1 conv")


def test_preact_other_computation_with_the_same_layers_is_found():
    assert failed_with(
        checkers.check_preact_block(AbsInsteadOfRelu),
        "with the reference's weights copied in, your block gives other outputs",
    )


def test_preact_checker_passes_the_course_block():
    result = checkers.check_preact_block(PreActBottleneck)
    assert result.ok, result
    assert "✓ parameters: 74,624, 70,656, 70,656, as the reference" in result.messages
    assert "✓ with the reference's weights copied in, your block gives the reference's output" in result.messages


def test_relu_after_the_addition_is_named():
    assert failed_with(checkers.check_preact_block(ReluAfterAdd), "a ReLU follows the addition")


def test_projection_shortcut_on_the_raw_input_is_named():
    assert failed_with(checkers.check_preact_block(ShortcutOnRawInput), "the projection shortcut reads the raw input")


def test_missing_preact_relu_is_named():
    assert failed_with(checkers.check_preact_block(NoPreactRelu), "reads values that went through no ReLU")


def test_post_activation_order_is_named():
    result = checkers.check_preact_block(PostActivationOrder)
    assert failed_with(result, "the block starts with a convolution")
    assert failed_with(result, "difference")  # its BN sits on 256 channels, not on the input's 64


def test_strided_shortcut_must_subsample():
    assert failed_with(
        checkers.check_preact_block(IdentityWhenStriding), "the shortcut should be a 1×1 max pool with stride 2"
    )


# --------------------------------------------------------------------------------------------
# Whole models and parameter counts (reference numbers: torchvision's documentation)
# --------------------------------------------------------------------------------------------


def test_param_count_matches_course_table():
    assert checkers.check_param_count(torchvision.models.resnet18(weights=None), 11_689_512).ok


def test_param_count_difference_is_explained_as_one_conv():
    model = torchvision.models.resnet18(weights=None)
    model.extra = nn.Conv2d(64, 64, 3, bias=False)
    result = checkers.check_param_count(model, 11_689_512)
    assert result.failures == [
        "you have 11,726,376 parameters, expected 11,689,512 (difference +36,864 = one 3×3 conv 64→64?)"
    ]


@pytest.mark.slow
def test_learner_resnet34_matches_torchvision():
    result = checkers.check_model(ResNet(BasicBlock, [3, 4, 6, 3], num_classes=4), "resnet34")
    assert result.ok, result
    assert "✓ 21,286,724 parameters, as torchvision's resnet34 with 4 classes" in result.messages
    same = "✓ with the weights of torchvision's resnet34 with 4 classes, your model gives the same logits"
    assert same in result.messages


@pytest.mark.slow
def test_resnet34_with_a_block_missing_is_explained():
    result = checkers.check_model(ResNet(BasicBlock, [3, 4, 5, 3], num_classes=4), "resnet34")
    assert failed_with(result, "difference -1,180,672 = one BasicBlock of 256 channels?")
    layer3 = "`layer3` has 5,641,728 parameters in 5 blocks; in torchvision's resnet34 with 4 classes: 6,822,400"
    assert failed_with(result, layer3 + " in 6 blocks")
    assert failed_with(result, "state_dict entries missing (12): layer3.5.conv1.weight")


@pytest.mark.slow
def test_same_weights_different_computation_is_located():
    result = checkers.check_model(ResNet(ReluBeforeAdd, [2, 2, 2, 2], num_classes=4), "resnet18")
    assert "✓ 11,178,564 parameters, as torchvision's resnet18 with 4 classes" in result.messages
    assert failed_with(result, "your logits differ from `layer1` on")


@pytest.mark.slow
def test_check_model_leaves_the_learner_model_untouched():
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkers.check_model(model, "resnet18")
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_unknown_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="resnet50v2"):
        checkers.check_model(nn.Linear(2, 2), "resnet35")


# --------------------------------------------------------------------------------------------
# The result object
# --------------------------------------------------------------------------------------------


def test_checker_output_is_the_same_whatever_the_random_state():
    torch.manual_seed(1)
    first = repr(checkers.check_basic_block(NoFinalRelu))
    torch.manual_seed(2)
    second = repr(checkers.check_basic_block(NoFinalRelu))
    assert first == second
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    checkers.check_basic_block(BasicBlock)
    assert torch.equal(torch.random.get_rng_state(), before)  # the learner's random state is untouched


def test_result_prints_tick_and_cross_lines():
    result = checkers.check_basic_block(NoShortcut)
    text = repr(result)
    lines = text.splitlines()
    assert lines[0] == "Checking your BasicBlock against torchvision's"
    assert all(line[:2] in ("✓ ", "✗ ") for line in lines[1:-1])
    assert lines[-1] == "1 of 5 checks failed."
    assert not result and bool(checkers.check_basic_block(BasicBlock))
    html = result._repr_html_()
    assert "✗ the shortcut is missing" in html and "#cf222e" in html


# --------------------------------------------------------------------------------------------
# The training step (notebook 06)
# --------------------------------------------------------------------------------------------


def step_zero_grad_first(model, images, labels, optimizer, scheduler):
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss


def step_zero_grad_last(model, images, labels, optimizer, scheduler):
    loss = nn.CrossEntropyLoss()(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    scheduler.step()
    return loss.item()


def step_model_zero_grad_detached(model, images, labels, optimizer, scheduler):
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    model.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    model.train()
    return loss.detach()


def step_nll_of_log_softmax_one_hot(model, images, labels, optimizer, scheduler):
    logits = model(images)
    loss = F.cross_entropy(logits, F.one_hot(labels, logits.shape[1]).float())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss)


def step_nll_of_log_softmax(model, images, labels, optimizer, scheduler):
    loss = F.nll_loss(F.log_softmax(model(images), dim=1), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss


def wrong_step(**changes):
    """The recipe with one thing changed: each keyword replaces one line of the right step."""

    def step(model, images, labels, optimizer, scheduler):
        if changes.get("eval"):
            model.eval()
        targets = changes.get("targets", lambda labels, logits: labels)
        forward = changes.get("forward", lambda model, images: model(images))
        logits = forward(model, images)
        loss = changes.get("loss", lambda logits, targets: F.cross_entropy(logits, targets))(
            logits, targets(labels, logits)
        )
        order = changes.get("order", ["zero_grad", "backward", "step", "scheduler"])
        actions = {
            "zero_grad": optimizer.zero_grad,
            "step": optimizer.step,
            "scheduler": scheduler.step,
            "backward": changes.get("backward", loss.backward),
        }
        for action in order:
            actions[action]()
        if changes.get("leave_eval"):
            model.eval()
        return changes.get("returns", lambda loss, logits, model: loss)(loss, logits, model)

    return step


def _shuffled(labels, logits):
    return labels.roll(1)


class ReturnsPrevious:
    """Returns the loss of the previous call (a stale variable)."""

    def __init__(self):
        self.last = 0.0

    def __call__(self, model, images, labels, optimizer, scheduler):
        previous, self.last = (
            self.last,
            wrong_step(returns=lambda loss, logits, model: loss.item())(model, images, labels, optimizer, scheduler),
        )
        return previous if previous else self.last


def step_returns_loss_after_update(model, images, labels, optimizer, scheduler):
    wrong_step()(model, images, labels, optimizer, scheduler)
    with torch.no_grad():
        return F.cross_entropy(model(images), labels)


def step_backward_on_item(model, images, labels, optimizer, scheduler):
    loss = F.cross_entropy(model(images), labels).item()
    optimizer.zero_grad()
    loss.backward()


def step_backward_on_a_new_tensor(model, images, labels, optimizer, scheduler):
    loss = torch.tensor(F.cross_entropy(model(images), labels).item(), requires_grad=True)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss


def step_backward_twice(model, images, labels, optimizer, scheduler):
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    loss.backward()


def step_forward_twice(model, images, labels, optimizer, scheduler):
    loss = wrong_step()(model, images, labels, optimizer, scheduler)
    return loss + 0 * (model(images).argmax(1) == labels).float().mean()


def _no_grad_forward(model, images):
    with torch.no_grad():
        return model(images)


def _retain_and_backward_twice(loss):
    def backward():
        loss.backward(retain_graph=True)
        loss.backward()

    return backward


def step_backward_retained_twice(model, images, labels, optimizer, scheduler):
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    _retain_and_backward_twice(loss)()
    optimizer.step()
    scheduler.step()
    return loss


def step_returns_accuracy(model, images, labels, optimizer, scheduler):
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return (logits.argmax(1) == labels).float().mean()


RIGHT_STEPS = [
    step_zero_grad_first,
    step_zero_grad_last,
    step_model_zero_grad_detached,
    step_nll_of_log_softmax_one_hot,
    step_nll_of_log_softmax,
    wrong_step(),
]

#: (mistake as in TRAIN_STEP_MISTAKES, a step that makes it)
WRONG_STEPS = {
    "no zero_grad: gradients pile up from the 2nd batch on": wrong_step(order=["backward", "step", "scheduler"]),
    "optimizer.step() before loss.backward()": wrong_step(order=["zero_grad", "step", "backward", "scheduler"]),
    "zero_grad() between backward() and step()": wrong_step(order=["backward", "zero_grad", "step", "scheduler"]),
    "optimizer.step() never called": wrong_step(order=["zero_grad", "backward", "scheduler"]),
    "optimizer.step() called twice": wrong_step(order=["zero_grad", "backward", "step", "step", "scheduler"]),
    "softmax before cross_entropy": wrong_step(loss=lambda logits, t: F.cross_entropy(logits.softmax(1), t)),
    "log_softmax before cross_entropy": wrong_step(loss=lambda logits, t: F.cross_entropy(F.log_softmax(logits, 1), t)),
    "nll_loss on probabilities (softmax, no log)": wrong_step(
        loss=lambda logits, t: F.nll_loss(F.softmax(logits, 1), t)
    ),
    "model in eval mode during the step": wrong_step(eval=True),
    "the step leaves the model in eval mode": wrong_step(leave_eval=True),
    "scheduler not stepped": wrong_step(order=["zero_grad", "backward", "step"]),
    "scheduler stepped twice per batch": wrong_step(order=["zero_grad", "backward", "step", "scheduler", "scheduler"]),
    "scheduler stepped before the optimizer": wrong_step(order=["zero_grad", "backward", "scheduler", "step"]),
    "backward() twice (retain_graph=True)": step_backward_retained_twice,
    "backward() twice without retain_graph": step_backward_twice,
    "returns None": wrong_step(returns=lambda loss, logits, model: None),
    "returns the accuracy": step_returns_accuracy,
    "returns the logits": wrong_step(returns=lambda loss, logits, model: logits),
    "returns the previous batch's loss": ReturnsPrevious(),
    "returns the loss after the update": step_returns_loss_after_update,
    "reduction='sum'": wrong_step(loss=lambda logits, t: F.cross_entropy(logits, t, reduction="sum")),
    "targets from the model's own predictions (argmax)": wrong_step(targets=lambda labels, logits: logits.argmax(1)),
    "shuffled or otherwise wrong labels": wrong_step(targets=_shuffled),
    "one-hot targets as class indices (long)": wrong_step(targets=lambda labels, logits: F.one_hot(labels, 3)),
    "forward under torch.no_grad()": wrong_step(forward=_no_grad_forward),
    "backward() on loss.item() (no graph)": step_backward_on_item,
    "forward twice in train mode (BN statistics move twice)": step_forward_twice,
    "label smoothing not in the recipe": wrong_step(
        loss=lambda logits, t: F.cross_entropy(logits, t, label_smoothing=0.1)
    ),
}


@pytest.mark.parametrize("step", RIGHT_STEPS, ids=lambda s: getattr(s, "__name__", "recipe"))
def test_train_step_checker_passes_right_steps(step):
    result = checkers.check_train_step(step)
    assert result.ok, result
    assert len(result.checks) == 6


def test_every_listed_training_mistake_has_a_test():
    assert set(WRONG_STEPS) == {mistake for mistake, _ in checkers.TRAIN_STEP_MISTAKES}


@pytest.mark.parametrize(
    "mistake, message", checkers.TRAIN_STEP_MISTAKES, ids=[m for m, _ in checkers.TRAIN_STEP_MISTAKES]
)
def test_train_step_checker_names_each_mistake(mistake, message):
    step = WRONG_STEPS[mistake]
    if isinstance(step, ReturnsPrevious):
        step.last = 0.0
    assert failed_with(checkers.check_train_step(step), message)


def test_backward_on_a_recreated_number_is_named():
    assert failed_with(
        checkers.check_train_step(step_backward_on_a_new_tensor), "loss.backward() never reaches the weights"
    )


def test_train_step_checker_leaves_the_random_state_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    checkers.check_train_step(wrong_step(targets=lambda labels, logits: labels[torch.randperm(len(labels))]))
    assert torch.equal(torch.random.get_rng_state(), before)
