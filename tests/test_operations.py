"""Operations against a real Prefect server: deployments from prefect.yaml, a worker per pool,
runs triggered as the UI's Run button does, the weekly retrain, schema enforcement, and the
failure webhook."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from ops_stack import ROOT, TINY_OPS, Stack, tiny

pytest_plugins = ["ops_stack"]

STAGES = {"download", "curate", "balance_split", "export", "train", "benchmark", "promote"}


def _stage(task_run: dict) -> str:
    return task_run["name"].rsplit("-", 1)[0]


# -- fast checks of the files ----------------------------------------------------------------


def test_prefect_yaml_defaults_are_the_real_config():
    from pyroblur.config import OrchestrationConfig, load_config, parse_config

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"train", "train-stage", "retrain-weekly", "anonymize", "sweep", "sweep-trial"}
    assert all(d["enforce_parameter_schema"] for d in deployments.values())
    real = load_config(ROOT / "configs" / "pyroblur.yaml")
    for name in ("train", "retrain-weekly"):
        cfg = parse_config(deployments[name]["parameters"]["config"], f"prefect.yaml:{name}")
        orchestration = cfg.orchestration
        assert cfg.model_copy(update={"orchestration": OrchestrationConfig()}) == real
        assert orchestration.train_deployment == "train_stage/train-stage"
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"cpu", "gpu"}
    assert deployments["train-stage"]["work_pool"]["name"] == "gpu"
    assert deployments["sweep-trial"]["work_pool"]["name"] == "gpu"
    swept = parse_config(deployments["sweep"]["parameters"]["config"], "prefect.yaml:sweep")
    assert swept.sweep.trial_deployment == "sweep_trial/sweep-trial" and swept.sweep.parallel == 0
    assert swept.model_copy(update={"train": real.train, "sweep": None}) == parse_config(
        deployments["train"]["parameters"]["config"]
    )  # the real config but for the train section it searches
    (schedule,) = deployments["retrain-weekly"]["schedules"]
    assert schedule["cron"] == "0 3 * * 1" and schedule["timezone"]
    assert schedule["active"] is False  # `make deploy` (deployments/setup.py) decides per host
    for d in deployments.values():  # every entrypoint exists and names a flow
        path, func = d["entrypoint"].split(":")
        assert f"def {func}(" in (ROOT / path).read_text()


def test_make_targets_exist():
    import subprocess

    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.pyroblur-installed", "worker", "POOL=gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "gpu-process-pool.json" in out.stdout and "WORK_POOL_CONCURRENCY=1" in out.stdout
    # one worker per GPU: GPU picks the device its runs inherit, GPUS the pool-wide limit
    second = subprocess.run(
        ["make", "-n", "-o", ".venv/.pyroblur-installed", "worker", "POOL=gpu", "GPU=1", "GPUS=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "CUDA_VISIBLE_DEVICES=1 WORK_POOL_LIMIT=2" in second.stdout, second.stdout
    bad = subprocess.run(
        ["make", "worker", "POOL=tpu", "-o", ".venv/.pyroblur-installed"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "POOL must be cpu or gpu" in bad.stderr
    for target, text in (
        ("deploy", "deploy --all"),
        ("deploy", "deployments/setup.py --retrain-config configs/pyroblur.yaml --retrain-schedule auto"),
        ("server", "server start --host 127.0.0.1 --port 4200"),
        ("ops-demo", "deployments/ops_demo.py"),
    ):
        out = subprocess.run(
            ["make", "-n", "-o", ".venv/.pyroblur-installed", target], cwd=ROOT, capture_output=True, text=True
        )
        assert text in out.stdout, out.stdout
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.pyroblur-installed", "deploy", "RETRAIN_CONFIG=configs/demo.yaml", "RETRAIN_SCHEDULE=paused"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert "--retrain-config configs/demo.yaml --retrain-schedule paused" in out.stdout, out.stdout


# -- the failure hook ------------------------------------------------------------------------


@pytest.mark.integration
def test_failure_hook_logs_and_posts_to_the_webhook(prefect_server, webhook, monkeypatch):
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.notify import WEBHOOK_ENV, notify_failure

    url, received = webhook

    @flow(name="always_fails", on_failure=[notify_failure])
    def always_fails(config: dict) -> None:
        raise RuntimeError("disk full")

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        # URL from the run's parameters (config.orchestration.webhook_url) ...
        monkeypatch.delenv(WEBHOOK_ENV, raising=False)
        state = always_fails({"orchestration": {"webhook_url": url}}, return_state=True)
        assert state.is_failed()
        # ... or from the environment, which wins.
        monkeypatch.setenv(WEBHOOK_ENV, url + "?from=env")
        always_fails({}, return_state=True)
        # A webhook that is down never hides the failure itself.
        monkeypatch.setenv(WEBHOOK_ENV, "http://127.0.0.1:9/unreachable")
        assert always_fails({}, return_state=True).is_failed()
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # while the API is still there
    assert len(received) == 2
    first = received[0]
    assert first["flow"] == "always_fails" and first["state"] == "Failed"
    assert "disk full" in first["message"] and "disk full" in first["text"]
    assert first["event"] == "pyroblur.flow_run.failed" and first["flow_run_id"]


def test_webhook_url_precedence(monkeypatch):
    from tasks.notify import WEBHOOK_ENV, webhook_url

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert webhook_url(None) is None
    assert webhook_url({"config": {"orchestration": {"webhook_url": "http://a"}}}) == "http://a"
    monkeypatch.setenv(WEBHOOK_ENV, "http://env")
    assert webhook_url({"config": {"orchestration": {"webhook_url": "http://a"}}}) == "http://env"


def test_lineage_and_unchanged_reason(tmp_path):
    from pyroblur.registry.lineage import record_sources, sources_of, unchanged_reason
    from pyroblur.registry.store import Candidate, promote_if_better

    registry, lineage = tmp_path / "registry.json", tmp_path / "lineage.json"
    assert unchanged_reason("abc", registry, lineage) is None  # no champion
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    decision = promote_if_better(registry, Candidate(weights=weights, metrics={"m": 0.5}), "m")
    assert unchanged_reason("abc", registry, lineage) is None  # champion of unknown sources
    record_sources(decision.candidate_id, "abc", lineage)
    assert sources_of(decision.candidate_id, lineage) == "abc"
    assert "sources unchanged" in unchanged_reason("abc", registry, lineage)
    assert unchanged_reason("def", registry, lineage) is None
    lineage.write_text("{not json")
    assert sources_of(decision.candidate_id, lineage) is None  # unreadable = unknown, never an error


# -- the stack: server, a worker per pool, deployments from prefect.yaml -----------------------


@pytest.mark.integration
@pytest.mark.slow
def test_train_from_the_ui_runs_on_both_pools(ops_stack: Stack, trained_run):
    parent = trained_run
    assert parent["work_pool_name"] == "cpu"
    (child,) = ops_stack.child_runs(parent["id"])
    assert child["work_pool_name"] == "gpu" and child["deployment_id"] == ops_stack.deployments["train-stage"]
    assert child["state"]["type"] == "COMPLETED"
    parent_tasks = {_stage(t): t for t in ops_stack.task_runs(parent["id"])}
    child_tasks = {_stage(t): t for t in ops_stack.task_runs(child["id"])}
    # curation etc. ran in the cpu pool's flow run, training in the gpu pool's
    assert {"download", "curate", "balance_split", "export", "benchmark", "promote"} <= set(parent_tasks)
    assert "train" not in parent_tasks and set(child_tasks) == {"train"}
    assert child_tasks["train"]["state"]["name"] == "Completed"
    assert parent_tasks["curate"]["state"]["name"] == "Completed"
    # the workers that ran them, as the server recorded
    workers = {
        pool: [w["name"] for w in ops_stack.post(f"/work_pools/{pool}/workers/filter", {})] for pool in ("cpu", "gpu")
    }
    assert workers == {"cpu": ["cpu-test"], "gpu": ["gpu-test"]}


@pytest.mark.integration
@pytest.mark.slow
def test_same_parameters_again_is_all_cached(ops_stack: Stack, trained_run):
    run = ops_stack.run("train", {"config": TINY_OPS})
    (child,) = ops_stack.child_runs(run["id"])
    states = {}
    for flow_run in (run, child):
        for t in ops_stack.task_runs(flow_run["id"]):
            states[t["name"]] = t["state"]["name"]
    assert {name.rsplit("-", 1)[0] for name in states} >= STAGES
    assert set(states.values()) == {"Cached"}, states


@pytest.mark.integration
@pytest.mark.slow
def test_parameters_violating_the_schema_are_rejected_by_the_server(ops_stack: Stack, trained_run):
    train_runs = {"deployments": {"id": {"any_": [ops_stack.deployments["train"]]}}}
    before = len(ops_stack.post("/flow_runs/filter", train_runs))
    r = ops_stack.create_run("train", {"config": tiny(**{"train.epochs": "many"})})
    assert 400 <= r.status_code < 500, r.text
    assert "epochs" in r.text
    r = ops_stack.create_run("train", {"config": tiny(**{"train.bogus_key": 1})})
    assert 400 <= r.status_code < 500, r.text
    assert len(ops_stack.post("/flow_runs/filter", train_runs)) == before  # nothing reached a worker


@pytest.mark.integration
@pytest.mark.slow
def test_retrain_weekly_stops_early_or_retrains(ops_stack: Stack, trained_run):
    dep = ops_stack.get(f"/deployments/{ops_stack.deployments['retrain-weekly']}")
    (schedule,) = dep["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * 1" and schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert schedule["active"]
    # The server's scheduler turned the cron into upcoming runs (taken, then paused, by the
    # fixture): Mondays 03:00 Berlin time. Prefect 3.8.8's scheduler fails on SQLAlchemy 2.1.
    upcoming = ops_stack.upcoming
    assert upcoming, "the scheduler created no runs of retrain-weekly (SQLAlchemy 2.1 with Prefect 3.8.8?)"
    for r in upcoming:
        start = datetime.fromisoformat(r["expected_start_time"]).astimezone(ZoneInfo("Europe/Berlin"))
        assert (start.weekday(), start.hour, start.minute) == (0, 3, 0), start
        assert r["auto_scheduled"]

    # make deploy chose the parameters (RETRAIN_CONFIG) and the schedule's state, and said so.
    assert dep["parameters"]["config"]["name"] == TINY_OPS["name"]
    assert "retrain-weekly: config" in ops_stack.setup_output and "schedule ACTIVE" in ops_stack.setup_output

    # Same sources as the champion was trained on: stops early, says why (in the final state
    # too), trains nothing.
    run = ops_stack.run("retrain-weekly", {"config": TINY_OPS})
    assert run["state"]["name"] == "Skipped", run["state"]
    assert "stopped early: sources unchanged since champion" in run["state"]["message"], run["state"]
    logs = ops_stack.log_text(run["id"], expect="stopping early")
    assert "stopping early: sources unchanged since champion" in logs, logs
    assert not ops_stack.child_runs(run["id"])
    download = {_stage(t): t for t in ops_stack.task_runs(run["id"])}["download"]
    assert download["state"]["name"] == "Completed"  # refreshed, not served from the cache

    # A changed source: re-curates, trains a challenger on the gpu pool, decides on promotion.
    changed = tiny(**{"sources.0.seed": 22})
    run = ops_stack.run("retrain-weekly", {"config": changed}, timeout=300)
    assert run["state"]["name"] == "Completed" and "retrained (sources changed" in run["state"]["message"]
    logs = ops_stack.log_text(run["id"], expect="promotion decision: ")
    assert "retraining: sources changed" in logs, logs
    assert "promotion decision: " in logs, logs
    (pipeline,) = ops_stack.child_runs(run["id"])
    (stage,) = ops_stack.child_runs(pipeline["id"])
    assert stage["work_pool_name"] == "gpu"
    assert {_stage(t): t["state"]["name"] for t in ops_stack.task_runs(stage["id"])} == {"train": "Completed"}


@pytest.mark.integration
@pytest.mark.slow
def test_library_log_lines_reach_the_run_logs(ops_stack: Stack, trained_run):
    """A line the library (pyroblur.training.trainer, a plain logging.getLogger) emitted inside the
    train task on the gpu worker, read back through the API."""
    (child,) = ops_stack.child_runs(trained_run["id"])
    ops_stack.log_text(child["id"], expect="training yolo11n.yaml for 1 epochs")
    body = {"logs": {"flow_run_id": {"any_": [child["id"]]}}, "limit": 200}
    entries = ops_stack.post("/logs/filter", body)
    lines = [e for e in entries if e["name"] == "pyroblur.training.trainer"]
    assert any("training yolo11n.yaml for 1 epochs" in e["message"] for e in lines), [
        (e["name"], e["message"][:80]) for e in entries
    ]
    assert all(e["task_run_id"] for e in lines)  # attached to the train task's run


@pytest.mark.integration
@pytest.mark.slow
def test_make_deploy_creates_the_silent_run_automation(ops_stack: Stack):
    (automation,) = [a for a in ops_stack.post("/automations/filter", {}) if a["name"] == "pyroblur-crash-silent-runs"]
    trigger = automation["trigger"]
    assert trigger["posture"] == "Proactive" and trigger["after"] == ["prefect.flow-run.heartbeat"]
    assert "prefect.flow-run.heartbeat" in trigger["expect"] and trigger["for_each"] == ["prefect.resource.id"]
    assert (
        automation["actions"][0]["type"] == "change-flow-run-state" and automation["actions"][0]["state"] == "CRASHED"
    )


def test_artifacts_dir_is_ignored():
    assert "/test-artifacts/" in Path(ROOT / ".gitignore").read_text()
