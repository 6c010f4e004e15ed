"""Pure parsers and writers of annotation formats (text or dicts in, records out).

Nothing here touches the disk or the network, so every edge case is table-tested:

* :mod:`~pyroblur.formats.wider`: WIDER FACE ``wider_face_*_bbx_gt.txt``;
* :mod:`~pyroblur.formats.coco`: COCO detection JSON (``bbox`` = x, y, w, h in pixels);
* :mod:`~pyroblur.formats.yolo`: YOLO txt labels (normalized cx, cy, w, h).

All of them produce :class:`~pyroblur.records.BoxRecord` in **pixels** ``x1, y1, x2, y2``.
Degenerate boxes (zero width/height, touching or crossing the image border) are kept as
they are; rejecting them is curation's decision. NaN/inf values and malformed lines raise
a :class:`ValueError` naming the file and line.
"""

from pyroblur.formats.coco import CocoImage, parse_coco
from pyroblur.formats.wider import WIDER_ATTRIBUTES, parse_wider_annotations
from pyroblur.formats.yolo import parse_yolo_labels, to_yolo_labels

__all__ = [
    "WIDER_ATTRIBUTES",
    "CocoImage",
    "parse_coco",
    "parse_wider_annotations",
    "parse_yolo_labels",
    "to_yolo_labels",
]
