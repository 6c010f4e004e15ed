"""The pipeline's benchmark stage on a GPU: speed, FP16 vs FP32 parity, ONNX parity; JSON out.

Runs :func:`pyroblur.evaluation.benchmark.benchmark` (what the Prefect ``benchmark`` task runs:
accuracy on the test split, ultralytics' validator, ms/image at batch 1 and images/s at batch 32,
FP16 on CUDA, ONNX export and box parity) on a synthetic test split, then compares FP32 and FP16
predictions of the same weights box by box (:func:`~pyroblur.evaluation.benchmark.box_parity`:
same class, IoU >= 0.9) and measures FP32 speed for comparison.

Parity at ``conf >= 0.25`` (what anonymization uses) is vacuous for an untrained model (no box
reaches it), so it is also reported at 0.05 with the number of reference boxes behind each figure.

Examples::

    .venv/bin/python benchmarks/gpu_benchmark.py --device cpu --model yolo11n.yaml --imgsz 64 \\
        --images 8 --speed-images 4                          # CPU smoke run
    python3 benchmarks/gpu_benchmark.py --weights best.pt --out gpu-results/benchmark.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import environment, untrained_weights, write_synthetic_yolo  # noqa: E402

from pyroblur.core.devices import resolve_device  # noqa: E402

log = logging.getLogger("gpu_benchmark")


def parity(ref: list, other: list, min_conf: float) -> dict[str, Any]:
    from pyroblur.evaluation.benchmark import box_parity

    n = sum(int((d.confidence >= min_conf).sum()) for d in ref)
    return {"min_conf": min_conf, "reference_boxes": n, "box_parity": round(box_parity(ref, other, min_conf), 4)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="trained .pt; default: --model with random weights")
    p.add_argument("--model", default="yolo11l.yaml")
    p.add_argument("--data", type=Path, default=None, help="YOLO data.yaml with a test split; default: synthetic")
    p.add_argument("--images", type=int, default=200, help="synthetic test images")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--speed-images", type=int, default=50, help="images timed at batch 1")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-onnx", dest="onnx", action="store_false")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from pyroblur.config import BenchmarkConfig
    from pyroblur.evaluation.benchmark import benchmark, load_yolo_split, measure_speed, predict, score

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="pyroblur-gpu-bench-") as tmp:
        work = Path(tmp)
        weights = args.weights or untrained_weights(args.model, work / "model.pt", imgsz=args.imgsz)
        data_yaml = args.data or write_synthetic_yolo(work / "data", 8, 8, args.images, size=args.imgsz, seed=1)
        cfg = BenchmarkConfig(device=device, speed_images=args.speed_images, onnx=args.onnx)
        start = time.perf_counter()
        manifest, images, preds_stage = benchmark(weights, data_yaml, args.imgsz, cfg, work / "report", "gpu")
        stage_s = time.perf_counter() - start
        result: dict[str, Any] = {
            "args": {
                "weights": str(args.weights) if args.weights else f"{args.model} (random weights)",
                "imgsz": args.imgsz,
                "test_images": len(images),
                "speed_images": args.speed_images,
            },
            "environment": environment(device),
            "stage": {
                "seconds": round(stage_s, 3),
                "device": manifest.device,
                "half": manifest.device != "cpu",
                "ms_per_image_batch1": round(manifest.ms_per_image, 3),
                "images_per_s_batch32": round(manifest.overall["images_per_s_batch32"], 2),
                "map50": manifest.overall["map50"],
                "ultralytics_map50": manifest.overall["ultralytics_map50"],
                "onnx": {k: v for k, v in manifest.onnx.items() if k != "path"},
            },
        }
        test = load_yolo_split(data_yaml, "test")
        fp32 = predict(weights, test.images, args.imgsz, device, cfg.conf, cfg.iou, half=False)
        fp16 = predict(weights, test.images, args.imgsz, device, cfg.conf, cfg.iou, half=device != "cpu")
        m32, _ = score(test.gt, fp32)
        m16, _ = score(test.gt, fp16)
        ms32, ips32 = measure_speed(weights, test.images, args.imgsz, device, args.speed_images, half=False)
        result["fp16_vs_fp32"] = {
            "fp16_active": device != "cpu",
            "parity": [parity(fp32, fp16, c) for c in (0.25, 0.05, 0.01)],
            "parity_reverse": [parity(fp16, fp32, c) for c in (0.25, 0.05, 0.01)],
            "map50": {"fp32": {k: v.map50 for k, v in m32.items()}, "fp16": {k: v.map50 for k, v in m16.items()}},
            "fp32_ms_per_image_batch1": round(ms32, 3),
            "fp32_images_per_s_batch32": round(ips32, 2),
        }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
