"""Operations flows: the GPU stage as its own deployment, and the weekly retrain.

- ``train_stage`` (gpu pool): the ``train`` task, plus ``benchmark`` and ``promote`` when given a
  benchmark config (GPU benchmark). ``training_pipeline`` calls it through ``run_deployment``.
- ``retrain_weekly`` (cpu pool, cron schedule): downloads again bypassing the cache, stops early
  when the champion was trained on exactly these downloads (unless ``orchestration.force``), else
  runs ``training_pipeline`` (re-curate, train a challenger, benchmark, promote only if better).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from flows.training import PipelineResult, run_stage, training_pipeline
from pyroblur.config import BenchmarkConfig, PipelineConfig, TrainConfig
from pyroblur.manifests import ExportManifest
from pyroblur.registry.lineage import unchanged_reason
from tasks.notify import notify_failure
from tasks.pipeline import benchmark, download, promote, train
from tasks.remote import GpuStageResult


@flow(
    name="train_stage", log_prints=False, persist_result=True, on_failure=[notify_failure], on_crashed=[notify_failure]
)
def train_stage(
    train_config: TrainConfig,
    dataset: ExportManifest,
    benchmark_config: BenchmarkConfig | None = None,
    dataset_name: str | None = None,
) -> GpuStageResult:
    """GPU stage: train on an exported dataset; with ``benchmark_config`` also benchmark and promote
    (predictions go into FiftyOne dataset ``dataset_name`` when given)."""
    states: dict[str, str] = {}
    model = run_stage(states, "train", train, train_config, dataset)
    if benchmark_config is None:
        return GpuStageResult(states=states, model=model)
    imgsz = train_config.imgsz
    report = run_stage(states, "benchmark", benchmark, benchmark_config, model, dataset, imgsz, dataset_name)
    decision = run_stage(states, "promote", promote, benchmark_config, report, dataset, imgsz)
    return GpuStageResult(states=states, model=model, report=report, promotion=decision)


class RetrainResult(BaseModel):
    """What a scheduled retrain did: trained or stopped early, and why."""

    trained: bool
    reason: str
    sources_digest: str
    pipeline: PipelineResult | None = None


@flow(name="retrain_weekly", log_prints=False, on_failure=[notify_failure], on_crashed=[notify_failure])
def retrain_weekly(config: PipelineConfig) -> RetrainResult:
    """Refresh the sources; retrain, benchmark and promote only if they changed (or ``force``)."""
    log = get_run_logger()
    downloads = download.with_options(refresh_cache=True)(config.sources)
    reason = unchanged_reason(downloads.digest)
    if reason and not config.orchestration.force:
        log.info("stopping early: %s (set orchestration.force to retrain anyway)", reason)
        create_markdown_artifact(
            key="pyroblur-retrain", markdown=f"# Weekly retrain\n\nStopped early: {reason}.\n", description=reason
        )
        return RetrainResult(trained=False, reason=reason, sources_digest=downloads.digest)
    why = "forced" if reason else "sources changed since the champion was trained (or no champion yet)"
    log.info("retraining: %s", why)
    result = training_pipeline(config)
    decision = result.promotion
    log.info("promotion decision: %s: %s", "promoted" if decision.promoted else "not promoted", decision.reason)
    create_markdown_artifact(
        key="pyroblur-retrain",
        markdown=(
            f"# Weekly retrain\n\nRetrained: {why}.\n\n"
            f"**{'Promoted' if decision.promoted else 'Not promoted'}**: {decision.reason}\n"
        ),
        description="Weekly retrain decision",
    )
    return RetrainResult(trained=True, reason=decision.reason, sources_digest=downloads.digest, pipeline=result)
