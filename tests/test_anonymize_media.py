"""Video edge cases through PyAV (test clips built with the bundled ffmpeg): a truncated
input reported (exit 3 with frames written vs expected), variable frame rate timestamps kept, rotation metadata
honoured, audio kept in sync when the video stream starts after the audio, the encoder
quality option."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner
from video_tools import frame_times, is_variable_rate, nothing, run_ffmpeg

from flows.cli.anonymize import EXIT_SKIPPED, anonymize_command
from pyroblur.anonymize import api
from pyroblur.anonymize.api import AnonymizeOptions, anonymize_path
from pyroblur.anonymize.video import ffmpeg_exe, probe_video, read_frames
from pyroblur.core.detections import Detections

W, H, FPS, N = 320, 240, 25, 50


def _opts(**kw) -> AnonymizeOptions:
    return AnonymizeOptions(**({"progress": False, "enlarge": 1.0, "batch_size": 8} | kw))


def _textured_clip(path: Path, *extra: str, video_delay: float = 0.0) -> None:
    """N frames of a moving test pattern with a sine tone; the video stream starts
    ``video_delay`` seconds after the audio."""
    delay = ["-itsoffset", str(video_delay)] if video_delay else []
    run_ffmpeg(
        *delay,
        *("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}"),
        *("-f", "lavfi", "-i", "sine=frequency=440"),
        *("-t", str(N / FPS + video_delay), "-map", "0:v", "-map", "1:a"),
        *("-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", *extra, str(path)),
    )


def _stream_starts(path: Path) -> dict[int, float]:
    """Seconds at which each stream's first decoded frame is presented (ffmpeg framecrc)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bases: dict[int, float] = {}
    starts: dict[int, float] = {}
    for line in out.splitlines():
        if line.startswith("#tb "):
            idx, frac = line[4:].split(":")
            num, den = frac.strip().split("/")
            bases[int(idx)] = int(num) / int(den)
        elif line and not line.startswith("#"):
            idx, pts = (int(v) for v in line.split(",")[:2])
            starts.setdefault(idx, pts * bases[idx])
    return starts


@pytest.fixture
def cli_app(monkeypatch) -> typer.Typer:
    monkeypatch.setattr(api, "with_resolved_weights", lambda options: options)  # no model file: none to resolve
    monkeypatch.setattr(api, "build_detector", lambda options: nothing)
    app = typer.Typer()
    app.command("anonymize")(anonymize_command)

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_truncated_video_is_reported_with_frames_written_vs_expected(tmp_path, cli_app) -> None:
    full = tmp_path / "full.mp4"
    _textured_clip(full, "-movflags", "+faststart")  # header first: a cut file still opens
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])

    report = anonymize_path(cut, tmp_path / "out.mp4", _opts(), detector=nothing)
    [result] = report.processed
    assert not result.complete and not report.ok
    assert result.expected_frames == N and 0 < result.frames < N - 2
    assert "truncated" in report.to_markdown()
    # The whole file still goes through completely.
    assert anonymize_path(full, tmp_path / "full-out.mp4", _opts(), detector=nothing).ok

    out = tmp_path / "cli-out.mp4"
    result = CliRunner().invoke(cli_app, ["anonymize", str(cut), str(out), "--no-progress"], env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_SKIPPED, result.output
    text = " ".join(result.output.split())
    assert "Truncated input" in text and f"of {N} expected" in text


def test_rotation_metadata_is_honoured(tmp_path) -> None:
    """A phone video stored landscape with a 90 degree display matrix: detection and hiding
    happen on the upright picture and the output displays the same way as the input."""
    plain = tmp_path / "plain.mp4"
    _textured_clip(plain)
    rotated = tmp_path / "rotated.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    assert (info.width, info.height) == (H, W), "the probe must report the displayed (upright) size"
    box = (20, 30, 100, 150)  # in upright pixels: taller than wide, only possible after rotation

    def detector(frames):
        assert all(f.shape[:2] == (W, H) for f in frames)
        return [Detections(np.array([box], np.float32), np.array([0])) for _ in frames]

    out = tmp_path / "out.mp4"
    report = anonymize_path(rotated, out, _opts(memory_frames=0), detector=detector)
    assert report.ok, report.skipped
    src, dst = list(read_frames(rotated)), list(read_frames(out))
    assert len(dst) == N and dst[0].shape == (W, H, 3)
    x1, y1, x2, y2 = box
    for a, b in zip(src, dst, strict=True):
        assert np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).mean() > 10
        far = np.ones(a.shape[:2], bool)
        far[: y2 + 10, : x2 + 10] = False
        assert np.abs(a.astype(int) - b.astype(int))[far].mean() < 4, "output not displayed like the input"


@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_audio_stays_in_sync_within_one_frame(tmp_path, delay) -> None:
    src = tmp_path / "in.mp4"
    _textured_clip(src, video_delay=delay)
    before = _stream_starts(src)
    out = tmp_path / "out.mp4"
    assert anonymize_path(src, out, _opts(), detector=nothing).ok
    after = _stream_starts(out)
    offset_in, offset_out = before[0] - before[1], after[0] - after[1]  # video start - audio start
    assert abs(offset_in - delay) < 1 / FPS, "test clip not built as intended"
    assert abs(offset_out - offset_in) < 1 / FPS, f"audio moved by {offset_out - offset_in:+.3f} s"


def test_encoder_quality_option(tmp_path) -> None:
    src = tmp_path / "in.mp4"
    _textured_clip(src)
    sizes = {}
    for crf in (12, 40):
        out = tmp_path / f"crf{crf}.mp4"
        assert anonymize_path(src, out, _opts(crf=crf, audit=False), detector=nothing).ok
        sizes[crf] = out.stat().st_size
    assert sizes[12] > 2 * sizes[40]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_timestamps_are_kept(tmp_path, suffix) -> None:
    """A clip whose second half runs at half the rate (a phone slowing down in low light):
    every output frame is presented when its input frame was, not re-timed to a constant
    rate, and the audio stays in sync."""
    src = tmp_path / f"vfr{suffix}"
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}"),
        *("-f", "lavfi", "-i", "sine=frequency=440", "-t", "3"),
        *("-vf", "setpts='if(lt(N,25),N*0.04,1+(N-25)*0.08)/TB'", "-fps_mode", "vfr"),
        *("-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(src)),
    )
    before = frame_times(src)
    assert before is not None and is_variable_rate(before), "test clip is not VFR"
    out = tmp_path / f"out{suffix}"
    report = anonymize_path(src, out, _opts(), detector=nothing)
    assert report.ok, report
    after = frame_times(out)
    assert after is not None and len(after) == len(before) == report.processed[0].frames
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) < 0.002
    starts_in, starts_out = _stream_starts(src), _stream_starts(out)
    assert abs((starts_out[0] - starts_out[1]) - (starts_in[0] - starts_in[1])) < 1 / FPS
    assert probe_video(out).has_audio


def test_constant_rate_is_not_mistaken_for_variable(tmp_path) -> None:
    src = tmp_path / "cfr.mp4"
    _textured_clip(src)
    times = frame_times(src)
    assert times is not None and len(times) == N and not is_variable_rate(times)
    assert not is_variable_rate(None) and not is_variable_rate([0.0, 0.04])


@pytest.mark.parametrize("vfr", [False, True])
def test_every_audio_stream_is_kept(tmp_path, vfr) -> None:
    """Two audio tracks (e.g. two languages) both reach the output, from a constant-rate
    and from a variable-rate input."""
    src = tmp_path / "two.mkv"
    video = ["-vf", "setpts='if(lt(N,25),N*0.04,1+(N-25)*0.08)/TB'", "-fps_mode", "vfr"] if vfr else []
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}"),
        *("-f", "lavfi", "-i", "sine=frequency=440", "-f", "lavfi", "-i", "sine=frequency=880", "-t", "2"),
        *video,
        *("-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", str(src)),
    )
    assert is_variable_rate(frame_times(src)) is vfr
    out = tmp_path / "out.mkv"
    assert anonymize_path(src, out, _opts(), detector=nothing).ok
    assert probe_video(out).audio_codecs == ("aac", "aac")
