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
from pathlib import Path

import numpy as np

from pyroblur.core.errors import InputError
from pyroblur.core.limits import LIMITS, check_regular_file, limit

log = logging.getLogger(__name__)

#: Default pixel limit (width x height) of any decoded image.
DEFAULT_MAX_PIXELS = LIMITS["image_pixels"].default
MAX_PIXELS_ENV = LIMITS["image_pixels"].env
#: Bytes an image file may hold beyond its raw pixels (ICC profiles, EXIF, XMP, thumbnails).
_METADATA_SLACK = 64 << 20


def max_image_pixels() -> int:
    """The configured pixel limit: ``PYROBLUR_MAX_IMAGE_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    return limit("image_pixels")


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
    check_jpeg_scans(data, subject=subject)
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR if flags is None else flags)
    if img is None or img.size == 0:
        raise InputError("not a readable image (corrupt or truncated?)", subject=subject)
    return img


def check_jpeg_scans(data: bytes, *, subject: str = "<image>") -> None:
    """Refuse a JPEG with more scans than ``PYROBLUR_MAX_JPEG_SCANS``: a 300 KB progressive JPEG
    of 20,000 scans decodes for about a minute. Every scan starts with an SOS marker
    (``FF DA``); inside entropy-coded data a ``FF`` byte is always followed by ``00`` or a
    restart marker, so counting ``FF DA`` counts scans."""
    if not data.startswith(b"\xff\xd8"):
        return
    cap = limit("jpeg_scans")
    scans = data.count(b"\xff\xda")
    if scans > cap:
        raise InputError(
            f"JPEG with {scans:,} scans is over the limit of {cap:,} scans",
            subject=subject,
            hint=f"raise {LIMITS['jpeg_scans'].env} if it is genuine",
        )


def read_image_bytes(path: str | Path, *, max_pixels: int | None = None) -> bytes:
    """The bytes of the image file ``path``, checked before they are read: a regular file
    (not a FIFO or a device), at most ``PYROBLUR_MAX_IMAGE_BYTES``, its header within the pixel
    limit, and no more bytes than its pixels could take (a 10x10 PNG with a 3 GB tail is
    refused without reading the tail)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        st = check_regular_file(path, what="image")
    except FileNotFoundError:
        raise InputError("file not found", subject=str(path)) from None
    except PermissionError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", subject=str(path)) from None
    cap = limit("image_bytes")
    if st.st_size > cap:
        raise InputError(
            f"image file of {st.st_size:,} bytes is over the limit of {cap:,} bytes",
            subject=str(path),
            hint=f"raise {LIMITS['image_bytes'].env} if it is genuine",
        )
    apply_pillow_limit(max_pixels)
    try:
        with Image.open(path) as im:  # lazily: reads the header only
            width, height = int(im.width), int(im.height)
    except Image.DecompressionBombError as exc:
        with open(path, "rb") as f:
            size = _size_past_pillow_limit(f.read(1 << 16))
        if size is None:
            raise InputError(f"image too large to decode safely ({exc})", subject=str(path)) from None
        width, height = size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"not a readable image ({exc})", subject=str(path)) from None
    if width:
        check_pixels(width, height, max_pixels=max_pixels, subject=str(path))
        # 4 channels of 32 bits is the most any supported format stores per pixel
        plausible = width * height * 16 + _METADATA_SLACK
        if st.st_size > plausible:
            raise InputError(
                f"{st.st_size:,} bytes for a {width}x{height} image: more than its pixels could take "
                f"(limit {plausible:,} bytes)",
                subject=str(path),
            )
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", subject=str(path)) from None
    if len(data) > cap:
        raise InputError(f"image file is over the limit of {cap:,} bytes", subject=str(path))
    return data


def read_image(path: str | Path, *, max_pixels: int | None = None, flags: int | None = None) -> np.ndarray:
    """:func:`decode_image` of a file (read through :func:`read_image_bytes`); errors name the path."""
    data = read_image_bytes(path, max_pixels=max_pixels)
    return decode_image(data, max_pixels=max_pixels, flags=flags, subject=str(path))
