"""Small generated images and records for the curation tests (fast: tiny JPEGs)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pyroblur.core.records import BoxRecord, SampleRecord


def noise_image(seed: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    """A random RGB image ``size = (width, height)``; different seeds are never near-duplicates."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def photo(k: int, size: int = 64) -> Image.Image:
    """The k-th distinct small photo: a crop of one of scikit-image's sample photos."""
    import skimage.data as data

    sources = [data.astronaut, data.coffee, data.chelsea, data.rocket, data.immunohistochemistry]
    img = sources[k % len(sources)]()
    h, w = img.shape[:2]
    step = k // len(sources)
    y, x = (step * 97) % (h - 200), (step * 131) % (w - 200)
    return Image.fromarray(np.ascontiguousarray(img[y : y + 200, x : x + 200, :3])).resize((size, size))


def save_jpeg(img: Image.Image, path: Path, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, "JPEG", quality=quality)
    return path


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def box(x1: float, y1: float, x2: float, y2: float, cls: int = 0, **attrs: Any) -> BoxRecord:
    return BoxRecord(class_id=cls, x1=x1, y1=y1, x2=x2, y2=y2, attributes=attrs)


def record(path: Path, size: tuple[int, int], boxes: list[BoxRecord] | None = None, **kw: Any) -> SampleRecord:
    return SampleRecord(
        filepath=str(path), source=kw.pop("source", "test"), width=size[0], height=size[1], boxes=boxes or [], **kw
    )


def dataset_dump(name: str) -> list[tuple]:
    """Everything curation decides about each sample, without ids or timestamps, by filepath."""
    import fiftyone as fo

    ds = fo.load_dataset(name)
    fields = ["filepath", "tags", "source", "sha256", "phash", "rejection", "image_problem", "duplicate_of",
              "dup_group", "dup_size", "metadata.width", "metadata.height", "ground_truth.detections",
              "rejected_gt.detections"]  # fmt: skip

    def dets(ds_: list | None) -> list:
        return sorted((d.label, tuple(round(v, 6) for v in d.bounding_box), tuple(sorted(d.tags))) for d in ds_ or [])

    out = []
    for row in zip(*ds.values(fields), strict=True):
        *head, gt, rej = row
        head[1] = tuple(sorted(head[1]))
        out.append((*head, dets(gt), dets(rej)))
    return sorted(out)
