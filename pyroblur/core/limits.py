"""Every size limit on what the project reads, in one place.

Each limit is checked on what is actually read (the bytes of a regular file, the pixels of a
decoded frame, the boxes parsed), never only on what a header claims, and each can be changed
with one environment variable (docs/failures.md lists them with their defaults):

=====================================  =====================================  ==========
environment variable                   what it bounds                         default
=====================================  =====================================  ==========
``PYROBLUR_MAX_IMAGE_PIXELS``          pixels of one image or video frame     100 MP
``PYROBLUR_MAX_IMAGE_BYTES``           bytes of one image file                1 GiB
``PYROBLUR_MAX_JPEG_SCANS``            scans of one (progressive) JPEG        1,000
``PYROBLUR_MAX_FRAME_BYTES_IN_FLIGHT`` decoded video frames held at once      2 GiB
``PYROBLUR_MAX_DETECTOR_PIXELS``       pixels one detector call is given      16.8 MP
``PYROBLUR_MAX_LABEL_BYTES``           bytes of one YOLO/WIDER label file     4 MiB
``PYROBLUR_MAX_BOXES_PER_IMAGE``       boxes of one image                     10,000
``PYROBLUR_MAX_ANNOTATION_BYTES``      bytes of one COCO JSON                 512 MiB
``PYROBLUR_MAX_ANNOTATIONS``           annotations of one COCO JSON           5,000,000
``PYROBLUR_MAX_CONFIG_BYTES``          bytes of one config file / data.yaml   1 MB
=====================================  =====================================  ==========
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pyroblur.core.errors import ConfigurationError, InputError

__all__ = ["LIMITS", "Limit", "check_regular_file", "limit", "read_bounded"]


@dataclass(frozen=True)
class Limit:
    """One configurable bound: its environment variable, default and what it bounds."""

    env: str
    default: int
    what: str

    def value(self) -> int:
        """The configured value (read on every call, so tests and users can change it)."""
        raw = os.environ.get(self.env, "").strip().replace("_", "")
        if not raw:
            return self.default
        try:
            value = int(float(raw))
        except ValueError:
            raise ConfigurationError(
                f"{self.env}={raw!r} is not a number", subject=self.env, hint=f"e.g. {self.default}"
            ) from None
        if value <= 0:
            raise ConfigurationError(f"{self.env} must be positive, got {value}", subject=self.env)
        return value


_GIB = 1 << 30
LIMITS: dict[str, Limit] = {
    "image_pixels": Limit("PYROBLUR_MAX_IMAGE_PIXELS", 100_000_000, "pixels of one image or video frame"),
    "image_bytes": Limit("PYROBLUR_MAX_IMAGE_BYTES", _GIB, "bytes of one image file"),
    "jpeg_scans": Limit("PYROBLUR_MAX_JPEG_SCANS", 1_000, "scans of one JPEG"),
    "frame_bytes_in_flight": Limit(
        "PYROBLUR_MAX_FRAME_BYTES_IN_FLIGHT", 2 * _GIB, "bytes of decoded video frames held at once"
    ),
    "detector_pixels": Limit("PYROBLUR_MAX_DETECTOR_PIXELS", 4096 * 4096, "pixels given to one detector call"),
    "label_bytes": Limit("PYROBLUR_MAX_LABEL_BYTES", 4 << 20, "bytes of one label file"),
    "boxes_per_image": Limit("PYROBLUR_MAX_BOXES_PER_IMAGE", 10_000, "boxes of one image"),
    "annotation_bytes": Limit("PYROBLUR_MAX_ANNOTATION_BYTES", 512 << 20, "bytes of one annotation file"),
    "annotations": Limit("PYROBLUR_MAX_ANNOTATIONS", 5_000_000, "annotations in one annotation file"),
    "config_bytes": Limit("PYROBLUR_MAX_CONFIG_BYTES", 1_000_000, "bytes of one config file"),
}


def limit(name: str) -> int:
    """The configured value of the limit ``name`` (a key of :data:`LIMITS`)."""
    return LIMITS[name].value()


def check_regular_file(path: Path, *, what: str = "file") -> os.stat_result:
    """``stat`` of ``path`` when it is a regular file; :class:`InputError` for a FIFO, a device,
    a socket or a folder (opening a FIFO would block forever, ``/dev/zero`` never ends).

    ``FileNotFoundError`` passes through for the caller to word."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a folder"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise InputError(f"{what} is {kind}, not a regular file", subject=str(path))
    return st


def read_bounded(path: Path, name: str, *, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, refusing it (:class:`InputError` naming the file
    and the limit) when it holds more than the limit ``name`` allows. The size is checked on
    what is read (at most limit + 1 bytes), not only on what ``stat`` says."""
    bound = LIMITS[name]
    cap = bound.value()
    st = check_regular_file(path, what=what)
    if st.st_size > cap:
        raise InputError(
            f"{what} of {st.st_size:,} bytes is over the limit of {cap:,} bytes",
            subject=str(path),
            hint=f"raise {bound.env} if it is genuine",
        )
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise InputError(
            f"{what} is over the limit of {cap:,} bytes", subject=str(path), hint=f"raise {bound.env} if genuine"
        )
    return data
