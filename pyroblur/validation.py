"""Pure label validation: clip, drop and count problems by reason (no FiftyOne here)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from pyroblur import CLASSES
from pyroblur.records import BoxRecord

#: Image-level rejection reasons (tag ``rejected:<reason>`` on the sample).
IMAGE_REASONS = ("unreadable", "size_mismatch", "duplicate", "too_many_boxes", "missing_file")
#: Label-level reasons (tag ``rejected:<reason>`` on the label; ``clipped`` boxes are kept).
LABEL_REASONS = ("outside", "invalid_geometry", "unknown_class", "too_small", "flagged_invalid", "heavy_occlusion", "clipped")


@dataclass
class BoxCheck:
    kept: list[BoxRecord] = field(default_factory=list)
    dropped: list[tuple[BoxRecord, str]] = field(default_factory=list)
    issues: Counter = field(default_factory=Counter)


def check_boxes(
    boxes: list[BoxRecord],
    width: int,
    height: int,
    min_size: dict[str, float],
    drop_invalid: bool = True,
    drop_heavy_occlusion: bool = False,
) -> BoxCheck:
    """Validate ``boxes`` (pixels) against a ``width`` x ``height`` image.

    Boxes partly outside are clipped (counted as ``clipped``, kept); boxes wholly outside, with
    NaN/zero/negative size, unknown class ids, below ``min_size`` (shorter side in pixels, per
    class name) or flagged by the source are dropped with their reason.
    """
    out = BoxCheck()
    for b in boxes:
        coords = (b.x1, b.y1, b.x2, b.y2)
        reason = None
        if not all(math.isfinite(v) for v in coords) or b.x2 <= b.x1 or b.y2 <= b.y1:
            reason = "invalid_geometry"
        elif not 0 <= b.class_id < len(CLASSES):
            reason = "unknown_class"
        elif b.x2 <= 0 or b.y2 <= 0 or b.x1 >= width or b.y1 >= height:
            reason = "outside"
        elif drop_invalid and int(b.attributes.get("invalid", 0)) == 1:
            reason = "flagged_invalid"
        elif drop_heavy_occlusion and int(b.attributes.get("occlusion", 0)) == 2:
            reason = "heavy_occlusion"
        if reason is None:
            clipped = BoxRecord(
                class_id=b.class_id,
                x1=max(0.0, b.x1),
                y1=max(0.0, b.y1),
                x2=min(float(width), b.x2),
                y2=min(float(height), b.y2),
                attributes=b.attributes,
            )
            if (clipped.x1, clipped.y1, clipped.x2, clipped.y2) != coords:
                out.issues["clipped"] += 1
            if min(clipped.width, clipped.height) < min_size.get(CLASSES[b.class_id], 0.0):
                reason = "too_small"
            else:
                out.kept.append(clipped)
                continue
        out.dropped.append((b, reason))
        out.issues[reason] += 1
    return out
