"""Typed pipeline configuration, loaded from ``configs/*.yaml``.

The same :class:`PipelineConfig` model is the ``training_pipeline`` flow's parameter, so the
Prefect UI renders it as a form with these descriptions and defaults. Every model forbids
unknown keys; :func:`load_config` turns validation errors into messages that name the file and
the dotted key (with a "did you mean" hint).
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pyroblur.core.errors import ConfigurationError, InputError
from pyroblur.core.limits import LIMITS, read_bounded
from pyroblur.core.yamlsafe import UnsafeYamlError, load_yaml
from pyroblur.data.sources.models import SourceConfig, SyntheticSource, sources_schema

log = logging.getLogger(__name__)

#: Config files larger than this are refused before parsing (real ones are a few KB).
MAX_CONFIG_BYTES = LIMITS["config_bytes"].default  # PYROBLUR_MAX_CONFIG_BYTES changes it


class ConfigError(ConfigurationError, ValueError):
    """A config file that cannot be used; the message names the file and the key (exit code 2)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurationConfig(_Section):
    """Import into FiftyOne, validate, deduplicate and filter (docs/curation.md)."""

    dataset_name: str = Field("pyroblur", description="Name of the persistent FiftyOne dataset.")
    min_box_size: dict[Literal["face", "license_plate"], float] = Field(
        default_factory=lambda: {"face": 4.0, "license_plate": 4.0},
        description="Boxes smaller than this (shorter side, pixels) are dropped, per class.",
    )
    max_boxes_per_image: int = Field(200, ge=1, description="Images with more labelled boxes than this are rejected.")
    drop_invalid: bool = Field(True, description="Drop boxes flagged invalid by the source (WIDER).")
    drop_heavy_occlusion: bool = Field(False, description="Drop faces flagged as heavily occluded (WIDER occlusion=2).")
    near_duplicate_distance: int = Field(
        10,
        ge=0,
        le=64,
        description="64-bit perceptual-hash Hamming distance (bits) at or below which two images are "
        "near-duplicates; they are kept but always land in the same split. 10 (imagededup's default) "
        "still pairs JPEG re-encodes, 10% resizes and brightness changes of 64-pixel images.",
    )
    missing_labels: Literal["reject", "background"] = Field(
        "reject",
        description="Images whose label file is missing: 'reject' (tag rejected:missing_labels), or "
        "'background' (keep them as images with no objects).",
    )
    corrections: str = Field(
        "latest",
        pattern=r"^(latest|none|v\d{4})$",
        description="Label corrections applied at import (made by pyroblur corrections export): 'latest', "
        "'none' or a version such as 'v0002' (files under <data>/corrections/<dataset_name>/).",
    )


class HoldOut(_Section):
    """A source's own split that never enters training (an external suite)."""

    source: str = Field(description="Source name (sources[].name).")
    split: str = Field(description="The source's own split, e.g. 'val' (WIDER FACE) or 'test'.")


class BalanceConfig(_Section):
    """Class balancing (images per class, rarest class first)."""

    samples_per_class: int = Field(1000, ge=1, description="Images that contain at least one instance of each class.")
    negative_fraction: float = Field(
        0.05, ge=0, le=0.5, description="Extra images with neither class, as a fraction of the selection."
    )
    seed: int = Field(0, description="Seed of the selection and of the split.")
    oversample: bool = Field(
        False,
        description="A class with fewer images than samples_per_class gets augmented copies of its training "
        "images (albumentations) up to its train share of the target; train split only, never val or test.",
    )
    min_images_per_class: dict[Literal["val", "test"], int] = Field(
        default_factory=lambda: {"val": 80, "test": 80},
        description="Fewest images containing each class that the val and test splits may hold "
        "(sized for 1000 images per class split 0.8/0.1/0.1, with room for duplicate groups). "
        "Below it the run fails before training, naming the split, class and count.",
    )
    allow_small_evidence: bool = Field(
        False,
        description="Warn instead of failing when val/test are below min_images_per_class; the "
        "model is trained but never promoted (its evidence gates fail).",
    )
    hold_out: list[HoldOut] = Field(
        default_factory=list,
        description="Source splits kept out of the selection (with their near-duplicates), so that "
        "an external benchmark suite on them stays independent of training, e.g. WIDER FACE val.",
    )

    @field_validator("min_images_per_class")
    @classmethod
    def _non_negative_minimums(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 0}
        if bad:
            raise ValueError(f"minimums must be >= 0, got {bad}")
        return v


class SplitConfig(_Section):
    """Leak-free train/val/test split."""

    train: float = Field(
        0.8, gt=0, lt=1, description="Fraction of the images in the train split (train + val + test = 1)."
    )
    val: float = Field(
        0.1, ge=0, lt=1, description="Fraction of the images in the val split (early stopping, best.pt)."
    )
    test: float = Field(0.1, gt=0, lt=1, description="Fraction of the images in the test split (benchmark, promotion).")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1, got {total:.3f}")
        return self


@functools.cache
def ultralytics_arg_names() -> frozenset[str]:
    """Training/validation argument names ultralytics itself accepts.

    Read from ultralytics' own ``cfg/default.yaml`` (what ``ultralytics.cfg.DEFAULT_CFG_DICT``
    is loaded from) without importing ultralytics: that import pulls in torch and took seconds
    of every ``pyroblur run``, also a fully cached one.
    """
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    default = Path(next(iter(spec.submodule_search_locations or []), "")) / "cfg" / "default.yaml" if spec else None
    if default is not None and default.is_file():
        return frozenset(yaml.safe_load(default.read_text(encoding="utf-8")))
    from ultralytics.cfg import DEFAULT_CFG_DICT  # a layout we do not know: ask ultralytics

    return frozenset(DEFAULT_CFG_DICT)


#: Arguments the pipeline owns; setting them in ``train.args`` would break caching or resume.
RESERVED_TRAIN_ARGS = frozenset({"data", "project", "name", "resume", "exist_ok", "model", "mode", "task"})


def allowed_train_args() -> frozenset[str]:
    """Names ``train.args`` accepts: ultralytics' own, less the pipeline's and those with a field
    of their own. The parameter schema lists them (``propertyNames``), so the Prefect server
    refuses a misspelled one (409) before a run is scheduled."""
    return ultralytics_arg_names() - RESERVED_TRAIN_ARGS - set(TrainConfig.model_fields)


class TrainConfig(_Section):
    """Ultralytics training. Common arguments are fields; any other ultralytics argument goes in 'args'."""

    model: str = Field(
        "yolo11l.pt",
        description="Weights file (.pt, pretrained) or model definition (.yaml, from scratch).",
    )
    allow_download: bool = Field(
        True, description="Let ultralytics download official weights (e.g. yolo11l.pt) when missing."
    )
    epochs: int = Field(100, ge=1, description="Training epochs (fewer when early stopping ends it, see patience).")
    imgsz: int = Field(640, ge=32, description="Training image size, pixels (multiple of 32).")
    batch: int = Field(
        16,
        ge=-1,
        description="Batch size, images (-1 = auto for the GPU's memory; 0 and other negatives are refused).",
        json_schema_extra={"not": {"const": 0}},
    )
    device: str = Field("0", description="'cpu', a GPU index '0', several '0,1' (DDP), or 'auto'.")
    workers: int = Field(8, ge=0, description="Dataloader worker processes.")
    seed: int = Field(0, description="Seed of ultralytics' training (weights init, augmentation order).")
    patience: int = Field(50, ge=0, description="Early stopping patience in epochs.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other ultralytics train argument (checked against ultralytics' own names).",
        json_schema_extra=lambda schema: schema.update(propertyNames={"enum": sorted(allowed_train_args())}),
    )

    @field_validator("batch")
    @classmethod
    def _batch_not_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("batch must be a positive number of images or -1 (auto), got 0")
        return v

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (the model's stride), got {v}")
        return v

    @field_validator("args")
    @classmethod
    def _known_ultralytics_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = ultralytics_arg_names()
        for key in v:
            if key in RESERVED_TRAIN_ARGS:
                raise ValueError(f"'{key}' is set by the pipeline and cannot be given in train.args")
            if key in cls.model_fields:
                raise ValueError(f"'{key}' has its own field: set train.{key} instead of train.args.{key}")
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ValueError(f"'{key}' is not an ultralytics argument{extra}")
        return v


class WiderSuiteConfig(_Section):
    """A WIDER FACE evaluation suite: images and the official ground-truth .mat files.

    Paths are relative to the data root unless absolute. 'fabricate' makes a small offline
    suite in the official layout (rendered synthetic faces; not WIDER's images) when missing.
    """

    name: str = Field("wider_val", description="Suite name in reports.")
    images: str = Field(
        "raw/wider_face/extracted/WIDER_val/WIDER_val/images",
        description="Folder of <event>/<file>.jpg images (data-root relative).",
    )
    ground_truth: str = Field(
        "raw/wider_eval/eval_tools/ground_truth",
        description="Folder holding wider_face_val.mat and wider_{easy,medium,hard}_val.mat (data-root relative).",
    )
    eval_tools_url: str | None = Field(
        "http://shuoyang1213.me/WIDERFACE/support/eval_script/eval_tools.zip",
        description="Where the official evaluation tools (with ground_truth/*.mat) are downloaded from "
        "when ground_truth is missing; extracted next to ground_truth's eval_tools folder.",
    )
    eval_tools_sha256: str | None = Field(
        "1cf49c8243fa8a1632efe7f6aa09fd7a3994ac838c9008bdbc9dd1d547bb234a",
        description="sha256 of eval_tools.zip (8,447,003 bytes); the download is refused when it differs.",
    )
    fabricate: int = Field(
        0, ge=0, description="Images of a fabricated suite to generate when missing (0 = use real files)."
    )
    image_size: int = Field(256, ge=64, le=4096, description="Side of fabricated images, pixels.")
    seed: int = Field(1000, description="Seed of the fabricated suite.")


class HeldOutSuite(_Section):
    """A source's own split scored after training, e.g. the plate set's test split; it must also
    be listed in balance.hold_out so that it never reaches training."""

    name: str = Field(description="Suite name in reports.")
    source: str = Field(description="Source name (sources[].name).")
    split: str = Field(description="The source's own split.")


class ReviewConfig(_Section):
    """The review loop after a benchmark (docs/curation.md): ranked saved views in FiftyOne and
    the error-analysis report."""

    enabled: bool = Field(True, description="Rank likely label mistakes and save the review views in FiftyOne.")
    splits: list[Literal["test", "train"]] = Field(
        default_factory=lambda: ["test"],
        description="Splits ranked with the candidate's predictions ('train' predicts the training images too).",
    )
    second_opinion: Literal["centerface", "none"] = Field(
        "centerface", description="Second face detector whose unlabelled faces count as likely missed labels."
    )
    review_conf: float = Field(0.2, gt=0, lt=1, description="Predictions below this confidence are not reviewed.")
    min_score: float = Field(0.5, gt=0, le=1, description="Suspicion score at which a sample enters a review view.")
    gallery: int = Field(24, ge=0, description="Worst cases shown as crops in errors.html.")


#: scikit-image sample pictures with no face and no plate (textures, text, objects, an animal):
#: the default real negatives (pyroblur.evaluation.negatives loads them). ``camera`` (a man) and
#: ``astronaut`` hold faces and are not here.
REAL_NEGATIVES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "text",
    "page",
    "coins",
    "clock",
    "moon",
    "rocket",
    "coffee",
    "chelsea",
    "hubble_deep_field",
    "immunohistochemistry",
    "cell",
    "colorwheel",
    "retina",
)


class BenchmarkConfig(_Section):
    """Evaluation on the held-out test split and promotion."""

    conf: float = Field(0.001, gt=0, lt=1, description="Confidence threshold for mAP evaluation.")
    iou: float = Field(0.6, gt=0, lt=1, description="NMS IoU threshold.")
    device: str = Field("0", description="Device for the benchmark ('cpu', '0', ...).")
    speed_images: int = Field(50, ge=1, description="Images timed for ms/image.")
    onnx: bool = Field(True, description="Export to ONNX and check it reproduces the PyTorch boxes.")
    onnx_min_parity: float = Field(0.95, ge=0, le=1, description="Warn below this fraction of reproduced boxes.")
    primary_metric: str = Field("map50_95", description="Metric compared for promotion (e.g. map50_95, face/map50).")
    min_improvement: float = Field(
        0.0, ge=0, description="Promote only if strictly better and by at least this (a tie never promotes)."
    )
    recall_floors: dict[Literal["face", "license_plate"], float] = Field(
        default_factory=lambda: {"face": 0.9, "license_plate": 0.9},
        description="Promotion gate: per class, the fewest test boxes (fraction) that the anonymized "
        "region must cover at anonymization's operating point (its confidence thresholds and box "
        "enlargement). A class missing here has no floor.",
    )
    covered_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="A ground-truth box counts as covered when at least this fraction of its pixels "
        "lies inside the anonymized region.",
    )
    max_background_damage: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Promotion gate, applied to the first model too: at anonymization's operating point, the "
        "mean share of the far background (outside every ground-truth box grown 2x) that a model may hide, "
        "on the test split and on the real negatives. A model that boxes the whole image scores 1.0.",
    )
    real_face_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Promotion gate real_faces:<suite>: the WIDER FACE Medium AP, measured on the official "
        "files (not a fabricated suite, no image seen in training), a model must reach. A champion that passed "
        "it finds faces alone in pyroblur anonymize (face detector auto); without it (empty: no such gate) "
        "faces come from the union with CenterFace.",
    )
    real_negatives: list[str] = Field(
        default_factory=lambda: list(REAL_NEGATIVES),
        min_length=1,
        description="scikit-image sample photos with no face or plate (pyroblur.evaluation.negatives) on "
        "which background damage is measured: real pictures the generator did not make.",
    )
    leak_clip_images: int = Field(
        4, ge=0, description="Test images turned into the moving clip that counts leaks (0 = no leak figures)."
    )
    leak_clip_frames: int = Field(16, ge=2, description="Frames of the moving clip made from each image.")
    wider: WiderSuiteConfig | None = Field(
        None, description="External WIDER FACE suite scored with the official Easy/Medium/Hard protocol."
    )
    suites: list[HeldOutSuite] = Field(
        default_factory=list, description="Held-out source splits scored per class after training."
    )
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="Review views and error report.")

    @field_validator("recall_floors")
    @classmethod
    def _floors_are_fractions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not 0 <= f <= 1}
        if bad:
            raise ValueError(f"recall floors are fractions in [0, 1], got {bad}")
        return v


class OrchestrationConfig(_Section):
    """Where the stages run when the pipeline is a Prefect deployment (docs/operations.md)."""

    train_deployment: str | None = Field(
        None,
        description=(
            "Deployment ('flow/deployment') that runs the GPU stage on the gpu work pool, e.g. "
            "'train_stage/train-stage': training, plus benchmark and promotion when benchmark.device "
            "is a GPU. Empty: train inside this flow run."
        ),
    )
    refresh_sources: bool = Field(
        False, description="Download (or generate) the sources again even when the cache has them."
    )
    force: bool = Field(
        False, description="retrain-weekly: train even when no source changed since the champion was trained."
    )
    webhook_url: str | None = Field(
        None, description="POST a JSON notice here when a run fails (the PYROBLUR_WEBHOOK_URL env var wins)."
    )
    poll_seconds: float = Field(5.0, gt=0, description="How often a run polls the state of the GPU stage's run.")
    stage_start_timeout_minutes: float = Field(
        60.0,
        gt=0,
        description="Fail the run (GpuStageTimeout) when no gpu worker has started the GPU stage's run in this time.",
    )
    stage_timeout_hours: float = Field(
        48.0, gt=0, description="Fail the run (GpuStageTimeout) when the GPU stage's run has not finished in this time."
    )


@functools.cache
def ultralytics_defaults() -> dict[str, Any]:
    """Ultralytics' own default value of each training argument (``cfg/default.yaml``): a search
    dimension over an integer argument (``close_mosaic``) samples integers, a float one floats."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    default = Path(next(iter(spec.submodule_search_locations or []), "")) / "cfg" / "default.yaml" if spec else None
    if default is not None and default.is_file():
        return dict(yaml.safe_load(default.read_text(encoding="utf-8")))
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return dict(DEFAULT_CFG_DICT)


#: Train-section fields a sweep may vary (the rest: device, workers, ... stay the config's).
SWEEPABLE_FIELDS = frozenset({"model", "epochs", "imgsz", "batch", "patience"})
#: Of those, the integer ones (the others of ``train.args`` follow ultralytics' default's type).
_INT_FIELDS = frozenset({"epochs", "imgsz", "batch", "patience"})
#: Ultralytics ignores these when ``optimizer`` is ``auto`` (its default): it picks its own.
_OPTIMIZER_BOUND = frozenset({"lr0", "momentum"})

Scalar = bool | int | float | str


class SearchDimension(_Section):
    """One dimension of a sweep's search space: a range (low, high, optional step, log) or a list
    of choices; see docs/sweep.md."""

    low: float | None = Field(None, description="Lower bound of a range (inclusive).")
    high: float | None = Field(None, description="Upper bound of a range (inclusive).")
    step: float | None = Field(
        None, gt=0, description="Spacing of a range's values (integers: default 1); needed by the grid strategy."
    )
    log: bool = Field(False, description="Sample a range on a log scale (low > 0; not with step).")
    choices: list[Scalar] | None = Field(
        None, min_length=1, description="The values to choose from (numbers, strings such as model files, booleans)."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.step is not None or self.log:
                raise ValueError("give either choices or a range (low, high, step, log), not both")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a dimension needs choices: [...] or both low and high")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low:g} high={self.high:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples a log range continuously)")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self

    def grid_values(self, integer: bool = False) -> list[Scalar] | None:
        """The values a grid visits: the choices, or a stepped range's points (an ``integer``
        range steps by 1 unless told); ``None`` for a continuous range (a grid cannot enumerate it)."""
        if self.choices is not None:
            return list(self.choices)
        step = self.step if self.step is not None else (1 if integer else None)
        if step is None or self.low is None or self.high is None:
            return None
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(round(x)) for x in values] if integer else values


class PruningConfig(_Section):
    """Stop a trial early when it is clearly worse than the others at the same epoch (Optuna's
    median rule on the per-epoch validation figure; docs/sweep.md)."""

    enabled: bool = Field(True, description="Prune trials whose per-epoch figure falls below the median of the others.")
    startup_trials: int = Field(
        2, ge=0, description="Finished trials needed before any trial is pruned (a median of one trial is noise)."
    )
    warmup_epochs: int = Field(1, ge=0, description="Epochs every trial trains before it may be pruned.")
    interval_epochs: int = Field(1, ge=1, description="Check for pruning every this many epochs.")


class SweepConfig(_Section):
    """A hyperparameter sweep over the train section (pyroblur sweep, docs/sweep.md)."""

    space: dict[str, SearchDimension] = Field(
        description="Search space: train field (model, epochs, imgsz, batch, patience) or ultralytics train "
        "argument (lr0, mosaic, ...) -> {low, high, step, log} or {choices: [...]}.",
        min_length=1,
    )
    strategy: Literal["grid", "random", "tpe"] = Field(
        "tpe",
        description="grid: every combination (choices or stepped ranges); random: independent draws; tpe: "
        "Optuna's Tree-structured Parzen Estimator, a model of the finished trials picks the next one.",
    )
    n_trials: int | None = Field(
        None,
        ge=1,
        description="Trials to finish (completed, pruned or failed); empty: the grid's size (grid) or 10.",
    )
    timeout_minutes: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget of one sweep run, from its start (data stages included): no trial starts "
        "after it (running ones finish; the best trial's benchmark follows). Empty: none.",
    )
    seed: int = Field(0, description="Seed of the sampler: the same seed gives the same trials, also after a restart.")
    tpe_startup_trials: int = Field(
        3, ge=1, description="tpe: random trials before the model-based sampler takes over."
    )
    parallel: int = Field(
        1,
        ge=0,
        description="Trials in flight at once. 0: the gpu pool's concurrency limit (as a deployment with "
        "trial_deployment). Without trial_deployment trials always run one after another in this process.",
    )
    trial_deployment: str | None = Field(
        None,
        description="Deployment ('flow/deployment') that runs each trial on the gpu pool, e.g. "
        "'sweep_trial/sweep-trial'. Empty: trials run in this flow run, one after another.",
    )
    study_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Optuna study name; empty: '<config name>-<digest of sweep, train and data>', so the same "
        "sweep started again continues its study and a changed one starts a new study.",
    )
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    max_requeues: int = Field(
        2, ge=0, description="Times an interrupted trial's parameters are tried again before it counts as failed."
    )

    @field_validator("space")
    @classmethod
    def _known_dimensions(cls, v: dict[str, SearchDimension]) -> dict[str, SearchDimension]:
        known = allowed_train_args() | SWEEPABLE_FIELDS
        defaults = ultralytics_defaults()
        for key, dim in v.items():
            if key not in known:
                if key in TrainConfig.model_fields or key in RESERVED_TRAIN_ARGS:
                    raise ValueError(f"'{key}' is not swept: set train.{key} (the sweep varies {sorted(SWEEPABLE_FIELDS)} "
                                     "and ultralytics' training arguments)")  # fmt: skip
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ValueError(f"'{key}' is not an ultralytics training argument or a train field{extra}")
            if is_int_dimension(key, defaults):
                values = dim.choices if dim.choices is not None else [dim.low, dim.high, dim.step or 1]
                bad = [x for x in values if isinstance(x, bool) or not float(x).is_integer()]
                if bad:
                    raise ValueError(f"'{key}' takes integers, got {bad}")
            if key == "imgsz":
                values = dim.choices if dim.choices is not None else [dim.low, dim.step]
                if dim.choices is None and dim.step is None:
                    raise ValueError("'imgsz' as a range needs a step that is a multiple of 32, e.g. step: 32")
                bad = [x for x in values if isinstance(x, (bool, str)) or int(x) % 32]
                if bad:
                    raise ValueError(f"'imgsz' values must be multiples of 32 (the model's stride), got {bad}")
            if key == "model" and (dim.choices is None or not all(isinstance(c, str) for c in dim.choices)):
                raise ValueError("'model' takes choices of weights or definitions, e.g. [yolo11n.yaml, yolo11s.yaml]")
        return v

    def grid(self) -> dict[str, list[Scalar]]:
        """The grid strategy's values per dimension (raises for a continuous range)."""
        out = {}
        defaults = ultralytics_defaults()
        for key, dim in self.space.items():
            values = dim.grid_values(is_int_dimension(key, defaults))
            if values is None:
                raise ValueError(f"sweep.space.{key}: the grid strategy needs choices or a range with a step")
            out[key] = values
        return out

    def planned_trials(self) -> int:
        """``n_trials``, or the grid's size (grid) or 10."""
        if self.n_trials is not None:
            return self.n_trials
        if self.strategy == "grid":
            return math.prod(len(v) for v in self.grid().values())
        return 10

    @model_validator(mode="after")
    def _grid_is_enumerable(self) -> SweepConfig:
        if self.strategy == "grid":
            self.grid()
        return self


def is_int_dimension(key: str, defaults: dict[str, Any]) -> bool:
    """Whether ``key`` is sampled as an integer: a train field that is one, or an ultralytics
    argument whose default is an integer."""
    if key in _INT_FIELDS:
        return True
    default = defaults.get(key)
    return isinstance(default, int) and not isinstance(default, bool)


class PipelineConfig(_Section):
    """Everything the training pipeline needs; the training_pipeline flow's parameter."""

    name: str = Field("pyroblur", description="Run name, used in reports.")
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SyntheticSource()],
        description="Datasets to download or generate.",
        json_schema_extra=sources_schema,
    )
    curation: CurationConfig = Field(default_factory=CurationConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    sweep: SweepConfig | None = Field(
        None, description="Hyperparameter sweep over the train section (pyroblur sweep); empty: no sweep."
    )

    @model_validator(mode="after")
    def _sweep_fits_train(self) -> PipelineConfig:
        if self.sweep is None:
            return self
        optimizer = self.train.args.get("optimizer", "auto")
        searched = set(self.sweep.space)
        bound = sorted(_OPTIMIZER_BOUND & searched)
        if bound and "optimizer" not in searched and str(optimizer).lower() == "auto":
            raise ValueError(
                f"sweep.space searches {bound}, which ultralytics ignores with optimizer 'auto' (it picks its own "
                "learning rate): set train.args.optimizer (e.g. SGD or AdamW) or search 'optimizer' too"
            )
        return self

    @model_validator(mode="after")
    def _suites_are_held_out(self) -> PipelineConfig:
        held = {(h.source, h.split) for h in self.balance.hold_out}
        loose = [s.name for s in self.benchmark.suites if (s.source, s.split) not in held]
        if loose:
            raise ValueError(
                f"benchmark.suites {loose} must also be in balance.hold_out, or they would be scored on "
                "images the model may have trained on"
            )
        return self

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[Any]) -> list[Any]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {dupes}")
        if not v:
            raise ValueError("at least one source is needed")
        return v


def _format_error(err: dict[str, Any], data: Any, model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if not loc:  # a check across sections: its message names the keys
        return str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        # Suggest a close key that the model at that location does accept.
        parent: Any = model
        for part in err["loc"][:-1]:
            fields = getattr(parent, "model_fields", {})
            ann = fields[part].annotation if part in fields else None
            parent = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if parent is None:
                break
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(err["loc"][-1]), list(parent.model_fields), n=1)
            if close:
                hint = f" (did you mean '{close[0]}'?)"
        return f"unknown key '{loc}'{hint}"
    return f"'{loc}': {err['msg']}"


def parse_config(data: Any, source: str = "<config>") -> PipelineConfig:
    """Validate a mapping into a :class:`PipelineConfig`; errors name ``source`` and keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_format_error(e, data, PipelineConfig) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid config:\n  - " + "\n  - ".join(lines)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, raw = item.split("=", 1)
        node: Any = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]  # e.g. sources.0.seed
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override '{item}': cannot descend into '{part}'")
        value = _parse_yaml(raw, f"override '{item}'")
        if isinstance(node, list) and parts[-1].isdigit() and int(parts[-1]) < len(node):
            node[int(parts[-1])] = value
        elif isinstance(node, dict):
            node[parts[-1]] = value
        else:
            raise ConfigError(f"override '{item}': cannot set '{parts[-1]}'")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load and validate a YAML config file (optionally with ``key=value`` overrides).

    Every way a file can be unusable is one :class:`ConfigError` naming it: missing, a folder,
    unreadable, too large, not UTF-8, not YAML, an alias bomb, empty, or invalid.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file (give a .yaml file, e.g. configs/pyroblur.yaml)")
        # a regular file, read up to the limit: /dev/zero never ends, a FIFO blocks forever
        raw = read_bounded(path, "config_bytes", what="config file")
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    data = _parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(
            f"{path}: the config file is empty; copy configs/pyroblur.yaml (or configs/demo.yaml) and edit it"
        )
    if overrides:
        data = apply_overrides(data or {}, overrides)
    return parse_config(data, str(path))


def _parse_yaml(text: str, source: str) -> Any:
    """YAML through the alias-budgeted loader; every failure is a :class:`ConfigError`."""
    try:
        return load_yaml(text, source=source)
    except UnsafeYamlError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())  # PyYAML's message spans lines; keep it on one
        raise ConfigError(f"{source}: not valid YAML: {first}") from None
