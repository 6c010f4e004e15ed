"""Video anonymization end to end through PyAV (clips built with the bundled ffmpeg): boxes hidden, the rest kept,
frame count, frame rate and audio preserved, temporal memory covering a missed frame,
atomic output. An oracle detector returns the ground-truth boxes; a separate smoke test
runs a real (randomly initialised) YOLO11n."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyroblur.anonymize.api import AnonymizeOptions, anonymize_path
from pyroblur.anonymize.video import ffmpeg_exe, probe_video, read_frames
from pyroblur.core.detections import Detections

W, H, FPS, N = 320, 240, 25, 40
FACE = 64  # face box side, pixels
PLATE = (180, 190, 290, 222)  # static plate box, pixels
DROP = 20  # frame whose faces and plates the Oracle detector misses


def face_box(i: int) -> tuple[int, int, int, int]:
    """Ground-truth face box of frame ``i``: moves 5 px/frame to the right."""
    x = 10 + 5 * i
    return (x, 30, x + FACE, 30 + FACE)


def gt(i: int) -> Detections:
    return Detections(np.array([face_box(i), PLATE], np.float32), np.array([0, 1]))


class Oracle:
    """Detector that returns the ground truth of frames in the order they are asked for."""

    def __init__(self, fail_after: int | None = None, drop: int | None = None) -> None:
        self.seen = 0
        self.calls: list[int] = []
        self.fail_after = fail_after
        self.drop = drop  # a frame whose faces and plates the detector "misses"

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise RuntimeError("detector crashed")
        self.calls.append(len(frames))
        out = [Detections.empty() if self.seen + k == self.drop else gt(self.seen + k) for k in range(len(frames))]
        self.seen += len(frames)
        return out


def make_frames() -> list[np.ndarray]:
    from skimage.data import astronaut

    rng = np.random.default_rng(0)
    background = np.kron(rng.integers(40, 220, (H // 8, W // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    face = np.ascontiguousarray(astronaut()[30:200, 150:320, ::-1])  # RGB -> BGR
    import cv2

    face = cv2.resize(face, (FACE, FACE), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(N):
        f = background.copy()
        x1, y1, x2, y2 = face_box(i)
        f[y1:y2, x1:x2] = face
        px1, py1, px2, py2 = PLATE
        f[py1:py2, px1:px2] = 235
        cv2.putText(f, f"AB {i:02d} CD", (px1 + 6, py2 - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 2)
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], audio: bool = True) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{W}x{H}", "-framerate", str(FPS), "-i", "-"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={N / FPS}"]
    cmd += ["-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-metadata", "location=+48.8584+002.2945/"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd.append(str(path))
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "street.mp4"
    write_video(path, make_frames())
    return path


@pytest.fixture(scope="module")
def decoded_input(clip) -> list[np.ndarray]:
    return list(read_frames(clip))


def _opts(**kw) -> AnonymizeOptions:
    return AnonymizeOptions(**({"progress": False, "enlarge": 1.0, "batch_size": 8} | kw))


def _box_diff(a: np.ndarray, b: np.ndarray, box) -> float:
    x1, y1, x2, y2 = box
    return float(np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).mean())


def _far_mask(i: int, margin: int = 12) -> np.ndarray:
    far = np.ones((H, W), bool)
    for x1, y1, x2, y2 in (face_box(i), PLATE):
        far[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin] = False
    return far


def test_probe_generated_clip(clip) -> None:
    info = probe_video(clip)
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    assert info.audio_codecs == ("aac",)
    assert info.frame_count_estimate == N


def test_video_boxes_hidden_rest_kept_with_fps_frames_and_audio(clip, decoded_input, tmp_path) -> None:
    out = tmp_path / "out" / "street.mp4"
    oracle = Oracle()
    report = anonymize_path(clip, out, _opts(memory_frames=0, sidecar=True), detector=oracle)

    assert report.ok and [r.output for r in report.processed] == [out]
    assert report.processed[0].frames == N and report.processed[0].boxes == 2 * N
    assert set(oracle.calls) == {8}, "frames were not batched"
    info = probe_video(out)
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    assert info.has_audio, "audio stream lost"
    frames = list(read_frames(out))
    assert len(frames) == N
    for i, (src, dst) in enumerate(zip(decoded_input, frames, strict=True)):
        for box in (face_box(i), PLATE):
            assert _box_diff(src, dst, box) > 12, f"frame {i}: box {box} not hidden"
        far = _far_mask(i)
        # Re-encoding H.264 (4:2:0 chroma) costs ~3 levels on this blocky colour texture.
        diff = np.abs(src.astype(int) - dst.astype(int))[far]
        assert diff.mean() < 4.0, f"frame {i}: pixels far from boxes changed ({diff.mean():.2f})"
        assert abs((src.astype(int) - dst.astype(int))[far].mean()) < 0.5, "colour drift"
    sidecar = json.loads(out.with_name("street.mp4.json").read_text())
    assert len(sidecar["frames"]) == N
    assert sidecar["frames"][3]["detections"][0]["xyxy"] == list(map(float, face_box(3)))
    assert not list(out.parent.glob(".*")), "temporary files left behind"
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "location" not in header, "GPS metadata copied into the anonymized video"


@pytest.mark.parametrize(("memory", "hidden"), [(0, False), (3, True)])
def test_dropped_frame_is_covered_by_temporal_memory(clip, decoded_input, tmp_path, memory, hidden) -> None:
    """The detector misses frame DROP: without memory its face leaks (which proves the miss
    is real), with memory it is still hidden."""
    out = tmp_path / "out.mkv"  # a second container: audio copied into Matroska
    report = anonymize_path(clip, out, _opts(memory_frames=memory, sidecar=True), detector=Oracle(drop=DROP))
    assert report.ok
    frames = list(read_frames(out))
    assert len(frames) == N
    for box in (face_box(DROP), PLATE):
        diff = _box_diff(decoded_input[DROP], frames[DROP], box)
        assert (diff > 12) is hidden, f"memory={memory}: diff {diff:.1f} in {box}"
    assert _box_diff(decoded_input[DROP + 1], frames[DROP + 1], face_box(DROP + 1)) > 12
    rows = json.loads(out.with_name("out.mkv.json").read_text())["frames"][DROP]["detections"]
    assert [r["remembered"] for r in rows] == [True] * (2 if hidden else 0)
    assert probe_video(out).has_audio


def test_failure_mid_video_leaves_no_output(clip, tmp_path) -> None:
    out = tmp_path / "out" / "street.mp4"
    report = anonymize_path(clip, out, _opts(), detector=Oracle(fail_after=16))
    assert not report.processed
    assert [s.input for s in report.skipped] == [clip]
    assert "detector crashed" in report.skipped[0].reason
    assert not out.exists()
    assert not any(out.parent.iterdir()) if out.parent.exists() else True


def test_video_without_audio_and_odd_size(tmp_path) -> None:
    frames = [f[:239, :319] for f in make_frames()[:10]]  # odd width and height
    src = tmp_path / "odd.mov"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo"]
    cmd += ["-pix_fmt", "bgr24", "-s", "319x239", "-framerate", "30000/1001", "-i", "-"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv444p", str(src)]
    subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    out = tmp_path / "anon.mov"
    report = anonymize_path(src, out, _opts(), detector=lambda fs: [Detections.empty() for _ in fs])
    assert report.ok, report.skipped
    info = probe_video(out)
    assert (info.width, info.height, info.has_audio) == (319, 239, False)
    assert abs(info.fps - 29.97) < 0.01
    assert sum(1 for _ in read_frames(out)) == 10


@pytest.mark.slow
def test_real_yolo_model_smoke(clip, tmp_path) -> None:
    """A real ultralytics model (random init from yolo11n.yaml, no download) runs through
    the same path: .pt loading, batched predict, class mapping, thresholds."""
    from ultralytics import YOLO

    from pyroblur.anonymize.detector import UltralyticsDetector

    weights = tmp_path / "yolo11n-random.pt"
    YOLO("yolo11n.yaml").save(weights)
    det = UltralyticsDetector(weights, device="cpu", conf={0: 0.0, 1: 0.0}, imgsz=160)
    frames = list(read_frames(clip))[:3]
    out = det(frames)
    assert len(out) == 3 and all(isinstance(d, Detections) for d in out)
    for d in out:
        assert set(d.class_id.tolist()) <= {0, 1}
        assert (d.xyxy[:, 2] <= W + 1).all() and (d.xyxy[:, 3] <= H + 1).all()
    report = anonymize_path(clip, tmp_path / "yolo.mp4", _opts(weights=weights, device="cpu", imgsz=160, batch_size=16))
    assert report.ok, report.skipped
    assert report.processed[0].frames == N
