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
from pyroblur.core.images import decode_image, read_image_bytes
from pyroblur.core.io import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["anonymize_image_file", "encode_image", "read_image"]


#: EXIF orientation -> the OpenCV operations that make the pixels upright (applied in order).
_UPRIGHT: dict[int, tuple[int | None, int | None]] = {
    2: (None, 1),  # mirrored: flip left-right
    3: (cv2.ROTATE_180, None),
    4: (None, 0),  # flip up-down
    5: (cv2.ROTATE_90_CLOCKWISE, 1),
    6: (cv2.ROTATE_90_CLOCKWISE, None),
    7: (cv2.ROTATE_90_COUNTERCLOCKWISE, 1),
    8: (cv2.ROTATE_90_COUNTERCLOCKWISE, None),
}


def _inspect(path: Path, data: bytes) -> int:
    """Refuse by name what this anonymizer would silently reduce (several pages or frames);
    return the EXIF orientation (1 = upright)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1:
            kind = "animated image" if im.format in {"WEBP", "GIF", "PNG"} else "multi-page image"
            raise UnreadableInputError(
                f"{kind} with {frames} frames/pages: only single-frame images are anonymized "
                "(writing the first alone would drop the rest)",
                subject=str(path),
                hint="split it into single images (e.g. one file per page) first",
            )
        try:
            return int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: no orientation
            return 1


def read_image(path: Path) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``(bgr, restore)``: a BGR uint8 image and a function that turns an anonymized BGR
    image back into the file's layout (gray, alpha channel).

    The EXIF orientation of every format is applied (the written file is upright and carries
    no EXIF). Multi-page TIFFs, animated WebP/PNG and images of more than 8 bits per channel
    (16-bit, float, HDR) are refused by name rather than reduced.

    Raises:
        UnreadableInputError: the file does not decode as an image, or is one of the above.
    """
    is_jpeg = path.suffix.lower() in {".jpg", ".jpeg"}
    # IMREAD_COLOR applies the EXIF orientation of a JPEG; other formats get it applied below.
    flags = cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED
    try:  # the project's one decoder: type, bytes and header checked before any pixel is decoded
        data = read_image_bytes(path)
        orientation = _inspect(path, data)
        img = decode_image(data, flags=flags, subject=str(path))
    except InputError as exc:
        raise UnreadableInputError(exc.message, subject=str(path), hint=exc.hint) from None
    if img.dtype != np.uint8:
        raise UnreadableInputError(
            f"{img.dtype} image ({'16-bit' if img.dtype == np.uint16 else 'floating point'} samples): "
            "the anonymizer writes 8-bit images only and would change its tones",
            subject=str(path),
            hint="convert it to 8 bits per channel first if that loss is acceptable",
        )
    if not is_jpeg and orientation in _UPRIGHT:
        rotate, flip = _UPRIGHT[orientation]
        if flip is not None and orientation in (2, 4):
            img = cv2.flip(img, flip)
        if rotate is not None:
            img = cv2.rotate(img, rotate)
        if flip is not None and orientation in (5, 7):
            img = cv2.flip(img, flip)
        img = np.ascontiguousarray(img)
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
