"""Stage tables: shapes from the conv arithmetic, parameters and MACs from torchvision, Keras and the papers."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_course.models import MODEL_NAMES, cifar_resnet, get_model, plain_cifar_net, resnet50
from resnet_course.stages import compare_table, count_params, format_table, model_stages, stage_shapes

# Parameter counts at 1000 classes: torchvision's model documentation ("Params" of
# ResNet18_Weights ... ResNet152_Weights); ResNet50V2: Keras Applications' count_params()
# 25,613,800 less its 45,440 BatchNorm moving statistics, which PyTorch keeps as buffers.
COURSE_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet50v2": 25_568_360,
    "resnet101v2": 44_577_896,
    "resnet152v2": 60_236_904,
}


def conv_out(n, kernel, stride, padding):
    """floor((n + 2p - k) / s) + 1, the output length of a convolution or pooling window."""
    return (n + 2 * padding - kernel) // stride + 1


def expected_v1_spatial(n):
    """Stem (7x7/2 pad 3, 3x3/2 max pool pad 1), layer1 stride 1, layer2..4 stride 2 (3x3 pad 1)."""
    stem = conv_out(conv_out(n, 7, 2, 3), 3, 2, 1)
    sizes = [stem, stem]
    for _ in range(3):
        sizes.append(conv_out(sizes[-1], 3, 2, 1))
    return sizes  # stem, layer1..layer4


def expected_v2_spatial(n):
    """Same stem; the stride sits on the last block of conv2..conv4; conv5 keeps its input size."""
    stem = conv_out(conv_out(n, 7, 2, 3), 3, 2, 1)
    sizes = [stem]
    for _ in range(3):
        sizes.append(conv_out(sizes[-1], 3, 2, 1))
    sizes.append(sizes[-1])
    return sizes  # stem, conv2..conv5


V1_CHANNELS = [64, 256, 512, 1024, 2048]
V2_CHANNELS = [64, 256, 512, 1024, 2048]


@pytest.fixture(scope="module")
def v1():
    torch.manual_seed(0)
    return resnet50()


@pytest.fixture(scope="module")
def v2():
    torch.manual_seed(0)
    return get_model("resnet50v2")


def test_resnet50_costs_4_09_gmacs_at_224(v1):
    total_macs = sum(row["macs"] for row in stage_shapes(v1, 224))
    assert total_macs == pytest.approx(4.09e9, rel=0.01)


def test_resnet50_with_stride_in_first_1x1_costs_3_86_gmacs():
    model = resnet50(stride_in_1x1=True)
    total_macs = sum(row["macs"] for row in stage_shapes(model, 224))
    assert total_macs == pytest.approx(3.86e9, rel=0.015)


def test_stem_and_head_macs_match_hand_count_per_image(v1):
    rows = {row["stage"]: row for row in stage_shapes(v1, 224, batch_size=2)}
    # Only the 7x7 conv costs MACs in the stem: 64 filters x 3 x 7 x 7 at each of 112 x 112 outputs.
    assert rows["stem"]["macs"] == 64 * 3 * 7 * 7 * 112 * 112
    assert rows["head"]["macs"] == 2048 * 1000
    assert rows["stem"]["flops"] == 2 * rows["stem"]["macs"]


@pytest.mark.parametrize("size", [224, 352])
def test_resnet50_stage_shapes(v1, size):
    rows = stage_shapes(v1, size)
    assert [row["stage"] for row in rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    got = [row["shape"] for row in rows[:-1]]
    assert got == [(c, s, s) for c, s in zip(V1_CHANNELS, expected_v1_spatial(size))]
    assert rows[-1]["shape"] == (1000,)


def test_resnet50_stage_shapes_at_224_and_352_are_the_course_numbers(v1):
    assert [r["shape"] for r in stage_shapes(v1, 224)[1:5]] == [
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (2048, 7, 7),
    ]
    assert [r["shape"] for r in stage_shapes(v1, 352)[1:5]] == [
        (256, 88, 88),
        (512, 44, 44),
        (1024, 22, 22),
        (2048, 11, 11),
    ]


@pytest.mark.parametrize("size", [224, 352])
def test_resnet50v2_stage_shapes(v2, size):
    rows = stage_shapes(v2, size)
    assert [row["stage"] for row in rows] == ["stem", "conv2", "conv3", "conv4", "conv5", "head"]
    got = [row["shape"] for row in rows[:-1]]
    assert got == [(c, s, s) for c, s in zip(V2_CHANNELS, expected_v2_spatial(size))]
    if size == 224:
        assert got[1:] == [(256, 28, 28), (512, 14, 14), (1024, 7, 7), (2048, 7, 7)]


@pytest.mark.parametrize("size", [225, 97, (225, 97)])
def test_odd_sizes_follow_conv_arithmetic(v1, v2, size):
    height, width = (size, size) if isinstance(size, int) else size
    for model, expected, channels in ((v1, expected_v1_spatial, V1_CHANNELS), (v2, expected_v2_spatial, V2_CHANNELS)):
        got = [row["shape"] for row in stage_shapes(model, size)[:-1]]
        assert got == [(c, h, w) for c, h, w in zip(channels, expected(height), expected(width))]


def test_stage_shapes_of_torchvision_resnet50_equal_ours(v1):
    reference = torchvision.models.resnet50(weights=None)
    theirs = stage_shapes(reference, 224)
    ours = stage_shapes(v1, 224)
    assert [(r["shape"], r["params"], r["macs"]) for r in theirs] == [
        (r["shape"], r["params"], r["macs"]) for r in ours
    ]


def test_torchvision_fallback_stages_chain_to_the_model_output():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = x
        for _, stage in model_stages(model):
            out = stage(out)
        assert torch.allclose(out, model(x), atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.slow
def test_stage_params_add_up_to_the_course_parameter_count(name):
    model = get_model(name)
    rows = stage_shapes(model, 64)
    assert sum(row["params"] for row in rows) == count_params(model) == COURSE_PARAMS[name]
    assert rows[-1]["shape"] == (1000,)


def test_shapes_and_macs_match_a_real_forward_pass(v2):
    """stage_shapes works on the meta device; running the stages on real numbers must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, 97, 97)
    real = []
    v2.eval()
    with torch.no_grad():
        for _, stage in model_stages(v2):
            with FlopCounterMode(display=False) as counter:
                x = stage(x)
            real.append((tuple(x.shape[1:]), counter.get_total_flops() // 2))
    assert [(row["shape"], row["macs"]) for row in stage_shapes(v2, 97)] == real


def test_count_params_skips_frozen_parameters_unless_asked():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[0].weight.requires_grad_(False)
    assert count_params(model) == 4 + 4 + 4  # linear bias, BN weight and bias; running stats are buffers
    assert count_params(model, trainable_only=False) == 12 + 12


@pytest.mark.parametrize("build", [cifar_resnet, plain_cifar_net])
def test_cifar_nets_stage_shapes(build):
    model = build(20)
    rows = stage_shapes(model, 32)
    assert [row["stage"] for row in rows] == ["stem", "stage1", "stage2", "stage3", "head"]
    assert [row["shape"] for row in rows] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (10,)]
    assert sum(row["params"] for row in rows) == count_params(model)


def test_stage_shapes_restores_train_and_eval_flags():
    model = plain_cifar_net(8).train()
    model.stage2.eval()
    stage_shapes(model, 32)
    assert model.training and model.stage1.training
    assert not model.stage2.training


def test_model_without_stages_is_refused_clearly():
    with pytest.raises(TypeError, match="stages"):
        model_stages(nn.Linear(3, 4))


@pytest.mark.parametrize("bad", [0, -32, "224", (224,), (224, 0), 224.0])
def test_bad_input_size_is_refused_clearly(bad):
    with pytest.raises(ValueError, match="input_size"):
        stage_shapes(plain_cifar_net(8), bad)


def test_format_table_lists_every_stage_and_the_total(v1):
    rows = stage_shapes(v1, 224)
    lines = format_table(rows).splitlines()
    assert len(lines) == 1 + 1 + len(rows) + 1 + 1  # header, rule, rows, rule, total
    assert "GMACs" in lines[0]
    assert lines[2].split()[:2] == ["stem", "64x56x56"]
    assert lines[-1].split() == ["total", "1000", "25,557,032", "4.089"]


def test_compare_table_puts_v1_beside_v2(v1, v2):
    text = compare_table(stage_shapes(v1, 224), stage_shapes(v2, 224), ("ResNet-50", "ResNet50V2"))
    lines = text.splitlines()
    assert lines[0].startswith("ResNet-50") and "ResNet50V2" in lines[0]
    layer2_line = next(line for line in lines if line.startswith("layer2"))
    assert "512x28x28" in layer2_line and "conv3" in layer2_line and "512x14x14" in layer2_line
    assert lines[-1].split("|")[1].split()[:3] == ["total", "1000", "25,568,360"]


def test_compare_table_pads_a_shorter_model():
    text = compare_table(stage_shapes(get_model("resnet18"), 64), stage_shapes(cifar_resnet(8), 32))
    assert "layer4" in text and "stage3" in text and text.count("total") == 2


class TwoStages(nn.Module):
    """A net with an unpadded 5x5 conv, so inputs under 5 px cannot pass its stem."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, kernel_size=5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def stages(self):
        return [("stem", self.stem), ("head", self.head)]


def test_too_small_input_names_the_stage_that_fails():
    assert stage_shapes(TwoStages(), 5)[0]["shape"] == (4, 1, 1)
    with pytest.raises(ValueError, match="'stem'"):
        stage_shapes(TwoStages(), 4)
