"""Pure parsers and writers of annotation formats (text or dicts in, records out).

Nothing here touches the disk or the network, so every edge case is table-tested:

* :mod:`~pyroblur.data.formats.wider`: WIDER FACE ``wider_face_*_bbx_gt.txt``;
* :mod:`~pyroblur.data.formats.coco`: COCO detection JSON (``bbox`` = x, y, w, h in pixels);
* :mod:`~pyroblur.data.formats.yolo`: YOLO txt labels (normalized cx, cy, w, h).

All of them produce :class:`~pyroblur.core.records.BoxRecord` in **pixels** ``x1, y1, x2, y2``.
Degenerate boxes (zero width/height, touching or crossing the image border) are kept as
they are; rejecting them is curation's decision. NaN/inf values and malformed lines raise
a :class:`ValueError` naming the file and line.
"""

from pyroblur.data.formats.coco import CocoImage, detection_problem, parse_coco
from pyroblur.data.formats.wider import WIDER_ATTRIBUTES, parse_wider_annotations
from pyroblur.data.formats.yolo import parse_yolo_labels, to_yolo_labels

__all__ = [
    "WIDER_ATTRIBUTES",
    "CocoImage",
    "detection_problem",
    "parse_coco",
    "parse_wider_annotations",
    "parse_yolo_labels",
    "to_yolo_labels",
]
