"""The front door: runs submitted through the REST API exactly as the Prefect UI's Run button
submits them (POST /deployments/{id}/create_flow_run with the form's parameters), against the
real server, workers and deployments of the ops stack (``make deploy``'s two steps)."""

from __future__ import annotations

import time

import pytest
from conftest import API
from ops_stack import SILENCE_S, TINY_OPS, Stack, tiny

pytest_plugins = ["ops_stack"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Each wrong form and the key that the server's 409 must name.
REFUSED = {
    "unknown top-level key": ({"config": TINY_OPS, "foo": 1}, "'foo' was unexpected"),
    "misspelled ultralytics argument": (
        {"config": tiny(**{"train.args": {"plots": False, "mosiac": 0.5}})},
        "'mosiac' is not one of",
    ),
    "negative batch other than -1": ({"config": tiny(**{"train.batch": -2})}, "config.train.batch"),
    "bad source kind": ({"config": tiny(**{"sources.0.kind": "flickr"})}, "config.sources[0].kind"),
    "bad source field": ({"config": tiny(**{"sources.0.num_images": -5})}, "config.sources[0].num_images"),
}


def _runs_of(stack: Stack, deployment: str) -> int:
    return len(stack.post("/flow_runs/filter", {"deployments": {"id": {"any_": [stack.deployments[deployment]]}}}))


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_wrong_form_is_refused_before_a_run_is_scheduled(ops_stack: Stack, case: str):
    parameters, named = REFUSED[case]
    before = {d: _runs_of(ops_stack, d) for d in ("train", "retrain-weekly")}
    for deployment in ("train", "retrain-weekly"):
        params = parameters if deployment == "train" or "foo" in parameters else {"config": parameters["config"]}
        r = ops_stack.create_run(deployment, params)
        assert r.status_code == 409, f"{deployment}: {r.status_code} {r.text[:500]}"
        assert named in r.text, r.text[:2000]
        assert "is not valid under any of the given schemas" not in r.text, r.text[:2000]
    assert {d: _runs_of(ops_stack, d) for d in before} == before  # nothing was scheduled


def test_a_split_that_does_not_sum_to_one_fails_at_once_naming_the_key(ops_stack: Stack):
    """JSON Schema cannot say "these three numbers sum to 1": the run is created, and fails on
    the worker when the flow validates its parameters, before any stage, in one line naming
    the key."""
    config = tiny(**{"split": {"train": 0.8, "val": 0.2, "test": 0.1}})
    r = ops_stack.create_run("train", {"config": config})
    assert r.status_code == 201, r.text
    run = ops_stack.wait(r.json()["id"], timeout=180)
    assert run["state"]["type"] == "FAILED", run["state"]
    assert ops_stack.task_runs(run["id"]) == []  # no stage started
    logs = ops_stack.log_text(run["id"], expect="config.split")
    lines = [x for x in logs.splitlines() if "config.split" in x]
    assert any("config.split: Value error, split ratios must sum to 1, got 1.100" in x for x in lines), logs


def test_a_dead_worker_s_run_is_crashed_even_when_the_automation_s_event_is_lost(ops_stack: Stack):
    """The automation never acts (as when its event is dead-lettered on a busy server: here it
    is disabled, so nothing it would do gets through); the sweeper beside the remaining worker
    still sets the silent run Crashed within the silence plus one pass (docs/operations.md)."""
    (automation,) = [a for a in ops_stack.post("/automations/filter", {}) if a["name"] == "pyroblur-crash-silent-runs"]
    patch = f"{ops_stack.api}/automations/{automation['id']}"
    API.patch(patch, json={"enabled": False}, timeout=30).raise_for_status()
    try:
        config = tiny(
            **{"name": "tiny-lost-event", "sources.0.seed": 41, "curation.dataset_name": "pyroblur-test-lost-event"}
        )
        config["train"]["epochs"] = 40  # still training when its worker is killed
        r = ops_stack.create_run("train", {"config": config})
        assert r.status_code == 201, r.text
        parent_id = r.json()["id"]
        deadline = time.monotonic() + 400
        stage = None
        while time.monotonic() < deadline:
            children = ops_stack.child_runs(parent_id)
            if children and children[0]["state"]["type"] == "RUNNING":
                stage = children[0]
                break
            time.sleep(2)
        assert stage is not None, ops_stack.worker_logs()
        ops_stack.log_text(stage["id"], expect="training run folder: ", timeout=180)
        ops_stack.kill_worker("gpu")
        killed = time.monotonic()
        deadline = killed + SILENCE_S + 30 + 120  # silence + one pass, plus the server's latency
        crashed = None
        while time.monotonic() < deadline:
            run = ops_stack.get(f"/flow_runs/{stage['id']}")
            if run["state"]["type"] == "CRASHED":
                crashed = run
                break
            time.sleep(2)
        assert crashed is not None, f"not Crashed in {SILENCE_S + 150} s\n{ops_stack.worker_logs()}"
        assert "found by the sweeper" in crashed["state"]["message"], crashed["state"]
        parent = ops_stack.wait(parent_id, timeout=120)
        assert parent["state"]["type"] == "FAILED" and "GpuStageError" in parent["state"]["message"]
    finally:
        API.patch(patch, json={"enabled": True}, timeout=30).raise_for_status()
        if "gpu" not in ops_stack.workers:
            ops_stack.start_worker("gpu")
            ops_stack.wait_for_workers(("gpu",))
