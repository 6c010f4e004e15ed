"""Tests of pyroblur.evaluation.metrics: table-driven edge cases first, then a pycocotools cross-check."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from pyroblur.core.detections import Detections
from pyroblur.evaluation.metrics import WIDER_FACE_HEIGHT_BUCKETS, box_iou, evaluate

E = Detections.empty()


def det(*rows: tuple[float, float, float, float, int, float]) -> Detections:
    """Detections from ``(x1, y1, x2, y2, class_id, confidence)`` rows in pixels."""
    if not rows:
        return Detections.empty()
    a = np.array(rows, dtype=np.float64)
    return Detections(a[:, :4], a[:, 4].astype(np.int64), a[:, 5])


FACE = (10, 10, 50, 60, 0, 1.0)
PLATE = (100, 100, 180, 130, 1, 1.0)
FACE_HIT = (10, 10, 50, 60, 0, 0.9)
FACE_DUP = (11, 10, 50, 60, 0, 0.8)
FACE_FAR = (300, 300, 340, 350, 0, 0.9)
PLATE_AS_FACE = (100, 100, 180, 130, 0, 0.9)
NAN = math.nan

# (name, gt images, pred images, conf_threshold, expected {class: (AP50, AP50-95, P, R, F1)})
CASES = [
    (
        "no images",
        [],
        [],
        None,
        {0: (NAN, NAN, NAN, NAN, NAN), 1: (NAN, NAN, NAN, NAN, NAN)},
    ),
    ("empty images", [E, E], [E, E], None, {0: (NAN, NAN, NAN, NAN, NAN)}),
    (
        "only false positives, no gt",
        [E],
        [det(FACE_HIT)],
        None,
        {0: (NAN, NAN, 0.0, NAN, NAN)},
    ),
    ("gt, no predictions", [det(FACE)], [E], None, {0: (0.0, 0.0, 0.0, 0.0, 0.0)}),
    (
        "perfect",
        [det(FACE, PLATE)],
        [det(FACE_HIT, PLATE)],
        None,
        {0: (1, 1, 1, 1, 1), 1: (1, 1, 1, 1, 1)},
    ),
    ("all miss", [det(FACE)], [det(FACE_FAR)], None, {0: (0.0, 0.0, 0.0, 0.0, 0.0)}),
    (
        "wrong class is a miss",
        [det(PLATE)],
        [det(PLATE_AS_FACE)],
        None,
        {1: (0.0, 0.0, 0.0, 0.0, 0.0)},
    ),
    # the duplicate ranks below the hit: AP stays 1, but at conf 0.5 it is a false positive
    (
        "duplicate, best F1",
        [det(FACE)],
        [det(FACE_HIT, FACE_DUP)],
        None,
        {0: (1, 1, 1, 1, 1)},
    ),
    (
        "duplicate is FP",
        [det(FACE)],
        [det(FACE_HIT, FACE_DUP)],
        0.5,
        {0: (1, 1, 0.5, 1, 2 / 3)},
    ),
    (
        "threshold above all",
        [det(FACE)],
        [det(FACE_HIT)],
        0.95,
        {0: (1, 1, 0.0, 0.0, 0.0)},
    ),
    # a confident FP first, then the hit: precision 0.5 at recall 1 -> AP 0.5
    (
        "fp ranked first",
        [det(FACE)],
        [det((300, 300, 340, 350, 0, 0.95), FACE_HIT)],
        None,
        {0: (0.5, 0.5, 0.5, 1.0, 2 / 3)},
    ),
    # half the faces found with perfect precision: recall 0.5, AP = 51/101 recall points
    (
        "half recall",
        [det(FACE), det(FACE)],
        [det(FACE_HIT), E],
        None,
        {0: (51 / 101, 51 / 101, 1.0, 0.5, 2 / 3)},
    ),
]


@pytest.mark.parametrize(("name", "gt", "pred", "conf", "expected"), CASES, ids=[c[0] for c in CASES])
def test_table(name, gt, pred, conf, expected) -> None:
    report = evaluate(gt, pred, conf_threshold=conf)
    for cls, values in expected.items():
        m = report.per_class[cls]
        got = (m.ap50, m.ap50_95, m.precision, m.recall, m.f1)
        np.testing.assert_allclose(got, values, atol=1e-9, err_msg=f"{name}, class {cls}")


def test_empty_report_means_are_nan_and_flat_has_keys() -> None:
    report = evaluate([E], [E])
    assert math.isnan(report.map50) and math.isnan(report.map50_95)
    flat = report.flat()
    assert {"mAP50", "mAP50-95", "face/AP50", "license_plate/F1"} <= flat.keys()


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="gt has 1 images but pred has 0"):
        evaluate([E], [])


def test_iou_thresholds_partial_overlap() -> None:
    # IoU 0.6: a hit at 0.5 and 0.55, a miss from 0.6 (>= is a hit) onwards... 0.6 exactly counts
    gt = det((0, 0, 100, 100, 0, 1.0))
    pred = det((0, 0, 100, 60, 0, 0.9))  # IoU = 6000 / 10000 = 0.6
    assert box_iou(pred.xyxy, gt.xyxy)[0, 0] == pytest.approx(0.6)
    m = evaluate([gt], [pred]).per_class[0]
    assert m.ap50 == 1.0
    assert m.ap_per_iou[:3] == (1.0, 1.0, 1.0)
    assert m.ap50_95 == pytest.approx(0.3)


def test_size_buckets_ignore_other_sizes() -> None:
    small = (0, 0, 20, 20, 0, 1.0)  # 20 px tall
    large = (100, 100, 500, 500, 0, 1.0)  # 400 px tall
    gt = [det(small, large)]
    pred = [det((0, 0, 20, 20, 0, 0.9))]  # only the small face is found
    report = evaluate(gt, pred, size_buckets=WIDER_FACE_HEIGHT_BUCKETS)
    assert report.per_class[0].recall == 0.5
    assert report.by_size["small"][0].ap50 == 1.0
    assert report.by_size["small"][0].num_gt == 1
    assert report.by_size["large"][0].ap50 == 0.0
    # the small prediction is ignored in the large bucket: not a false positive there
    assert report.by_size["large"][0].precision == 0.0 and report.by_size["large"][0].recall == 0.0
    assert math.isnan(report.by_size["medium"][0].ap50)
    assert "face@small/AP50" in report.flat()


def test_max_detections_caps_per_image() -> None:
    gt = [det(FACE)]
    fps = [(300 + i, 300, 340 + i, 350, 0, 0.99) for i in range(5)]
    pred = [det(*fps, FACE_HIT)]
    assert evaluate(gt, pred, max_detections=5).per_class[0].ap50 == 0.0
    assert evaluate(gt, pred, max_detections=None).per_class[0].ap50 > 0.0


# ---------------------------------------------------------------------------------------------
# Cross-check against pycocotools' COCOeval on random synthetic data


def _random_dataset(seed: int, n_images: int = 25) -> tuple[list[Detections], list[Detections]]:
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n_images):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(4, 120, (n, 2))
        g_box = np.hstack([xy, xy + wh])
        g_cls = rng.integers(0, 2, n)
        # predictions: jittered copies of most GT boxes (some with the wrong class), duplicates,
        # plus random false positives; scores random
        keep = rng.random(n) < 0.8
        p_box = g_box[keep] + rng.normal(0, 0.07, (int(keep.sum()), 4)) * np.repeat(wh[keep], 2, axis=1)
        p_cls = np.where(rng.random(int(keep.sum())) < 0.9, g_cls[keep], 1 - g_cls[keep])
        dup = rng.random(len(p_box)) < 0.2
        p_box = np.vstack([p_box, p_box[dup] + rng.normal(0, 2, (int(dup.sum()), 4))])
        p_cls = np.concatenate([p_cls, p_cls[dup]])
        n_fp = int(rng.integers(0, 4))
        fxy = rng.uniform(0, 500, (n_fp, 2))
        p_box = np.vstack([p_box, np.hstack([fxy, fxy + rng.uniform(4, 120, (n_fp, 2))])])
        p_cls = np.concatenate([p_cls, rng.integers(0, 2, n_fp)])
        # keep boxes valid (x2 > x1)
        p_box[:, 2:] = np.maximum(p_box[:, 2:], p_box[:, :2] + 1)
        gts.append(Detections(g_box, g_cls))
        preds.append(Detections(p_box, p_cls, rng.random(len(p_cls))))
    return gts, preds


def _coco_ap(gts: list[Detections], preds: list[Detections]) -> dict[int, tuple[float, float]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (g, p) in enumerate(zip(gts, preds, strict=True), start=1):
        images.append({"id": i, "width": 640, "height": 640})
        for box, c in zip(g.xyxy.astype(float), g.class_id, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, c, s in zip(p.xyxy.astype(float), p.class_id, p.confidence.astype(float), strict=True):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [
                {"id": 1, "name": "face"},
                {"id": 2, "name": "license_plate"},
            ],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"]  # [T, R, K, A, M]; area "all" = 0, maxDets 100 = 2
    return {k: (float(prec[0, :, k, 0, 2].mean()), float(prec[:, :, k, 0, 2].mean())) for k in (0, 1)}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_pycocotools(seed: int) -> None:
    pytest.importorskip("pycocotools")
    gts, preds = _random_dataset(seed)
    ours = evaluate(gts, preds, max_detections=100)
    coco = _coco_ap(gts, preds)
    for k, (ap50, ap50_95) in coco.items():
        m = ours.per_class[k]
        assert 0.0 < ap50 < 1.0, "the random data should give a non-trivial AP"
        assert m.ap50 == pytest.approx(ap50, abs=0.01), f"class {k} AP50"
        assert m.ap50_95 == pytest.approx(ap50_95, abs=0.01), f"class {k} AP50-95"
