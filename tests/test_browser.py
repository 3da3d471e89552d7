"""The course in real JupyterLab: headless Chromium opens notebooks and runs all their cells.

A ``jupyter lab`` server starts on 127.0.0.1 with a random token and a free port, serving copies
of the notebooks (so nothing it saves can touch the committed files), in fast mode, training into
a folder of its own (``runs/browser-test-<pid>``, removed afterwards) so that notebook 06 really trains
and shows its progress bars (its optimiser comparison, which nbval has trained already, is copied
in rather than trained twice). Chromium is Debian's ``chromium`` package driven by the
``playwright`` Python package (``executable_path``; Playwright's own browser download is not
used). Without either, every test here is skipped with the reason.

Checked, as a student would see it: no cell shows an error and no widget fails to display; the
shape explorer draws, and changing the input size and the model changes the drawing and the
table; training progress bars are widgets, not lines of text.

Which notebooks: 02 and 03 (the diagrams, and the explorer in 03), which take seconds, and 06,
which trains (about a minute in fast mode on a quiet 2-core CPU) and is the one whose progress
bars a student watches: together about two minutes, a CI budget the rest of the suite leaves
room for. 04 shows the same explorer as 03 and otherwise static figures (and its ablation trains
five nets for about a minute); 01, 05, 07 and 08 show no widgets but 07's progress bars, which
are 06's code. nbval already runs every cell of all of them, so running them here as well would
double that cost for little. ``RESNET_COURSE_BROWSER_NOTEBOOKS=all`` (or a
comma-separated list of file names) runs others; 04 passed here too (81 s on a busy machine).

A failing check saves a screenshot of the page to ``test-artifacts/browser/`` (its path is in
the failure message); the explorer's before/after screenshots are saved there every time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
RUNS = REPO_ROOT / "runs" / f"browser-test-{os.getpid()}"  # one per session: sessions may overlap
DEFAULT_NOTEBOOKS = ("02_basic_block.ipynb", "03_bottleneck.ipynb", "06_train_resnet50.ipynb")
#: Seconds allowed for one notebook's cells (fast mode; notebook 06 takes about one minute).
RUN_TIMEOUT = float(os.environ.get("RESNET_COURSE_BROWSER_TIMEOUT", 600))
SERVER_START_TIMEOUT = 120


def find_chromium() -> str | None:
    """Debian's chromium (or ``$RESNET_COURSE_CHROMIUM``), if installed."""
    for candidate in (
        os.environ.get("RESNET_COURSE_CHROMIUM"),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser tests need the playwright package (pip install playwright)"
    if find_chromium() is None:
        return (
            "the browser tests need Chromium: apt-get install chromium (or set "
            "RESNET_COURSE_CHROMIUM to a Chromium binary)"
        )
    return None


SKIP_REASON = _skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]
if SKIP_REASON:
    print(f"\ntests/test_browser.py skipped: {SKIP_REASON}", file=sys.stderr)


def selected_notebooks() -> list[str]:
    choice = os.environ.get("RESNET_COURSE_BROWSER_NOTEBOOKS", "").strip()
    if choice == "all":
        return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    if choice:
        return [name.strip() for name in choice.split(",") if name.strip()]
    return list(DEFAULT_NOTEBOOKS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """End the server and its kernels (its own process group), politely first."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def copy_finished_comparison_runs() -> list[str]:
    """Notebook 06's optimiser comparison (``resnet50-<optimiser>-<epochs>ep``), where nbval has
    already trained it in fast mode (``pytest`` runs the notebooks before ``tests/``), is copied
    into the browser's run folder so it loads instead of training a second time; the main
    ``resnet50`` run still trains in the browser, so its progress bars are seen."""
    trained = Path(os.environ.get("RESNET_COURSE_RUNS") or REPO_ROOT / "runs") / "fast"
    copied = []
    for run in sorted(trained.glob("resnet50-*")):
        if (run / "checkpoint.pt").is_file():
            shutil.copytree(run, RUNS / "fast" / run.name)
            copied.append(run.name)
    return copied


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running ``jupyter lab`` serving copies of the notebooks: ``(base url, token)``."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.rmtree(RUNS, ignore_errors=True)
    copy_finished_comparison_runs()
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        {
            "RESNET_COURSE_FAST": "1",
            "RESNET_COURSE_RUNS": str(RUNS),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "JUPYTER_CONFIG_DIR": str(root / "config"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2"),
        }
    )
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    # no "Would you like to receive Jupyter news?" toast over the notebook
    news = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    log_path = root / "jupyter-lab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"

    def interrupted(signum, frame):  # a CI timeout's SIGTERM: still stop the server and kernels
        raise KeyboardInterrupt(f"signal {signum}")

    previous_handler = signal.signal(signal.SIGTERM, interrupted)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer within {SERVER_START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base, token
    finally:
        _stop(process)
        signal.signal(signal.SIGTERM, previous_handler)
        shutil.rmtree(RUNS, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root, as CI containers do
        chromium = playwright.chromium.launch(
            executable_path=find_chromium(), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


# JavaScript run in the page, reading JupyterLab's own models (window.jupyterapp, exposed by
# --LabApp.expose_app_in_browser).
KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return !!(kernel && kernel.status === 'idle' && panel.content.widgets.length);
}"""
RUN_FINISHED = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const code = panel.content.widgets.filter(cell => cell.model.type === 'code');
  const queued = code.some(cell => (cell.promptNode && cell.promptNode.textContent || '').includes('*'));
  const failed = code.some(cell => cell.model.toJSON().outputs.some(o => o.output_type === 'error'));
  const last = code[code.length - 1];
  return !!kernel && kernel.status === 'idle' && !queued && (failed || last.model.executionCount !== null);
}"""
CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets.map(cell => {
  const data = cell.model.toJSON();
  const count = data.execution_count === undefined ? null : data.execution_count;
  return {type: data.cell_type, source: data.source, count: count,
          outputs: (data.outputs || []).map(o => ({type: o.output_type, name: o.name || '', ename: o.ename || '',
                   evalue: o.evalue || '', mimes: Object.keys(o.data || {}),
                   text: Array.isArray(o.text) ? o.text.join('') : (o.text || '')}))};
})"""

SCROLL_TO_FIRST_ERROR = """() => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const cell = notebook.widgets.find(c => c.model.type === 'code'
                                      && c.model.toJSON().outputs.some(o => o.output_type === 'error'));
  if (cell) { notebook.scrollToCell(cell, 'center'); }
}"""

#: What tqdm's text fallback leaves in an output ("epoch 1/1:  40%|████      | 23/57 [...]"),
#: and what it prints when it cannot make a widget.
TEXT_PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|IProgress not found|it/s\]|batch/s\]")


def run_all_cells(page, base: str, token: str, notebook: str) -> list[dict]:
    """Open ``notebook`` in JupyterLab, run all its cells and return its cells as JupyterLab holds them."""
    # a workspace of its own: JupyterLab would otherwise reopen (and start kernels for) the
    # notebooks the previous tests opened
    workspace = notebook.removesuffix(".ipynb")
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/notebooks/{notebook}?token={token}")
    page.wait_for_function(KERNEL_IDLE, timeout=SERVER_START_TIMEOUT * 1000, polling=500)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(RUN_FINISHED, timeout=RUN_TIMEOUT * 1000, polling=1000)
    return page.evaluate(CELLS)


def check(condition: bool, page, name: str, message: str) -> None:
    """Assert ``condition``; on failure save a screenshot and name it in the message."""
    if not condition:
        path = screenshot(page, name)
        pytest.fail(f"{message}\n(screenshot: {path})", pytrace=False)


def wait_until(condition, page, name: str, message: str, timeout: float = 60) -> None:
    """Poll ``condition`` (the page re-renders widgets, so elements are looked up afresh each time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            check(False, page, name, message)
        page.wait_for_timeout(250)


def errors_in(cells: list[dict]) -> list[str]:
    found = []
    for i, cell in enumerate(cells):
        for output in cell["outputs"]:
            if output["type"] == "error":
                found.append(f"cell {i}: {output['ename']}: {output['evalue']}")
    return found


def widget_failures(page) -> list[str]:
    """Texts JupyterLab shows where a widget cannot be displayed."""
    text = page.locator(".jp-OutputArea").all_inner_texts()
    bad = ("Error displaying widget", "Failed to load model class", "Model not found")
    return [line for block in text for line in block.splitlines() if any(b in line for b in bad)]


def _shut_down_kernels(base: str, token: str) -> None:
    """End every kernel session of the server (its REST API), so the next notebook has the CPU."""
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as reply:
        sessions = json.load(reply)
    for session in sessions:
        request = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()
    _shut_down_kernels(*lab)


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


def _explorer_state(explorer) -> tuple[str, str]:
    """(the drawing's image source, the table's text) of the explorer widget."""
    return explorer.locator("img").first.get_attribute("src") or "", explorer.locator("table").inner_text()


def check_shape_explorer(page, cells) -> None:
    """The explorer draws, and a new input size or model changes both the drawing and the table."""
    explorer = (
        page.locator(".widget-vbox").filter(has=page.locator(".widget-dropdown")).filter(has=page.locator("img")).first
    )
    explorer.scroll_into_view_if_needed(timeout=30_000)
    image = explorer.locator("img").first
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=30_000)
    box = image.bounding_box()
    check(
        box is not None and box["width"] > 300 and box["height"] > 100,
        page,
        "explorer",
        f"the explorer's drawing is not visible (its box: {box})",
    )
    src_224, table_224 = _explorer_state(explorer)
    check(
        "2048×7×7" in table_224,
        page,
        "explorer",
        f"the explorer's table does not show ResNet-50 at 224 px: {table_224[:200]!r}",
    )
    explorer.screenshot(path=str(_artifact("explorer-224")))

    # a new input size, typed into the slider's readout as a student can
    readout = explorer.locator(".widget-readout").first
    readout.fill("320")
    readout.press("Enter")
    wait_until(
        lambda: "320×320" in explorer.locator(".widget-html").last.inner_text(),
        page,
        "explorer",
        "the explorer did not show 320 px after the size was typed into the slider",
    )
    src_320, table_320 = _explorer_state(explorer)
    check("2048×10×10" in table_320, page, "explorer", f"the table did not follow the size: {table_320[:200]!r}")
    check(src_320 != src_224, page, "explorer", "the drawing did not change with the input size")
    explorer.screenshot(path=str(_artifact("explorer-320")))

    # another model, chosen in the dropdown
    explorer.locator("select").first.select_option(label="ResNet-18 (v1 only)")
    wait_until(
        lambda: "resnet18" in explorer.locator("table").first.inner_text(),
        page,
        "explorer",
        "the explorer did not show ResNet-18 after it was chosen",
    )
    src_18, table_18 = _explorer_state(explorer)
    check("512×10×10" in table_18, page, "explorer", f"the table did not follow the model: {table_18[:200]!r}")
    check(src_18 not in (src_224, src_320), page, "explorer", "the drawing did not change with the model")
    explorer.screenshot(path=str(_artifact("explorer-resnet18-320")))


def check_progress_bars(page, cells) -> None:
    """Training shows tqdm's progress bars as widgets (a bar), never as lines of text."""
    training = [c for c in cells if c["type"] == "code" and "train_or_load(" in "".join(c["source"])]
    check(bool(training), page, "progress", "no training cell found")
    widgets = [o for c in training for o in c["outputs"] if "application/vnd.jupyter.widget-view+json" in o["mimes"]]
    debris = [o["text"][:120] for c in training for o in c["outputs"] if TEXT_PROGRESS.search(o["text"])]
    check(len(widgets) >= 1, page, "progress", "the training cells show no progress-bar widget")
    check(not debris, page, "progress", f"progress bars as text: {debris}")
    bars = page.locator(".jp-OutputArea .widget-hprogress, .jp-OutputArea .widget-progress")
    bars.first.scroll_into_view_if_needed(timeout=30_000)
    check(bars.count() >= 1 and bars.first.is_visible(), page, "progress", "no progress bar is drawn in the page")
    screenshot(page, "progress-bars")


#: Checks beyond "no error" for particular notebooks.
EXTRA_CHECKS = {"03_bottleneck.ipynb": check_shape_explorer, "06_train_resnet50.ipynb": check_progress_bars}


@pytest.mark.parametrize("notebook", selected_notebooks())
def test_notebook_in_jupyterlab(page, lab, notebook):
    base, token = lab
    name = notebook.removesuffix(".ipynb")
    start = time.monotonic()
    try:
        cells = run_all_cells(page, base, token, notebook)
    except Exception as error:  # a timeout: show what the page looked like
        pytest.fail(f"{notebook}: {error}\n(screenshot: {screenshot(page, name)})", pytrace=False)
    errors = errors_in(cells)
    if errors:  # show the first failing cell in the screenshot
        page.evaluate(SCROLL_TO_FIRST_ERROR)
        page.wait_for_timeout(1000)
    check(not errors, page, name, f"{notebook} shows errors in JupyterLab: {errors}")
    code = [c for c in cells if c["type"] == "code"]
    check(all(c["count"] is not None for c in code), page, name, f"{notebook}: not every cell ran")
    failures = widget_failures(page)
    check(not failures, page, name, f"{notebook}: widgets failed to display: {failures}")
    print(f"{notebook}: {len(code)} code cells ran in JupyterLab in {time.monotonic() - start:.0f} s")
    if notebook in EXTRA_CHECKS:
        EXTRA_CHECKS[notebook](page, cells)
