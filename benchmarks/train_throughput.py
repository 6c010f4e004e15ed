"""Training throughput in images/s, three ways, printed as one JSON object.

(a) ``prefect``: the project's Prefect training task (``tasks.pipeline.train``, or
    ``tasks.train.train``) inside a one-task flow, on an ephemeral Prefect server with a
    throwaway ``PREFECT_HOME`` and ``PYROBLUR_DATA_DIR`` (so nothing is cached);
(b) ``yolo_cli``: ultralytics' own ``yolo train`` entry point with the same arguments;
(c) ``step``: the model's forward + loss + backward + optimizer step alone on synthetic tensors
    already on the device (no data loading, no augmentation, no validation): the ceiling.

Images/s of (a) and (b) = training images x epochs / wall seconds of the whole run (process
start, dataset scan, validation and plots included, as a user sees it); ``train_images_per_s``
of (a) uses the time the training function itself reports. The gap between (b) and (c) is
what the data pipeline and validation cost; between (a) and (b), what Prefect costs.

Example (CPU, tiny)::

    .venv/bin/python benchmarks/train_throughput.py --model yolo11n.yaml --imgsz 128 \
        --batch 8 --epochs 1 --device cpu

On a GPU host: ``--model yolo11l.yaml --imgsz 640 --batch 16 --device 0 --data <data.yaml>``.
Without ``--data`` a tiny synthetic YOLO dataset (random boxes on noise) is generated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("train_throughput")
ROOT = Path(__file__).resolve().parents[1]


def make_synthetic_dataset(root: Path, n_train: int, n_val: int, imgsz: int, seed: int = 0) -> Path:
    """Write a YOLO dataset of noise images with 1-4 random boxes (classes 0/1); return data.yaml."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 5))):
                cls = int(rng.integers(0, 2))
                w, h = rng.uniform(0.1, 0.4, 2)
                cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
                x1, y1 = int((cx - w / 2) * imgsz), int((cy - h / 2) * imgsz)
                x2, y2 = int((cx + w / 2) * imgsz), int((cy + h / 2) * imgsz)
                img[y1:y2, x1:x2] = (40, 180, 220) if cls == 0 else (230, 230, 230)
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{i:05d}.jpg"), img)
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: face\n  1: license_plate\n")
    return data_yaml


def count_train_images(data_yaml: Path) -> int:
    """Training images of a YOLO data.yaml (a folder, or a list file of image paths)."""
    import yaml

    cfg = yaml.safe_load(data_yaml.read_text())
    base = Path(cfg.get("path") or data_yaml.parent)
    if not base.is_absolute():
        base = (data_yaml.parent / base).resolve()
    entries = cfg["train"] if isinstance(cfg["train"], list) else [cfg["train"]]
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    total = 0
    for entry in entries:
        p = base / entry
        if p.is_dir():
            total += sum(1 for f in p.rglob("*") if f.suffix.lower() in exts)
        elif p.is_file():
            total += sum(1 for line in p.read_text().splitlines() if line.strip())
    return total


def resolve_device(device: str) -> str:
    """``auto`` -> ``"0"`` with CUDA, else ``"cpu"``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def torch_device(device: str) -> str:
    return "cpu" if device == "cpu" else f"cuda:{device.split(',')[0]}"


def bench_prefect(args: argparse.Namespace, data_yaml: Path, n_images: int, work: Path) -> dict[str, Any]:
    """(a) the project's training task inside a flow, on an ephemeral Prefect server."""
    env_dirs = {"PREFECT_HOME": work / "prefect-home", "PYROBLUR_DATA_DIR": work / "pyroblur-data"}
    for key, path in env_dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(path)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    sys.path.insert(0, str(ROOT))
    try:
        try:
            from tasks.pipeline import train as train_task
        except ImportError:
            from tasks.train import train as train_task  # type: ignore[no-redef]
        from prefect import flow

        from pyroblur.config import TrainConfig
        from pyroblur.manifests import ExportManifest
    except ImportError as exc:
        return {"skipped": f"Prefect training task not importable: {exc}"}

    cfg = TrainConfig(
        model=args.model,
        allow_download=False,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        workers=args.workers,
        patience=args.epochs,
        args={"plots": False},
    )
    dataset = ExportManifest(
        digest=f"benchmark-{time.time_ns()}",  # unique: never a cache hit
        path=str(data_yaml.parent),
        data_yaml=str(data_yaml),
        images={"train": n_images},
    )

    @flow(name="train-throughput", persist_result=False)
    def one_training() -> Any:
        return train_task(cfg, dataset)

    start = time.perf_counter()
    manifest = one_training()
    wall = time.perf_counter() - start
    images = n_images * args.epochs
    return {
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 3),
        "train_s": round(manifest.seconds, 3),
        "train_images_per_s": round(images / manifest.seconds, 3),
        "images": images,
    }


def bench_yolo_cli(args: argparse.Namespace, data_yaml: Path, n_images: int, work: Path) -> dict[str, Any]:
    """(b) ``yolo train`` as a subprocess with the same arguments."""
    exe = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
    if exe is None:
        return {"skipped": "the `yolo` entry point of ultralytics is not installed"}
    cmd = [
        exe,
        "train",
        f"model={args.model}",
        f"data={data_yaml}",
        f"epochs={args.epochs}",
        f"imgsz={args.imgsz}",
        f"batch={args.batch}",
        f"device={args.device}",
        f"workers={args.workers}",
        f"patience={args.epochs}",
        "seed=0",
        "deterministic=True",
        "plots=False",
        f"project={work / 'yolo-cli'}",
        "name=run",
        "exist_ok=True",
    ]
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "yolo-config")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": f"yolo train exited {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    images = n_images * args.epochs
    return {
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 3),
        "images": images,
        "command": " ".join(cmd),
    }


def bench_step(args: argparse.Namespace) -> dict[str, Any]:
    """(c) forward + loss + backward + SGD step on synthetic tensors already on the device."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    device = torch.device(torch_device(args.device))
    model = DetectionModel(args.model, nc=2, verbose=False).to(device).train()
    model.args = get_cfg()  # loss gains (box, cls, dfl) as the trainer sets them
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    amp = device.type == "cuda"  # ultralytics trains with AMP on CUDA by default
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    gen = torch.Generator().manual_seed(0)
    b, s = args.batch, args.imgsz
    boxes_per_image = 4
    n = b * boxes_per_image
    xy = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.2 + 0.05
    batch = {
        "img": torch.rand(b, 3, s, s, generator=gen).to(device),
        "batch_idx": torch.arange(b).repeat_interleave(boxes_per_image).float().to(device),
        "cls": torch.randint(0, 2, (n, 1), generator=gen).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),  # normalized xywh
    }

    def step() -> None:
        with torch.autocast(device_type=device.type, enabled=amp):
            loss, _ = model(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.sum()).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup_steps):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {
        "steps": args.steps,
        "seconds": round(elapsed, 3),
        "images_per_s": round(args.steps * b / elapsed, 3),
        "ms_per_step": round(1000 * elapsed / args.steps, 2),
        "amp": amp,
    }
    if device.type == "cuda":
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def environment(device: str) -> dict[str, Any]:
    import torch
    import ultralytics

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if torch.cuda.is_available() and device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(int(device.split(",")[0]))
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="yolo11l.yaml", help="model .yaml (from scratch) or local .pt")
    p.add_argument("--imgsz", type=int, default=640, help="training image size, pixels")
    p.add_argument("--batch", type=int, default=16, help="batch size, images")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--data", type=Path, default=None, help="YOLO data.yaml; default: synthetic")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or a CUDA index like '0'")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers for (a) and (b)")
    p.add_argument("--synthetic-train", type=int, default=32, help="synthetic training images")
    p.add_argument("--synthetic-val", type=int, default=8, help="synthetic validation images")
    p.add_argument("--steps", type=int, default=10, help="timed steps for (c)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before (c)")
    p.add_argument("--skip-prefect", action="store_true", help="skip (a)")
    p.add_argument("--skip-cli", action="store_true", help="skip (b)")
    p.add_argument("--skip-step", action="store_true", help="skip (c)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    args.device = resolve_device(args.device)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="pyroblur-train-bench-"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "yolo-config"))
    try:
        if args.data is None:
            data_yaml = make_synthetic_dataset(work / "dataset", args.synthetic_train, args.synthetic_val, args.imgsz)
        else:
            data_yaml = args.data.resolve()
        n_images = count_train_images(data_yaml)
        result: dict[str, Any] = {
            "args": {
                "model": args.model,
                "imgsz": args.imgsz,
                "batch": args.batch,
                "epochs": args.epochs,
                "workers": args.workers,
                "data": str(args.data) if args.data else f"synthetic ({n_images} train images)",
            },
            "environment": environment(args.device),
        }
        if not args.skip_step:
            log.info("(c) forward+backward on synthetic tensors")
            result["step"] = bench_step(args)
        if not args.skip_cli:
            log.info("(b) yolo train CLI")
            result["yolo_cli"] = bench_yolo_cli(args, data_yaml, n_images, work)
        if not args.skip_prefect:
            log.info("(a) Prefect training task")
            result["prefect"] = bench_prefect(args, data_yaml, n_images, work)
        cli, pf = result.get("yolo_cli", {}), result.get("prefect", {})
        if "wall_s" in cli and "wall_s" in pf:
            result["prefect_overhead_s"] = round(pf["wall_s"] - cli["wall_s"], 3)
        print(json.dumps(result, indent=2))
        return result
    finally:
        if args.keep:
            log.info("work folder kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
