"""A dataset already on disk, in YOLO or COCO layout. Nothing is copied or modified.

* ``format: yolo``: a folder with ``data.yaml`` (``names`` and ``train``/``val``/``test``
  image folders, as ultralytics and Roboflow write it) or, without it, ``images/`` +
  ``labels/`` folders. ``class_map`` keys are the names from ``data.yaml`` (or the class
  id as text).
* ``format: coco``: a COCO JSON file, or a folder whose ``*.json`` files are COCO JSONs;
  the split is the JSON's parent folder name (or its stem when the folder is the root).

Only ``dest/index.jsonl`` is written; its image paths point into ``path``.
"""

from __future__ import annotations

from pathlib import Path

from pyroblur.data.download import PlannedDownload
from pyroblur.core.records import SampleRecord
from pyroblur.data.sources._common import (
    SourceDataError,
    load_coco_json,
    load_yolo_folder,
    write_index,
)
from pyroblur.data.sources.models import LocalFolderSource


def plan(cfg: LocalFolderSource, dest: Path) -> list[PlannedDownload]:
    """Nothing to download."""
    return []


def fetch(cfg: LocalFolderSource, dest: Path) -> list[SampleRecord]:
    """Index the local dataset; records have absolute paths and boxes in pixels."""
    root = Path(cfg.path).expanduser().resolve()
    if not root.exists():
        raise SourceDataError(f"local source {cfg.name!r}: {root} does not exist")
    if cfg.format == "yolo":
        if not root.is_dir():
            raise SourceDataError(f"local source {cfg.name!r}: {root} must be a folder for YOLO")
        records = load_yolo_folder(root, cfg.class_map, cfg.name)
    else:
        jsons = [root] if root.is_file() else sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
        if not jsons:
            raise SourceDataError(f"local source {cfg.name!r}: no COCO *.json under {root}")
        records = []
        for js in jsons:
            split = js.stem if js.parent == root or root.is_file() else js.parent.name
            records.extend(load_coco_json(js, cfg.class_map, cfg.name, split))
    return write_index(records, Path(dest))
