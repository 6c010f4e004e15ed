"""Acceptance 4 of issue 24: the ``sweep`` deployment fans its trials out over two gpu workers
(real server, real workers started as ``make worker`` starts them), concurrently, never more at
once than the gpu pool's limit, even when the sweep asks for more."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from ops_stack import Stack, tiny

pytest_plugins = ["ops_stack"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _most_at_once(runs: list[dict]) -> int:
    """The most runs that were Running at the same moment (from their start and end times)."""
    events = []
    for r in runs:
        events += [(datetime.fromisoformat(r["start_time"]), 1), (datetime.fromisoformat(r["end_time"]), -1)]
    now = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_trials_run_concurrently_within_the_gpu_pool_limit(ops_stack: Stack) -> None:
    from optuna.trial import TrialState

    from pyroblur.registry import sweeps

    config = tiny(**{"name": "tiny-sweep-ops", "train.args": {"plots": False, "optimizer": "SGD"}})
    config["sweep"] = {
        "space": {"lr0": {"low": 0.001, "high": 0.05, "log": True}, "mosaic": {"choices": [0.0, 1.0]}},
        "strategy": "random", "n_trials": 4, "study_name": "ops-fanout", "pruning": {"enabled": False},
        # more than the pool allows: the pool's limit, not the sweep, holds the third back
        "parallel": 3, "trial_deployment": "sweep_trial/sweep-trial",
    }  # fmt: skip
    with ops_stack.second_gpu_worker("gpu-sweep-2") as stack:
        run = stack.run("sweep", {"config": config, "until": "sweep"}, timeout=1200)
    assert run["work_pool_name"] == "cpu"
    trials = [r for r in stack.child_runs(run["id"]) if r["deployment_id"] == stack.deployments["sweep-trial"]]
    assert len(trials) == 4, [r["name"] for r in trials]
    assert all(r["work_pool_name"] == "gpu" and r["state"]["type"] == "COMPLETED" for r in trials), trials
    assert _most_at_once(trials) == 2  # concurrently, and never more than the pool's limit of 2
    study = sweeps.open_study(Path(stack.env["PYROBLUR_DATA_DIR"]), "ops-fanout")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert sorted(r["parameters"]["trial"]["number"] for r in trials) == [0, 1, 2, 3]
