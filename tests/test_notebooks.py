"""The course's house rules for notebooks, checked on the committed files (nbval executes them).

Every notebook is numbered in order, imports `resnet_course`, has at least one cell whose output
nbval compares (`# NBVAL_CHECK_OUTPUT`) with that output committed, opens with a title, ends with
exercises, and carries no errors or real bird photos in its outputs.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_vanishing_gradients",
    "02_basic_block",
    "03_bottleneck",
    "04_preactivation",
    "05_bird_dataset",
    "06_train_resnet50",
    "07_train_resnet50v2",
    "08_inside_resnet",
    "09_fine_tuning",
]
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_course_notebooks_are_present():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_numbered(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+", path.stem), f"{path.name}: name it NN_topic.ipynb"
    numbers = [int(p.stem[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), f"notebook numbers have gaps: {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_resnet_course(path):
    code = "\n".join(_source(c) for c in _cells(path) if c["cell_type"] == "code")
    assert re.search(r"^\s*(from|import)\s+resnet_course\b", code, re.M), f"{path.name} never imports resnet_course"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_checked_cells_with_committed_outputs(path):
    checked = [c for c in _cells(path) if c["cell_type"] == "code" and CHECK_MARK in _source(c)]
    assert checked, f"{path.name} has no cell marked {CHECK_MARK}"
    for cell in checked:
        assert cell.get("outputs"), f"{path.name}: checked cell without committed output:\n{_source(cell)[:200]}"
        streams = [o.get("name") for o in cell["outputs"] if o["output_type"] == "stream"]
        assert "stderr" not in streams, (
            f"{path.name}: stderr (warnings, progress bars) in a checked cell:\n{_source(cell)[:200]}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_a_title_and_ends_with_exercises(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).lstrip().startswith("# ")
    headings = [_source(c) for c in cells if c["cell_type"] == "markdown"]
    assert any(re.search(r"^#+\s*Exercises", h, re.M) for h in headings[-3:]), (
        f"{path.name}: no Exercises section at the end"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_are_committed_without_errors(path):
    code_cells = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code_cells), f"{path.name}: commit it executed, top to bottom"
    counts = [c["execution_count"] for c in code_cells]
    assert counts == sorted(counts), f"{path.name}: cells were run out of order (hidden state)"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{path.name}: committed with an error output: {errors[0].get('ename')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_show_no_real_photo_paths(path):
    text = path.read_text(encoding="utf-8")
    assert "birds-sample" not in text, f"{path.name} refers to the test-only real photos"


def test_no_photos_are_committed():
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    photos = [f for f in tracked.splitlines() if re.search(r"\.(jpe?g|png|webp|bmp)$", f, re.I)]
    assert photos == [], f"image files are committed: {photos[:5]}"


MAX_NOTEBOOK_BYTES, MAX_COURSE_BYTES = 1_000_000, 5_000_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_small_enough_to_open_anywhere(path):
    # photo grids are stored as JPEG (plots.as_photo), so a notebook stays quick to load and to diff
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size:,} bytes"


def test_the_course_notebooks_together_stay_under_5_mb():
    total = sum(path.stat().st_size for path in NOTEBOOKS)
    assert total <= MAX_COURSE_BYTES, f"the notebooks weigh {total:,} bytes together"


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.stem[:2] in ("01", "04", "06", "07", "08", "09")], ids=lambda p: p.stem
)
def test_long_notebooks_show_the_fast_mode_switch_at_the_top(path):
    cells = _cells(path)
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert re.search(r"^FAST = None\b", _source(first_code), re.M) and "use_fast_mode(FAST)" in _source(first_code)
    before = " ".join(_source(c) for c in cells[: cells.index(first_code)] if c["cell_type"] == "markdown")
    assert "`FAST = True`" in before and "`FAST = False`" in before, f"{path.name}: the switch is not explained"
    assert not re.search(r"\{[A-Z_]+\}", before), f"{path.name}: a placeholder is left in the text"
