"""Detection metrics on our own :class:`~pyroblur.core.detections.Detections` type.

Pure numpy, no ultralytics / FiftyOne / pycocotools types. The matching and the AP follow
COCO's ``COCOeval`` (``pycocotools``) exactly, so numbers are comparable with it (the test
suite cross-checks on random data):

* Per image and class, predictions are sorted by confidence (stable sort) and capped at
  ``max_detections``; each is greedily matched, in that order, to the unmatched ground-truth
  box with the highest IoU that is ``>= t`` (IoU in pixels, no "+1" convention). A second
  prediction on an already matched box is a false positive (duplicates count as FP).
* AP at one IoU threshold is the mean over 101 recall points ``0, 0.01, ..., 1`` of the
  interpolated precision (the precision envelope, max precision at any recall ``>= r``);
  unreachable recall points count as 0. ``AP50`` is AP at IoU 0.5, ``AP50-95`` the mean over
  the IoU thresholds ``0.50:0.05:0.95``.
* A class with no ground truth has ``nan`` AP and recall (COCO reports -1 there);
  ``map50`` / ``map50_95`` average over the classes that have ground truth.

Precision, recall and F1 are single operating points at IoU 0.5: at the confidence threshold
given by ``conf_threshold`` (predictions with ``confidence >= conf_threshold`` are kept), or,
when it is ``None``, at the threshold that maximizes that class's F1 (like ultralytics'
reported P/R, except that ultralytics picks one threshold for all classes). The threshold used
is reported in :attr:`ClassMetrics.conf_threshold`.

Size buckets (:data:`WIDER_FACE_HEIGHT_BUCKETS`) restrict the evaluation to ground-truth boxes
whose *height in pixels* lies in ``[low, high)``, COCO-style: ground truth outside the range is
ignored (matching it is neither TP nor FP), and unmatched predictions outside the range are
ignored too. See :data:`WIDER_FACE_HEIGHT_BUCKETS` for why these thresholds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from pyroblur import CLASSES
from pyroblur.core.boxes import box_iou
from pyroblur.core.detections import Detections

logger = logging.getLogger(__name__)

#: COCO's IoU thresholds 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
#: COCO's 101 recall points 0.00, 0.01, ..., 1.00.
RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)

#: Face-size buckets by ground-truth box **height in pixels** of the original image,
#: ``name -> [low, high)``. They are the scale groups of the WIDER FACE paper (Yang et al.,
#: CVPR 2016: small 10-50 px, medium 50-300 px, large > 300 px), extended down to 0 px so
#: that every box falls in exactly one bucket. They only *approximate* the official
#: Easy / Medium / Hard results: those subsets are nested (Easy ⊆ Medium ⊆ Hard), come from
#: the ``.mat`` files of WIDER's ``eval_tools`` and were defined by how hard EdgeBox found each
#: face (size, occlusion, pose, blur together). Hard is dominated by "small" faces, Easy by
#: "medium"/"large" ones, so a weak "small" AP predicts a weak Hard score. Below ~16 px a face
#: spans about two cells of YOLO's stride-8 grid, which is why "small" is the bucket to watch.
WIDER_FACE_HEIGHT_BUCKETS: dict[str, tuple[float, float]] = {
    "small": (0.0, 50.0),
    "medium": (50.0, 300.0),
    "large": (300.0, math.inf),
}


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class. AP values are in ``[0, 1]``; ``nan`` where undefined.

    Attributes:
        class_id: the class (0 face, 1 license_plate).
        num_gt: ground-truth boxes that count (not ignored by a size range).
        num_pred: predictions of this class after the per-image cap (ignored ones included).
        ap50: AP at IoU 0.5 (101-point interpolated).
        ap50_95: mean AP over the IoU thresholds.
        precision: precision at IoU 0.5 at ``conf_threshold``.
        recall: recall at IoU 0.5 at ``conf_threshold``.
        f1: harmonic mean of ``precision`` and ``recall``.
        conf_threshold: the confidence threshold of the P/R/F1 point (``nan`` without predictions).
        ap_per_iou: AP at each IoU threshold, in the order of the thresholds.
    """

    class_id: int
    num_gt: int
    num_pred: int
    ap50: float
    ap50_95: float
    precision: float
    recall: float
    f1: float
    conf_threshold: float
    ap_per_iou: tuple[float, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        """Class name from :data:`pyroblur.CLASSES` (or ``class_<id>``)."""
        return CLASSES[self.class_id] if 0 <= self.class_id < len(CLASSES) else f"class_{self.class_id}"


@dataclass(frozen=True)
class EvaluationReport:
    """Per-class metrics and their means.

    Attributes:
        per_class: ``class_id -> ClassMetrics`` for every class in ``range(num_classes)``.
        iou_thresholds: the IoU thresholds used (first one must be 0.5 for ``ap50``).
        by_size: ``bucket name -> class_id -> ClassMetrics`` (empty unless buckets were asked for).
    """

    per_class: dict[int, ClassMetrics]
    iou_thresholds: tuple[float, ...]
    by_size: dict[str, dict[int, ClassMetrics]] = field(default_factory=dict)

    @property
    def map50(self) -> float:
        """Mean AP50 over the classes that have ground truth (``nan`` if none has)."""
        return _nanmean([m.ap50 for m in self.per_class.values()])

    @property
    def map50_95(self) -> float:
        """Mean AP50-95 over the classes that have ground truth (``nan`` if none has)."""
        return _nanmean([m.ap50_95 for m in self.per_class.values()])

    def flat(self) -> dict[str, float]:
        """Flat ``{"mAP50": .., "face/AP50": .., "face@small/AP50": ..}`` for logging/registries."""
        out: dict[str, float] = {"mAP50": self.map50, "mAP50-95": self.map50_95}
        for m in self.per_class.values():
            out.update(_flat_class(m.name, m))
        for bucket, classes in self.by_size.items():
            for m in classes.values():
                out.update(_flat_class(f"{m.name}@{bucket}", m))
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly nested dict (``nan`` stays ``nan``; use ``allow_nan`` JSON)."""
        return {
            "mAP50": self.map50,
            "mAP50-95": self.map50_95,
            "iou_thresholds": list(self.iou_thresholds),
            "per_class": {m.name: asdict(m) for m in self.per_class.values()},
            "by_size": {b: {m.name: asdict(m) for m in classes.values()} for b, classes in self.by_size.items()},
        }


def _flat_class(prefix: str, m: ClassMetrics) -> dict[str, float]:
    return {
        f"{prefix}/AP50": m.ap50,
        f"{prefix}/AP50-95": m.ap50_95,
        f"{prefix}/precision": m.precision,
        f"{prefix}/recall": m.recall,
        f"{prefix}/F1": m.f1,
    }


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass
class _ImageMatch:
    """Matching result of one image and one class (internal)."""

    scores: np.ndarray  # (D,) sorted descending
    matched: np.ndarray  # (T, D) bool: matched to a ground-truth box at threshold t
    ignored: np.ndarray  # (T, D) bool: matched to an ignored box, or unmatched and out of range
    num_gt: int  # ground-truth boxes that are not ignored


def _in_range(heights: np.ndarray, height_range: tuple[float, float] | None) -> np.ndarray:
    if height_range is None:
        return np.ones(heights.shape, bool)
    low, high = height_range
    return (heights >= low) & (heights < high)


def _match_image(
    gt_xyxy: np.ndarray,
    pred_xyxy: np.ndarray,
    pred_conf: np.ndarray,
    iou_thresholds: np.ndarray,
    max_detections: int | None,
    height_range: tuple[float, float] | None,
) -> _ImageMatch:
    """Greedy COCO matching of one image's boxes of one class."""
    gt_ignore = ~_in_range(gt_xyxy[:, 3] - gt_xyxy[:, 1], height_range)
    # COCO puts the counted ground truth first, and a prediction prefers a counted box over an
    # ignored one even when the ignored one overlaps more.
    g_order = np.argsort(gt_ignore, kind="mergesort")
    gt_xyxy, gt_ignore = gt_xyxy[g_order], gt_ignore[g_order]
    d_order = np.argsort(-pred_conf, kind="mergesort")[:max_detections]
    pred_xyxy, scores = pred_xyxy[d_order], pred_conf[d_order]

    num_t, num_d, num_g = len(iou_thresholds), len(scores), len(gt_xyxy)
    n_counted = int((~gt_ignore).sum())
    ious = box_iou(pred_xyxy, gt_xyxy)
    matched = np.zeros((num_t, num_d), bool)
    ignored = np.zeros((num_t, num_d), bool)
    for ti, t in enumerate(iou_thresholds):
        gt_taken = np.zeros(num_g, bool)
        t_eff = min(float(t), 1 - 1e-10)
        for d in range(num_d):
            row = ious[d]
            chosen = -1
            for lo, hi in ((0, n_counted), (n_counted, num_g)):
                ok = ~gt_taken[lo:hi] & (row[lo:hi] >= t_eff)
                if ok.any():
                    cand = np.where(ok, row[lo:hi], -1.0)
                    # COCO keeps the *last* of equal best IoUs (its loop uses `<`, not `<=`).
                    chosen = lo + int(len(cand) - 1 - np.argmax(cand[::-1]))
                    break
            if chosen < 0:
                continue
            gt_taken[chosen] = True
            matched[ti, d] = True
            ignored[ti, d] = gt_ignore[chosen]
    pred_out = ~_in_range(pred_xyxy[:, 3] - pred_xyxy[:, 1], height_range)
    ignored |= ~matched & pred_out[None, :]
    return _ImageMatch(scores=scores, matched=matched, ignored=ignored, num_gt=n_counted)


def _interpolated_ap(tp: np.ndarray, fp: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP from score-sorted TP/FP flags (COCO ``accumulate``)."""
    tp_cum = np.cumsum(tp, dtype=np.float64)
    fp_cum = np.cumsum(fp, dtype=np.float64)
    recall = tp_cum / num_gt
    # COCO adds np.spacing(1) to the denominator; dividing only where it is > 0 gives the same
    # numbers up to 1e-16 and an exact 1.0 for perfect predictions.
    denom = tp_cum + fp_cum
    precision = np.divide(tp_cum, denom, out=np.zeros_like(tp_cum), where=denom > 0)
    # precision envelope: best precision at any recall >= this one
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    ok = idx < len(precision)
    q[ok] = precision[idx[ok]]
    return float(q.mean())


def _operating_point(
    scores: np.ndarray,
    tp: np.ndarray,
    num_gt: int,
    conf_threshold: float | None,
) -> tuple[float, float, float, float]:
    """``(precision, recall, f1, threshold)`` at IoU 0.5 for score-sorted, non-ignored preds.

    With no prediction kept, precision is 0 (``nan`` if there is no ground truth either).
    Without ground truth, recall and F1 are ``nan``.
    """
    tp_cum = np.cumsum(tp, dtype=np.float64)
    if conf_threshold is None:
        if len(scores) == 0:
            kept, threshold = 0, math.nan
        else:
            # Only the last prediction of a run of equal scores is a reachable operating point.
            ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
            if num_gt == 0:
                best = ends[0]  # nothing to find: keep as few predictions as possible
            else:
                t = tp_cum[ends]
                f1 = 2 * t / (ends + 1 + num_gt)  # 2TP / (pred + gt)
                best = ends[int(np.argmax(f1))]  # first (highest-threshold) best F1
            kept, threshold = int(best) + 1, float(scores[best])
    else:
        kept = int(np.searchsorted(-scores, -conf_threshold, side="right"))
        threshold = float(conf_threshold)
    tp_n = float(tp_cum[kept - 1]) if kept else 0.0
    if num_gt == 0:
        return (0.0 if kept else math.nan), math.nan, math.nan, threshold
    precision = tp_n / kept if kept else 0.0
    recall = tp_n / num_gt
    f1 = 2 * tp_n / (kept + num_gt)
    return precision, recall, f1, threshold


def _evaluate_class(
    gt: Sequence[Detections],
    pred: Sequence[Detections],
    class_id: int,
    iou_thresholds: np.ndarray,
    conf_threshold: float | None,
    max_detections: int | None,
    height_range: tuple[float, float] | None,
) -> ClassMetrics:
    matches = []
    for g, p in zip(gt, pred, strict=True):
        gm, pm = g.class_id == class_id, p.class_id == class_id
        matches.append(
            _match_image(
                g.xyxy[gm],
                p.xyxy[pm],
                p.confidence[pm],
                iou_thresholds,
                max_detections,
                height_range,
            )
        )
    num_gt = sum(m.num_gt for m in matches)
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    num_t = len(iou_thresholds)
    matched = np.concatenate([m.matched for m in matches], axis=1) if matches else np.zeros((num_t, 0), bool)
    ignored = np.concatenate([m.ignored for m in matches], axis=1) if matches else np.zeros((num_t, 0), bool)
    order = np.argsort(-scores, kind="mergesort")
    scores, matched, ignored = scores[order], matched[:, order], ignored[:, order]
    tp_all, fp_all = matched & ~ignored, ~matched & ~ignored

    aps = tuple(_interpolated_ap(tp_all[ti], fp_all[ti], num_gt) if num_gt else math.nan for ti in range(num_t))
    i50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    if not math.isclose(float(iou_thresholds[i50]), 0.5):
        logger.warning(
            "IoU thresholds %s lack 0.5: AP50 uses IoU %.2f",
            iou_thresholds,
            iou_thresholds[i50],
        )
    keep = ~ignored[i50]
    p, r, f1, thr = _operating_point(scores[keep], tp_all[i50][keep], num_gt, conf_threshold)
    return ClassMetrics(
        class_id=class_id,
        num_gt=num_gt,
        num_pred=len(scores),
        ap50=aps[i50],
        ap50_95=_nanmean(aps) if num_gt else math.nan,
        precision=p,
        recall=r,
        f1=f1,
        conf_threshold=thr,
        ap_per_iou=aps,
    )


def evaluate(
    gt: Sequence[Detections],
    pred: Sequence[Detections],
    num_classes: int = 2,
    iou_thresholds: Sequence[float] | np.ndarray = COCO_IOU_THRESHOLDS,
    conf_threshold: float | None = None,
    max_detections: int | None = 300,
    size_buckets: Mapping[str, tuple[float, float]] | None = None,
    size_bucket_classes: Sequence[int] = (0,),
) -> EvaluationReport:
    """Evaluate predictions against ground truth, image by image (COCO-style, see module doc).

    Args:
        gt: ground truth per image (``confidence`` is ignored); pixel ``xyxy`` boxes.
        pred: predictions per image, same length and order as ``gt``.
        num_classes: classes ``0 .. num_classes-1`` are evaluated.
        iou_thresholds: IoU thresholds for AP; must contain 0.5 for ``ap50`` and P/R/F1.
        conf_threshold: confidence threshold for precision/recall/F1; ``None`` picks the
            best-F1 threshold per class. AP always uses every prediction.
        max_detections: keep at most this many highest-scoring predictions per image and class
            (COCO uses 100; 300 is ultralytics' ``max_det``); ``None`` keeps all.
        size_buckets: optional ``name -> [low, high)`` ground-truth height ranges in pixels,
            e.g. :data:`WIDER_FACE_HEIGHT_BUCKETS`; results land in ``report.by_size``.
        size_bucket_classes: the classes evaluated per size bucket (default: faces only).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ValueError: when ``gt`` and ``pred`` differ in length.
    """
    if len(gt) != len(pred):
        raise ValueError(f"gt has {len(gt)} images but pred has {len(pred)}")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    args = (thresholds, conf_threshold, max_detections)
    per_class = {c: _evaluate_class(gt, pred, c, *args, None) for c in range(num_classes)}
    by_size = {
        name: {c: _evaluate_class(gt, pred, c, *args, tuple(rng)) for c in size_bucket_classes}
        for name, rng in (size_buckets or {}).items()
    }
    return EvaluationReport(
        per_class=per_class,
        iou_thresholds=tuple(float(t) for t in thresholds),
        by_size=by_size,
    )
