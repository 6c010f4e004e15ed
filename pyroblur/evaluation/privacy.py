"""Privacy figures: what anonymization at its operating point leaves visible.

mAP scores a ranking over every confidence; a user's output depends on one operating point:
the anonymizer's per-class confidence thresholds, its box enlargement and, in video, its
temporal gap filling. Here the detector is built exactly as ``pyroblur anonymize`` builds it
(:func:`pyroblur.anonymize.api.build_detector` with default :class:`AnonymizeOptions`), and the
hidden region is drawn as :func:`pyroblur.anonymize.ops.anonymize_image` draws it
(``enlarge_boxes`` then ``integer_boxes``).

* **coverage** (per class, test images): the fraction of ground-truth boxes of which at least
  ``covered_fraction`` of the pixels lie in the hidden region. A ground-truth box is rounded
  outwards to whole pixels, so every pixel it touches must be hidden.
* **leaks** (per class, a clip): each of a few test images becomes ``frames`` frames in which
  the picture pans and zooms (so every object moves and changes size); the frames go through
  the detector and the video path's gap filling (``memory_frames``). An (object, frame) pair
  is a leak when the object is in view (at least half of its box inside the frame) and not
  covered; ``longest_leak`` is the longest run of consecutive leaking frames of one object.
* **background damage** (the other side of privacy, on the test images and on real negatives
  that ship with scikit-image, :mod:`pyroblur.evaluation.negatives`): per image, the share of
  the far background (outside every ground-truth box grown 2x about its centre) that the hidden
  region covers; mean and worst image. A model that boxes the whole picture scores 1.0 here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pyroblur import CLASSES
from pyroblur.core.detections import Detections
from pyroblur.manifests import BackgroundDamage, ClassPrivacy, OperatingPoint

logger = logging.getLogger(__name__)

Detector = Callable[[list[np.ndarray]], list[Detections]]


def default_operating_point(covered_fraction: float) -> OperatingPoint:
    """Anonymization's own defaults (thresholds, enlargement, memory), read from its options."""
    from pyroblur.anonymize.api import AnonymizeOptions

    opts = AnonymizeOptions()
    return OperatingPoint(
        conf={CLASSES[i]: float(t) for i, t in sorted(opts.conf.items())},
        enlarge=float(opts.enlarge),
        memory_frames=int(opts.memory_frames),
        covered_fraction=covered_fraction,
    )


def hidden_mask(dets: Detections, width: int, height: int, enlarge: float) -> np.ndarray:
    """``(height, width)`` bool mask of the pixels anonymization hides for ``dets``."""
    from pyroblur.anonymize.ops import enlarge_boxes, integer_boxes

    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in integer_boxes(enlarge_boxes(dets.xyxy, enlarge, width, height), width, height):
        mask[y1:y2, x1:x2] = True
    return mask


def hidden_fraction(mask: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """Per box ``(N, 4)`` pixels: the fraction of the pixels it touches that ``mask`` hides.

    Boxes are clipped to the mask; a box with no pixel inside the image gets ``nan``.
    """
    h, w = mask.shape
    out = np.full(len(xyxy), np.nan)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, np.float64).reshape(-1, 4)):
        a, b = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), w)
        c, d = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), h)
        if b > a and d > c:
            out[i] = float(mask[c:d, a:b].mean())
    return out


def coverage(
    gt: Sequence[Detections],
    dets: Sequence[Detections],
    sizes: Sequence[tuple[int, int]],
    op: OperatingPoint,
) -> dict[str, ClassPrivacy]:
    """Per class: boxes, covered boxes, coverage and mean hidden area over the images.

    Args:
        gt: ground truth per image, pixels.
        dets: the detector's output per image at the operating point (already thresholded).
        sizes: ``(width, height)`` per image.
        op: the operating point (enlargement and the covered fraction are used here).
    """
    fractions: dict[int, list[float]] = {c: [] for c in range(len(CLASSES))}
    for g, d, (w, h) in zip(gt, dets, sizes, strict=True):
        mask = hidden_mask(d, w, h, op.enlarge)
        frac = hidden_fraction(mask, g.xyxy)
        for c, f in zip(g.class_id, frac, strict=True):
            if not np.isnan(f) and int(c) in fractions:
                fractions[int(c)].append(float(f))
    out = {}
    for c, fr in fractions.items():
        arr = np.asarray(fr)
        covered = int((arr >= op.covered_fraction).sum())
        out[CLASSES[c]] = ClassPrivacy(
            boxes=len(arr),
            covered=covered,
            coverage=covered / len(arr) if len(arr) else None,
            mean_hidden_area=float(arr.mean()) if len(arr) else None,
        )
    return out


def _affine(t: int, frames: int, width: int, height: int) -> np.ndarray:
    """Frame ``t``'s 2x3 transform: zoom from 1.0 to 1.3 about the centre while panning by up to
    15% of the image to the right and 8% down, so every object moves and grows."""
    s = 1.0 + 0.3 * t / max(frames - 1, 1)
    dx, dy = 0.15 * width * t / max(frames - 1, 1), 0.08 * height * t / max(frames - 1, 1)
    cx, cy = width / 2, height / 2
    return np.array([[s, 0, cx - s * cx + dx], [0, s, cy - s * cy + dy]], np.float64)


def moving_clip(image: np.ndarray, gt: Detections, frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``frames`` BGR frames of ``image`` panning and zooming, and each frame's moved gt boxes.

    The boxes of frame ``t`` are the ground-truth boxes transformed like the picture (same
    order, so row ``i`` is object ``i`` in every frame), not clipped.
    """
    h, w = image.shape[:2]
    out_frames, out_boxes = [], []
    for t in range(frames):
        m = _affine(t, frames, w, h)
        out_frames.append(cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        xy = gt.xyxy.astype(np.float64).reshape(-1, 2, 2)  # (N, corner, xy)
        moved = xy * m[[0, 1], [0, 1]] + m[:, 2]
        out_boxes.append(moved.reshape(-1, 4))
    return out_frames, out_boxes


@dataclass
class _ObjectRun:
    class_id: int
    in_view: int = 0
    leaks: int = 0
    run: int = 0
    longest: int = 0


def _in_view(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """At least half of each box inside the frame."""
    area = (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)
    iw = (np.minimum(xyxy[:, 2], width) - np.maximum(xyxy[:, 0], 0)).clip(0)
    ih = (np.minimum(xyxy[:, 3], height) - np.maximum(xyxy[:, 1], 0)).clip(0)
    return (area > 0) & (iw * ih >= 0.5 * area)


def leaks(
    detector: Detector,
    images: Sequence[np.ndarray],
    gts: Sequence[Detections],
    frames: int,
    op: OperatingPoint,
    batch: int = 8,
) -> dict[str, ClassPrivacy]:
    """Leak figures per class on one clip made of ``images`` (see the module docstring).

    The clip's segments play one after another through one gap filler, as a video with cuts
    would; objects are counted per segment.
    """
    from pyroblur.anonymize.temporal import fill_video_detections

    all_frames: list[np.ndarray] = []
    all_boxes: list[tuple[int, np.ndarray]] = []  # (segment, moved boxes)
    classes: list[np.ndarray] = []
    for seg, (img, gt) in enumerate(zip(images, gts, strict=True)):
        f, b = moving_clip(img, gt, frames)
        all_frames += f
        all_boxes += [(seg, x) for x in b]
        classes.append(gt.class_id.astype(np.int64))
    from pyroblur.anonymize.detector import detect_in_video

    per_frame: list[Detections] = []
    for start in range(0, len(all_frames), batch):  # a video: tiled detectors tile every n-th frame
        per_frame += detect_in_video(detector, all_frames[start : start + batch], start)
    filled = fill_video_detections(per_frame, max_gap=op.memory_frames) if op.memory_frames else None
    runs: dict[tuple[int, int], _ObjectRun] = {}
    for i, (frame, (seg, boxes)) in enumerate(zip(all_frames, all_boxes, strict=True)):
        h, w = frame.shape[:2]
        dets = filled[i].detections if filled is not None else per_frame[i]
        mask = hidden_mask(dets, w, h, op.enlarge)
        visible = _in_view(boxes, w, h)
        frac = hidden_fraction(mask, boxes)
        for k, cls in enumerate(classes[seg]):
            r = runs.setdefault((seg, k), _ObjectRun(int(cls)))
            if not visible[k]:
                r.run = 0
                continue
            r.in_view += 1
            if np.isnan(frac[k]) or frac[k] < op.covered_fraction:
                r.leaks += 1
                r.run += 1
                r.longest = max(r.longest, r.run)
            else:
                r.run = 0
    out = {}
    for c, name in enumerate(CLASSES):
        rs = [r for r in runs.values() if r.class_id == c and r.in_view]
        out[name] = ClassPrivacy(
            clip_objects=len(rs),
            clip_pairs=sum(r.in_view for r in rs),
            leaks=sum(r.leaks for r in rs),
            longest_leak=max((r.longest for r in rs), default=0),
            objects_leaking=sum(1 for r in rs if r.leaks),
        )
    return out


def privacy_figures(
    detector: Detector,
    images: Sequence[np.ndarray],
    gts: Sequence[Detections],
    op: OperatingPoint,
    clip_images: int,
    clip_frames: int,
) -> dict[str, ClassPrivacy]:
    """Coverage on all ``images`` and leaks on a clip of the first ``clip_images`` that hold a
    labelled object, merged per class."""
    dets: list[Detections] = []
    for start in range(0, len(images), 8):
        dets += detector(list(images[start : start + 8]))
    sizes = [(im.shape[1], im.shape[0]) for im in images]
    cov = coverage(gts, dets, sizes, op)
    if clip_images <= 0:
        return cov
    chosen = [i for i, g in enumerate(gts) if len(g)][:clip_images]
    clip = leaks(detector, [images[i] for i in chosen], [gts[i] for i in chosen], clip_frames, op)
    return {
        name: cov[name].model_copy(
            update=clip[name].model_dump(
                include={"clip_objects", "clip_pairs", "leaks", "longest_leak", "objects_leaking"}
            )
        )
        for name in CLASSES
    }


def far_background(gt: Detections, width: int, height: int, grow: float = 2.0) -> np.ndarray:
    """``(height, width)`` bool mask of the pixels outside every box of ``gt`` grown ``grow``
    times about its centre (a correct box, enlarged as anonymization enlarges it, stays
    inside); every pixel when ``gt`` is empty."""
    from pyroblur.anonymize.ops import enlarge_boxes, integer_boxes

    far = np.ones((height, width), bool)
    if len(gt):
        for x1, y1, x2, y2 in integer_boxes(enlarge_boxes(gt.xyxy, grow, width, height), width, height):
            far[y1:y2, x1:x2] = False
    return far


def background_damage(
    gt: Sequence[Detections],
    dets: Sequence[Detections],
    sizes: Sequence[tuple[int, int]],
    enlarge: float,
    names: Sequence[str] | None = None,
    grow: float = 2.0,
) -> BackgroundDamage:
    """Mean and worst share of the far background (:func:`far_background`) hidden by ``dets``
    (after anonymization's ``enlarge``) over the images; ``sizes`` are ``(width, height)``."""
    shares = []
    for g, d, (w, h) in zip(gt, dets, sizes, strict=True):
        far = far_background(g, w, h, grow)
        hidden = hidden_mask(d, w, h, enlarge)
        shares.append(float(hidden[far].mean()) if far.any() else 0.0)
    if not shares:
        return BackgroundDamage(images=0, grow=grow)
    worst = int(np.argmax(shares))
    return BackgroundDamage(
        images=len(shares),
        grow=grow,
        mean=float(np.mean(shares)),
        worst=shares[worst],
        worst_image=str(names[worst]) if names is not None else str(worst),
    )


def damage_figures(
    detector: Detector,
    images: Sequence[np.ndarray],
    gts: Sequence[Detections],
    op: OperatingPoint,
    negatives: Sequence[tuple[str, np.ndarray]] = (),
    names: Sequence[str] | None = None,
) -> dict[str, BackgroundDamage]:
    """Background damage of ``detector`` at ``op`` on the test ``images`` (key ``test``) and on
    ``negatives`` (key ``real_negatives``, name and BGR image; skipped when empty)."""
    out: dict[str, BackgroundDamage] = {}
    sets = [("test", list(images), list(gts), names)]
    if negatives:
        sets.append(
            (
                "real_negatives",
                [im for _, im in negatives],
                [Detections.empty()] * len(negatives),
                [n for n, _ in negatives],
            )
        )
    for key, ims, gt, labels in sets:
        dets: list[Detections] = []
        for start in range(0, len(ims), 8):
            dets += detector(ims[start : start + 8])
        out[key] = background_damage(gt, dets, [(im.shape[1], im.shape[0]) for im in ims], op.enlarge, labels)
        logger.info(
            "background damage on %s: mean %s, worst %s (%s) over %d images",
            key,
            "n/a" if out[key].mean is None else f"{out[key].mean:.4f}",
            "n/a" if out[key].worst is None else f"{out[key].worst:.4f}",
            out[key].worst_image,
            out[key].images,
        )
    return out
