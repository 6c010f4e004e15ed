"""Helpers shared by the real dataset sources: image sizes, YOLO/COCO folder loaders."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import yaml
from PIL import Image

from pyroblur import CLASSES
from pyroblur.core.io import IMAGE_SUFFIXES
from pyroblur.data.download import DownloadPolicy
from pyroblur.data.formats import parse_coco, parse_yolo_labels
from pyroblur.core.records import SampleRecord, save_records
from pyroblur.data.sources.models import HttpOptions

log = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"


class SourceDataError(ValueError):
    """A downloaded or local dataset does not have the expected layout or content."""


def policy_from(http: HttpOptions) -> DownloadPolicy:
    """The downloader policy of a source's ``http`` options."""
    return DownloadPolicy(
        retries=http.retries,
        backoff_s=http.backoff_s,
        connect_timeout_s=http.connect_timeout_s,
        read_timeout_s=http.read_timeout_s,
        progress=http.progress,
    )


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels from the file header (pixels are not decoded)."""
    with Image.open(path) as img:
        return img.size


def write_index(records: list[SampleRecord], dest: Path) -> list[SampleRecord]:
    """Save ``dest/index.jsonl`` and return the records unchanged."""
    save_records(records, dest / INDEX_NAME)
    log.info("%d samples indexed in %s", len(records), dest / INDEX_NAME)
    return records


def class_ids(class_map: Mapping[str, str]) -> dict[str, int | None]:
    """``{"name": "face" | "license_plate" | "ignore"}`` -> ``{"name": 0 | 1 | None}``."""
    return {k: None if v == "ignore" else CLASSES.index(v) for k, v in class_map.items()}


# ----------------------------------------------------------------------------- YOLO


def _yaml_names(data: dict, where: Path) -> dict[int, str]:
    names = data.get("names")
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    raise SourceDataError(f"{where}: 'names' must be a list or a mapping of class names")


def _resolve_split_dir(root: Path, entry: str) -> Path | None:
    # Mirrors ultralytics: relative to `path`; Roboflow writes "../train/images" meaning
    # the folder next to data.yaml, which ultralytics also accepts.
    candidates = [(root / entry).resolve()]
    if entry.startswith("../"):
        candidates.append((root / entry[3:]).resolve())
    return next((c for c in candidates if c.is_dir()), None)


def _label_path(image: Path) -> Path:
    # ultralytics' rule: the last "images" folder in the path becomes "labels".
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def load_yolo_folder(root: Path, class_map: Mapping[str, str], source: str) -> list[SampleRecord]:
    """Records of a YOLO dataset folder (``data.yaml`` + ``<split>/images|labels``).

    Class names come from ``data.yaml`` (a class map key may also be the numeric id as
    text). Without ``data.yaml``, every ``images`` folder under ``root`` is a split named
    after its parent (or after the folder below it, for ``images/train``). Boxes are
    returned in pixels. An image without a label file gets ``issues=["missing_labels"]``
    (curation rejects it or keeps it as background, by policy); a label file that does not
    parse gets ``"bad_labels"`` and an unreadable image size ``0 x 0``: these are logged and
    reported by curation instead of stopping the import.
    """
    root = root.resolve()
    targets = class_ids(class_map)
    yaml_path = next((root / n for n in ("data.yaml", "data.yml") if (root / n).exists()), None)
    splits: list[tuple[str, Path]] = []
    names: dict[int, str] = {}
    if yaml_path is not None:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
        names = _yaml_names(data, yaml_path)
        base = (root / data["path"]).resolve() if data.get("path") else root
        for key in ("train", "val", "valid", "test"):
            entries = data.get(key)
            for entry in [entries] if isinstance(entries, str) else entries or []:
                found = _resolve_split_dir(base, str(entry))
                if found is None:
                    log.warning("%s: %s folder %r not found; skipped", yaml_path, key, entry)
                else:
                    splits.append((key, found))
    else:
        for images in sorted(p for p in root.rglob("images") if p.is_dir()):
            subdirs = [d for d in sorted(images.iterdir()) if d.is_dir()]
            if subdirs:  # images/train, images/val layout
                splits.extend((d.name, d) for d in subdirs)
            else:
                splits.append((images.parent.name if images.parent != root else "train", images))
    if not splits:
        raise SourceDataError(f"{root}: no YOLO image folders found (expected data.yaml or <split>/images)")

    id_map: dict[int, int | None] = {}
    unmapped = []
    for class_id in sorted(names) or sorted(int(k) for k in class_map if k.isdigit()):
        name = names.get(class_id, str(class_id))
        if name in targets:
            id_map[class_id] = targets[name]
        elif str(class_id) in targets:
            id_map[class_id] = targets[str(class_id)]
        else:
            unmapped.append(name)
    if unmapped:
        raise SourceDataError(
            f"{yaml_path or root}: classes {unmapped} are not in class_map; map each to "
            "'face', 'license_plate' or 'ignore'"
        )

    records: list[SampleRecord] = []
    seen: set[Path] = set()
    for split, folder in splits:
        for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            if image in seen:
                continue
            seen.add(image)
            # A bad image or label file is recorded for curation to reject and report, not
            # raised: one broken file must not stop the import of the others.
            issues: list[str] = []
            boxes: list = []
            try:
                width, height = image_size(image)
            except Exception:  # noqa: BLE001 - unreadable image: curation tags it
                width, height = 0, 0
            label = _label_path(image)
            if not label.exists():
                issues.append("missing_labels")
            elif width > 0:
                try:
                    boxes = parse_yolo_labels(
                        label.read_text(encoding="utf-8", errors="replace"),
                        width,
                        height,
                        id_map,
                        source_name=str(label),
                    )
                except ValueError as exc:
                    log.warning("%s", exc)
                    issues.append("bad_labels")
            records.append(
                SampleRecord(
                    filepath=str(image),
                    source=source,
                    source_split=split,
                    width=width,
                    height=height,
                    boxes=boxes,
                    issues=issues,
                )
            )
    return records


# ----------------------------------------------------------------------------- COCO


def load_coco_json(json_path: Path, class_map: Mapping[str, str], source: str, split: str | None) -> list[SampleRecord]:
    """Records of one COCO JSON; image files are looked up next to the JSON first.

    Sizes come from the JSON (its boxes are in that frame); the file header is read only
    when the JSON lacks them. Images listed but missing on disk are skipped with a
    warning.
    """
    json_path = json_path.resolve()
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SourceDataError(f"{json_path}: not valid JSON ({exc})") from exc
    for img in data.get("images", []):
        if ("width" not in img or "height" not in img) and "file_name" in img:
            found = _find_image(json_path.parent, img["file_name"])
            if found is not None:
                img["width"], img["height"] = image_size(found)
    records, missing = [], []
    for item in parse_coco(data, class_map, source_name=str(json_path)):
        path = _find_image(json_path.parent, item.file_name)
        if path is None:
            missing.append(item.file_name)
            continue
        records.append(
            SampleRecord(
                filepath=str(path),
                source=source,
                source_split=split,
                width=item.width,
                height=item.height,
                boxes=item.boxes,
            )
        )
    if missing:
        log.warning(
            "%s: %d listed images are missing on disk (e.g. %s); skipped",
            json_path,
            len(missing),
            missing[:3],
        )
    return records


def _find_image(folder: Path, file_name: str) -> Path | None:
    for candidate in (
        folder / file_name,
        folder / "images" / file_name,
        folder.parent / "images" / file_name,
    ):
        if candidate.is_file():
            return candidate.resolve()
    return None
