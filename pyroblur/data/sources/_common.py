"""Helpers every source shares: errors, HTTP policy, and readers of YOLO and COCO layouts.

The readers follow the code that defines each layout, not a reading of its documentation:

* YOLO folders as ultralytics' ``check_det_dataset`` and ``YOLODataset.get_img_files`` resolve
  them (``path:`` relative to the yaml, else the working directory, else ultralytics'
  datasets dir; ``train:`` a folder, an image, a ``.txt`` list of images or a list of those;
  labels where the last ``images`` folder becomes ``labels``); without data.yaml, names from
  ``classes.txt`` (LabelImg / YOLO-mark);
* COCO as the 2017 release lays it out (``annotations/instances_<split>.json`` next to
  ``<split>/``), as Roboflow exports it (``<split>/_annotations.coco.json`` beside the images)
  and as FiftyOne writes it (``labels.json`` + ``data/``).

See docs/formats.md for what each reading was checked against.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import yaml
from PIL import Image

from pyroblur import CLASSES
from pyroblur.core.errors import ConfigurationError, InputError
from pyroblur.core.io import IMAGE_SUFFIXES
from pyroblur.core.limits import LIMITS, limit, read_bounded
from pyroblur.core.records import SampleRecord
from pyroblur.data.download import DownloadPolicy
from pyroblur.data.formats import detection_problem, parse_coco, parse_yolo_labels
from pyroblur.data.sources.models import HttpOptions

log = logging.getLogger(__name__)


class SourceDataError(InputError, ValueError):
    """A downloaded or local dataset does not have the expected layout or content (permanent)."""


class SourceConfigError(ConfigurationError, ValueError):
    """The source's config does not fit the data (e.g. a class missing from ``class_map``)."""


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
    if names is None and isinstance(data.get("nc"), int):
        return {i: f"class_{i}" for i in range(data["nc"])}  # ultralytics' names for `nc` alone
    raise SourceDataError(f"{where}: 'names' must be a list or a mapping of class names", subject=str(where))


def _dataset_root(yaml_path: Path, data: dict) -> Path:
    """The folder ``train:``/``val:`` are relative to (ultralytics' ``path``)."""
    if not data.get("path"):
        return yaml_path.parent
    given = Path(str(data["path"])).expanduser()
    if given.is_absolute():
        return given
    tried = [yaml_path.parent / given, Path.cwd() / given]
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    try:  # ultralytics' own fallback; imported only here (heavy)
        from ultralytics.utils import DATASETS_DIR

        tried.append(Path(DATASETS_DIR) / given)
        if tried[-1].exists():
            return tried[-1].resolve()
    except ImportError:  # pragma: no cover - ultralytics is a dependency
        pass
    raise SourceDataError(
        f"{yaml_path}: path {data['path']!r} not found (tried {', '.join(str(t) for t in tried)})",
        subject=str(yaml_path),
        hint="fix path: in data.yaml, or make it absolute",
    )


def _images_of(base: Path, entry: str, yaml_path: Path) -> list[Path] | None:
    """Image files one ``train:``/``val:`` entry names (None when it does not exist)."""
    target = (base / entry).resolve()
    if not target.exists() and entry.startswith("../"):
        # Roboflow writes ../train/images meaning the folder next to data.yaml (ultralytics too).
        target = (base / entry[3:]).resolve()
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if target.is_file() and target.suffix.lower() in IMAGE_SUFFIXES:
        return [target]
    if target.is_file():
        # A list of images, one per line; "./x" is relative to the list (get_img_files), other
        # relative lines to the working directory, as ultralytics reads them.
        out = []
        for line in target.read_text(encoding="utf-8-sig").strip().splitlines():
            line = line.strip()
            if not line or Path(line).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = target.parent / line[2:] if line.startswith("./") else Path(line)
            out.append(path if path.is_absolute() else Path.cwd() / path)
        return out
    return None


def _label_path(image: Path) -> Path:
    # ultralytics' img2label_paths: the last "images" folder in the path becomes "labels".
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _classes_txt(root: Path) -> dict[int, str]:
    """Names from a ``classes.txt`` (LabelImg / YOLO-mark write it), line index = class id."""
    found = sorted(root.rglob("classes.txt"), key=lambda p: len(p.parts))
    if not found:
        return {}
    lines = [x.strip() for x in found[0].read_text(encoding="utf-8-sig").splitlines()]
    log.info("class names from %s", found[0])
    return {i: n for i, n in enumerate(x for x in lines if x)}


def _id_map(names: dict[int, str], class_map: Mapping[str, str], where: Path) -> dict[int, int | None]:
    targets = class_ids(class_map)
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
        raise SourceConfigError(
            f"{where}: classes {unmapped} are not in class_map",
            subject=str(where),
            hint="map each to 'face', 'license_plate' or 'ignore'",
        )
    return id_map


def load_yolo_folder(root: Path, class_map: Mapping[str, str], source: str) -> list[SampleRecord]:
    """Records of a YOLO dataset (``data.yaml`` + image folders or lists), boxes in pixels.

    Class names come from ``data.yaml`` (or ``classes.txt`` without it; a class map key may
    also be the numeric id as text). Without ``data.yaml``, every ``images`` folder under
    ``root`` is a split named after its parent (or after the folder below it, for
    ``images/train``). Problems of single files are recorded for curation to reject and report
    instead of stopping the import: ``missing_labels`` (no label file), ``bad_labels`` (label
    file does not parse) and an image listed but absent or unreadable (size ``0 x 0``, which
    curation rejects as ``missing_file``/``unreadable``). Label files without an image are
    counted and named in a warning; polygon lines are counted too (read as their boxes).
    """
    root = root.resolve()
    yaml_path = next((root / n for n in ("data.yaml", "data.yml") if (root / n).exists()), None)
    if yaml_path is None and root.is_file() and root.suffix in (".yaml", ".yml"):
        yaml_path, root = root, root.parent
    splits: list[tuple[str, list[Path]]] = []
    kpt_values = None
    if yaml_path is not None:
        try:
            raw = read_bounded(yaml_path, "config_bytes", what="data.yaml")
            data = yaml.safe_load(raw.decode("utf-8", errors="replace")) or {}
        except InputError as exc:
            raise SourceDataError(str(exc), subject=str(yaml_path)) from None
        except yaml.YAMLError as exc:
            raise SourceDataError(f"{yaml_path}: not valid YAML ({exc})", subject=str(yaml_path)) from None
        names = _yaml_names(data, yaml_path)
        base = _dataset_root(yaml_path, data)
        if isinstance(data.get("kpt_shape"), list) and len(data["kpt_shape"]) == 2:
            kpt_values = int(data["kpt_shape"][0]) * int(data["kpt_shape"][1])
        tried = []
        for key in ("train", "val", "valid", "test"):
            entries = data.get(key)
            for entry in [entries] if isinstance(entries, str) else entries or []:
                images = _images_of(base, str(entry), yaml_path)
                if images is None:
                    tried.append(f"{key}: {entry} (from {base})")
                else:
                    splits.append((key, images))
        if tried:
            # as ultralytics stops: reading only the splits that happen to resolve (a Roboflow
            # export moved from another machine keeps absolute paths) would train on a fraction
            absolute = any(Path(str(t).split(": ", 1)[1].split(" (from")[0]).is_absolute() for t in tried)
            raise SourceDataError(
                f"{yaml_path}: {len(tried)} split entr{'y' if len(tried) == 1 else 'ies'} not found: {'; '.join(tried)}",
                subject=str(yaml_path),
                hint="the paths are absolute, from another machine: make them relative to data.yaml "
                "(e.g. train: train/images)"
                if absolute
                else "fix train:/val:/test: (or path:) in data.yaml",
            )
        if splits and not any(images for _, images in splits):
            raise SourceDataError(
                f"{yaml_path}: its splits hold no images under {base}",
                subject=str(yaml_path),
                hint="check path: in data.yaml",
            )
        where = yaml_path
    else:
        names = _classes_txt(root)
        tried = [f"{root}/**/images"]
        for images in sorted(p for p in root.rglob("images") if p.is_dir()):
            subdirs = [d for d in sorted(images.iterdir()) if d.is_dir()]
            folders = (
                [(d.name, d) for d in subdirs]
                if subdirs
                else [(images.parent.name if images.parent != root else "train", images)]
            )
            for split, folder in folders:
                files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
                splits.append((split, files))
        where = root
    if not splits:
        raise SourceDataError(
            f"{where}: no YOLO images found (tried {'; '.join(tried) or 'nothing listed'})",
            subject=str(where),
            hint="expected data.yaml with train:/val: entries, or <split>/images folders",
        )
    id_map = _id_map(names, class_map, where)

    records: list[SampleRecord] = []
    seen: set[Path] = set()
    label_dirs: set[Path] = set()
    polygons = 0
    for split, images in splits:
        for image in images:
            image = image.resolve() if image.exists() else image
            if image in seen:
                continue
            seen.add(image)
            issues: list[str] = []
            boxes: list = []
            try:
                width, height = image_size(image)
            except Exception:  # noqa: BLE001 - absent or unreadable image: curation tags it
                width, height = 0, 0
            label = _label_path(image)
            label_dirs.add(label.parent)
            if not label.exists():
                issues.append("missing_labels")
            elif width > 0:
                try:
                    text = read_bounded(label, "label_bytes", what="label file").decode("utf-8", errors="replace")
                    boxes = parse_yolo_labels(
                        text,
                        width,
                        height,
                        id_map,
                        source_name=str(label),
                        kpt_values=kpt_values,
                    )
                    polygons += sum(1 for b in boxes if b.attributes.get("polygon"))
                except (ValueError, InputError) as exc:
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
    labels_used = {_label_path(Path(r.filepath)) for r in records}
    orphans = sorted(
        p for d in label_dirs if d.is_dir() for p in d.glob("*.txt") if p not in labels_used and p.name != "classes.txt"
    )
    if orphans:
        log.warning(
            "%s: %d label files have no image (e.g. %s); their boxes are not used",
            where,
            len(orphans),
            [str(p) for p in orphans[:3]],
        )
    if polygons:
        log.info("%s: %d polygon labels read as their bounding boxes (as ultralytics does)", where, polygons)
    return records


# ----------------------------------------------------------------------------- COCO


def coco_split_name(json_path: Path, root: Path) -> str:
    """The split a COCO JSON describes: ``instances_val2017`` -> ``val2017``; Roboflow's and
    FiftyOne's fixed file names take their folder's name; else the file's stem."""
    stem = json_path.stem
    for prefix in ("instances_",):
        if stem.startswith(prefix):
            return stem[len(prefix) :]
    if stem in ("_annotations.coco", "_annotations", "labels") and json_path.parent != root:
        return json_path.parent.name
    return stem


def _image_candidates(json_path: Path, file_name: str, split: str | None) -> list[Path]:
    folder = json_path.parent
    out = [folder / file_name, folder / "images" / file_name, folder / "data" / file_name]
    if split:
        # COCO 2017: annotations/instances_train2017.json + train2017/; ultralytics: images/train2017/
        out += [folder.parent / split / file_name, folder.parent / "images" / split / file_name]
    out.append(folder.parent / "images" / file_name)
    return out


def load_coco_json(json_path: Path, class_map: Mapping[str, str], source: str, split: str | None) -> list[SampleRecord]:
    """Records of one COCO detection JSON, boxes in pixels.

    Sizes come from the JSON (its boxes are in that frame); the file header is read only when
    the JSON lacks them. An image listed but absent on disk is kept as a record at its
    expected place, which curation rejects as ``missing_file`` and reports; an image with a bad
    annotation gets ``issues=["bad_labels"]``. Raises :class:`SourceDataError` for a file that
    is not a COCO detection JSON.
    """
    json_path = json_path.resolve()
    data = _load_json(json_path)
    problem = detection_problem(data)
    if problem is not None:
        raise SourceDataError(f"{json_path}: not a COCO detection file ({problem})", subject=str(json_path))
    cap = limit("annotations")
    if len(data["annotations"]) > cap:
        raise SourceDataError(
            f"{json_path}: {len(data['annotations']):,} annotations is over the limit of {cap:,}",
            subject=str(json_path),
            hint=f"raise {LIMITS['annotations'].env} if it is genuine",
        )
    for img in data.get("images", []):
        if isinstance(img, dict) and ("width" not in img or "height" not in img) and "file_name" in img:
            found = _find_image(json_path, img["file_name"], split)
            img.setdefault("width", 0)
            img.setdefault("height", 0)
            if found is not None:
                img["width"], img["height"] = image_size(found)
    try:
        items = parse_coco(data, class_map, source_name=str(json_path), bad="tag")
    except ValueError as exc:
        if "class_map" in str(exc):
            raise SourceConfigError(str(exc), subject=str(json_path)) from None
        raise SourceDataError(str(exc), subject=str(json_path)) from None
    records, missing = [], []
    for item in items:
        if not _inside_dataset(item.file_name):
            # /dev/zero, a FIFO, ../../etc/...: never read from outside the dataset's folder
            log.warning(
                "%s: image file_name %r is absolute or leaves the dataset folder; image rejected as bad_labels",
                json_path,
                item.file_name,
            )
            records.append(
                SampleRecord(
                    filepath=str(json_path.parent / "_outside_" / Path(item.file_name).name),
                    source=source,
                    source_split=split,
                    width=item.width,
                    height=item.height,
                    boxes=[],
                    issues=["bad_labels"],
                )
            )
            continue
        path = _find_image(json_path, item.file_name, split)
        if path is None:
            missing.append(item.file_name)
            # Where the layout says it should be: <root>/<split>/ beside annotations/, else beside the JSON.
            standard = split is not None and json_path.parent.name == "annotations"
            path = _image_candidates(json_path, item.file_name, split)[3 if standard else 0]
        records.append(
            SampleRecord(
                filepath=str(path),
                source=source,
                source_split=split,
                width=item.width,
                height=item.height,
                boxes=item.boxes,
                issues=list(item.issues),
            )
        )
    if missing:
        log.warning(
            "%s: %d listed images are missing on disk (e.g. %s); curation rejects them as missing_file",
            json_path,
            len(missing),
            missing[:3],
        )
    return records


def _inside_dataset(file_name: str) -> bool:
    """A COCO ``file_name`` is relative and stays below the folder it is joined to."""
    p = Path(file_name.replace("\\", "/"))
    return bool(file_name) and not p.is_absolute() and ".." not in p.parts


def _load_json(path: Path) -> object:
    """A JSON annotation file, read within ``PYROBLUR_MAX_ANNOTATION_BYTES`` (a regular file only)."""
    try:
        raw = read_bounded(path, "annotation_bytes", what="annotation file")
    except InputError as exc:
        raise SourceDataError(str(exc), subject=str(path)) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise SourceDataError(f"{path}: not valid JSON ({exc})", subject=str(path)) from None


def _find_image(json_path: Path, file_name: str, split: str | None) -> Path | None:
    if not _inside_dataset(file_name):
        return None
    for candidate in _image_candidates(json_path, file_name, split):
        if candidate.is_file():
            return candidate.resolve()
    return None


def coco_files(root: Path) -> list[Path]:
    """The COCO detection JSONs under ``root`` (a file or a folder).

    Valid JSON of another kind (captions, keypoints, panoptic, anything else) is logged and
    skipped; a file that is not valid JSON raises :class:`SourceDataError` naming it.
    """
    if root.is_file():
        return [root]
    out = []
    for path in sorted(p for p in root.rglob("*.json") if not p.name.startswith(".")):
        # A broken or oversized file may be the annotations themselves: fail, naming it, rather than skip.
        problem = detection_problem(_load_json(path))
        if problem is None:
            out.append(path)
        else:
            log.info("%s skipped: not a COCO detection file (%s)", path, problem)
    return out
