"""Residual blocks: the building bricks of every network in the course.

- ``BasicBlock`` and ``Bottleneck``: ResNet v1 (He et al. 2015, Fig. 5), with torchvision's module
  names so that our state_dicts load torchvision's and back.
- ``PreActBottleneck``: ResNet v2's pre-activation bottleneck exactly as Keras Applications builds
  it (``residual_block_v2``, "Block2"; He et al. 2016, Fig. 1b / Fig. 4e).
- ``ResidualUnit``: a small CIFAR unit (two 3x3 convs) in each of the five orderings of He et al.
  2016, Fig. 4, and ``PlainUnit``: the same convs without a shortcut, for the depth demos.

ReLUs are not in-place and additions are not in-place, so hooks (feature maps, Grad-CAM, gradient
norms) can watch any module without PyTorch complaining about modified views.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = [
    "KERAS_BN_EPS",
    "KERAS_BN_MOMENTUM",
    "UNIT_ORDERINGS",
    "conv3x3",
    "conv1x1",
    "BasicBlock",
    "Bottleneck",
    "keras_batch_norm",
    "PreActBottleneck",
    "unit_shortcut",
    "ResidualUnit",
    "PlainUnit",
]

#: Keras Applications' BatchNorm epsilon, used everywhere in ResNet v2 (PyTorch's default is 1e-5).
KERAS_BN_EPS = 1.001e-5
#: Keras' BatchNorm momentum 0.99 written the PyTorch way (weight of the new batch statistic).
KERAS_BN_MOMENTUM = 0.01

#: The five residual-unit orderings of He et al. 2016, Fig. 4 (a) to (e), in the paper's order.
UNIT_ORDERINGS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with zero padding 1: keeps the spatial size at stride 1, halves it at 2."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution: mixes channels only (reduce or expand); strided, it also subsamples."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (ResNet-18/34; He et al. 2015, Fig. 5 left).

    ``downsample`` is the projection shortcut (1x1 conv + BN) used when the block changes the
    number of channels or the spatial size; otherwise the shortcut is the identity.
    """

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)  # planes in, not inplanes: the classic bug
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) plus a shortcut (ResNet-50/101/152; He et al. 2015, Fig. 5).

    By default the stride sits on the 3x3 conv, as in torchvision ("ResNet v1.5").
    ``stride_in_1x1=True`` puts it on the first 1x1 conv, as in the original paper and Caffe
    model ("v1"): same parameters, fewer FLOPs, the 1x1 conv then skips 3 of every 4 pixels.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def keras_batch_norm(num_features: int) -> nn.BatchNorm2d:
    """BatchNorm with Keras' settings (eps 1.001e-5, momentum 0.99), as ResNet v2 uses everywhere."""
    return nn.BatchNorm2d(num_features, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class PreActBottleneck(nn.Module):
    """ResNet v2's pre-activation bottleneck, exactly Keras Applications' ``residual_block_v2``.

    BN -> ReLU first ("preact", He et al. 2016, Fig. 4e); the shortcut is

    - a 1x1 conv *with bias* on the preact output in the first block of a stage
      (``conv_shortcut=True``; Keras ``..._0_conv``),
    - else a 1x1 max pool with the block's stride on the raw input when the block strides,
    - else the identity;

    the residual branch is 1x1 conv -> BN -> ReLU -> 3x3 conv (stride here) -> BN -> ReLU ->
    1x1 conv *with bias*; then the addition, and nothing after it. Keras names
    ``conv{s}_block{b}_{i}_conv`` map to ``conv{s}.block{b}.conv{i}`` (``_0_conv`` -> ``shortcut``,
    ``_preact_bn`` -> ``preact_bn``).
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, conv_shortcut: bool = False) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        if not conv_shortcut and inplanes != out_planes:
            raise ValueError(
                f"an identity shortcut needs inplanes == {out_planes} (planes x 4), "
                f"got inplanes={inplanes}; use conv_shortcut=True"
            )
        self.conv_shortcut = conv_shortcut
        self.preact_bn = keras_batch_norm(inplanes)
        self.preact_relu = nn.ReLU()
        if conv_shortcut:
            self.shortcut = conv1x1(inplanes, out_planes, stride, bias=True)
        elif stride > 1:
            self.shortcut = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut = nn.Identity()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = keras_batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # Keras: ZeroPadding2D(1) + 'valid' conv
        self.bn2 = keras_batch_norm(planes)
        self.conv3 = conv1x1(planes, out_planes, bias=True)
        self.relu = nn.ReLU()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        preact = self.preact_relu(self.preact_bn(x))
        shortcut = self.shortcut(preact if self.conv_shortcut else x)
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.conv3(out)
        return shortcut + out


def unit_shortcut(inplanes: int, planes: int, stride: int = 1) -> nn.Module:
    """The shortcut of a unit: ``nn.Identity()`` if the shape is kept, else a projection, 1x1 conv
    (with the stride) + BN.

    He et al. 2015 call this mix option B; torchvision names the projection ``downsample``.
    """
    if stride == 1 and inplanes == planes:
        return nn.Identity()
    return nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))


class ResidualUnit(nn.Module):
    """A CIFAR residual unit (two 3x3 convs) in one of the five orderings of He et al. 2016, Fig. 4.

    ``ordering`` (see ``UNIT_ORDERINGS``), with F the residual branch and h the shortcut:

    - ``"original"`` (a): conv-BN-ReLU-conv-BN, add, ReLU
    - ``"bn_after_add"`` (b): conv-BN-ReLU-conv, add, BN, ReLU
    - ``"relu_before_add"`` (c): conv-BN-ReLU-conv-BN-ReLU, add
    - ``"relu_only_preact"`` (d): ReLU-conv-BN-ReLU-conv-BN, add
    - ``"full_preact"`` (e): BN-ReLU-conv-BN-ReLU-conv, add

    When the unit changes shape, the shortcut is the same for every ordering: a 1x1 conv with the
    stride, then BN, on the unit's input (``unit_shortcut``). Keeping it identical means an
    ablation compares only the ordering. (The paper's CIFAR nets pad with zeros instead, option A.)
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, ordering: str = "original") -> None:
        super().__init__()
        if ordering not in UNIT_ORDERINGS:
            raise ValueError(f"unknown unit ordering {ordering!r}; choose one of {UNIT_ORDERINGS}")
        self.ordering = ordering
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.conv2 = conv3x3(planes, planes)
        # bn1 normalises the unit input in full pre-activation, conv1's output otherwise;
        # bn2 normalises the sum in "bn_after_add", the branch otherwise.
        self.bn1 = nn.BatchNorm2d(inplanes if ordering == "full_preact" else planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = unit_shortcut(inplanes, planes, stride)

    def residual(self, x: Tensor) -> Tensor:
        """F(x), the residual branch alone (for "bn_after_add": before the BN that follows the add)."""
        conv1, bn1, conv2, bn2, relu = self.conv1, self.bn1, self.conv2, self.bn2, self.relu
        if self.ordering == "original":
            return bn2(conv2(relu(bn1(conv1(x)))))
        if self.ordering == "bn_after_add":
            return conv2(relu(bn1(conv1(x))))
        if self.ordering == "relu_before_add":
            return relu(bn2(conv2(relu(bn1(conv1(x))))))
        if self.ordering == "relu_only_preact":
            return bn2(conv2(relu(bn1(conv1(relu(x))))))
        return conv2(relu(bn2(conv1(relu(bn1(x))))))  # full_preact

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x) + self.shortcut(x)
        if self.ordering == "original":
            return self.relu(out)
        if self.ordering == "bn_after_add":
            return self.relu(self.bn2(out))
        return out  # the three remaining orderings: nothing after the addition


class PlainUnit(nn.Module):
    """The "original" unit without its shortcut: conv-BN-ReLU-conv-BN-ReLU (He et al. 2015 plain nets)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
