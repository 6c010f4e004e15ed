"""deployments/setup.py (``make deploy``'s second step) without a server: the automation it
creates and how ``RETRAIN_SCHEDULE=auto`` decides whether this host can run a config."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    spec = importlib.util.spec_from_file_location("deploy_setup", ROOT / "deployments" / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_automation_crashes_silent_pyroblur_runs_only(setup):
    automation = setup.silent_run_automation(150)
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.within == timedelta(seconds=150)
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match_related.root["prefect.resource.id"] == "prefect.tag.pyroblur"
    (action,) = automation.actions
    assert action.state.value == "CRASHED" and "150 s" in action.message


def test_retrain_parameters_send_training_to_the_gpu_pool(setup):
    params, cfg = setup.retrain_parameters(ROOT / "configs" / "demo.yaml", setup.GPU_STAGE)
    assert params["config"]["orchestration"]["train_deployment"] == setup.GPU_STAGE
    assert params["config"]["name"] == cfg.name == "demo"
    _, inline = setup.retrain_parameters(ROOT / "configs" / "demo.yaml", None)
    assert inline.orchestration.train_deployment is None


def test_auto_schedule_follows_what_the_host_has(setup, monkeypatch):
    _, demo = setup.retrain_parameters(ROOT / "configs" / "demo.yaml", None)
    assert setup.host_can_run(demo) == (True, "this host has what the config needs")  # CPU, synthetic data
    on_gpu = demo.model_copy(update={"train": demo.train.model_copy(update={"device": "0"})})
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = setup.host_can_run(on_gpu)
    assert not ok and "no CUDA GPU" in why
    _, real = setup.retrain_parameters(ROOT / "configs" / "pyroblur.yaml", None)
    real_cpu = real.model_copy(update={"train": real.train.model_copy(update={"device": "cpu"})})
    monkeypatch.setattr(setup, "PROBE", ("127.0.0.1", 9))  # nothing listens: "offline"
    ok, why = setup.host_can_run(real_cpu)
    assert not ok and "no internet" in why and "wider_face" in why
