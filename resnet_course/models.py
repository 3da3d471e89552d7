"""The networks of the course, assembled from ``blocks``.

- ``ResNet`` (v1, He et al. 2015) with torchvision's module names: ``resnet18`` ... ``resnet152``
  load torchvision's state_dicts (strict) and give the same logits.
- ``ResNetV2`` (He et al. 2016) exactly as Keras Applications builds ResNet50V2/101V2/152V2.
- ``CifarResNet``: small 6n+2-layer CIFAR nets for the depth and unit-ordering demos (He et al.
  2015 Sec. 4.2, He et al. 2016 Fig. 4), and their plain (shortcut-free) twins.

Each ``forward`` lists its layers in order, as torchvision's does. Every model also has
``stages()``: ``(name, module)`` pairs, stem first and head last, whose chained application equals
``model(x)``; the inspection tools and plots walk a network through it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Callable

import torch
from torch import Tensor, nn

from . import imagenet, pretrained
from .blocks import (
    UNIT_ORDERINGS,
    BasicBlock,
    Bottleneck,
    PlainUnit,
    PreActBottleneck,
    ResidualUnit,
    conv1x1,
    conv3x3,
    keras_batch_norm,
)

__all__ = [
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "stack_v2",
    "ResNetV2",
    "resnet50v2",
    "resnet101v2",
    "resnet152v2",
    "CifarResNet",
    "cifar_resnet",
    "plain_cifar_net",
    "CIFAR_UNITS",
    "V1_NAMES",
    "V2_NAMES",
    "MODEL_NAMES",
    "get_model",
    "BN_KINDS",
    "draw_like_trained",
    "like_a_trained_net",
]

Stages = list[tuple[str, nn.Module]]


def _head(pool: nn.Module, fc: nn.Module, *before: nn.Module) -> nn.Sequential:
    """The head as one module, for ``stages()``: [BN, ReLU,] global pool, flatten, fc."""
    return nn.Sequential(*before, pool, nn.Flatten(1), fc)


def _kaiming_init(model: nn.Module) -> None:
    """torchvision's initialisation: He-normal convs (fan_out), BN weight 1 / bias 0, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# ResNet v1 (torchvision layout)
# --------------------------------------------------------------------------------------------


class ResNet(nn.Module):
    """ResNet v1 for ImageNet-size inputs, module for module torchvision's ``ResNet``.

    Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool; four stages ``layer1``..``layer4`` of ``block``
    (64, 128, 256, 512 planes; stride 2 from ``layer2`` on); global average pool; ``fc``.
    ``zero_init_residual`` starts each block's last BN at gamma 0, so every block starts as the
    identity (Goyal et al. 2017).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if stride_in_1x1 and block is not Bottleneck:
            raise ValueError("stride_in_1x1 only applies to Bottleneck blocks (ResNet-50/101/152)")
        self.stride_in_1x1 = stride_in_1x1
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # after a ReLU: -inf pad = 0 pad
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        _kaiming_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        """One stage: the first block may change shape (projection shortcut), the rest keep it."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        extra = {"stride_in_1x1": True} if self.stride_in_1x1 else {}
        layers = [block(self.inplanes, planes, stride, downsample, **extra)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **extra) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stages(self) -> Stages:
        """``stem``, ``layer1``..``layer4``, ``head``: chained, they compute ``forward``."""
        return [
            ("stem", nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)),
            ("layer1", self.layer1),
            ("layer2", self.layer2),
            ("layer3", self.layer3),
            ("layer4", self.layer4),
            ("head", _head(self.avgpool, self.fc)),
        ]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18: BasicBlocks [2, 2, 2, 2] (He et al. 2015, Table 1)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34: BasicBlocks [3, 4, 6, 3] (He et al. 2015, Table 1)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50: Bottlenecks [3, 4, 6, 3] = 1 + 3 x 16 = 49 convs + 1 fc (He et al. 2015, Table 1)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-101: Bottlenecks [3, 4, 23, 3] (He et al. 2015, Table 1)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-152: Bottlenecks [3, 8, 36, 3] (He et al. 2015, Table 1)."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# ResNet v2 (Keras Applications layout)
# --------------------------------------------------------------------------------------------


def stack_v2(inplanes: int, planes: int, blocks: int, stride: int = 2) -> nn.Sequential:
    """One v2 stage, as Keras' ``stack_residual_blocks_v2``.

    ``block1`` has the conv shortcut (channels change); the stride sits on the *last* block,
    whose shortcut is then a strided 1x1 max pool. Blocks are named ``block1``..``blockN``.
    """
    if blocks < 2:
        raise ValueError(f"a v2 stage needs at least 2 blocks (first and last differ), got {blocks}")
    width = planes * PreActBottleneck.expansion
    stack = OrderedDict(block1=PreActBottleneck(inplanes, planes, conv_shortcut=True))
    for i in range(2, blocks):
        stack[f"block{i}"] = PreActBottleneck(width, planes)
    stack[f"block{blocks}"] = PreActBottleneck(width, planes, stride=stride)
    return nn.Sequential(stack)


class ResNetV2(nn.Module):
    """ResNet v2 (pre-activation), exactly Keras Applications' ResNet50V2/101V2/152V2.

    Stem: 7x7/2 conv *with bias* and no BN/ReLU (the first block's pre-activation follows), then
    zero padding 1 and a 3x3/2 max pool. Stages ``conv2``..``conv5`` (Keras' names) of
    ``PreActBottleneck``; stride 2 on the last block of conv2..conv4, conv5 keeps the size. After
    the last stage: ``post_bn`` -> ReLU (a pre-activation net ends un-normalised), global pool, fc.

    The stem pool pads with zeros, as Keras does; PyTorch's ``MaxPool2d(3, 2, padding=1)`` would
    pad with -inf, which differs because the stem output is not ReLU'd (``porting.naive_port``
    builds that slip). Initialisation is torchvision's (Kaiming), not Keras' (Glorot); architecture
    and names are Keras'. ``zero_init_residual`` zeroes the last conv (weight and bias) of each
    residual branch, so every block starts as its shortcut, as ``ResNet``'s option does with the
    last BN (Goyal et al. 2017).
    """

    def __init__(self, layers: Sequence[int], num_classes: int = 1000, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True)
        self.pool1 = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(kernel_size=3, stride=2))
        self.conv2 = stack_v2(64, 64, layers[0])
        self.conv3 = stack_v2(256, 128, layers[1])
        self.conv4 = stack_v2(512, 256, layers[2])
        self.conv5 = stack_v2(1024, 512, layers[3], stride=1)
        self.post_bn = keras_batch_norm(2048)
        self.post_relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)
        _kaiming_init(self)
        if zero_init_residual:  # the branch ends in a conv with bias, not a BN: zero both
            for m in self.modules():
                if isinstance(m, PreActBottleneck):
                    nn.init.zeros_(m.conv3.weight)
                    nn.init.zeros_(m.conv3.bias)

    def stages(self) -> Stages:
        """``stem``, ``conv2``..``conv5``, ``head`` (post BN-ReLU, pool, fc): chained = ``forward``."""
        return [
            ("stem", nn.Sequential(self.conv1, self.pool1)),
            ("conv2", self.conv2),
            ("conv3", self.conv3),
            ("conv4", self.conv4),
            ("conv5", self.conv5),
            ("head", _head(self.avgpool, self.fc, self.post_bn, self.post_relu)),
        ]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.pool1(x)

        x = self.conv2(x)
        x = self.conv3(x)
        x = self.conv4(x)
        x = self.conv5(x)

        x = self.post_bn(x)
        x = self.post_relu(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet50v2(num_classes: int = 1000, **kwargs) -> ResNetV2:
    """ResNet50V2 as Keras Applications: blocks [3, 4, 6, 3]."""
    return ResNetV2([3, 4, 6, 3], num_classes=num_classes, **kwargs)


def resnet101v2(num_classes: int = 1000, **kwargs) -> ResNetV2:
    """ResNet101V2 as Keras Applications: blocks [3, 4, 23, 3]."""
    return ResNetV2([3, 4, 23, 3], num_classes=num_classes, **kwargs)


def resnet152v2(num_classes: int = 1000, **kwargs) -> ResNetV2:
    """ResNet152V2 as Keras Applications: blocks [3, 8, 36, 3]."""
    return ResNetV2([3, 8, 36, 3], num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# CIFAR-style nets (6n+2 layers) for the depth and ordering demos
# --------------------------------------------------------------------------------------------

PREACT_ORDERINGS = ("relu_only_preact", "full_preact")
CIFAR_UNITS = UNIT_ORDERINGS + ("plain",)


class CifarResNet(nn.Module):
    """A 6n+2-layer CIFAR net (He et al. 2015, Sec. 4.2): 3x3 conv, 3 stages of n units, fc.

    Stages have 16, 32, 64 channels on 32, 16, 8 px; each unit has two 3x3 convs, so the depth is
    1 + 6n + 1 (1x1 projection shortcuts are not counted, as in the paper). ``unit`` is one of the
    five orderings of He et al. 2016, Fig. 4 (``UNIT_ORDERINGS``) or ``"plain"`` (no shortcuts).
    Post-activation nets put BN-ReLU in the stem; pre-activation nets put it before the pooling
    instead, since their units end with an addition (He et al. 2016, Sec. 4.1).
    """

    def __init__(self, depth: int, unit: str = "original", num_classes: int = 10) -> None:
        super().__init__()
        if unit not in CIFAR_UNITS:
            raise ValueError(f"unknown unit {unit!r}; choose one of {CIFAR_UNITS}")
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
        self.depth = depth
        self.unit = unit
        n = (depth - 2) // 6
        preact = unit in PREACT_ORDERINGS
        self.conv1 = conv3x3(3, 16)
        if not preact:
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU()
        make_unit: Callable[..., nn.Module]
        if unit == "plain":
            make_unit = PlainUnit
        else:

            def make_unit(inplanes: int, planes: int, stride: int = 1) -> nn.Module:
                return ResidualUnit(inplanes, planes, stride, ordering=unit)

        inplanes = 16
        for index, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            units = [make_unit(inplanes, planes, stride)] + [make_unit(planes, planes) for _ in range(n - 1)]
            setattr(self, f"stage{index}", nn.Sequential(*units))
            inplanes = planes
        if preact:
            self.post_bn = nn.BatchNorm2d(64)
            self.post_relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def stages(self) -> Stages:
        """``stem``, ``stage1``..``stage3``, ``head``: chained, they compute ``forward``."""
        if self.unit in PREACT_ORDERINGS:
            stem = nn.Sequential(self.conv1)
            head = _head(self.avgpool, self.fc, self.post_bn, self.post_relu)
        else:
            stem = nn.Sequential(self.conv1, self.bn1, self.relu)
            head = _head(self.avgpool, self.fc)
        return [
            ("stem", stem),
            ("stage1", self.stage1),
            ("stage2", self.stage2),
            ("stage3", self.stage3),
            ("head", head),
        ]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if self.unit not in PREACT_ORDERINGS:  # post-activation: BN-ReLU in the stem
            x = self.relu(self.bn1(x))

        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)

        if self.unit in PREACT_ORDERINGS:  # pre-activation: BN-ReLU after the last addition
            x = self.post_relu(self.post_bn(x))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def cifar_resnet(depth: int, unit: str = "original", num_classes: int = 10) -> CifarResNet:
    """A 6n+2-layer CIFAR ResNet with units in one of the five orderings (He et al. 2016, Fig. 4)."""
    if unit == "plain":
        raise ValueError("cifar_resnet builds residual nets; use plain_cifar_net for 'plain'")
    return CifarResNet(depth, unit, num_classes)


def plain_cifar_net(depth: int, num_classes: int = 10) -> CifarResNet:
    """The same 6n+2 layers without shortcuts: the plain net of He et al. 2015, Fig. 6 (left)."""
    return CifarResNet(depth, "plain", num_classes)


# --------------------------------------------------------------------------------------------
# Weights like a trained net's
# --------------------------------------------------------------------------------------------

#: What a BatchNorm's tensors are, in PyTorch's order (weight, bias, running_mean, running_var) and
#: in Keras' (gamma, beta, moving_mean, moving_variance): ``draw_like_trained``'s kinds.
BN_KINDS = ("scale", "shift", "shift", "variance")


def draw_like_trained(
    shape: Sequence[int], kind: str, generator: torch.Generator, shift_std: float = 0.1, max_variance: float = 1.5
) -> Tensor:
    """Float64 values of ``shape`` such as training leaves, drawn from ``generator``: a BN
    ``"scale"`` (gamma) ~ U(0.5, 1.5), a running ``"variance"`` ~ U(0.5, max_variance), a ``"shift"``
    (BN beta or running mean, a conv or linear bias) ~ N(0, shift_std)."""
    if kind == "shift":
        return shift_std * torch.randn(shape, generator=generator, dtype=torch.float64)
    if kind not in ("scale", "variance"):
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(set(BN_KINDS))}")
    high = 1.5 if kind == "scale" else max_variance
    return 0.5 + (high - 0.5) * torch.rand(shape, generator=generator, dtype=torch.float64)


def like_a_trained_net(
    model: nn.Module, seed: int = 0, shift_std: float = 0.1, max_variance: float = 1.5, biases: bool = True
) -> nn.Module:
    """Give ``model`` (in place) non-trivial BatchNorm statistics and, with ``biases``, non-zero
    conv/linear biases, as training would (``draw_like_trained``'s distributions). At initialisation
    BN is the identity in eval mode and biases are 0, which hides a misplaced BN or a missing bias.

    Deterministic for a given ``seed``; the global random state is left alone. Returns ``model``.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for tensor, kind in zip((m.weight, m.bias, m.running_mean, m.running_var), BN_KINDS):
                    if tensor is not None:
                        tensor.copy_(draw_like_trained(tensor.shape, kind, generator, shift_std, max_variance))
            elif biases and isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(draw_like_trained(m.bias.shape, "shift", generator, shift_std))
    return model


# --------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------

_V1_FACTORIES = (resnet18, resnet34, resnet50, resnet101, resnet152)
_V2_FACTORIES = (resnet50v2, resnet101v2, resnet152v2)
_FACTORIES: dict[str, Callable[..., nn.Module]] = {f.__name__: f for f in _V1_FACTORIES + _V2_FACTORIES}
#: The ImageNet-style models the course builds, each named as its factory: v1 (torchvision's
#: layout), v2 (Keras Applications'), and all of them, v1 then v2. The one list of model names.
V1_NAMES = tuple(f.__name__ for f in _V1_FACTORIES)
V2_NAMES = tuple(f.__name__ for f in _V2_FACTORIES)
MODEL_NAMES = V1_NAMES + V2_NAMES


def get_model(name: str, num_classes: int = 1000, weights=None, class_names=None, **kwargs) -> nn.Module:
    """Build a model by name (one of ``MODEL_NAMES``), e.g. ``get_model("resnet50", num_classes=4)``.

    ``weights``: None (random initialisation), ``"imagenet"`` (torchvision's ImageNet weights for
    v1, Keras Applications' for v2, from the cache or downloaded) or the path of such a file; the
    backbone loads strictly and, for ``num_classes`` other than 1000, the head stays fresh (see
    ``pretrained.load_weights``). ``weights`` may also be a checkpoint written by ``train`` for
    the same architecture: its head is kept only when it was trained on ``class_names``. The
    model's ``input_normalization`` names the input scaling its weights expect ("imagenet" or
    "tf"), for ``data.load_birds(normalization=...)``; ``weights_source`` says where they came from.
    """
    key = str(name).strip().lower()
    if key not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    model = _FACTORIES[key](num_classes=num_classes, **kwargs)
    model.zero_init_residual = bool(kwargs.get("zero_init_residual", False))  # recorded by training.fit
    model.input_normalization = pretrained.normalization_for(key, weights)
    model.weights_source = None
    if weights is not None:
        if isinstance(weights, str) and weights.strip().lower() == "imagenet":
            weights = imagenet.imagenet_weights(key, include_top=num_classes == 1000)
        model.weights_source = pretrained.load_weights(model, key, weights, class_names=class_names)
    return model
