"""YOLO txt labels: one ``class cx cy w h`` line per box, **normalized** to [0, 1].

Polygon lines (``class x1 y1 x2 y2 ...``: more than 6 values, an even number of
coordinates, as segmentation exports write) are read as their bounding box, as ultralytics'
``verify_image_label`` does (``segments2boxes``); such boxes carry ``attributes["polygon"] = True``
so the reading is visible downstream. A file mixing box and polygon lines is rejected, as
ultralytics rejects it. Pose lines (``class cx cy w h`` + ``kpt_values`` keypoint values) keep
their box when ``kpt_values`` is given (data.yaml's ``kpt_shape``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pyroblur.core.limits import limit
from pyroblur.core.records import BoxRecord
from pyroblur.data.formats._num import finite

__all__ = ["parse_yolo_labels", "to_yolo_labels"]


def parse_yolo_labels(
    text: str,
    width: int,
    height: int,
    class_map: Mapping[int, int | None],
    *,
    source_name: str = "<labels>",
    kpt_values: int | None = None,
) -> list[BoxRecord]:
    """Parse YOLO label text of an image of ``width`` x ``height`` pixels.

    ``class_map`` maps the file's class ids to ours (``None`` drops the box). Returns
    boxes in **pixels** ``x1, y1, x2, y2``. Blank lines and ``#`` comments are skipped.
    Boxes that touch or cross the border or have zero size are kept as they are.
    Raises ``ValueError`` naming ``source_name`` and the line for a wrong field count,
    a non-integer or unmapped class, NaN/inf, or a negative size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"{source_name}: image size must be positive, got {width}x{height}")
    boxes: list[BoxRecord] = []
    kinds: set[str] = set()
    max_boxes = limit("boxes_per_image")
    for lineno, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source_name}:{lineno}"
        parts = stripped.split()
        if kpt_values and len(parts) == 5 + kpt_values:
            parts = parts[:5]  # a pose label: its box, without the keypoints
        kinds.add("box" if len(parts) == 5 else "polygon")
        if len(kinds) > 1:
            raise ValueError(f"{where}: the file mixes box lines and polygon lines (ultralytics rejects such files)")
        if len(parts) != 5 and (len(parts) < 7 or len(parts) % 2 == 0):
            raise ValueError(
                f"{where}: expected 'class cx cy w h' (or a polygon), got {len(parts)} values: {stripped!r}"
            )
        try:
            source_class = int(parts[0])
        except ValueError:
            raise ValueError(f"{where}: class id {parts[0]!r} is not an integer") from None
        if source_class not in class_map:
            raise ValueError(f"{where}: class id {source_class} is not in the class map {sorted(class_map)}")
        values = [finite(v, where) for v in parts[1:]]
        if len(parts) == 5:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise ValueError(f"{where}: negative box size w={w}, h={h}")
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        else:
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        class_id = class_map[source_class]
        if class_id is None:
            continue
        if len(boxes) >= max_boxes:
            raise ValueError(f"{where}: more than {max_boxes:,} boxes in one image (PYROBLUR_MAX_BOXES_PER_IMAGE)")
        boxes.append(
            BoxRecord(
                class_id=class_id,
                x1=x1 * width,
                y1=y1 * height,
                x2=x2 * width,
                y2=y2 * height,
                attributes={"polygon": True} if len(parts) != 5 else {},
            )
        )
    return boxes


def to_yolo_labels(boxes: Iterable[BoxRecord], width: int, height: int) -> str:
    """Write boxes in **pixels** as YOLO label text (normalized ``class cx cy w h``).

    Values are written as they are (no clipping; clip or reject before if needed) with
    six decimals. Returns ``""`` for no boxes, else lines ending with a newline.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    lines = []
    for b in boxes:
        cx = (b.x1 + b.x2) / 2 / width
        cy = (b.y1 + b.y2) / 2 / height
        w = (b.x2 - b.x1) / width
        h = (b.y2 - b.y1) / height
        lines.append(f"{b.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)
