"""Oversample a rare class's training images with augmented copies (albumentations).

When a class has fewer images than the balance target (``balance.samples_per_class``), the
split reports how many training images it is short of its train share of the target
(:func:`train_shortfall`); the export then writes that many augmented copies of the class's
training images, cycling over them in a fixed order, into the train split only. A copy never
leaves the split of its original, so val and test never see a variant of a training image.
Copies are named ``<original>_aug<k>`` and counted apart from the originals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pyroblur import CLASSES
from pyroblur.core.errors import ConfigurationError

log = logging.getLogger(__name__)


def train_shortfall(
    achieved: Mapping[str, int], train_images: Mapping[str, int], target: int, train_ratio: float
) -> dict[str, int]:
    """Copies per class needed for its training images to reach ``ceil(target * train_ratio)``;
    only classes whose selected images (``achieved``) fall short of ``target`` are oversampled."""
    want = math.ceil(target * train_ratio)
    return {
        c: want - train_images.get(c, 0)
        for c in CLASSES
        if achieved.get(c, 0) < target and 0 < train_images.get(c, 0) < want
    }


def _pipeline(seed: int):  # noqa: ANN202 - albumentations' Compose
    try:
        import albumentations as A
    except ImportError as exc:
        raise ConfigurationError(
            "balance.oversample needs albumentations",
            subject="albumentations",
            hint="pip install 'albumentations==2.0.8' or set balance.oversample: false",
        ) from exc
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), rotate=(-8, 8), p=1.0
            ),  # always: an identical copy teaches nothing
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.8),
            A.HueSaturationValue(p=0.3),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["class_id"], min_visibility=0.5, clip=True),
        seed=seed,
    )


def augment(
    image: np.ndarray, xyxy: np.ndarray, class_id: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented copy of ``image`` (HxWx3) and its pixel boxes; boxes pushed mostly out of
    the frame (less than half visible) are dropped."""
    out = _pipeline(seed)(image=image, bboxes=np.asarray(xyxy, np.float32).reshape(-1, 4), class_id=list(class_id))
    boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
    return out["image"], boxes, np.asarray(out["class_id"], np.int64)


def write_copies(
    sources: list[tuple[Path, np.ndarray, np.ndarray]], n: int, out_images: Path, out_labels: Path, seed: int
) -> list[tuple[str, np.ndarray]]:
    """Write ``n`` augmented copies of ``sources`` (image file, pixel boxes, class ids), cycling
    over them; returns each copy's name and the class ids it holds.

    Copies whose augmentation lost every box of the wanted class are tried again with the next
    seed (at most 5 times), so that each copy holds an instance of that class."""
    import cv2

    from pyroblur.core.records import BoxRecord
    from pyroblur.data.formats.yolo import to_yolo_labels

    written = []
    for k in range(n):
        path, xyxy, cls = sources[k % len(sources)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ConfigurationError("cannot read an image to oversample", subject=str(path))
        for attempt in range(5):
            img, boxes, ids = augment(image, xyxy, cls, seed * 1_000_003 + k * 7 + attempt)
            if len(ids):
                break
        name = f"{path.stem}_aug{k:04d}"
        cv2.imwrite(str(out_images / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        h, w = img.shape[:2]
        records = [BoxRecord(class_id=int(c), x1=float(b[0]), y1=float(b[1]), x2=float(b[2]), y2=float(b[3]))
                   for b, c in zip(boxes, ids, strict=True)]  # fmt: skip
        (out_labels / f"{name}.txt").write_text(to_yolo_labels(records, w, h))
        written.append((name, ids))
    return written
