"""Write a model's predictions into the FiftyOne dataset and score them per sample.

After this the App shows, on the ``test`` view, the ``predictions`` field next to
``ground_truth`` and per-sample ``eval_tp`` / ``eval_fp`` / ``eval_fn`` counts (IoU 0.5), so a
person can sort by misses and false alarms.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyroblur import CLASSES
from pyroblur.core.detections import Detections

log = logging.getLogger(__name__)


def record_predictions(dataset_name: str, images: list[Path], preds: list[Detections], digest: str) -> dict[str, float]:
    """Attach ``preds`` (pixels) to the dataset's test samples and run ``evaluate_detections``.

    Exported test images are named by the first 20 hex digits of the sample's sha256, which is
    how they are matched back. Returns FiftyOne's COCO-style mAP and the TP/FP/FN totals.
    """
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    test = ds.match_tags("test")
    ids, shas, widths, heights = test.values(["id", "sha256", "metadata.width", "metadata.height"])
    by_name = {sha[:20]: (sid, w, h) for sid, sha, w, h in zip(ids, shas, widths, heights)}
    values = {}
    for img, det in zip(images, preds):
        if img.stem not in by_name:
            continue
        sid, w, h = by_name[img.stem]
        values[sid] = fo.Detections(
            detections=[
                fo.Detection(
                    label=CLASSES[int(c)],
                    bounding_box=[x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h],
                    confidence=float(s),
                )
                for (x1, y1, x2, y2), c, s in zip(det.xyxy, det.class_id, det.confidence)
            ]
        )
    if not values:
        raise ValueError(f"no exported test image matches a test sample of FiftyOne dataset '{dataset_name}'")
    ds.set_values("predictions", values, key_field="id")
    results = test.evaluate_detections(
        "predictions",
        gt_field="ground_truth",
        eval_key="eval",
        compute_mAP=True,
        classes=list(CLASSES),
        progress=False,
    )
    info = dict(ds.info.get("pyroblur") or {})
    info["benchmark"] = digest
    ds.info["pyroblur"] = info
    ds.save()
    out = {
        "fiftyone_map50_95": float(results.mAP()),
        "tp": float(sum(test.values("eval_tp"))),
        "fp": float(sum(test.values("eval_fp"))),
        "fn": float(sum(test.values("eval_fn"))),
    }
    log.info("predictions of %d test samples written to '%s': %s", len(values), dataset_name, out)
    return out
