"""Notebook 07 in JupyterLab, in a real browser: the explorer renders, searches and captions.

The test starts JupyterLab on localhost (its own token, settings and runtime folders in a temp
folder), opens a copy of notebook 07 prepared by papermill with ``profile="smoke"`` in headless
Chromium (Debian's ``chromium``, driven by Playwright; Playwright's own browsers are never
downloaded), runs all cells from the Run menu, types a query into the explorer's text box, and
checks that the result cards show thumbnails and that a pair's captions appear. The screenshot is
``runs/browser/notebook07.png``.

Without Chromium or Playwright it skips, except in CI (``CI=true``), where it fails: there it
is the only test of the notebooks as readers meet them. ``RSCC_CHROMIUM`` names another
Chromium binary; ``RSCC_BROWSER_TIMEOUT`` the seconds allowed for running the notebook (the
smoke training of notebook 03's main run happens here when it is not in ``runs/smoke`` yet)."""
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

from rscc.paths import REPO_ROOT

pytestmark = pytest.mark.slow

NOTEBOOK = REPO_ROOT / "notebooks" / "07_change_explorer.ipynb"
SCREENSHOT = REPO_ROOT / "runs" / "browser" / "notebook07.png"
QUERY = "a road is built"
RUN_TIMEOUT_S = float(os.environ.get("RSCC_BROWSER_TIMEOUT", 1200))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# JupyterLab settings for a test: the notebook's kernel starts without a "Select Kernel" dialog,
# every cell is attached to the page (no windowing, so each output can be found), no news or
# update checks (no network, no toast over the notebook).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True,
                                                                   "windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def _unavailable(reason: str):
    """Skip on a user's machine; fail in CI, where the browser is part of the test environment."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason} (.ci/run installs it with apt-get install -y chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("RSCC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        _unavailable(f"no Chromium at {path} (Debian: apt-get install chromium; or set RSCC_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _smoke_copy(folder: Path) -> Path:
    """Notebook 07 with papermill's parameter cell for the smoke profile and no outputs (so every
    execution count on the page comes from this run)."""
    import nbformat
    import papermill as pm

    target = folder / NOTEBOOK.name
    pm.execute_notebook(str(NOTEBOOK), str(target), parameters={"profile": "smoke"}, prepare_only=True,
                        kernel_name="python3", progress_bar=False)
    notebook = nbformat.read(target, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, target)
    return target


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temp folder that holds the smoke copy of
    notebook 07; yields (url of that notebook, server log); the server and its kernels are shut
    down however the test ends."""
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    notebook = _smoke_copy(notebooks)
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = home / "jupyter.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}",
           "--ServerApp.terminals_enabled=False", *(["--allow-root"] if os.geteuid() == 0 else [])]  # CI runs as root
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=notebooks,
                                  start_new_session=True)  # its own process group: kernels go with it
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer on {base} in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"{base}/lab/tree/{notebook.name}?token={token}", log
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM lets jupyter shut its kernels down; whatever of the group is left then is killed."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=10)


def _cell_errors(page) -> list[str]:
    """The text of every error output (JupyterLab shows a traceback as stderr) in the notebook."""
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return [text for text in stderr.all_inner_texts() if "Traceback (most recent call last)" in text]


def _no_dialog(page) -> None:
    """A modal dialog (kernel choice, kernel died) would block every click: accept the preferred
    kernel if asked for one, fail on anything else."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        text = dialog.first.inner_text()
        if "Select Kernel" not in text:
            pytest.fail(f"JupyterLab shows a dialog: {text!r}")
        dialog.first.locator("button.jp-mod-accept").click()
        dialog.first.wait_for(state="detached", timeout=30_000)


def _started(page) -> bool:
    """Some cell is queued, running or has run."""
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    return any(re.fullmatch(r"\[(\*|\d+)\]:", text.strip()) for text in prompts)


def _run_all_cells(page) -> None:
    """Run > Run All Cells, as a reader would; again if a click was lost while the page was busy."""
    for _ in range(3):
        _no_dialog(page)
        page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})  # the notebook has the focus
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        item = page.locator(".lm-Menu-itemLabel:visible").filter(has_text=re.compile(r"^Run All Cells$")).first
        item.wait_for(timeout=10_000)
        item.click()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _started(page):
                return
            page.wait_for_timeout(500)
        page.keyboard.press("Escape")  # a menu left open
    pytest.fail("Run > Run All Cells started nothing (3 tries)")


def test_notebook_07_explorer_searches_and_captions_in_jupyterlab(chromium, lab):
    from playwright.sync_api import sync_playwright

    url, log = lab
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            try:
                _drive(page, url, log)
            finally:
                page.screenshot(path=str(SCREENSHOT), full_page=False)
        finally:
            browser.close()


def _drive(page, url: str, log: Path) -> None:
    page.goto(url, timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    # the kernel has started when the toolbar's indicator says idle
    indicator = page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator").first
    deadline = time.monotonic() + 120
    while indicator.get_attribute("data-status") != "idle" or page.locator(".jp-Dialog").count():
        _no_dialog(page)
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel did not start in 120 s; server log:\n{log.read_text()[-2000:]}")
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)
    _no_dialog(page)

    start = time.monotonic()
    _run_all_cells(page)

    # the notebook has run when the last code cell shows its execution count and the kernel is idle
    last_prompt = page.locator(".jp-CodeCell .jp-InputArea-prompt").last
    deadline = start + RUN_TIMEOUT_S
    while True:
        _no_dialog(page)
        if _cell_errors(page):
            pytest.fail("notebook 07 failed in JupyterLab:\n" + "\n".join(_cell_errors(page))[-4000:])
        prompt = last_prompt.inner_text().strip()
        if not _started(page):
            pytest.fail(f"nothing is queued or running and the last cell has not run (prompt {prompt!r})")
        if prompt not in {"", "[ ]:", "[*]:"} and indicator.get_attribute("data-status") == "idle":
            break
        if time.monotonic() > deadline:
            pytest.fail(f"notebook 07 still running after {RUN_TIMEOUT_S:.0f} s (last prompt {prompt!r}); "
                        f"server log:\n{log.read_text()[-2000:]}")
        page.wait_for_timeout(1000)
    print(f"\nnotebook 07 (smoke) ran in JupyterLab in {time.monotonic() - start:.0f} s")

    # the explorer: the query box, the status line, the grid of cards, the selected pair's captions
    query_box = "input[placeholder^='describe a change']"  # ChangeExplorer.widget's query Text
    explorer = page.locator(".jp-OutputArea .widget-vbox").filter(has=page.locator(query_box)).first
    explorer.wait_for(timeout=60_000)
    explorer.scroll_into_view_if_needed()
    query = explorer.locator(query_box)
    query.fill(QUERY)
    query.press("Enter")  # continuous_update=False: the value reaches the kernel on Enter

    status = explorer.locator(".widget-html", has_text=f"for “{QUERY}”").first
    status.wait_for(timeout=60_000)
    count = int(status.inner_text().split()[0])
    assert count >= 1, status.inner_text()

    # every card rendered with its thumbnail decoded (the grid is filled just before the status)
    grid = explorer.locator(".widget-gridbox").first
    page.wait_for_function(
        """([grid, n]) => {
            const cards = grid.querySelectorAll(':scope > .widget-vbox');
            const imgs = [...grid.querySelectorAll('img')];
            return cards.length === n && imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", arg=[grid.element_handle(), count], timeout=60_000)
    cards = grid.locator(":scope > .widget-vbox")
    thumbnails = grid.locator("img")
    sizes = thumbnails.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert all(w > h > 0 for w, h in sizes), sizes  # before | after side by side: wider than tall

    # a card's button: its pair's captions replace those the notebook showed (the card of
    # another pair than the one shown, so that the change proves the click reached the kernel)
    detail = explorer.locator(".widget-html", has_text="greedy").filter(has=page.locator("table")).first
    shown = detail.locator("b").first.inner_text().strip() if detail.count() else None
    ids = [code.strip() for code in cards.locator("code").all_inner_texts()]
    chosen = next((i for i, pair_id in enumerate(ids) if pair_id != shown), 0)
    cards.nth(chosen).locator("button", has_text="captions & attention").click()
    page.wait_for_function(
        "([el, id]) => el.querySelector('b') && el.querySelector('b').textContent === id",
        arg=[detail.element_handle(timeout=30_000), ids[chosen]], timeout=60_000)
    rows = dict(detail.locator("tr").evaluate_all(
        "trs => trs.map(tr => [tr.querySelector('th').textContent, tr.querySelector('td').textContent])"))
    # the generated captions (a smoke-trained model may end at once: the page then says "(empty)")
    # and the pair's five reference captions from the dataset, all words
    assert list(rows) == ["greedy", "beam"] + [f"reference {i}" for i in range(1, 6)], rows
    assert all(rows[name].strip() for name in ("greedy", "beam")), rows
    assert all(rows[f"reference {i}"].strip() not in {"", "(empty)"} for i in range(1, 6)), rows
    print(f"pair {ids[chosen]}: greedy {rows['greedy']!r}, reference 1 {rows['reference 1']!r}")
    figure = explorer.locator("img.widget-image").last  # the attention figure under the captions
    assert figure.evaluate("i => i.naturalWidth") > 0
    assert not _cell_errors(page)
    # the screenshot: the query, the cards and the captions, once the kernel is idle again
    page.wait_for_function("el => el.getAttribute('data-status') === 'idle'", arg=indicator.element_handle(),
                           timeout=60_000)
    query.evaluate("el => el.scrollIntoView({block: 'start'})")
