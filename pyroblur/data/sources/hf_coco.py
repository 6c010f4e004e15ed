"""COCO-JSON zips on Hugging Face, e.g. ``keremberke/license-plate-object-detection``.

That repository holds ``data/train.zip``, ``data/valid.zip`` and ``data/test.zip``; each zip
holds the split's images and a ``_annotations.coco.json``. It was built with
roboflow2huggingface, which drops Roboflow's supercategory entry and renumbers: the JSON has
one category, ``{"id": 0, "name": "license_plate"}`` (docs/formats.md).

Files are read at the config's pinned ``revision``; ``sha256`` pins their content, and an
unpinned file is checked against the sha256 the Hub announces for it.

Layout under ``dest``::

    archives/<split>.zip (+ .verified.json)
    extracted/<split>/.../_annotations.coco.json + images
"""

from __future__ import annotations

from pathlib import Path

from pyroblur.core.records import SampleRecord
from pyroblur.data.archive import extract_archive
from pyroblur.data.download import PlannedDownload, download_all
from pyroblur.data.sources._common import SourceDataError, load_coco_json, policy_from
from pyroblur.data.sources.models import HuggingFaceCocoSource

#: Sizes published on the keremberke/license-plate-object-detection dataset card (rounded, in
#: bytes): shown by --dry-run and used for the disk-space check; exact sizes are not published.
APPROX_SIZES = {"train": 163_000_000, "valid": 44_900_000, "test": 21_900_000}


def plan(cfg: HuggingFaceCocoSource, dest: Path) -> list[PlannedDownload]:
    """One zip per split: URL at the pinned revision, pinned sha256 (if any), destination."""
    known = cfg.base_url is None and cfg.repo == "keremberke/license-plate-object-detection"
    return [
        PlannedDownload(
            url=cfg.file_url(cfg.folder, f"{split}.zip"),
            dest=Path(dest) / "archives" / f"{split}.zip",
            sha256=cfg.sha256.get(f"{split}.zip"),
            approx_size=APPROX_SIZES.get(split) if known else None,
            token_env=cfg.token_env if cfg.sends_token else None,
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
                f"{item.url}: no {cfg.annotation_file} inside the zip",
                subject=str(item.dest),
                hint="set annotation_file to the COCO JSON's name",
            )
        for json_path in jsons:
            records.extend(load_coco_json(json_path, cfg.class_map, cfg.name, split))
    return records
