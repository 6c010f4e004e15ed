"""A gpu worker that dies mid-training, against a real server and workers (the ops stack).

The worker's process group and its flow runs are SIGKILLed (a host that dies: nothing reports
a final state). Then: the silent-run automation (deployments/setup.py, as `make deploy` creates
it) sets the child run Crashed once its heartbeats stop; the parent's bounded wait fails it with
GpuStageError and the failure notice fires; the gpu pool's only slot is free; a new gpu worker
and the UI's Retry complete the run with training resumed from the checkpoint, read from the
run's logs through the API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from ops_stack import SILENCE_S, Stack, tiny

pytest_plugins = ["ops_stack"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACTIVE = ["RUNNING", "PENDING", "CANCELLING"]


def _until(what: str, check, timeout: float, stack: Stack, every: float = 2.0) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout} s\n{stack.worker_logs()}")


def test_dead_gpu_worker_crashes_its_run_frees_the_slot_and_retry_resumes(ops_stack: Stack, webhook):
    url, received = webhook
    config = tiny(
        **{
            "name": "tiny-dead-worker",
            "sources.0.seed": 31,
            "curation.dataset_name": "pyroblur-test-dead-worker",
            "train.epochs": 40,  # long enough to be killed mid-training on a busy CPU
            "orchestration.webhook_url": url,
        }
    )
    r = ops_stack.create_run("train", {"config": config})
    assert r.status_code == 201, r.text
    parent_id = r.json()["id"]

    def child() -> dict | None:
        runs = ops_stack.child_runs(parent_id)
        return runs[0] if runs else None

    # Mid-training: the child runs on the gpu pool and its first checkpoint is on disk.
    stage = _until(
        "the GPU stage's run started", lambda: (c := child()) and c["state"]["type"] == "RUNNING" and c, 300, ops_stack
    )
    assert stage["work_pool_name"] == "gpu"
    logs = ops_stack.log_text(stage["id"], expect="training run folder: ", timeout=120)
    run_dir = Path(logs.split("training run folder: ", 1)[1].split()[0])
    _until("the first checkpoint", lambda: (run_dir / "weights" / "last.pt").exists(), 300, ops_stack, every=1)
    ops_stack.kill_worker("gpu")

    # The automation sets the silent run Crashed; the parent stops waiting and fails, named.
    crashed = _until(
        "the child run Crashed",
        lambda: (c := ops_stack.get(f"/flow_runs/{stage['id']}"))["state"]["type"] == "CRASHED" and c,
        SILENCE_S + 180,
        ops_stack,
    )
    assert "no heartbeat" in crashed["state"]["message"], crashed["state"]
    parent = ops_stack.wait(parent_id, timeout=120)
    assert parent["state"]["type"] == "FAILED", parent["state"]
    assert "GpuStageError" in parent["state"]["message"] and "Crashed" in parent["state"]["message"], parent["state"]
    # The failure notice (on_failure hook) reached the webhook, and the run's own log.
    _until("the failure notice", lambda: received, 60, ops_stack, every=1)
    assert received[0]["flow_run_id"] == parent_id and received[0]["state"] == "Failed"
    # The gpu pool's only slot is free: no run of the pool is active any more.
    active = {"flow_runs": {"state": {"type": {"any_": ACTIVE}}}, "work_pools": {"name": {"any_": ["gpu"]}}}
    assert ops_stack.post("/flow_runs/filter", active) == []

    # A new gpu worker, then the UI's Retry button: training resumes from the checkpoint.
    ops_stack.start_worker("gpu")
    ops_stack.wait_for_workers(("gpu",))
    retry = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": False}
    ops_stack.post(f"/flow_runs/{parent_id}/set_state", retry)
    parent = ops_stack.wait(parent_id, timeout=900)
    assert parent["state"]["type"] == "COMPLETED", f"{parent['state']}\n{ops_stack.worker_logs()}"
    stages = ops_stack.child_runs(parent_id)
    (resumed,) = [c for c in stages if c["id"] != stage["id"]]
    assert resumed["state"]["type"] == "COMPLETED" and resumed["work_pool_name"] == "gpu"
    text = ops_stack.log_text(resumed["id"], expect="resuming training from")
    again = Path(text.split("training run folder: ", 1)[1].split()[0])
    assert again == run_dir, f"the retry's train task keyed a new run folder {again} (inputs or code changed?)"
    assert f"resuming training from {run_dir / 'weights' / 'last.pt'}" in text, text
