"""The folded solutions at the end of every notebook (the markdown cell tagged "solutions").

- Every notebook's Exercises section is followed by exactly one solutions cell, with one
  ``<details>`` per numbered exercise, in order.
- Every code block marked ``# checked by: check_x`` runs on its own (a fresh namespace) and ends
  with that checker's call, whose result passes; ``# rejected by: check_x`` marks a wrong answer an
  exercise asks about, which the checker must reject. A deliberately broken copy of the checked
  solutions fails its checker, so these tests can fail.
- The numbers the written answers quote are computed here from the package, torchvision and
  PyTorch, never copied from the solutions' text.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_course.checkers import CheckResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
TAG = "solutions"
#: Nothing may download in the tests: a solution that loads pretrained weights is checked on the
#: same architecture built without them (the checkers compare architectures, not weights).
OFFLINE = {'weights="IMAGENET1K_V2"': "weights=None"}

DETAILS = re.compile(r"<details><summary><b>Solution (\d+)</b>: (.+?)</summary>\n\n(.*?)\n\n</details>", re.S)
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
MARKER = re.compile(r"# (checked|rejected) by: (check_\w+)")


# --------------------------------------------------------------------------------------------
# Reading the notebooks
# --------------------------------------------------------------------------------------------


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _is_solutions(cell: dict) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def exercises_section(cells: list[dict]) -> tuple[int, int]:
    """(index of the "## Exercises" cell, index after the section's last cell): the section runs
    to the next "#"/"##" heading, the solutions cell or the end."""
    starts = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown" and re.search(r"^## Exercises\s*$", _source(c), re.M)
    ]
    assert len(starts) == 1, f"expected one '## Exercises' cell, found {len(starts)}"
    end = starts[0] + 1
    while (
        end < len(cells)
        and not _is_solutions(cells[end])
        and not (cells[end]["cell_type"] == "markdown" and re.match(r"#{1,2} ", _source(cells[end]).lstrip()))
    ):
        end += 1
    return starts[0], end


def numbered_exercises(cells: list[dict]) -> list[int]:
    start, end = exercises_section(cells)
    text = "\n".join(_source(c) for c in cells[start:end] if c["cell_type"] == "markdown")
    return [int(n) for n in re.findall(r"^(\d+)\. \*\*", text, re.M)]


def exercises_text(path: Path) -> str:
    cells = _cells(path)
    start, end = exercises_section(cells)
    return "\n".join(_source(c) for c in cells[start:end] if c["cell_type"] == "markdown")


def solutions_markdown(path: Path) -> str:
    found = [_source(c) for c in _cells(path) if _is_solutions(c)]
    assert len(found) == 1, f"{path.name}: {len(found)} cells tagged {TAG!r}, expected 1"
    return found[0]


def marked_blocks() -> list[tuple[str, str, str, str]]:
    """(notebook stem, "checked"/"rejected", checker name, code) of every marked code block."""
    blocks = []
    for path in NOTEBOOKS:
        try:
            markdown = solutions_markdown(path)
        except AssertionError:
            continue  # reported by test_one_solutions_cell_right_after_the_exercises
        for code in CODE_BLOCK.findall(markdown):
            first = code.splitlines()[0]
            marker = MARKER.fullmatch(first.strip())
            if marker:
                blocks.append((path.stem, marker.group(1), marker.group(2), code))
    return blocks


BLOCKS = marked_blocks()


def block(notebook: str, kind: str, checker: str) -> str:
    codes = [code for stem, k, name, code in BLOCKS if stem.startswith(notebook) and k == kind and name == checker]
    assert len(codes) == 1, f"expected one '# {kind} by: {checker}' block in {notebook}, found {len(codes)}"
    return codes[0]


def run_solution(code: str, checker: str) -> CheckResult:
    """Run a solution in a fresh namespace; its last statement must be the checker's call
    (``checker(...)`` or ``print(checker(...))``), whose result is returned."""
    for online, offline in OFFLINE.items():
        code = code.replace(online, offline)
    tree = ast.parse(code)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr), "a checked solution ends with its checker's call"
    call = last.value
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print":
        call = call.args[0]
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == checker, (
        f"the last line should call {checker}"
    )
    namespace: dict = {"__name__": "solution"}
    exec(compile(ast.Module(body=tree.body[:-1], type_ignores=[]), "<solution>", "exec"), namespace)
    result = eval(compile(ast.Expression(body=call), "<solution>", "eval"), namespace)
    assert isinstance(result, CheckResult)
    return result


# --------------------------------------------------------------------------------------------
# Structure: one folded solution per exercise, right after the exercises
# --------------------------------------------------------------------------------------------


def test_every_notebook_has_exercises():
    assert len(NOTEBOOKS) == 9
    for path in NOTEBOOKS:
        assert numbered_exercises(_cells(path)), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_solutions_cell_right_after_the_exercises(path):
    cells = _cells(path)
    tagged = [i for i, c in enumerate(cells) if _is_solutions(c)]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged {TAG!r}"
    _, end = exercises_section(cells)
    assert tagged[0] == end, f"{path.name}: the solutions cell is cell {tagged[0]}, the exercises end at {end}"
    assert cells[end]["cell_type"] == "markdown"
    assert _source(cells[end]).startswith("### Solutions\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_folded_solution_per_exercise(path):
    numbers = numbered_exercises(_cells(path))
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: exercises numbered {numbers}"
    markdown = solutions_markdown(path)
    found = DETAILS.findall(markdown)
    assert [int(n) for n, _, _ in found] == numbers
    # every <details> is one of those (a blank line after <summary> and before </details>, so that
    # JupyterLab renders the markdown inside), and each holds an answer
    assert markdown.count("<details>") == markdown.count("</details>") == len(numbers)
    assert all(len(body.split()) >= 20 for _, _, body in found)
    assert markdown.count("```") % 2 == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_checker_an_exercise_names_has_a_solution_block(path):
    named = set(re.findall(r"\bcheck_[a-z_]+", exercises_text(path)))
    blocks = {name for stem, _, name, _ in BLOCKS if stem == path.stem}
    assert named <= blocks, f"{path.name}: no marked solution for {sorted(named - blocks)}"


def test_the_code_exercises_have_checked_solutions():
    checked = {(stem[:2], name) for stem, kind, name, _ in BLOCKS if kind == "checked"}
    assert checked >= {
        ("01", "check_shortcut"),
        ("02", "check_shortcut"),
        ("02", "check_model"),
        ("03", "check_bottleneck"),
        ("04", "check_preact_block"),
        ("06", "check_model"),
        ("06", "check_train_step"),
        ("07", "check_model"),
        ("08", "check_grad_cam"),
    }


# --------------------------------------------------------------------------------------------
# The code solutions and their checkers
# --------------------------------------------------------------------------------------------


CHECKED = [(s, n, c) for s, k, n, c in BLOCKS if k == "checked"]
REJECTED = [(s, n, c) for s, k, n, c in BLOCKS if k == "rejected"]


@pytest.mark.parametrize("notebook, checker, code", CHECKED, ids=[f"{s[:2]}-{n}" for s, n, _ in CHECKED])
def test_checked_solution_passes_its_checker(notebook, checker, code):
    result = run_solution(code, checker)
    assert result.ok, str(result)


@pytest.mark.parametrize("notebook, checker, code", REJECTED, ids=[f"{s[:2]}-{n}" for s, n, _ in REJECTED])
def test_rejected_answer_fails_its_checker(notebook, checker, code):
    result = run_solution(code, checker)
    assert not result.ok, str(result)


BROKEN = [  # (notebook, checker, [(text in the solution, its broken replacement)], words of the ✗ line)
    ("02", "check_shortcut", [("128 - x.shape[1]", "0")], "the shortcut gives 64 channels"),
    ("02", "check_shortcut", [("x = x[:, :, ::2, ::2]", "x = x[:, :, 1::2, 1::2]")], "misaligned"),
    (
        "02",
        "check_shortcut",
        [
            (
                "return F.pad(x, (0, 0, 0, 0, 0, 128 - x.shape[1]))",
                "return F.pad(x * 0, (0, 0, 0, 0, 0, 128 - x.shape[1]))",
            )
        ],
        "returns only zeros",
    ),
    (
        "03",
        "check_bottleneck",
        [
            (
                "kernel_size=1, bias=False)\n        self.bn1",
                "kernel_size=1, stride=stride, bias=False)\n        self.bn1",
            ),
            ("kernel_size=3, stride=stride,", "kernel_size=3, stride=1,"),
        ],
        "the stride sits on the first 1×1 conv",
    ),
    (
        "04",
        "check_preact_block",
        [("return self.conv3(out) + shortcut", "return self.relu(self.conv3(out) + shortcut)")],
        "a ReLU follows the addition",
    ),
    ("04", "check_preact_block", [("eps=1.001e-5", "eps=1e-5")], "has eps 1e-05: the checker asks for 1.001e-5"),
    ("06", "check_train_step", [("    optimizer.zero_grad(set_to_none=True)\n", "")], "the gradients are never zeroed"),
    (
        "06",
        "check_train_step",
        [("    scheduler.step()\n", "    scheduler.step()\n    scheduler.step()\n")],
        "scheduler.step() runs 2 times per batch",
    ),
    (
        "06",
        "check_train_step",
        [("    optimizer.step()\n", ""), ("    model.train()\n", "    optimizer.step()\n")],
        "optimizer.step() runs before loss.backward()",
    ),
    ("07", "check_model", [("port.pool1 = ", "unused = ")], "your logits differ"),
    ("08", "check_grad_cam", [("gradients.mean(dim=(2, 3), keepdim=True)", "gradients")], "position by position"),
]


@pytest.mark.parametrize("notebook, checker, edits, failure", BROKEN, ids=[f"{n}-{c}" for n, c, _, _ in BROKEN])
def test_a_broken_solution_fails_its_checker(notebook, checker, edits, failure):
    code = block(notebook, "checked", checker)
    for text, broken in edits:
        assert text in code, f"{text!r} is no longer in the solution: update this test"
        code = code.replace(text, broken)
    result = run_solution(code, checker)
    assert not result.ok
    assert any(failure in line for line in result.failures), str(result)


def test_the_offline_replacement_applies():
    """The fine-tuning solution asks for ImageNet weights; the test builds it without them."""
    assert any(online in block("06", "checked", "check_model") for online in OFFLINE)


# --------------------------------------------------------------------------------------------
# 01: the numbers of the written answers
# --------------------------------------------------------------------------------------------


def _gradient_ratio(depth: int, seed: int = 0, kaiming: bool = False, **kwargs) -> float:
    """Section 1 of notebook 01: the first layer's gradient norm / the last hidden layer's."""
    from resnet_course.gradients import deep_mlp, gradient_norms
    from resnet_course.training import set_seed

    set_seed(seed)
    inputs, labels = torch.randn(64, 32), torch.randint(0, 10, (64,))
    net = deep_mlp(depth, **kwargs)
    if kaiming:
        for m in net.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    norms = gradient_norms(net, inputs, labels)
    return norms[0][1] / norms[-2][1]


@pytest.mark.parametrize("seed", [0, 1, 2])  # the notebook's seed and two more: no lucky draw
def test_01_tanh_vanishes_but_less_than_sigmoid_and_relu(seed):
    tanh, relu, sigmoid = (_gradient_ratio(20, seed=seed, activation=a) for a in ("tanh", "relu", "sigmoid"))
    assert tanh < 1e-3  # verdict: "vanishes"
    assert tanh > relu > sigmoid
    assert 1e-5 < tanh < 1e-3 and 0.5 < tanh ** (1 / 18) < 0.75  # about 1e-4, about 0.6 per layer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_01_the_ratio_shrinks_geometrically_with_depth(seed):
    for depth in (10, 20, 40):
        assert 0.4 < _gradient_ratio(depth, seed=seed, activation="relu") ** (1 / (depth - 2)) < 0.6
    assert 0.1 < _gradient_ratio(10, seed=seed, activation="sigmoid") ** (1 / 8) < 0.2
    assert _gradient_ratio(40, seed=seed, activation="sigmoid") == 0.0  # underflows float32
    assert _gradient_ratio(40, seed=seed, activation="relu") < _gradient_ratio(10, seed=seed, activation="relu")


def test_01_kaiming_initialisation_keeps_plain_relu_alive():
    for seed in range(3):
        ratio = _gradient_ratio(20, seed=seed, kaiming=True, activation="relu")
        assert 0.15 < ratio < 0.7  # "survives", within a factor of about 2 to 5


def test_01_the_projection_for_16_to_32_channels_has_576_parameters():
    from resnet_course.blocks import unit_shortcut
    from resnet_course.stages import count_params

    assert count_params(unit_shortcut(16, 32, stride=2)) == 576


# --------------------------------------------------------------------------------------------
# 02
# --------------------------------------------------------------------------------------------


def test_02_basic_block_counts_by_hand():
    from resnet_course.blocks import BasicBlock
    from resnet_course.stages import count_params

    identity = BasicBlock(64, 64)
    assert (count_params(identity.conv1), count_params(identity.conv2)) == (36_864, 36_864)
    assert count_params(identity.bn1) + count_params(identity.bn2) == 256
    assert count_params(identity) == count_params(torchvision.models.resnet.BasicBlock(64, 64)) == 73_984

    projection = nn.Sequential(nn.Conv2d(64, 128, 1, stride=2, bias=False), nn.BatchNorm2d(128))
    down = BasicBlock(64, 128, stride=2, downsample=projection)
    assert (count_params(down.conv1), count_params(down.conv2)) == (73_728, 147_456)
    assert count_params(down.bn1) + count_params(down.bn2) == 512
    assert count_params(projection) == 8_448
    assert count_params(down) == 230_144


def test_02_a_3x3_projection_costs_a_whole_basic_block():
    from resnet_course.blocks import BasicBlock
    from resnet_course.stages import count_params

    too_big = nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128))
    assert count_params(too_big) == 73_984 == count_params(BasicBlock(64, 64))
    assert count_params(too_big) - 8_448 == 65_536
    code = block("02", "rejected", "check_shortcut")
    assert "a 3×3 kernel where a 1×1 does" in str(run_solution(code, "check_shortcut"))


def test_02_one_block_short_of_resnet34():
    from resnet_course.blocks import BasicBlock
    from resnet_course.models import ResNet, resnet34
    from resnet_course.stages import count_params

    short, full = ResNet(BasicBlock, [3, 4, 6, 2]), resnet34()
    assert count_params(full) - count_params(short) == 4_720_640 == count_params(BasicBlock(512, 512))
    assert count_params(short) == 17_077_032
    assert len(set(full.state_dict()) - set(short.state_dict())) == 12


def test_02_relu_before_the_addition_and_the_paper():
    from resnet_course.ablation import PAPER_CIFAR10_ERRORS

    result = run_solution(block("02", "rejected", "check_basic_block"), "check_basic_block")
    assert len(result.failures) == 1 and "before the addition" in result.failures[0]
    assert PAPER_CIFAR10_ERRORS["relu_before_add"][0] == 7.84 and PAPER_CIFAR10_ERRORS["original"][0] == 6.61


# --------------------------------------------------------------------------------------------
# 03
# --------------------------------------------------------------------------------------------


def _macs(module: nn.Module, *shape: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.eval()(torch.zeros(*shape))
    return counter.get_total_flops() // 2


def test_03_bottleneck_512_128_and_equal_block_costs():
    from resnet_course.blocks import Bottleneck
    from resnet_course.stages import count_params

    block_ = Bottleneck(512, 128)
    convs = sum(count_params(m) for m in block_.modules() if isinstance(m, nn.Conv2d))
    assert (convs, count_params(block_) - convs, count_params(block_)) == (278_528, 1_536, 280_064)
    assert count_params(block_) == count_params(torchvision.models.resnet.Bottleneck(512, 128))
    assert _macs(Bottleneck(256, 64), 1, 256, 56, 56) == _macs(Bottleneck(2048, 512), 1, 2048, 7, 7) == 218_365_952


def test_03_resnet101_and_152_count_their_names():
    from resnet_course.models import get_model

    for name, blocks, layers in (("resnet101", [3, 4, 23, 3], 101), ("resnet152", [3, 8, 36, 3], 152)):
        net = get_model(name)
        convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
        fcs = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert len([n for n in convs if ".downsample." not in n]) + len(fcs) == layers
        assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == blocks


def test_03_explorer_sizes_and_costs():
    from resnet_course.models import resnet50
    from resnet_course.stages import stage_shapes
    from resnet_course.widgets import SIZE_MIN

    model = resnet50()

    def rows(size):
        return {row["stage"]: row for row in stage_shapes(model, size)}

    assert [tuple(rows(s)["layer4"]["shape"][1:]) for s in (224, 225, 256, 257, 321, 352, 353)] == [
        (7, 7),
        (8, 8),
        (8, 8),
        (9, 9),
        (11, 11),
        (11, 11),
        (12, 12),
    ]
    assert tuple(rows(32)["layer4"]["shape"][1:]) == tuple(rows(31)["layer4"]["shape"][1:]) == (1, 1)
    assert tuple(rows(16)["layer3"]["shape"][1:]) == (1, 1)
    small, large = rows(224), rows(448)
    assert sum(r["params"] for r in small.values()) == sum(r["params"] for r in large.values())
    conv_macs = {
        size: sum(r["macs"] for name, r in table.items() if name != "head")
        for size, table in ((224, small), (448, large))
    }
    assert conv_macs[448] == 4 * conv_macs[224]
    assert large["head"]["macs"] == small["head"]["macs"] == 2048 * 1000
    assert sum(r["macs"] for r in rows(31).values()) == sum(r["macs"] for r in rows(32).values())
    assert SIZE_MIN == 64


def test_03_expanding_twice_loses_8448_parameters():
    from resnet_course.blocks import Bottleneck
    from resnet_course.stages import count_params

    class ExpandTwice(Bottleneck):
        expansion = 2

    assert count_params(Bottleneck(256, 64)) - count_params(ExpandTwice(256, 64)) == 8_448 == 64 * 128 + 2 * 128
    assert count_params(ExpandTwice(256, 64)) == 61_952


# --------------------------------------------------------------------------------------------
# 04
# --------------------------------------------------------------------------------------------


def test_04_zeroed_units_pass_the_input_unchanged_only_without_anything_after_the_add():
    from resnet_course.ablation import zero_branch
    from resnet_course.blocks import UNIT_ORDERINGS, ResidualUnit

    torch.manual_seed(0)
    x = torch.randn(8, 16, 8, 8)
    unchanged = {}
    for ordering in UNIT_ORDERINGS:
        unit = zero_branch(ResidualUnit(16, 16, ordering=ordering)).train()
        with torch.no_grad():
            unchanged[ordering] = torch.equal(unit(x), x)
    assert unchanged == {
        "original": False,
        "bn_after_add": False,
        "relu_before_add": True,
        "relu_only_preact": True,
        "full_preact": True,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_04_which_zeroed_columns_depend_on_depth(seed):
    from resnet_course.ablation import signal_propagation

    def last(num_units):
        return {
            r.unit: (r.std[-1], r.input_corr[-1], r.grad[0], r.negative[-1], r.min_step)
            for r in signal_propagation(num_units, seeds=[seed], zero_branches=True)
        }

    short, long = last(18), last(60)
    for unit in ("relu_before_add", "relu_only_preact", "full_preact"):
        for stack in (short, long):
            assert stack[unit][1] == pytest.approx(1.0, abs=1e-9) and stack[unit][2] == pytest.approx(1.0, abs=1e-9)
            assert stack[unit][4] == 0
    for stack in (short, long):  # the original unit: its ReLU acts only at the first unit
        std, corr, grad, negative, _ = stack["original"]
        assert std == pytest.approx(0.58, abs=0.02) and corr == pytest.approx(0.86, abs=0.02)
        assert grad == pytest.approx(0.71, abs=0.03) and negative == 0
    assert 0.38 < short["bn_after_add"][1] < 0.48 and long["bn_after_add"][1] < short["bn_after_add"][1] - 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.slow
def test_04_the_gradient_grows_fastest_with_bn_after_the_addition(seed):
    from resnet_course.ablation import signal_propagation

    def ratios(num_units):
        return {r.unit: r.grad[0] for r in signal_propagation(num_units, seeds=[seed])}

    short, long = ratios(18), ratios(300)
    assert all(long[unit] > short[unit] for unit in short)
    assert 2 < short["full_preact"] < 4 and 1.5 < short["bn_after_add"] < 3
    assert long["bn_after_add"] > 1000 > max(v for unit, v in long.items() if unit != "bn_after_add")
    assert long["full_preact"] == min(long.values()) and 20 < long["full_preact"] < 50


def _macs_by_output_size(model: nn.Module, size: int = 224) -> Counter:
    macs: Counter = Counter()

    def count(conv, inputs, output):
        macs[output.shape[-1]] += output[0].numel() * conv.in_channels // conv.groups * conv.weight[0, 0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return macs


def test_04_v1_computes_more_at_56_pixels():
    from resnet_course.models import resnet50, resnet50v2
    from resnet_course.stages import stage_shapes

    v1, v2 = resnet50(), resnet50v2()
    assert [tuple(r["shape"]) for r in stage_shapes(v1, 224)][1] == (256, 56, 56)
    assert [tuple(r["shape"]) for r in stage_shapes(v2, 224)][1] == (256, 28, 28)
    at_56 = _macs_by_output_size(v1)[56], _macs_by_output_size(v2)[56]
    assert round(at_56[0] / 1e9, 2) == 0.77 and round(at_56[1] / 1e9, 2) == 0.50


def test_04_the_keras_bn_statistics():
    from resnet_course.models import resnet50v2

    v2 = resnet50v2()
    bns = {name: m.num_features for name, m in v2.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bns) == 49
    assert sum(n for name, n in bns.items() if name.endswith("preact_bn")) == 13_120
    assert sum(n for name, n in bns.items() if name.endswith(("bn1", "bn2"))) == 7_552
    assert bns["post_bn"] == 2048 and sum(bns.values()) == 22_720
    statistics = sum(b.numel() for n, b in v2.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert statistics == 2 * 22_720 == 45_440


# --------------------------------------------------------------------------------------------
# 05
# --------------------------------------------------------------------------------------------


def _fake_scan(counts=(166, 122, 111, 166)):
    """A ScanResult with the course's class counts and the stand-in's file names (no files needed)."""
    from resnet_course.birds import CLASS_NAMES
    from resnet_course.data import ScanResult

    root = Path("/birds")
    files = {
        name: [root / name / f"{name.replace(' ', '_')}_{i:03d}.jpg" for i in range(1, n + 1)]
        for name, n in zip(CLASS_NAMES, counts)
    }
    return ScanResult(root=root, files=files)


def test_05_a_30_percent_split_and_another_seed():
    from resnet_course.data import split_samples

    scan = _fake_scan()
    train, val = split_samples(scan, val_split=0.3)
    assert (len(train), len(val)) == (395, 170)
    assert [n for _, n in sorted(Counter(label for _, label in val).items())] == [50, 37, 33, 50]
    _, val_123 = split_samples(scan, val_split=0.2, seed=123)
    train_7, val_7 = split_samples(scan, val_split=0.2, seed=7)
    assert (len(train_7), len(val_7)) == (452, 113)
    assert Counter(label for _, label in val_7) == Counter(label for _, label in val_123)
    assert [n for _, n in sorted(Counter(label for _, label in val_7).items())] == [33, 25, 22, 33]
    stayed = {p for p, _ in val_123} & {p for p, _ in val_7}
    assert 10 <= len(stayed) <= 40  # expected about 33²/166 + 25²/122 + 22²/111 + 33²/166 ≈ 23
    assert round(33**2 / 166 + 25**2 / 122 + 22**2 / 111 + 33**2 / 166) == 23


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_05_torchvisions_default_crop_often_keeps_less_than_half(seed):
    from torchvision import transforms

    image = Image.new("RGB", (224, 224))
    torch.manual_seed(seed)
    areas = []
    for _ in range(4000):
        _, _, h, w = transforms.RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        areas.append(h * w / 224**2)
    below_half = sum(a < 0.5 for a in areas) / len(areas)
    below_quarter = sum(a < 0.25 for a in areas) / len(areas)
    assert 0.5 < below_half < 0.57 and 0.18 < below_quarter < 0.24  # "slightly more than half", "one in five"
    assert transforms.RandomResizedCrop(224).scale == (0.08, 1.0)


def test_05_validation_transform_is_deterministic():
    from resnet_course.images import eval_transform, train_transform

    image = Image.fromarray((torch.rand(80, 100, 3) * 255).byte().numpy())
    assert torch.equal(eval_transform(64)(image), eval_transform(64)(image))
    torch.manual_seed(0)
    assert not torch.equal(train_transform(64)(image), train_transform(64)(image))


def test_05_the_scan_names_broken_files_and_refuses_an_empty_class(tmp_path):
    from resnet_course.birds import CLASS_NAMES, BirdDataError
    from resnet_course.data import scan_bird_folder

    for label, name in enumerate(CLASS_NAMES):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (16, 16), (60 * label, 100 * i, 80)).save(tmp_path / name / f"{i}.jpg")
    (tmp_path / "Cockatoo" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Cockatoo" / "bird.png").write_text("just some text")
    reasons = {path.name: reason for path, reason in scan_bird_folder(tmp_path).skipped}
    assert reasons == {"empty.jpg": "empty file (0 bytes)", "bird.png": "not an image (cannot identify image file)"}
    for image in (tmp_path / "Bananaquit").iterdir():
        image.unlink()
    with pytest.raises(BirdDataError, match=re.escape("No readable images in the class folder(s) Bananaquit under")):
        scan_bird_folder(tmp_path)


def test_05_the_standard_error_of_113_validation_images():
    from resnet_course.data import split_samples

    n = len(split_samples(_fake_scan())[1])
    assert n == 113 and round(100 / n, 1) == 0.9
    assert [round(100 * math.sqrt(p * (1 - p) / n), 1) for p in (0.3, 0.5, 0.7)] == [4.3, 4.7, 4.3]


# --------------------------------------------------------------------------------------------
# 06
# --------------------------------------------------------------------------------------------


def test_06_label_smoothing_puts_a_floor_under_the_training_loss():
    target = torch.tensor([0.925, 0.025, 0.025, 0.025])
    label = torch.tensor([0])
    floor = F.cross_entropy(target.log()[None], label, label_smoothing=0.1).item()
    assert floor == pytest.approx(0.349, abs=0.001)
    entropy = -(target * target.log()).sum().item()
    assert floor == pytest.approx(entropy, abs=1e-5)
    confident = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    assert F.cross_entropy(confident, label, label_smoothing=0.1).item() > floor
    guessing = F.cross_entropy(torch.zeros(1, 4), label).item()  # four classes, evenly
    assert guessing == pytest.approx(math.log(4)) and round(guessing, 2) == 1.39


def test_06_softmax_before_cross_entropy_has_a_floor_of_0_744():
    certain_and_right = F.softmax(torch.tensor([[1e4, 0.0, 0.0, 0.0]]), dim=1)
    floor = F.cross_entropy(certain_and_right, torch.tensor([0])).item()
    assert round(floor, 3) == round(math.log(1 + 3 / math.e), 3) == 0.744
    worse = F.cross_entropy(F.softmax(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), dim=1), torch.tensor([0])).item()
    assert worse > floor


def test_06_a_scheduler_stepped_twice_reaches_zero_halfway():
    from resnet_course.recipe import lr_factor

    epochs, steps = 30, 57
    factor = lr_factor("cosine", epochs, steps, warmup_epochs=1)
    total = epochs * steps
    assert factor(steps // 2) < 1 < factor(steps - 1) + 1e-9  # the warm-up ends after one epoch's steps...
    assert factor(total) == factor(2 * total - 2) == 0.0  # ...and twice as many steps leave half the run at 0
    assert factor(total - 2) > 0


def test_06_resuming_to_more_epochs_restarts_the_cosine():
    from resnet_course.checkpoints import RECIPE_KEYS
    from resnet_course.recipe import DEFAULT_WARMUP_EPOCHS, lr_factor

    steps = 57
    three = lr_factor("cosine", 3, steps, DEFAULT_WARMUP_EPOCHS)
    five = lr_factor("cosine", 5, steps, DEFAULT_WARMUP_EPOCHS)
    assert DEFAULT_WARMUP_EPOCHS == 1.0
    assert three(3 * steps - 1) < 0.01  # the 3-epoch run ends near 0
    assert five(3 * steps) == pytest.approx(0.5)  # epoch 4 of the 5-epoch schedule starts at half the peak
    assert five(5 * steps - 1) < 0.01
    assert lr_factor("cosine", 5, steps)(3 * steps) == pytest.approx(0.345, abs=0.001)  # without warm-up
    assert "epochs" not in RECIPE_KEYS


# --------------------------------------------------------------------------------------------
# 07
# --------------------------------------------------------------------------------------------


def test_07_the_paper_differences_quoted():
    from resnet_course.ablation import PAPER_CIFAR10_ERRORS, PAPER_IMAGENET_TOP1

    gaps = [round(o - p, 2) for o, p in zip(PAPER_CIFAR10_ERRORS["original"], PAPER_CIFAR10_ERRORS["full_preact"])]
    assert gaps == [0.24, 0.47]  # "0.2 to 0.5 points"
    assert PAPER_IMAGENET_TOP1["ResNet-152"] == (21.3, 21.1)


def test_07_check_model_cannot_see_the_epsilon_slip():
    from resnet_course.checkers import check_model
    from resnet_course.models import resnet50v2
    from resnet_course.porting import naive_port

    slipped = naive_port(resnet50v2(num_classes=4), "pytorch_bn_eps")
    assert check_model(slipped, "resnet50v2").ok
    assert not all(m.eps == 1.001e-5 for m in slipped.modules() if isinstance(m, nn.BatchNorm2d))


def test_07_a_101_layer_resnet_costs_about_twice_a_50_layer_one():
    from resnet_course.models import get_model
    from resnet_course.stages import stage_shapes

    for deep, shallow in (("resnet101", "resnet50"), ("resnet101v2", "resnet50v2")):
        macs = [sum(r["macs"] for r in stage_shapes(get_model(name), 224)) for name in (deep, shallow)]
        assert 1.8 < macs[0] / macs[1] < 2.1


# --------------------------------------------------------------------------------------------
# 08
# --------------------------------------------------------------------------------------------


def test_08_stage_sizes_quoted():
    from resnet_course.models import resnet50
    from resnet_course.stages import stage_shapes

    model = resnet50()
    for size, (l3, l4) in ((224, (14, 7)), (64, (4, 2))):
        shapes = {r["stage"]: tuple(r["shape"]) for r in stage_shapes(model, size)}
        assert shapes["layer3"][1:] == (l3, l3) and shapes["layer4"][1:] == (l4, l4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_08_feature_maps_of_a_flipped_image_are_not_the_flipped_maps(seed):
    from resnet_course.explain import stage_feature_maps
    from resnet_course.models import resnet50

    torch.manual_seed(seed)
    model, image = resnet50(num_classes=4), torch.randn(3, 64, 64)
    maps, flipped = stage_feature_maps(model, image), stage_feature_maps(model, image.flip(-1))
    for name in ("layer1", "layer4"):  # the solution's measure: mean difference over mean activation
        assert (flipped[name] - maps[name].flip(-1)).abs().mean() > 1e-3 * maps[name].abs().mean()


# --------------------------------------------------------------------------------------------
# 09
# --------------------------------------------------------------------------------------------


def test_09_unfreezing_layer4():
    from resnet_course.finetune import freeze_backbone
    from resnet_course.models import get_model
    from resnet_course.stages import stage_shapes

    partial = freeze_backbone(get_model("resnet50", num_classes=4))
    for parameter in partial.layer4.parameters():
        parameter.requires_grad_(True)
    partial.train()
    assert sum(p.numel() for p in partial.parameters() if p.requires_grad) == 14_972_932 == 14_964_736 + 8_196
    assert sum(p.numel() for p in partial.parameters()) == 23_516_228
    assert partial.layer4[0].bn1.training and not partial.layer1[0].bn1.training
    rows = {r["stage"]: r for r in stage_shapes(partial, 224)}
    assert rows["layer4"]["params"] == 14_964_736 and rows["head"]["macs"] == 2048 * 4
    total = sum(r["macs"] for r in rows.values())
    assert round(rows["layer4"]["macs"] / 1e9, 2) == 0.81 and round(total / 1e9, 2) == 4.09


def test_09_imagenet_normalisation_range():
    from resnet_course.images import IMAGENET_MEAN, IMAGENET_STD

    low = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    high = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    assert round(low, 1) == -2.1 and round(high, 1) == 2.6
