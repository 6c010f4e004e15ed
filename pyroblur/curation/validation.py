"""Pure label validation: clip, drop and count problems by reason (no FiftyOne here)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from pyroblur import CLASSES
from pyroblur.core.records import BoxRecord

#: Image-level rejection reasons (tag ``rejected:<reason>`` on the sample), in the order they
#: are checked: the first that applies is the sample's reason.
IMAGE_REASONS = (
    "missing_file",  # the file is not there (or cannot be read)
    "unreadable",  # not an image, or a corrupt one the decoder refuses
    "too_large",  # more pixels than PYROBLUR_MAX_IMAGE_PIXELS (a decompression bomb?): never decoded
    "truncated",  # the data ends before the image does
    "missing_labels",  # the source has no label file for it (policy: reject or background)
    "bad_labels",  # the label file could not be parsed (or is over PYROBLUR_MAX_LABEL_BYTES)
    "crowd_regions",  # a COCO crowd region (iscrowd=1): its faces have no boxes of their own
    "size_mismatch",  # the real size differs from the size the annotation was made for
    "too_many_boxes",  # more boxes than ``max_boxes_per_image``
    "duplicate",  # byte-identical to another image that is kept (set by deduplication)
)
#: Label-level reasons (tag ``rejected:<reason>`` on the box in ``rejected_gt``). ``clipped``
#: boxes are kept in ``ground_truth`` with a ``clipped`` tag; it is counted, not a rejection.
LABEL_REASONS = (
    "invalid_geometry",
    "unknown_class",
    "outside",
    "flagged_invalid",
    "heavy_occlusion",
    "too_small",
    "clipped",
)
#: Problems a source may record on a :class:`SampleRecord` (``issues``) instead of failing.
RECORD_ISSUES = ("missing_labels", "bad_labels", "crowd_regions")


@dataclass
class BoxCheck:
    """Result of :func:`check_boxes`: ``clipped[i]`` tells whether ``kept[i]`` was clipped."""

    kept: list[BoxRecord] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    dropped: list[tuple[BoxRecord, str]] = field(default_factory=list)
    issues: Counter = field(default_factory=Counter)


def _flag(value: object) -> int | None:
    """A WIDER flag as an int; None when absent or not a number (never raises)."""
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def image_problem(
    *,
    read_problem: str | None,
    real_size: tuple[int, int],
    annotated_size: tuple[int, int],
    num_boxes: int,
    record_issues: list[str],
    max_boxes: int,
    missing_labels: str = "reject",
) -> str | None:
    """The image-level rejection reason of one sample, or None when it is usable.

    ``read_problem`` is what decoding the file found (``missing_file``, ``unreadable``,
    ``truncated`` or None); sizes are ``(width, height)`` in pixels; ``record_issues`` come from
    the source (:data:`RECORD_ISSUES`); ``missing_labels`` is the policy for images without a
    label file: ``"reject"`` or ``"background"`` (kept as an image with no objects).
    """
    if read_problem is not None:
        return read_problem
    if "missing_labels" in record_issues and missing_labels == "reject":
        return "missing_labels"
    if "bad_labels" in record_issues:
        return "bad_labels"
    if "crowd_regions" in record_issues:  # faces inside a crowd region would train as background
        return "crowd_regions"
    if tuple(real_size) != tuple(annotated_size):
        return "size_mismatch"
    if num_boxes > max_boxes:
        return "too_many_boxes"
    return None


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
    NaN/inf/zero/negative size, unknown class ids, below ``min_size`` (shorter side in pixels
    after clipping, per class name) or flagged by the source (WIDER ``invalid=1``, and
    ``occlusion=2`` when ``drop_heavy_occlusion``) are dropped with their reason. Each box gets
    at most one reason: the first of :data:`LABEL_REASONS` that applies.
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
        elif drop_invalid and _flag(b.attributes.get("invalid")) == 1:
            reason = "flagged_invalid"
        elif drop_heavy_occlusion and _flag(b.attributes.get("occlusion")) == 2:
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
            was_clipped = (clipped.x1, clipped.y1, clipped.x2, clipped.y2) != coords
            if min(clipped.width, clipped.height) < min_size.get(CLASSES[b.class_id], 0.0):
                reason = "too_small"
            else:
                out.kept.append(clipped)
                out.clipped.append(was_clipped)
                if was_clipped:
                    out.issues["clipped"] += 1
                continue
        out.dropped.append((b, reason))
        out.issues[reason] += 1
    return out
