"""Failure model (issue 14): hostile and unlucky inputs through the real CLI fail once, named,
with a documented exit code, within bounded memory; only transient errors are retried.

Each CLI case runs ``python -m flows.cli`` in a fresh process under a small Python wrapper that
reports the command's peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of its
only child), so the memory bound is measured on the command itself.
"""

from __future__ import annotations

import errno
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from tiny_config import tiny_config

from pyroblur.core.errors import (
    ConfigurationError,
    InputError,
    PermanentError,
    TransientError,
    exit_code_of,
    is_transient,
    one_line,
)


@pytest.fixture(autouse=True)
def _restore_pillow_limit():
    """Tests here change the pixel limit, which Pillow keeps in a global: put it back."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


#: Peak resident memory any hostile input may cost (acceptance: under 2 GB).
MAX_RSS_KB = 2 * 1024 * 1024

_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "sys.stderr.write(f'\\nPEAK_RSS_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
    "sys.exit(rc)\n"
)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``pyroblur ARGS``; return the finished process (wrapper line removed) and the
    command's peak RSS in KB."""
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    head, _, tail = proc.stderr.rpartition("PEAK_RSS_KB=")
    proc.stderr = head.rstrip("\n")
    return proc, int(tail.strip())


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one error line (log lines may come before it); asserts there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    return lines[-1]


# --- check-config -----------------------------------------------------------------------------

BOMB = (
    "train:\n  args:\n    plots: &a ["
    + ", ".join(['"lol"'] * 9)
    + "]\n"
    + "".join(
        f"    {key}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
        for key, a, b in zip(
            ["save", "val", "amp", "cache", "rect", "cos_lr", "fraction", "profile"],
            "abcdefgh",
            "bcdefghi",
            strict=True,
        )
    )
)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("empty", "the config file is empty"),
        ("latin-1", "not UTF-8 text"),
        ("folder", "is a folder, not a config file"),
        ("bomb", "YAML aliases expand to more than"),
    ],
)
def test_check_config_names_the_bad_file(tmp_path, kind, expected):
    path = tmp_path / "cfg.yaml"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes({"empty": b"", "latin-1": "name: café\n".encode("latin-1"), "bomb": BOMB.encode()}[kind])
    proc, rss_kb = cli("check-config", str(path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = error_line(proc)
    assert str(path) in line and expected in line
    assert rss_kb < MAX_RSS_KB
    print(f"check-config {kind}: exit {proc.returncode}, peak RSS {rss_kb / 1024:.0f} MiB")


def test_the_bomb_is_real(tmp_path):
    """The bomb is not a strawman: PyYAML accepts it and it stands for 9**9 strings."""
    data = yaml.safe_load(BOMB)
    node, count = data["train"]["args"]["profile"], 1
    while isinstance(node, list):
        count, node = count * len(node), node[0]
    assert count == 9**9


def test_debug_adds_the_traceback(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    proc, _ = cli("--debug", "check-config", str(path))
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: ")


# --- download ---------------------------------------------------------------------------------


def _source_config(tmp_path: Path, source: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(sources=[source])))
    return path


def test_download_of_a_missing_local_folder_is_one_line(tmp_path):
    missing = tmp_path / "nope"
    cfg = _source_config(
        tmp_path,
        {"kind": "local", "name": "mine", "path": str(missing), "format": "coco", "class_map": {"face": "face"}},
    )
    proc, _ = cli("download", "-c", str(cfg), env={"PYROBLUR_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert str(missing) in error_line(proc)


def test_download_of_malformed_coco_is_one_line(tmp_path):
    folder = tmp_path / "coco"
    folder.mkdir()
    (folder / "_annotations.coco.json").write_text('{"images": [')
    cfg = _source_config(
        tmp_path,
        {"kind": "local", "name": "mine", "path": str(folder), "format": "coco", "class_map": {"face": "face"}},
    )
    proc, _ = cli("download", "-c", str(cfg), env={"PYROBLUR_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert str(folder) in error_line(proc)


# --- anonymize --------------------------------------------------------------------------------


def png_bomb(path: Path, side: int = 30000) -> Path:
    """A ~110 KB PNG that declares ``side`` x ``side`` pixels (1-bit gray, all black)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    idat = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_png_is_refused_from_its_header(tmp_path, weights):
    (tmp_path / "in").mkdir()
    src = png_bomb(tmp_path / "in" / "bomb.png")
    assert src.stat().st_size < 200_000
    out = tmp_path / "out"
    out.mkdir()
    # A temporary file an interrupted run left behind, and one a live writer is writing now.
    stale, fresh = out / ".a.partial-0123abcd.png", out / ".b.partial-4567cdef.png"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (1, 1))
    proc, rss_kb = cli("anonymize", str(src), str(out), "--model", str(weights), "--device", "cpu", "--no-progress")
    assert proc.returncode == 3, proc.stderr[-3000:]
    text = " ".join(proc.stderr.split())  # rich wraps the skipped-file table
    assert "bomb.png" in text and "30000x30000" in text and "pixel limit" in text
    assert rss_kb < MAX_RSS_KB, f"peak RSS {rss_kb} KB"
    assert not stale.exists() and fresh.exists()
    assert sorted(p.name for p in out.iterdir()) == [fresh.name]
    print(f"anonymize 30000x30000 PNG: exit {proc.returncode}, peak RSS {rss_kb / 1024:.0f} MiB")


def test_option_limits_are_in_help_and_named(tmp_path, weights):
    helptext, _ = cli("anonymize", "--help")
    assert "[0<=x<=300]" in helptext.stdout and "--memory-frames" in helptext.stdout
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    proc, _ = cli("anonymize", str(img), str(tmp_path / "o.png"), "--model", str(weights), "--memory-frames", "1000")
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert "--memory-frames" in text and "1000 is not in the range 0<=x<=300" in text
    assert "pydantic" not in text and "validation error" not in text


def test_an_absent_gpu_fails_once_at_start(tmp_path, weights):
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"")
    proc, _ = cli("anonymize", str(folder), str(tmp_path / "out"), "--model", str(weights), "--device", f"cuda:{gpus}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    text = " ".join(proc.stderr.split())
    assert text.count(f"cuda:{gpus}") == 1 and "--device" in text
    assert not (tmp_path / "out").exists()


# --- the taxonomy that retry conditions and exit codes use ------------------------------------


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _response(status: int):
    import requests

    response = requests.Response()
    response.status_code = status
    return response


def _caused(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


def _foreign_errors() -> list[tuple[str, BaseException, bool]]:
    import requests

    from pyroblur.data.archive import UnsafeArchiveError
    from pyroblur.registry.store import CorruptRegistryError

    return [
        ("TransientError", TransientError("busy"), True),
        ("PermanentError", PermanentError("bad"), False),
        ("permanent-but-flagged", PermanentError("x", transient=True), True),
        ("requests.ConnectionError", requests.ConnectionError("reset"), True),
        ("requests.Timeout", requests.Timeout("slow"), True),
        ("ConnectionResetError", ConnectionResetError(), True),
        ("TimeoutError", TimeoutError(), True),
        ("EAGAIN", OSError(errno.EAGAIN, "try again"), True),
        ("HTTP 503", _Status(503), True),
        ("HTTP 429", _Status(429), True),
        ("HTTP 404", _Status(404), False),
        ("requests.HTTPError 502", requests.HTTPError("bad gateway", response=_response(502)), True),
        ("requests.HTTPError 403", requests.HTTPError("forbidden", response=_response(403)), False),
        ("raised from a timeout", _caused(RuntimeError("wrapped"), TimeoutError()), True),
        ("unsafe archive", UnsafeArchiveError(Path("a.zip"), "../x", "contains a '..' component"), False),
        ("corrupt registry", CorruptRegistryError("registry.json is not valid"), False),
        ("missing package", ModuleNotFoundError("No module named 'x'", name="x"), False),
        ("ValueError", ValueError("bad"), False),
        ("FileNotFoundError", FileNotFoundError(2, "nope"), False),
        ("KeyboardInterrupt", KeyboardInterrupt(), False),
        ("MemoryError", MemoryError(), False),
    ]


def test_only_transient_errors_are_retried():
    from prefect.states import Failed

    from tasks._common import retry_transient

    for name, exc, transient in _foreign_errors():
        assert is_transient(exc) is transient, name
        assert retry_transient(None, None, Failed(data=exc)) is transient, name


def test_exit_codes_and_one_line_messages():
    from pyroblur.config import ConfigError

    assert exit_code_of(ConfigError("x.yaml: bad")) == exit_code_of(ConfigurationError("bad")) == 2
    assert exit_code_of(InputError("bad", subject="a.png")) == 3
    assert exit_code_of(PermanentError("bad")) == exit_code_of(ValueError("bad")) == 1
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert (
        one_line(InputError("too big", subject="a.png", hint="raise the limit")) == "a.png: too big (raise the limit)"
    )
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert "required package is missing" in one_line(ModuleNotFoundError("No module named 'x'", name="x"))


def test_errors_survive_pickling_with_their_fields():
    """Prefect stores a failed task's exception with its state: class, message, subject,
    hint and extra attributes must come back (custom __init__ signatures included)."""
    from pyroblur.data.archive import UnsafeArchiveError

    err = UnsafeArchiveError(Path("a.zip"), "../x", "contains a '..' component")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is UnsafeArchiveError and str(back) == str(err) and back.member == "../x"
    err2 = InputError("too big", subject="a.png", hint="raise it")
    back2 = pickle.loads(pickle.dumps(err2))
    assert (back2.subject, back2.hint, str(back2)) == ("a.png", "raise it", str(err2))


def test_ultralytics_never_installs_or_goes_online():
    """Importing pyroblur first turns ultralytics' pip auto-install and online checks off, and
    what it would install (pi-heif) is already there."""
    code = (
        "import subprocess, sys\n"
        "import pyroblur\n"
        "from ultralytics.utils import checks\n"
        "def refuse(*a, **k): raise SystemExit('ultralytics tried to run ' + repr(a))\n"
        "subprocess.check_output = refuse; subprocess.run = refuse\n"
        "assert checks.AUTOINSTALL is False and checks.ONLINE is False\n"
        "assert checks.check_requirements('surely-not-a-real-package-9d1c') is False\n"
        "assert checks.check_requirements('pi-heif') is True\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") or k == "YOLO_CONFIG_DIR"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "ok", proc.stderr[-3000:]
    assert "AutoUpdate disabled" in proc.stdout  # ultralytics' own word that it did not install


@pytest.mark.slow
def test_sigterm_during_anonymize_leaves_no_partial_file_and_no_child(tmp_path, weights):
    import signal
    import time

    import psutil

    from pyroblur.anonymize.video import ffmpeg_exe

    video = tmp_path / "long.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25:duration=40",
        ]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video)],
        check=True,
        timeout=120,
    )
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "anonymize", str(video), str(out), "--model", str(weights)]
        + ["--device", "cpu", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not any(p.name.startswith(".") for p in out.iterdir()):  # the encoder's temporary file
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no temporary output appeared in 180 s"
            time.sleep(0.2)
        # Video is decoded and encoded in process (PyAV): whatever children there are (none
        # expected) must be gone after the signal.
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr
    assert list(out.iterdir()) == []  # neither a partial file nor a half-written video
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [c.cmdline() for c in alive]


def test_output_under_a_missing_root_is_refused(tmp_path, weights):
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    missing = tmp_path / "usb"  # e.g. a disk that is not mounted
    proc, _ = cli("anonymize", str(img), str(missing / "deep" / "a.png"), "--model", str(weights))
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = error_line(proc)
    assert f"{missing} does not exist" in line
    assert not missing.exists()


# --- the one image decoder --------------------------------------------------------------------


def test_decode_image_checks_the_header_against_one_configurable_limit(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from pyroblur.core.images import decode_image, read_image

    img = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    data = buf.tobytes()
    assert np.array_equal(decode_image(data), img)  # the same pixels cv2 gives
    with pytest.raises(InputError, match=r"200x120 px .* over the pixel limit") as err:
        decode_image(data, max_pixels=200 * 120 - 1, subject="a.png")
    assert str(err.value).startswith("a.png: ") and err.value.exit_code == 3
    monkeypatch.setenv("PYROBLUR_MAX_IMAGE_PIXELS", "10000")  # the one setting, for every decoder
    with pytest.raises(InputError, match="over the pixel limit of 0.01 MP"):
        decode_image(data)
    from PIL import Image

    from pyroblur.core.images import apply_pillow_limit

    apply_pillow_limit()
    assert Image.MAX_IMAGE_PIXELS == 10000
    monkeypatch.delenv("PYROBLUR_MAX_IMAGE_PIXELS")
    apply_pillow_limit()
    for bad in (b"", b"not an image", data[: len(data) // 2]):
        with pytest.raises(InputError, match="not a readable image"):
            decode_image(bad)
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "missing.png")
    bomb = png_bomb(tmp_path / "bomb.png")
    with pytest.raises(InputError, match=r"30000x30000 px \(900 MP\)"):
        read_image(bomb)


def test_leftovers_of_one_output_file_are_removed_but_not_the_folder_around_it(tmp_path, weights):
    import cv2
    import numpy as np

    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.full((64, 64, 3), 100, np.uint8))
    out = tmp_path / "out"
    deep = out / "sub"
    deep.mkdir(parents=True)
    mine, other, nested = out / ".a.partial-0123abcd.png", out / ".zzz.partial-0123abcd.png", deep / ".a.partial-1.png"
    for p in (mine, other, nested):
        p.write_bytes(b"x")
        os.utime(p, (1, 1))
    proc, _ = cli("anonymize", str(src), str(out / "a.png"), "--model", str(weights), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "a.png").is_file() and not mine.exists()
    assert other.exists() and nested.exists()  # not this output's: left alone


def test_curation_rejects_oversized_images_from_the_header_with_the_same_limit(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from pyroblur.curation.importer import _decode
    from pyroblur.curation.validation import IMAGE_REASONS

    assert "too_large" in IMAGE_REASONS
    assert _decode(png_bomb(tmp_path / "bomb.png").read_bytes())[3] == "too_large"
    ok, buf = cv2.imencode(".jpg", np.full((100, 150, 3), 90, np.uint8))
    width, height, thumb, problem = _decode(buf.tobytes())
    assert (width, height, problem) == (150, 100, None) and thumb is not None
    monkeypatch.setenv("PYROBLUR_MAX_IMAGE_PIXELS", str(150 * 100 - 1))  # the one setting
    assert _decode(buf.tobytes())[3] == "too_large"


def test_benchmark_inference_logs_no_deprecation_warnings(tmp_path, weights):
    """ultralytics 8.4 deprecated ``half=``: passing it logged "'half' is deprecated" about
    30 times per benchmark run."""
    import logging

    import cv2
    import numpy as np

    from pyroblur.evaluation.benchmark import measure_speed, predict

    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.full((64, 64, 3), 90, np.uint8))
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    try:
        predict(weights, [img], 64, "cpu", 0.01, 0.6, half=False)
        measure_speed(weights, [img], 64, "cpu", 1, False)
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "deprecated" in m], seen
