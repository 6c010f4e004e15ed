"""The benchmark's accuracy numbers agree with pycocotools and FiftyOne on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest

from pyroblur import CLASSES
from pyroblur.config import CurationConfig
from pyroblur.core.detections import Detections
from pyroblur.curation.export import ExportItem, save_yolo_dataset
from pyroblur.curation.importer import curate
from pyroblur.data.sources.models import SyntheticSource
from pyroblur.data.sources.synthetic import fetch
from pyroblur.evaluation.benchmark import box_parity, load_yolo_split, score

pycocotools = pytest.importorskip("pycocotools.cocoeval")


def noisy_predictions(gt: list[Detections], seed: int) -> list[Detections]:
    """Jittered true boxes with random scores, some misses, wrong classes and false alarms."""
    rng = np.random.default_rng(seed)
    out = []
    for g in gt:
        keep = rng.random(len(g)) > 0.15
        xyxy = g.xyxy[keep] + rng.normal(0, 2.5, size=(int(keep.sum()), 4))
        # a detector never returns an inverted box (the jitter can invert a thin plate's; COCO
        # and we would then disagree about a box that cannot occur)
        xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2] + 1)
        cls = g.class_id[keep].copy()
        flip = rng.random(len(cls)) < 0.05
        cls[flip] = 1 - cls[flip]
        n_fp = int(rng.integers(0, 3))
        fp = rng.uniform(0, 80, size=(n_fp, 2))
        fp = np.concatenate([fp, fp + rng.uniform(8, 40, size=(n_fp, 2))], axis=1)
        out.append(
            Detections(
                np.concatenate([xyxy, fp]),
                np.concatenate([cls, rng.integers(0, 2, n_fp)]),
                np.concatenate([rng.uniform(0.3, 1.0, len(cls)), rng.uniform(0.0, 0.6, n_fp)]),
            )
        )
    return out


def coco_ap50(gt: list[Detections], preds: list[Detections]) -> dict[str, float]:
    from pycocotools.coco import COCO

    images, anns, dets = [], [], []
    for i, (g, p) in enumerate(zip(gt, preds)):
        images.append({"id": i, "width": 96, "height": 96})
        for b, c in zip(g.xyxy, g.class_id):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": [*map(float, b[:2]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        for b, c, s in zip(p.xyxy, p.class_id, p.confidence):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                    "score": float(s),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)],
    }
    coco.createIndex()
    ev = pycocotools.COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.areaRng = [[0, 1e10]] * 4  # no COCO area ranges: all boxes count
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"]  # [iou, recall, class, area, maxdet]
    out = {}
    for k, name in enumerate(CLASSES):
        p50 = prec[0, :, k, 0, -1]
        pall = prec[:, :, k, 0, -1]
        out[name] = float(np.mean(p50[p50 > -1]))
        out[f"{name}/50-95"] = float(np.mean(pall[pall > -1]))
    return out


@pytest.fixture(scope="module")
def yolo_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    recs = fetch(SyntheticSource(num_images=40, image_size=96, seed=3, negative_fraction=0.1), root / "raw")
    items = [
        ExportItem(
            r.filepath,
            f"img{i:03d}",
            "test",
            r.width,
            r.height,
            np.array([[b.x1, b.y1, b.x2, b.y2] for b in r.boxes], np.float32).reshape(-1, 4),
            np.array([b.class_id for b in r.boxes], np.int64),
        )
        for i, r in enumerate(recs)
    ]
    save_yolo_dataset(items, root / "yolo", "d")
    return root, recs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benchmark_scores_agree_with_pycocotools(yolo_split, seed):
    root, _ = yolo_split
    test = load_yolo_split(root / "yolo" / "data.yaml", "test")
    assert len(test.images) == 40
    preds = noisy_predictions(test.gt, seed)
    ours, _ = score(test.gt, preds)
    ref = coco_ap50(test.gt, preds)
    for name in CLASSES:
        assert ours[name].map50 == pytest.approx(ref[name], abs=0.01)
        assert ours[name].map50_95 == pytest.approx(ref[f"{name}/50-95"], abs=0.01)
        assert 0.1 < ours[name].map50 < 0.99  # the fixture is neither trivial nor hopeless


@pytest.mark.integration
def test_benchmark_scores_agree_with_fiftyone(yolo_split):
    import fiftyone as fo

    root, recs = yolo_split
    test = load_yolo_split(root / "yolo" / "data.yaml", "test")
    preds = noisy_predictions(test.gt, 7)
    ours, _ = score(test.gt, preds)
    curate(recs, CurationConfig(dataset_name="pyroblur-test-bench", near_duplicate_distance=0), "x")
    ds = fo.load_dataset("pyroblur-test-bench")
    by_path = {s.filepath: s for s in ds}
    for rec, p in zip(recs, preds):
        s = by_path[rec.filepath]
        s["predictions"] = fo.Detections(
            detections=[
                fo.Detection(
                    label=CLASSES[int(c)],
                    bounding_box=[b[0] / 96, b[1] / 96, (b[2] - b[0]) / 96, (b[3] - b[1]) / 96],
                    confidence=float(sc),
                )
                for b, c, sc in zip(p.xyxy, p.class_id, p.confidence)
            ]
        )
        s.save()
    for name in CLASSES:
        res = ds.evaluate_detections(
            "predictions",
            gt_field="ground_truth",
            eval_key=f"e{name[:4]}",
            compute_mAP=True,
            classes=[name],
            iou_threshs=[0.5],
            progress=False,
        )
        assert ours[name].map50 == pytest.approx(res.mAP(), abs=0.01)


def test_box_parity():
    a = Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), np.array([0, 1]), np.array([0.9, 0.8]))
    same = Detections(a.xyxy + 0.1, a.class_id, a.confidence)
    assert box_parity([a], [same]) == 1.0
    wrong_class = Detections(a.xyxy, 1 - a.class_id, a.confidence)
    assert box_parity([a], [wrong_class]) == 0.0
    assert box_parity([a], [Detections.empty()]) == 0.0
    assert box_parity([Detections.empty()], [a]) == 1.0
