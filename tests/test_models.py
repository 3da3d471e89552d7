"""The course's networks against their references: torchvision (v1), Keras Applications (v2), the papers."""

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_course import models
from resnet_course.blocks import UNIT_ORDERINGS, BasicBlock, Bottleneck, PreActBottleneck, ResidualUnit
from resnet_course.models import MODEL_NAMES, V1_NAMES, V2_NAMES, get_model, like_a_trained_net
from resnet_course.porting import naive_port

# Parameter counts at 1000 classes: torchvision's model documentation ("Params" of
# ResNet18_Weights ... ResNet152_Weights); ResNet50V2: Keras Applications' count_params()
# 25,613,800 less its 45,440 BatchNorm moving statistics, which PyTorch keeps as buffers.
PARAMS_1000_CLASSES = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet50v2": 25_568_360,
    "resnet101v2": 44_577_896,
    "resnet152v2": 60_236_904,
}
PARAMS_4_CLASSES = {
    "resnet18": 11_178_564,
    "resnet34": 21_286_724,
    "resnet50": 23_516_228,
    "resnet101": 42_508_356,
    "resnet152": 58_152_004,
    "resnet50v2": 23_527_556,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name, **kwargs) -> nn.Module:
    """Build without allocating or initialising weights: enough to count parameters, instantly."""
    with torch.device("meta"):
        return get_model(name, **kwargs)


# --------------------------------------------------------------------------------------------
# v1 against torchvision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", V1_NAMES)
@pytest.mark.slow
def test_v1_matches_torchvision(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    ours = on_meta(name).to_empty(device="cpu").eval()  # its weights all come from torchvision
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert count_params(ours) == count_params(theirs) == PARAMS_1000_CLASSES[name]
    images = torch.randn(2, 3, 64, 64)

    like_a_trained_net(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # torchvision -> ours
    with torch.no_grad():
        difference = (ours(images) - theirs(images)).abs().max().item()
    assert difference == 0.0, f"torchvision -> ours: max |difference| {difference:.2e}"

    like_a_trained_net(ours, seed=2)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # ours -> torchvision
    with torch.no_grad():
        difference = (ours(images) - theirs(images)).abs().max().item()
    assert difference == 0.0, f"ours -> torchvision: max |difference| {difference:.2e}"


# --------------------------------------------------------------------------------------------
# Parameter counts (torchvision's documentation, Keras Applications)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_matches_course_table_for_1000_classes(name):
    assert count_params(on_meta(name)) == PARAMS_1000_CLASSES[name]


@pytest.mark.parametrize("name", sorted(PARAMS_4_CLASSES))
def test_parameter_count_matches_course_table_for_4_classes(name):
    assert count_params(on_meta(name, num_classes=4)) == PARAMS_4_CLASSES[name]


def test_v2_has_the_same_parameters_as_keras_less_bn_moving_statistics():
    model = on_meta("resnet50v2")
    moving = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_params(model) + moving == 25_613_800  # Keras' count_params() for ResNet50V2


# --------------------------------------------------------------------------------------------
# Architecture facts
# --------------------------------------------------------------------------------------------


def test_resnet50_has_49_convs_plus_one_fc():
    model = on_meta("resnet50")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n]
    assert len(convs) == 1 + 3 * (3 + 4 + 6 + 3) == 49
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


@pytest.mark.parametrize(
    "name,blocks", [("resnet50v2", [3, 4, 6, 3]), ("resnet101v2", [3, 4, 23, 3]), ("resnet152v2", [3, 8, 36, 3])]
)
def test_v2_stages_have_keras_block_counts_and_names(name, blocks):
    model = on_meta(name)
    for stage, count in zip(("conv2", "conv3", "conv4", "conv5"), blocks):
        names = [n for n, _ in getattr(model, stage).named_children()]
        assert names == [f"block{i}" for i in range(1, count + 1)]


def test_v2_strides_on_the_last_block_of_conv2_to_conv4():
    model = on_meta("resnet50v2")
    for stage, last_stride in (("conv2", 2), ("conv3", 2), ("conv4", 2), ("conv5", 1)):
        blocks = list(getattr(model, stage))
        assert [b.conv2.stride[0] for b in blocks] == [1] * (len(blocks) - 1) + [last_stride]
        assert blocks[0].conv_shortcut and not any(b.conv_shortcut for b in blocks[1:])
        expected_last = nn.MaxPool2d if last_stride > 1 else nn.Identity
        assert isinstance(blocks[-1].shortcut, expected_last)


def test_v2_stem_has_a_biased_conv_and_no_batch_norm():
    model = on_meta("resnet50v2")
    stem = dict(model.stages())["stem"]
    assert model.conv1.bias is not None
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in stem.modules())


def test_v2_stem_max_pool_pads_with_zeros_not_minus_infinity():
    model = models.resnet50v2().eval()
    negative = -torch.ones(1, 64, 8, 8)  # a stem output that is negative everywhere
    assert model.pool1(negative).max().item() == 0.0  # the zero padding wins at the border
    naive = naive_port(model, "neg_inf_maxpool")  # PyTorch's MaxPool2d(3, 2, padding=1)
    assert naive.pool1(negative).max().item() == -1.0


def test_v1_stage_shapes_at_224_px():
    model = on_meta("resnet50").eval()
    assert stage_output_shapes(model, 224) == [
        ("stem", (64, 56, 56)),
        ("layer1", (256, 56, 56)),
        ("layer2", (512, 28, 28)),
        ("layer3", (1024, 14, 14)),
        ("layer4", (2048, 7, 7)),
        ("head", (1000,)),
    ]


def test_v2_stage_shapes_at_224_px():
    model = on_meta("resnet50v2").eval()
    assert stage_output_shapes(model, 224) == [
        ("stem", (64, 56, 56)),
        ("conv2", (256, 28, 28)),
        ("conv3", (512, 14, 14)),
        ("conv4", (1024, 7, 7)),
        ("conv5", (2048, 7, 7)),
        ("head", (1000,)),
    ]


def stage_output_shapes(model, image_size):
    """(stage name, output shape without the batch) in forward order; meta models stay on meta."""
    x = torch.randn(1, 3, image_size, image_size, device=next(model.parameters()).device)
    shapes = []
    with torch.no_grad():
        for name, stage in model.stages():
            x = stage(x)
            shapes.append((name, tuple(x.shape[1:])))
    return shapes


# --------------------------------------------------------------------------------------------
# stages(): the contract the inspection tools rely on
# --------------------------------------------------------------------------------------------

STAGE_NAMES = {
    **{n: ["stem", "layer1", "layer2", "layer3", "layer4", "head"] for n in V1_NAMES},
    **{n: ["stem", "conv2", "conv3", "conv4", "conv5", "head"] for n in V2_NAMES},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_stages_are_named_and_cover_every_parameter_once(name):
    model = on_meta(name)
    stages = model.stages()
    assert [n for n, _ in stages] == STAGE_NAMES[name]
    seen = [id(p) for _, stage in stages for p in stage.parameters()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize(
    "builder",
    [
        lambda: models.resnet18(num_classes=4),
        lambda: models.resnet50(num_classes=4),
        lambda: models.resnet50v2(num_classes=4),
        lambda: models.cifar_resnet(8, "full_preact"),
        lambda: models.plain_cifar_net(8),
    ],
)
def test_chained_stages_equal_forward(builder):
    model = builder().eval()
    like_a_trained_net(model, seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        chained = x
        for _, stage in model.stages():
            chained = stage(chained)
        assert torch.equal(chained, model(x))


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,block,last_bn", [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")])
def test_zero_init_residual_makes_every_block_start_as_identity(name, block, last_bn):
    model = get_model(name, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, block)]
    assert all(torch.all(getattr(b, last_bn).weight == 0) for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    x = torch.randn(1, 64 * block.expansion, 4, 4)
    identity_block = model.layer1[1]  # no downsample: output = ReLU(x + 0)
    with torch.no_grad():
        assert torch.equal(identity_block(x), torch.relu(x))


def test_stride_in_1x1_moves_the_stride_and_keeps_the_parameters():
    v15 = on_meta("resnet50")
    v1 = on_meta("resnet50", stride_in_1x1=True)
    for model, strided, unstrided in ((v15, "conv2", "conv1"), (v1, "conv1", "conv2")):
        for layer in (model.layer2, model.layer3, model.layer4):
            assert getattr(layer[0], strided).stride == (2, 2)
            assert getattr(layer[0], unstrided).stride == (1, 1)
    assert count_params(v1) == count_params(v15)
    with pytest.raises(ValueError, match="Bottleneck"):
        models.resnet18(stride_in_1x1=True)


def test_resnet50_macs_match_the_references_for_v1_and_v1_5():
    """~4.09 GMACs at 224 px for v1.5 (torchvision's documentation: "GFLOPS 4.09" for ResNet50,
    counting multiply-adds); ~3.86 with the stride in the 1x1, the original paper's v1 (He et al.
    2015, Table 1: 3.8 x 10^9 FLOPs, also multiply-adds)."""

    def gmacs(model):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(torch.randn(1, 3, 224, 224, device="meta"))
        return counter.get_total_flops() / 2 / 1e9  # the counter counts a multiply-add as 2 FLOPs

    assert gmacs(on_meta("resnet50")) == pytest.approx(4.09, abs=0.01)
    assert gmacs(on_meta("resnet50", stride_in_1x1=True)) == pytest.approx(3.86, abs=0.01)


# --------------------------------------------------------------------------------------------
# CIFAR nets (He et al. 2015 Sec. 4.2; He et al. 2016 Fig. 4)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [8, 20, 56, 110])
@pytest.mark.parametrize("builder", [lambda d: models.cifar_resnet(d), lambda d: models.plain_cifar_net(d)])
def test_cifar_depth_counts_3x3_convs_and_fc_as_6n_plus_2(depth, builder):
    model = builder(depth)
    weighted = [
        m for m in model.modules() if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    ]
    assert len(weighted) == depth


@pytest.mark.parametrize("unit", UNIT_ORDERINGS + ("plain",))
def test_every_cifar_unit_builds_runs_and_learns_at_32_px(unit):
    torch.manual_seed(0)
    model = models.CifarResNet(20, unit)
    assert [n for n, _ in model.stages()] == ["stem", "stage1", "stage2", "stage3", "head"]
    x = torch.randn(4, 3, 32, 32)
    shapes = stage_output_shapes(model.eval(), 32)
    assert [s for _, s in shapes] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (10,)]
    logits = model.train()(x)
    nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("unit", UNIT_ORDERINGS)
def test_cifar_resnet_uses_the_requested_ordering(unit):
    model = models.cifar_resnet(14, unit)
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    assert len(units) == 6 and all(u.ordering == unit for u in units)
    preact = unit in ("relu_only_preact", "full_preact")
    assert hasattr(model, "post_bn") == preact  # pre-activation nets end with BN-ReLU (He et al. 2016)
    assert hasattr(model, "bn1") != preact


def test_plain_net_loses_the_input_when_its_units_output_zero_but_resnet_keeps_it():
    """With every unit's last BN at gamma 0 and beta 0, a residual unit is the identity (then
    ReLU) while a plain unit outputs zeros: only the shortcuts carry the input to the logits."""
    x1, x2 = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    outputs = {}
    for name, model in (("plain", models.plain_cifar_net(20)), ("residual", models.cifar_resnet(20))):
        model.eval()
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "bn2") and hasattr(m, "conv2"):
                    m.bn2.weight.zero_()
                    m.bn2.bias.zero_()
            outputs[name] = model(x1), model(x2)
    assert torch.equal(*outputs["plain"])
    assert not torch.allclose(*outputs["residual"])


@pytest.mark.parametrize("depth", [7, 21, 2, 0, "20", 20.0])
def test_cifar_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        models.cifar_resnet(depth)
    with pytest.raises(ValueError, match="6n\\+2"):
        models.plain_cifar_net(depth)


def test_unknown_unit_ordering_lists_the_valid_ones():
    with pytest.raises(ValueError, match="full_preact"):
        models.cifar_resnet(20, "preact")


def test_get_model_builds_by_name_and_lists_valid_names_on_error():
    assert MODEL_NAMES == (
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50v2",
        "resnet101v2",
        "resnet152v2",
    )
    model = get_model("ResNet50V2", num_classes=4)
    assert isinstance(model, models.ResNetV2) and model.fc.out_features == 4
    assert isinstance(next(iter(model.conv2)), PreActBottleneck)
    with pytest.raises(ValueError, match="resnet18.*resnet152v2"):
        get_model("resnet51")


def test_v1_and_v2_names_are_the_two_families():
    assert V1_NAMES + V2_NAMES == MODEL_NAMES
    assert all(type(on_meta(name)) is models.ResNet for name in V1_NAMES)
    assert all(type(on_meta(name)) is models.ResNetV2 for name in V2_NAMES)
