"""Anonymization frames/s on video clips, per-stage profile, serial and overlapped; JSON out.

For each resolution (default 1280x720 and 1920x1080) a clip is generated from the project's
synthetic generator (faces and plates drawn on real photos; 16 distinct frames cycled), written
with OpenCV (``mp4v``), then anonymized three ways:

``serial``: one stage after the other, each timed on its own (CUDA synchronised between stages):
    decode (OpenCV ``VideoCapture``), letterbox (ultralytics' ``LetterBox`` on the CPU, stack,
    BGR->RGB, upload, /255, FP16), inference (the model's forward pass on the batch), NMS
    (ultralytics' ``non_max_suppression`` + ``scale_boxes`` back to frame pixels, to numpy),
    blur (:func:`pyroblur.anonymize.anonymize_image` on the detected boxes), encode (OpenCV
    ``VideoWriter``). ``blur_gt`` times the same blur on the clip's ground-truth boxes (3-5 per
    frame), the cost a trained model's detections would bring; ``letterbox_gpu`` the same
    letterbox done on the GPU (upload the uint8 frames, resize + pad there). Each stage's share of
    the serial total is reported. ``blur_gpu_gt`` is the product's blur algorithm ported to the
    GPU on the same boxes, download of the frames included (timing only: where it would pay).
``overlapped``: decode and encode in their own threads, blur in a thread pool (OpenCV releases
    the GIL), letterbox on the GPU, inference + NMS on the main thread: frames/s of the whole.
``pyroblur``: the product's own path, :func:`pyroblur.anonymize.anonymize_path` on the clip
    (PyAV decode/encode, tracking, audit), when PyAV is installed.

The model: ``--weights`` (a trained ``.pt``, e.g. the one ``train_throughput.py --keep-weights``
wrote), else ``--model`` (``yolo11l.yaml``) built with random weights: the same compute, fewer
boxes (so NMS and blur are cheap: see ``blur_gt``).

Examples::

    .venv/bin/python benchmarks/gpu_anonymize.py --device cpu --model yolo11n.yaml \\
        --resolutions 320x180 --frames 8 --batch 4 --imgsz 64          # CPU smoke run
    python3 benchmarks/gpu_anonymize.py --out gpu-results/anonymize.json  # GPU host
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import environment, host_cores, untrained_weights  # noqa: E402

from pyroblur.anonymize import anonymize_image  # noqa: E402
from pyroblur.core.devices import resolve_device  # noqa: E402

log = logging.getLogger("gpu_anonymize")
STAGES = ("decode", "letterbox", "inference", "nms", "blur", "encode")


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 30, seed: int = 0) -> list[np.ndarray]:
    """Write ``frames`` frames of ``width`` x ``height`` to ``path`` (mp4v); return each frame's
    ground-truth boxes, ``(N, 4)`` pixels."""
    import cv2

    from pyroblur.data.sources.synthetic import render_image

    side = max(width, height)
    bases, gts = [], []
    for i in range(min(16, frames)):
        img, boxes = render_image(seed, i, side, 0.0)
        y0, x0 = (side - height) // 2, (side - width) // 2
        frame = np.ascontiguousarray(img[y0 : y0 + height, x0 : x0 + width])
        xyxy = np.array([[b.x1 - x0, b.y1 - y0, b.x2 - x0, b.y2 - y0] for b in boxes], np.float32).reshape(-1, 4)
        inside = (xyxy[:, 2] > 0) & (xyxy[:, 3] > 0) & (xyxy[:, 0] < width) & (xyxy[:, 1] < height)
        bases.append(frame)
        gts.append(xyxy[inside])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for t in range(frames):
        writer.write(bases[t % len(bases)])
    writer.release()
    return [gts[t % len(gts)] for t in range(frames)]


class Model:
    """The detector as the stages use it: ultralytics' AutoBackend (fused, FP16 on CUDA)."""

    def __init__(self, weights: Path, device: str, half: bool, imgsz: int, conf: float, iou: float) -> None:
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        self.torch = torch
        self.device = torch.device(device)
        self.half = half and self.device.type == "cuda"
        self.backend = AutoBackend(str(weights), device=self.device, fp16=self.half, fuse=True, verbose=False)
        self.backend.eval()
        self.stride = int(max(self.backend.stride, 32)) if hasattr(self.backend, "stride") else 32
        self.imgsz, self.conf, self.iou = imgsz, conf, iou

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def shape(self, h: int, w: int) -> tuple[int, int]:
        """Letterboxed (h, w): longest side ``imgsz``, each side rounded up to the stride (ultralytics' auto=True)."""
        r = min(self.imgsz / h, self.imgsz / w)
        nh, nw = round(h * r), round(w * r)
        s = self.stride
        return (nh + s - 1) // s * s, (nw + s - 1) // s * s

    def letterbox_cpu(self, frames: list[np.ndarray]) -> Any:
        from ultralytics.data.augment import LetterBox

        h, w = frames[0].shape[:2]
        lb = LetterBox(self.shape(h, w), auto=False, stride=self.stride)
        x = np.stack([lb(image=f) for f in frames])[..., ::-1].transpose(0, 3, 1, 2)
        t = self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)
        return (t.half() if self.half else t.float()) / 255

    def letterbox_gpu(self, frames: list[np.ndarray]) -> Any:
        """Same geometry as :meth:`letterbox_cpu` (bilinear resize, centred grey 114 padding), on the device."""
        import torch.nn.functional as F

        h, w = frames[0].shape[:2]
        th, tw = self.shape(h, w)
        r = min(th / h, tw / w)
        nh, nw = round(h * r), round(w * r)
        top, left = (th - nh) // 2, (tw - nw) // 2
        raw = self.torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
        x = raw.permute(0, 3, 1, 2).flip(1)  # BGR -> RGB, NCHW
        x = x.half() if self.half else x.float()
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = F.pad(x, (left, tw - nw - left, top, th - nh - top), value=114.0)
        return x / 255

    def infer(self, x: Any) -> Any:
        with self.torch.inference_mode():
            return self.backend(x)

    def nms(self, preds: Any, x_shape: tuple[int, int], frame_shape: tuple[int, int]) -> list[np.ndarray]:
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        out = non_max_suppression(preds, self.conf, self.iou, max_det=300)
        boxes = []
        for det in out:
            xyxy = scale_boxes(x_shape, det[:, :4].clone(), frame_shape) if len(det) else det[:, :4]
            boxes.append(xyxy.float().cpu().numpy())
        return boxes


def blur(frame: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    return anonymize_image(frame, xyxy, "blur", enlarge=1.2, inplace=True)


def blur_gpu(model: Model, raw: Any, boxes: list[np.ndarray], enlarge: float = 1.2, strength: float = 0.5) -> None:
    """The product's blur (``blur_region``: downscale so the kernel is <= 15 px, box filter twice,
    upscale) on frames already on the GPU, ``raw`` ``(B, H, W, 3)`` uint8, in place.

    Timing only: a candidate for "blur on the GPU where it pays"; the product blurs on the CPU.
    """
    import torch.nn.functional as F

    def odd(n: float) -> int:
        k = max(3, round(n))
        return k if k % 2 else k + 1

    _, H, W, _ = raw.shape
    for i, xyxy in enumerate(boxes):
        for x1, y1, x2, y2 in np.asarray(xyxy, np.float32).reshape(-1, 4).tolist():
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * enlarge / 2, (y2 - y1) * enlarge / 2
            X1, Y1 = max(0, int(np.floor(cx - hw))), max(0, int(np.floor(cy - hh)))
            X2, Y2 = min(W, int(np.ceil(cx + hw))), min(H, int(np.ceil(cy + hh)))
            h, w = Y2 - Y1, X2 - X1
            if h < 2 or w < 2:
                continue
            region = raw[i, Y1:Y2, X1:X2].permute(2, 0, 1)[None].float()
            kw, kh = odd(w * strength), odd(h * strength)
            scale = min(1.0, 15.0 / max(kw, kh))
            small = F.interpolate(region, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
            ks = (odd(kh * scale), odd(kw * scale))
            for _ in range(2):
                ph, pw = min(ks[0] // 2, small.shape[2] - 1), min(ks[1] // 2, small.shape[3] - 1)
                padded = F.pad(small, (pw, pw, ph, ph), mode="reflect") if ph or pw else small
                small = F.avg_pool2d(padded, (2 * ph + 1, 2 * pw + 1), stride=1)
            out = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
            raw[i, Y1:Y2, X1:X2] = out[0].permute(1, 2, 0).round().clamp(0, 255).to(raw.dtype)


def serial(model: Model, clip: Path, out: Path, gts: list[np.ndarray], batch: int) -> dict[str, Any]:
    """Each stage timed alone; shares of the total."""
    import cv2

    t: dict[str, float] = dict.fromkeys((*STAGES, "blur_gt", "letterbox_gpu", "blur_gpu_gt"), 0.0)
    start = time.perf_counter()
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    t["decode"] = time.perf_counter() - start
    if not frames:
        raise RuntimeError(f"OpenCV decoded no frame of {clip}")
    h, w = frames[0].shape[:2]
    n_boxes = 0
    for i in range(0, len(frames), batch):
        chunk = frames[i : i + batch]
        s = time.perf_counter()
        x = model.letterbox_cpu(chunk)
        model.sync()
        t["letterbox"] += time.perf_counter() - s
        s = time.perf_counter()
        xg = model.letterbox_gpu(chunk)
        model.sync()
        t["letterbox_gpu"] += time.perf_counter() - s
        del xg
        s = time.perf_counter()
        preds = model.infer(x)
        model.sync()
        t["inference"] += time.perf_counter() - s
        s = time.perf_counter()
        boxes = model.nms(preds, tuple(x.shape[2:]), (h, w))
        t["nms"] += time.perf_counter() - s
        n_boxes += sum(len(b) for b in boxes)
        gt_copies = [f.copy() for f in chunk[: len(chunk)]]
        s = time.perf_counter()
        for f, b in zip(chunk, boxes):
            blur(f, b)
        t["blur"] += time.perf_counter() - s
        s = time.perf_counter()
        for f, g in zip(gt_copies, gts[i : i + batch]):
            blur(f, g)
        t["blur_gt"] += time.perf_counter() - s
        raw = model.torch.from_numpy(np.stack(chunk)).to(model.device)  # letterbox_gpu uploads these anyway
        model.sync()
        s = time.perf_counter()
        blur_gpu(model, raw, gts[i : i + batch])
        raw.cpu().numpy()  # encode needs the frames back on the host
        t["blur_gpu_gt"] += time.perf_counter() - s
        del raw
    s = time.perf_counter()
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    t["encode"] = time.perf_counter() - s
    n = len(frames)
    total = sum(t[k] for k in STAGES)
    total_gt = total - t["blur"] + t["blur_gt"]
    return {
        "frames": n,
        "input_shape": [int(v) for v in model.shape(h, w)],
        "boxes_per_frame": round(n_boxes / n, 2),
        "gt_boxes_per_frame": round(sum(len(g) for g in gts[:n]) / n, 2),
        "ms_per_frame": {k: round(1000 * v / n, 3) for k, v in t.items()},
        "share": {k: round(t[k] / total, 3) for k in STAGES},
        "share_with_gt_blur": {k: round((t["blur_gt"] if k == "blur" else t[k]) / total_gt, 3) for k in STAGES},
        "frames_per_s": round(n / total, 2),
        "frames_per_s_with_gt_blur": round(n / total_gt, 2),
    }


def overlapped(
    model: Model, clip: Path, out: Path, gts: list[np.ndarray], batch: int, use_gt: bool, blur_threads: int
) -> dict[str, Any]:
    """Decode thread -> letterbox on the GPU + inference + NMS -> blur pool -> encode thread."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    decoded: queue.Queue = queue.Queue(maxsize=4)
    encoded: queue.Queue = queue.Queue(maxsize=8)
    done = object()

    def decode() -> None:
        chunk = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            chunk.append(f)
            if len(chunk) == batch:
                decoded.put(chunk)
                chunk = []
        if chunk:
            decoded.put(chunk)
        decoded.put(done)

    def encode() -> None:
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
        while (item := encoded.get()) is not done:
            for f in item.result():
                writer.write(f)
        writer.release()

    def blur_chunk(chunk: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        return [blur(f, b) for f, b in zip(chunk, boxes)]

    pool = ThreadPoolExecutor(max_workers=blur_threads)
    start = time.perf_counter()
    threads = [threading.Thread(target=decode, daemon=True), threading.Thread(target=encode, daemon=True)]
    for th in threads:
        th.start()
    n = 0
    while (chunk := decoded.get()) is not done:
        x = model.letterbox_gpu(chunk)
        boxes = model.nms(model.infer(x), tuple(x.shape[2:]), (h, w))
        if use_gt:
            boxes = gts[n : n + len(chunk)]
        n += len(chunk)
        encoded.put(pool.submit(blur_chunk, chunk, boxes))
    encoded.put(done)
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    pool.shutdown()
    cap.release()
    return {"frames": n, "seconds": round(elapsed, 3), "frames_per_s": round(n / elapsed, 2), "gt_boxes": use_gt}


def product_path(clip: Path, out: Path, weights: Path, device: str, batch: int, imgsz: int) -> dict[str, Any]:
    """``pyroblur.anonymize.anonymize_path`` on the clip (PyAV in process), whole-call frames/s."""
    try:
        import av  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - no PyAV: say so, do not fail
        return {"skipped": f"no PyAV for pyroblur's video path (fetch_gpu_wheels.sh --av): {type(exc).__name__}: {exc}"}
    try:
        from pyroblur.anonymize import AnonymizeOptions, anonymize_path

        options = AnonymizeOptions(weights=weights, device=device, batch_size=batch, imgsz=imgsz, progress=False)
        start = time.perf_counter()
        report = anonymize_path(clip, out, options)
        elapsed = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - record what failed; the other figures still stand
        return {"error": f"{type(exc).__name__}: {exc}"}
    frames = sum(r.frames for r in report.processed)
    return {
        "frames": frames,
        "seconds": round(elapsed, 3),
        "frames_per_s": round(frames / elapsed, 2) if elapsed else None,
        "boxes": sum(r.boxes for r in report.processed),
        "options": {"batch_size": batch, "imgsz": imgsz, "device": device},
    }


def guarded(fn: Any, *args: Any) -> dict[str, Any]:
    """``fn``'s result, or its error as a result: one failed measurement keeps the others."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, traceback in the log
        log.exception("%s failed", fn.__name__)
        return {"error": f"{type(exc).__name__}: {exc}"[:3000]}


def save(result: dict[str, Any], out: Path | None) -> str:
    """Write what is measured so far (a run cut short keeps it); return the JSON text."""
    text = json.dumps(result, indent=2, default=str)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="trained .pt; default: --model with random weights")
    p.add_argument("--model", default="yolo11l.yaml", help="model .yaml used when no --weights")
    p.add_argument("--resolutions", default="1280x720,1920x1080", help="WxH list, comma separated")
    p.add_argument("--frames", type=int, default=600, help="frames per clip (1080p clips get half)")
    p.add_argument("--batch", type=int, default=32, help="frames per forward pass")
    p.add_argument("--imgsz", type=int, default=640, help="detector input, longest side in pixels")
    p.add_argument("--device", default="auto")
    p.add_argument("--fp32", action="store_true", help="no FP16 on CUDA")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--blur-threads", type=int, default=None, help="default: the host's usable cores")
    p.add_argument("--skip-product", action="store_true", help="skip pyroblur's own anonymize_path run")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    device = resolve_device(args.device)
    half = device.startswith("cuda") and not args.fp32
    with tempfile.TemporaryDirectory(prefix="pyroblur-gpu-anon-") as tmp:
        work = Path(tmp)
        weights = args.weights or untrained_weights(args.model, work / "model.pt", imgsz=args.imgsz)
        model = Model(weights, device, half, args.imgsz, args.conf, args.iou)
        result: dict[str, Any] = {
            "args": {
                "weights": str(args.weights) if args.weights else f"{args.model} (random weights)",
                "batch": args.batch,
                "imgsz": args.imgsz,
                "half": model.half,
                "conf": args.conf,
                "codec": "mp4v (OpenCV) for decode/encode stages",
            },
            "environment": environment(device),
            "target": {"frames_per_s_1280x720": 200},
            "runs": {},
        }
        for res in args.resolutions.split(","):
            w, h = (int(v) for v in res.lower().split("x"))
            frames = args.frames if w * h <= 1280 * 720 else max(1, args.frames // 2)
            clip = work / f"clip-{w}x{h}.mp4"
            log.info("%s: generating %d frames", res, frames)
            gts = make_clip(clip, w, h, frames)
            # warm-up: cuDNN autotuning, allocator, lazy imports
            warm = [np.zeros((h, w, 3), np.uint8)] * min(args.batch, frames)
            for _ in range(3):
                x = model.letterbox_gpu(warm)
                model.nms(model.infer(x), tuple(x.shape[2:]), (h, w))
            model.sync()
            run: dict[str, Any] = {"serial": guarded(serial, model, clip, work / "serial.mp4", gts, args.batch)}
            threads = args.blur_threads or host_cores()
            run["overlapped"] = guarded(overlapped, model, clip, work / "overlap.mp4", gts, args.batch, False, threads)
            run["overlapped_gt_boxes"] = guarded(
                overlapped, model, clip, work / "overlap-gt.mp4", gts, args.batch, True, threads
            )
            if not args.skip_product:
                out_dir = work / f"product-{w}x{h}"
                run["pyroblur"] = product_path(clip, out_dir / clip.name, weights, device, args.batch, args.imgsz)
            result["runs"][res] = run
            save(result, args.out)
            log.info("%s: %s", res, json.dumps({k: v.get("frames_per_s") for k, v in run.items()}))
    print(save(result, args.out))
    return result


if __name__ == "__main__":
    main()
