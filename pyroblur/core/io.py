"""File-level helpers every stage shares: which files are images, and atomic writes.

An atomic write goes to a hidden sibling (``.<stem>.partial-<id><suffix>``, same directory so
the rename cannot cross file systems), is fsynced, then ``os.replace``d over the target: a
reader sees the old file or the new one, never half of one. ``remove_partials`` clears what a
killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

#: Image file suffixes every stage accepts (lower case). The one definition in the project.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

PARTIAL_MARK = ".partial-"


def is_image(path: Path) -> bool:
    """True when ``path`` has an image suffix (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def temp_path(final: Path) -> Path:
    """A hidden sibling of ``final`` with the same suffix (so tools infer the format)."""
    return final.with_name(f".{final.stem}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}{final.suffix}")


def is_partial(path: Path) -> bool:
    """True for a temporary file made by :func:`temp_path`."""
    return path.name.startswith(".") and PARTIAL_MARK in path.name


def write_atomic(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see module docstring); creates parent folders.

    ``durable`` also fsyncs the file and its directory so the rename survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        tmp.write_bytes(payload)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync(path.parent)  # make the rename itself durable


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partials(folder: Path, *, older_than: float | None = None, of: Path | None = None) -> list[Path]:
    """Delete leftover temporary files under ``folder`` (recursively); return what was removed.

    ``older_than`` (seconds) spares files modified more recently: another live process may
    still be writing them (a video being encoded into the same folder). ``of`` limits the
    removal to the temporary siblings of that one file (``folder`` is then its folder, and the
    rest of the folder is not ours to clean); it also covers that file's sidecars
    (``<name>.json``, ``<name>.audit.json``).
    """
    import time

    removed: list[Path] = []
    if of is not None:
        folder = of.parent
    if not folder.is_dir():
        return removed
    cutoff = None if older_than is None else time.time() - older_than
    if of is None:
        found = list(folder.rglob(f".*{PARTIAL_MARK}*"))
    else:  # the file's own temporaries, and its sidecar's and audit record's (<name>.json ...)
        found = [*folder.glob(f".{of.stem}{PARTIAL_MARK}*"), *folder.glob(f".{of.name}.*{PARTIAL_MARK}*")]
    for p in found:
        if p.is_file() and is_partial(p):
            if cutoff is not None:
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime > cutoff:
                        continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
