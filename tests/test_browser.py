"""Notebook 06's demo in a real browser: JupyterLab under headless Chromium, driven by Playwright.

The test opens a copy of the notebook in JupyterLab (smoke mode, set in the server's environment),
runs every cell from the Run menu, picks another test image in the demo's dropdown and checks
that the widget's output redraws: the prediction line names the new image and the figure (input,
Grad-CAM heatmap, top-3 bars) is a new picture. It saves screenshots to its temporary folder, or
to ``LESIONLIB_SCREENSHOTS`` when set; never to the repository.

It needs Playwright for Python, a Chromium (Debian's ``chromium``; Playwright's own download is
not needed: ``CHROMIUM`` or the PATH names it) and JupyterLab; it skips, saying which is missing,
without them. Marked ``browser``; the main test run leaves it out (pyproject's addopts): run it
with ``python -m pytest -m browser``, as ``.ci/run`` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = (
    Path(__file__).resolve().parents[1] / "notebooks" / "06_evaluation_and_explainability.ipynb"
)
TOKEN = "lesion-course-browser-test"
NOTE = "not a medical device"
LAB_SETTINGS = {  # the user settings of the test's JupyterLab
    # no "Select Kernel" dialog: start the notebook's own kernel
    "docmanager-extension/plugin": {"autoStartDefaultKernel": True},
    # every cell in the page, not only those in view (JupyterLab 4 renders lazily by default)
    "notebook-extension/tracker": {"windowingMode": "none"},
    # no news or update toasts over the notebook
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def chromium_path() -> str:
    """The Chromium to drive: ``CHROMIUM``, else the first on the PATH; skips when none."""
    for candidate in (
        os.environ.get("CHROMIUM"),
        *map(shutil.which, ("chromium", "chromium-browser", "google-chrome")),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no Chromium: install Debian's chromium (apt-get install chromium) or set CHROMIUM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab server in smoke mode serving a copy of notebook 06; yields its base URL."""
    if subprocess.run(
        [sys.executable, "-m", "jupyterlab", "--version"], capture_output=True
    ).returncode:
        pytest.skip("JupyterLab is not installed (pip install jupyterlab)")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root)
    for plugin, settings in LAB_SETTINGS.items():
        path = tmp_path / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port = free_port()
    repo = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "LESIONLIB_SMOKE": "1",
        "LESIONLIB_CACHE": str(tmp_path_factory.getbasetemp() / "lesionlib-cache"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={TOKEN}",
            f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()}"
                    )
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def decoded_width(img) -> int:
    """The pixel width of a displayed <img> once the browser has decoded it (0: a broken one)."""
    return img.evaluate("async img => { await img.decode(); return img.naturalWidth; }")


def test_demo_redraws_in_jupyterlab_when_another_image_is_picked(jupyterlab: str, tmp_path: Path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
    )
    executable = chromium_path()
    shots = Path(os.environ.get("LESIONLIB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.set_default_timeout(60_000)
            page.goto(f"{jupyterlab}/lab/tree/{NOTEBOOK.name}?token={TOKEN}")
            page.locator(".jp-Notebook").first.wait_for()
            page.get_by_text(re.compile(r"\(ipykernel\) \| Idle")).wait_for()  # status bar

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            demo = page.locator(".widget-output", has_text=NOTE)  # the demo's Output widget
            demo.wait_for(timeout=300_000)  # every cell before it runs first
            picker = page.locator(".widget-dropdown select")
            options = picker.locator("option").all_inner_texts()
            assert len(options) >= 2, options
            first_id, second_id = options[0].split()[0], options[1].split()[0]
            demo.get_by_text(f"{first_id} (true class").wait_for()
            figure = demo.locator("img")
            before = figure.get_attribute("src")
            assert decoded_width(figure) > 0
            demo.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "06_demo_before.png"))

            picker.select_option(index=1)  # at once, as a student may: later cells still run
            demo.get_by_text(f"{second_id} (true class").wait_for()
            assert first_id not in demo.inner_text()
            # the text comes before the figure: wait for a new one, in place of the old
            sync_api.expect(figure).not_to_have_attribute("src", before or "", timeout=60_000)
            sync_api.expect(figure).to_have_count(1)
            after = figure.get_attribute("src")
            assert after and after.startswith("data:image/png") and after != before
            assert decoded_width(figure) > 0
            # A whole figure, not a half-drawn one: JupyterLab runs widget callbacks on a kernel
            # subshell, here while the cells after the demo still run, and a pyplot figure built
            # there was shown and closed half-drawn when such a cell ended (a PNG of a few KB).
            assert len(after) > len(before or "") / 2, "the redrawn figure is mostly blank"
            demo.scroll_into_view_if_needed()
            page.wait_for_timeout(500)  # let the page paint the decoded picture
            page.screenshot(path=str(shots / "06_demo_after.png"))
            demo.screenshot(path=str(shots / "06_demo_output.png"))
            # no cell raised (a traceback is rendered as stderr)
            stderr = page.locator(".jp-OutputArea-output[data-mime-type*='stderr']")
            assert not [t for t in stderr.all_inner_texts() if "Traceback" in t]
        except Exception:
            page.screenshot(path=str(shots / "06_failure.png"))
            raise
        finally:
            browser.close()
    print(f"screenshots in {shots}")
