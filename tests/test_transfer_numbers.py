"""The transfer numbers the course quotes are the recorded ones: benchmarks/transfer_runs.jsonl (the
full run of notebook 09's experiment) against the table in benchmarks/README.md, notebook 09's
committed table and notebook 06's forward reference. Rerun the experiment and these fail until
the text says what the new runs measured."""

import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "transfer_runs.jsonl"
NAMES = {"scratch": "from scratch", "probe": "linear probe", "finetune": "fine-tuning"}


def _rows() -> list[dict]:
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def _accuracies(method: str, fraction: float) -> dict[int, float]:
    return {
        r["seed"]: 100 * r["final_val_acc"]
        for r in _rows()
        if r["kind"] == "transfer" and r["method"] == method and r["train_fraction"] == fraction
    }


def _gain(fraction: float) -> tuple[float, list[float]]:
    tuned, scratch = _accuracies("finetune", fraction), _accuracies("scratch", fraction)
    per_seed = [tuned[seed] - scratch[seed] for seed in sorted(scratch)]
    return statistics.mean(per_seed), per_seed


def _notebook_text(name: str) -> tuple[str, str]:
    """(markdown, outputs) of a committed notebook."""
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    outputs = "\n".join(
        "".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
    )
    return " ".join(markdown.split()), outputs


def test_the_record_is_one_complete_experiment():
    rows = _rows()
    assert [r["kind"] for r in rows].count("pretrain") == 1
    transfer = [r for r in rows if r["kind"] == "transfer"]
    settings = {(r["method"], r["train_fraction"], r["seed"]) for r in transfer}
    assert len(settings) == len(transfer) == 3 * 3 * 3  # methods x fractions x seeds, each once
    assert {r["val_split"] for r in transfer} == {transfer[0]["val_split"]}  # one validation split
    assert {r["epochs"] for r in transfer} == {15}


@pytest.mark.parametrize("fraction", [1.0, 0.25, 0.1])
def test_benchmarks_readme_table_is_the_record(fraction):
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    cells = []
    for method in NAMES:
        values = list(_accuracies(method, fraction).values())
        cells.append(f"{statistics.mean(values):.1f} % ({min(values):.1f}–{max(values):.1f})")
    mean, per_seed = _gain(fraction)
    cells.append(f"{mean:+.1f} ({', '.join(f'{g:+.1f}' for g in per_seed)})")
    row = next(line for line in readme.splitlines() if line.startswith(f"| {100 * fraction:.0f} % |"))
    images = {r["train_images"] for r in _rows() if r["kind"] == "transfer" and r["train_fraction"] == fraction}
    assert row.split(" | ")[1:] == [str(images.pop()), *cells[:-1], cells[-1] + " |"], row


def test_notebook_09_table_and_text_are_the_record():
    markdown, outputs = _notebook_text("09_fine_tuning.ipynb")
    for fraction in (1.0, 0.25, 0.1):
        for method in NAMES:
            values = list(_accuracies(method, fraction).values())
            cell = f"{statistics.mean(values):.1f}% ({min(values):.1f}%-{max(values):.1f}%)"
            assert cell in outputs, (method, fraction, cell)
    for fraction in (1.0, 0.1):
        mean, per_seed = _gain(fraction)
        assert f"{mean:+.1f} points" in markdown or f"**{mean:.1f} points**" in markdown, (fraction, mean)
        assert ", ".join(f"{g:+.1f}" for g in per_seed) in markdown, (fraction, per_seed)


def test_notebook_06_forward_reference_quotes_notebook_09():
    markdown, _ = _notebook_text("06_train_resnet50.ipynb")
    for fraction in (1.0, 0.1):
        mean, _ = _gain(fraction)
        tuned = statistics.mean(_accuracies("finetune", fraction).values())
        scratch = statistics.mean(_accuracies("scratch", fraction).values())
        assert f"{mean:.1f} points above training from scratch" in markdown or f"{mean:.1f} points above with" in (
            markdown
        ), (fraction, mean)
        assert f"({tuned:.1f} against {scratch:.1f} %" in markdown, (fraction, tuned, scratch)
