"""A hyperparameter sweep's trials as Prefect work: the cached, retried tasks of one trial, the
trial as a whole (:func:`run_trial`, what the ``sweep_trial`` flow runs on a gpu worker), and the
driver's loop that asks trials and runs them here or as flow runs of a deployment.

Each trial's training is the train stage's training (:func:`pyroblur.training.trainer.train`) in
the run folder the pipeline's ``train`` task would use for the trial's train section, so a retry
or an interrupted trial tried again resumes from its ``last.pt``, a finished one is not trained
again, and the chosen trial's model goes through the pipeline's own ``train`` (instant: its run
folder is done), ``benchmark`` and ``promote`` tasks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from pyroblur.config import BenchmarkConfig, OrchestrationConfig, PruningConfig, SweepConfig, TrainConfig
from pyroblur.core.errors import PermanentError, one_line
from pyroblur.core.hashing import digest_of
from pyroblur.core.settings import get_paths
from pyroblur.manifests import ExportManifest, TrialScore, TrialTraining
from tasks._keys import stage_digest
from tasks.pipeline import _opts
from tasks.pipeline import train as train_stage


class TrialSpec(BaseModel):
    """One asked trial: which study, its number and id, its parameters, its MLflow run."""

    study_name: str = Field(description="The Optuna study the trial belongs to.")
    number: int = Field(description="The trial's number in the study.")
    trial_id: int = Field(description="The trial's id in the study's database.")
    params: dict[str, Any] = Field(description="The trial's parameters (train fields and ultralytics arguments).")
    mlflow_run_id: str = Field("", description="The trial's MLflow run (a child of the sweep's run).")


class TrialResult(BaseModel):
    """How a trial ended: ``COMPLETE``, ``PRUNED`` or ``FAIL`` (and why), with its figures."""

    number: int
    state: str
    value: float | None = None
    training: TrialTraining | None = None
    score: TrialScore | None = None
    error: str = ""


class NoTrialCompleted(PermanentError):
    """A sweep finished without one completed trial: nothing to benchmark."""


def trial_run_dir(cfg: TrainConfig, dataset: ExportManifest) -> Path:
    """The run folder of ``cfg`` on ``dataset``: the one the pipeline's ``train`` task uses."""
    return get_paths().runs / stage_digest(train_stage, cfg, dataset)[:16]


@task(**_opts("train_trial"))
def train_trial(cfg: TrainConfig, dataset: ExportManifest, trial: TrialSpec, pruning: PruningConfig) -> TrialTraining:
    """Train one trial, reporting each epoch's validation figure to the study; a pruned trial
    ends early (its ``last.pt`` kept) and is returned with ``pruned`` set. A retry resumes from
    the run folder's ``last.pt``."""
    from pyroblur.core.hashing import sha256_file
    from pyroblur.registry.sweeps import load_trial
    from pyroblur.training.sweep import Pruned, PruningCallback
    from pyroblur.training.trainer import train as run_train

    run_dir = trial_run_dir(cfg, dataset)
    log = get_run_logger()
    log.info("trial %d %s: run folder %s", trial.number, trial.params, run_dir)
    hook = PruningCallback(load_trial(get_paths().root, trial.study_name, trial.trial_id, pruning))
    try:
        manifest = run_train(Path(dataset.data_yaml), cfg, run_dir, callbacks=hook.callbacks())
    except Pruned as stop:
        last = run_dir / "weights" / "last.pt"
        saved = hook.seconds_saved()
        log.info("trial %d pruned after epoch %d of %d: about %.0f s of training saved", trial.number, stop.epoch,
                 cfg.epochs, saved)  # fmt: skip
        return TrialTraining(
            digest=sha256_file(last), run_dir=str(run_dir), weights=str(last), epochs=stop.epoch, device=cfg.device,
            seconds=sum(hook.epoch_seconds), pruned=True, pruned_at=stop.epoch, planned_epochs=cfg.epochs,
            seconds_saved=saved,
        )  # fmt: skip
    return TrialTraining(**manifest.model_dump(), planned_epochs=cfg.epochs)


@task(**_opts("score_trial"))
def score_trial(
    cfg: BenchmarkConfig, weights: str, weights_digest: str, dataset: ExportManifest, imgsz: int
) -> TrialScore:
    """The trial's objective on the val split (:mod:`pyroblur.evaluation.objective`)."""
    from pyroblur.evaluation.objective import trial_objective

    return trial_objective(Path(weights), Path(dataset.data_yaml), imgsz, cfg)


def run_trial(
    spec: TrialSpec, base: TrainConfig, dataset: ExportManifest, bench: BenchmarkConfig, sweep: SweepConfig
) -> TrialResult:
    """Train and score one trial, then record it in the study and its MLflow run. A trial that
    fails for good (after its retries) is recorded failed; a stop (SIGTERM, Ctrl+C) propagates,
    and the driver marks the trial interrupted."""
    from pyroblur.registry import sweeps, tracking
    from pyroblur.training.sweep import trial_train_config

    root = get_paths().root
    study = sweeps.open_study(root, spec.study_name, sweep.pruning)
    training: TrialTraining | None = None
    try:
        cfg = trial_train_config(base, spec.params)
        training = train_trial(cfg, dataset, spec, sweep.pruning)
        score = None
        if not training.pruned:
            score = score_trial(bench, training.weights, training.digest, dataset, cfg.imgsz)
        state = sweeps.record_result(study, spec.number, training, score, spec.mlflow_run_id)
        params = {**tracking.flatten("train", cfg.model_dump(mode="json")), "data.export_digest": dataset.digest}
        if spec.mlflow_run_id:
            sweeps.log_trial(root, spec.mlflow_run_id, state, training, score, params)
    except Exception as exc:  # noqa: BLE001 - a trial that fails for good is a result of the sweep
        error = one_line(exc)
        get_run_logger().error("trial %d failed: %s", spec.number, error)
        sweeps.record_failure(study, spec.number, error)
        if spec.mlflow_run_id:
            sweeps.log_trial(root, spec.mlflow_run_id, "FAIL", None, None, {}, error=error)
        return TrialResult(number=spec.number, state="FAIL", training=training, error=error)
    get_run_logger().info("trial %d %s: %s", spec.number, state, f"objective {score.value:.6f}" if score else
                          f"pruned after epoch {training.pruned_at}")  # fmt: skip
    return TrialResult(number=spec.number, state=state, value=score.value if score else None, training=training,
                       score=score)  # fmt: skip


# ------------------------------------------------------------------------------------------ driver


def study_name(config_name: str, sweep: SweepConfig, train: TrainConfig, bench: BenchmarkConfig, data: str) -> str:
    """``sweep.study_name``, or ``<config name>-<digest>`` of what decides the trials and their
    objective (search space, strategy, seed, pruning, base train section, benchmark, data):
    the same sweep started again continues its study, a changed one starts another."""
    if sweep.study_name:
        return sweep.study_name
    decisive = sweep.model_dump(mode="json", exclude={"n_trials", "timeout_minutes", "parallel", "trial_deployment",
                                                      "max_requeues", "study_name"})  # fmt: skip
    return f"{config_name}-{digest_of(decisive, train, bench, data)[:10]}"


class Driver:
    """Asks trials of a study and runs them, at most ``parallel`` at once, until ``n_trials``
    are done or the wall-clock budget is spent; see :func:`drive`."""

    def __init__(self, study: Any, name: str, sweep: SweepConfig, sweep_run_id: str) -> None:
        self.study, self.name, self.sweep, self.sweep_run_id = study, name, sweep, sweep_run_id
        self.root = get_paths().root
        self.in_flight: dict[int, tuple[TrialSpec, UUID | None]] = {}

    def start(self) -> TrialSpec:
        from pyroblur.registry import sweeps

        trial = sweeps.ask(self.study, self.sweep)
        run_id = sweeps.trial_run(self.root, self.name, self.sweep_run_id, trial.number, trial.params)
        self.study._storage.set_trial_user_attr(trial._trial_id, "mlflow_run_id", run_id)
        spec = TrialSpec(study_name=self.name, number=trial.number, trial_id=trial._trial_id, params=trial.params,
                         mlflow_run_id=run_id)  # fmt: skip
        get_run_logger().info("trial %d starts: %s (MLflow run %s)", trial.number, trial.params, run_id)
        return spec

    def interrupt(self, why: str) -> list[int]:
        """Mark every trial in flight interrupted (MLflow: KILLED) and ask their flow runs to cancel."""
        from pyroblur.registry import sweeps

        numbers = list(self.in_flight)
        marked = sweeps.mark_interrupted(self.study, numbers, why)
        for number in marked:
            spec, flow_run_id = self.in_flight[number]
            try:
                sweeps.log_trial(self.root, spec.mlflow_run_id, "INTERRUPTED", None, None, {}, error=why)
            except Exception:  # noqa: BLE001,S110 - stopping: the study holds the record that matters
                pass
            if flow_run_id is not None:
                _cancel(flow_run_id, why)
        return marked


def _cancel(flow_run_id: UUID, why: str) -> None:
    from tasks.remote import _give_up

    try:
        _give_up(flow_run_id, why)
    except Exception:  # noqa: BLE001,S110 - best effort while stopping
        pass


def pool_limit(deployment: str) -> int:
    """The concurrency limit of ``deployment``'s work pool (1 when it has none)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        pool = client.read_work_pool(dep.work_pool_name) if dep.work_pool_name else None
    return int(pool.concurrency_limit) if pool is not None and pool.concurrency_limit else 1


def drive(
    driver: Driver,
    base: TrainConfig,
    dataset: ExportManifest,
    bench: BenchmarkConfig,
    orch: OrchestrationConfig,
    started: float | None = None,
) -> None:
    """Run trials until ``n_trials`` are done (completed, pruned or failed for good) or the
    budget is spent (counted from ``started``, a ``time.monotonic()``, default now).

    Without ``sweep.trial_deployment`` each trial runs here, one after another; with it, each
    is a flow run of that deployment (gpu pool), ``sweep.parallel`` at once (0: the pool's
    limit), and the pool's own limit holds back any beyond its free slots. A trial flow run that
    crashed, was cancelled or was not started within ``orchestration.stage_start_timeout_minutes``
    is marked interrupted and its parameters queued again in this run (``sweep.max_requeues``).

    A stop (SIGTERM, Ctrl+C, a crash) marks the trials in flight interrupted before it
    propagates (the next run of the sweep tries their parameters again)."""
    from pyroblur.registry import sweeps

    sweep, log = driver.sweep, get_run_logger()
    n_trials = sweep.planned_trials()
    budget = sweep.timeout_minutes * 60 if sweep.timeout_minutes else None
    started = time.monotonic() if started is None else started
    remote = sweep.trial_deployment
    parallel = 1 if not remote else (sweep.parallel or pool_limit(remote))
    if remote:
        log.info("trials run as flow runs of %s, %d at once", remote, parallel)

    def out_of_time() -> bool:
        return budget is not None and time.monotonic() - started > budget

    try:
        while True:
            prog = sweeps.progress(driver.study)
            if out_of_time() and not driver.in_flight:
                log.info("wall-clock budget of %g min spent: no further trial starts (%d of %d trials done)",
                         sweep.timeout_minutes, prog.done, n_trials)  # fmt: skip
                break
            while (
                not out_of_time() and prog.done + len(driver.in_flight) < n_trials and len(driver.in_flight) < parallel
            ):
                spec = driver.start()
                if remote:
                    driver.in_flight[spec.number] = (spec, _dispatch(remote, spec, base, dataset, bench, sweep))
                else:
                    driver.in_flight[spec.number] = (spec, None)
                    run_trial(spec, base, dataset, bench, sweep)
                    driver.in_flight.pop(spec.number)
                prog = sweeps.progress(driver.study)
            if not driver.in_flight:
                if prog.done >= n_trials:
                    break
                continue
            _collect_finished(driver, orch)
            time.sleep(orch.poll_seconds)
    except BaseException as exc:
        marked = driver.interrupt(f"sweep stopped: {type(exc).__name__}")
        if marked:
            log.warning("sweep stopped: trials %s marked interrupted; the next run tries them again", marked)
        raise


def _dispatch(
    deployment: str, spec: TrialSpec, base: TrainConfig, dataset: ExportManifest, bench: BenchmarkConfig,
    sweep: SweepConfig,
) -> UUID:  # fmt: skip
    from prefect.deployments import run_deployment

    params = {
        "trial": spec.model_dump(mode="json"),
        "train_config": base.model_dump(mode="json"),
        "dataset": dataset.model_dump(mode="json"),
        "benchmark_config": bench.model_dump(mode="json"),
        "sweep": sweep.model_dump(mode="json"),
    }
    run = run_deployment(deployment, parameters=params, timeout=0)
    get_run_logger().info("trial %d runs as flow run '%s' of %s", spec.number, run.name, deployment)
    return run.id


def _collect_finished(driver: Driver, orch: OrchestrationConfig) -> None:
    """Take the trials whose flow runs ended out of flight; one that crashed, was cancelled or
    never started in time is marked interrupted (tried again by the next run of the sweep)."""
    from prefect.client.orchestration import get_client

    from pyroblur.registry import sweeps
    from tasks.remote import settle_link

    with get_client(sync_client=True) as client:
        for number, (spec, flow_run_id) in list(driver.in_flight.items()):
            assert flow_run_id is not None
            run = client.read_flow_run(flow_run_id)
            state = run.state
            if state is not None and state.is_final():
                driver.in_flight.pop(number)
                settle_link(run, None)
                if not state.is_completed():
                    why = f"trial flow run '{run.name}' ended {state.name}: {state.message or ''}"
                    get_run_logger().warning("trial %d: %s", number, why)
                    if sweeps.mark_interrupted(driver.study, [number], why):
                        sweeps.log_trial(driver.root, spec.mlflow_run_id, "INTERRUPTED", None, None, {}, error=why)
                        sweeps.recover(driver.study, driver.sweep.max_requeues, running_too=False)
                continue
            waited = (time.time() - run.created.timestamp()) if run.created else 0.0
            if (state is None or not state.is_running()) and waited > orch.stage_start_timeout_minutes * 60:
                why = f"no gpu worker started trial {number} within {orch.stage_start_timeout_minutes:g} min"
                _cancel(flow_run_id, why)
                driver.in_flight.pop(number)
                if sweeps.mark_interrupted(driver.study, [number], why):
                    sweeps.log_trial(driver.root, spec.mlflow_run_id, "INTERRUPTED", None, None, {}, error=why)
                    sweeps.recover(driver.study, driver.sweep.max_requeues, running_too=False)


def finish(driver: Driver, status: str) -> dict[str, Any]:
    """Write the comparison (table, plot) under ``<data>/sweeps/<study>/``, log it and the sweep's
    figures to its MLflow run; returns the figures."""
    from pyroblur.registry import sweeps

    folder = driver.root / "sweeps" / driver.name
    files = sweeps.save_comparison(driver.study, folder)
    rows = sweeps.comparison_rows(driver.study)
    states = [r["state"] for r in rows]
    saved = sum(float(r.get("seconds_saved") or 0) for r in rows)
    figures = {
        "trials_completed": states.count("COMPLETE"),
        "trials_pruned": states.count("PRUNED"),
        "trials_failed": states.count("FAIL"),
        "trials_interrupted": states.count("INTERRUPTED"),
        "seconds_saved_by_pruning": round(saved, 1),
    }
    best = rows[0] if rows and rows[0]["state"] == "COMPLETE" else None
    tags = {"pyroblur.best_trial": str(best["trial"])} if best else {}
    if best:
        figures["best_objective"] = best["objective"]
    sweeps.end_sweep_run(driver.root, driver.sweep_run_id, status, figures, tags, folder)
    return {**figures, "best": best, "comparison": {k: str(v) for k, v in files.items()}}


class SweepSummary(BaseModel):
    """What a sweep run did: the study, its trials' counts, the best trial and the files."""

    study_name: str
    storage: str
    mlflow_run_id: str
    figures: dict[str, Any] = Field(default_factory=dict)
    best_params: dict[str, Any] | None = None
