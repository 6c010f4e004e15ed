"""``training_pipeline``: download -> curate -> balance + split -> export -> train -> benchmark -> promote."""

from __future__ import annotations

from typing import Any, Literal, get_args

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from pyroblur.config import PipelineConfig
from pyroblur.manifests import BenchmarkManifest, PromotionManifest
from pyroblur.registry.lineage import record_sources
from tasks.notify import notify_failure
from tasks.pipeline import balance_split, benchmark, curate, download, export, promote, train
from tasks.remote import GpuStageResult, run_gpu_stage

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


@flow(name="training_pipeline", log_prints=False, on_failure=[notify_failure], on_crashed=[notify_failure])
def training_pipeline(config: PipelineConfig, until: Stage = "promote") -> PipelineResult:
    """Build the dataset, train a detector and benchmark it, each stage cached on its inputs.

    ``until`` stops after that stage (e.g. ``curate`` to inspect the data in FiftyOne first).
    """
    states: dict[str, str] = {}
    last = get_args(Stage).index(until)

    def stop_after(stage: str) -> bool:
        return get_args(Stage).index(stage) >= last

    fetch = download.with_options(refresh_cache=True) if config.orchestration.refresh_sources else download
    downloads = run_stage(states, "download", fetch, config.sources)
    if stop_after("download"):
        return _finish(config, states)
    curated = run_stage(states, "curate", curate, config.curation, downloads)
    if stop_after("curate"):
        return _finish(config, states)
    selection = run_stage(states, "balance_split", balance_split, config.balance, config.split, curated)
    if stop_after("balance_split"):
        return _finish(config, states)
    dataset = run_stage(states, "export", export, selection)
    if stop_after("export"):
        return _finish(config, states)
    if stop_after("train"):
        run_stage(states, "train", train, config.train, dataset)
        return _finish(config, states)
    # On deployments the GPU stage can be its own deployment on the gpu pool (same tasks, same cache).
    gpu = run_gpu_stage(states, config, dataset) if config.orchestration.train_deployment else GpuStageResult()
    model = gpu.model or run_stage(states, "train", train, config.train, dataset)
    report = gpu.report or run_stage(
        states,
        "benchmark",
        benchmark,
        config.benchmark,
        model,
        dataset,
        config.train.imgsz,
        config.curation.dataset_name,
    )
    decision = gpu.promotion or run_stage(
        states, "promote", promote, config.benchmark, report, dataset, config.train.imgsz
    )
    record_sources(decision.digest, downloads.digest)  # lets retrain-weekly skip unchanged data
    return _finish(config, states, report, decision)
