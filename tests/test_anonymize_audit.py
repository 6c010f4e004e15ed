"""Proof and resumption: every output gets an audit record (hashes, model, options, boxes per
frame), the residual check re-runs the detector on the output (``--strict`` removes an output
where something is still found), and an interrupted folder job resumes without redoing
finished files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from flows.cli.anonymize import EXIT_OK, EXIT_SKIPPED, anonymize_command
from pyroblur.anonymize import api
from pyroblur.anonymize.api import AnonymizeOptions, anonymize_path
from pyroblur.anonymize.audit import audit_path
from pyroblur.core.detections import Detections

H, W = 96, 128
BOX = (24, 16, 88, 72)  # where every test image carries its textured "face"


def _image(seed: int) -> np.ndarray:
    """Flat grey with an 8 px random-block texture in BOX (the thing to hide)."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 128, np.uint8)
    x1, y1, x2, y2 = BOX
    img[y1:y2, x1:x2] = np.kron(
        rng.integers(0, 256, ((y2 - y1) // 8, (x2 - x1) // 8, 3), np.uint8), np.ones((8, 8, 1), np.uint8)
    )
    return img


class TextureDetector:
    """Finds a 'face' at BOX when that region still has texture (std > 25): a blurred box
    is not found again, a box still textured is. Counts the frames it was asked about."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.frames = 0
        self.stop_after = stop_after

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        out = []
        for f in frames:
            if self.stop_after is not None and self.frames >= self.stop_after:
                raise KeyboardInterrupt  # the job is killed mid-folder
            self.frames += 1
            x1, y1, x2, y2 = BOX
            found = f[y1:y2, x1:x2].std() > 25
            rows = np.array([BOX], np.float32) if found else np.zeros((0, 4), np.float32)
            out.append(Detections(rows, np.zeros(len(rows), np.int64), np.full(len(rows), 0.9, np.float32)))
        return out


def _opts(**kw) -> AnonymizeOptions:
    return AnonymizeOptions(**({"progress": False, "enlarge": 1.0} | kw))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(root / ("sub" if i % 2 else ".") / f"img{i}.png"), _image(i))
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_audit_record_per_output(folder, tmp_path) -> None:
    out = tmp_path / "out"
    report = anonymize_path(folder, out, _opts(conf_face=0.3), detector=TextureDetector())
    assert report.ok and len(report.processed) == 4
    for r in report.processed:
        doc = json.loads(audit_path(r.output).read_text())
        assert r.audit == audit_path(r.output)
        assert doc["input"]["sha256"] == _sha(r.input) and doc["output"]["sha256"] == _sha(r.output)
        assert doc["options"]["conf_face"] == 0.3 and doc["options"]["mode"] == "blur"
        assert doc["complete"] is True and doc["frames_written"] == 1
        [frame] = doc["frames"]
        assert frame["boxes"] == [[*map(float, BOX), "face", 0.9, False, -1]]
        assert doc["residual"] is None  # not asked for


def test_audit_record_of_a_video_marks_filled_boxes(tmp_path) -> None:
    import subprocess

    from pyroblur.anonymize.video import ffmpeg_exe

    frames = [_image(0) for _ in range(12)]
    src = tmp_path / "clip.mp4"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24"]
    cmd += ["-s", f"{W}x{H}", "-framerate", "25", "-i", "-", "-c:v", "libx264", "-crf", "10", str(src)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)

    def every_other(fs):  # detected in even frames only: odd frames are filled along the track
        dets = TextureDetector()(fs)
        return [d if (k % 2 == 0) else Detections.empty() for k, d in enumerate(dets)]

    out = tmp_path / "out.mp4"
    report = anonymize_path(src, out, _opts(memory_frames=2, batch_size=4), detector=every_other)
    assert report.ok
    doc = json.loads(audit_path(out).read_text())
    assert doc["frames_written"] == 12 and doc["frames_expected"] == 12 and doc["complete"]
    filled = {f["frame"] for f in doc["frames"] if any(b[6] for b in f["boxes"])}
    assert filled == {1, 3, 5, 7, 9, 11}
    tracks = {b[7] for f in doc["frames"] for b in f["boxes"]}
    assert len(tracks) == 1 and tracks != {-1}, "one object, one track"
    assert doc["input"]["sha256"] == _sha(src) and doc["output"]["sha256"] == _sha(out)


def test_residual_check_finds_weak_masking_and_strict_fails_closed(folder, tmp_path, monkeypatch) -> None:
    img = folder / "img0.png"
    # A blur hides the texture: nothing found again.
    good = anonymize_path(img, tmp_path / "good.png", _opts(verify=True), detector=TextureDetector())
    assert good.ok and good.processed[0].residual == 0
    assert json.loads(audit_path(tmp_path / "good.png").read_text())["residual"]["count"] == 0
    # A 32-cell mosaic on an 8 px texture leaves it readable: the residual check says so.
    weak = _opts(verify=True, mode="mosaic", mosaic_cells=32)
    report = anonymize_path(img, tmp_path / "weak.png", weak, detector=TextureDetector())
    assert report.processed[0].residual == 1 and (tmp_path / "weak.png").is_file()
    # --strict: the output is not published and the run exits 3.
    monkeypatch.setattr(api, "with_resolved_weights", lambda options: options)  # no model file: none to resolve
    monkeypatch.setattr(api, "build_detector", lambda options: TextureDetector())
    app = typer.Typer()
    app.command("anonymize")(anonymize_command)
    app.callback()(lambda: None)
    cmd = ["anonymize", str(img), str(tmp_path / "strict.png"), "--mode", "mosaic", "--mosaic-cells", "32"]
    result = CliRunner().invoke(app, [*cmd, "--strict"], env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert "residual check" in " ".join(result.output.split())
    assert not (tmp_path / "strict.png").exists()
    result = CliRunner().invoke(app, [*cmd[:3], "--strict"])  # a proper blur passes --strict
    assert result.exit_code == EXIT_OK, result.output


def test_interrupted_folder_job_resumes_without_redoing_finished_files(folder, tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        anonymize_path(folder, out, _opts(), detector=TextureDetector(stop_after=2))
    done = sorted(p for p in out.rglob("*.png"))
    assert len(done) == 2
    stamps = {p: p.stat().st_mtime_ns for p in done}

    detector = TextureDetector()
    report = anonymize_path(folder, out, _opts(), detector=detector, resume=True)
    assert report.ok and len(report.processed) == 4
    assert detector.frames == 2, "finished files were detected again"
    assert sum(r.resumed for r in report.processed) == 2
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "finished outputs rewritten"

    # A changed input, a changed option or a tampered output is redone, not trusted.
    changed = folder / "img0.png"
    cv2.imwrite(str(changed), _image(99))
    (out / "sub" / "img1.png").write_bytes(b"tampered")
    detector = TextureDetector()
    report = anonymize_path(folder, out, _opts(), detector=detector, resume=True)
    assert detector.frames == 2 and report.ok
    detector = TextureDetector()
    anonymize_path(folder, out, _opts(blur_strength=0.8), detector=detector, resume=True)
    assert detector.frames == 4


def test_a_resumed_report_counts_the_skipped_files_boxes_from_their_audit_records(folder, tmp_path) -> None:
    out = tmp_path / "out"
    first = anonymize_path(folder, out, _opts(), detector=TextureDetector())
    assert first.ok and sum(r.boxes for r in first.processed) > 0
    detector = TextureDetector()
    again = anonymize_path(folder, out, _opts(), detector=detector, resume=True)
    assert detector.frames == 0 and all(r.resumed for r in again.processed)
    boxes = {r.input: (r.boxes, r.remembered, r.frames, r.complete) for r in first.processed}
    assert {r.input: (r.boxes, r.remembered, r.frames, r.complete) for r in again.processed} == boxes
    # the markdown report's "boxes hidden" column is the same as the first run's
    assert first.to_markdown().splitlines()[4] == again.to_markdown().splitlines()[4]


def test_audit_names_the_champion_and_its_gates(tmp_path, monkeypatch) -> None:
    from pyroblur.core.settings import get_paths
    from pyroblur.registry.store import Candidate, champion_weights, promote_if_better

    monkeypatch.setenv("PYROBLUR_DATA_DIR", str(tmp_path / "data"))
    registry = get_paths().registry
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights of a promoted model")
    promote_if_better(registry, Candidate(weights=weights, metrics={"map": 0.5}), "map")
    champion = champion_weights(registry)
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), _image(0))
    out = tmp_path / "out.png"
    assert anonymize_path(img, out, _opts(weights=champion), detector=TextureDetector()).ok
    model = json.loads(audit_path(out).read_text())["model"]
    assert model["sha256"] == _sha(champion)
    assert model["registry"]["gates_passed"] is True and model["registry"]["gates"]
    assert model["registry"]["champion_id"]
