"""Robust HTTP downloads shared by every dataset source.

One call, :func:`download`, turns a :class:`PlannedDownload` into a verified file:

* streams to ``<name>.part`` with a progress bar, then renames atomically;
* resumes a partial ``.part`` with an HTTP ``Range`` request (a server that ignores it
  and answers ``200`` makes the download start over from byte 0);
* verifies the expected size and sha256; a wrong checksum removes the file;
* retries connection errors, timeouts, truncated bodies and ``5xx`` answers with
  exponential backoff, but fails at once on ``4xx`` (retrying a 404 never helps);
* checks free disk space before it starts;
* writes a ``<name>.verified.json`` stamp so a verified file is never fetched or hashed
  again while its size and modification time are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from pyroblur.core.hashing import sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "DownloadPolicy",
    "HTTPStatusError",
    "InsufficientDiskSpaceError",
    "PlannedDownload",
    "RetriesExhaustedError",
    "SizeMismatchError",
    "download",
    "download_all",
    "is_verified",
    "stamp_path",
]

_MiB = 1024 * 1024


class PlannedDownload(BaseModel):
    """One file a source will download: where from, where to, and what to expect.

    ``size`` is in bytes; ``size`` and ``sha256`` are ``None`` when unknown (then only what
    is known is verified). ``approx_size`` (bytes) is a published, rounded size: shown by
    ``--dry-run`` and used for the disk-space check, never for verification.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    dest: Path
    size: int | None = None
    sha256: str | None = None
    approx_size: int | None = None


@dataclass(frozen=True)
class DownloadPolicy:
    """Retry, timeout and progress settings of :func:`download`.

    ``retries`` is the number of *extra* attempts after the first; the wait before retry
    ``n`` (1-based) is ``min(backoff_s * 2 ** (n - 1), backoff_max_s)`` seconds.
    """

    retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    chunk_size: int = _MiB
    #: Extra free space (bytes) required beyond the file itself before a download starts.
    disk_margin: int = 64 * _MiB
    progress: bool = True


# --------------------------------------------------------------------------- errors


class DownloadError(RuntimeError):
    """Base class of every download failure; the message says what to do next."""


class HTTPStatusError(DownloadError):
    """The server answered with a 4xx status (not retried) or 5xx after all retries."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.url = url
        self.status = status
        hint = (
            "check the source's base_url in the config and that the file exists "
            "(a 401/403 may mean the dataset needs authentication)"
            if 400 <= status < 500
            else "the server failed; try again later or use a mirror (base_url)"
        )
        super().__init__(f"HTTP {status} {reason} for {url}: {hint}".replace("  ", " "))


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the expected sha256; the file was removed."""

    def __init__(self, path: Path, expected: str, actual: str, url: str = "") -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}; the file was "
            f"removed. Run the download again; if it keeps failing the server ({url or 'source'}) "
            "serves a different file than the config expects: update the checksum or the URL."
        )


class SizeMismatchError(DownloadError):
    """The downloaded file does not have the expected size; the file was removed."""

    def __init__(self, path: Path, expected: int, actual: int) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"size mismatch for {path}: expected {expected} bytes, got {actual}; the file was "
            "removed. Run the download again, or update the expected size in the config."
        )


class InsufficientDiskSpaceError(DownloadError):
    """Not enough free disk space for the file (checked before downloading)."""

    def __init__(self, path: Path, needed: int, free: int) -> None:
        super().__init__(
            f"not enough disk space for {path}: need {needed / _MiB:.0f} MiB, "
            f"{free / _MiB:.0f} MiB free; free some space or move the data root "
            "(PYROBLUR_DATA_DIR) to a larger disk."
        )


class RetriesExhaustedError(DownloadError):
    """Every attempt failed with a transient error (connection, timeout, truncation, 5xx)."""

    def __init__(self, url: str, attempts: int, last: str) -> None:
        super().__init__(
            f"download of {url} failed after {attempts} attempts (last error: {last}); "
            "the partial file is kept and the next run resumes it. Check the network or "
            "raise the retry count."
        )


class _Transient(Exception):
    """Internal: an attempt failed in a way worth retrying."""


# --------------------------------------------------------------------------- helpers


def stamp_path(path: Path) -> Path:
    """The verification stamp that sits next to a downloaded file."""
    return path.with_name(path.name + ".verified.json")


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    data = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = stamp_path(path).with_name(stamp_path(path).name + ".part")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(stamp_path(path))


def _read_stamp(path: Path) -> dict | None:
    """The stamp's content if it still describes ``path`` (same size and mtime)."""
    try:
        data = json.loads(stamp_path(path).read_text(encoding="utf-8"))
        st = path.stat()
    except (OSError, ValueError):
        return None
    if data.get("size") != st.st_size or data.get("mtime_ns") != st.st_mtime_ns:
        return None
    return data


def stamped_sha256(path: Path) -> str:
    """sha256 of ``path``, taken from its stamp when still valid, else computed."""
    data = _read_stamp(path)
    if data and isinstance(data.get("sha256"), str):
        return data["sha256"]
    return sha256_file(path)


def is_verified(planned: PlannedDownload) -> bool:
    """True when ``planned.dest`` exists with a valid stamp matching size and sha256."""
    data = _read_stamp(planned.dest)
    if data is None:
        return False
    if planned.size is not None and data["size"] != planned.size:
        return False
    return planned.sha256 is None or data.get("sha256") == planned.sha256.lower()


def _check_disk(path: Path, needed: int, margin: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if needed + margin > free:
        raise InsufficientDiskSpaceError(path, needed, free)


def _verify(path: Path, planned: PlannedDownload, shown_as: Path) -> str:
    """Check size then sha256 of ``path``; on mismatch remove it and raise. Returns sha256."""
    size = path.stat().st_size
    if planned.size is not None and size != planned.size:
        path.unlink(missing_ok=True)
        raise SizeMismatchError(shown_as, planned.size, size)
    actual = sha256_file(path)
    if planned.sha256 is not None and actual != planned.sha256.lower():
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(shown_as, planned.sha256.lower(), actual, planned.url)
    return actual


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _attempt(
    planned: PlannedDownload,
    part: Path,
    policy: DownloadPolicy,
    session: requests.Session,
) -> None:
    """One HTTP request that appends to (or restarts) ``part``. Raises _Transient to retry."""
    offset = part.stat().st_size if part.exists() else 0
    if planned.size is not None and offset > planned.size:
        log.warning("%s is larger than expected; starting over", part)
        part.unlink()
        offset = 0
    if planned.size is not None and offset == planned.size and offset > 0:
        return  # complete .part from an earlier run; verification decides
    # identity: byte offsets must refer to the file, not to a compressed stream.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(
            planned.url,
            headers=headers,
            stream=True,
            timeout=(policy.connect_timeout_s, policy.read_timeout_s),
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            # Our partial file is not a prefix the server can continue: start over.
            log.warning("server refused to resume %s (416); starting over", planned.url)
            part.unlink(missing_ok=True)
            raise _Transient("HTTP 416 on resume")
        if 400 <= status < 500:
            raise HTTPStatusError(planned.url, status, resp.reason or "")
        if status >= 500:
            raise _Transient(f"HTTP {status} {resp.reason or ''}".strip())
        if status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, expected {offset}")
            mode = "ab"
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else planned.size
        else:
            if offset:
                log.info("server ignored the Range request for %s; restarting", planned.url)
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else planned.size
        written = offset
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=planned.dest.name,
            disable=not policy.progress,
            leave=False,
        )
        try:
            with part.open(mode) as fh:
                # read1 hands over whatever arrived, so bytes received before a dropped
                # connection reach the .part file and the next attempt resumes after them
                # (iter_content would discard a partially filled chunk).
                while chunk := resp.raw.read1(policy.chunk_size):
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise _Transient(f"connection lost after {written} bytes: {exc}") from exc
        finally:
            bar.close()
        if total is not None and written < total:
            raise _Transient(f"body truncated at {written} of {total} bytes")


def download(
    planned: PlannedDownload,
    *,
    policy: DownloadPolicy | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Download ``planned.url`` to ``planned.dest`` and verify it; return ``planned.dest``.

    Idempotent: a file with a valid stamp (or one that passes verification) is not
    fetched again. Raises a :class:`DownloadError` subclass on failure.
    """
    policy = policy or DownloadPolicy()
    dest = planned.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_verified(planned):
        log.debug("%s already verified", dest)
        return dest
    if dest.exists():
        # A complete file without a valid stamp (e.g. copied in by hand): verify it
        # instead of downloading 1.4 GB again.
        if planned.size is not None or planned.sha256 is not None:
            try:
                _write_stamp(dest, _verify(dest, planned, dest))
                log.info("%s present and verified", dest)
                return dest
            except DownloadError as exc:
                log.warning("existing %s failed verification (%s); downloading again", dest, exc)
        else:
            _write_stamp(dest, sha256_file(dest))
            log.info("%s present (no size/checksum to verify); keeping it", dest)
            return dest

    part = dest.with_name(dest.name + ".part")
    expected = planned.size if planned.size is not None else planned.approx_size
    if expected is not None:
        have = part.stat().st_size if part.exists() else 0
        _check_disk(dest, max(expected - have, 0), policy.disk_margin)

    own_session = session is None
    session = session or requests.Session()
    attempts = policy.retries + 1
    try:
        for attempt in range(1, attempts + 1):
            try:
                _attempt(planned, part, policy, session)
                break
            except _Transient as exc:
                if attempt == attempts:
                    raise RetriesExhaustedError(planned.url, attempts, str(exc)) from None
                wait = min(policy.backoff_s * 2 ** (attempt - 1), policy.backoff_max_s)
                log.warning(
                    "download of %s failed (%s); retry %d/%d in %.1fs",
                    planned.url,
                    exc,
                    attempt,
                    policy.retries,
                    wait,
                )
                time.sleep(wait)
    finally:
        if own_session:
            session.close()

    digest = _verify(part, planned, dest)
    os.replace(part, dest)
    _write_stamp(dest, digest)
    log.info("downloaded %s (%d bytes, sha256 %s)", dest, dest.stat().st_size, digest)
    return dest


def download_all(planned: Iterable[PlannedDownload], *, policy: DownloadPolicy | None = None) -> list[Path]:
    """Download several files one after the other with one HTTP session."""
    with requests.Session() as session:
        return [download(p, policy=policy, session=session) for p in planned]
