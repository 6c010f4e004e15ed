"""Small results that tasks return (and Prefect persists): paths, digests, counts, metrics.

Plain data: checking that a cached manifest's outputs still exist lives in the orchestration
layer (tasks/_verify.py), which calls library functions.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class Manifest(BaseModel):
    """Base: ``digest`` identifies the content; downstream cache keys use it."""

    digest: str = Field(description="Content digest; downstream cache keys use it.")


class SourceOutput(BaseModel):
    name: str
    kind: str
    index_path: str
    index_sha256: str
    num_images: int
    num_boxes: dict[str, int] = Field(default_factory=dict)


class DownloadManifest(Manifest):
    sources: list[SourceOutput]


class CorrectionsManifest(BaseModel):
    """Label corrections a curation applies (pyroblur.curation.corrections): the version, its
    file and a digest of its entries (what the curate stage's cache key hashes)."""

    version: str
    path: str
    digest: str
    images: int


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
    corrections: str | None = Field(None, description="corrections version applied (pyroblur corrections export)")
    labels_changed: dict[str, int] = Field(
        default_factory=dict, description="corrected images and boxes removed/added/moved against the sources"
    )


class Evidence(BaseModel):
    """How many images per class each held-out split has, against the configured minimum.

    'shortfalls' holds one sentence per (split, class) below its minimum, naming the split,
    the class, the count and the setting; a run only gets past balancing with shortfalls when
    'allowed' (balance.allow_small_evidence), and promotion then fails its evidence gates.
    """

    counts: dict[str, dict[str, int]] = Field(description="split -> class -> images containing it")
    minimums: dict[str, int] = Field(description="split -> minimum images per class")
    setting: str = Field("balance.min_images_per_class", description="the config key of the minimums")
    allowed: bool = Field(False, description="whether a shortfall was allowed to go on (with a warning)")
    shortfalls: list[str] = Field(default_factory=list, description="one sentence per (split, class) below its minimum")


class SplitManifest(Manifest):
    dataset_name: str
    images: dict[str, int] = Field(description="split -> images")
    per_class: dict[str, dict[str, int]] = Field(description="split -> class -> images containing it")
    instances: dict[str, int] = Field(default_factory=dict, description="class -> boxes selected")
    achieved: dict[str, int] = Field(description="class -> selected images containing it")
    requested: int
    warnings: list[str] = Field(default_factory=list)
    evidence: Evidence | None = Field(None, description="held-out images per class against the minimum")
    held_out: dict[str, int] = Field(
        default_factory=dict, description="source/split -> curated images kept out (external suites)"
    )
    corrections: str | None = Field(None, description="corrections version the curated labels include")
    oversample: dict[str, int] = Field(
        default_factory=dict, description="class -> augmented training copies to write (balance.oversample)"
    )


class ExportManifest(Manifest):
    path: str = Field(description="Folder of the exported YOLO dataset.")
    data_yaml: str = Field(description="Its data.yaml, as ultralytics reads it.")
    images: dict[str, int] = Field(description="split -> images exported")
    evidence: Evidence | None = Field(None, description="carried from the split, for the promotion gates")
    augmented: dict[str, int] = Field(
        default_factory=dict, description="class -> augmented copies in train (apart from the originals in images)"
    )


class TrainManifest(Manifest):
    run_dir: str
    weights: str
    epochs: int
    resumed: bool = False
    device: str
    seconds: float
    final_metrics: dict[str, float] = Field(default_factory=dict)


class ClassSummary(BaseModel):
    """One class's benchmark figures as persisted in a report: a summary of the evaluation's
    :class:`pyroblur.evaluation.metrics.ClassMetrics` (undefined values reported as 0) plus the
    number of test images that contain the class."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    f1: float
    images: int
    instances: int


class OperatingPoint(BaseModel):
    """How anonymization decides what to hide; coverage and leaks are measured at this point."""

    conf: dict[str, float] = Field(description="class -> confidence threshold")
    enlarge: float = Field(description="boxes scaled around their centre before hiding")
    memory_frames: int = Field(0, description="video: frames a box is kept after last seen")
    covered_fraction: float = Field(description="a box is covered when this fraction of its pixels is hidden")


class ClassPrivacy(BaseModel):
    """What anonymization at the operating point leaves visible, for one class.

    ``coverage`` is ``covered / boxes`` on the test images (``None`` without boxes of the
    class). The clip fields come from a short clip of moving test images run through the
    detector and the video path's temporal memory: ``leaks`` counts (object, frame) pairs left
    uncovered, ``longest_leak`` the longest run of consecutive uncovered frames of one object.
    """

    boxes: int = 0
    covered: int = 0
    coverage: float | None = None
    mean_hidden_area: float | None = Field(None, description="mean fraction of a box's pixels hidden")
    clip_objects: int = 0
    clip_pairs: int = Field(0, description="(object, frame) pairs with the object in view")
    leaks: int = 0
    longest_leak: int = 0
    objects_leaking: int = 0


class BackgroundDamage(BaseModel):
    """What anonymization at the operating point destroys for nothing, on one set of images.

    Per image, the share of its *far background* that the hidden region covers: the pixels
    outside every ground-truth box grown to ``grow`` times its size about its centre (all
    pixels of an image with no face or plate). ``mean`` and ``worst`` over the images.
    """

    images: int = 0
    grow: float = 2.0
    mean: float | None = None
    worst: float | None = None
    worst_image: str | None = None


class WiderResult(BaseModel):
    """WIDER FACE official-protocol AP (``[0, 1]``) of one suite."""

    name: str
    images: int
    faces: int
    easy: float
    medium: float
    hard: float
    fabricated: bool = Field(False, description="a generated suite in WIDER's layout, not WIDER's images")
    in_training: int = Field(0, description="suite images that were also training/validation images")


class SuiteResult(BaseModel):
    """Per-class accuracy on an external (held-out) suite."""

    name: str
    images: int
    per_class: dict[str, ClassSummary]


class BenchmarkManifest(Manifest):
    weights: str
    report_json: str
    report_md: str
    per_class: dict[str, ClassSummary]
    overall: dict[str, float]
    face_by_size: dict[str, dict[str, float]] = Field(default_factory=dict)
    ms_per_image: float
    device: str
    parameters: int
    size_mb: float
    onnx: dict[str, float | str] = Field(default_factory=dict)
    pr_curve: str | None = None
    dataset_name: str | None = Field(None, description="FiftyOne dataset holding the predictions")
    predictions_field: str | None = Field(
        None,
        description="its field with this benchmark's predictions at the operating point (<field>_all: every "
        "prediction; pyroblur.curation.dataset.record_predictions)",
    )
    test_digest: str = Field("", description="digest of the test images and labels scored")
    operating_point: OperatingPoint | None = None
    privacy: dict[str, ClassPrivacy] = Field(default_factory=dict, description="class -> coverage and leaks")
    wider: WiderResult | None = None
    suites: list[SuiteResult] = Field(default_factory=list, description="held-out source splits")
    error_report: str | None = Field(None, description="errors.html: gallery of the worst cases, errors by class/size")
    background_damage: dict[str, BackgroundDamage] = Field(
        default_factory=dict, description="set (test, real_negatives) -> far-background share hidden"
    )


class Gate(BaseModel):
    """One promotion gate: what was measured, the bar it had to clear, and the verdict.

    Attributes:
        name: e.g. ``improvement``, ``evidence:test/face``, ``recall_floor:face``.
        value: the measured value (``None`` when it could not be measured; that fails).
        threshold: the bar, in the value's units (``None`` when there is none to clear).
        passed: the verdict.
        detail: one sentence with both numbers and the setting that set the bar.
    """

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants", frozen=True)

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str


class PromotionManifest(Manifest):
    """The registry's decision about one model (``digest`` is the candidate's registry id)."""

    registry: str
    promoted: bool
    reason: str
    primary_metric: str
    candidate_value: float
    champion_id: str | None = None
    champion_value: float | None = None
    gates: list[Gate] = Field(default_factory=list, description="every gate with its value and verdict")
    test_digest: str = ""


class TrialTraining(TrainManifest):
    """A sweep trial's training: a train manifest (for a pruned trial the weights are the
    last.pt of the epoch it stopped at) plus what the pruner did.

    Attributes:
        pruned: the pruner stopped it; ``pruned_at``: after that epoch (1-based).
        planned_epochs: the epochs it was to train.
        seconds_saved: estimated training time the pruning saved (epochs left x mean epoch time).
    """

    pruned: bool = False
    pruned_at: int | None = None
    planned_epochs: int = 0
    seconds_saved: float = 0.0


class TrialScore(Manifest):
    """A sweep trial's objective (pyroblur.evaluation.objective): recall first, mAP tie-break.

    Attributes:
        value: the objective (higher is better).
        coverage: per class, the share of the split's boxes covered at anonymization's operating
            point (``None``: the class has no box there).
        worst_coverage: the lowest of them (what the objective ranks on first).
        map50_95: mean mAP50-95 over the classes with boxes (the tie-breaker).
        split, images: the split scored and its image count.
    """

    value: float
    coverage: dict[str, float | None] = Field(default_factory=dict)
    worst_coverage: float = 0.0
    map50_95: float = 0.0
    split: str = "val"
    images: int = 0
