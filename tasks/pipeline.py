"""The training pipeline's tasks. Each: retries with backoff, a content-based cache key that
verifies its outputs, a small manifest as result, and an artifact where a person wants one."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pyroblur.config import BalanceConfig, BenchmarkConfig, CurationConfig, SplitConfig, TrainConfig
from pyroblur.core.hashing import digest_of
from pyroblur.core.records import load_records
from pyroblur.core.settings import get_paths
from pyroblur.data.sources.models import SourceConfig
from pyroblur.manifests import (
    BenchmarkManifest,
    CorrectionsManifest,
    CurateManifest,
    DownloadManifest,
    ExportManifest,
    PromotionManifest,
    SplitManifest,
    TrainManifest,
)
from tasks._cache import StagePolicy
from tasks._common import RETRIES, RETRY_DELAY, retry_transient
from tasks._keys import stage_digest


def _opts(stage: str) -> dict:
    return {
        "name": stage,
        "cache_policy": StagePolicy(stage=stage),
        "retries": RETRIES,
        "retry_delay_seconds": RETRY_DELAY,
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": retry_transient,  # permanent errors fail on the first attempt
        "persist_result": True,
    }


@task(**_opts("download"))
def download(sources: list[SourceConfig]) -> DownloadManifest:
    """Download or generate every source into ``<data>/raw/<name>``; index their records."""
    from pyroblur.data.sources import fetch_and_index
    from tasks._secrets import load_secret_blocks

    load_secret_blocks(sources)
    log = get_run_logger()
    outs = [fetch_and_index(src, get_paths().raw / src.name, get_paths().indexes) for src in sources]
    for o in outs:
        log.info("source %s: %d images, boxes %s", o.name, o.num_images, o.num_boxes)
    return DownloadManifest(digest=digest_of([o.index_sha256 for o in outs]), sources=outs)


@task(**_opts("curate"))
def curate(
    cfg: CurationConfig, downloads: DownloadManifest, corrections: CorrectionsManifest | None = None
) -> CurateManifest:
    """Import every source into the FiftyOne dataset (with the label ``corrections``, if any),
    validate and deduplicate."""
    from pyroblur.curation.importer import report_rows, run_curation

    records = [r for s in downloads.sources for r in load_records(Path(s.index_path))]
    run = run_curation(records, cfg, stage_digest(curate, cfg, downloads, corrections), corrections=corrections)
    manifest = run.manifest
    get_run_logger().info("FiftyOne import %s; seconds %s", run.imported, run.seconds)
    create_table_artifact(
        key="pyroblur-curation",
        table=report_rows(manifest),
        description=f"Curation of '{cfg.dataset_name}': {manifest.num_curated} of {manifest.num_imported} images kept",
    )
    return manifest


@task(**_opts("balance_split"))
def balance_split(bal: BalanceConfig, spl: SplitConfig, curated: CurateManifest) -> SplitManifest:
    """Balance to N images per class and split train/val/test without leakage."""
    from pyroblur.curation.split import balance_and_split

    digest = stage_digest(balance_split, bal, spl, curated)
    manifest = balance_and_split(curated.dataset_name, bal, spl, digest, corrections=curated.corrections)
    log = get_run_logger()
    for w in manifest.warnings:
        log.warning(w)
    return manifest


@task(**_opts("export"))
def export(selection: SplitManifest) -> ExportManifest:
    """Write the selected images as a YOLO dataset under ``<data>/exports/<digest>``."""
    from pyroblur.curation.dataset import export_items
    from pyroblur.curation.export import read_augmented, save_yolo_dataset

    digest = stage_digest(export, selection)
    out = get_paths().exports / digest[:16]
    allowed = bool(selection.evidence and selection.evidence.allowed)
    counts = save_yolo_dataset(
        export_items(selection.dataset_name), out, digest, allow_train_as_val=allowed,
        lineage={"corrections": selection.corrections}, oversample=selection.oversample, seed=int(digest[:8], 16),
    )  # fmt: skip
    augmented = read_augmented(out)
    if augmented:
        rows = [{"split": s, "originals": n, "augmented copies": sum(augmented.values()) if s == "train" else 0}
                for s, n in counts.items()]  # fmt: skip
        create_table_artifact(key="pyroblur-export", table=rows, description=f"Oversampled (train only): {augmented}")
    return ExportManifest(
        digest=digest, path=str(out), data_yaml=str(out / "data.yaml"), images=counts, evidence=selection.evidence,
        augmented=augmented,
    )  # fmt: skip


@task(**_opts("train"))
def train(cfg: TrainConfig, dataset: ExportManifest) -> TrainManifest:
    """Train with ultralytics; a retry resumes from the run folder's last checkpoint."""
    from pyroblur.registry import tracking
    from pyroblur.training.trainer import train as run_train

    run_dir = get_paths().runs / stage_digest(train, cfg, dataset)[:16]
    get_run_logger().info("training run folder: %s", run_dir)
    manifest = run_train(Path(dataset.data_yaml), cfg, run_dir)
    params = {
        **tracking.flatten("train", cfg.model_dump(mode="json")),
        "data.export_digest": dataset.digest,
        "data.export_path": dataset.path,
        **{f"data.images.{k}": str(v) for k, v in dataset.images.items()},
    }
    run_id = tracking.log_training(
        get_paths().root, manifest.digest[:16], Path(manifest.run_dir), Path(manifest.weights), params,
        tags={"pyroblur.sha256": manifest.digest, "pyroblur.device": manifest.device},
    )  # fmt: skip
    get_run_logger().info("MLflow run %s: params, per-epoch series, weights", run_id)
    return manifest


@task(**_opts("benchmark"))
def benchmark(
    cfg: BenchmarkConfig, model: TrainManifest, dataset: ExportManifest, imgsz: int, dataset_name: str | None = None
) -> BenchmarkManifest:
    """Evaluate on the held-out test split, write predictions + TP/FP/FN into FiftyOne, and
    publish the report as a markdown artifact."""
    from pyroblur.curation.dataset import record_predictions
    from pyroblur.evaluation.benchmark import benchmark as run_benchmark
    from pyroblur.evaluation.report import to_markdown

    digest = stage_digest(benchmark, cfg, model, dataset, imgsz, dataset_name)
    out = get_paths().reports / digest[:16]
    manifest, images, preds = run_benchmark(
        Path(model.weights), Path(dataset.data_yaml), imgsz, cfg, out, digest, dataset_name=dataset_name
    )
    if dataset_name and images:  # predictions + per-sample TP/FP/FN for the App (none without test images)
        label = f"{Path(model.run_dir).name}/{Path(model.weights).name} sha256:{model.digest[:12]}"
        conf = manifest.operating_point.conf if manifest.operating_point else {}
        fo_scores = record_predictions(dataset_name, images, preds, digest, model=label, operating_conf=conf)
        field = fo_scores.pop("field")
        fo_scores.pop("eval_key")
        manifest = manifest.model_copy(
            update={
                "dataset_name": dataset_name,
                "predictions_field": field,
                "overall": {**manifest.overall, **fo_scores},
            }
        )
        Path(manifest.report_json).write_text(manifest.model_dump_json(indent=2))
        if cfg.review.enabled:
            review(cfg, model, dataset, imgsz, dataset_name, field)
    create_markdown_artifact(key="pyroblur-benchmark", markdown=to_markdown(manifest), description="Benchmark report")
    from pyroblur.core.hashing import sha256_file
    from pyroblur.evaluation.report import flat_metrics
    from pyroblur.registry import tracking

    onnx = manifest.onnx.get("path")
    tracking.log_benchmark(
        get_paths().root,
        sha256_file(Path(manifest.weights))[:16],
        flat_metrics(manifest),
        tracking.flatten("benchmark", cfg.model_dump(mode="json")),
        out,
        Path(str(onnx)) if onnx and not Path(str(onnx)).is_relative_to(out) else None,
    )
    return manifest


def review(
    cfg: BenchmarkConfig, model: TrainManifest, dataset: ExportManifest, imgsz: int, dataset_name: str, field: str
) -> None:
    """Rank likely label mistakes (FiftyOne Brain + a second opinion) on this benchmark's predictions
    ``field`` and save the review views; with ``review.splits`` holding ``train``, the training
    images get the candidate's predictions (into the same field) first."""
    from pyroblur.curation.dataset import attach_predictions
    from pyroblur.curation.review import rank_labels
    from pyroblur.evaluation.benchmark import load_yolo_split, predict

    rc = cfg.review
    if "train" in rc.splits:
        from pyroblur.core.devices import resolve_device

        train_set = load_yolo_split(Path(dataset.data_yaml), "train")
        device = resolve_device(cfg.device)
        preds = predict(Path(model.weights), train_set.images, imgsz, device, rc.review_conf, cfg.iou)
        attach_predictions(dataset_name, train_set.images, preds, field, "train")
    second = None
    if rc.second_opinion == "centerface":
        from pyroblur.anonymize.centerface import CenterFaceDetector
        from pyroblur.core.errors import ConfigurationError

        try:
            second = CenterFaceDetector(device="cpu")
        except ConfigurationError as exc:  # a review nicety must not fail a trained model's benchmark
            get_run_logger().warning("review without a second opinion: %s (%s)", exc, exc.hint)
    counts = rank_labels(dataset_name, field, rc.splits, second_opinion=second, review_conf=rc.review_conf,
                         min_score=rc.min_score)  # fmt: skip
    get_run_logger().info("review views (samples): %s", counts)


@task(**_opts("promote"))
def promote(cfg: BenchmarkConfig, report: BenchmarkManifest, dataset: ExportManifest, imgsz: int) -> PromotionManifest:
    """Champion/challenger: register the model; it becomes champion only if every gate passes
    (pyroblur.registry.promotion), and a champion is exported to ONNX at ``imgsz`` (recorded in
    its registry entry with its sha256). A champion measured on other test data is re-benchmarked on
    this run's test split first, so both numbers come from the same images."""
    from pyroblur.evaluation.benchmark import benchmark as run_benchmark
    from pyroblur.evaluation.report import flat_metrics
    from pyroblur.registry import promotion
    from pyroblur.registry.store import load_registry

    registry, champion_metrics = get_paths().registry, None
    if (stale := promotion.champion_to_remeasure(registry, dataset.digest)) is not None:
        out = get_paths().reports / f"champion-{stale[0].id}-{dataset.digest[:12]}"
        champ_cfg = cfg.model_copy(update={"onnx": False, "leak_clip_images": 0, "wider": None})
        champ = run_benchmark(stale[1], Path(dataset.data_yaml), imgsz, champ_cfg, out, dataset.digest)[0]
        champion_metrics = flat_metrics(champ)
    decision = promotion.decide(
        registry, report, flat_metrics(report), dataset.digest, dataset.evidence,
        cfg.primary_metric, cfg.min_improvement, cfg.recall_floors, champion_metrics,
        onnx_imgsz=imgsz,  # a champion is also exported to ONNX: anonymization on a CPU runs it without torch
        max_background_damage=cfg.max_background_damage,  # refuses a model that hides everything, first one too
        real_face_floor=cfg.real_face_floor,  # a champion that passed it finds faces alone in anonymize
    )  # fmt: skip
    manifest = promotion.to_manifest(decision, registry, report.test_digest)
    log = get_run_logger()
    log.info("promotion: %s", decision.reason)
    if decision.promoted:
        entry = load_registry(registry).get(decision.candidate_id)
        if entry is not None and entry.onnx is not None:
            log.info("champion ONNX export: %s (sha256 %s)", entry.onnx.path, entry.onnx.sha256[:16])
        else:
            log.warning(
                "champion %s has no ONNX export (see the warnings): anonymization uses the .pt", decision.candidate_id
            )
    create_markdown_artifact(
        key="pyroblur-promotion", markdown=promotion.to_markdown(manifest), description="Promotion decision"
    )
    return manifest
