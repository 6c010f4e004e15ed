"""COCO detection JSON (e.g. Roboflow's ``_annotations.coco.json``).

``bbox`` is ``[x, y, w, h]`` in **pixels** of the image; it becomes ``x1, y1, x1 + w,
y1 + h``. Category names are mapped to our classes through ``class_map`` (values
``"face"``, ``"license_plate"`` or ``"ignore"``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from pyroblur import CLASSES
from pyroblur.core.limits import limit
from pyroblur.core.records import BoxRecord
from pyroblur.data.formats._num import finite

__all__ = ["CocoImage", "detection_problem", "parse_coco"]

log = logging.getLogger(__name__)


class CocoImage(NamedTuple):
    """One COCO image: ``file_name`` as written in the JSON, size in pixels, boxes.

    ``issues`` holds ``"bad_labels"`` when one of its annotations could not be read (with
    ``bad="tag"``): curation rejects the image rather than train on half its boxes.
    """

    file_name: str
    width: int
    height: int
    boxes: list[BoxRecord]
    issues: tuple[str, ...] = ()


def detection_problem(data: Any) -> str | None:
    """Why ``data`` is not a COCO *detection* file (None when it is).

    The COCO release puts ``captions_*.json`` (no categories, no boxes), ``person_keypoints_*``
    (categories with ``keypoints``; the same person boxes as ``instances_*``) and panoptic files
    (``segments_info`` instead of boxes) beside ``instances_*.json``; pycocotools' ``COCO``
    loads them all, so the kind is told by content, not by file name.
    """
    if not isinstance(data, Mapping):
        return "not a JSON object"
    if not isinstance(data.get("images"), list):
        return "no 'images' list"
    if not isinstance(data.get("categories"), list):
        return "no 'categories' (e.g. a captions file)"
    anns = data.get("annotations")
    if not isinstance(anns, list):
        return "no 'annotations' list"
    if any(isinstance(c, Mapping) and "keypoints" in c for c in data["categories"]):
        return "keypoint annotations (the boxes are in instances_*.json)"
    if anns and not any(isinstance(a, Mapping) and "bbox" in a for a in anns):
        return "annotations without 'bbox' (captions or panoptic)"
    return None


def _target_ids(class_map: Mapping[str, str], where: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, ours in class_map.items():
        if ours == "ignore":
            out[name] = None
        elif ours in CLASSES:
            out[name] = CLASSES.index(ours)
        else:
            raise ValueError(f"{where}: class_map maps {name!r} to {ours!r}; use one of {CLASSES} or 'ignore'")
    return out


def parse_coco(
    data: Mapping[str, Any],
    class_map: Mapping[str, str],
    *,
    source_name: str = "<coco>",
    unknown: Literal["error", "drop"] = "error",
    bad: Literal["raise", "tag"] = "raise",
) -> list[CocoImage]:
    """Parse a COCO detection dict into one :class:`CocoImage` per image (JSON order).

    Images without annotations are kept with no boxes. Annotations whose category is
    mapped to ``"ignore"`` are dropped. A category name missing from ``class_map`` raises
    ``ValueError`` naming it (``unknown="drop"`` drops those boxes instead) - only when an
    annotation uses it, so unused categories such as Roboflow's supercategory entry are
    harmless. An image with a crowd region (``iscrowd=1``: many objects, no box of their own)
    gets ``issues=("crowd_regions",)``: trained on, its unboxed faces would teach background. An image with more than ``PYROBLUR_MAX_BOXES_PER_IMAGE``
    boxes is bad. Zero-size and out-of-image boxes are
    kept; NaN, negative sizes, missing fields and unknown image ids raise ``ValueError``.

    ``bad="tag"`` reads one bad annotation (bad box, unknown category id) as a problem of its
    image instead: the image gets ``issues=("bad_labels",)`` and the rest of the file is read,
    as ultralytics rejects one bad label file, not the dataset. An annotation of an image id
    that does not exist is then skipped (there is no image to tag). Category *names* missing
    from ``class_map`` always raise, listing every such name: that is a config decision.
    """
    targets = _target_ids(class_map, source_name)
    categories: dict[Any, str] = {}
    for cat in data.get("categories", []):
        try:
            categories[cat["id"]] = str(cat["name"])
        except (KeyError, TypeError):
            raise ValueError(f"{source_name}: category without id/name: {cat!r}") from None

    images: dict[Any, CocoImage] = {}
    duplicates: dict[Any, list[CocoImage]] = {}
    for img in data.get("images", []):
        try:
            image_id, file_name = img["id"], str(img["file_name"])
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source_name}: image entry needs id, file_name, width, height: {img!r}") from None
        if image_id in images or image_id in duplicates:
            if bad == "raise":
                raise ValueError(f"{source_name}: duplicate image id {image_id!r}")
            # as one bad annotation: the images sharing the id are rejected, the rest is read
            log.warning("%s: duplicate image id %r; its images marked bad_labels", source_name, image_id)
            first = [images.pop(image_id)._replace(issues=("bad_labels",))] if image_id in images else []
            duplicates.setdefault(image_id, first)
            duplicates[image_id].append(CocoImage(file_name, width, height, [], ("bad_labels",)))
            continue
        images[image_id] = CocoImage(file_name, width, height, [])

    unmapped: set[str] = set()
    bad_images: set[Any] = set()
    crowd: set[Any] = set()
    max_boxes = limit("boxes_per_image")
    for ann in data.get("annotations", []):
        if isinstance(ann, Mapping) and ann.get("image_id") in duplicates:
            continue  # its image is rejected already; which of the duplicates it means is unknown
        where = f"{source_name}: annotation {ann.get('id', '?')!r}" if isinstance(ann, Mapping) else source_name
        try:
            if not isinstance(ann, Mapping):
                raise ValueError(f"{where}: annotation must be an object, got {ann!r}")
            if ann.get("image_id") not in images:
                raise ValueError(f"{where} refers to unknown image id {ann.get('image_id')!r}")
            cat_id = ann.get("category_id")
            if cat_id not in categories:
                raise ValueError(f"{where} refers to unknown category id {cat_id!r}")
            name = categories[cat_id]
            if name not in targets:
                if unknown == "error":
                    unmapped.add(name)
                continue
            class_id = targets[name]
            if class_id is None:
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
            x, y, w, h = (finite(v, where, k) for v, k in zip(bbox, ("x", "y", "w", "h"), strict=True))
            if w < 0 or h < 0:
                raise ValueError(f"{where}: negative box size w={w}, h={h}")
        except ValueError as exc:
            if bad == "raise":
                raise
            image_id = ann.get("image_id") if isinstance(ann, Mapping) else None
            if image_id in images:
                bad_images.add(image_id)
            log.warning("%s; image marked bad_labels", exc)
            continue
        attributes: dict[str, int | float | str | bool] = {}
        if "iscrowd" in ann:
            attributes["iscrowd"] = int(ann["iscrowd"])
        if attributes.get("iscrowd"):
            # a crowd region is not one face or plate, and the faces inside it have no boxes of
            # their own: trained on, they would teach "background"; the image is rejected
            crowd.add(ann["image_id"])
            continue
        if len(images[ann["image_id"]].boxes) >= max_boxes:
            if bad == "raise":
                raise ValueError(f"{where}: image has more than {max_boxes:,} boxes (PYROBLUR_MAX_BOXES_PER_IMAGE)")
            if ann["image_id"] not in bad_images:
                log.warning("%s: image %r has more than %d boxes; marked bad_labels", source_name, ann["image_id"], max_boxes)
            bad_images.add(ann["image_id"])
            continue
        images[ann["image_id"]].boxes.append(
            BoxRecord(class_id=class_id, x1=x, y1=y, x2=x + w, y2=y + h, attributes=attributes)
        )
    if unmapped:
        raise ValueError(
            f"{source_name}: categories {sorted(unmapped)} are used but not in class_map {sorted(targets)}; "
            "map each to 'face', 'license_plate' or 'ignore'"
        )
    for image_id in bad_images:
        images[image_id] = images[image_id]._replace(boxes=[], issues=("bad_labels",))
    for image_id in crowd - bad_images:
        images[image_id] = images[image_id]._replace(boxes=[], issues=("crowd_regions",))
    if crowd:
        log.warning("%s: %d image(s) with crowd regions (iscrowd=1) marked crowd_regions", source_name, len(crowd))
    return list(images.values()) + [img for group in duplicates.values() for img in group]
