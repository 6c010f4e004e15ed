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

import email.utils
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from pyroblur.core.errors import PermanentError, PyroblurError, TransientError
from pyroblur.core.hashing import sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "DownloadPolicy",
    "HTTPStatusError",
    "HostUnreachableError",
    "check_reachable",
    "InsufficientDiskSpaceError",
    "PlannedDownload",
    "RetriesExhaustedError",
    "SizeMismatchError",
    "download",
    "download_all",
    "unreachable_reason",
    "is_verified",
    "stamp_path",
]

_MiB = 1024 * 1024


class PlannedDownload(BaseModel):
    """One file a source will download: where from, where to, and what to expect.

    ``size`` is in bytes; ``size`` and ``sha256`` are ``None`` when unknown (then only what
    is known is verified). ``approx_size`` (bytes) is a published, rounded size: shown by
    ``--dry-run`` and used for the disk-space check, never for verification.
    ``token_env`` names an environment variable whose value (when set) is sent as
    ``Authorization: Bearer`` to this URL's host (Hugging Face's ``HF_TOKEN``); the token itself
    is never stored in the plan, the stamp or a message.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    dest: Path
    size: int | None = None
    sha256: str | None = None
    approx_size: int | None = None
    token_env: str | None = None


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
    #: Longest server-requested wait (HTTP 429/503 ``Retry-After``, seconds) honoured in-process;
    #: a longer one ends the download with a transient error so the task's own retry takes over.
    retry_after_max_s: float = 300.0


# --------------------------------------------------------------------------- errors


class DownloadError(PyroblurError):
    """Base class of every download failure; ``subject`` is the URL or file, ``hint`` what to do.

    Whether a retry can help is in ``transient`` (see :mod:`pyroblur.core.errors`): the
    subclasses below say it for each kind of failure.
    """


class HTTPStatusError(DownloadError, PermanentError):
    """The server answered with a 4xx status other than 408/429: retrying never helps."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.url = url
        self.status = status
        if status in (401, 403):
            hint = (
                "the file needs authentication: for Hugging Face set HF_TOKEN to a token with "
                "access to the dataset (accept its terms on the dataset page first)"
            )
        else:
            hint = "check the source's repo/revision/base_url in the config and that the file exists"
        super().__init__(f"HTTP {status} {reason} for {url}".replace("  ", " "), subject=url, hint=hint)


class HostUnreachableError(DownloadError, PermanentError):
    """The host name does not resolve or the host refuses the connection.

    Permanent: the machine is offline, the name is wrong, or nothing listens there; a retry
    seconds later gives the same answer, so the run fails at once and says how to work offline.
    """

    def __init__(self, url: str, reason: str, missing: list[Path] | None = None) -> None:
        self.url = url
        self.reason = reason
        self.host = urlsplit(url).hostname or url
        self.missing = list(missing or [])
        where = ", ".join(str(p) for p in self.missing[:6]) + (" ..." if len(self.missing) > 6 else "")
        hint = (
            "to work without network, put the files in place first ("
            + (where or "the destination the download would use")
            + "; they are checked against the pinned size/sha256 and not downloaded again) or use a `local` source "
            "(kind: local, path: <folder>, format: yolo|coco)"
        )
        super().__init__(f"cannot reach {self.host} ({reason}) for {url}", subject=self.host, hint=hint)


class ChecksumMismatchError(DownloadError, PermanentError):
    """The downloaded bytes do not have the expected sha256; the file was removed."""

    def __init__(self, path: Path, expected: str, actual: str, url: str = "") -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}; the file was removed",
            subject=str(path),
            hint=f"the server ({url or 'source'}) serves a different file than the config pins: "
            "check the source's revision, then update its sha256 only if the new file is intended",
        )


class SizeMismatchError(DownloadError, PermanentError):
    """The downloaded file does not have the expected size; the file was removed."""

    def __init__(self, path: Path, expected: int, actual: int) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"size mismatch for {path}: expected {expected} bytes, got {actual}; the file was removed",
            subject=str(path),
            hint="run the download again, or update the expected size in the config",
        )


class InsufficientDiskSpaceError(DownloadError, PermanentError):
    """Not enough free disk space for the file (checked before downloading)."""

    def __init__(self, path: Path, needed: int, free: int) -> None:
        super().__init__(
            f"not enough disk space for {path}: need {needed / _MiB:.0f} MiB, {free / _MiB:.0f} MiB free",
            subject=str(path),
            hint="free some space or move the data root (PYROBLUR_DATA_DIR) to a larger disk",
        )


class RetriesExhaustedError(DownloadError, TransientError):
    """Every attempt failed with a transient error (timeout, dropped connection, 5xx, 429)."""

    def __init__(self, url: str, attempts: int, last: str) -> None:
        super().__init__(
            f"download of {url} failed after {attempts} attempts (last error: {last}); the partial "
            "file is kept and the next run resumes it",
            subject=url,
            hint="check the network or raise the source's http.retries",
        )


class _Transient(Exception):
    """Internal: an attempt failed in a way worth retrying (``wait_s``: the server's Retry-After)."""

    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


# --------------------------------------------------------------------------- helpers


def stamp_path(path: Path) -> Path:
    """The verification stamp that sits next to a downloaded file."""
    return path.with_name(path.name + ".verified.json")


def _write_stamp(path: Path, sha256: str, extra: dict | None = None) -> None:
    st = path.stat()
    data = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns} | (extra or {})
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


def _verify(path: Path, planned: PlannedDownload, shown_as: Path, published: str | None = None) -> str:
    """Check size then sha256 of ``path``; on mismatch remove it and raise. Returns sha256.

    ``published`` is the sha256 the server announced for this file (Hugging Face's
    ``X-Linked-Etag``); it is checked when the config pins none, so even an unpinned download is
    verified against what the Hub publishes.
    """
    size = path.stat().st_size
    if planned.size is not None and size != planned.size:
        path.unlink(missing_ok=True)
        raise SizeMismatchError(shown_as, planned.size, size)
    actual = sha256_file(path)
    expected = planned.sha256.lower() if planned.sha256 is not None else published
    if expected is not None and actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(shown_as, expected, actual, planned.url)
    return actual


def _published_sha256(resp: requests.Response) -> tuple[str | None, str | None]:
    """``(sha256, commit)`` that Hugging Face announces for an LFS file, from any hop.

    The Hub answers ``resolve/<revision>/<file>`` with ``X-Linked-Etag: "<sha256>"`` (the LFS
    object id, i.e. the sha256 of the content) and ``X-Repo-Commit``, on the redirect that leads
    to its CDN; the names are huggingface_hub's ``HUGGINGFACE_HEADER_X_LINKED_ETAG`` and
    ``..._X_REPO_COMMIT``. Plain (non-LFS) files carry a git blob id there instead: ignored.
    """
    sha = commit = None
    for hop in [*resp.history, resp]:
        etag = hop.headers.get("X-Linked-Etag")
        if etag:
            value = etag.removeprefix("W/").strip('"').lower()
            if re.fullmatch(r"[0-9a-f]{64}", value):
                sha = value
        commit = hop.headers.get("X-Repo-Commit") or commit
    return sha, commit


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the host cannot be reached at all (DNS failure, connection refused), else None.

    Walks the chain requests -> urllib3 -> socket, because requests wraps both of these (and a
    timeout, which is worth retrying) in the same ``ConnectionError``; urllib3 even makes its
    ``NewConnectionError`` a subclass of its timeout error, so only the root cause tells.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, urllib3.exceptions.NameResolutionError | socket.gaierror):
            return "DNS lookup failed: no network, or the host name is wrong"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
        stack.extend(a for a in e.args if isinstance(a, BaseException))
    return None


def _probe(host: str, port: int, timeout: float) -> str | None:
    """Why ``host:port`` cannot be reached (DNS failure, refused, no route), or None."""
    import concurrent.futures

    def connect() -> None:
        with socket.create_connection((host, port), timeout=timeout):
            pass

    # getaddrinfo has no timeout of its own: bound the whole probe from outside.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        pool.submit(connect).result(timeout=timeout * 2)
    except socket.gaierror:
        return "DNS lookup failed: no network, or the host name is wrong"
    except ConnectionRefusedError:
        return "connection refused"
    except (concurrent.futures.TimeoutError, TimeoutError):
        return f"no answer within {timeout * 2:g} s"
    except OSError as exc:  # e.g. network unreachable, no route to host
        return exc.strerror or type(exc).__name__
    finally:
        pool.shutdown(wait=False)
    return None


def check_reachable(planned: Iterable[PlannedDownload], timeout: float = 3.0) -> HostUnreachableError | None:
    """Before a run: can every host still needed be reached? Files already in place (verified or
    present) need no network. Returns the error naming the first unreachable host and every file
    that would have to come from it, or None."""
    todo = [q for q in planned if not is_verified(q) and not q.dest.exists()]
    by_host: dict[tuple[str, int], list[PlannedDownload]] = {}
    for q in todo:
        parts = urlsplit(q.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        if requests.utils.get_environ_proxies(q.url):
            continue  # reached through a proxy: a direct probe would say nothing about it
        by_host.setdefault((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), []).append(q)
    for (host, port), items in by_host.items():
        reason = _probe(host, port, timeout)
        if reason is not None:
            return HostUnreachableError(items[0].url, reason, [q.dest for q in todo])
    return None


def _auth_headers(planned: PlannedDownload) -> dict[str, str]:
    token = os.environ.get(planned.token_env, "").strip() if planned.token_env else ""
    # requests drops Authorization when a redirect leaves the host, so the CDN never sees it.
    return {"Authorization": f"Bearer {token}"} if token else {}


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
    meta: dict[str, str],
) -> None:
    """One HTTP request that appends to (or restarts) ``part``. Raises _Transient to retry.

    ``meta`` receives what the server published about the file (``sha256``, ``commit``).
    """
    offset = part.stat().st_size if part.exists() else 0
    if planned.size is not None and offset > planned.size:
        log.warning("%s is larger than expected; starting over", part)
        part.unlink()
        offset = 0
    if planned.size is not None and offset == planned.size and offset > 0:
        return  # complete .part from an earlier run; verification decides
    # identity: byte offsets must refer to the file, not to a compressed stream.
    headers = {"Accept-Encoding": "identity"} | _auth_headers(planned)
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
        reason = unreachable_reason(exc)
        if reason is not None:
            raise HostUnreachableError(planned.url, reason, [planned.dest]) from None
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            # Our partial file is not a prefix the server can continue: start over.
            log.warning("server refused to resume %s (416); starting over", planned.url)
            part.unlink(missing_ok=True)
            raise _Transient("HTTP 416 on resume")
        if status in (408, 429) or status >= 500:
            # 429: the Hub rate-limits; it and 503 say in Retry-After when to come back.
            raise _Transient(
                f"HTTP {status} {resp.reason or ''}".strip(), wait_s=_retry_after(resp.headers.get("Retry-After"))
            )
        if 400 <= status < 500:
            raise HTTPStatusError(planned.url, status, resp.reason or "")
        sha, commit = _published_sha256(resp)
        if sha:
            meta["published_sha256"] = sha
        if commit:
            meta["commit"] = commit
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
    fetched again. Raises a :class:`DownloadError` subclass on failure: permanent ones
    (unreachable host, 4xx, checksum) at once, transient ones after ``policy.retries``.
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
    meta: dict[str, str] = {}
    try:
        for attempt in range(1, attempts + 1):
            try:
                _attempt(planned, part, policy, session, meta)
                break
            except _Transient as exc:
                if attempt == attempts:
                    raise RetriesExhaustedError(planned.url, attempts, str(exc)) from None
                wait = min(policy.backoff_s * 2 ** (attempt - 1), policy.backoff_max_s)
                if exc.wait_s is not None:
                    if exc.wait_s > policy.retry_after_max_s:
                        raise RetriesExhaustedError(
                            planned.url, attempt, f"{exc}; the server asks to wait {exc.wait_s:.0f} s (Retry-After)"
                        ) from None
                    wait = max(wait, exc.wait_s)
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

    published = meta.get("published_sha256")
    digest = _verify(part, planned, dest, published)
    os.replace(part, dest)
    _write_stamp(dest, digest, {k: v for k, v in meta.items() if k in ("published_sha256", "commit")})
    if planned.sha256 is None:
        log.warning(
            "%s is not pinned: downloaded sha256 %s%s; pin it in the config (see docs/formats.md)",
            dest.name,
            digest,
            f" at commit {meta['commit']}" if "commit" in meta else "",
        )
    log.info("downloaded %s (%d bytes, sha256 %s)", dest, dest.stat().st_size, digest)
    return dest


def download_all(planned: Iterable[PlannedDownload], *, policy: DownloadPolicy | None = None) -> list[Path]:
    """Download several files one after the other with one HTTP session.

    An unreachable host fails at once and names every file of the batch that is not yet in
    place, so a user without network knows exactly what to copy where.
    """
    planned = list(planned)
    with requests.Session() as session:
        out = []
        for p in planned:
            try:
                out.append(download(p, policy=policy, session=session))
            except HostUnreachableError as exc:
                missing = [q.dest for q in planned if not is_verified(q) and not q.dest.exists()]
                raise HostUnreachableError(exc.url, exc.reason, missing) from None
        return out
