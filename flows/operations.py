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
from prefect.states import Completed, State
from pydantic import BaseModel

from flows.training import PipelineResult, train_benchmark_promote, training_pipeline
from pyroblur.config import BenchmarkConfig, PipelineConfig, TrainConfig
from pyroblur.curation.corrections import data_digest
from pyroblur.curation.corrections import resolve as resolve_corrections
from pyroblur.manifests import ExportManifest
from pyroblur.registry.lineage import unchanged_reason
from tasks.notify import notify_failure
from tasks.pipeline import download
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
    (predictions go into FiftyOne dataset ``dataset_name`` when given).

    Args:
        train_config: The config's train section.
        dataset: The exported YOLO dataset (the export stage's manifest).
        benchmark_config: The config's benchmark section; empty: train only (benchmark on the CPU).
        dataset_name: FiftyOne dataset that receives the test split's predictions (empty: none).
    """
    return train_benchmark_promote({}, train_config, dataset, benchmark_config, dataset_name)


class RetrainResult(BaseModel):
    """What a scheduled retrain did: trained or stopped early, and why."""

    trained: bool
    reason: str
    sources_digest: str
    pipeline: PipelineResult | None = None


@flow(name="retrain_weekly", log_prints=False, on_failure=[notify_failure], on_crashed=[notify_failure])
def retrain_weekly(config: PipelineConfig) -> State[RetrainResult]:
    """Refresh the sources; retrain, benchmark and promote only if they changed (or ``force``).

    The decision is the final state's message (and an early stop its name, ``Skipped``), so the
    run list and a notification show it without opening the logs.
    """
    log = get_run_logger()
    downloads = download.with_options(refresh_cache=True)(config.sources)
    corrections = resolve_corrections(config.curation.dataset_name, config.curation.corrections)
    reason = unchanged_reason(data_digest(downloads.digest, corrections))
    if reason and not config.orchestration.force:
        log.info("stopping early: %s (set orchestration.force to retrain anyway)", reason)
        create_markdown_artifact(
            key="pyroblur-retrain", markdown=f"# Weekly retrain\n\nStopped early: {reason}.\n", description=reason
        )
        result = RetrainResult(trained=False, reason=reason, sources_digest=downloads.digest)
        return Completed(name="Skipped", message=f"stopped early: {reason}", data=result)
    why = "forced" if reason else "sources changed since the champion was trained (or no champion yet)"
    log.info("retraining: %s", why)
    pipeline = training_pipeline(config)
    decision = pipeline.promotion
    verdict = "promoted" if decision.promoted else "not promoted"
    log.info("promotion decision: %s: %s", verdict, decision.reason)
    create_markdown_artifact(
        key="pyroblur-retrain",
        markdown=f"# Weekly retrain\n\nRetrained: {why}.\n\n**{verdict.capitalize()}**: {decision.reason}\n",
        description="Weekly retrain decision",
    )
    result = RetrainResult(trained=True, reason=decision.reason, sources_digest=downloads.digest, pipeline=pipeline)
    return Completed(message=f"retrained ({why}); {verdict}: {decision.reason}", data=result)
