"""COCO-JSON zips on Hugging Face, e.g. ``keremberke/license-plate-object-detection``.

That repository (a Roboflow export, CC BY 4.0) holds ``data/train.zip``,
``data/valid.zip`` and ``data/test.zip``; each zip holds the split's images and a
``_annotations.coco.json``. Roboflow exports list a supercategory entry (e.g.
``license-plates``) that no annotation uses; it needs no ``class_map`` entry.

Layout under ``dest``::

    archives/<split>.zip (+ .verified.json)
    extracted/<split>/.../_annotations.coco.json + images
    index.jsonl

Sizes and checksums of these zips are not published (the reference notes give only
rounded sizes), so only a complete transfer is checked (Content-Length), not a digest.
"""

from __future__ import annotations

from pathlib import Path

from pyroblur.data.archive import extract_archive
from pyroblur.data.download import PlannedDownload, download_all
from pyroblur.core.records import SampleRecord
from pyroblur.data.sources._common import SourceDataError, load_coco_json, policy_from, write_index
from pyroblur.data.sources.models import HuggingFaceCocoSource

#: Sizes published on the keremberke/license-plate-object-detection dataset card (rounded, in
#: bytes): shown by --dry-run and used for the disk-space check; exact sizes are not published.
APPROX_SIZES = {"train": 163_000_000, "valid": 44_900_000, "test": 21_900_000}


def plan(cfg: HuggingFaceCocoSource, dest: Path) -> list[PlannedDownload]:
    """One zip per split: URL and destination; exact size/sha256 unknown (``None``)."""
    known = "keremberke/license-plate-object-detection" in cfg.base_url
    return [
        PlannedDownload(
            url=f"{cfg.base_url.rstrip('/')}/{split}.zip",
            dest=Path(dest) / "archives" / f"{split}.zip",
            approx_size=APPROX_SIZES.get(split) if known else None,
        )
        for split in cfg.splits
    ]


def fetch(cfg: HuggingFaceCocoSource, dest: Path) -> list[SampleRecord]:
    """Download and extract each split zip; return records (boxes in pixels)."""
    dest = Path(dest).resolve()
    planned = plan(cfg, dest)
    download_all(planned, policy=policy_from(cfg.http))
    records: list[SampleRecord] = []
    for split, item in zip(cfg.splits, planned, strict=True):
        folder = extract_archive(item.dest, dest / "extracted" / split)
        jsons = sorted(folder.rglob(cfg.annotation_file))
        if not jsons:
            raise SourceDataError(
                f"{item.url}: no {cfg.annotation_file} inside the zip; set annotation_file to the COCO JSON's name"
            )
        for json_path in jsons:
            records.extend(load_coco_json(json_path, cfg.class_map, cfg.name, split))
    return write_index(records, dest)
