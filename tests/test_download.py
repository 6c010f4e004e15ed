"""Downloader behaviour against a local server with scripted faults."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyroblur.core.errors import PermanentError, is_transient
from pyroblur.data import download as dl
from pyroblur.data.download import (
    ChecksumMismatchError,
    DownloadPolicy,
    HostUnreachableError,
    HTTPStatusError,
    InsufficientDiskSpaceError,
    PlannedDownload,
    RetriesExhaustedError,
    SizeMismatchError,
    download,
    download_all,
    stamp_path,
)

try:
    from http_fixtures import FileServer
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests.http_fixtures import FileServer

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = DownloadPolicy(retries=3, backoff_s=0.01, read_timeout_s=5, chunk_size=16_384, progress=False)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as srv:
        srv.files["/f.bin"] = DATA
        yield srv


def plan(srv: FileServer, tmp_path: Path, **kw: object) -> PlannedDownload:
    args = {"size": len(DATA), "sha256": SHA} | kw
    return PlannedDownload(url=srv.url("/f.bin"), dest=tmp_path / "f.bin", **args)


def test_plain_download_writes_file_and_stamp(server: FileServer, tmp_path: Path) -> None:
    p = plan(server, tmp_path)
    assert download(p, policy=FAST) == p.dest
    assert p.dest.read_bytes() == DATA
    assert json.loads(stamp_path(p.dest).read_text())["sha256"] == SHA
    assert not p.dest.with_name("f.bin.part").exists()


def test_dropped_connection_is_resumed_with_range(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", "drop")
    p = plan(server, tmp_path)
    download(p, policy=FAST)
    ranges = server.requests_for("/f.bin")
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert p.dest.read_bytes() == DATA  # passed its checksum


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", "drop", "ignore_range")
    p = plan(server, tmp_path)
    download(p, policy=FAST)
    assert len(server.requests_for("/f.bin")) == 2
    assert p.dest.read_bytes() == DATA


def test_existing_partial_file_is_resumed(server: FileServer, tmp_path: Path) -> None:
    p = plan(server, tmp_path)
    p.dest.with_name("f.bin.part").write_bytes(DATA[:1000])
    download(p, policy=FAST)
    assert server.requests_for("/f.bin") == ["bytes=1000-"]
    assert p.dest.read_bytes() == DATA


def test_wrong_checksum_removes_file_and_names_it(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", "wrong")
    p = plan(server, tmp_path)
    with pytest.raises(ChecksumMismatchError) as err:
        download(p, policy=FAST)
    msg = str(err.value)
    assert str(p.dest) in msg and SHA in msg and hashlib.sha256(bytes(b ^ 0xFF for b in DATA)).hexdigest() in msg
    assert not p.dest.exists() and not p.dest.with_name("f.bin.part").exists()


def test_wrong_size_removes_file(server: FileServer, tmp_path: Path) -> None:
    server.files["/f.bin"] = DATA[:-5]
    p = plan(server, tmp_path, sha256=None)
    with pytest.raises(SizeMismatchError, match="f.bin"):
        download(p, policy=FAST)
    assert not p.dest.exists() and not p.dest.with_name("f.bin.part").exists()


def test_404_fails_at_once_naming_url(server: FileServer, tmp_path: Path) -> None:
    p = PlannedDownload(url=server.url("/missing.zip"), dest=tmp_path / "m.zip")
    with pytest.raises(HTTPStatusError) as err:
        download(p, policy=FAST)
    assert "404" in str(err.value) and server.url("/missing.zip") in str(err.value)
    assert err.value.status == 404
    assert len(server.requests_for("/missing.zip")) == 1  # no retry


def test_two_503_then_200_succeeds(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", 503, 503)
    p = plan(server, tmp_path)
    download(p, policy=FAST)
    assert len(server.requests_for("/f.bin")) == 3
    assert p.dest.read_bytes() == DATA


def test_persistent_503_exhausts_retries_and_keeps_part(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", "drop", 503, 503, 503)
    p = plan(server, tmp_path)
    with pytest.raises(RetriesExhaustedError, match="4 attempts") as err:
        download(p, policy=FAST)
    assert server.url("/f.bin") in str(err.value)
    assert p.dest.with_name("f.bin.part").stat().st_size > 0  # next run resumes


def test_connection_refused_fails_at_once_naming_host_and_offline_remedy(tmp_path: Path) -> None:
    with FileServer() as srv:
        url = srv.url("/f.bin")
    p = PlannedDownload(url=url, dest=tmp_path / "f.bin")
    with pytest.raises(HostUnreachableError) as err:
        download(p, policy=DownloadPolicy(retries=5, backoff_s=30, progress=False))  # a retry would wait 30 s
    assert not is_transient(err.value) and isinstance(err.value, PermanentError)
    assert "cannot reach 127.0.0.1 (connection refused)" in str(err.value)
    assert str(p.dest) in str(err.value) and "`local` source" in str(err.value)


def test_dns_failure_is_permanent_and_names_every_missing_file(tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761): the same answer as a machine without network.
    planned = [
        PlannedDownload(url=f"https://no-such-host.invalid/data/{n}", dest=tmp_path / n) for n in ("a.zip", "b.zip")
    ]
    (tmp_path / "b.zip").write_bytes(b"already here")  # present files are not listed as missing
    with pytest.raises(HostUnreachableError) as err:
        download_all(planned, policy=DownloadPolicy(retries=5, backoff_s=30, progress=False))
    assert err.value.host == "no-such-host.invalid" and err.value.missing == [tmp_path / "a.zip"]
    assert "DNS lookup failed" in str(err.value) and str(tmp_path / "a.zip") in str(err.value)


def test_timeouts_and_5xx_are_transient(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", 503, 503, 503, 503)
    with pytest.raises(RetriesExhaustedError) as err:
        download(plan(server, tmp_path), policy=FAST)
    assert is_transient(err.value)


def test_429_honours_retry_after(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    server.script("/f.bin", (429, {"Retry-After": "7"}), (503, {"Retry-After": "0"}))
    download(plan(server, tmp_path), policy=FAST)
    assert waits == [7.0, FAST.backoff_s * 2]  # the server's wait, then our own backoff
    assert len(server.requests_for("/f.bin")) == 3


def test_retry_after_longer_than_allowed_gives_up_transiently(server: FileServer, tmp_path: Path) -> None:
    server.script("/f.bin", (429, {"Retry-After": "3600"}))
    with pytest.raises(RetriesExhaustedError, match="wait 3600 s") as err:
        download(plan(server, tmp_path), policy=FAST)
    assert is_transient(err.value) and len(server.requests_for("/f.bin")) == 1


def test_token_sent_as_bearer_only_when_set(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_HF_TOKEN", raising=False)
    download(plan(server, tmp_path, token_env="MY_HF_TOKEN"), policy=FAST)
    assert "Authorization" not in server.request_headers[-1][1]
    monkeypatch.setenv("MY_HF_TOKEN", "hf_secret")
    download(plan(server, tmp_path / "2", token_env="MY_HF_TOKEN"), policy=FAST)
    assert server.request_headers[-1][1]["Authorization"] == "Bearer hf_secret"
    assert all("hf_secret" not in p.read_text() for p in (tmp_path / "2").glob("*.json"))


def test_unpinned_download_is_checked_against_the_hub_published_sha256(server: FileServer, tmp_path: Path) -> None:
    server.headers["/f.bin"] = {"X-Linked-Etag": f'"{SHA}"', "X-Repo-Commit": "c" * 40}
    p = plan(server, tmp_path, sha256=None, size=None)
    download(p, policy=FAST)
    stamp = json.loads(stamp_path(p.dest).read_text())
    assert stamp["published_sha256"] == SHA and stamp["commit"] == "c" * 40
    # The same URL now serves other bytes than the Hub announces: named, removed, not retried.
    server.headers["/f.bin"] = {"X-Linked-Etag": '"' + "0" * 64 + '"'}
    q = plan(server, tmp_path / "again", sha256=None, size=None)
    with pytest.raises(ChecksumMismatchError, match="again/f.bin") as err:
        download(q, policy=FAST)
    assert not is_transient(err.value) and not q.dest.exists()


def test_verified_file_is_not_fetched_again(server: FileServer, tmp_path: Path) -> None:
    p = plan(server, tmp_path)
    download(p, policy=FAST)
    download(p, policy=FAST)
    assert len(server.requests_for("/f.bin")) == 1


def test_present_file_without_stamp_is_verified_not_fetched(server: FileServer, tmp_path: Path) -> None:
    p = plan(server, tmp_path)
    p.dest.write_bytes(DATA)
    download(p, policy=FAST)
    assert server.requests == [] and stamp_path(p.dest).exists()
    # A changed file invalidates the stamp; a corrupt one is downloaded again.
    p.dest.write_bytes(b"x" * len(DATA))
    download(p, policy=FAST)
    assert p.dest.read_bytes() == DATA and len(server.requests) == 1


def test_disk_space_is_checked_before_download(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Usage:
        free = 1000

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda _p: Usage())
    p = plan(server, tmp_path, size=1_465_602_149, sha256=None)
    with pytest.raises(InsufficientDiskSpaceError, match="PYROBLUR_DATA_DIR"):
        download(p, policy=FAST)
    assert server.requests == []


def test_download_all_and_unknown_size(server: FileServer, tmp_path: Path) -> None:
    server.files["/g.bin"] = b"hello"
    planned = [
        plan(server, tmp_path),
        PlannedDownload(url=server.url("/g.bin"), dest=tmp_path / "sub" / "g.bin"),
    ]
    paths = download_all(planned, policy=FAST)
    assert [x.read_bytes() for x in paths] == [DATA, b"hello"]
