"""Still images: read in the file's own layout, anonymize, write atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pyroblur.anonymize.errors import UnreadableInputError
from pyroblur.core.detections import Detections
from pyroblur.core.errors import InputError
from pyroblur.core.images import decode_image
from pyroblur.core.io import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["anonymize_image_file", "encode_image", "read_image"]


def read_image(path: Path) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``(bgr, restore)``: a BGR uint8 image and a function that turns an anonymized BGR
    image back into the file's layout (gray, alpha channel).

    Raises:
        UnreadableInputError: the file does not decode as an image.
    """
    # IMREAD_COLOR applies the EXIF orientation of a JPEG; the written file is upright, EXIF-free.
    flags = cv2.IMREAD_COLOR if path.suffix.lower() in {".jpg", ".jpeg"} else cv2.IMREAD_UNCHANGED
    try:  # the project's one decoder: the header is checked against the pixel limit first
        img = decode_image(path.read_bytes(), flags=flags, subject=str(path))
    except InputError as exc:
        raise UnreadableInputError(exc.message, subject=str(path), hint=exc.hint) from None
    if img.dtype != np.uint8:
        logger.info("%s: %s image written as 8-bit", path, img.dtype)
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), lambda out: cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    if img.shape[2] == 4:
        alpha = img[..., 3:]
        return np.ascontiguousarray(img[..., :3]), lambda out: np.concatenate([out, alpha], axis=2)
    return img, lambda out: out


def encode_image(image: np.ndarray, suffix: str, jpeg_quality: int = 95) -> bytes:
    """``image`` encoded in the format of ``suffix`` (``.jpg`` at ``jpeg_quality``)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix.lower() in {".jpg", ".jpeg"} else []
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {suffix!r}")
    return buf.tobytes()


def anonymize_image_file(
    src: Path,
    dst: Path,
    detect: Callable[[list[np.ndarray]], list[Detections]],
    hide: Callable[[np.ndarray, Detections], np.ndarray],
    *,
    jpeg_quality: int = 95,
) -> tuple[Detections, np.ndarray, tuple[int, int]]:
    """Detect, hide and write one image atomically.

    Returns:
        ``(detections, hidden_bgr, (height, width))``: the boxes hidden, the anonymized BGR
        pixels (for a residual check) and the image size in pixels.
    """
    bgr, restore = read_image(src)
    dets = detect([bgr])[0]
    hidden = hide(bgr, dets)
    write_atomic(dst, encode_image(restore(hidden), dst.suffix, jpeg_quality))
    return dets, hidden, bgr.shape[:2]
