"""Open Images V7 boxes through the FiftyOne dataset zoo (``open-images-v7``).

FiftyOne downloads the images of the requested classes (up to ``max_samples``) and the
annotation CSVs into ``dest/zoo``; this module only converts the zoo's detections
(relative ``[x, y, w, h]``) into pixel records. It needs internet access and the
FiftyOne database, so it is not covered by the offline tests; the conversion is the part
worth testing and it is small.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyroblur import CLASSES
from pyroblur.data.download import PlannedDownload
from pyroblur.data.formats._num import finite
from pyroblur.core.records import BoxRecord, SampleRecord
from pyroblur.data.sources._common import image_size, write_index
from pyroblur.data.sources.models import OpenImagesSource

log = logging.getLogger(__name__)

_FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")


def plan(cfg: OpenImagesSource, dest: Path) -> list[PlannedDownload]:
    """What the zoo downloads is decided by FiftyOne; size unknown."""
    return [
        PlannedDownload(
            url=f"https://storage.googleapis.com/openimages/v7 (fiftyone zoo open-images-v7, "
            f"split={cfg.split}, classes={sorted(cfg.classes)}, max_samples={cfg.max_samples})",
            dest=Path(dest) / "zoo",
        )
    ]


def detections_to_boxes(detections: list[Any], width: int, height: int, classes: dict[str, str]) -> list[BoxRecord]:
    """FiftyOne detections (label, relative ``[x, y, w, h]``) -> boxes in pixels.

    Detections whose label is not a key of ``classes`` are dropped.
    """
    boxes = []
    for det in detections:
        ours = classes.get(det.label)
        if ours is None:
            continue
        x, y, w, h = (finite(v, f"open-images detection {det.label!r}") for v in det.bounding_box)
        attributes = {k: bool(det[k]) for k in _FLAGS if det.has_field(k) and det[k] is not None}
        boxes.append(
            BoxRecord(
                class_id=CLASSES.index(ours),
                x1=x * width,
                y1=y * height,
                x2=(x + w) * width,
                y2=(y + h) * height,
                attributes=attributes,
            )
        )
    return boxes


def fetch(cfg: OpenImagesSource, dest: Path) -> list[SampleRecord]:
    """Download through the FiftyOne zoo and return records (boxes in pixels)."""
    import fiftyone.zoo as foz  # lazy: heavy import, starts the database

    dest = Path(dest).resolve()
    dataset = foz.load_zoo_dataset(
        "open-images-v7",
        split=cfg.split,
        label_types=["detections"],
        label_field="ground_truth",
        classes=list(cfg.classes),
        max_samples=cfg.max_samples,
        shuffle=cfg.seed is not None,
        seed=cfg.seed,
        dataset_dir=str(dest / "zoo"),
        dataset_name=f"pyroblur-zoo-{cfg.name}-{cfg.split}",
        drop_existing_dataset=True,
    )
    try:
        records = []
        for sample in dataset.iter_samples():
            width, height = image_size(Path(sample.filepath))
            gt = sample["ground_truth"] if sample.has_field("ground_truth") else None
            records.append(
                SampleRecord(
                    filepath=str(Path(sample.filepath).resolve()),
                    source=cfg.name,
                    source_split=cfg.split,
                    width=width,
                    height=height,
                    boxes=detections_to_boxes(gt.detections if gt else [], width, height, cfg.classes),
                )
            )
    finally:
        dataset.delete()  # the zoo's own copy; our records point at the files in dest/zoo
    return write_index(records, dest)
