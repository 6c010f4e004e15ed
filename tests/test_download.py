"""Downloader behaviour against a local server with scripted faults."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyroblur.data import download as dl
from pyroblur.data.download import (
    ChecksumMismatchError,
    DownloadPolicy,
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


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    with FileServer() as srv:
        url = srv.url("/f.bin")
    p = PlannedDownload(url=url, dest=tmp_path / "f.bin")
    with pytest.raises(RetriesExhaustedError, match="ConnectionError"):
        download(p, policy=DownloadPolicy(retries=1, backoff_s=0.01, progress=False))


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
