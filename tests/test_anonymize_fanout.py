"""The ``anonymize`` deployment fans a folder out over the gpu pool (real server, real workers).

Against the ops stack (a Prefect server, the deployments of prefect.yaml, workers started as
``make worker`` does; device cpu, a random-init YOLO11n, so no training is needed):

- one gpu worker (pool limit 1): the parent holds the only slot, so it takes over the shard no
  worker started and runs it itself (no deadlock);
- two gpu workers (pool limit 2): the parent runs shard 1, the second worker runs shard 2 as a
  flow run of the same deployment (parent id, gpu pool, Completed), every file written once,
  the merged report's counts match;
- a shard whose flow run fails fails the parent naming it, the other shard's outputs kept; the
  same job again (after an output and its audit record are deleted) redoes only what is missing.

``PYROBLUR_FANOUT_TIMING=40`` also times a folder of 40 images with shards=1 and shards=2
(``PYROBLUR_FANOUT_IMGSZ=640``: at 640 px instead of 128) into test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import API
from ops_stack import ARTIFACTS, Stack

pytest_plugins = ["ops_stack"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 10
SECOND_GPU_WORKER = "gpu-test-2"


def _images(root: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` small textured JPEG/PNG images of varied sizes under ``root`` (two folders)."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        h, w = (96 + 32 * (i % 4), 128 + 32 * (i % 3))
        img = np.kron(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
        name = f"{'a' if i % 2 else 'b/c'}/img{i:02d}.{'png' if i % 3 else 'jpg'}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), img)
        names.append(name)
    return sorted(names)


@pytest.fixture(scope="module")
def job(ops_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of images and random YOLO11n weights the workers can read (same host)."""
    from ultralytics import YOLO

    base = tmp_path_factory.mktemp("fanout")
    weights = base / "yolo11n-random.pt"
    YOLO("yolo11n.yaml").save(weights)
    (base / "in").mkdir()
    names = _images(base / "in", IMAGES)
    return {"base": base, "in": base / "in", "names": names, "weights": str(weights)}


@pytest.fixture(scope="module")
def gpu_pool_limit_1(ops_stack: Stack) -> Stack:
    """The stack's single gpu worker, the pool's limit 1 (as make worker sets it)."""
    assert not ops_stack.extra_workers, "this module's one-worker test must run first"
    ops_stack.set_pool_limit("gpu", 1)
    return ops_stack


@pytest.fixture(scope="module")
def two_gpu_workers(ops_stack: Stack) -> Iterator[Stack]:
    """A second gpu worker (one per GPU, each --limit 1), started as `make worker POOL=gpu GPU=1
    GPUS=2` starts it: its entrypoint raises the pool's limit to 2. Undone afterwards so that
    other modules see the stack as they expect."""
    with ops_stack.second_gpu_worker(SECOND_GPU_WORKER) as stack:
        yield stack


def _params(job: dict[str, Any], out: Path, shards: int, **kw: Any) -> dict[str, Any]:
    options = {"weights": job["weights"], "device": "cpu", "imgsz": 128}
    return {"params": {"input_dir": str(job["in"]), "output_dir": str(out), "options": options, "shards": shards, **kw}}


def _start(stack: Stack, parameters: dict[str, Any]) -> str:
    r = stack.create_run("anonymize", parameters)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _report(stack: Stack, flow_run_id: str) -> dict[str, Any]:
    """The merged ``anonymize-report`` artifact of a run: counts, written inputs, shard rows."""
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": ["anonymize-report"]}}}
    (artifact,) = stack.post("/artifacts/filter", body)
    text = artifact["data"]
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    counts = [c.strip() for c in rows[1]]  # the row after the header
    # "## Written" rows are `input` | `output` | ...; "## Skipped" rows `input` | reason
    written_inputs = [r[0].strip().strip("`") for r in rows if all(c.strip().startswith("`") for c in r[:2])]
    shards = [[c.strip() for c in r] for r in rows if re.fullmatch(r"\d+/\d+", r[0].strip())]
    return {"written": int(counts[0]), "skipped": int(counts[-1]), "inputs": written_inputs, "shards": shards}


def _outputs(out: Path) -> dict[str, int]:
    """Output image -> mtime_ns, for files that have an audit record."""
    return {
        p.relative_to(out).as_posix(): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.suffix in (".png", ".jpg") and p.with_name(p.name + ".audit.json").is_file()
    }


def test_one_gpu_worker_parent_takes_over_the_unstarted_shard(gpu_pool_limit_1: Stack, job) -> None:
    stack = gpu_pool_limit_1
    out = job["base"] / "out-one-worker"
    parent_id = _start(stack, _params(job, out, shards=2))
    parent = stack.wait(parent_id, timeout=300)
    assert parent["state"]["type"] == "COMPLETED", f"{parent['state']}\n{stack.worker_logs()}"
    (child,) = stack.child_runs(parent_id)
    assert child["state"]["type"] == "CANCELLED"
    assert "ran in the parent flow run" in child["state"]["message"]
    report = _report(stack, parent_id)
    assert report["written"] == IMAGES and report["skipped"] == 0
    assert sorted(_outputs(out)) == job["names"]
    assert [row[1] for row in report["shards"]] == ["this run", "this run"]
    assert "all 2 shards run in this process" not in stack.log_text(parent_id, expect="shard 2/2 ran")


def test_two_gpu_workers_fan_out_and_merge(two_gpu_workers: Stack, job) -> None:
    stack = two_gpu_workers
    out = job["base"] / "out-two-workers"
    parent_id = _start(stack, _params(job, out, shards=2, concurrency=2))
    parent = stack.wait(parent_id, timeout=300)
    assert parent["state"]["type"] == "COMPLETED", f"{parent['state']}\n{stack.worker_logs()}"
    assert parent["work_pool_name"] == "gpu"

    (child,) = stack.child_runs(parent_id)
    assert child["parent_task_run_id"] and child["work_pool_name"] == "gpu"
    assert child["state"]["type"] == "COMPLETED", f"{child['state']}\n{stack.worker_logs()}"
    assert child["deployment_id"] == stack.deployments["anonymize"]
    sent = child["parameters"]["params"]
    assert sent["shards"] == 1 and sent["options"]["weights"] == job["weights"]
    assert 0 < len(sent["files"]) < IMAGES

    report = _report(stack, parent_id)
    assert report["written"] == IMAGES and report["skipped"] == 0
    # every file written once: each input once in the merged report, an output and audit for each
    assert sorted(Path(p).relative_to(job["in"]).as_posix() for p in report["inputs"]) == job["names"]
    assert sorted(_outputs(out)) == job["names"]
    (mine, theirs) = report["shards"]
    assert mine[1] == "this run" and theirs[1] == f"`{child['name']}`" and theirs[2] == "Completed"
    assert int(mine[3]) + int(theirs[3]) == IMAGES and int(theirs[3]) == len(sent["files"])


def test_failed_shard_names_itself_and_a_rerun_redoes_only_what_is_missing(two_gpu_workers: Stack, job) -> None:
    stack = two_gpu_workers
    out = job["base"] / "out-failure"
    dep = stack.deployments["anonymize"]
    # The failure switch for shard runs only, in the deployment's env (the template's env
    # is replaced by a deployment's, so start from the pool's defaults).
    pool = stack.get("/work_pools/gpu")
    env = dict(pool["base_job_template"]["variables"]["properties"]["env"]["default"])
    env["PYROBLUR_INJECT_FAILURE"] = "anonymize_shard:permanent"
    API.patch(f"{stack.api}/deployments/{dep}", json={"job_variables": {"env": env}}, timeout=30).raise_for_status()
    try:
        parent_id = _start(stack, _params(job, out, shards=2))
        parent = stack.wait(parent_id, timeout=300)
    finally:
        API.patch(f"{stack.api}/deployments/{dep}", json={"job_variables": {}}, timeout=30).raise_for_status()
    (child,) = stack.child_runs(parent_id)
    assert child["state"]["type"] == "FAILED"
    assert parent["state"]["type"] == "FAILED"
    message = parent["state"]["message"]
    assert "1 of 2 shards failed" in message and f"shard 2/2 (flow run '{child['name']}'" in message, message
    assert "injected permanent failure" in message and "run the same job again" in message
    failed_files = {Path(f).as_posix() for f in child["parameters"]["params"]["files"]}
    kept = _outputs(out)
    assert sorted(kept) == sorted(set(job["names"]) - failed_files), "shard 1's outputs must be kept"
    report = _report(stack, parent_id)
    assert report["written"] == IMAGES - len(failed_files) and report["skipped"] == len(failed_files)

    # Interrupted job, continued: one finished output and its audit record lost as well.
    lost = sorted(kept)[0]
    (out / lost).unlink()
    (out / (lost + ".audit.json")).unlink()
    again_id = _start(stack, _params(job, out, shards=2))
    again = stack.wait(again_id, timeout=300)
    assert again["state"]["type"] == "COMPLETED", f"{again['state']}\n{stack.worker_logs()}"
    (rechild,) = stack.child_runs(again_id)
    assert {Path(f).as_posix() for f in rechild["parameters"]["params"]["files"]} == failed_files, "same shards"
    report = _report(stack, again_id)
    assert report["written"] == IMAGES
    redone = len(failed_files) + 1
    resumed = sum(int(row[6]) for row in report["shards"])
    assert resumed == IMAGES - redone, report["shards"]
    now = _outputs(out)
    assert sorted(now) == job["names"]
    assert {k: v for k, v in now.items() if k in kept and k != lost} == {k: v for k, v in kept.items() if k != lost}


@pytest.mark.skipif(not os.environ.get("PYROBLUR_FANOUT_TIMING"), reason="set PYROBLUR_FANOUT_TIMING=40 to time it")
def test_timing_shards_1_vs_2(two_gpu_workers: Stack, job) -> None:
    stack = two_gpu_workers
    count = int(os.environ["PYROBLUR_FANOUT_TIMING"])
    imgsz = int(os.environ.get("PYROBLUR_FANOUT_IMGSZ", "128"))  # 640: inference dominates
    src = job["base"] / f"timing-{count}-{imgsz}"
    src.mkdir()
    _images(src, count, seed=7)
    figures: dict[str, float] = {}
    for shards in (1, 2, 1, 2):
        params = _params({**job, "in": src}, job["base"] / f"timing-out-{shards}-{len(figures)}", shards=shards)
        params["params"]["options"]["imgsz"] = imgsz
        run_id = _start(stack, params)
        run = stack.wait(run_id, timeout=600)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert _report(stack, run_id)["written"] == count
        # created -> final, as a user waits for it (includes waiting for a worker and process start)
        created = stack.get(f"/flow_runs/{run_id}")["created"]
        wall = (datetime.fromisoformat(run["end_time"]) - datetime.fromisoformat(created)).total_seconds()
        figures[f"run{len(figures) + 1} shards={shards}"] = round(wall, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "anonymize-fanout-timing.json").write_text(
        json.dumps({"images": count, "imgsz": imgsz, **figures}, indent=2)
    )
    print(figures)


_DIRECT = """
import sys
from pathlib import Path
from flows.anonymize import AnonymizeFolderParams, anonymize_folder
from pyroblur.anonymize import AnonymizeOptions

src, out, weights = map(Path, sys.argv[1:4])
opts = AnonymizeOptions(weights=weights, device="cpu", imgsz=128)
result = anonymize_folder(AnonymizeFolderParams(input_dir=src, output_dir=out, options=opts, shards=2))
print("RESULT", result.model_dump_json())
"""


def test_direct_call_runs_every_shard_in_process(prefect_server: str, job) -> None:
    """No deployment (the CLI's case): shards=2 runs everything here and says so; no file lost."""
    from conftest import run_flow_script

    out = job["base"] / "out-direct"
    proc, (result,) = run_flow_script(_DIRECT, [str(job["in"]), str(out), job["weights"]], prefect_server)
    assert result["written"] == IMAGES and result["skipped"] == 0 and result["shards"] == []
    assert "all 2 shards run in this process" in proc.stderr + proc.stdout
    assert sorted(_outputs(out)) == job["names"]
