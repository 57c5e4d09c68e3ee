"""The notebooks in a real browser: JupyterLab from the project's environment, driven by Debian's Chromium
through Playwright (it never downloads a browser).

Notebooks 00, 02 and 04, prepared with ``notebooks/params/ci.yaml``, are run through the UI (Run > Run All
Cells) with the settings ``make lab`` uses; then: no error outputs, no JavaScript errors, the tqdm bar, the live
plot and the attention explorer render as widgets and images (never ``HBox(...)`` text), the explorer's controls
redraw its image, and after a save and a reload it is live again. Screenshots go to ``runs/browser-test/``
(``$TSF_BROWSER_SHOTS``), with the server's log; they are kept, failed or not.

Needs ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and ``playwright`` (the dev extras);
skipped without them, except under CI (``CI=true``), where the test must run.
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

from tsf import run as tsf_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CI_PARAMS = NOTEBOOKS / "params" / "ci.yaml"
SETTINGS = ROOT / ".jupyterlab"  # make lab's JupyterLab defaults (overrides.json)
SHOTS = Path(os.environ.get("TSF_BROWSER_SHOTS") or ROOT / "runs" / "browser-test")
PREFIX = "_prepared_browser_"  # git-ignored, like every notebooks/_prepared_*
RUN_TIMEOUT_S = 300  # one notebook's Run All; ~20-40 s each on 2 busy CPU cores
REDRAW_TIMEOUT_S = 30  # the explorer redraws in ~1-3 s
WIDGET_TEXT_DEFECTS = ("HBox(", "VBox(", "IntProgress(", "FloatProgress(", "Error displaying widget",
                       "IProgress not found", "Widget Javascript not detected", "Loading widget...")


def chromium() -> str:
    """Debian's chromium, else a skip (a failure under CI) that says how to get it."""
    hint = ("the browser test needs Playwright (pip install playwright; in the dev extras) and Debian's Chromium "
            "(apt-get install chromium, as root; .ci/run does it), or TSF_CHROMIUM=/path/to/chrome; "
            "no `playwright install` is needed")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "playwright is not installed"
    else:
        found = os.environ.get("TSF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        if found:
            return found
        missing = "no chromium on PATH"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing}: {hint}")
    pytest.skip(f"{missing}: {hint}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_flags() -> list[str]:
    """What ``make lab`` passes (checked against the Makefile by ``test_make_lab_uses_the_project_settings``)."""
    return [f"--LabApp.app_settings_dir={SETTINGS}", *(["--allow-root"] if os.geteuid() == 0 else [])]


class Lab:
    """A JupyterLab server this test started, and a Chromium page on it."""

    def __init__(self, base: str, token: str, page, shots: Path):
        self.base, self.token, self.page, self.shots = base, token, page, shots
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        page.set_default_timeout(60_000)  # a busy CI machine
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.base}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shot(self, name: str, element=None) -> Path:
        path = self.shots / f"{name}.png"
        if element is not None:  # cells off screen are laid out when scrolled to (content-visibility): let them settle
            element.scroll_into_view_if_needed()
            self.page.wait_for_timeout(500)
        (element or self.page).screenshot(path=str(path))
        return path

    def open(self, notebook: Path) -> None:
        """Open ``notebook`` alone (the workspace reset) and wait for its kernel."""
        self.page.goto(f"{self.base}/lab/tree/{notebook.name}?reset&token={self.token}")
        self.panel().locator(".jp-Cell").first.wait_for(timeout=120_000)
        deadline = time.monotonic() + 120
        while not any(s["path"] == notebook.name and s["kernel"]["execution_state"] == "idle"
                      for s in self.api("/api/sessions")):
            assert time.monotonic() < deadline, f"no idle kernel for {notebook.name} in 120 s"
            time.sleep(0.5)
        self.page.wait_for_function(
            "() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')"
            "?.dataset.status === 'idle'", timeout=120_000)

    def panel(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def cell(self, notebook: Path, marker: str):
        """The cell of ``notebook`` whose source contains ``marker`` (its index, read from the file)."""
        cells = json.loads(notebook.read_text())["cells"]
        index = next(i for i, cell in enumerate(cells) if marker in "".join(cell["source"]))
        return self.panel().locator(".jp-Notebook .jp-Cell").nth(index)

    def run_all(self, timeout_s: float = RUN_TIMEOUT_S) -> float:
        """Run > Run All Cells, as a user does; returns the seconds until every cell has run or one failed."""
        start = time.monotonic()
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        state = ("() => { const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');"
                 " const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                 ".map(p => p.textContent.trim());"
                 " const status = panel.querySelector('.jp-Notebook-ExecutionIndicator').dataset.status;"
                 " return {prompts, status}; }")
        settled, started = 0, False
        while time.monotonic() - start < timeout_s:
            dialog = self.page.locator(".jp-Dialog")
            if dialog.count():  # e.g. "Select Kernel" had the kernel not been ready: the default is right
                self.shot("dialog")
                dialog.locator(".jp-mod-accept").click()
            now = self.page.evaluate(state)
            running = any("*" in p for p in now["prompts"])
            started = started or running or any(re.search(r"\d", p) for p in now["prompts"])
            settled = settled + 1 if started and not running and now["status"] == "idle" else 0
            if settled >= 3:
                return time.monotonic() - start
            time.sleep(0.5)
        self.shot("timeout")
        raise AssertionError(f"Run All did not finish in {timeout_s} s: prompts {now['prompts']}, kernel {now['status']}")

    def save(self, notebook: Path) -> dict:
        """File > Save (Ctrl+S); the saved notebook, read from disk."""
        self.page.keyboard.press("Control+s")
        self.page.wait_for_function(
            "() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')", timeout=30_000)
        return json.loads(notebook.read_text())

    def shut_down_kernels(self) -> None:
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def text_defects(self) -> list[str]:
        """Widgets drawn as text, figures as ``<Figure size ...>`` text (no image formatter), broken images."""
        text = self.panel().locator(".jp-OutputArea").all_inner_texts()
        defects = [defect for defect in (*WIDGET_TEXT_DEFECTS, "<Figure size") if any(defect in t for t in text)]
        broken = self.panel().locator(".jp-OutputArea img").evaluate_all(
            "images => images.filter(i => i.complete && i.naturalWidth === 0).length")
        return defects + ([f"{broken} broken image(s)"] if broken else [])


def errors_in(saved: dict) -> list[str]:
    return [f"{output['ename']}: {output['evalue']}" for cell in saved["cells"] if cell["cell_type"] == "code"
            for output in cell["outputs"] if output["output_type"] == "error"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in [*SHOTS.glob("*.png"), *SHOTS.glob("*.log")]:
        old.unlink()
    print(f"\nbrowser test screenshots: {SHOTS}")
    home = tmp_path_factory.mktemp("jupyter")
    env = {key: value for key, value in os.environ.items() if key not in ("MPLBACKEND", "JUPYTER_PATH")}
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                 "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):  # throwaway: nothing of the user's, nothing left
        env[name] = str(home / name.lower())
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", *lab_flags(), f"--ServerApp.root_dir={NOTEBOOKS}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}",
               # never a request to the internet, whatever the settings
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = (SHOTS / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, cwd=NOTEBOOKS, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise AssertionError(f"JupyterLab exited ({server.returncode}): "
                                     f"{(SHOTS / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not answer on {base} in 90 s") from None
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                yield Lab(base, token, page, SHOTS)
            finally:
                browser.close()
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=10).close()
            server.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if server.poll() is None:  # the process group this test started: the server and its kernels
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
        for prepared in [*NOTEBOOKS.glob(PREFIX + "*.ipynb"), *(NOTEBOOKS / ".ipynb_checkpoints").glob(PREFIX + "*")]:
            prepared.unlink(missing_ok=True)


def prepared(notebooks: list[str], run_dir: Path) -> list[Path]:
    return tsf_run.prepare([NOTEBOOKS / f"{name}.ipynb" for name in notebooks], run_dir, CI_PARAMS, prefix=PREFIX)


def test_make_lab_uses_the_project_settings():
    """``make lab`` and this test start JupyterLab alike; the settings keep the news popup away."""
    recipe = (ROOT / "Makefile").read_text()
    assert "--LabApp.app_settings_dir=$(CURDIR)/.jupyterlab" in recipe and "jupyter lab $(LAB_FLAGS) notebooks/" in recipe
    notification = json.loads((SETTINGS / "overrides.json").read_text())["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}


def test_00_quickstart_runs_top_to_bottom(lab, tmp_path):
    """A fresh clone: no run folder yet, so the quickstart loads the fixture checkpoint."""
    (notebook,) = prepared(["00_quickstart"], tmp_path / "fresh")
    lab.open(notebook)
    seconds = lab.run_all()
    saved = lab.save(notebook)
    lab.shot("00_quickstart_end")
    lab.shot("00_video_frames", lab.cell(notebook, "00_video_frames.png"))
    lab.shot("00_prediction", lab.cell(notebook, "00_prediction.png"))
    lab.shut_down_kernels()
    assert not errors_in(saved), errors_in(saved)
    assert all(c["execution_count"] for c in saved["cells"] if c["cell_type"] == "code"), "every cell ran"
    assert not lab.text_defects() and not lab.page_errors, (lab.text_defects(), lab.page_errors)
    print(f"00_quickstart: Run All {seconds:.0f} s")


@pytest.fixture(scope="module")
def trained(lab, tmp_path_factory):
    """Notebook 02 run through the UI into a run folder (04 reads its best.pt)."""
    run_dir = tmp_path_factory.mktemp("browser_run")
    notebook_02, notebook_04 = prepared(["02_train", "04_attention_maps"], run_dir)
    lab.open(notebook_02)
    seconds = lab.run_all()
    saved = lab.save(notebook_02)
    training = lab.cell(notebook_02, "LivePlot(")
    training.scroll_into_view_if_needed()
    lab.shot("02_train_view")
    lab.shot("02_train_outputs", training.locator(".jp-Cell-outputWrapper"))
    facts = {
        "seconds": seconds, "saved": saved, "defects": lab.text_defects(),
        "progress_bars": training.locator(".widget-hprogress").count(),
        "plots": training.locator(".jp-OutputArea-output img").evaluate_all(
            "images => images.map(i => [i.naturalWidth, i.naturalHeight])"),
    }
    lab.shut_down_kernels()
    return run_dir, notebook_04, facts


def test_02_train_progress_bar_and_live_plot(lab, trained):
    run_dir, _, facts = trained
    assert not errors_in(facts["saved"]), errors_in(facts["saved"])
    assert not facts["defects"], f"widgets drawn as text: {facts['defects']} (see {SHOTS})"
    assert facts["progress_bars"] >= 1, f"the tqdm bar is not a widget (see {SHOTS / '02_train_outputs.png'})"
    assert facts["plots"] and all(w > 100 and h > 100 for w, h in facts["plots"]), facts["plots"]
    assert (run_dir / "best.pt").is_file() and (run_dir / "02_curves.png").is_file()
    assert not lab.page_errors, lab.page_errors
    print(f"02_train: Run All {facts['seconds']:.0f} s")


def control(explorer, kind: str, label: str):
    return explorer.locator(f".widget-{kind}").filter(has=explorer.page.locator(f"label.widget-label:text-is('{label}')"))


def changes_the_image(lab, explorer, action, name: str) -> None:
    """``action`` redraws the explorer's image (a new PNG from the kernel), screenshot ``name``."""
    image = explorer.locator("img.widget-image")
    before = image.get_attribute("src")
    action()
    lab.page.wait_for_function("([img, old]) => img.src !== old && img.naturalWidth > 0",
                               arg=[image.element_handle(), before], timeout=REDRAW_TIMEOUT_S * 1000)
    lab.shot(f"04_explorer_{name}", explorer)


def test_04_explorer_is_live(lab, trained):
    _, notebook, _ = trained
    lab.open(notebook)
    seconds = lab.run_all()
    saved = lab.save(notebook)
    assert not errors_in(saved), errors_in(saved)
    lab.shot("04_end")
    for marker in ("04_space_blocks.png", "04_time_start_patch.png", "04_patch_rollout.png"):  # a figure each
        lab.shot(marker[:-4], lab.cell(notebook, marker).locator(".jp-OutputArea-output img").first)
    explorer = lab.cell(notebook, "viz.attention_explorer(").locator(".jp-OutputArea-output").last
    explorer.locator("img.widget-image").wait_for(timeout=60_000)
    explorer.scroll_into_view_if_needed()
    lab.shot("04_explorer_view")
    lab.shot("04_explorer_start", explorer)
    assert not lab.text_defects(), f"widgets drawn as text: {lab.text_defects()} (see {SHOTS})"
    assert explorer.locator(".widget-dropdown select").count() == 3
    assert explorer.locator(".widget-slider").count() == 4
    cut = explorer.locator("label.widget-label:visible").evaluate_all(
        "labels => labels.filter(l => l.scrollWidth > l.clientWidth).map(l => l.textContent)")
    assert not cut, f"labels cut short: {cut}"
    assert not explorer.locator('label.widget-label[title="null"]:visible').count(), "a label's tooltip reads null"

    def slide(label: str, key: str):
        def action():
            control(explorer, "slider", label).locator(".noUi-handle").focus()
            lab.page.keyboard.press(key)
        return action

    def choose(label: str, value: str):
        return lambda: control(explorer, "dropdown", label).locator("select").select_option(value)

    changes_the_image(lab, explorer, slide("block", "ArrowLeft"), "block")
    changes_the_image(lab, explorer, choose("map", "rollout"), "rollout")
    changes_the_image(lab, explorer, choose("map", "patch"), "patch")
    changes_the_image(lab, explorer, slide("patch col", "ArrowRight"), "patch_col")
    videos = control(explorer, "dropdown", "video").locator("option").all_inner_texts()
    changes_the_image(lab, explorer, choose("video", videos[-1]), "video")

    # saved and reloaded, the explorer comes back live from the running kernel
    lab.save(notebook)
    lab.page.reload()
    explorer = lab.cell(notebook, "viz.attention_explorer(").locator(".jp-OutputArea-output").last
    explorer.locator("img.widget-image").wait_for(timeout=60_000)
    changes_the_image(lab, explorer, slide("block", "ArrowLeft"), "after_reload")
    assert not lab.text_defects(), lab.text_defects()
    lab.shut_down_kernels()
    (SHOTS / "console-errors.log").write_text("".join(f"{line}\n" for line in lab.console_errors))
    assert not lab.page_errors and not lab.console_errors, (lab.page_errors, lab.console_errors)
    print(f"04_attention_maps: Run All {seconds:.0f} s")
