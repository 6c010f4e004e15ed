"""Side-by-side anonymization benchmark: ``pyroblur anonymize`` (each face-detector mode,
tracking on and off, tiles on and off) vs ``deface`` on one clip of real faces.

The clip (1280x720, 25 fps, with audio) is built from real photos that ship with the
installed packages: scikit-image's astronaut and LFW face crops, matplotlib's grace_hopper
sample photo, at 12 to 200 px, plus drawn license plates 20 to 150 px wide, every object
moving over scikit-image's coffee photo. Ground truth is known per frame, so each tool's
output is scored per (object, frame):

* anonymized fraction per class, leaks as (object, frame) pairs and the longest run of
  consecutive leaked frames per object; an object counts as anonymized in a frame when the
  mean absolute difference inside its box against the decoded input exceeds 8 grey levels
  (re-encoding alone changes it by ~1-2);
* background damage, far pixels changed: the share of pixels more than 24 px from every object
  whose value moved by more than 16 levels (collateral blur), mean over frames and the worst
  frame;
* background damage on real negatives (:mod:`pyroblur.evaluation.negatives`: scikit-image
  photos and textures with no face or plate): each tool anonymizes the folder of them, and the
  share of each picture's pixels moved by more than 16 levels, mean and worst picture;
* for our runs, from the audit record: the largest output box as a share of the frame and
  the largest ratio of a filled box to its track's largest detected box;
* frames/s: wall time of the whole command (process start and model load included), and
  the command's CPU time (user + system), which other jobs on a shared machine disturb less.

    python benchmarks/anonymize.py --model path/to/best.pt
    python benchmarks/anonymize.py --champion          # the registry's champion (PYROBLUR_DATA_DIR)
    python benchmarks/anonymize.py --train-epochs 25   # no model at hand: train a tiny one

The ``default`` row runs ``pyroblur anonymize`` with no detector option at all (face detector
``auto``: the union with CenterFace for a model not gated on real faces, e.g. the demo's); the
``yolo`` rows pass ``--face-detector yolo`` (the model alone).

A model trained here from scratch is a smoke model: it saw LFW identities other than the
clip's, pasted the same way; its figures say little about a real champion.
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
FACE_SIZES = (200, 140, 96, 64, 48, 32, 26, 20, 16, 12)  # face width, pixels
PLATE_WIDTHS = (150, 100, 70, 45, 30, 20)
#: LFW crops 0-59 may be used for training, 60-99 only in the clip (unseen identities).
LFW_TRAIN, LFW_CLIP = range(0, 60), range(60, 100)
#: Share of training faces drawn from the colour photos of TRAIN_PHOTOS.
TRAIN_PHOTO_SHARE = 0.35


#: Real faces for training only, from photos that ship with ultralytics and scikit-image
#: (other people than the clip's): (file, x1, y1, x2, y2), boxes around each face with the
#: hair, as CenterFace located them (conf 0.76-0.89), widened like the clip's crops.
TRAIN_PHOTOS = (
    ("ultralytics:zidane.jpg", 890, 60, 1075, 290),
    ("ultralytics:zidane.jpg", 530, 220, 690, 450),
    ("ultralytics:bus.jpg", 104, 400, 164, 475),
    ("ultralytics:bus.jpg", 261, 410, 318, 480),
    ("skimage:camera", 190, 95, 270, 205),
)


def _photo(name: str) -> np.ndarray:
    """A sample photo that ships with an installed package, BGR."""
    package, _, item = name.partition(":")
    if package == "ultralytics":
        import ultralytics

        image = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / item))
    else:
        from skimage import data

        image = getattr(data, item)()
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[..., ::-1]
    if image is None:
        raise FileNotFoundError(f"sample photo {name} not found in the installed package")
    return np.ascontiguousarray(image)


def _faces(clip: bool) -> list[np.ndarray]:
    """Real face crops (BGR): for the clip astronaut, grace_hopper and LFW crops 60-99; for
    training LFW crops 0-59 and the colour faces of :data:`TRAIN_PHOTOS` (the clip's large
    faces are colour photos: a model that saw only LFW's 25 px grey crops never learns them)."""
    import matplotlib.cbook
    from skimage import data

    lfw = data.lfw_subset()[:100]  # the first 100 are faces (25x25 gray, 0..1)
    faces = [
        cv2.cvtColor((lfw[i] * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR) for i in (LFW_CLIP if clip else LFW_TRAIN)
    ]
    if clip:
        astro = np.ascontiguousarray(data.astronaut()[30:210, 160:310, ::-1])
        hopper = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        faces = [astro, hopper[110:330, 140:380], *faces]
    else:
        photos = {name: _photo(name) for name, *_ in TRAIN_PHOTOS}
        faces += [photos[name][y1:y2, x1:x2] for name, x1, y1, x2, y2 in TRAIN_PHOTOS]
    return faces


def _plate(w: int, text: str) -> np.ndarray:
    h = max(6, round(w * 0.28))
    p = np.full((h, w, 3), (225, 230, 235), np.uint8)
    cv2.rectangle(p, (0, 0), (w - 1, h - 1), (30, 30, 30), max(1, w // 60))
    # Largest font that fits 88 % of the width and 70 % of the height.
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
    scale = min(0.88 * w / tw, 0.7 * h / th)
    thick = max(1, round(2 * scale))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.putText(p, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), thick)
    return p


def _layout(width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Start (x, y) and velocity (px/frame) of each object: faces then plates, in lanes that
    never overlap over 50 frames (scaled to the frame size)."""
    sx, sy = width / W, height / H
    rows = [
        [(40, 40), (420, 60), (700, 80), (940, 90), (1130, 100)],  # faces 200..48
        [(60, 330), (300, 340), (540, 345), (780, 350), (1020, 355)],  # faces 32..12
        [(40, 500), (320, 520), (560, 530), (780, 540), (980, 550), (1160, 560)],  # plates
    ]
    out = []
    for k, row in enumerate(rows):
        for j, (x, y) in enumerate(row):
            vx = 2.0 if (j + k) % 2 == 0 else -2.0
            out.append((x * sx + (100 * sx if vx < 0 else 0), y * sy, vx * sx, (0.6 if j % 2 else -0.6) * sy))
    return out


def make_scene(n_frames: int, seed: int = 0, width: int = W, height: int = H, train: bool = False):
    """Frames (BGR) and ground truth per frame: ``(x1, y1, x2, y2, class_id, object_id)``.

    ``train`` picks other face identities and shuffles sizes and positions (training data
    for the smoke model); the benchmark clip is ``seed=0, train=False``.
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    bg = cv2.resize(np.ascontiguousarray(data.coffee()[..., ::-1]), (width, height), interpolation=cv2.INTER_CUBIC)
    faces = _faces(clip=not train)
    scale = width / W
    objects = []
    layout = _layout(width, height)
    sizes = list(FACE_SIZES)
    if train:
        rng.shuffle(layout)
        sizes = [int(s * rng.uniform(0.7, 1.3)) for s in sizes]
    for k, size in enumerate(sizes):
        if not train:
            crop = faces[k % len(faces)]
        elif rng.random() < TRAIN_PHOTO_SHARE:  # a colour photo face, else an LFW crop
            crop = faces[len(LFW_TRAIN) + int(rng.integers(len(TRAIN_PHOTOS)))]
        else:
            crop = faces[int(rng.integers(len(LFW_TRAIN)))]
        s = max(8, round(size * scale))
        objects.append((cv2.resize(crop, (s, round(s * 1.15)), interpolation=cv2.INTER_AREA), layout[k], 0))
    for k, pw in enumerate(PLATE_WIDTHS):
        text = f"{chr(65 + k)}{rng.integers(10, 99)} X{rng.integers(100, 999)}"
        objects.append((_plate(max(12, round(pw * scale)), text), layout[len(sizes) + k], 1))
    if train:  # shuffled lanes overlap: keep only objects clear of the ones already placed
        kept, placed = [], []
        for img, (x0, y0, vx, vy), cls in objects:
            h, w = img.shape[:2]
            x, y = min(max(0, x0), width - w), min(max(0, y0), height - h)
            if all(x + w <= a or a + c <= x or y + h <= b or b + d <= y for a, b, c, d in placed):
                placed.append((x, y, w, h))
                kept.append((img, (x0, y0, vx, vy), cls))
        objects = kept
    frames, truth = [], []
    for i in range(n_frames):
        f = bg.copy()
        boxes = []
        for oid, (img, (x0, y0, vx, vy), cls) in enumerate(objects):
            h, w = img.shape[:2]
            x = int(np.clip(x0 + vx * i, 0, width - w))
            y = int(np.clip(y0 + vy * i, 0, height - h))
            f[y : y + h, x : x + w] = img
            boxes.append((x, y, x + w, y + h, cls, oid))
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


def _crop_labels(truth, x0: int, y0: int, w: int, h: int, keep: float = 0.5) -> list[str]:
    """YOLO label rows of the objects in the ``w`` x ``h`` crop at ``(x0, y0)``: boxes clipped
    to the crop, those with less than ``keep`` of their area inside dropped."""
    rows = []
    for x1, y1, x2, y2, c, _ in truth:
        cx1, cy1, cx2, cy2 = max(x1, x0), max(y1, y0), min(x2, x0 + w), min(y2, y0 + h)
        if cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < keep * (x2 - x1) * (y2 - y1):
            continue
        cx1, cy1, cx2, cy2 = cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0
        rows.append(
            f"{c} {(cx1 + cx2) / 2 / w:.6f} {(cy1 + cy2) / 2 / h:.6f} {(cx2 - cx1) / w:.6f} {(cy2 - cy1) / h:.6f}"
        )
    return rows


def train_tiny_model(work: Path, epochs: int, images: int = 160, imgsz: int = 320, crops: int = 0) -> Path:
    """Train YOLO11n from scratch on generated scenes (other identities, seeds and layouts).

    ``images`` scenes are 640x360: at ``imgsz`` 320 they look as the full-frame pass sees a
    1280x720 frame. ``crops`` more are ``imgsz``-wide crops of 1280x720 scenes at full
    resolution, as the tiles see the frame: without them the background's textures at full
    resolution are new to the model in every tile (a smoke model once took scikit-image's
    coffee spoon for a face in each tile that held it)."""
    from ultralytics import YOLO

    ds = work / "yolo"
    rng = np.random.default_rng(7)
    for split, n, seed in (("train", images, 100), ("val", max(8, images // 8), 5000)):
        (ds / "images" / split).mkdir(parents=True, exist_ok=True)
        (ds / "labels" / split).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            frames, truth = make_scene(1, seed=seed + j, width=640, height=360, train=True)
            cv2.imwrite(str(ds / "images" / split / f"{j}.jpg"), frames[0])
            rows = _crop_labels(truth[0], 0, 0, 640, 360, keep=0.0)
            (ds / "labels" / split / f"{j}.txt").write_text("\n".join(rows) + "\n")
        for j in range(crops if split == "train" else max(0, crops // 8)):
            frames, truth = make_scene(1, seed=seed + 20000 + j, width=W, height=H, train=True)
            cw, ch = imgsz, round(imgsz * H / W)
            x0, y0 = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
            cv2.imwrite(str(ds / "images" / split / f"crop{j}.jpg"), frames[0][y0 : y0 + ch, x0 : x0 + cw])
            rows = _crop_labels(truth[0], x0, y0, cw, ch)
            (ds / "labels" / split / f"crop{j}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    yaml = ds / "data.yaml"
    yaml.write_text(f"path: {ds}\ntrain: images/train\nval: images/val\nnames:\n  0: face\n  1: license_plate\n")
    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(yaml), epochs=epochs, imgsz=imgsz, batch=16, device="cpu", workers=2, project=str(work / "runs"),
        name="tiny", plots=False, verbose=False, amp=False, mosaic=0.5,
    )  # fmt: skip
    return Path(model.trainer.best)


def score(src: list[np.ndarray], out: list[np.ndarray], truth, threshold: float = 8.0) -> dict:
    """Anonymized fraction per class, leaks, longest leak run per object, far-pixel change."""
    hidden: dict[int, list[bool]] = {}
    classes: dict[int, int] = {}
    sizes: dict[int, int] = {}
    far_changed = []
    for a, b, boxes in zip(src, out, truth, strict=False):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        near = np.zeros(a.shape[:2], np.uint8)
        for x1, y1, x2, y2, c, oid in boxes:
            hidden.setdefault(oid, []).append(bool(diff[y1:y2, x1:x2].mean() > threshold))
            classes[oid], sizes[oid] = c, x2 - x1
            near[max(0, y1 - 24) : y2 + 24, max(0, x1 - 24) : x2 + 24] = 1
        far_changed.append(float((diff.max(axis=2)[near == 0] > 16).mean()))

    def longest_false_run(flags: list[bool]) -> int:
        best = run = 0
        for f in flags:
            run = 0 if f else run + 1
            best = max(best, run)
        return best

    result: dict = {}
    for cls, name in ((0, "faces"), (1, "plates")):
        ids = [o for o in hidden if classes[o] == cls]
        pairs = sum(len(hidden[o]) for o in ids)
        leaks = sum(not f for o in ids for f in hidden[o])
        result[f"{name}_anonymized"] = round(1 - leaks / pairs, 4) if pairs else None
        result[f"{name}_leaks"] = leaks
        result[f"{name}_per_object"] = {
            f"{sizes[o]}px": {
                "anonymized": round(float(np.mean(hidden[o])), 3),
                "longest_leak": longest_false_run(hidden[o]),
            }
            for o in ids
        }
    for name in ("faces", "plates"):
        result[f"{name}_longest_leak"] = max(
            (v["longest_leak"] for v in result[f"{name}_per_object"].values()), default=0
        )
    result["far_pixels_changed"] = round(float(np.mean(far_changed)), 5)
    result["far_pixels_changed_worst_frame"] = round(float(np.max(far_changed)), 5)
    return result


def negatives_damage(src_dir: Path, out_files: dict[str, Path]) -> dict:
    """Share of each real negative's pixels moved by more than 16 levels in the tool's output
    (there is nothing to hide in them): mean, worst and which picture."""
    shares = {}
    for name, out in out_files.items():
        a = cv2.imread(str(src_dir / f"{name}.png"))
        b = cv2.imread(str(out)) if out.exists() else None
        if b is None or b.shape != a.shape:
            shares[name] = None
            continue
        shares[name] = float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 16).mean())
    got = {k: v for k, v in shares.items() if v is not None}
    worst = max(got, key=got.get) if got else None
    return {
        "images": len(shares),
        "missing_outputs": sorted(k for k, v in shares.items() if v is None),
        "mean": round(float(np.mean(list(got.values()))), 5) if got else None,
        "worst": round(got[worst], 5) if worst else None,
        "worst_image": worst,
        "per_image": {k: (round(v, 4) if v is not None else None) for k, v in shares.items()},
    }


def audit_bounds(doc: dict, width: int, height: int) -> dict:
    """From our audit record: the largest output box (share of the frame) and the largest
    filled box relative to its track's largest detected box (width and height)."""
    largest_share, ratio, filled = 0.0, 0.0, 0
    detected: dict[int, np.ndarray] = {}
    for fr in doc["frames"]:
        for x1, y1, x2, y2, _cls, _conf, is_filled, track in fr["boxes"]:
            largest_share = max(largest_share, (x2 - x1) * (y2 - y1) / (width * height))
            if not is_filled and track >= 0:
                detected[track] = np.maximum(detected.get(track, np.zeros(2)), [x2 - x1, y2 - y1])
    for fr in doc["frames"]:
        for x1, y1, x2, y2, _cls, _conf, is_filled, track in fr["boxes"]:
            if is_filled and track in detected:
                filled += 1
                ratio = max(ratio, float(np.max(np.array([x2 - x1, y2 - y1]) / np.maximum(detected[track], 1e-6))))
    return {
        "largest_box_frame_share": round(largest_share, 5),
        "filled_boxes": filled,
        "max_filled_over_track_max": round(ratio, 4),
    }


def _found(box: tuple[float, ...], truth: tuple[float, ...], on: float = 0.7, share: float = 0.2) -> bool:
    """A detected ``box`` finds the object at ``truth`` when at least ``on`` of the box lies
    on the object and the box is at least ``share`` of the object's area: detectors draw
    different extents (CenterFace: the face without the hair the crop has), but a fragment
    on a sleeve or a strand of hair does not count."""
    ix = max(0.0, min(box[2], truth[2]) - max(box[0], truth[0]))
    iy = max(0.0, min(box[3], truth[3]) - max(box[1], truth[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    area_truth = (truth[2] - truth[0]) * (truth[3] - truth[1])
    return area > 0 and ix * iy >= on * area and area >= share * area_truth


def audit_detected(doc: dict, truth) -> dict:
    """Per object, the share of frames where the detector itself found it (:func:`_found`,
    detected boxes of the object's class only, filled ones not counted). Unlike
    "anonymized" (pixels changed), partial cover by a neighbour's box does not count."""
    names = ("face", "license_plate")
    found: dict[int, list[bool]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for fr, boxes in zip(doc["frames"], truth, strict=False):
        mine = [(tuple(b[:4]), b[4]) for b in fr["boxes"] if not b[6]]
        for x1, y1, x2, y2, cls, oid in boxes:
            sizes[oid] = (cls, x2 - x1)
            hit = any(c == names[cls] and _found(box, (x1, y1, x2, y2)) for box, c in mine)
            found.setdefault(oid, []).append(hit)
    return {
        f"{'face' if sizes[o][0] == 0 else 'plate'} {sizes[o][1]}px": round(float(np.mean(found[o])), 3)
        for o in sorted(found)
    }


def plate_boxes(audit: Path) -> list[list[tuple[float, ...]]]:
    """License-plate boxes per frame (detected and filled) of an audit record."""
    doc = json.loads(audit.read_text())
    return [sorted(tuple(b[:4]) for b in fr["boxes"] if b[4] == "license_plate") for fr in doc["frames"]]


def run_tool(
    name: str, cmd: list[str], out: Path, src: list[np.ndarray], truth, negatives: tuple[list[str], Path, dict] | None
) -> dict:
    """Run ``cmd`` on the clip (timed), score its output; then ``negatives``: the same tool's
    command on the folder of real negatives (not timed) and the outputs it wrote, per name."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not out.exists():
        return {"tool": name, "error": (proc.stderr or proc.stdout)[-1500:], "command": cmd}
    said = [line for line in (proc.stderr or "").splitlines() if "face detector:" in line]
    frames = list(read_frames(out))
    row = {
        "tool": name,
        "command": " ".join(cmd[:1] + [Path(c).name if "/" in c else c for c in cmd[1:]]),
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "frames": len(frames),
        "frames_per_second": round(len(frames) / seconds, 2),
        # CPU time (user + system) of the command and its children: on a shared machine the
        # wall time depends on the other jobs, the CPU time much less.
        "cpu_seconds": round(cpu, 2),
        **score(src, frames, truth),
    }
    if said:
        row["log_face_detector"] = said[-1].split("face detector:", 1)[1].strip()
    if negatives is not None:
        neg_cmd, neg_src, neg_out = negatives
        subprocess.run(neg_cmd, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
        row["real_negatives"] = negatives_damage(neg_src, neg_out)
    audit = out.with_name(out.name + ".audit.json")
    if audit.exists():
        doc = json.loads(audit.read_text())
        row["bounds"] = audit_bounds(doc, W, H)
        row["detected_per_object"] = audit_detected(doc, truth)
        row["audit_detectors"] = {k: doc["model"].get(k) for k in ("face_detector", "detectors", "why")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="YOLO weights for pyroblur (.pt/.onnx)")
    parser.add_argument(
        "--champion", action="store_true", help="the registry's champion (PYROBLUR_DATA_DIR); default row: no --model"
    )
    parser.add_argument("--train-epochs", type=int, default=0, help="no --model: train a tiny model this long")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--train-imgsz", type=int, default=320, help="training size (images are 640x360)")
    parser.add_argument("--train-images", type=int, default=320, help="generated 640x360 training scenes")
    parser.add_argument(
        "--train-crops", type=int, default=160, help="training crops of 1280x720 scenes at full resolution (tile scale)"
    )
    parser.add_argument("--conf", type=float, default=0.25, help="pyroblur confidence threshold, both classes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--runs",
        default="default,yolo,no-tracking,no-tiles,centerface,union,deface",
        help="comma-separated subset of: default, yolo, no-tracking, no-tiles, centerface, union, deface",
    )
    parser.add_argument("--no-negatives", action="store_true", help="skip the real negatives")
    parser.add_argument("--work", type=Path, help="keep files here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="pyroblur-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    model, model_note = args.model, "given"
    if args.champion:
        from pyroblur.anonymize.models import resolve_weights

        model = resolve_weights(None, device="cpu")
        model_note = f"the registry's champion ({model}); the default row resolves it itself (no --model)"
    elif model is None:
        if not args.train_epochs:
            parser.error("give --model, --champion or --train-epochs")
        t = time.perf_counter()
        # Ultralytics logs to stdout; keep stdout for the JSON alone.
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            model = train_tiny_model(
                work, args.train_epochs, images=args.train_images, imgsz=args.train_imgsz, crops=args.train_crops
            )
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        model_note = (
            f"YOLO11n trained from scratch here for {args.train_epochs} epochs on {args.train_images} generated "
            f"640x360 scenes and {args.train_crops} full-resolution cut-outs of 1280x720 scenes (faces: LFW 0-59 and "
            f"TRAIN_PHOTOS, no identity of the clip) "
            f"at imgsz {args.train_imgsz} "
            f"({time.perf_counter() - t:.0f} s): a smoke model, not the champion"
        )

    frames, truth = make_scene(args.frames)
    clip = work / "clip.mp4"
    write_clip(clip, frames)
    src = list(read_frames(clip))

    neg_dir = work / "negatives"
    neg_names: list[str] = []
    if not args.no_negatives:
        from pyroblur.evaluation.negatives import load_real_negatives

        neg_dir.mkdir(exist_ok=True)
        for name, image in load_real_negatives():
            cv2.imwrite(str(neg_dir / f"{name}.png"), image)
            neg_names.append(name)

    bin_dir = Path(sys.executable).parent
    base = [str(bin_dir / "pyroblur"), "anonymize"]
    common = ["--device", args.device, "--batch-size", str(args.batch_size), "--no-progress"]
    with_model = ["--model", str(model), *common]
    thresholds = ["--conf-face", str(args.conf), "--conf-plate", str(args.conf)]
    yolo = ["--face-detector", "yolo"]
    ours = {
        "default": ("pyroblur defaults (face detector auto), tiles, tracking", common if args.champion else with_model),
        "yolo": ("pyroblur yolo alone, tiles, tracking", [*with_model, *yolo]),
        "no-tracking": ("pyroblur yolo alone, tiles, tracking off", [*with_model, *yolo, "--memory-frames", "0"]),
        "no-tiles": ("pyroblur yolo alone, full frame only, tracking", [*with_model, *yolo, "--no-tiles"]),
        "centerface": (
            "pyroblur centerface faces + yolo plates, tracking",
            [*with_model, "--face-detector", "centerface"],
        ),
        "union": ("pyroblur union (yolo + centerface faces), tracking", [*with_model, "--face-detector", "union"]),
    }
    results = []
    for run in args.runs.split(","):
        run = run.strip()
        negatives = None
        if run in ours:
            name, extra = ours[run]
            out = work / f"pyroblur-{run}.mp4"
            if neg_names:
                neg_out = work / f"negatives-{run}"
                shutil.rmtree(neg_out, ignore_errors=True)
                neg_cmd = [*base, str(neg_dir), str(neg_out), *extra, *thresholds, "--no-audit"]
                negatives = (neg_cmd, neg_dir, {n: neg_out / f"{n}.png" for n in neg_names})
            cmd = [*base, str(clip), str(out), *extra, *thresholds]
            results.append(run_tool(name, cmd, out, src, truth, negatives))
        elif run == "deface" and shutil.which("deface", path=str(bin_dir)):
            out = work / "deface.mp4"
            cmd = [str(bin_dir / "deface"), str(clip), "-o", str(out), "--keep-audio"]
            if neg_names:
                neg_copy = work / "negatives-deface"
                shutil.rmtree(neg_copy, ignore_errors=True)
                shutil.copytree(neg_dir, neg_copy)
                neg_cmd = [str(bin_dir / "deface"), *(str(neg_copy / f"{n}.png") for n in neg_names)]
                negatives = (neg_cmd, neg_dir, {n: neg_copy / f"{n}_anonymized.png" for n in neg_names})
            results.append(
                run_tool("deface 1.5.0 (CenterFace, onnxruntime, defaults)", cmd, out, src, truth, negatives)
            )
        else:
            continue
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)

    # Acceptance 3 of issue 13: union mode adds faces and must not change the plates.
    yolo_audit, union_audit = (work / f"pyroblur-{r}.mp4.audit.json" for r in ("yolo", "union"))
    plates_same = (
        plate_boxes(yolo_audit) == plate_boxes(union_audit) if yolo_audit.exists() and union_audit.exists() else None
    )

    import torch

    report = {
        "clip": {
            "size": f"{W}x{H}",
            "fps": FPS,
            "frames": args.frames,
            "audio": "aac sine",
            "faces": f"{len(FACE_SIZES)} per frame, widths {FACE_SIZES} px",
            "plates": f"{len(PLATE_WIDTHS)} per frame, widths {PLATE_WIDTHS} px",
            "face_sources": "skimage astronaut, matplotlib grace_hopper, skimage LFW crops 60-99; "
            "on skimage coffee; every object moving 2 px/frame",
        },
        "model": {"path": str(model), "note": model_note, "conf": args.conf},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "timing": "wall time of the whole command (process start and model load included); cpu_seconds: its "
        "user + system CPU time (less sensitive to other jobs on the machine)",
        "anonymized": "an object counts as anonymized in a frame when mean |pixel difference| in its box exceeds 8",
        "far_pixels_changed": "share of pixels >24 px from every object whose value moved by >16 levels, mean over "
        "frames (and the worst frame)",
        "real_negatives": "scikit-image photos with no face or plate (pyroblur.evaluation.negatives), each tool on "
        "the folder; share of each picture's pixels moved by >16 levels, mean and worst picture",
        "union_plate_boxes_identical_to_yolo_mode": plates_same,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
