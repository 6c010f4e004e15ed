"""WIDER FACE ground truth (``wider_face_split/wider_face_{train,val}_bbx_gt.txt``).

The file repeats blocks of::

    0--Parade/0_Parade_marchingband_1_849.jpg     relative image path
    1                                             number of faces
    449 330 122 149 0 0 0 0 0 0                   x1 y1 w h blur expression illumination
                                                  invalid occlusion pose   (pixels)

An image without faces has the count ``0`` followed by **one line of ten zeros**, which
is not a face. Coordinates are pixels with ``w``/``h`` as width/height; they become
``x1, y1, x1 + w, y1 + h``. The six flags are kept in ``BoxRecord.attributes``.
"""

from __future__ import annotations

from pyroblur import FACE
from pyroblur.core.records import BoxRecord
from pyroblur.data.formats._num import finite

__all__ = ["WIDER_ATTRIBUTES", "parse_wider_annotations"]

#: Per-face flags, in file order after ``x1 y1 w h``.
WIDER_ATTRIBUTES: tuple[str, ...] = (
    "blur",
    "expression",
    "illumination",
    "invalid",
    "occlusion",
    "pose",
)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_face(line: str, where: str) -> BoxRecord:
    parts = line.split()
    if len(parts) not in (4, 4 + len(WIDER_ATTRIBUTES)):
        raise ValueError(
            f"{where}: expected 'x1 y1 w h' and optionally {len(WIDER_ATTRIBUTES)} flags "
            f"({' '.join(WIDER_ATTRIBUTES)}), got {len(parts)} values: {line.strip()!r}"
        )
    x1, y1, w, h = (finite(v, where, name) for v, name in zip(parts[:4], ["x1", "y1", "w", "h"], strict=True))
    if w < 0 or h < 0:
        raise ValueError(f"{where}: negative box size w={w}, h={h}")
    attributes: dict[str, int | float | str | bool] = {}
    for name, token in zip(WIDER_ATTRIBUTES, parts[4:], strict=False):
        value = finite(token, where, name)
        attributes[name] = int(value) if value.is_integer() else value
    return BoxRecord(class_id=FACE, x1=x1, y1=y1, x2=x1 + w, y2=y1 + h, attributes=attributes)


def parse_wider_annotations(text: str, *, source_name: str = "<wider>") -> list[tuple[str, list[BoxRecord]]]:
    """Parse a WIDER FACE ``*_bbx_gt.txt`` text into ``(relative image path, boxes)``.

    Boxes are faces (class 0) in **pixels** ``x1, y1, x2, y2``; zero-size boxes and boxes
    on or past the border are kept. Raises ``ValueError`` naming ``source_name`` and the
    1-based line for a bad count, a missing or malformed face line, NaN or negative sizes.
    """
    lines = text.splitlines()
    out: list[tuple[str, list[BoxRecord]]] = []
    i, n = 0, len(lines)
    while i < n:
        path = lines[i].strip()
        i += 1
        if not path:
            continue
        if _is_number(path):
            raise ValueError(f"{source_name}:{i}: expected an image path, got {path!r}")
        if i >= n:
            raise ValueError(f"{source_name}:{i}: missing face count after {path!r}")
        count_text = lines[i].strip()
        i += 1
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(
                f"{source_name}:{i}: face count of {path!r} must be an integer, got {count_text!r}"
            ) from None
        if count < 0:
            raise ValueError(f"{source_name}:{i}: negative face count {count} for {path!r}")
        boxes: list[BoxRecord] = []
        # The official files follow a zero count with one line of zeros that is not a
        # face; skip it when present (hand-written files may omit it).
        tokens = lines[i].split() if count == 0 and i < n else []
        if tokens and all(_is_number(t) for t in tokens):
            if any(float(t) != 0 for t in tokens):
                raise ValueError(
                    f"{source_name}:{i + 1}: {path!r} has 0 faces but is followed by a "
                    f"non-zero box line {lines[i].strip()!r}"
                )
            i += 1
        for _ in range(count):
            if i >= n or not lines[i].strip():
                raise ValueError(
                    f"{source_name}:{i + 1}: {path!r} declares {count} faces but only {len(boxes)} lines follow"
                )
            boxes.append(_parse_face(lines[i], f"{source_name}:{i + 1}"))
            i += 1
        out.append((path, boxes))
    return out
