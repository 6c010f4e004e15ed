"""The Prefect side of the MLflow record: link a flow run and the MLflow run of its model.

A plain function, not a task: it runs on every flow run (cached or not) and caches nothing, so
a re-run whose stages are all ``Cached`` stays all ``Cached``.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run

from pyroblur.config import PipelineConfig
from pyroblur.core.settings import get_paths
from pyroblur.manifests import BenchmarkManifest, DownloadManifest, ExportManifest, PromotionManifest


def _flow_run_url() -> str:
    """The flow run's page in the Prefect UI ("" with an ephemeral server, which has none)."""
    url = flow_run.ui_url or ""
    return url if url.startswith("http") else ""


def link_mlflow_run(
    config: PipelineConfig,
    downloads: DownloadManifest,
    dataset: ExportManifest,
    report: BenchmarkManifest | None,
    promotion: PromotionManifest,
) -> str:
    """Add the resolved config, the lineage and this flow run to the model's MLflow run, and a
    link artifact to that run in the Prefect UI; returns the MLflow run id."""
    from pyroblur.registry import tracking
    from pyroblur.registry.store import load_registry

    entry = load_registry(get_paths().registry).get(promotion.digest)
    lineage = {
        "sources_digest": downloads.digest,
        "sources": [s.model_dump(mode="json") for s in downloads.sources],
        "export_digest": dataset.digest,
        "export_path": dataset.path,
        "images": dataset.images,
        "test_digest": report.test_digest if report else "",
        "model_id": promotion.digest,
        "model_version": f"{entry.model_name}/{entry.version}" if entry else None,
        "report": report.report_json if report else None,
    }
    run_id, url = tracking.link_flow_run(
        get_paths().root,
        promotion.digest,
        config.model_dump(mode="json"),
        {"id": str(flow_run.id or ""), "url": _flow_run_url()},
        lineage,
    )
    version = f" (model version {entry.model_name} v{entry.version})" if entry else ""
    create_link_artifact(
        key="mlflow-run",
        link=url,
        link_text=f"MLflow run {run_id}",
        description=f"The MLflow run of model {promotion.digest}{version}: params, per-epoch metrics, "
        "benchmark, artifacts",
    )
    get_run_logger().info("MLflow run %s%s: %s", run_id, version, url)
    return run_id
