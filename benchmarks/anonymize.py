"""Side-by-side anonymization benchmark: ``pyroblur anonymize`` vs ``deface`` on one clip.

Generates a 1280x720 clip with audio (real face crops from scikit-image's astronaut photo
and LFW pasted on a photo background, moving; drawn license plates) with known boxes, runs
both tools end to end as subprocesses on it and prints JSON: frames/s (wall time of the
whole command, model loading included) and the fraction of ground-truth faces and plates
each one changed (mean absolute pixel difference inside the box vs the decoded input).

    python benchmarks/anonymize.py --model path/to/best.pt
    python benchmarks/anonymize.py --train-epochs 30   # no model at hand: train a tiny one

A model trained here from scratch on a few generated images is a smoke model: its detection
figures say nothing about a real champion; the throughput does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyroblur.anonymize.video import ffmpeg_exe, read_frames  # noqa: E402

W, H, FPS = 1280, 720, 25


def _assets(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Face crops (BGR) and a background photo, all from scikit-image's bundled data."""
    from skimage import data

    astro = np.ascontiguousarray(data.astronaut()[25:215, 150:320, ::-1])
    lfw = data.lfw_subset()[:100]  # first 100 are faces (25x25 gray, 0..1)
    faces = [astro]
    for i in rng.choice(len(lfw), 4, replace=False):
        g = (lfw[i] * 255).astype(np.uint8)
        faces.append(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
    bg = cv2.resize(np.ascontiguousarray(data.coffee()[..., ::-1]), (W, H), interpolation=cv2.INTER_CUBIC)
    return faces, bg


def _plate(w: int, h: int, text: str) -> np.ndarray:
    p = np.full((h, w, 3), (225, 230, 235), np.uint8)
    cv2.rectangle(p, (1, 1), (w - 2, h - 2), (30, 30, 30), 2)
    scale = h / 40
    cv2.putText(
        p, text, (int(0.08 * w), int(0.72 * h)), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), max(1, int(2 * scale))
    )
    return p


def make_scene(n_frames: int, seed: int = 0, width: int = W, height: int = H):
    """Frames (BGR) and ground truth per frame: list of ``(x1, y1, x2, y2, class_id)``."""
    rng = np.random.default_rng(seed)
    faces, bg = _assets(rng)
    bg = cv2.resize(bg, (width, height))
    objects = []
    for k in range(3):
        size = int(rng.uniform(0.09, 0.22) * height)
        img = cv2.resize(faces[k % len(faces)], (size, int(size * 1.15)), interpolation=cv2.INTER_CUBIC)
        start = rng.uniform([0, 0], [width - size, height - img.shape[0]])
        objects.append((img, start, rng.uniform(-6, 6, 2) * width / W, 0))
    for k in range(2):
        pw = int(rng.uniform(0.1, 0.16) * width)
        img = _plate(pw, int(pw * 0.25), f"{chr(65 + k)}{rng.integers(10, 99)} X{rng.integers(100, 999)}")
        start = rng.uniform([0, 0], [width - pw, height - img.shape[0]])
        objects.append((img, start, rng.uniform(-3, 3, 2) * width / W, 1))
    frames, truth = [], []
    for i in range(n_frames):
        f = bg.copy()
        boxes = []
        for img, start, vel, cls in objects:
            h, w = img.shape[:2]
            x, y = start + vel * i
            x = int(np.clip(x, 0, width - w))
            y = int(np.clip(y, 0, height - h))
            f[y : y + h, x : x + w] = img
            boxes.append((x, y, x + w, y + h, cls))
        frames.append(f)
        truth.append(boxes)
    return frames, truth


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24"]
    cmd += ["-s", f"{w}x{h}", "-framerate", str(FPS), "-i", "-"]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={len(frames) / FPS}"]
    cmd += ["-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)


def train_tiny_model(work: Path, epochs: int, images: int = 160, imgsz: int = 480) -> Path:
    """Train YOLO11n from scratch on generated scenes (other seeds than the clip)."""
    from ultralytics import YOLO

    ds = work / "yolo"
    for split, n, seed in (("train", images, 100), ("val", max(8, images // 8), 200)):
        (ds / "images" / split).mkdir(parents=True, exist_ok=True)
        (ds / "labels" / split).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            frames, truth = make_scene(1, seed=seed + j, width=640, height=360)
            cv2.imwrite(str(ds / "images" / split / f"{j}.jpg"), frames[0])
            rows = [
                f"{c} {(x1 + x2) / 1280:.6f} {(y1 + y2) / 720:.6f} {(x2 - x1) / 640:.6f} {(y2 - y1) / 360:.6f}"
                for x1, y1, x2, y2, c in truth[0]
            ]
            (ds / "labels" / split / f"{j}.txt").write_text("\n".join(rows) + "\n")
    yaml = ds / "data.yaml"
    yaml.write_text(f"path: {ds}\ntrain: images/train\nval: images/val\nnames:\n  0: face\n  1: license_plate\n")
    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(yaml), epochs=epochs, imgsz=imgsz, batch=16, device="cpu", workers=2, project=str(work / "runs"),
        name="tiny", plots=False, verbose=False, amp=False, mosaic=0.5,
    )  # fmt: skip
    return Path(model.trainer.best)


def coverage(src: list[np.ndarray], out: list[np.ndarray], truth, cls: int, threshold: float = 8.0) -> float:
    """Fraction of ground-truth boxes of class ``cls`` whose pixels changed by more than
    ``threshold`` grey levels on average (re-encoding alone changes them by ~1-2)."""
    hit = total = 0
    for a, b, boxes in zip(src, out, truth, strict=False):
        for x1, y1, x2, y2, c in boxes:
            if c != cls:
                continue
            total += 1
            hit += np.abs(a[y1:y2, x1:x2].astype(np.int16) - b[y1:y2, x1:x2].astype(np.int16)).mean() > threshold
    return round(hit / total, 4) if total else float("nan")


def run_tool(name: str, cmd: list[str], out: Path, src: list[np.ndarray], truth) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        return {"tool": name, "error": (proc.stderr or proc.stdout)[-1500:], "command": cmd}
    frames = list(read_frames(out))
    return {
        "tool": name,
        "command": " ".join(cmd[:1] + [Path(c).name if "/" in c else c for c in cmd[1:]]),
        "seconds": round(seconds, 2),
        "frames": len(frames),
        "frames_per_second": round(len(frames) / seconds, 2),
        "faces_anonymized": coverage(src, frames, truth, 0),
        "plates_anonymized": coverage(src, frames, truth, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="YOLO weights for pyroblur (.pt/.onnx)")
    parser.add_argument("--train-epochs", type=int, default=0, help="no --model: train a tiny model this long")
    parser.add_argument("--frames", type=int, default=75)
    parser.add_argument("--train-imgsz", type=int, default=320, help="training size (images are 640x360)")
    parser.add_argument("--imgsz", type=int, default=640, help="pyroblur inference size (pixels)")
    parser.add_argument("--conf", type=float, default=0.25, help="pyroblur confidence threshold, both classes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, help="keep files here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pyroblur-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    model, model_note = args.model, "given"
    if model is None:
        if not args.train_epochs:
            parser.error("give --model or --train-epochs")
        t = time.perf_counter()
        # Ultralytics logs to stdout; keep stdout for the JSON alone.
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            model = train_tiny_model(work, args.train_epochs, imgsz=args.train_imgsz)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        model_note = (
            f"YOLO11n trained from scratch here for {args.train_epochs} epochs on 160 generated "
            f"640x360 images at imgsz {args.train_imgsz} ({time.perf_counter() - t:.0f} s): a smoke model, "
            "not the champion; its detection figures mean nothing for a real model"
        )

    frames, truth = make_scene(args.frames)
    clip = work / "clip.mp4"
    write_clip(clip, frames)
    src = list(read_frames(clip))

    bin_dir = Path(sys.executable).parent
    ours_out = work / "pyroblur.mp4"
    ours = [str(bin_dir / "pyroblur"), "anonymize", str(clip), str(ours_out), "--model", str(model)]
    ours += ["--device", args.device, "--batch-size", str(args.batch_size), "--no-progress", "--imgsz", str(args.imgsz)]
    ours += ["--conf-face", str(args.conf), "--conf-plate", str(args.conf)]
    deface_out = work / "deface.mp4"
    deface = [str(bin_dir / "deface"), str(clip), "-o", str(deface_out), "--keep-audio"]
    results = [run_tool("pyroblur", ours, ours_out, src, truth)]
    if shutil.which("deface", path=str(bin_dir)):
        results.append(run_tool("deface 1.5.0 (CenterFace, cv2 backend)", deface, deface_out, src, truth))

    import torch

    report = {
        "clip": {
            "size": f"{W}x{H}",
            "fps": FPS,
            "frames": args.frames,
            "audio": "aac sine",
            "faces_per_frame": 3,
            "plates_per_frame": 2,
            "face_sources": "skimage astronaut + LFW crops on skimage coffee background",
        },
        "model": {"path": str(model), "note": model_note, "imgsz": args.imgsz, "conf": args.conf},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "timing": "wall time of the whole command (process start and model load included)",
        "coverage": "fraction of ground-truth boxes whose mean |pixel difference| vs the decoded input exceeds 8",
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
