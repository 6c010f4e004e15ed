"""`make mlflow` serves the MLflow UI on 127.0.0.1; headless Chromium (Playwright driving
/usr/bin/chromium) shows the training run on the experiment page and the `champion` alias on
the registered model's page. Screenshots land in test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ARTIFACTS, ROOT, free_port

from pyroblur.manifests import Gate
from pyroblur.registry import tracking
from pyroblur.registry.store import Candidate, promote_if_better

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESULTS = (
    "epoch,time,train/box_loss,metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss\n"
    "1,3.0,2.5,0.10,0.05,2.9\n2,6.0,2.1,0.25,0.12,2.4\n3,9.0,1.8,0.41,0.22,2.0\n"
)


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A data root whose MLflow store holds one training run, registered and champion."""
    root = tmp_path_factory.mktemp("mlflow-ui") / "data"
    run_dir = root / "runs" / "r1"
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "results.csv").write_text(RESULTS)
    weights = run_dir / "weights" / "best.pt"
    weights.write_bytes(b"ui test weights")
    model_id = __import__("hashlib").sha256(weights.read_bytes()).hexdigest()[:16]
    run_id = tracking.log_training(root, model_id, run_dir, weights, {"train.epochs": "3", "train.imgsz": "320"})
    tracking.log_benchmark(root, model_id, {"face/map50": 0.41, "ms_per_image": 12.0}, {}, run_dir / "none")
    gate = Gate(name="recall_floor:face", value=0.93, threshold=0.9, passed=True, detail="face coverage 0.93 >= 0.9")
    decision = promote_if_better(
        root / "registry.json", Candidate(weights=weights, metrics={"map50_95": 0.22}), "map50_95", gates=[gate]
    )
    assert decision.promoted
    store = tracking.store_for(root)
    return {
        "root": str(root),
        "run_id": run_id,
        "run_name": f"train-{model_id}",
        "experiment": tracking.experiment_id(store),
    }


@pytest.fixture(scope="module")
def ui(record: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PYROBLUR_DATA_DIR": record["root"], "MLFLOW_PORT": str(port)}
    log = (Path(record["root"]) / "mlflow-ui.log").open("w")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "mlflow"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, Path(log.name).read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)  # polling for the server to listen, bounded by the deadline
        else:
            pytest.fail(f"make mlflow did not answer on {url}: {Path(log.name).read_text()[-3000:]}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def screenshot(url: str, expect: str, shot: Path) -> str:
    """Open ``url`` in headless Chromium, wait until ``expect`` is on the page, screenshot it."""
    from playwright.sync_api import sync_playwright

    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            # the UI polls its API, so "network idle" never comes: the expected text is the signal
            page.get_by_text(expect, exact=False).first.wait_for(state="visible", timeout=90_000)
            page.screenshot(path=str(shot), full_page=True)
            return page.content()
        finally:
            browser.close()


def test_server_binds_localhost_only(ui: str) -> None:
    assert ui.startswith("http://127.0.0.1:")
    assert requests.get(f"{ui}/health", timeout=5).text.strip() == "OK"


def test_experiment_page_shows_the_training_run(ui: str, record: dict[str, str]) -> None:
    shot = ARTIFACTS / "mlflow-ui-experiment.png"
    html = screenshot(f"{ui}/#/experiments/{record['experiment']}/runs", record["run_name"], shot)
    assert record["run_name"] in html and shot.stat().st_size > 10_000


def test_model_page_shows_the_champion_alias(ui: str) -> None:
    shot = ARTIFACTS / "mlflow-ui-model.png"
    html = screenshot(f"{ui}/#/models/{tracking.MODEL_NAME}", "champion", shot)
    assert "champion" in html and shot.stat().st_size > 10_000
