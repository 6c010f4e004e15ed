"""The front door: runs submitted through the REST API exactly as the Prefect UI's Run button
submits them (POST /deployments/{id}/create_flow_run with the form's parameters), against the
real server, workers and deployments of the ops stack (``make deploy``'s two steps)."""

from __future__ import annotations

import pytest
from ops_stack import TINY_OPS, Stack, tiny

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
