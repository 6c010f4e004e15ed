"""Helpers shared by the GPU benchmark scripts and tests/test_gpu.py (no timing in here).

* :func:`write_synthetic_yolo`: the project's own offline generator
  (:func:`pyroblur.data.sources.synthetic.render_image`) scaled to thousands of images, written as
  a YOLO dataset (train/val/test), rendered in parallel on the host's cores;
* :func:`environment`: what a figure was measured on (GPU model, driver, torch/CUDA/cuDNN,
  ultralytics, CPU cores), the fields docs/benchmarks.md quotes;
* :func:`untrained_weights`: a 2-class ``.pt`` built from a model ``.yaml`` (no download), for
  inference timings where no trained checkpoint is at hand (the compute is the same);
* :func:`host_workers`: dataloader workers from the cores this process may use.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NAMES = {0: "face", 1: "license_plate"}


def host_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_workers(cap: int = 16) -> int:
    """Dataloader workers: one per usable core, at most ``cap`` (ultralytics caps at the cores too)."""
    return max(1, min(host_cores(), cap))


def _render_one(job: tuple[Path, int, int, int, float]) -> None:
    import cv2

    from pyroblur.data.sources.synthetic import render_image

    out_dir, seed, index, size, negative_fraction = job
    img, boxes = render_image(seed, index, size, negative_fraction)
    name = f"{index:06d}"
    if not cv2.imwrite(str(out_dir / "images" / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"could not write image {name}")
    h, w = img.shape[:2]
    lines = []
    for b in boxes:  # pixels -> normalized cx cy w h
        cx, cy = (b.x1 + b.x2) / 2 / w, (b.y1 + b.y2) / 2 / h
        bw, bh = (b.x2 - b.x1) / w, (b.y2 - b.y1) / h
        lines.append(f"{b.class_id} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    (out_dir / "labels" / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def write_synthetic_yolo(
    root: Path,
    n_train: int,
    n_val: int,
    n_test: int = 0,
    size: int = 640,
    seed: int = 0,
    negative_fraction: float = 0.1,
    processes: int | None = None,
) -> Path:
    """Write ``root/{images,labels}/{train,val,test}`` from the synthetic generator; return data.yaml.

    Images are ``size`` x ``size`` BGR JPEGs (quality 90); labels are YOLO txt (class cx cy w h,
    normalized). Image ``i`` of the whole set is the same for the same ``seed``, so the splits are
    disjoint slices of one deterministic sequence.
    """
    root = Path(root)
    jobs = []
    start = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n <= 0:
            continue
        d = root / split
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "labels").mkdir(parents=True, exist_ok=True)
        jobs += [(d, seed, i, size, negative_fraction) for i in range(start, start + n)]
        start += n
    workers = processes or host_cores()
    if workers <= 1 or len(jobs) < 32:
        for job in jobs:
            _render_one(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_render_one, jobs, chunksize=16))
    lines = [f"path: {root}"]
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n > 0:
            lines.append(f"{split}: {split}/images")
    lines += ["names:", "  0: face", "  1: license_plate"]
    data_yaml = root / "data.yaml"
    data_yaml.write_text("\n".join(lines) + "\n")
    return data_yaml


def untrained_weights(model_yaml: str, path: Path, imgsz: int = 640) -> Path:
    """Save a 2-class model built from ``model_yaml`` (random init) as an ultralytics ``.pt``.

    Inference costs the same as a trained model's (same layers, same input); only the number of
    boxes that pass the confidence threshold differs, which NMS and blur timings depend on.
    """
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(model_yaml, nc=len(NAMES), verbose=False)
    model.names = dict(NAMES)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.half(), "train_args": {"imgsz": imgsz, "model": model_yaml}, "epoch": -1}, path)
    return path


def _nvidia_smi() -> dict[str, Any]:
    query = "name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"nvidia_smi": f"unavailable: {type(exc).__name__}"}
    gpus = [dict(zip(query.split(","), (v.strip() for v in line.split(",")))) for line in out.strip().splitlines()]
    return {"nvidia_smi": gpus}


def environment(device: str | None = None) -> dict[str, Any]:
    """Machine, driver and library versions (what each JSON result records)."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores_usable": host_cores(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
    }
    for mod in ("torchvision", "ultralytics", "cv2", "numpy", "prefect", "onnxruntime", "polars"):
        try:
            m = __import__(mod)
            version = getattr(m, "__version__", "?")
            if mod == "polars" and getattr(m, "PYROBLUR_SHIM", False):
                version = f"shim ({version})"
            info[mod] = version
        except Exception as exc:  # noqa: BLE001 - absent or broken: say which
            info[mod] = f"unavailable: {type(exc).__name__}"
    if device is not None:
        info["device"] = device
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_sm_count"] = props.multi_processor_count
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info.update(_nvidia_smi())
    return info


def amp_check_offline() -> dict[str, Any]:
    """What ultralytics' ``check_amp`` decides here (on CUDA; on the CPU it returns False at once).

    Offline (``YOLO_OFFLINE=1`` or no network) it cannot download ``yolo26n.pt``; it catches the
    ``ConnectionError``, logs "checks skipped" and returns True, so training keeps AMP on without
    having compared FP32 and AMP outputs. The returned dict records the decision and the log.
    """
    import logging

    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import LOGGER
    from ultralytics.utils.checks import check_amp

    records: list[str] = []

    class _Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = _Grab()
    LOGGER.addHandler(handler)
    try:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        model = DetectionModel("yolo11n.yaml", nc=2, verbose=False).to(device)
        result = bool(check_amp(model))
    except Exception as exc:  # noqa: BLE001 - record, do not fail the suite
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        LOGGER.removeHandler(handler)
    return {"device": device, "amp": result, "log": [r for r in records if "AMP" in r]}
