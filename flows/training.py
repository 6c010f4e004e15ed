"""``training_pipeline``: download -> curate -> balance + split -> export -> train -> benchmark -> promote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from pyroblur.config import BenchmarkConfig, PipelineConfig, TrainConfig
from pyroblur.curation.corrections import data_digest
from pyroblur.curation.corrections import resolve as resolve_corrections
from pyroblur.manifests import (
    BenchmarkManifest,
    CorrectionsManifest,
    CurateManifest,
    DownloadManifest,
    ExportManifest,
    PromotionManifest,
)
from pyroblur.preflight import preflight
from pyroblur.registry.lineage import record_sources
from tasks.notify import notify_failure, route_library_logs
from tasks.pipeline import balance_split, benchmark, curate, download, export, promote, train
from tasks.remote import GpuStageResult, run_gpu_stage
from tasks.tracking import link_mlflow_run

route_library_logs()  # the library's log lines go into each run's logs in the UI

#: Stages a run can stop after (``until``); the default runs them all.
Stage = Literal["download", "curate", "balance_split", "export", "train", "promote"]


class PipelineResult(BaseModel):
    """What a run did: each stage's final Prefect state name, the benchmark and the promotion
    (``None`` when the run stopped before them)."""

    states: dict[str, str]
    benchmark: BenchmarkManifest | None = None
    promotion: PromotionManifest | None = None


def _finish(
    config: PipelineConfig,
    states: dict[str, str],
    report: BenchmarkManifest | None = None,
    decision: PromotionManifest | None = None,
) -> PipelineResult:
    rows = "\n".join(f"| {k} | {v} |" for k, v in states.items())
    create_markdown_artifact(
        key="pyroblur-pipeline",
        markdown=f"# Pipeline '{config.name}'\n\n| stage | state |\n|---|---|\n{rows}\n",
        description="Stage states of this run",
    )
    get_run_logger().info("stage states: %s", states)
    return PipelineResult(states=states, benchmark=report, promotion=decision)


def run_stage(states: dict[str, str], name: str, task: Any, *args: Any) -> Any:
    """Run one stage's task, record its final state name in ``states``, return its result."""
    state = task(*args, return_state=True)
    states[name] = state.name
    return state.result()  # raises the task's own error when it failed for good


def train_benchmark_promote(
    states: dict[str, str],
    train_config: TrainConfig,
    dataset: ExportManifest,
    benchmark_config: BenchmarkConfig | None,
    dataset_name: str | None = None,
    done: GpuStageResult | None = None,
) -> GpuStageResult:
    """train -> benchmark -> promote: the one place that sequence is written.

    Stages ``done`` already has (what the GPU stage's run did remotely) are not run again; no
    ``benchmark_config`` stops after training (the GPU stage when benchmarks run on the CPU).
    """
    done = done or GpuStageResult()
    model = done.model or run_stage(states, "train", train, train_config, dataset)
    if benchmark_config is None:
        return GpuStageResult(states=dict(states), model=model)
    imgsz = train_config.imgsz
    report = done.report or run_stage(
        states, "benchmark", benchmark, benchmark_config, model, dataset, imgsz, dataset_name
    )
    decision = done.promotion or run_stage(states, "promote", promote, benchmark_config, report, dataset, imgsz)
    return GpuStageResult(states=dict(states), model=model, report=report, promotion=decision)


@dataclass
class PreparedData:
    """The data stages' results (``None`` for a stage a run stopped before)."""

    downloads: DownloadManifest | None = None
    corrections: CorrectionsManifest | None = None
    curated: CurateManifest | None = None
    dataset: ExportManifest | None = None


def prepare_data(
    states: dict[str, str], config: PipelineConfig, stop_after: Callable[[str], bool] = lambda stage: False
) -> PreparedData:
    """download -> curate -> balance_split -> export (each a cached task), stopping after the
    first stage for which ``stop_after`` is true; the one place that sequence is written."""
    out = PreparedData()
    fetch = download.with_options(refresh_cache=True) if config.orchestration.refresh_sources else download
    out.downloads = run_stage(states, "download", fetch, config.sources)
    if stop_after("download"):
        return out
    out.corrections = resolve_corrections(config.curation.dataset_name, config.curation.corrections)
    out.curated = run_stage(states, "curate", curate, config.curation, out.downloads, out.corrections)
    if stop_after("curate"):
        return out
    selection = run_stage(states, "balance_split", balance_split, config.balance, config.split, out.curated)
    if stop_after("balance_split"):
        return out
    out.dataset = run_stage(states, "export", export, selection)
    return out


@flow(name="training_pipeline", log_prints=False, on_failure=[notify_failure], on_crashed=[notify_failure])
def training_pipeline(config: PipelineConfig, until: Stage = "promote") -> PipelineResult:
    """Build the dataset, train a detector and benchmark it, each stage cached on its inputs.

    Args:
        config: The pipeline's configuration (configs/pyroblur.yaml as a form).
        until: Stop after this stage, e.g. 'curate' to inspect the data in FiftyOne first.
    """
    preflight(config, until=until)  # registry, packages, weights, devices: fail in seconds, not after training
    states: dict[str, str] = {}
    last = get_args(Stage).index(until)

    def stop_after(stage: str) -> bool:
        return get_args(Stage).index(stage) >= last

    data = prepare_data(states, config, stop_after)
    if data.dataset is None or stop_after("export"):
        return _finish(config, states)
    downloads, corrections, curated, dataset = data.downloads, data.corrections, data.curated, data.dataset
    if stop_after("train"):
        train_benchmark_promote(states, config.train, dataset, None)
        return _finish(config, states)
    # On deployments the GPU stage can be its own deployment on the gpu pool (same tasks, same cache).
    gpu = run_gpu_stage(states, config, dataset) if config.orchestration.train_deployment else None
    done = train_benchmark_promote(
        states, config.train, dataset, config.benchmark, config.curation.dataset_name, done=gpu
    )
    # lets retrain-weekly skip unchanged data (downloads and label corrections)
    record_sources(done.promotion.digest, data_digest(downloads.digest, corrections), corrections=curated.corrections)
    link_mlflow_run(config, downloads, dataset, done.report, done.promotion)  # config, lineage, flow-run link
    return _finish(config, states, done.report, done.promotion)
