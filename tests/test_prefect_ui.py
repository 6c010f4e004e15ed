"""The Prefect UI of the test server, in headless Chromium: the deployments and the completed
run are there. Screenshots land in test-artifacts/ (gitignored) for a person to look at."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from ops_stack import ARTIFACTS, Stack

pytest_plugins = ["ops_stack"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,900",
    "--virtual-time-budget=15000",
]


def chromium(url: str, *args: str, timeout: float = 90) -> str:
    """Run headless Chromium on ``url`` with a fresh profile; return stdout. Kills its group."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    return out


def page(url: str, shot: Path, expect: str = "") -> str:
    """Screenshot ``url`` to ``shot`` and return its rendered DOM.

    On a busy machine the single-page app may not have rendered ``expect`` within the virtual
    time budget: try again (three attempts).
    """
    shot.parent.mkdir(parents=True, exist_ok=True)
    dom = ""
    for _ in range(3):
        shot.unlink(missing_ok=True)
        chromium(url, f"--screenshot={shot}")
        dom = chromium(url, "--dump-dom")
        if expect in dom and shot.exists():
            break
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of {url}"
    return dom


@pytest.fixture(scope="module")
def ui(ops_stack: Stack) -> str:
    if CHROMIUM is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    return ops_stack.api.removesuffix("/api")


def test_ui_lists_the_deployments(ui: str, ops_stack: Stack, trained_run):
    dom = page(f"{ui}/deployments", ARTIFACTS / "prefect-ui-deployments.png", "retrain_weekly")
    for name in ("train", "train-stage", "retrain-weekly", "anonymize"):
        assert f">{name}<" in dom or f"{name}</" in dom, name
    assert "training_pipeline" in dom and "retrain_weekly" in dom


def test_ui_shows_the_completed_run(ui: str, ops_stack: Stack, trained_run):
    dom = page(f"{ui}/runs/flow-run/{trained_run['id']}", ARTIFACTS / "prefect-ui-train-run.png", trained_run["name"])
    assert trained_run["name"] in dom
    assert "Completed" in dom
    dom = page(f"{ui}/runs", ARTIFACTS / "prefect-ui-runs.png", trained_run["name"])
    assert trained_run["name"] in dom


def test_ui_run_form_of_train(ui: str, ops_stack: Stack):
    """The custom-run page renders the typed config as a form with its descriptions. In the
    default UI each source (an item of a list of a union) is a JSON editor; the V2 UI (/v2)
    renders each source as tabs, one per source kind (docs/operations.md)."""
    dep = ops_stack.deployments["train"]
    dom = page(f"{ui}/deployments/deployment/{dep}/run", ARTIFACTS / "prefect-ui-train-form.png", "Run name, used")
    assert "Run name, used in reports." in dom or "Datasets to download or generate." in dom
    dom = page(
        f"{ui}/v2/deployments/deployment/{dep}/run", ARTIFACTS / "prefect-ui-v2-train-form.png", "WiderFaceSource"
    )
    for kind in ("SyntheticSource", "WiderFaceSource", "HuggingFaceCocoSource", "LocalFolderSource"):
        assert kind in dom, kind
    assert 'role="tab"' in dom


def test_ui_schedule_of_retrain_weekly(ui: str, ops_stack: Stack):
    dep = ops_stack.deployments["retrain-weekly"]
    dom = page(f"{ui}/deployments/deployment/{dep}", ARTIFACTS / "prefect-ui-retrain-weekly.png", "retrain-weekly")
    assert "retrain-weekly" in dom
    assert "Monday" in dom or "0 3 * * 1" in dom
