"""Pure image operations that hide the pixels inside boxes.

All functions take numpy BGR ``uint8`` images of shape ``(H, W, 3)`` (grayscale ``(H, W)``
works too) and boxes as ``(N, 4)`` float arrays of ``x1, y1, x2, y2`` in **pixels**.
Boxes are enlarged around their centre, clipped to the image and rounded outwards, so a
box always covers at least the pixels it touches. Nothing here mutates its inputs unless
a function says so.

Strength scales with box size: a blur kernel or a mosaic cell is a fraction of the box's
smaller side, so a 20 px face and a 400 px face are equally unrecognizable.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import cv2
import numpy as np

from pyroblur.core.detections import clip_boxes

logger = logging.getLogger(__name__)

__all__ = [
    "Mode",
    "anonymize_image",
    "blur_region",
    "enlarge_boxes",
    "integer_boxes",
    "mosaic_region",
    "solid_region",
]


class Mode(StrEnum):
    """How a box is hidden."""

    blur = "blur"
    mosaic = "mosaic"
    solid = "solid"


def enlarge_boxes(xyxy: np.ndarray, factor: float, width: int, height: int) -> np.ndarray:
    """Scale boxes around their centres by ``factor`` (1.0 = unchanged), then clip.

    Args:
        xyxy: ``(N, 4)`` boxes in pixels.
        factor: linear scale of width and height; must be > 0.
        width, height: image size in pixels, the clip limits.

    Returns:
        ``(N, 4)`` float32 boxes in pixels, inside ``[0, width] x [0, height]``.
    """
    if factor <= 0:
        raise ValueError(f"enlarge factor must be > 0, got {factor}")
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0 or factor == 1.0:
        return clip_boxes(boxes, width, height)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return clip_boxes(np.concatenate([centre - half, centre + half], axis=1), width, height)


def integer_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Round pixel boxes outwards to ints (``floor`` of the start, ``ceil`` of the end).

    Returns ``(M, 4)`` int64 boxes inside the image with positive area; empty or inverted
    boxes are dropped.
    """
    boxes = clip_boxes(xyxy, width, height)
    out = np.concatenate([np.floor(boxes[:, :2]), np.ceil(boxes[:, 2:])], axis=1).astype(np.int64)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep]


def _odd(n: float) -> int:
    k = max(3, round(n))
    return k if k % 2 else k + 1


def blur_region(region: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Blur a crop with a kernel of ``strength`` x its size (pixels), returning a new crop.

    A box filter applied twice (a cheap Gaussian look-alike whose cost does not grow with
    the kernel), over a downscaled copy when the kernel is large: hiding a face needs a
    kernel of about half its size, and blur time was the main cost in peer tools.
    """
    h, w = region.shape[:2]
    if h == 0 or w == 0:
        return region.copy()
    kw, kh = _odd(w * strength), _odd(h * strength)
    # Work at a scale where the kernel is at most ~15 px: same look, far fewer pixels.
    scale = min(1.0, 15.0 / max(kw, kh))
    if scale < 1.0:
        small = cv2.resize(
            region,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
        ks = (_odd(kw * scale), _odd(kh * scale))
        small = cv2.blur(cv2.blur(small, ks), ks)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.blur(cv2.blur(region, (kw, kh)), (kw, kh))


def mosaic_region(region: np.ndarray, cells: int = 8) -> np.ndarray:
    """Pixelate a crop so its smaller side holds ``cells`` blocks; returns a new crop."""
    h, w = region.shape[:2]
    if h == 0 or w == 0:
        return region.copy()
    cell = max(2.0, min(h, w) / max(1, cells))
    small = cv2.resize(
        region,
        (max(1, round(w / cell)), max(1, round(h / cell))),
        interpolation=cv2.INTER_AREA,
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def solid_region(region: np.ndarray, color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A crop filled with one BGR colour; returns a new crop."""
    out = np.empty_like(region)
    out[...] = color if region.ndim == 3 else color[0]
    return out


def _feather_alpha(h: int, w: int, inner: tuple[int, int, int, int], margin: int) -> np.ndarray:
    """``(h, w)`` float32 weights: 1 inside ``inner`` (x1, y1, x2, y2 local pixels),
    falling linearly to 0 over ``margin`` pixels outside it."""
    x1, y1, x2, y2 = inner
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    dx = np.maximum(np.maximum(x1 - xs, xs - x2), 0)
    dy = np.maximum(np.maximum(y1 - ys, ys - y2), 0)
    ax = np.clip(1 - dx / margin, 0, 1)
    ay = np.clip(1 - dy / margin, 0, 1)
    return np.outer(ay, ax)


def anonymize_image(
    image: np.ndarray,
    xyxy: np.ndarray,
    mode: Mode | str = Mode.blur,
    *,
    enlarge: float = 1.0,
    feather: float = 0.0,
    blur_strength: float = 0.5,
    mosaic_cells: int = 8,
    color: tuple[int, int, int] = (0, 0, 0),
    ellipse: np.ndarray | bool = False,
    inplace: bool = False,
) -> np.ndarray:
    """Hide every box of ``image``.

    Args:
        image: ``(H, W, 3)`` BGR uint8 (or ``(H, W)`` gray) image.
        xyxy: ``(N, 4)`` boxes in pixels; may lie partly or wholly outside the image.
        mode: ``blur``, ``mosaic`` or ``solid``.
        enlarge: linear scale of each box around its centre before hiding (1.0 = as given).
        feather: width of a soft edge *outside* each (enlarged) box, as a fraction of the
            box's smaller side (0 = hard edge). The box itself is always fully hidden.
        blur_strength: blur kernel as a fraction of the box size.
        mosaic_cells: mosaic blocks along the box's smaller side.
        color: BGR fill for ``solid``.
        ellipse: hide only the ellipse inscribed in each (enlarged) box: one bool for all
            boxes or a ``(N,)`` bool array (e.g. true for faces, false for plates).
        inplace: write into ``image`` instead of a copy.

    Returns:
        The anonymized image (``image`` itself when ``inplace``).
    """
    mode = Mode(mode)
    out = image if inplace else image.copy()
    h, w = out.shape[:2]
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0 or h == 0 or w == 0:
        return out
    ellipses = np.broadcast_to(np.asarray(ellipse, bool), (len(boxes),))
    enlarged = enlarge_boxes(boxes, enlarge, w, h)
    # integer_boxes drops empty boxes: keep the ellipse flags aligned with the survivors.
    rounded = np.concatenate([np.floor(enlarged[:, :2]), np.ceil(enlarged[:, 2:])], axis=1).astype(np.int64)
    keep = (rounded[:, 2] > rounded[:, 0]) & (rounded[:, 3] > rounded[:, 1])
    boxes, ellipses = integer_boxes(enlarged, w, h), ellipses[keep]
    for (x1, y1, x2, y2), oval in zip(boxes.tolist(), ellipses.tolist(), strict=True):
        margin = round(feather * min(x2 - x1, y2 - y1)) if feather > 0 else 0
        # With a feather the filter runs over the box plus its margin so the soft edge
        # blends filtered pixels, not the original ones.
        X1, Y1 = max(0, x1 - margin), max(0, y1 - margin)
        X2, Y2 = min(w, x2 + margin), min(h, y2 + margin)
        region = out[Y1:Y2, X1:X2]
        if mode is Mode.blur:
            hidden = blur_region(region, blur_strength)
        elif mode is Mode.mosaic:
            hidden = mosaic_region(region, mosaic_cells)
        else:
            hidden = solid_region(region, color)
        if margin > 0:
            alpha = _feather_alpha(Y2 - Y1, X2 - X1, (x1 - X1, y1 - Y1, x2 - X1, y2 - Y1), margin)
            if region.ndim == 3:
                alpha = alpha[..., None]
            blended = hidden.astype(np.float32) * alpha + region.astype(np.float32) * (1 - alpha)
            hidden = np.clip(blended + 0.5, 0, 255).astype(out.dtype)
            # Inside the box the weight is exactly 1: keep those pixels bit-exact.
        if oval:
            mask = np.zeros(hidden.shape[:2], np.uint8)
            cx, cy = (x1 + x2) / 2 - X1, (y1 + y2) / 2 - Y1
            # Axes grown by the feather margin so a feathered ellipse still covers its box's ellipse.
            axes = (max(1, round((x2 - x1) / 2 + margin)), max(1, round((y2 - y1) / 2 + margin)))
            cv2.ellipse(mask, (round(cx), round(cy)), axes, 0, 0, 360, 1, thickness=-1)
            keep_in = mask.astype(bool)
            hidden = np.where(keep_in[..., None] if region.ndim == 3 else keep_in, hidden, region)
        out[Y1:Y2, X1:X2] = hidden
    return out
