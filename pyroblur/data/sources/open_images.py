"""Open Images V7 boxes through the FiftyOne dataset zoo (``open-images-v7``).

Two calls into the installed FiftyOne, both without its database:

1. ``fiftyone.zoo.download_zoo_dataset("open-images-v7", split=..., label_types=...,
   classes=..., max_samples=..., shuffle=..., seed=...)`` downloads the class list, the image
   id list, ``detections.csv`` and the chosen images into
   ``dest/zoo/open-images-v7/<split>/{metadata,labels,data}`` (the zoo's own layout; FiftyOne's
   ``dataset_zoo_dir`` points at ``dest/zoo`` during the call). Files already there are not
   downloaded again, so a folder copied in by hand works offline.
2. ``fiftyone.utils.openimages.OpenImagesV7DatasetImporter`` reads that folder; its detections
   (relative ``[x, y, w, h]``) become pixel records here.

``load_zoo_dataset(..., dataset_dir=...)`` is not used: FiftyOne 1.22 passes ``dataset_dir``
to the importer a second time ("got multiple values for keyword argument").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import requests

from pyroblur import CLASSES
from pyroblur.core.errors import PyroblurError
from pyroblur.core.records import BoxRecord, SampleRecord
from pyroblur.data.download import PlannedDownload, unreachable_reason
from pyroblur.data.formats._num import finite
from pyroblur.data.sources._common import image_size
from pyroblur.data.sources.models import OpenImagesSource

log = logging.getLogger(__name__)

ZOO_NAME = "open-images-v7"
_FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")


def plan(cfg: OpenImagesSource, dest: Path) -> list[PlannedDownload]:
    """What the zoo downloads is decided by FiftyOne (size unknown); the folder it fills."""
    return [
        PlannedDownload(
            url=f"https://storage.googleapis.com/openimages/v7 (fiftyone zoo {ZOO_NAME}, "
            f"split={cfg.split}, classes={sorted(cfg.classes)}, max_samples={cfg.max_samples})",
            dest=Path(dest) / "zoo" / ZOO_NAME / cfg.split,
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


def zoo_kwargs(cfg: OpenImagesSource) -> dict[str, Any]:
    """Keyword arguments of ``download_zoo_dataset`` beyond the name (checked against the
    installed FiftyOne by the tests: its zoo class rejects unknown ones)."""
    return {
        "split": cfg.split,
        "label_types": ["detections"],
        "classes": list(cfg.classes),
        "max_samples": cfg.max_samples,
        "shuffle": cfg.seed is not None,
        "seed": cfg.seed,
    }


def importer_kwargs(cfg: OpenImagesSource, split_dir: Path) -> dict[str, Any]:
    """Keyword arguments of ``OpenImagesV7DatasetImporter`` for the downloaded split."""
    return {
        "dataset_dir": str(split_dir),
        "label_types": ["detections"],
        "classes": list(cfg.classes),
        "max_samples": cfg.max_samples,
        "shuffle": cfg.seed is not None,
        "seed": cfg.seed,
        "load_hierarchy": False,  # only needed for evaluation
    }


def _download(cfg: OpenImagesSource, zoo_root: Path) -> Path:
    import fiftyone as fo  # lazy: heavy import
    import fiftyone.zoo as foz

    previous = fo.config.dataset_zoo_dir
    fo.config.dataset_zoo_dir = str(zoo_root)
    try:
        info, dataset_dir = foz.download_zoo_dataset(ZOO_NAME, **zoo_kwargs(cfg))
    except Exception as exc:
        reason = unreachable_reason(exc)
        if reason is None and not isinstance(exc, requests.RequestException | OSError):
            raise
        split_dir = zoo_root / ZOO_NAME / cfg.split
        raise PyroblurError(
            f"Open Images download failed ({reason or type(exc).__name__}: {exc})",
            subject="storage.googleapis.com",
            hint=f"offline, put the zoo's files in {split_dir}/ (metadata/classes.csv, "
            "metadata/image_ids.csv, metadata/hierarchy.json, labels/detections.csv, data/<id>.jpg) "
            "or use a `local` source",
            transient=reason is None and isinstance(exc, requests.ConnectionError | requests.Timeout),
        ) from None
    finally:
        fo.config.dataset_zoo_dir = previous
    return Path(info.get_zoo_dataset().get_split_dir(dataset_dir, cfg.split))


def fetch(cfg: OpenImagesSource, dest: Path) -> list[SampleRecord]:
    """Download through the FiftyOne zoo and return records (boxes in pixels)."""
    import fiftyone.utils.openimages as fouo

    dest = Path(dest).resolve()
    split_dir = _download(cfg, dest / "zoo")
    records = []
    importer = fouo.OpenImagesV7DatasetImporter(**importer_kwargs(cfg, split_dir))
    with importer:
        for image_path, _metadata, labels in importer:
            path = Path(image_path).resolve()
            width, height = image_size(path)
            dets = labels.get("detections") if isinstance(labels, dict) else labels
            records.append(
                SampleRecord(
                    filepath=str(path),
                    source=cfg.name,
                    source_split=cfg.split,
                    width=width,
                    height=height,
                    boxes=detections_to_boxes(dets.detections if dets else [], width, height, cfg.classes),
                )
            )
    log.info("Open Images %s: %d images", cfg.split, len(records))
    return records
