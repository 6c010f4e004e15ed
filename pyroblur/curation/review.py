"""Rank what a person should look at first: likely label mistakes and the model's worst errors.

After a benchmark has written the model's predictions into the FiftyOne dataset (its field
``predictions_<digest8>`` at the operating point, :func:`~pyroblur.curation.dataset.predictions_field`), :func:`rank_labels` scores the samples of the given splits:

* FiftyOne Brain's ``compute_mistakenness`` on the predictions at or above ``review_conf``
  (a detector's predictions at mAP's 0.001 threshold would match junk boxes to anything):
  ``mistakenness``/``mistakenness_loc`` on matched ground-truth boxes, ``possible_spurious`` on
  unmatched ones, ``possible_missing`` on confident unmatched predictions;
* a second opinion (CenterFace for faces, written to ``second_opinion``): a face it finds that no
  ground-truth face overlaps (IoU < 0.5) is a likely missed label (``unlabeled`` on the box).

Scores (0..1, higher = more suspicious) on each box and, as the maximum over its boxes, on
each sample, so that saved views sort most-suspicious first:

* ``review_missing``: an unmatched confident prediction's confidence, a second-opinion face
  without a label, or both combined (``1 - (1 - a)(1 - b)``) when they agree;
* ``review_wrong``: for a matched label, Brain's mistakenness (class or localization, whichever
  is higher); for an unmatched label, ``1 - support``, where support is the best evidence that
  something is there (the second opinion's confidence on a face, or a prediction's confidence
  scaled by its overlap): a box on empty background scores near 1, a shifted box in between;
* ``review_fn_size``: height in pixels of the largest label no confident prediction of its class
  found (``review_fn`` on the box); ``review_fp_conf``: the highest confidence of a prediction no
  label of its class explains (``review_fp`` on the box).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pyroblur.core.detections import Detections
from pyroblur.curation.app import REVIEW_VIEWS as _REVIEW_VIEWS
from pyroblur.curation.dataset import to_fiftyone_box

log = logging.getLogger(__name__)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

SECOND_OPINION_FIELD = "second_opinion"
BRAIN_KEY = "mistakenness"
_IOU = 0.5

#: The review's saved views, in the order a person works through them (declared beside the
#: other saved views, in app.py, which lists them without importing FiftyOne Brain).
REVIEW_VIEWS = _REVIEW_VIEWS

#: A detector: BGR frames -> detections in pixels (e.g. ``CenterFaceDetector``).
Detector = Callable[[list[np.ndarray]], list[Detections]]


def _xyxy(rel: Sequence[float]) -> np.ndarray:
    x, y, w, h = rel
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``xyxy`` boxes (relative coordinates: IoU does not change with axis scaling)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _second_opinion(samples: Any, detector: Detector) -> dict[str, Any]:
    """The second opinion's face boxes per sample id, as FiftyOne detections."""
    import cv2
    import fiftyone as fo

    out = {}
    for sid, fp, w, h in zip(*samples.values(["id", "filepath", "metadata.width", "metadata.height"]), strict=True):
        frame = cv2.imread(fp, cv2.IMREAD_COLOR)
        dets = detector([frame])[0] if frame is not None else Detections.empty()
        out[sid] = fo.Detections(
            detections=[
                fo.Detection(label="face", bounding_box=to_fiftyone_box(b, w, h), confidence=float(s))
                for b, s in zip(dets.xyxy, dets.confidence, strict=True)
            ]
        )
    return out


def rank_labels(
    dataset_name: str,
    pred_field: str,
    tags: Sequence[str] = ("test",),
    second_opinion: Detector | None = None,
    review_conf: float = 0.2,
    min_score: float = 0.5,
) -> dict[str, int]:
    """Score the samples tagged ``tags`` that have ``pred_field`` and save :data:`REVIEW_VIEWS`.

    Args:
        review_conf: predictions below this confidence are ignored (Brain and our scores).
        min_score: a sample enters the missing/wrong/false-positive views at this score.

    Returns:
        the number of samples in each saved view.
    """
    import fiftyone as fo
    import fiftyone.brain as fob
    from fiftyone import ViewField as F

    ds = fo.load_dataset(dataset_name)
    samples = ds.match_tags(list(tags)).exists(pred_field)
    if BRAIN_KEY in ds.list_brain_runs():
        ds.delete_brain_run(BRAIN_KEY)  # a new model's predictions: rank from scratch
    ds.delete_sample_fields(
        [f for f in ("review_missing", "review_wrong", "review_fn_size", "review_fp_conf", SECOND_OPINION_FIELD)
         if ds.has_sample_field(f)]
    )  # fmt: skip
    for name in ("review_missing", "review_wrong", "review_fn_size", "review_fp_conf"):
        # declared up front: a first sample with no label (a hard negative) sets None, from which
        # FiftyOne cannot infer a type
        ds.add_sample_field(name, fo.FloatField)
    if not len(samples):
        log.warning("no sample tagged %s has '%s': nothing to rank", list(tags), pred_field)
        save_review_views(ds, pred_field, min_score)
        return dict.fromkeys(REVIEW_VIEWS, 0)
    confident = samples.filter_labels(pred_field, F("confidence") >= review_conf, only_matches=False)
    fob.compute_mistakenness(confident, pred_field, label_field="ground_truth", progress=False)
    if second_opinion is not None:
        ds.set_values(SECOND_OPINION_FIELD, _second_opinion(samples, second_opinion), key_field="id")

    fields = ["ground_truth", pred_field, "metadata"] + ([SECOND_OPINION_FIELD] if second_opinion else [])
    for sample in samples.select_fields(fields).iter_samples(autosave=True, progress=False):
        _score_sample(sample, pred_field, review_conf, second_opinion is not None)
    return save_review_views(ds, pred_field, min_score)


def _score_sample(sample: Any, pred_field: str, review_conf: float, has_second: bool) -> None:
    height = float(sample.metadata.height or 1) if sample.metadata else 1.0
    gts = sample.ground_truth.detections if sample.ground_truth else []
    preds = [p for p in (sample[pred_field].detections if sample[pred_field] else []) if p.confidence >= review_conf]
    others = sample[SECOND_OPINION_FIELD].detections if has_second and sample[SECOND_OPINION_FIELD] else []
    gt_boxes = [_xyxy(g.bounding_box) for g in gts]
    pred_boxes = [_xyxy(p.bounding_box) for p in preds]
    other_boxes = [_xyxy(o.bounding_box) for o in others]

    # Second opinion: faces no label overlaps.
    for o, ob in zip(others, other_boxes, strict=True):
        o["unlabeled"] = all(_iou(ob, gb) < _IOU for g, gb in zip(gts, gt_boxes, strict=True) if g.label == "face")
    missing = 0.0
    for p, pb in zip(preds, pred_boxes, strict=True):
        explained_any = any(_iou(pb, gb) >= _IOU for gb in gt_boxes)
        explained = any(_iou(pb, gb) >= _IOU for g, gb in zip(gts, gt_boxes, strict=True) if g.label == p.label)
        p["review_fp"] = not explained
        score = 0.0
        if not explained_any:
            agree = [o.confidence for o, ob in zip(others, other_boxes, strict=True)
                     if o["unlabeled"] and p.label == "face" and _iou(pb, ob) >= _IOU]  # fmt: skip
            score = 1 - (1 - p.confidence) * (1 - max(agree, default=0.0))
        p["review_missing"] = score
        missing = max(missing, score)
    for o in others:
        if o["unlabeled"]:
            missing = max(missing, float(o.confidence))
    wrong_scores = []
    fn_size = 0.0
    for g, gb in zip(gts, gt_boxes, strict=True):
        if g.has_field(BRAIN_KEY) and g[BRAIN_KEY] is not None:  # matched by Brain
            wrong = max(float(g[BRAIN_KEY]), float(g.get_field(BRAIN_KEY + "_loc") or 0.0))
        else:  # unmatched: how strongly does anything say there is an object here?
            support = [p.confidence * min(1.0, _iou(gb, pb) / _IOU) for p, pb in zip(preds, pred_boxes, strict=True)]
            if g.label == "face":
                support += [o.confidence for o, ob in zip(others, other_boxes, strict=True) if _iou(gb, ob) >= _IOU]
            wrong = 1.0 - max(support, default=0.0)
        g["review_wrong"] = wrong
        wrong_scores.append(wrong)
        found = any(_iou(gb, pb) >= _IOU for p, pb in zip(preds, pred_boxes, strict=True) if p.label == g.label)
        g["review_fn"] = not found
        if not found:
            fn_size = max(fn_size, g.bounding_box[3] * height)
    sample["review_missing"] = missing
    sample["review_wrong"] = max(wrong_scores) if wrong_scores else None
    sample["review_fn_size"] = fn_size
    sample["review_fp_conf"] = max((p.confidence for p in preds if p["review_fp"]), default=0.0)


def save_review_views(ds: Any, pred_field: str, min_score: float = 0.5) -> dict[str, int]:
    """Save :data:`REVIEW_VIEWS` (most suspicious first); returns the samples in each."""
    from fiftyone import ViewField as F

    def ranked(field: str, at_least: float) -> Any:
        if not ds.has_sample_field(field):
            return ds.limit(0)
        return ds.match(F(field) >= at_least).sort_by(field, reverse=True)

    views = {
        "likely missing labels": ranked("review_missing", min_score),
        "likely wrong labels": ranked("review_wrong", min_score),
        "worst false negatives by size": ranked("review_fn_size", 1e-9),
        "false positives with high confidence": ranked("review_fp_conf", min_score),
    }
    if ds.has_sample_field("review_fn_size"):
        views["worst false negatives by size"] = views["worst false negatives by size"].filter_labels(
            "ground_truth",
            F("review_fn") == True,  # noqa: E712 - a MongoDB expression, not a Python truth test
            only_matches=False,
        )
        views["false positives with high confidence"] = views["false positives with high confidence"].filter_labels(
            pred_field,
            (F("review_fp") == True) & (F("confidence") >= min_score),  # noqa: E712
            only_matches=False,
        )
    counts = {}
    for name, view in views.items():
        ds.save_view(name, view, overwrite=True)
        counts[name] = len(view)
    log.info("review views of '%s': %s", ds.name, counts)
    return counts
