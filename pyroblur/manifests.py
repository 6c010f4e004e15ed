"""Small results that tasks return (and Prefect persists): paths, digests, counts, metrics.

Each manifest can ``verify()`` that what it describes still exists as described, so a cached
result is never returned for outputs that were deleted or replaced.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, Field

from pyroblur.core.hashing import sha256_file

log = logging.getLogger(__name__)


class Manifest(BaseModel):
    """Base: ``digest`` identifies the content; downstream cache keys use it."""

    digest: str

    def verify(self) -> bool:  # pragma: no cover - overridden
        return True


class SourceOutput(BaseModel):
    name: str
    kind: str
    index_path: str
    index_sha256: str
    num_images: int
    num_boxes: dict[str, int] = Field(default_factory=dict)


class DownloadManifest(Manifest):
    sources: list[SourceOutput]

    def verify(self) -> bool:
        for src in self.sources:
            index = Path(src.index_path)
            if not index.exists() or sha256_file(index) != src.index_sha256:
                log.info("cache check: %s changed or is gone", index)
                return False
        return True


class CurateManifest(Manifest):
    """What curation produced. Only content-determined fields: downstream cache keys hash it
    whole, so timings or incremental-import statistics must not go in here."""

    dataset_name: str
    num_imported: int
    num_curated: int
    rejected: dict[str, int] = Field(default_factory=dict, description="reason -> count")
    label_issues: dict[str, int] = Field(default_factory=dict, description="reason -> boxes")
    duplicate_groups: int = Field(0, description="near-duplicate groups (2+ curated images)")
    exact_duplicates: int = Field(0, description="byte-identical copies rejected as 'duplicate'")
    near_duplicate_images: int = Field(0, description="curated images in a near-duplicate group")

    def verify(self) -> bool:
        from pyroblur.curation.dataset import dataset_stamp

        return dataset_stamp(self.dataset_name, "curate") == self.digest


class SplitManifest(Manifest):
    dataset_name: str
    images: dict[str, int] = Field(description="split -> images")
    per_class: dict[str, dict[str, int]] = Field(description="split -> class -> images containing it")
    instances: dict[str, int] = Field(default_factory=dict, description="class -> boxes selected")
    achieved: dict[str, int] = Field(description="class -> selected images containing it")
    requested: int
    warnings: list[str] = Field(default_factory=list)

    def verify(self) -> bool:
        from pyroblur.curation.dataset import dataset_stamp

        return dataset_stamp(self.dataset_name, "split") == self.digest


class ExportManifest(Manifest):
    path: str
    data_yaml: str
    images: dict[str, int]

    def verify(self) -> bool:
        from pyroblur.curation.export import read_stamp

        return read_stamp(Path(self.path)) == self.digest


class TrainManifest(Manifest):
    run_dir: str
    weights: str
    epochs: int
    resumed: bool = False
    device: str
    seconds: float
    final_metrics: dict[str, float] = Field(default_factory=dict)

    def verify(self) -> bool:
        w = Path(self.weights)
        return w.exists() and sha256_file(w) == self.digest


class ClassMetrics(BaseModel):
    map50: float
    map50_95: float
    precision: float
    recall: float
    f1: float
    images: int
    instances: int


class BenchmarkManifest(Manifest):
    weights: str
    report_json: str
    report_md: str
    per_class: dict[str, ClassMetrics]
    overall: dict[str, float]
    face_by_size: dict[str, dict[str, float]] = Field(default_factory=dict)
    ms_per_image: float
    device: str
    parameters: int
    size_mb: float
    onnx: dict[str, float | str] = Field(default_factory=dict)
    pr_curve: str | None = None
    dataset_name: str | None = Field(None, description="FiftyOne dataset holding the predictions")

    def verify(self) -> bool:
        if not (Path(self.report_json).exists() and Path(self.weights).exists()):
            return False
        if self.dataset_name:  # the predictions and TP/FP/FN must still be in the dataset
            from pyroblur.curation.dataset import dataset_stamp

            return dataset_stamp(self.dataset_name, "benchmark") == self.digest
        return True


class PromotionManifest(Manifest):
    """The registry's decision about one model (``digest`` is the candidate's registry id)."""

    registry: str
    promoted: bool
    reason: str
    primary_metric: str
    candidate_value: float
    champion_id: str | None = None
    champion_value: float | None = None

    def verify(self) -> bool:
        from pyroblur.registry.store import load_registry

        path = Path(self.registry)
        try:
            return path.exists() and load_registry(path).get(self.digest) is not None
        except Exception:  # noqa: BLE001 - an unreadable registry means the record is stale
            return False
