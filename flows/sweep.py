"""``hyperparameter_sweep``: the data stages once, then trials (one per free GPU slot), then the
best trial through the benchmark and the promotion gates. ``sweep_trial``: one trial (gpu pool).

    download -> curate -> balance_split -> export      (the pipeline's cached tasks)
        -> trials: ask (Optuna) -> train (pruned early, or to the end) -> objective on val -> tell
        -> comparison table + plot (MLflow, the sweep's run)
        -> best trial: train (its run folder is done) -> benchmark -> promote (same gates)

Wiring only: the trial's tasks and the driver's loop live in ``tasks/sweep.py``, the study and
the MLflow records in ``pyroblur/registry/sweeps.py``; docs/sweep.md explains it.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.training import prepare_data, train_benchmark_promote
from pyroblur.config import BenchmarkConfig, ConfigError, PipelineConfig, SweepConfig, TrainConfig
from pyroblur.curation.corrections import data_digest
from pyroblur.manifests import BenchmarkManifest, ExportManifest, PromotionManifest
from pyroblur.preflight import preflight
from pyroblur.registry.lineage import record_sources
from tasks.notify import notify_failure, route_library_logs
from tasks.remote import run_gpu_stage
from tasks.sweep import (
    Driver,
    NoTrialCompleted,
    SweepSummary,
    TrialResult,
    TrialSpec,
    drive,
    finish,
    run_trial,
    study_name,
)
from tasks.tracking import link_mlflow_run

route_library_logs()


class SweepResult(BaseModel):
    """What a sweep run did: stage states, the study's figures, and the best trial's benchmark
    and promotion decision."""

    states: dict[str, str] = Field(default_factory=dict)
    sweep: SweepSummary
    benchmark: BenchmarkManifest | None = None
    promotion: PromotionManifest | None = None


@flow(name="sweep_trial", log_prints=False, persist_result=True)
def sweep_trial(
    trial: TrialSpec,
    train_config: TrainConfig,
    dataset: ExportManifest,
    benchmark_config: BenchmarkConfig,
    sweep: SweepConfig,
) -> TrialResult:
    """One trial of a sweep (started by ``hyperparameter_sweep`` on the gpu pool; not meant to be
    run by hand): train with the trial's parameters, score it, record it in the study and MLflow.

    Args:
        trial: The asked trial (study, number, parameters, MLflow run).
        train_config: The sweep's base train section (the trial's parameters replace its values).
        dataset: The exported YOLO dataset.
        benchmark_config: The benchmark section (operating point of the objective).
        sweep: The sweep section (pruning).
    """
    return run_trial(trial, train_config, dataset, benchmark_config, sweep)


@flow(name="hyperparameter_sweep", log_prints=False, on_failure=[notify_failure], on_crashed=[notify_failure])
def hyperparameter_sweep(config: PipelineConfig, until: Literal["sweep", "promote"] = "promote") -> SweepResult:
    """Search the train section's hyperparameters (the config's sweep section), then benchmark
    the best trial and promote it only if it passes every gate.

    Args:
        config: The pipeline's configuration with a sweep section (configs/sweep-demo.yaml as a form).
        until: 'sweep' stops after the trials and the comparison (no benchmark, no promotion).
    """
    from pyroblur.core.settings import get_paths
    from pyroblur.registry import sweeps, tracking
    from pyroblur.training.sweep import trial_train_config

    if config.sweep is None:
        raise ConfigError("the config has no sweep section: add one (see configs/sweep-demo.yaml, docs/sweep.md)")
    sweep, log, root, started = config.sweep, get_run_logger(), get_paths().root, time.monotonic()
    preflight(config)  # registry, packages, weights, devices: fail in seconds, not after the trials
    states: dict[str, str] = {}
    data = prepare_data(states, config)
    dataset = data.dataset
    name = study_name(config.name, sweep, config.train, config.benchmark, dataset.digest)
    url = sweeps._safe(sweeps.storage_url(root))
    log.info("study '%s' in %s", name, url)
    with sweeps.driving(root, name):
        study = sweeps.open_study(root, name, sweep.pruning)
        for number, params in sweeps.recover(study, sweep.max_requeues):
            log.info("trial %d was interrupted: its parameters %s run again", number, params)
        run_id = sweeps.sweep_run(root, name, {
            **tracking.flatten("sweep", sweep.model_dump(mode="json")), "study": name, "storage": url,
            "data.export_digest": dataset.digest,
        })  # fmt: skip
        driver = Driver(study, name, sweep, run_id)
        try:
            drive(driver, config.train, dataset, config.benchmark, config.orchestration, started)
        except BaseException:
            try:
                finish(driver, "KILLED")  # the comparison so far, and the run marked stopped
            except Exception as exc:  # noqa: BLE001 - never hide why the sweep stopped
                log.warning("comparison of the stopped sweep not written: %s", exc)
            raise
        figures = finish(driver, "FINISHED")
    summary = SweepSummary(study_name=name, storage=url, mlflow_run_id=run_id, figures=figures)
    states["sweep"] = "Completed"
    best = figures.get("best")
    if best is None:
        raise NoTrialCompleted(
            f"sweep '{name}': no trial completed ({figures})",
            subject=name,
            hint="see the trials' errors in the comparison table (MLflow, the sweep's run) and the flow run's logs",
        )
    best_params = {k.removeprefix("param:"): v for k, v in best.items() if k.startswith("param:")}
    summary.best_params = best_params
    log.info("best trial %d: %s, objective %.6f", best["trial"], best_params, best["objective"])
    create_markdown_artifact(key="pyroblur-sweep", markdown=_markdown(summary), description=f"Sweep {name}")
    if until == "sweep":
        return SweepResult(states=states, sweep=summary)
    # The best trial as a normal candidate: the pipeline's train (its run folder is done),
    # benchmark (test split) and promote (every gate) tasks.
    best_config = config.model_copy(update={"train": trial_train_config(config.train, best_params)})
    gpu = run_gpu_stage(states, best_config, dataset) if config.orchestration.train_deployment else None
    done = train_benchmark_promote(
        states, best_config.train, dataset, config.benchmark, config.curation.dataset_name, done=gpu
    )
    record_sources(done.promotion.digest, data_digest(data.downloads.digest, data.corrections),
                   corrections=data.curated.corrections)  # fmt: skip
    link_mlflow_run(best_config, data.downloads, dataset, done.report, done.promotion)
    log.info("stage states: %s", states)
    return SweepResult(states=states, sweep=summary, benchmark=done.report, promotion=done.promotion)


def _markdown(summary: SweepSummary) -> str:
    f = summary.figures
    rows = "\n".join(f"| {k} | {v} |" for k, v in f.items() if k not in ("best", "comparison"))
    return (
        f"# Sweep `{summary.study_name}`\n\nStudy database: `{summary.storage}`; MLflow run `{summary.mlflow_run_id}` "
        f"(comparison table and plot under `comparison/`).\n\n| figure | value |\n|---|---|\n{rows}\n\n"
        f"Best parameters: `{summary.best_params}`\n"
    )
