"""What the in-process PyAV video path adds: audio-first files and several audio streams
keep their offsets, audio is copied packet for packet and interleaved with the video,
timestamps survive a file that does not start at 0, rotation in every direction, a cut
Matroska file is reported, memory stays bounded while streaming, clear errors."""

from __future__ import annotations

import hashlib
import queue
import subprocess
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from video_tools import frame_times, nothing, run_ffmpeg

from pyroblur.anonymize import video
from pyroblur.anonymize.api import AnonymizeOptions, anonymize_path
from pyroblur.anonymize.video import (
    VideoError,
    anonymize_video,
    decode_frames,
    ffmpeg_exe,
    probe_video,
    read_frames,
)
from pyroblur.core.detections import Detections

W, H, FPS = 160, 120, 25


def _opts(**kw) -> AnonymizeOptions:
    return AnonymizeOptions(**({"progress": False, "enlarge": 1.0, "batch_size": 4, "audit": False} | kw))


def _starts(path: Path) -> list[float]:
    """Seconds from the file's start at which each stream's first packet is presented."""
    with av.open(str(path)) as c:
        origin = (c.start_time or 0) / 1e6
        first: dict[int, float] = {}
        for p in c.demux():
            if p.pts is not None and p.stream.index not in first:
                first[p.stream.index] = float(p.pts * p.time_base) - origin
        return [first[s.index] for s in c.streams]


def _audio_digests(path: Path) -> list[str]:
    """One sha256 per audio stream over its packets' bytes, in order."""
    with av.open(str(path)) as c:
        hashes = {s.index: hashlib.sha256() for s in c.streams.audio}
        for p in c.demux(*c.streams.audio):
            if p.size:
                hashes[p.stream.index].update(bytes(p))
        return [h.hexdigest() for h in hashes.values()]


def test_audio_first_with_two_audio_streams_keeps_every_offset_and_packet(tmp_path) -> None:
    """Audio A starts at 0, audio B at 0.12 s, video at 0.3 s (an audio-first file: audio
    packets come before the first video packet). Every stream keeps its start within one
    frame, both audio streams are copied byte for byte, and the audio is interleaved with
    the video rather than dumped at one end."""
    src = tmp_path / "first.mkv"
    run_ffmpeg(
        *("-itsoffset", "0.3", "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}"),
        *("-f", "lavfi", "-i", "sine=frequency=440"),
        *("-itsoffset", "0.12", "-f", "lavfi", "-i", "sine=frequency=660"),
        *("-t", "2.3", "-map", "0:v", "-map", "1:a", "-map", "2:a"),
        *("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a:0", "aac", "-c:a:1", "libmp3lame", str(src)),
    )
    before = _starts(src)
    assert before[0] > before[1] + 0.25 and before[2] > before[1] + 0.08, f"test clip not as intended: {before}"
    with av.open(str(src)) as c:
        assert next(c.demux()).stream.type == "audio", "test clip does not start with audio"
    out = tmp_path / "out.mkv"
    report = anonymize_path(src, out, _opts(), detector=nothing)
    assert report.ok, report.skipped
    after = _starts(out)
    assert len(after) == 3
    for a, b in zip(before, after, strict=True):
        assert abs(a - b) < 1 / FPS, f"stream starts moved: {before} -> {after}"
    assert probe_video(out).audio_codecs == ("aac", "mp3")
    assert _audio_digests(out) == _audio_digests(src), "audio was not copied packet for packet"
    assert frame_times(out) == pytest.approx(frame_times(src), abs=0.002)
    # Interleaved: every video packet sits within a second of the audio around it.
    with av.open(str(out)) as c:
        audio_t = None
        for p in c.demux():
            if p.pts is None:
                continue
            t = float(p.pts * p.time_base)
            if p.stream.type == "audio":
                audio_t = t
            elif audio_t is not None:
                assert abs(t - audio_t) < 1.0, f"video at {t:.2f} s after audio at {audio_t:.2f} s"


def test_timestamps_of_a_file_that_does_not_start_at_zero(tmp_path) -> None:
    """MPEG-TS starts its clock at 1.4 s and its audio a little before the video: the output
    keeps every frame's time and the audio offset relative to the file's start."""
    src = tmp_path / "cam.ts"
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}", "-f", "lavfi", "-i", "sine"),
        *("-t", "1.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(src)),
    )
    with av.open(str(src)) as c:
        assert c.start_time > 0.5e6, "test clip does not start late"
    out = tmp_path / "out.ts"
    assert anonymize_path(src, out, _opts(), detector=nothing).ok
    assert frame_times(out) == pytest.approx(frame_times(src), abs=0.002)
    (v0, a0), (v1, a1) = _starts(src), _starts(out)
    assert abs((v1 - a1) - (v0 - a0)) < 1 / FPS


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_matches_ffmpeg_autorotate(tmp_path, degrees) -> None:
    """Our upright frames equal what the ffmpeg CLI's autorotation shows, in every direction."""
    plain = tmp_path / "plain.mp4"
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}", "-frames:v", "3", "-pix_fmt", "yuv420p", str(plain)
    )
    rotated = tmp_path / f"rot{degrees}.mp4"
    run_ffmpeg("-display_rotation", str(degrees), "-i", str(plain), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    w, h = (H, W) if degrees % 180 else (W, H)
    assert (info.rotation, info.width, info.height) == (degrees, w, h)
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(rotated), "-frames:v", "1"]
        + ["-sws_flags", "accurate_rnd", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    expected = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    ours = next(read_frames(rotated, info))
    assert ours.shape == expected.shape
    assert np.abs(ours.astype(int) - expected).mean() < 1.0


def test_cut_matroska_is_reported_as_truncated(tmp_path) -> None:
    """Matroska announces no frame count, only a duration: the shortfall is still seen."""
    full = tmp_path / "full.mkv"
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}", "-f", "lavfi", "-i", "sine"),
        *("-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(full)),
    )
    info = probe_video(full)
    assert info.frame_count == 0 and info.frame_count_estimate in (50, 51)  # the audio runs a little longer
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mkv"
    outcome = anonymize_video(cut, out, nothing, lambda f, d: f, progress=False)
    # expected: the duration over the decoded frames' mean interval, which the cut's missing
    # B-frame neighbours lengthen a little
    assert not outcome.complete and 0 < outcome.frames < 40 and 45 <= outcome.expected <= 51
    assert sum(1 for _ in read_frames(out)) == outcome.frames
    assert probe_video(out).has_audio


def test_frames_in_flight_do_not_grow_with_the_clip(tmp_path, monkeypatch) -> None:
    """Streaming: however long the clip, only the queue, the batch and the gap filler's
    look-ahead hold decoded frames. Frames are counted with weak references; the first
    detector call waits until the decoding thread is blocked on a full queue (or done), so
    a decoder that reads ahead without bound is caught whatever the machine's speed."""
    src = tmp_path / "long.mp4"
    n = 240
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size=64x48:rate={FPS}", "-frames:v", str(n)),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src)),
    )
    reader_waits = threading.Event()

    class WatchedQueue(queue.Queue):
        def put(self, item, block=True, timeout=None) -> None:
            if item is None or (self.maxsize > 0 and self.full()):
                reader_waits.set()  # blocked on a full queue, or finished
            super().put(item, block, timeout)

    alive: list[weakref.ref] = []  # every decoded frame
    decode = video.decode_frames

    def decode_watched(*args, **kwargs):
        for decoded in decode(*args, **kwargs):
            alive.append(weakref.ref(decoded.image))
            yield decoded

    monkeypatch.setattr(video, "queue", SimpleNamespace(Queue=WatchedQueue, Empty=queue.Empty))
    monkeypatch.setattr(video, "decode_frames", decode_watched)
    peak = 0

    def counting(frames: list[np.ndarray]) -> list[Detections]:
        nonlocal peak
        assert reader_waits.wait(timeout=120), "the decoding thread neither blocked nor finished"
        peak = max(peak, sum(r() is not None for r in alive))
        return nothing(frames)

    batch, memory = 4, 3
    report = anonymize_path(src, tmp_path / "out.mp4", _opts(batch_size=batch, memory_frames=memory), detector=counting)
    assert report.ok and report.processed[0].frames == n
    # queue (2 batches) + the reader's batch + the batch in hand + the filler's look-ahead,
    # the encoder's queue (a batch) and the frame it encodes, and a batch of slack for loop
    # variables (reading ahead without bound holds all 240)
    bound = 6 * batch + memory + 1
    assert peak <= bound, f"{peak} frames alive at once (bound {bound})"


def test_decoded_frames_carry_their_source_timestamps(tmp_path) -> None:
    src = tmp_path / "vfr.mkv"
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}", "-frames:v", "12"),
        *("-vf", "setpts='if(lt(N,6),N*0.04,0.24+(N-6)*0.12)/TB'", "-fps_mode", "vfr"),
        *("-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)),
    )
    info = probe_video(src)
    times = [float(d.pts * info.time_base) for d in decode_frames(src, info)]
    assert times == pytest.approx([k * 0.04 for k in range(6)] + [0.24 + k * 0.12 for k in range(6)], abs=0.002)


def test_unreadable_video_names_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        probe_video(bad)
    out = tmp_path / "out"
    report = anonymize_path(bad, out / "broken.mp4", _opts(), detector=nothing)
    assert not report.processed and "broken.mp4" in report.skipped[0].reason
    assert not out.exists() or not any(out.iterdir()), "something left behind"
