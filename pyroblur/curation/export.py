"""Write a YOLO dataset (images/<split>, labels/<split>, data.yaml) with fixed class order."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from pyroblur import CLASSES
from pyroblur.core.errors import PermanentError
from pyroblur.core.records import BoxRecord
from pyroblur.data.formats.yolo import to_yolo_labels

log = logging.getLogger(__name__)

STAMP = ".pyroblur-export.json"


@dataclass(frozen=True)
class ExportItem:
    """One image to export: boxes ``xyxy`` in pixels of a ``width`` x ``height`` image."""

    filepath: str
    name: str
    split: str
    width: int
    height: int
    xyxy: np.ndarray
    class_id: np.ndarray


def item_boxes(item: ExportItem) -> list[BoxRecord]:
    """The item's pixel boxes as records (for the one YOLO label writer, ``to_yolo_labels``)."""
    return [
        BoxRecord(class_id=int(c), x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2))
        for (x1, y1, x2, y2), c in zip(
            np.asarray(item.xyxy).reshape(-1, 4), np.asarray(item.class_id).reshape(-1), strict=True
        )
    ]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # no copy when on the same filesystem; raw files are never modified
    except OSError:
        shutil.copy2(src, dst)


def save_yolo_dataset(
    items: list[ExportItem],
    out: Path,
    digest: str,
    allow_train_as_val: bool = False,
    lineage: dict[str, str | None] | None = None,
    oversample: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write the dataset to ``out`` atomically (``out.part`` then rename) and stamp it.

    Returns images per split. ``data.yaml`` uses absolute paths and names {0: face, 1: license_plate}.
    One split is never silently used for another: without val images the export fails, unless
    ``allow_train_as_val`` (``balance.allow_small_evidence``) says to validate on the training
    images, which is then logged as a warning and recorded in ``data.yaml`` and the stamp.
    ``lineage`` (e.g. ``{"corrections": "v0002"}``) is recorded in both as ``pyroblur_<key>``.
    ``oversample`` (class -> copies) adds augmented copies of that class's training images to the
    train split (:mod:`pyroblur.curation.oversample`); :func:`read_augmented` counts them.

    Raises:
        PermanentError: there are training images but no validation images, and
            ``allow_train_as_val`` is false.
    """
    have = {item.split for item in items}
    substituted: dict[str, str] = {}
    if "train" in have and "val" not in have:
        if not allow_train_as_val:
            raise PermanentError(
                "the selection has no validation images: training would have to validate on its own "
                "training images, which hides overfitting",
                subject="export val split",
                hint="add data or lower split ratios so val gets images, or set "
                "balance.allow_small_evidence: true to validate on train anyway (never promoted)",
            )
        log.warning("no validation images: validating on the training images (allowed by balance.allow_small_evidence)")
        substituted["val"] = "train"
    tmp = out.with_name(out.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    counts: dict[str, int] = {}
    for item in tqdm(items, desc="export YOLO", unit="img", mininterval=1.0):
        img_dir, lbl_dir = tmp / "images" / item.split, tmp / "labels" / item.split
        if item.split not in counts:
            img_dir.mkdir(parents=True, exist_ok=True)
            lbl_dir.mkdir(parents=True, exist_ok=True)
        counts[item.split] = counts.get(item.split, 0) + 1
        suffix = Path(item.filepath).suffix.lower() or ".jpg"
        _link_or_copy(Path(item.filepath), img_dir / f"{item.name}{suffix}")
        (lbl_dir / f"{item.name}.txt").write_text(to_yolo_labels(item_boxes(item), item.width, item.height))
    augmented: dict[str, int] = {}
    for name, n in sorted((oversample or {}).items()):
        from pyroblur.curation.oversample import write_copies

        c = CLASSES.index(name)
        # The exported originals (same bytes as the raw files): copies are made from the train split only.
        sources = [
            (tmp / "images" / "train" / f"{i.name}{Path(i.filepath).suffix.lower() or '.jpg'}", np.asarray(i.xyxy),
             np.asarray(i.class_id))
            for i in items if i.split == "train" and c in np.asarray(i.class_id)
        ]  # fmt: skip
        if not sources or n <= 0:
            continue
        copies = write_copies(sources, n, tmp / "images" / "train", tmp / "labels" / "train", seed + c)
        augmented[name] = len(copies)
        log.info("oversampled %s: %d augmented copies of %d training images", name, len(copies), len(sources))
    data = {"path": str(out), "names": dict(enumerate(CLASSES))}
    for split in ("train", "val", "test"):
        if split in counts:
            data[split] = f"images/{split}"
    for split, source in substituted.items():
        data[split] = f"images/{source}"
        data[f"pyroblur_{split}_is"] = source  # says so to anyone who reads data.yaml
    lineage = {k: v for k, v in (lineage or {}).items() if v is not None}
    data.update({f"pyroblur_{k}": v for k, v in lineage.items()})
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    stamp = {"digest": digest, "images": counts, "substituted": substituted, "lineage": lineage,
             "augmented": augmented}  # fmt: skip
    (tmp / STAMP).write_text(json.dumps(stamp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return counts


def read_augmented(out: Path) -> dict[str, int]:
    """Augmented training copies per class that the export in ``out`` holds (none: ``{}``)."""
    try:
        return dict(json.loads((out / STAMP).read_text()).get("augmented") or {})
    except (OSError, ValueError):
        return {}


def read_stamp(out: Path) -> str | None:
    """The digest an export folder was written for, or None when missing/incomplete."""
    try:
        return json.loads((out / STAMP).read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return None
