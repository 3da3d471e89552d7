"""The pictures are drawn from the code: what a figure shows is what the module's forward does.

References: He et al. 2015 (Fig. 2, Fig. 5, Table 1) for BasicBlock, Bottleneck and the stage
shapes; He et al. 2016 (Fig. 4 (a)-(e)) for the five unit orderings; Keras Applications'
``residual_block_v2`` for Block2. The drawn operations are read back from the figure and compared
with these sequences and with ``ablation.operation_order`` (an independent reading of the fx
trace), so a drawing that dropped, reordered or misplaced an operation fails.
"""

from __future__ import annotations

import pytest
from torch import nn

from resnet_course.ablation import operation_order
from resnet_course.blocks import UNIT_ORDERINGS, BasicBlock, Bottleneck, PreActBottleneck, ResidualUnit, conv1x1
from resnet_course.diagrams import (
    STRIDE_COLOR,
    draw_block,
    draw_blocks,
    draw_network,
    draw_stage_tensors,
    drawn_boxes,
    drawn_operations,
    side_length,
)
from resnet_course.models import resnet18, resnet50, resnet50v2
from resnet_course.tracing import block_graph

CONV_BN_RELU_CONV_BN = ["conv", "BN", "ReLU", "conv", "BN"]
BOTTLENECK_BRANCH = ["conv", "BN", "ReLU", "conv", "BN", "ReLU", "conv", "BN"]
BLOCK2_BRANCH = ["BN", "ReLU", "conv", "BN", "ReLU", "conv", "BN", "ReLU", "conv"]

#: He et al. 2016, Fig. 4: (main path top to bottom, with "add" where the shortcut joins).
PAPER_FIG4 = {
    "original": CONV_BN_RELU_CONV_BN + ["add", "ReLU"],
    "bn_after_add": ["conv", "BN", "ReLU", "conv", "add", "BN", "ReLU"],
    "relu_before_add": CONV_BN_RELU_CONV_BN + ["ReLU", "add"],
    "relu_only_preact": ["ReLU"] + CONV_BN_RELU_CONV_BN + ["add"],
    "full_preact": ["BN", "ReLU", "conv", "BN", "ReLU", "conv", "add"],
}


def _projection(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))


def block_cases():
    """(name, block, main path per the papers, shortcut per the papers)."""
    cases = [
        ("BasicBlock identity", BasicBlock(64, 64), CONV_BN_RELU_CONV_BN + ["add", "ReLU"], []),
        (
            "BasicBlock projection",
            BasicBlock(64, 128, 2, _projection(64, 128, 2)),
            CONV_BN_RELU_CONV_BN + ["add", "ReLU"],
            ["conv", "BN"],
        ),
        ("Bottleneck identity", Bottleneck(256, 64), BOTTLENECK_BRANCH + ["add", "ReLU"], []),
        (
            "Bottleneck projection",
            Bottleneck(256, 128, 2, _projection(256, 512, 2)),
            BOTTLENECK_BRANCH + ["add", "ReLU"],
            ["conv", "BN"],
        ),
        (
            "Bottleneck v1 stride",
            Bottleneck(256, 128, 2, _projection(256, 512, 2), stride_in_1x1=True),
            BOTTLENECK_BRANCH + ["add", "ReLU"],
            ["conv", "BN"],
        ),
        # Keras residual_block_v2: the conv shortcut reads the pre-activation, shared with the branch.
        ("Block2 conv shortcut", PreActBottleneck(64, 64, conv_shortcut=True), BLOCK2_BRANCH + ["add"], ["conv"]),
        ("Block2 max-pool shortcut", PreActBottleneck(256, 64, stride=2), BLOCK2_BRANCH + ["add"], ["max pool"]),
        ("Block2 identity", PreActBottleneck(256, 64), BLOCK2_BRANCH + ["add"], []),
    ]
    for ordering in UNIT_ORDERINGS:
        cases.append((f"unit {ordering}", ResidualUnit(16, 16, ordering=ordering), PAPER_FIG4[ordering], []))
        cases.append(
            (
                f"unit {ordering} projection",
                ResidualUnit(16, 32, 2, ordering=ordering),
                PAPER_FIG4[ordering],
                ["conv", "BN"],
            )
        )
    return cases


CASES = block_cases()


@pytest.mark.parametrize("name,block,main,shortcut", CASES, ids=[c[0] for c in CASES])
def test_drawn_operations_are_the_forward_order(name, block, main, shortcut):
    fig = draw_block(block, name)
    (drawn,) = drawn_operations(fig)
    assert drawn == operation_order(block, skip=())
    assert sorted(drawn) == sorted(main + shortcut)


@pytest.mark.parametrize("name,block,main,shortcut", CASES, ids=[c[0] for c in CASES])
def test_the_picture_reads_like_the_paper(name, block, main, shortcut):
    graph = block_graph(block)
    assert graph.path(0) == main  # the residual branch, top to bottom, and what follows the addition
    assert graph.path(1) == shortcut  # the shortcut column (empty: identity)


def test_the_shortcut_starts_where_the_code_takes_it():
    # Block2's conv shortcut reads the pre-activation (after BN, ReLU); its max-pool shortcut reads x.
    conv = block_graph(PreActBottleneck(64, 64, conv_shortcut=True))
    (shortcut,) = [op for op, col in zip(conv.ops, conv.column) if col == 1]
    assert [conv.ops[i].kind for i in shortcut.inputs] == ["ReLU"]
    pool = block_graph(PreActBottleneck(256, 64, stride=2))
    (shortcut,) = [op for op, col in zip(pool.ops, pool.column) if col == 1]
    assert shortcut.inputs == [-1]


def test_a_changed_block_changes_the_picture():
    class Swapped(BasicBlock):  # ReLU before BN: the picture must follow the code
        def forward(self, x):
            out = self.bn1(self.relu(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + x)

    assert block_graph(Swapped(64, 64)).path(0) == ["conv", "ReLU", "BN", "conv", "BN", "add", "ReLU"]


def test_stride_is_written_and_outlined_where_it_sits():
    v15 = block_graph(Bottleneck(256, 128, 2, _projection(256, 512, 2)))
    v1 = block_graph(Bottleneck(256, 128, 2, _projection(256, 512, 2), stride_in_1x1=True))

    def strided(graph):  # (column, first line of the box) of each strided operation
        return sorted((col, op.text.split("\n")[0]) for op, col in zip(graph.ops, graph.column) if op.stride > 1)

    # torchvision (v1.5): on the 3x3; the paper (v1): on the first 1x1; the projection strides in both
    assert strided(v15) == [(0, "conv 3×3, 128→128"), (1, "conv 1×1, 256→512")]
    assert strided(v1) == [(0, "conv 1×1, 256→128"), (1, "conv 1×1, 256→512")]
    fig = draw_block(Bottleneck(256, 128, 2, _projection(256, 512, 2)))
    red = [
        p
        for p in fig.axes[0].patches
        if p.get_edgecolor()[:3] == pytest.approx(tuple(int(STRIDE_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)))
    ]
    assert len(red) == 2


def test_channel_counts_are_written_on_the_convolutions():
    graph = block_graph(Bottleneck(256, 64))
    assert [op.text for op in graph.ops if op.kind == "conv"] == [
        "conv 1×1, 256→64",
        "conv 3×3, 64→64",
        "conv 1×1, 64→256",
    ]
    block2 = block_graph(PreActBottleneck(256, 64))
    assert [op.text for op in block2.ops if op.kind == "conv"][-1] == "conv 1×1, 64→256\n+ bias"


def test_side_by_side_panels_keep_their_own_order():
    fig = draw_blocks([(o, ResidualUnit(16, 16, ordering=o)) for o in UNIT_ORDERINGS])
    assert [ax.get_title() for ax in fig.axes] == list(UNIT_ORDERINGS)
    assert drawn_operations(fig) == [operation_order(ResidualUnit(16, 16, ordering=o), skip=()) for o in UNIT_ORDERINGS]
    with pytest.raises(ValueError, match="at least one"):
        draw_blocks([])


def _stage_texts(fig):
    texts = [t.get_gid() for t in fig.axes[0].texts if t.get_gid()]
    stages = [g.split(":")[1:] for g in texts if g.startswith("stage")]
    shapes = [g.split(":")[1] for g in texts if g.startswith("shape")]
    return [(name, int(n)) for name, n in stages], shapes


def test_network_drawing_follows_table_1():
    stages, shapes = _stage_texts(draw_network(resnet50(), 224))
    assert stages == [("stem", 0), ("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3), ("head", 0)]
    assert shapes == ["64×56×56", "256×56×56", "512×28×28", "1024×14×14", "2048×7×7", "1000"]
    stages, _ = _stage_texts(draw_network(resnet18(), 224))
    assert [n for _, n in stages] == [0, 2, 2, 2, 2, 0]
    stages, shapes = _stage_texts(draw_network(resnet50v2(), 224))
    assert stages == [("stem", 0), ("conv2", 3), ("conv3", 4), ("conv4", 6), ("conv5", 3), ("head", 0)]
    assert shapes[1:5] == ["256×28×28", "512×14×14", "1024×7×7", "2048×7×7"]  # v2 strides on the last block


def test_tensor_boxes_follow_c_h_w_on_a_log_scale():
    rows = [
        {"stage": "a", "shape": (64, 56, 56)},
        {"stage": "b", "shape": (2048, 7, 7)},
        {"stage": "head", "shape": (1000,)},
    ]
    boxes = drawn_boxes(draw_stage_tensors([("net", rows)]))
    assert [b["shape"] for b in boxes] == [(64, 56, 56), (2048, 7, 7), (1000, 1, 1)]
    for box in boxes:
        c, h, w = box["shape"]
        assert box["width"] == pytest.approx(side_length(w))
        assert box["height"] == pytest.approx(side_length(h))
        assert box["depth"] == pytest.approx(side_length(c))
    assert side_length(1) == 1 and side_length(2048) == 12
    with pytest.raises(ValueError):
        side_length(0)


def test_v1_beside_v2_one_row_each():
    from resnet_course.stages import stage_shapes

    fig = draw_stage_tensors(
        [("ResNet-50", stage_shapes(resnet50(), 224)), ("ResNet50V2", stage_shapes(resnet50v2(), 224))], 224
    )
    boxes = drawn_boxes(fig)
    assert [b["stage"] for b in boxes if b["model"] == 1] == ["stem", "conv2", "conv3", "conv4", "conv5", "head"]
    assert [b["shape"] for b in boxes if b["model"] == 0][4] == (2048, 7, 7)
    assert [b["shape"] for b in boxes if b["model"] == 1][1] == (256, 28, 28)
    with pytest.raises(ValueError, match="at least one"):
        draw_stage_tensors([])
