"""The one image decoder, with a pixel limit checked on the header before any pixel is decoded.

A 109 KB PNG can declare 30000x30000 pixels; OpenCV's own limit (2^30 px) lets it allocate
2.7 GB per copy. Every decoder in the project goes through :func:`decode_image` /
:func:`read_image` (or, for Pillow, the same limit via ``PIL.Image.MAX_IMAGE_PIXELS``): the
size is read from the file's header (Pillow opens lazily, decoding nothing) and an image over
the limit is an :class:`~pyroblur.core.errors.InputError` naming the file and its size.

The limit is one setting: ``PYROBLUR_MAX_IMAGE_PIXELS`` (default 100 MP, e.g. 12000x8333),
or ``max_pixels=`` per call.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from pyroblur.core.errors import ConfigurationError, InputError

log = logging.getLogger(__name__)

#: Default pixel limit (width x height) of any decoded image.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "PYROBLUR_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The configured pixel limit: ``PYROBLUR_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigurationError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a number", subject=MAX_PIXELS_ENV, hint="e.g. 100000000"
        ) from None
    if value <= 0:
        raise ConfigurationError(f"{MAX_PIXELS_ENV} must be positive, got {value}", subject=MAX_PIXELS_ENV)
    return value


def apply_pillow_limit(max_pixels: int | None = None) -> None:
    """Give Pillow the same limit (it warns above it and refuses above twice it)."""
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels or max_image_pixels()
    # Between the limit and twice it Pillow only warns; our callers refuse those images
    # themselves (check_pixels), so the warning says nothing new. Set once: catch_warnings
    # is not thread-safe and decoders run in threads.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def image_size(data: bytes, *, subject: str = "<image>") -> tuple[int, int]:
    """``(width, height)`` from the header alone; raises :class:`InputError` when the bytes
    are not an image Pillow can identify."""
    from PIL import Image, UnidentifiedImageError

    apply_pillow_limit()  # Pillow refuses outright above twice the limit; we check the rest
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height)
    except Image.DecompressionBombError as exc:
        size = _size_past_pillow_limit(data)
        if size is None:
            raise InputError(f"image too large to decode safely ({exc})", subject=subject) from None
        return size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"not a readable image ({exc})", subject=subject) from None


def _size_past_pillow_limit(data: bytes) -> tuple[int, int] | None:
    """The header size of an image Pillow refused as a bomb (so the error can say how big it
    is): the format plugin reads the header; only ``Image.open`` applies the bomb check."""
    from PIL import Image

    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            im = factory(io.BytesIO(data), "")
        except Exception:  # noqa: BLE001 - not this format
            continue
        return int(im.width), int(im.height)
    return None


def check_pixels(width: int, height: int, *, max_pixels: int | None = None, subject: str = "<image>") -> None:
    """Raise :class:`InputError` when ``width x height`` is over the limit."""
    limit = max_pixels or max_image_pixels()
    if width * height > limit:
        raise InputError(
            f"image of {width}x{height} px ({width * height / 1e6:.3g} MP) is over the pixel limit "
            f"of {limit / 1e6:.3g} MP",
            subject=subject,
            hint=f"raise {MAX_PIXELS_ENV} if it is genuine",
        )


def decode_image(
    data: bytes, *, max_pixels: int | None = None, flags: int | None = None, subject: str = "<image>"
) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, WebP, TIFF, BMP) with OpenCV after checking its
    header against the pixel limit.

    ``flags`` are OpenCV's ``IMREAD_*`` flags (default ``IMREAD_COLOR``: BGR uint8, EXIF
    orientation applied). Returns the array OpenCV returns (HxW, HxWx3 or HxWx4). Raises
    :class:`InputError` (naming ``subject``) for an oversized, unidentifiable or corrupt image.
    """
    import cv2

    width, height = image_size(data, subject=subject)
    check_pixels(width, height, max_pixels=max_pixels, subject=subject)
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if flags is None else flags)
    if img is None or img.size == 0:
        raise InputError("not a readable image (corrupt or truncated?)", subject=subject)
    return img


def read_image(path: str | Path, *, max_pixels: int | None = None, flags: int | None = None) -> np.ndarray:
    """:func:`decode_image` of a file; errors name the path."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", subject=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a folder, not an image", subject=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", subject=str(path)) from None
    return decode_image(data, max_pixels=max_pixels, flags=flags, subject=str(path))
