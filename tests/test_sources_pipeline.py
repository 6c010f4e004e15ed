"""Real-layout sources through the pipeline's download stage (CLI -> Prefect flow -> task).

Integration: a real Prefect API server (conftest's ``prefect_server``). The stage indexes each
source once, content-addressed under ``<data>/indexes``; sources write no index of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import API
from http_fixtures import FileServer
from test_sources import KP_PATH, KP_REV, coco_zip, jpeg, serve_wider, write_coco2017
from test_sources_open_images import write_zoo_split
from test_sources_roboflow import KEY, FakeRoboflowApi
from tiny_config import BASE

from pyroblur.core.records import load_records

pytestmark = pytest.mark.integration


def run_download(
    tmp_path: Path, api: str, sources: list[dict], name: str, env: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    cfg = {**BASE, "name": name, "sources": sources}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = tmp_path / f"{name}-summary.json"
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "-c",
            str(path),
            "--until",
            "download",
            "--summary-json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PREFECT_API_URL": api, "YOLO_OFFLINE": "1", **(env or {})},
    )
    return proc, time.monotonic() - start


def last_task_runs(api: str) -> list[dict]:
    flows = API.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1}).json()
    body = {"flow_runs": {"id": {"any_": [flows[0]["id"]]}}}
    return API.post(f"{api}/task_runs/filter", json=body).json()


def test_download_stage_indexes_real_layouts_once(tmp_path: Path, prefect_server: str) -> None:
    write_coco2017(tmp_path / "coco")
    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    (yolo / "images" / "train" / "p.jpg").write_bytes(jpeg(60, 40))
    (yolo / "labels" / "train" / "p.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (yolo / "train.txt").write_text("./images/train/p.jpg\n")
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "data.yaml").write_text(
        yaml.safe_dump({"path": "../yolo", "train": "train.txt", "val": "train.txt", "names": ["plate"]})
    )
    root = Path(os.environ["PYROBLUR_DATA_DIR"])
    write_zoo_split(root / "raw" / "pl_oi" / "zoo")  # Open Images: the zoo's files already in place
    rev = "0123456789abcdef0123456789abcdef01234567"
    with FileServer() as srv, FakeRoboflowApi("yolov5pytorch") as rf_api:
        data = coco_zip({"car.jpg": (80, 60)}, [("car.jpg", 0, [10, 20, 30, 10])])
        srv.files[f"{KP_PATH}/train.zip"] = data
        for file_name, blob in serve_wider(srv).items():
            srv.files[f"/datasets/CUHK-CSE/wider_face/resolve/{rev}/data/{file_name}"] = blob
        fast = {"retries": 0, "progress": False}
        sources = [
            {
                "kind": "local",
                "name": "pl_coco",
                "path": str(tmp_path / "coco"),
                "format": "coco",
                "class_map": {"person": "face", "car": "license_plate"},
            },
            {
                "kind": "local",
                "name": "pl_yolo",
                "path": str(tmp_path / "cfgs" / "data.yaml"),
                "format": "yolo",
                "class_map": {"plate": "license_plate"},
            },
            {
                "kind": "hf_coco",
                "name": "pl_plates",
                "endpoint": srv.url(""),
                "revision": KP_REV,
                "splits": ["train"],
                "sha256": {"train.zip": hashlib.sha256(data).hexdigest()},
                "http": fast,
            },
            {
                "kind": "wider_face",
                "name": "pl_wider",
                "endpoint": srv.url(""),
                "revision": rev,
                "verify_checksums": False,
                "http": fast,
            },
            {"kind": "open_images", "name": "pl_oi", "max_samples": 10},
            {
                "kind": "roboflow",
                "name": "pl_rf",
                "export_format": "yolov5pytorch",
                "class_map": {"License_Plate": "license_plate"},
            },
        ]
        rf_env = {"API_URL": rf_api.url(), "ROBOFLOW_API_KEY": KEY, "ROBOFLOW_CONFIG_DIR": str(tmp_path / "rf.json")}
        proc, _ = run_download(tmp_path, prefect_server, sources, "pl-ok", env=rf_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "pl-ok-summary.json").read_text())["states"] == {"download": "Completed"}
    counts = {}
    for name in ("pl_coco", "pl_yolo", "pl_plates", "pl_wider", "pl_oi", "pl_rf"):
        (index,) = sorted((root / "indexes").glob(f"{name}-*.jsonl"))  # one index per source
        counts[name] = len(load_records(index))
        assert not (root / "raw" / name / "index.jsonl").exists()
    assert counts == {"pl_coco": 4, "pl_yolo": 1, "pl_plates": 1, "pl_wider": 3, "pl_oi": 2, "pl_rf": 4}


def test_unreachable_host_fails_the_stage_at_once_with_the_offline_remedy(tmp_path: Path, prefect_server: str) -> None:
    """What the real config does without network, on a host that never resolves (.invalid)."""
    sources = [{"kind": "wider_face", "name": "pl_offline", "endpoint": "https://hub.no-such-host.invalid"}]
    # The run's preflight would stop this before the stage (tests/test_cli_download.py); here the
    # stage itself is under test, so the preflight's host probe is switched off.
    proc, elapsed = run_download(
        tmp_path, prefect_server, sources, "pl-offline", env={"PYROBLUR_PREFLIGHT_NETWORK": "0"}
    )
    assert proc.returncode != 0
    err = proc.stderr
    assert "cannot reach hub.no-such-host.invalid (DNS lookup failed" in err
    assert "raw/pl_offline/archives/WIDER_train.zip" in err and "`local` source" in err
    runs = {tr["name"].split("-")[0]: tr for tr in last_task_runs(prefect_server)}
    assert runs["download"]["run_count"] == 1  # permanent: not retried by the task either
    print(f"offline download stage failed after {elapsed:.1f} s")  # measured, not asserted
