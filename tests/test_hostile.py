"""Hostile and unusual inputs (issue 29), one test per finding, through the real CLI.

Every case runs ``pyroblur`` (``python -m flows.cli``) or one library call in a fresh process
under a wrapper that reports that child's peak resident memory
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``), and checks the exit code, the one-line message
(naming the file and the limit), the bound, that no original changed (sha256 before and after)
and that no partial or unaudited output is left. Large inputs are sparse files: a 3 GB PNG
costs a few KB of disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny_config import tiny_config
from video_tools import run_ffmpeg

#: Peak resident memory any hostile input may cost: torch + a model is ~0.7 GB, and the default
#: face detector adds CenterFace (the union: 1.0-1.6 GB peaks seen for a whole CLI run on a fresh
#: clone); every finding of the issue cost 3 to 8 GB.
MAX_RSS_KB = 2048 * 1024
#: A child that only parses (no torch): far less.
SMALL_RSS_KB = 400 * 1024

_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "sys.stderr.write(f'\\nPEAK_RSS_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
    "sys.exit(rc)\n"
)


def _measured(argv: list[str], env: dict[str, str] | None, timeout: float) -> tuple[subprocess.CompletedProcess, int]:
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )
    head, _, tail = proc.stderr.rpartition("PEAK_RSS_KB=")
    proc.stderr = head.rstrip("\n")
    return proc, int(tail.strip())


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> tuple[subprocess.CompletedProcess, int]:
    """``pyroblur ARGS`` in a fresh process: (finished process, its peak RSS in KB)."""
    return _measured([sys.executable, "-m", "flows.cli", *args], env, timeout)


def child_python(code: str, env: dict[str, str] | None = None, timeout: float = 60):
    """``python -c code`` in a fresh process: (finished process, its peak RSS in KB)."""
    return _measured([sys.executable, "-c", code], env, timeout)


def text_of(proc: subprocess.CompletedProcess) -> str:
    """stderr on one line (rich wraps tables); asserts there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return " ".join(proc.stderr.split())


def _sha_of_data(path: Path) -> str:
    """sha256 of a file's data regions with their offsets, and its size: a sparse file's holes
    (zeros, gigabytes here) are skipped, not read, and any write to it still changes the digest.
    Where the filesystem cannot tell holes, the whole file is read."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            f.seek(start)
            h.update(f"@{start}:".encode())
            left = end - start
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            offset = end
    h.update(f"size={size}".encode())
    return h.hexdigest()


def shas(root: Path) -> dict[str, str]:
    """A digest of every file under ``root`` (links not followed; sparse holes skipped)."""
    return {
        str(p.relative_to(root)): _sha_of_data(p) for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def assert_clean_output(out: Path) -> None:
    """No temporary file, and every written image or video has its audit record."""
    if not out.exists():
        return
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if ".partial-" in p.name], files
    media = [p for p in files if not p.name.endswith(".json")]
    for p in media:
        assert p.with_name(p.name + ".audit.json").is_file(), f"{p} has no audit record"


def jpeg(path: Path, w: int = 64, h: int = 48, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(path, "JPEG", **kw)
    return path


def png(path: Path, w: int = 64, h: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)
    return path


def anonymize(src: Path, dst: Path, weights: Path, *extra: str, env: dict[str, str] | None = None):
    return cli(
        "anonymize", str(src), str(dst), "--model", str(weights), "--device", "cpu", "--no-progress", *extra, env=env
    )


# --- 1. originals destroyed: OUTPUT inside INPUT ---------------------------------------------


def test_1_output_inside_input_with_originals_is_refused_and_nothing_changes(tmp_path, weights):
    p = tmp_path / "p"
    jpeg(p / "a.jpg")
    png(p / "sub" / "b.png")
    jpeg(p / "2023" / "a.jpg", 80, 60)  # an original where p/a.jpg's output would go
    jpeg(p / "2023" / "c.jpg", 72, 40)
    before = shas(p)
    proc, rss = anonymize(p, p / "2023", weights)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = text_of(proc)
    assert "lies inside INPUT" in line and str(p / "2023" / "a.jpg") in line and "not outputs of an earlier run" in line
    assert shas(p) == before  # not one byte of any original changed, nothing was added
    assert rss < MAX_RSS_KB, rss


def test_1_output_inside_input_every_original_is_anonymized_or_refused(tmp_path, weights):
    """Acceptance 2: an (empty) OUTPUT inside INPUT is allowed; every original under INPUT is
    anonymized into it, none is modified, and a second run recognises its own outputs."""
    p = tmp_path / "p"
    for rel in ("a.jpg", "2022/x.jpg", "2022/deep/y.jpg"):
        jpeg(p / rel)
    png(p / "z.png")
    originals = shas(p)
    for attempt in range(2):  # the second run reads OUTPUT's files as earlier outputs, not originals
        proc, rss = anonymize(p, p / "2023", weights)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert rss < MAX_RSS_KB, rss
        assert {k: v for k, v in shas(p).items() if not k.startswith("2023/")} == originals
        written = sorted(
            str(q.relative_to(p / "2023")) for q in (p / "2023").rglob("*") if q.suffix in (".jpg", ".png")
        )
        assert written == sorted(originals), attempt
        assert_clean_output(p / "2023")
    # an original dropped into OUTPUT afterwards is refused, named, and left alone
    jpeg(p / "2023" / "new.jpg", 30, 30)
    before = shas(p)
    proc, _ = anonymize(p, p / "2023", weights)
    assert proc.returncode == 1 and str(p / "2023" / "new.jpg") in text_of(proc)
    assert shas(p) == before


# --- 2. a 1 KB COCO file must not kill curation -----------------------------------------------


def _coco(folder: Path, images: list[dict], annotations: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cats = [{"id": 1, "name": "face"}]
    anns = annotations if annotations is not None else []
    path = folder / "_annotations.coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _source_config(tmp_path: Path, source: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(sources=[source])))
    return path


def fetch(cfg: Path, data: Path) -> tuple[subprocess.CompletedProcess, int, dict[str, dict]]:
    """The records the config's first source yields (what ``download`` reads), fetched in a
    measured child: (process, peak RSS in KB, records by file name)."""
    code = (
        "import json, logging, sys\n"
        "from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from pyroblur.config import load_config\n"
        "from pyroblur.data.sources import fetch_source\n"
        f"cfg = load_config({str(cfg)!r})\n"
        f"recs = fetch_source(cfg.sources[0], Path({str(data)!r}) / 'raw' / cfg.sources[0].name)\n"
        "print('RECORDS=' + json.dumps([r.model_dump(mode='json') for r in recs]))\n"
    )
    proc, rss = child_python(code, env={"PYROBLUR_DATA_DIR": str(data)}, timeout=120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RECORDS=")), "RECORDS=[]")
    recs = {Path(r["filepath"]).name: r for r in json.loads(line.removeprefix("RECORDS="))}
    return proc, rss, recs


def test_2_coco_file_names_outside_the_dataset_and_fifos_are_never_read(tmp_path):
    coco = tmp_path / "coco"
    jpeg(coco / "ok.jpg")
    os.mkfifo(coco / "pipe.jpg")
    images = [
        {"id": 1, "file_name": "/dev/zero", "width": 64, "height": 48},
        {"id": 2, "file_name": "../../../etc/hostname", "width": 64, "height": 48},
        {"id": 3, "file_name": "pipe.jpg", "width": 64, "height": 48},
        {"id": 4, "file_name": "ok.jpg", "width": 64, "height": 48},
    ]
    _coco(coco, images)
    cfg = _source_config(
        tmp_path, {"kind": "local", "name": "mine", "path": str(coco), "format": "coco", "class_map": {"face": "face"}}
    )
    proc, rss, recs = fetch(cfg, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'/dev/zero' is absolute or leaves the dataset folder" in text_of(proc)
    assert rss < MAX_RSS_KB, rss
    assert recs["zero"]["issues"] == ["bad_labels"] and "/dev/" not in recs["zero"]["filepath"]
    assert recs["hostname"]["issues"] == ["bad_labels"] and "/etc/" not in recs["hostname"]["filepath"]
    assert recs["ok.jpg"]["issues"] == []
    # curation's reader: a FIFO or a device is refused by type, never opened (it would block or never end)
    code = (
        "from pyroblur.curation.importer import inspect_images\n"
        f"infos, _ = inspect_images([{str(coco / 'pipe.jpg')!r}, '/dev/zero', {str(coco / 'ok.jpg')!r}], workers=1)\n"
        "print([i.problem for i in infos])\n"
    )
    proc, rss = child_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['unreadable', 'unreadable', None]"
    assert "a FIFO, not a regular file" in proc.stderr and "a device, not a regular file" in proc.stderr
    assert rss < MAX_RSS_KB, rss


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../../x", ".hidden", "a/b"])
def test_2_a_source_name_that_is_a_path_fails_check_config(tmp_path, name):
    cfg = _source_config(tmp_path, {"kind": "synthetic", "name": name, "num_images": 4})
    proc, rss = cli("check-config", str(cfg))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "must be a plain folder name" in text_of(proc) and repr(name) in text_of(proc)
    assert rss < MAX_RSS_KB, rss
    assert not Path("/tmp/elsewhere").exists()


# --- 3. label volume ---------------------------------------------------------------------------


def test_3_an_oversized_label_file_rejects_its_image_not_the_source(tmp_path):
    root = tmp_path / "yolo"
    jpeg(root / "train" / "images" / "a.jpg")
    jpeg(root / "train" / "images" / "b.jpg")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with open(root / "train" / "labels" / "b.txt", "wb") as f:  # 50 MB, sparse
        f.truncate(50 * 1024 * 1024)
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train/images", "names": ["face"]}))
    cfg = _source_config(
        tmp_path, {"kind": "local", "name": "mine", "path": str(root), "format": "yolo", "class_map": {"face": "face"}}
    )
    proc, rss, recs = fetch(cfg, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = text_of(proc)
    assert "b.txt" in line and "52,428,800 bytes is over the limit of 4,194,304 bytes" in line
    assert "PYROBLUR_MAX_LABEL_BYTES" in line
    assert recs["b.jpg"]["issues"] == ["bad_labels"] and len(recs["a.jpg"]["boxes"]) == 1
    assert rss < MAX_RSS_KB, rss


def test_3_too_many_boxes_in_one_label_file_rejects_its_image(monkeypatch):
    from pyroblur.data.formats import parse_yolo_labels

    monkeypatch.setenv("PYROBLUR_MAX_BOXES_PER_IMAGE", "10")
    with pytest.raises(ValueError, match="more than 10 boxes in one image"):
        parse_yolo_labels("0 0.5 0.5 0.1 0.1\n" * 11, 10, 10, {0: 0}, source_name="x.txt")


@pytest.mark.parametrize(
    ("env", "sparse", "expected"),
    [
        ({}, 1_200_000_000, "annotation file of 1,200,000,000 bytes is over the limit of 536,870,912 bytes"),
        ({"PYROBLUR_MAX_ANNOTATIONS": "2"}, 0, "3 annotations is over the limit of 2"),
    ],
)
def test_3_an_oversized_coco_json_is_refused_before_it_is_parsed(tmp_path, env, sparse, expected):
    coco = tmp_path / "coco"
    jpeg(coco / "a.jpg")
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]} for i in range(3)]
    path = _coco(coco, [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], anns)
    if sparse:
        with open(path, "r+b") as f:
            f.truncate(sparse)
    cfg = _source_config(
        tmp_path, {"kind": "local", "name": "mine", "path": str(coco), "format": "coco", "class_map": {"face": "face"}}
    )
    data = tmp_path / "data"
    proc, rss = cli("download", "-c", str(cfg), env={"PYROBLUR_DATA_DIR": str(data), **env})
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = text_of(proc)
    assert expected in line and str(path) in line
    assert rss < MAX_RSS_KB, rss
    assert not (data / "raw" / "mine").exists() or not any((data / "raw" / "mine").iterdir())


# --- 4. video pixels and frames in flight -----------------------------------------------------


def _clip(path: Path, size: str = "160x120", frames: int = 6, extra: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10", "-frames:v", str(frames),
        *extra, "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    return path


def test_4_video_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path, weights):
    src = _clip(tmp_path / "in" / "big.mp4", "320x240")
    before = shas(tmp_path / "in")
    out = tmp_path / "out"
    proc, rss = anonymize(src, out, weights, env={"PYROBLUR_MAX_IMAGE_PIXELS": "50000"})
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = text_of(proc)
    assert "big.mp4" in line and "320x240" in line and "over the pixel limit of 0.05 MP" in line
    assert "PYROBLUR_MAX_IMAGE_PIXELS" in line
    assert rss < MAX_RSS_KB, rss
    assert shas(tmp_path / "in") == before
    assert not out.exists() or not any(out.rglob("*"))


def test_4_frames_in_flight_fit_the_budget(tmp_path, weights):
    from pyroblur.anonymize.video import VideoError, VideoInfo, plan_frames

    eight_k = VideoInfo(width=7680, height=4320, fps=30, duration=1)
    plan = plan_frames(eight_k, 8, held=5)
    assert plan.frames_in_flight * 7680 * 4320 * 3 <= 2 * 2**30 and plan.batch >= 1
    assert plan_frames(VideoInfo(width=640, height=360, fps=30, duration=1), 8, imgsz=4096).batch == 1
    assert plan_frames(VideoInfo(width=640, height=360, fps=30, duration=1), 8).batch == 8
    with pytest.raises(VideoError, match="lower --memory-frames or raise PYROBLUR_MAX_FRAME_BYTES_IN_FLIGHT"):
        plan_frames(eight_k, 8, held=300)
    # through the CLI: a budget of a few frames of 160x120 (beyond the decoder's threads) lowers
    # the batch to 1 and the video is still complete
    src = _clip(tmp_path / "in" / "clip.mp4", frames=12)
    out = tmp_path / "out"
    env = {"PYROBLUR_MAX_FRAME_BYTES_IN_FLIGHT": str((14 + (os.cpu_count() or 1)) * 160 * 120 * 3)}
    proc, rss = anonymize(src, out, weights, "--memory-frames", "2", "--batch-size", "8", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 1 (asked 8)" in text_of(proc)
    assert (out / "clip.mp4").is_file() and rss < MAX_RSS_KB
    assert_clean_output(out)
    proc, _ = anonymize(src, tmp_path / "out2", weights, "--memory-frames", "60", env=env)
    assert proc.returncode == 3 and "holds at least 71 decoded frames" in text_of(proc)
    assert_clean_output(tmp_path / "out2")


# --- 5. whole files read before the header check ------------------------------------------------


def test_5_a_small_png_with_a_huge_tail_is_refused_unread(tmp_path, weights):
    src = png(tmp_path / "in" / "tail.png", 10, 10)
    with open(src, "r+b") as f:
        f.truncate(3 * 1024**3)  # 3 GB, sparse
    small_tail = png(tmp_path / "in" / "tail2.png", 10, 10)
    with open(small_tail, "r+b") as f:
        f.truncate(100 * 1024**2)  # under the byte limit, far over what 10x10 pixels take
    before = shas(tmp_path / "in")
    out = tmp_path / "out"
    proc, rss = anonymize(tmp_path / "in", out, weights)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = text_of(proc)
    assert "3,221,225,472 bytes is over the limit of 1,073,741,824 bytes" in line
    assert "104,857,600 bytes for a 10x10 image" in line
    assert rss < MAX_RSS_KB, rss
    assert shas(tmp_path / "in") == before
    assert_clean_output(out)


@pytest.mark.parametrize("kind", ["device", "fifo", "sparse"])
def test_5_check_config_of_a_device_fifo_or_huge_file(tmp_path, kind):
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "cfg.yaml"
        os.mkfifo(path)
    else:
        path = tmp_path / "cfg.yaml"
        with open(path, "wb") as f:
            f.truncate(4 * 1024**3)
    proc, rss = cli("check-config", str(path), timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    expected = {"device": "is a device", "fifo": "is a FIFO", "sparse": "over the limit of 1,000,000 bytes"}[kind]
    line = text_of(proc)
    assert expected in line and str(path) in line
    assert rss < SMALL_RSS_KB, rss


def test_5_a_jpeg_with_too_many_scans_is_refused(tmp_path, weights):
    src = jpeg(tmp_path / "in" / "prog.jpg", 64, 64, progressive=True)
    scans = src.read_bytes().count(b"\xff\xda")
    assert scans > 3
    before = shas(tmp_path / "in")
    out = tmp_path / "out"
    proc, rss = anonymize(src, out, weights, env={"PYROBLUR_MAX_JPEG_SCANS": "3"})
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"JPEG with {scans} scans is over the limit of 3 scans" in text_of(proc)
    assert rss < MAX_RSS_KB and shas(tmp_path / "in") == before
    assert_clean_output(out)


# --- 6. silent partial output -----------------------------------------------------------------


def test_6_what_would_be_reduced_is_refused_by_name(tmp_path, weights):
    inp = tmp_path / "in"
    inp.mkdir()
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (10, 120, 240)]
    frames[0].save(inp / "pages.tiff", save_all=True, append_images=frames[1:])
    frames[0].save(inp / "anim.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    a, b = _clip(tmp_path / "a.mp4"), _clip(tmp_path / "b.mp4", "96x64")
    run_ffmpeg("-i", str(a), "-i", str(b), "-map", "0:v", "-map", "1:v", "-c", "copy", str(inp / "dashcam.mkv"))
    elsewhere = tmp_path / "elsewhere"
    jpeg(elsewhere / "linked.jpg")
    (inp / "linked").symlink_to(elsewhere, target_is_directory=True)
    jpeg(inp / "fine.jpg")
    before = shas(inp)
    out = tmp_path / "out"
    proc, rss = anonymize(inp, out, weights)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = text_of(proc)
    assert "multi-page image with 3 frames/pages" in line
    assert "animated image with 3 frames/pages" in line
    assert "has 2 video streams" in line
    assert "symlinked folder not followed" in line
    assert "1 file(s) anonymized" in line and "4 skipped" in line
    assert rss < MAX_RSS_KB, rss
    assert shas(inp) == before
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["fine.jpg", "fine.jpg.audit.json"]
    assert_clean_output(out)


def test_6_an_input_that_is_a_fifo_is_refused(tmp_path, weights):
    fifo = tmp_path / "in.jpg"
    os.mkfifo(fifo)
    proc, rss = anonymize(fifo, tmp_path / "out", weights)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"{fifo}: INPUT is a FIFO, not a regular file" in text_of(proc)
    assert rss < MAX_RSS_KB and not (tmp_path / "out").exists()


def test_6_a_moved_roboflow_export_with_absolute_paths_is_refused(tmp_path):
    root = tmp_path / "rf"
    for split in ("train", "valid", "test"):
        jpeg(root / split / "images" / f"{split}.jpg")
        (root / split / "labels").mkdir(parents=True)
        (root / split / "labels" / f"{split}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    doc = {"train": "/home/someone/rf/train/images", "val": "/home/someone/rf/valid/images", "test": "../test/images"}
    (root / "data.yaml").write_text(yaml.safe_dump({**doc, "nc": 1, "names": ["face"]}))
    cfg = _source_config(
        tmp_path, {"kind": "local", "name": "rf", "path": str(root), "format": "yolo", "class_map": {"face": "face"}}
    )
    proc, rss = cli("download", "-c", str(cfg), env={"PYROBLUR_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = text_of(proc)
    assert "2 split entries not found" in line and "/home/someone/rf/train/images" in line
    assert "absolute, from another machine" in line
    assert rss < MAX_RSS_KB, rss


# --- 7. output that does not match the input ----------------------------------------------------


def test_7_orientation_depth_hdr_and_aspect(tmp_path, weights):
    from PIL import ImageOps

    inp = tmp_path / "in"
    inp.mkdir()
    base = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8)[None, :, None], (40, 1, 3)))
    for name in ("rot.png", "rot.webp"):
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        base.save(inp / name, exif=exif, **({"lossless": True} if name.endswith("webp") else {}))
    Image.fromarray(np.full((20, 20), 4000, np.uint16)).save(inp / "dark16.png")
    Image.fromarray(np.array([[np.nan, 1.0], [0.5, 0.25]], np.float32)).save(inp / "nan.tiff")
    _clip(inp / "hdr.mp4", extra=("-vf", "setparams=color_trc=smpte2084:color_primaries=bt2020:colorspace=bt2020nc"))
    _clip(inp / "anamorphic.mp4", extra=("-vf", "setsar=4/3"))
    _clip(inp / "web.webm")
    parts = []
    for name in ("p1.ts", "p2.ts"):  # two MPEG-TS files with audio, joined with cat
        parts.append(tmp_path / name)
        run_ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-f", "lavfi", "-i", "sine=frequency=440",
            "-t", "1", "-c:v", "libx264", "-c:a", "aac", "-pix_fmt", "yuv420p", str(parts[-1]),
        )  # fmt: skip
    (inp / "joined.ts").write_bytes(b"".join(p.read_bytes() for p in parts))
    before = shas(inp)
    out = tmp_path / "out"
    proc, rss = anonymize(inp, out, weights)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = text_of(proc)
    assert "dark16.png" in line and "uint16 image (16-bit samples)" in line
    assert "nan.tiff" in line and "float32 image (floating point samples)" in line
    assert "hdr.mp4" in line and "HDR video (PQ (SMPTE ST 2084) transfer)" in line
    assert f"{inp / 'web.webm'} written as {out / 'web.mkv'}" in line
    assert rss < MAX_RSS_KB, rss
    assert shas(inp) == before
    for name in ("rot.png", "rot.webp"):  # written upright, as a viewer displays the input
        want = np.asarray(ImageOps.exif_transpose(Image.open(inp / name)))
        got = np.asarray(Image.open(out / name).convert("RGB"))
        assert got.shape == want.shape == (60, 40, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    import av
    from video_tools import frame_times

    times = frame_times(out / "joined.ts")  # 20 frames on one continuous timeline, audio kept
    assert times is not None and len(times) == 20
    assert all(0.09 < b - a < 0.11 for a, b in zip(times, times[1:], strict=False)), times
    with av.open(str(out / "joined.ts")) as c:
        assert len(c.streams.audio) == 1 and c.duration / 1e6 > 1.9
    with av.open(str(out / "anamorphic.mp4")) as c:
        assert (
            c.streams.video[0].codec_context.sample_aspect_ratio == 4 / 3
            or str(c.streams.video[0].sample_aspect_ratio) == "4/3"
        )
    assert_clean_output(out)


# --- 8. two runs on one data root ---------------------------------------------------------------


@pytest.mark.integration
def test_8_a_second_run_on_the_same_data_root_stops_with_one_line(tmp_path, prefect_server):
    cfg = tiny_config(**{"sources.0.num_images": 20000, "sources.0.image_size": 256})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    data = tmp_path / "data"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYROBLUR_DATA_DIR": str(data)}
    log = tmp_path / "first.log"
    with log.open("w") as fh:
        first = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "-c", str(cfg_path), "--until", "download"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            lock = data / ".pyroblur.lock"
            while not (lock.exists() and f'"pid": {first.pid}' in lock.read_text()):
                assert first.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the first run did not take the data root in 180 s"
                time.sleep(0.2)
            second, rss = cli("run", "-c", str(cfg_path), "--until", "download", env=env, timeout=120)
            assert first.poll() is None, "the first run must still be running"
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGTERM)
                first.wait(timeout=60)
    assert second.returncode == 1, second.stderr[-3000:]
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, second.stderr[-3000:]
    assert f"another pyroblur process holds the data root {data} (pid {first.pid}, `pyroblur run`" in lines[0]
    assert "wait for it to finish, or set PYROBLUR_DATA_DIR" in lines[0]
    assert rss < MAX_RSS_KB, rss
    # the lock went with the first process: a third run may take the root at once
    from pyroblur.core.runlock import hold_data_root

    with hold_data_root(data, "test"):
        pass


# --- 9. smaller ------------------------------------------------------------------------------------


def test_9_duplicate_yaml_keys_are_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()) + "train:\n  batch: 4\n")
    proc, rss = cli("check-config", str(cfg))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = text_of(proc)
    assert str(cfg) in line and "duplicate key 'train' on lines" in line and "silently replace" in line
    assert rss < SMALL_RSS_KB, rss


def test_9_crowd_regions_and_duplicate_ids_reject_their_images_only(tmp_path):
    coco = tmp_path / "coco"
    for name in ("crowd.jpg", "dup1.jpg", "dup2.jpg", "ok.jpg"):
        jpeg(coco / name)
    images = [
        {"id": 1, "file_name": "crowd.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "dup1.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "dup2.jpg", "width": 64, "height": 48},
        {"id": 3, "file_name": "ok.jpg", "width": 64, "height": 48},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 30, 30], "iscrowd": 1},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [40, 1, 8, 8], "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8, 8]},
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 8, 8]},
    ]
    _coco(coco, images, anns)
    cfg = _source_config(
        tmp_path, {"kind": "local", "name": "mine", "path": str(coco), "format": "coco", "class_map": {"face": "face"}}
    )
    proc, rss, recs = fetch(cfg, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "duplicate image id 2" in text_of(proc) and "crowd regions" in text_of(proc)
    assert recs["crowd.jpg"]["issues"] == ["crowd_regions"] and recs["crowd.jpg"]["boxes"] == []
    assert recs["dup1.jpg"]["issues"] == recs["dup2.jpg"]["issues"] == ["bad_labels"]
    assert recs["ok.jpg"]["issues"] == [] and len(recs["ok.jpg"]["boxes"]) == 1
    assert rss < MAX_RSS_KB, rss


def test_9_a_data_yaml_pointing_elsewhere_is_refused(tmp_path):
    root = tmp_path / "yolo"
    jpeg(root / "train" / "images" / "a.jpg")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": "/etc", "train": ".", "names": ["face"]}))
    cfg = _source_config(
        tmp_path, {"kind": "local", "name": "mine", "path": str(root), "format": "yolo", "class_map": {"face": "face"}}
    )
    proc, rss = cli("download", "-c", str(cfg), env={"PYROBLUR_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "its splits hold no images under /etc" in text_of(proc)
    assert rss < MAX_RSS_KB, rss


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real full disk (needs root and mount; skipped where that is refused)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_9_disk_full_stops_the_run_named_and_leaves_no_unaudited_output(tmp_path, weights, small_disk):
    inp = tmp_path / "in"
    for i in range(6):  # noise JPEGs of about 1 MB each: the third does not fit
        src = inp / f"{i}.png"
        src.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (600, 600, 3), np.uint8)).save(src)
    before = shas(inp)
    out = small_disk / "out"
    proc, rss = anonymize(inp, out, weights)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = text_of(proc)
    assert "no space left on the device while writing" in line and "--resume" in line
    assert rss < MAX_RSS_KB, rss
    assert shas(inp) == before
    assert_clean_output(out)


def test_the_unchanged_check_sees_a_write_into_a_sparse_file(tmp_path):
    big = tmp_path / "d" / "sparse.bin"
    big.parent.mkdir()
    with big.open("wb") as f:
        f.truncate(256 * 1024**2)
    before = shas(big.parent)
    with big.open("r+b") as f:
        f.seek(200 * 1024**2)
        f.write(b"x")
    assert shas(big.parent) != before


def test_limits_are_documented_with_their_defaults():
    from pyroblur.core.limits import LIMITS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "failures.md").read_text()
    for lim in LIMITS.values():
        assert f"`{lim.env}`" in doc, lim.env
        row = next(ln for ln in doc.splitlines() if f"`{lim.env}`" in ln and ln.startswith("|"))
        assert f"{lim.default:,}" in row.replace("_", ","), row


def test_limit_values_are_checked(monkeypatch):
    from pyroblur.core.errors import ConfigurationError
    from pyroblur.core.limits import limit

    monkeypatch.setenv("PYROBLUR_MAX_LABEL_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="PYROBLUR_MAX_LABEL_BYTES='lots' is not a number"):
        limit("label_bytes")


def test_9_opencv_is_one_release_for_both_wheels_that_own_cv2():
    """ultralytics pulls opencv-python, fiftyone opencv-python-headless: both install into the
    same `cv2` folder, so two releases would leave a `cv2` that is half one and half the other.
    pyproject pins opencv-python to the release fiftyone's `<5` admits, and the environment holds
    exactly that pair."""
    from importlib.metadata import version

    import cv2

    full, headless = version("opencv-python"), version("opencv-python-headless")
    assert full == headless, f"opencv-python {full} next to opencv-python-headless {headless}"
    assert cv2.__version__ == ".".join(full.split(".")[:3])
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"opencv-python=={full}"' in pyproject
