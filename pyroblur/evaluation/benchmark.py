"""Benchmark a trained model on the held-out test split: accuracy per class, speed, size, ONNX.

Accuracy comes from our own COCO-style evaluation (:mod:`pyroblur.evaluation.metrics`, cross-checked
against pycocotools in the tests) on the model's predictions at ``conf`` (0.001 by default, as
for mAP). Ultralytics' own validator runs too, for its PR-curve plots and as a second opinion
(``ultralytics_map50`` in the report). Faces are also scored by size bucket (``small`` <50 px,
``medium`` 50-300 px, ``large`` >=300 px ground-truth height), an approximation of WIDER FACE's
Hard/Medium/Easy difficulty (see :data:`pyroblur.evaluation.metrics.WIDER_FACE_HEIGHT_BUCKETS`).

Beside accuracy: privacy figures at anonymization's operating point (coverage per class and
leaks on a moving clip, :mod:`pyroblur.evaluation.privacy`), and, when ``benchmark.wider`` is
set, WIDER FACE's official Easy/Medium/Hard AP on an external suite
(:mod:`pyroblur.evaluation.wider`). Tables: :mod:`pyroblur.evaluation.report`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyroblur import CLASSES
from pyroblur.config import BenchmarkConfig, WiderSuiteConfig
from pyroblur.core.boxes import box_iou
from pyroblur.core.detections import Detections
from pyroblur.core.devices import resolve_device
from pyroblur.core.hashing import digest_of, sha256_file
from pyroblur.core.io import IMAGE_SUFFIXES
from pyroblur.evaluation.metrics import WIDER_FACE_HEIGHT_BUCKETS, evaluate
from pyroblur.evaluation.report import to_markdown
from pyroblur.manifests import (
    BackgroundDamage,
    BenchmarkManifest,
    ClassPrivacy,
    ClassSummary,
    OperatingPoint,
    SuiteResult,
    WiderResult,
)
from pyroblur.training.onnx import export_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestSet:
    """Images of a YOLO split and their ground truth in pixels."""

    images: list[Path]
    gt: list[Detections]


def load_yolo_split(data_yaml: Path, split: str = "test") -> TestSet:
    """Read ``split`` of a YOLO dataset; labels converted from normalized ``cx cy w h`` to pixels."""
    import yaml
    from PIL import Image

    data = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(data.get("path") or Path(data_yaml).parent)
    if split not in data:
        raise KeyError(
            f"{data_yaml} has no {split!r} split (has: {sorted(k for k in data if k in ('train', 'val', 'test'))})"
        )
    img_dir = root / data[split]
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    gts = []
    for img in images:
        with Image.open(img) as im:
            w, h = im.size
        label = Path(str(img.parent).replace("/images/", "/labels/").replace("/images", "/labels")) / f"{img.stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.exists() and label.stat().st_size else np.zeros((0, 5))
        cls, cx, cy, bw, bh = (rows[:, i] for i in range(5))
        xyxy = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], axis=1)
        gts.append(Detections(xyxy, cls.astype(np.int64), np.ones(len(cls), np.float32)))
    return TestSet(images, gts)


def predict(
    weights: Path | str,
    images: list[Path],
    imgsz: int,
    device: str,
    conf: float,
    iou: float,
    batch: int = 16,
    half: bool = False,
) -> list[Detections]:
    """Predictions for ``images`` (boxes in pixels of each image), ``batch`` images per forward pass."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    out: list[Detections] = []
    for start in range(0, len(images), batch):
        chunk = [str(p) for p in images[start : start + batch]]
        results = model.predict(
            chunk, imgsz=imgsz, device=device, conf=conf, iou=iou, max_det=300, quantize=_precision(half), verbose=False
        )
        out.extend(Detections.from_ultralytics(r) for r in results)
    return out


def _precision(half: bool) -> int | None:
    """Ultralytics' ``quantize`` for FP16 or FP32 (8.4 deprecated ``half=``: ~30 warnings a run)."""
    return 16 if half else None


def measure_speed(
    weights: Path, images: list[Path], imgsz: int, device: str, n: int, half: bool
) -> tuple[float, float]:
    """``(ms per image at batch 1, images/s at batch 32)``, end to end (pre-process, model, NMS).

    Images are decoded up front so disk reads are not timed; 3 warm-up calls first.
    """
    import cv2
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    frames = [cv2.imread(str(p)) for p in images[:n]]
    if not frames:
        return float("nan"), float("nan")
    kw = {"imgsz": imgsz, "device": device, "verbose": False, "quantize": _precision(half)}
    for f in frames[:3]:
        model.predict(f, **kw)
    start = time.perf_counter()
    for f in frames:
        model.predict(f, **kw)
    ms = (time.perf_counter() - start) * 1000 / len(frames)
    batch = (frames * math.ceil(32 / len(frames)))[:32]
    model.predict(batch, **kw)
    start = time.perf_counter()
    model.predict(batch, **kw)
    return ms, 32 / (time.perf_counter() - start)


def score(gt: list[Detections], preds: list[Detections]) -> tuple[dict[str, ClassSummary], dict[str, dict[str, float]]]:
    """Per-class metrics and face-size buckets of ``preds`` against ``gt`` (pixels, per image)."""
    report = evaluate(gt, preds, num_classes=len(CLASSES), size_buckets=WIDER_FACE_HEIGHT_BUCKETS)
    per_class = {}
    for i, name in enumerate(CLASSES):
        m = report.per_class[i]
        per_class[name] = ClassSummary(
            map50=_num(m.ap50),
            map50_95=_num(m.ap50_95),
            precision=_num(m.precision),
            recall=_num(m.recall),
            f1=_num(m.f1),
            images=sum(1 for g in gt if i in g.class_id),
            instances=int(m.num_gt),
        )
    by_size = {
        bucket: {"ap50": _num(ms[0].ap50), "ap50_95": _num(ms[0].ap50_95), "faces": int(ms[0].num_gt)}
        for bucket, ms in report.by_size.items()
    }
    return per_class, by_size


def box_parity(ref: list[Detections], other: list[Detections], min_conf: float = 0.25, min_iou: float = 0.9) -> float:
    """Fraction of ``ref`` boxes (confidence >= ``min_conf``) that ``other`` reproduces:
    same class and IoU >= ``min_iou``. 1.0 when there is nothing to reproduce."""
    total = hit = 0
    for a, b in zip(ref, other):
        a = a.filter(a.confidence >= min_conf)
        total += len(a)
        if len(a) == 0 or len(b) == 0:
            continue
        iou = box_iou(a.xyxy, b.xyxy) * (a.class_id[:, None] == b.class_id[None, :])
        hit += int((iou.max(axis=1) >= min_iou).sum())
    return hit / total if total else 1.0


def benchmark(
    weights: Path,
    data_yaml: Path,
    imgsz: int,
    cfg: BenchmarkConfig,
    out_dir: Path,
    digest: str,
    dataset_name: str | None = None,
) -> tuple[BenchmarkManifest, list[Path], list[Detections]]:
    """Evaluate ``weights`` on the ``test`` split of ``data_yaml``; write JSON + markdown reports.

    ``cfg.suites`` (held-out source splits) are read from the FiftyOne dataset ``dataset_name``.

    Returns the manifest and the test images with their predictions (for FiftyOne).
    """
    from ultralytics import YOLO

    device = resolve_device(cfg.device)
    half = device != "cpu"  # FP16 on GPU
    out_dir.mkdir(parents=True, exist_ok=True)
    test = load_yolo_split(data_yaml, "test") if _has_split(data_yaml, "test") else TestSet([], [])
    if not test.images:
        # Only reachable when thin evidence was allowed: score nothing rather than fail, and let
        # the promotion gates (no test images, no coverage) refuse the model.
        log.warning("%s has no test images: nothing to score; this model cannot be promoted", data_yaml)
        return _nothing_scored(weights, device, out_dir, digest), [], []
    preds = predict(weights, test.images, imgsz, device, cfg.conf, cfg.iou, half=half)
    per_class, by_size = score(test.gt, preds)
    # Ultralytics' validator: PR curves for the report, and a second opinion on mAP50.
    val = YOLO(str(weights)).val(
        data=str(data_yaml),
        split="test",
        imgsz=imgsz,
        conf=cfg.conf,
        iou=cfg.iou,
        device=device,
        batch=16,
        plots=True,
        verbose=False,
        project=str(out_dir),
        name="val",
        exist_ok=True,
        quantize=_precision(half),
    )
    op, privacy = privacy_report(Path(weights), test, device, cfg)
    error_report = write_error_report(test, preds, op.conf, out_dir, dataset_name, cfg.review.gallery)
    damage = damage_report(Path(weights), test, device, cfg, op)
    wider_result = run_wider_suite(Path(weights), cfg.wider, imgsz, device, cfg, half, data_yaml) if cfg.wider else None
    suites = [
        score_suite(weights, s.name, holdout_testset(dataset_name, s.source, s.split), imgsz, device, cfg, half)
        for s in cfg.suites
        if dataset_name
    ]
    ms, ips = measure_speed(weights, test.images, imgsz, device, cfg.speed_images, half)
    model = YOLO(str(weights))
    params = int(sum(p.numel() for p in model.model.parameters()))
    overall = {
        # mean over the classes that have ground truth in the test split
        "map50": _mean([c.map50 for c in per_class.values() if c.instances]),
        "map50_95": _mean([c.map50_95 for c in per_class.values() if c.instances]),
        "precision": float(np.mean([c.precision for c in per_class.values()])),
        "recall": float(np.mean([c.recall for c in per_class.values()])),
        "ultralytics_map50": float(val.box.map50),
        "images_per_s_batch32": ips,
    }
    onnx_info: dict[str, float | str] = {}
    if cfg.onnx:
        onnx_path = export_onnx(Path(weights), imgsz, out_dir)
        onnx_preds = predict(onnx_path, test.images[: cfg.speed_images], imgsz, "cpu", cfg.conf, cfg.iou, batch=1)
        parity = box_parity(preds[: cfg.speed_images], onnx_preds)
        onnx_info = {"path": str(onnx_path), "size_mb": onnx_path.stat().st_size / 1e6, "box_parity": parity}
        if parity < cfg.onnx_min_parity:
            log.warning("ONNX parity %.3f below %.3f: the exported model disagrees", parity, cfg.onnx_min_parity)
    manifest = BenchmarkManifest(
        digest=digest,
        weights=str(weights),
        report_json=str(out_dir / "report.json"),
        report_md=str(out_dir / "report.md"),
        per_class=per_class,
        overall=overall,
        face_by_size=by_size,
        ms_per_image=ms,
        device=device,
        parameters=params,
        size_mb=Path(weights).stat().st_size / 1e6,
        onnx=onnx_info,
        pr_curve=str(out_dir / "val" / "BoxPR_curve.png") if (out_dir / "val" / "BoxPR_curve.png").exists() else None,
        test_digest=test_set_digest(test),
        operating_point=op,
        privacy=privacy,
        background_damage=damage,
        wider=wider_result,
        suites=suites,
        error_report=str(error_report),
    )
    (out_dir / "report.md").write_text(to_markdown(manifest))
    (out_dir / "report.json").write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest, test.images, preds


def write_error_report(
    test: TestSet,
    preds: list[Detections],
    conf: dict[str, float],
    out_dir: Path,
    dataset_name: str | None = None,
    gallery: int = 24,
) -> Path:
    """``out_dir/errors.html``: the error analysis at ``conf`` (:mod:`pyroblur.evaluation.errors`),
    with WIDER attributes of the ground truth when the FiftyOne dataset ``dataset_name`` has them."""
    from pyroblur.evaluation.errors import ATTRIBUTES, analyze_errors, save_error_report

    attributes = None
    if dataset_name:
        from pyroblur.curation.dataset import gt_attributes

        by_stem = gt_attributes(dataset_name, ATTRIBUTES)
        attributes = [by_stem.get(p.stem, []) for p in test.images]
    analysis = analyze_errors(test.gt, preds, conf, attributes)
    return save_error_report(analysis, test.images, test.gt, preds, conf, out_dir, gallery)


def _has_split(data_yaml: Path, split: str) -> bool:
    import yaml

    return split in (yaml.safe_load(Path(data_yaml).read_text()) or {})


def _nothing_scored(weights: Path, device: str, out_dir: Path, digest: str) -> BenchmarkManifest:
    """The report of a benchmark without test images: zeros, no privacy figures."""
    empty = ClassSummary(map50=0, map50_95=0, precision=0, recall=0, f1=0, images=0, instances=0)
    manifest = BenchmarkManifest(
        digest=digest,
        weights=str(weights),
        report_json=str(out_dir / "report.json"),
        report_md=str(out_dir / "report.md"),
        per_class=dict.fromkeys(CLASSES, empty),
        overall={"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0},
        ms_per_image=float("nan"),
        device=device,
        parameters=0,
        size_mb=Path(weights).stat().st_size / 1e6,
    )
    (out_dir / "report.md").write_text(to_markdown(manifest, "PyroBlur benchmark (no test images)"))
    (out_dir / "report.json").write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else 0.0


def _num(x: float) -> float:
    """nan (a class without ground truth) becomes 0.0 in reports."""
    return 0.0 if x is None or math.isnan(x) else float(x)


def test_set_digest(test: TestSet) -> str:
    """Digest of the test split: each image's content and its ground truth (pixels, 0.01 px)."""
    return digest_of(
        sorted(
            [sha256_file(img), np.round(g.xyxy.astype(np.float64), 2).tolist(), g.class_id.tolist()]
            for img, g in zip(test.images, test.gt, strict=True)
        )
    )


def _anonymize_device(device: str) -> str:
    """Our resolved device (``cpu``, ``0``) in anonymization's spelling (``cpu``, ``cuda:0``)."""
    return f"cuda:{device}" if device.isdigit() else device


def privacy_report(
    weights: Path, test: TestSet, device: str, cfg: BenchmarkConfig
) -> tuple[OperatingPoint, dict[str, ClassPrivacy]]:
    """Coverage and leaks per class with the detector that ``pyroblur anonymize`` would build
    for ``weights`` (its default options: thresholds, enlargement, NMS, input size)."""
    import cv2

    from pyroblur.anonymize.api import AnonymizeOptions, build_detector
    from pyroblur.evaluation.privacy import default_operating_point, privacy_figures

    op = default_operating_point(cfg.covered_fraction)
    # The candidate alone: face_detector=auto would add CenterFace for an unproven model and
    # credit its faces to the candidate's recall floors.
    options = AnonymizeOptions(weights=weights, face_detector="yolo", device=_anonymize_device(device), progress=False)
    detector = build_detector(options)
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in test.images]
    figures = privacy_figures(detector, images, test.gt, op, cfg.leak_clip_images, cfg.leak_clip_frames)
    for name, p in figures.items():
        log.info(
            "%s: coverage %s of %d boxes; clip: %d leaks in %d (object, frame) pairs, longest %d frames",
            name,
            "n/a" if p.coverage is None else f"{p.coverage:.3f}",
            p.boxes,
            p.leaks,
            p.clip_pairs,
            p.longest_leak,
        )
    return op, figures


def damage_report(
    weights: Path, test: TestSet, device: str, cfg: BenchmarkConfig, op: OperatingPoint
) -> dict[str, BackgroundDamage]:
    """Background damage (:func:`pyroblur.evaluation.privacy.damage_figures`) of ``weights`` alone
    (face detector ``yolo``: the candidate, not a union that would add CenterFace's boxes), built
    as ``pyroblur anonymize`` builds it, on the test split and on ``cfg.real_negatives``."""
    import cv2

    from pyroblur.anonymize.api import AnonymizeOptions, build_detector
    from pyroblur.evaluation.negatives import load_real_negatives
    from pyroblur.evaluation.privacy import damage_figures

    options = AnonymizeOptions(weights=weights, face_detector="yolo", device=_anonymize_device(device), progress=False)
    detector = build_detector(options)
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in test.images]
    negatives = load_real_negatives(tuple(cfg.real_negatives))
    return damage_figures(detector, images, test.gt, op, negatives, [Path(p).name for p in test.images])


def _split_digests(data_yaml: Path, splits: tuple[str, ...]) -> set[str]:
    """sha256 of every image in ``splits`` of a YOLO dataset."""
    import yaml

    data = yaml.safe_load(Path(data_yaml).read_text()) or {}
    root = Path(data.get("path") or Path(data_yaml).parent)
    return {
        sha256_file(p)
        for split in splits
        if split in data and (root / data[split]).is_dir()
        for p in (root / data[split]).iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
    }


def run_wider_suite(
    weights: Path,
    suite: WiderSuiteConfig,
    imgsz: int,
    device: str,
    cfg: BenchmarkConfig,
    half: bool,
    data_yaml: Path | None = None,
) -> WiderResult:
    """Score faces on a WIDER-format suite with the official protocol (fabricating it first when
    the config asks for a fabricated suite and it is not there yet).

    With ``data_yaml``, suite images that were also training or validation images are counted
    (by content) and reported: such a suite is no longer independent of the model."""
    from pyroblur.core.settings import get_paths
    from pyroblur.evaluation import wider

    root = get_paths().root
    images, gt_dir = root / suite.images, root / suite.ground_truth
    if suite.fabricate and not (gt_dir / wider.GT_FILE).exists():
        log.info("fabricating a %d-image WIDER-format suite under %s", suite.fabricate, images)
        wider.fabricate_suite(images, gt_dir, suite.fabricate, suite.image_size, suite.seed)
    elif not (gt_dir / wider.GT_FILE).exists() and suite.eval_tools_url:
        fetch_eval_tools(suite, gt_dir)
    aps, n_images, n_faces = wider.run_suite(
        lambda paths: predict(weights, paths, imgsz, device, cfg.conf, cfg.iou, half=half), images, gt_dir
    )
    seen = _split_digests(data_yaml, ("train", "val")) if data_yaml else set()
    in_training = sum(sha256_file(p) in seen for p in images.rglob("*.jpg")) if seen else 0
    if in_training:
        log.warning(
            "%d images of the %s suite were training/validation images: its AP is not independent",
            in_training,
            suite.name,
        )
    return WiderResult(
        in_training=in_training,
        name=suite.name,
        images=n_images,
        faces=n_faces,
        easy=_num(aps["easy"]),
        medium=_num(aps["medium"]),
        hard=_num(aps["hard"]),
        fabricated=bool(suite.fabricate),
    )


def fetch_eval_tools(suite: WiderSuiteConfig, gt_dir: Path) -> None:
    """Download WIDER's ``eval_tools.zip`` (checksummed like any download) and extract it so that
    ``gt_dir`` (``.../eval_tools/ground_truth``) holds the official ``.mat`` files."""
    from pyroblur.data.archive import extract_archive
    from pyroblur.data.download import PlannedDownload, download

    tools_parent = gt_dir.parent.parent  # the zip holds eval_tools/ground_truth/*.mat
    zip_path = download(
        PlannedDownload(
            url=str(suite.eval_tools_url),
            dest=tools_parent / "eval_tools.zip",
            sha256=suite.eval_tools_sha256,
        )
    )
    extract_archive(zip_path, tools_parent)


def holdout_testset(dataset_name: str, source: str, split: str) -> TestSet:
    """The curated samples of one source's own split (read-only), boxes in pixels.

    Raises:
        InputError: the dataset holds no curated sample of that source split.
    """
    import fiftyone as fo
    from fiftyone import ViewField as F

    from pyroblur.core.errors import InputError

    view = (
        fo.load_dataset(dataset_name)
        .match_tags("curated")
        .match((F("source") == source) & (F("source_split") == split))
        .sort_by("sha256")
    )
    fps, widths, heights, dets = view.values(
        ["filepath", "metadata.width", "metadata.height", "ground_truth.detections"]
    )
    if not fps:
        raise InputError(
            f"no curated image of source '{source}' split '{split}'",
            subject=f"FiftyOne dataset {dataset_name}",
            hint="check benchmark.suites against sources[].name and the source's split names",
        )
    gts = [Detections.from_fiftyone(d, w, h, CLASSES) for d, w, h in zip(dets, widths, heights, strict=True)]
    return TestSet([Path(f) for f in fps], gts)


def score_suite(
    weights: Path, name: str, suite: TestSet, imgsz: int, device: str, cfg: BenchmarkConfig, half: bool
) -> SuiteResult:
    """Per-class accuracy of ``weights`` on an external suite (same protocol as the test split)."""
    preds = predict(weights, suite.images, imgsz, device, cfg.conf, cfg.iou, half=half)
    per_class, _ = score(suite.gt, preds)
    log.info("suite %s (%d images): %s", name, len(suite.images), {k: round(v.map50, 4) for k, v in per_class.items()})
    return SuiteResult(name=name, images=len(suite.images), per_class=per_class)
