"""Safe extraction: unsafe members are refused before anything is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pyroblur.data.archive import STAMP_NAME, ArchiveError, UnsafeArchiveError, extract_archive


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return path


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_zip_extracts_and_is_idempotent(tmp_path: Path) -> None:
    arc = make_zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    target = tmp_path / "out" / "a"
    assert extract_archive(arc, target) == target
    assert (target / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert (target / STAMP_NAME).exists()
    (target / "top" / "marker").write_text("kept")  # same digest: not re-extracted
    extract_archive(arc, target)
    assert (target / "top" / "marker").exists()
    # A changed archive (new digest) replaces the whole folder.
    make_zip(arc, {"top/z.txt": b"z"})
    extract_archive(arc, target)
    assert tree(target) == {"top", "top/z.txt", STAMP_NAME}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a"]  # no temp leftovers


def test_tar_extracts_with_inside_symlink(tmp_path: Path) -> None:
    arc = make_tar(tmp_path / "a.tar.gz", {"d/x.txt": b"x"}, {"d/link": (tarfile.SYMTYPE, "x.txt")})
    target = extract_archive(arc, tmp_path / "out")
    assert (target / "d" / "link").read_bytes() == b"x"


UNSAFE = [
    pytest.param("zip", {"ok.txt": b"1", "../evil.txt": b"2"}, None, "../evil.txt", "'..'", id="zip-dotdot"),
    pytest.param(
        "zip", {"ok.txt": b"1", "a/../../evil.txt": b"2"}, None, "a/../../evil.txt", "'..'", id="zip-nested-dotdot"
    ),
    pytest.param("zip", {"ok.txt": b"1", "/tmp/evil.txt": b"2"}, None, "/tmp/evil.txt", "absolute", id="zip-absolute"),
    pytest.param("zip", {"ok.txt": b"1", "..\\evil.txt": b"2"}, None, "..\\evil.txt", "'..'", id="zip-backslash"),
    pytest.param("zip", {"ok.txt": b"1"}, {"a/link": "../../etc"}, "a/link", "outside", id="zip-symlink-out"),
    pytest.param(
        "tar", {"ok.txt": b"1"}, {"link": (tarfile.SYMTYPE, "../outside")}, "link", "outside", id="tar-symlink-out"
    ),
    pytest.param(
        "tar",
        {"ok.txt": b"1"},
        {"d/link": (tarfile.SYMTYPE, "/etc/passwd")},
        "d/link",
        "absolute",
        id="tar-symlink-abs",
    ),
    pytest.param(
        "tar", {"ok.txt": b"1"}, {"hl": (tarfile.LNKTYPE, "../../x")}, "hl", "hard link", id="tar-hardlink-out"
    ),
    pytest.param("tar", {"ok.txt": b"1", "../evil.txt": b"2"}, None, "../evil.txt", "'..'", id="tar-dotdot"),
    pytest.param("tar", {"ok.txt": b"1"}, {"dev": (tarfile.CHRTYPE, "")}, "dev", "device", id="tar-device"),
]


@pytest.mark.parametrize("kind, members, links, member, why", UNSAFE)
def test_unsafe_members_are_refused_before_writing(
    tmp_path: Path, kind: str, members: dict, links: dict | None, member: str, why: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if kind == "zip":
        arc = make_zip(tmp_path / "bad.zip", members, links)
    else:
        arc = make_tar(tmp_path / "bad.tar.gz", members, links)
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(arc, work / "target")
    assert repr(member) in str(err.value) and why in str(err.value)
    assert err.value.member == member
    assert tree(tmp_path) == before  # nothing written anywhere, not even "ok.txt"
    assert not (tmp_path / "evil.txt").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"this is html, not a zip")
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        extract_archive(bad, tmp_path / "out")


def test_interrupted_extraction_leaves_previous_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arc = make_zip(tmp_path / "a.zip", {"x.txt": b"x"})
    target = extract_archive(arc, tmp_path / "out")
    make_zip(arc, {"y.txt": b"y"})

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", boom)
    with pytest.raises(OSError, match="disk on fire"):
        extract_archive(arc, target)
    assert (target / "x.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def _zip_bomb(path: Path, size: int) -> Path:
    """A zip whose one member is ``size`` zero bytes (deflate packs ~1000x), written in chunks."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as fh:
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            fh.write(chunk)
    return path


def test_zip_bomb_is_refused_by_ratio_before_anything_is_written(tmp_path: Path) -> None:
    arc = _zip_bomb(tmp_path / "bomb.zip", 256 << 20)  # 256 MiB of zeros in well under 1 MiB
    assert arc.stat().st_size < (1 << 20)
    with pytest.raises(UnsafeArchiveError, match=r"times its own size.*zip bomb") as err:
        extract_archive(arc, tmp_path / "out")
    assert str(arc) in str(err.value)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [arc]
    assert not err.value.transient and err.value.exit_code == 3


def test_total_size_limit(tmp_path: Path, monkeypatch) -> None:
    arc = make_zip(tmp_path / "a.zip", {"a.bin": b"a" * 5000, "b.bin": b"b" * 5000})
    with pytest.raises(UnsafeArchiveError, match=r"over the limit of 8,000"):
        extract_archive(arc, tmp_path / "out", max_bytes=8000)
    monkeypatch.setenv("PYROBLUR_MAX_EXTRACT_BYTES", "9000")
    with pytest.raises(UnsafeArchiveError, match="PYROBLUR_MAX_EXTRACT_BYTES"):
        extract_archive(arc, tmp_path / "out")
    monkeypatch.setenv("PYROBLUR_MAX_EXTRACT_BYTES", "20000")
    assert (extract_archive(arc, tmp_path / "out") / "b.bin").stat().st_size == 5000


def test_tar_bomb_is_refused_while_scanning(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"z{i}.bin")
            info.size = 64 << 20
            tf.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(UnsafeArchiveError, match="times its own size"):
        extract_archive(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
