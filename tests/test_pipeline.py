"""The whole pipeline through the CLI against a real Prefect API server and real FiftyOne."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import API
from tiny_config import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = ["download", "curate", "balance_split", "export", "train", "benchmark", "promote"]
TINY = tiny_config(
    **{
        "curation.dataset_name": "pyroblur-test-pipeline",
        "sources.0.seed": 0,
    }
)


def run_pipeline(
    tmp_path: Path, api: str, *sets: str, env: dict | None = None, name: str = "cfg", until: str | None = None
):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    summary = tmp_path / f"{name}-summary.json"
    summary.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "flows.cli", "run", "-c", str(cfg), "--summary-json", str(summary)]
    for s in sets:
        cmd += ["--set", s]
    if until:
        cmd += ["--until", until]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PREFECT_API_URL": api, **(env or {})},
    )
    states = json.loads(summary.read_text())["states"] if summary.exists() else None
    return proc, states


def task_runs_of_last_flow(api: str) -> list[dict]:
    flows = API.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1}).json()
    body = {"flow_runs": {"id": {"any_": [flows[0]["id"]]}}}
    return API.post(f"{api}/task_runs/filter", json=body).json()


def mlflow_record(summary: Path) -> tuple[object, object, list]:
    """The MLflow run of the model a pipeline run promoted (or not), and every model version."""
    from pyroblur.registry import tracking

    model_id = json.loads(summary.read_text())["promotion"]["digest"]
    store = tracking.store_for(Path(os.environ["PYROBLUR_DATA_DIR"]))
    c = tracking.client(store)
    run = c.get_run(tracking.find_run(store, model_id, c))
    return c, run, c.search_model_versions(f"name = '{tracking.MODEL_NAME}'")


def test_cache_semantics(tmp_path, prefect_server):
    proc, states = run_pipeline(tmp_path, prefect_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == dict.fromkeys(STAGES, "Completed")

    # One MLflow run of record: the resolved config and data digests, the per-epoch series,
    # the benchmark's figures, the artifacts, the Prefect flow run; the model is a version.
    c, run, versions = mlflow_record(tmp_path / "cfg-summary.json")
    params, metrics = run.data.params, run.data.metrics
    assert params["config.train.epochs"] == "1" and "data.export_digest" in params and "train.imgsz" in params
    assert {"bench/face/map50", "bench/face/coverage", "bench/ms_per_image", "metrics/mAP50-95"} <= set(metrics)
    assert [m.step for m in c.get_metric_history(run.info.run_id, "metrics/mAP50-95")] == [1]
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"weights", "training", "benchmark", "lineage.json"} <= artifacts
    assert run.data.tags["prefect.flow_run_id"] and run.data.tags["pyroblur.model_version"]
    [version] = [v for v in versions if v.run_id == run.info.run_id]
    assert version.tags["gate.improvement.verdict"] in {"pass", "fail"} and version.tags["pyroblur.sha256"]

    # Unchanged: every task Cached, as the server itself records it; no new version, same run.
    proc, states = run_pipeline(tmp_path, prefect_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == dict.fromkeys(STAGES, "Cached")
    server_states = {tr["name"].split("-")[0]: tr["state"]["name"] for tr in task_runs_of_last_flow(prefect_server)}
    assert set(server_states.values()) == {"Cached"} and len(server_states) == len(STAGES)
    c, again, versions_again = mlflow_record(tmp_path / "cfg-summary.json")
    assert again.info.run_id == run.info.run_id and len(versions_again) == len(versions)
    assert any(k.startswith("prefect.flow_run.") for k in again.data.tags)  # the cached flow run, linked too

    # Only the epochs change: train and benchmark run again, the data stages do not; the run's
    # log says which stage runs and why.
    proc, states = run_pipeline(tmp_path, prefect_server, "train.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == {**dict.fromkeys(STAGES[:4], "Cached"), **dict.fromkeys(STAGES[4:], "Completed")}
    logs = proc.stdout + proc.stderr
    assert "train runs (not cached): config key train.epochs 1 -> 2" in logs, logs[-3000:]
    assert "benchmark runs (not cached): upstream data changed: model (TrainManifest)" in logs, logs[-3000:]
    c, run2, _ = mlflow_record(tmp_path / "cfg-summary.json")
    assert [m.step for m in c.get_metric_history(run2.info.run_id, "metrics/mAP50-95")] == [1, 2]  # a series

    # The cache never lies: delete the FiftyOne dataset -> curate and the split run again.
    import fiftyone as fo

    fo.delete_dataset(TINY["curation"]["dataset_name"])
    proc, states = run_pipeline(tmp_path, prefect_server, "train.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states["curate"] == states["balance_split"] == "Completed"
    assert "curate runs (not cached): outputs gone: the cached CurateManifest" in proc.stdout + proc.stderr
    assert states["download"] == states["export"] == states["train"] == "Cached"
    assert fo.dataset_exists(TINY["curation"]["dataset_name"])

    # Delete the exported YOLO folder -> export runs again.
    exports = Path(os.environ["PYROBLUR_DATA_DIR"]) / "exports"
    for d in exports.iterdir():
        shutil.rmtree(d)
    proc, states = run_pipeline(tmp_path, prefect_server, "train.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == {**dict.fromkeys(STAGES, "Cached"), "export": "Completed"}
    assert any(exports.iterdir())

    # A new generator seed changes the data: everything runs again.
    proc, states = run_pipeline(tmp_path, prefect_server, "train.epochs=2", "sources.0.seed=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == dict.fromkeys(STAGES, "Completed")


def test_another_config_leaves_this_one_cached(tmp_path, prefect_server):
    """Config A, config B (another training of the same data, benchmarked into the same FiftyOne
    dataset), then A again: every stage of the third run is Cached. Each benchmark writes its
    own predictions field, so B's does not overwrite A's (nor invalidate A's cached result)."""
    import fiftyone as fo

    a = ["curation.dataset_name=pyroblur-test-aba"]
    b = [*a, "train.seed=7"]
    for sets, name in ((a, "a"), (b, "b")):
        proc, states = run_pipeline(tmp_path, prefect_server, *sets, name=name)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train runs (not cached): config key train.seed 0 -> 7" in proc.stdout + proc.stderr
    proc, states = run_pipeline(tmp_path, prefect_server, *a, name="a-again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == dict.fromkeys(STAGES, "Cached"), states
    assert "runs (not cached)" not in proc.stdout + proc.stderr

    # Both models' predictions are in the dataset, each labelled with the model it came from;
    # the App shows the operating point by default, the PR curve keeps every box.
    ds = fo.load_dataset("pyroblur-test-aba")
    recorded = ds.info["pyroblur_predictions"]
    assert len(recorded) == 2 and len({r["model"] for r in recorded.values()}) == 2
    for field, rec in recorded.items():
        test = ds.match_tags("test")
        kept = test.values(f"{field}.detections.confidence", unwind=True)
        every = test.values(f"{field}_all.detections.confidence", unwind=True)
        floor = min(rec["operating_conf"].values())
        assert all(c >= floor for c in kept) and len(every) >= len(kept)
        assert any(c < floor for c in every)  # the low-confidence boxes are kept for the PR curve
        assert set(test.values(f"{field}.detections.model", unwind=True)) <= {rec["model"]}
        assert ds.has_saved_view(field) and rec["model"] in ds.get_field(field).description
    assert ds.has_saved_view("predictions")
    assert ds.app_config.active_fields.paths[0] == "ground_truth"


def test_transient_failures_are_retried(tmp_path, prefect_server):
    proc, states = run_pipeline(
        tmp_path, prefect_server, "sources.0.seed=11", env={"PYROBLUR_INJECT_FAILURE": "*:transient"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == dict.fromkeys(STAGES, "Completed")
    out = proc.stdout + proc.stderr
    for stage in STAGES:
        assert f"injected transient failure in stage '{stage}' (attempt 1)" in out
    runs = task_runs_of_last_flow(prefect_server)
    assert sorted(tr["run_count"] for tr in runs) == [2] * len(STAGES)


def test_permanent_failure_fails_the_flow_with_the_task_error(tmp_path, prefect_server):
    proc, states = run_pipeline(
        tmp_path, prefect_server, "sources.0.seed=12", env={"PYROBLUR_INJECT_FAILURE": "curate:permanent"}
    )
    assert proc.returncode == 1
    assert states is None
    assert "pipeline failed: injected permanent failure in stage 'curate'" in proc.stderr
    runs = {tr["name"].split("-")[0]: tr for tr in task_runs_of_last_flow(prefect_server)}
    assert runs["curate"]["state"]["name"] == "Failed"
    assert runs["curate"]["run_count"] == 1  # a permanent error is not retried (retry_transient)
    assert "train" not in runs


def test_until_stops_after_the_stage(tmp_path, prefect_server):
    proc, states = run_pipeline(tmp_path, prefect_server, "sources.0.seed=13", until="curate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states == {"download": "Completed", "curate": "Completed"}
    assert "Promotion" not in proc.stdout
    proc, _ = run_pipeline(tmp_path, prefect_server, until="benchmark")
    assert proc.returncode == 2 and "--until must be one of" in proc.stderr
