"""A dataset already on disk, in YOLO or COCO layout. Nothing is copied, modified or indexed here.

* ``format: yolo``: a folder with ``data.yaml`` (or the yaml file itself) as ultralytics reads
  it: ``path:`` (relative to the yaml, the working directory or ultralytics' datasets dir),
  ``train:``/``val:``/``test:`` as folders, images, ``.txt`` image lists or lists of those, as
  Roboflow exports it (``../train/images``); or, without yaml, ``images/`` + ``labels/`` folders
  with names from ``classes.txt``. ``class_map`` keys are class names (or the id as text).
* ``format: coco``: a COCO JSON file or a folder of them: the 2017 release's
  ``annotations/instances_<split>.json`` + ``<split>/`` (captions, keypoint and panoptic files
  beside them are skipped), Roboflow's ``<split>/_annotations.coco.json`` or FiftyOne's
  ``labels.json`` + ``data/``. The split is named after the file (``instances_val2017`` ->
  ``val2017``) or, for those fixed file names, after their folder.

The download task indexes the records; image paths point into ``path``.
"""

from __future__ import annotations

from pathlib import Path

from pyroblur.core.records import SampleRecord
from pyroblur.data.download import PlannedDownload
from pyroblur.data.sources._common import (
    SourceDataError,
    coco_files,
    coco_split_name,
    load_coco_json,
    load_yolo_folder,
)
from pyroblur.data.sources.models import LocalFolderSource


def plan(cfg: LocalFolderSource, dest: Path) -> list[PlannedDownload]:
    """Nothing to download."""
    return []


def fetch(cfg: LocalFolderSource, dest: Path) -> list[SampleRecord]:
    """Read the local dataset; records have absolute paths and boxes in pixels."""
    root = Path(cfg.path).expanduser().resolve()
    if not root.exists():
        raise SourceDataError(f"local source {cfg.name!r}: {root} does not exist", subject=str(root))
    if cfg.format == "yolo":
        return load_yolo_folder(root, cfg.class_map, cfg.name)
    jsons = coco_files(root)
    if not jsons:
        raise SourceDataError(
            f"local source {cfg.name!r}: no COCO detection JSON under {root}",
            subject=str(root),
            hint="expected e.g. annotations/instances_train2017.json (see docs/formats.md)",
        )
    base = root.parent if root.is_file() else root
    records: list[SampleRecord] = []
    for js in jsons:
        records.extend(load_coco_json(js, cfg.class_map, cfg.name, coco_split_name(js, base)))
    return records
