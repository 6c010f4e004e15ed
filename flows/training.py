"""``training_pipeline``: download -> curate -> balance + split -> export -> train -> benchmark -> promote."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from pyroblur.config import PipelineConfig
from pyroblur.lineage import record_sources
from pyroblur.manifests import BenchmarkManifest, PromotionManifest
from tasks.notify import notify_failure
from tasks.pipeline import balance_split, benchmark, curate, download, export, promote, train
from tasks.remote import GpuStageResult, run_gpu_stage


class PipelineResult(BaseModel):
    """What a run did: each stage's final Prefect state name, and the benchmark."""

    states: dict[str, str]
    benchmark: BenchmarkManifest
    promotion: PromotionManifest


def _run(states: dict[str, str], name: str, task: Any, *args: Any) -> Any:
    state = task(*args, return_state=True)
    states[name] = state.name
    return state.result()  # raises the task's own error when it failed for good


@flow(name="training_pipeline", log_prints=False, on_failure=[notify_failure], on_crashed=[notify_failure])
def training_pipeline(config: PipelineConfig) -> PipelineResult:
    """Build the dataset, train a detector and benchmark it, each stage cached on its inputs."""
    states: dict[str, str] = {}
    fetch = download.with_options(refresh_cache=True) if config.orchestration.refresh_sources else download
    downloads = _run(states, "download", fetch, config.sources)
    curated = _run(states, "curate", curate, config.curation, downloads)
    selection = _run(states, "balance_split", balance_split, config.balance, config.split, curated)
    dataset = _run(states, "export", export, selection)
    # On deployments the GPU stage can be its own deployment on the gpu pool (same tasks, same cache).
    gpu = run_gpu_stage(states, config, dataset) if config.orchestration.train_deployment else GpuStageResult()
    model = gpu.model or _run(states, "train", train, config.train, dataset)
    report = gpu.report or _run(
        states,
        "benchmark",
        benchmark,
        config.benchmark,
        model,
        dataset,
        config.train.imgsz,
        config.curation.dataset_name,
    )
    decision = gpu.promotion or _run(states, "promote", promote, config.benchmark, report, dataset, config.train.imgsz)
    record_sources(decision.digest, downloads.digest)  # lets retrain-weekly skip unchanged data
    summary = "\n".join(f"| {k} | {v} |" for k, v in states.items())
    create_markdown_artifact(
        key="pyroblur-pipeline",
        markdown=f"# Pipeline '{config.name}'\n\n| stage | state |\n|---|---|\n{summary}\n",
        description="Stage states of this run",
    )
    get_run_logger().info("stage states: %s", states)
    return PipelineResult(states=states, benchmark=report, promotion=decision)
