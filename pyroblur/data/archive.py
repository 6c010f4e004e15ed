"""Safe, idempotent extraction of zip and tar archives.

Every member is checked *before* anything is written: absolute paths, ``..`` components
and symbolic/hard links that point outside the target are refused with an
:class:`UnsafeArchiveError` naming the member, and so is an archive that would expand beyond
the limits (:data:`MAX_EXTRACT_BYTES`, :data:`MAX_RATIO`, :data:`MAX_MEMBERS`; a "zip bomb").
The sizes checked are the ones the archive declares: zip members are read no further than
their declared size, and tar sizes are exact. Extraction goes to a temporary folder
next to the target which is then renamed into place, so a crash never leaves a
half-extracted target. A stamp inside the target records the archive's sha256; the
archive is extracted again only when that digest changes.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

from pyroblur.core.errors import InputError
from pyroblur.data.download import stamped_sha256

log = logging.getLogger(__name__)

__all__ = ["STAMP_NAME", "ArchiveError", "UnsafeArchiveError", "extract_archive"]

#: Completion stamp written inside an extracted folder.
STAMP_NAME = ".pyroblur-extracted.json"

_GiB = 1024**3
#: Most bytes one archive may expand to (``PYROBLUR_MAX_EXTRACT_BYTES`` overrides). The largest
#: real source (WIDER FACE train) expands to ~1.5 GB.
MAX_EXTRACT_BYTES = 200 * _GiB
#: Most times an archive may expand its own size. Images barely compress (about 1x) and
#: annotation text about 10x; zip bombs reach 1000x and more.
MAX_RATIO = 100.0
#: Below this many expanded bytes the ratio is not checked (a small annotation zip may be 50x).
RATIO_FLOOR_BYTES = 64 * 1024**2
#: Most members one archive may have.
MAX_MEMBERS = 5_000_000


class ArchiveError(InputError, RuntimeError):
    """The archive cannot be read or extracted (corrupt, unsupported, too large, no space);
    permanent: the same file fails the same way (exit code 3)."""


class UnsafeArchiveError(ArchiveError):
    """A member would be written outside the target folder, or the archive would expand
    beyond the limits (``member`` is then ``None``); nothing was extracted."""

    def __init__(self, archive: Path, member: str | None, why: str) -> None:
        self.archive, self.member = archive, member
        what = f"member {member!r}" if member is not None else "it"
        super().__init__(
            f"refusing to extract {archive}: {what} {why}. The archive is "
            "corrupt or malicious; download it again from a trusted URL."
        )


def _check_name(archive: Path, name: str) -> str:
    """Normalized relative posix path of a member name, or raise if it escapes."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchiveError(archive, name, "has an absolute path")
    if ".." in unified.split("/"):
        raise UnsafeArchiveError(archive, name, "contains a '..' component")
    return posixpath.normpath(unified)


def _check_link(archive: Path, name: str, base_dir: str, link: str, kind: str) -> None:
    """Refuse a link whose target, resolved from ``base_dir`` (archive-relative), escapes."""
    unified = link.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchiveError(archive, name, f"is a {kind} to the absolute path {link!r}")
    resolved = posixpath.normpath(posixpath.join(base_dir, unified))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(archive, name, f"is a {kind} pointing outside the target ({link!r})")


Limits = Callable[[int, int], None]  # (bytes so far, members so far) -> raises when over


def _validate_zip(archive: Path, zf: zipfile.ZipFile, limits: Limits) -> int:
    total = 0
    for count, info in enumerate(zf.infolist(), 1):
        name = _check_name(archive, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            if info.file_size > 4096:
                raise UnsafeArchiveError(archive, info.filename, f"is a symlink of {info.file_size:,} bytes")
            link = zf.read(info).decode("utf-8", "replace")
            _check_link(archive, info.filename, posixpath.dirname(name), link, "symlink")
        total += info.file_size
        limits(total, count)
    return total


def _validate_tar(archive: Path, tf: tarfile.TarFile, limits: Limits) -> int:
    total = 0
    # Iterate instead of getmembers(): a compressed bomb is refused as soon as its running
    # total is over, not after decompressing all of it.
    for count, member in enumerate(tf, 1):
        name = _check_name(archive, member.name)
        if member.issym():
            _check_link(
                archive,
                member.name,
                posixpath.dirname(name),
                member.linkname,
                "symlink",
            )
        elif member.islnk():
            # Hard link targets are archive-relative names, not relative to the member.
            _check_link(archive, member.name, "", member.linkname, "hard link")
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(archive, member.name, "is a device or fifo")
        total += member.size
        limits(total, count)
    return total


def max_extract_bytes() -> int:
    """:data:`MAX_EXTRACT_BYTES`, or ``PYROBLUR_MAX_EXTRACT_BYTES`` when set."""
    raw = os.environ.get("PYROBLUR_MAX_EXTRACT_BYTES", "").strip()
    return int(float(raw)) if raw else MAX_EXTRACT_BYTES


def _check_limits(archive: Path, total: int, members: int, *, max_bytes: int, max_ratio: float) -> None:
    """Refuse an archive that expands beyond the limits, before anything is written."""
    if members > MAX_MEMBERS:
        raise UnsafeArchiveError(archive, None, f"has more than {MAX_MEMBERS:,} members")
    if total > max_bytes:
        raise UnsafeArchiveError(
            archive,
            None,
            f"would expand to {total:,} bytes, over the limit of {max_bytes:,} (PYROBLUR_MAX_EXTRACT_BYTES)",
        )
    if total <= RATIO_FLOOR_BYTES:
        return
    packed = max(archive.stat().st_size, 1)
    if total > RATIO_FLOOR_BYTES and total / packed > max_ratio:
        raise UnsafeArchiveError(
            archive,
            None,
            f"would expand {total / packed:,.0f} times its own size ({packed:,} -> {total:,} bytes), "
            f"over the limit of {max_ratio:g}x (a zip bomb?)",
        )


def _read_stamp(target: Path) -> dict | None:
    try:
        return json.loads((target / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def extract_archive(
    archive: Path,
    target: Path,
    *,
    sha256: str | None = None,
    max_bytes: int | None = None,
    max_ratio: float = MAX_RATIO,
) -> Path:
    """Extract ``archive`` (zip or any tar) into the folder ``target``; return ``target``.

    ``sha256`` is the archive's digest if already known (else it is taken from the
    download stamp or computed). When ``target`` holds a stamp with the same digest,
    nothing is done. Raises :class:`UnsafeArchiveError` before writing anything when a
    member would land outside ``target``, or when the archive would expand to more than
    ``max_bytes`` (default :func:`max_extract_bytes`) or more than ``max_ratio`` times its
    own size.
    """
    archive, target = Path(archive), Path(target)
    digest = sha256 or stamped_sha256(archive)
    stamp = _read_stamp(target)
    if stamp and stamp.get("sha256") == digest:
        log.debug("%s already extracted to %s", archive.name, target)
        return target

    if zipfile.is_zipfile(archive):
        opener, validate, kind = zipfile.ZipFile, _validate_zip, "zip"
    elif tarfile.is_tarfile(archive):
        opener, validate, kind = tarfile.open, _validate_tar, "tar"
    else:
        raise ArchiveError(f"{archive} is neither a zip nor a tar archive (corrupt download?)")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.extract-{uuid.uuid4().hex[:8]}"
    try:
        with opener(archive) as handle:  # type: ignore[operator]
            limit_bytes = max_bytes or max_extract_bytes()
            needed = validate(
                archive,
                handle,
                lambda total, count: _check_limits(archive, total, count, max_bytes=limit_bytes, max_ratio=max_ratio),
            )
            free = shutil.disk_usage(target.parent).free
            if needed > free:
                raise ArchiveError(
                    f"not enough disk space to extract {archive}: need {needed} bytes, "
                    f"{free} free; free some space or move PYROBLUR_DATA_DIR."
                )
            tmp.mkdir()
            log.info("extracting %s (%s, %d bytes) to %s", archive.name, kind, needed, target)
            if kind == "tar":
                # The "data" filter re-checks links and drops unsafe modes as a second line.
                handle.extractall(tmp, filter="data")
            else:
                handle.extractall(tmp)
        (tmp / STAMP_NAME).write_text(json.dumps({"archive": archive.name, "sha256": digest}), encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"cannot extract {archive}: {exc}; download it again.") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
