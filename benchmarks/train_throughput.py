"""Training throughput in images/s, three ways, written as one JSON object.

(a) ``prefect``: the project's Prefect training task (``tasks.pipeline.train``) inside a one-task
    flow, on an ephemeral Prefect server with a throwaway ``PREFECT_HOME`` and
    ``PYROBLUR_DATA_DIR`` (so nothing is cached);
(b) ``yolo_cli``: ultralytics' own ``yolo train`` entry point (``ultralytics.cfg.entrypoint``, in
    a subprocess) with the same arguments the training task passes;
(c) ``step``: the model's forward + loss + backward + optimizer step alone on tensors already on
    the device (no data loading, no augmentation, no validation): the ceiling. Measured twice:
    with the determinism settings of (a)/(b) (``init_seeds(deterministic=...)``) and without.

Two throughputs for (a) and (b):

* ``images_per_s``: training images x epochs / wall seconds of the whole run (process start,
  dataset scan, cache, validation and plots included, as a user sees it);
* ``steady_images_per_s``: from ultralytics' own ``results.csv`` clock (``time``: seconds since
  training began, written at the end of each epoch), epochs 2..N only, so the first epoch's
  warm-up (worker start, cuDNN autotuning, RAM cache fill) is left out. Validation after each
  epoch is included unless ``--no-val``.

Ratios: ``a_over_b`` (target >= 0.98) and ``a_over_c`` (target >= 0.85) from the steady figures,
and the wall-clock ones alongside.

Examples::

    # CPU smoke run (tiny): proves the script end to end
    .venv/bin/python benchmarks/train_throughput.py --device cpu --model yolo11n.yaml --imgsz 64 \\
        --batch 8 --epochs 2 --images 16 --steps 2 --warmup-steps 1

    # GPU host (what benchmarks/gpu_suite.sh runs)
    python3 benchmarks/train_throughput.py --model yolo11l.yaml --imgsz 640 --batch 32 \\
        --epochs 3 --images 3000 --workers auto --cache ram --out gpu-results/train.json

Without ``--data`` the dataset is the project's synthetic generator
(:mod:`pyroblur.data.sources.synthetic`) scaled to ``--images`` images (90% train, 10% val),
rendered in parallel on the host's cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import amp_check_offline, environment, host_workers, write_synthetic_yolo  # noqa: E402

from pyroblur.core.devices import resolve_device  # noqa: E402

log = logging.getLogger("train_throughput")


def count_train_images(data_yaml: Path) -> int:
    """Training images of a YOLO data.yaml (a folder, or a list file of image paths)."""
    import yaml

    from pyroblur.core.io import IMAGE_SUFFIXES

    cfg = yaml.safe_load(data_yaml.read_text())
    base = Path(cfg.get("path") or data_yaml.parent)
    if not base.is_absolute():
        base = (data_yaml.parent / base).resolve()
    entries = cfg["train"] if isinstance(cfg["train"], list) else [cfg["train"]]
    total = 0
    for entry in entries:
        p = base / entry
        if p.is_dir():
            total += sum(1 for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            total += sum(1 for line in p.read_text().splitlines() if line.strip())
    return total


def epoch_clock(run_dir: Path) -> list[float]:
    """Ultralytics' ``time`` column of ``results.csv``: seconds since training began, per epoch."""
    path = Path(run_dir) / "results.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(fh)]
    by_epoch = {int(float(r["epoch"])): float(r["time"]) for r in rows if r.get("epoch") and r.get("time")}
    return [by_epoch[e] for e in sorted(by_epoch)]


def steady(run_dir: Path, n_images: int) -> dict[str, Any]:
    """Images/s over epochs 2..N of ``run_dir`` (first epoch = warm-up); empty with one epoch."""
    clock = epoch_clock(run_dir)
    out: dict[str, Any] = {"epoch_seconds": [round(b - a, 3) for a, b in zip([0.0, *clock], clock)]}
    if len(clock) >= 2:
        out["steady_images_per_s"] = round(n_images * (len(clock) - 1) / (clock[-1] - clock[0]), 3)
    return out


def common_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ultralytics arguments (a) puts in ``TrainConfig.args`` and (b) passes on its command line."""
    extra: dict[str, Any] = {"plots": False, "cache": args.cache, "deterministic": args.deterministic}
    if not args.val:
        extra["val"] = False
    if args.amp is not None:
        extra["amp"] = args.amp
    return extra


def bench_prefect(args: argparse.Namespace, data_yaml: Path, n_images: int, work: Path) -> dict[str, Any]:
    """(a) the project's training task inside a flow, on an ephemeral Prefect server."""
    try:
        from prefect import flow

        from pyroblur.config import TrainConfig
        from pyroblur.manifests import ExportManifest
        from tasks.pipeline import train as train_task
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
        args=common_args(args),
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
        "device": manifest.device,
        "run_dir": manifest.run_dir,
        "weights": manifest.weights,
        **steady(Path(manifest.run_dir), n_images),
    }


def bench_yolo_cli(args: argparse.Namespace, data_yaml: Path, n_images: int, work: Path) -> dict[str, Any]:
    """(b) ultralytics' ``yolo train`` entry point in a subprocess, with (a)'s arguments."""
    run_dir = work / "yolo-cli" / "run"
    train_args: dict[str, Any] = {
        # what pyroblur.training.trainer.train passes, in its order
        "model": args.model,
        "data": data_yaml,
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "device": args.device,
        "workers": args.workers,
        "seed": 0,
        "deterministic": True,
        "patience": args.epochs,
        "project": run_dir.parent,
        "name": run_dir.name,
        "exist_ok": True,
        "verbose": False,
        **common_args(args),
    }
    # `yolo` is a console script for exactly this call; scripts are not on PATH when the wheels
    # were installed with `pip --target`, so call it the same way through the interpreter.
    cmd = [sys.executable, "-c", "from ultralytics.cfg import entrypoint; entrypoint()", "train"]
    cmd += [f"{k}={v}" for k, v in train_args.items()]
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": f"yolo train exited {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    images = n_images * args.epochs
    amp_lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "AMP" in line][:4]
    return {
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 3),
        "images": images,
        "command": "yolo train " + " ".join(cmd[4:]),
        "amp_log": amp_lines,
        **steady(run_dir, n_images),
    }


def bench_step(args: argparse.Namespace, deterministic: bool) -> dict[str, Any]:
    """(c) forward + loss + backward + optimizer step on synthetic tensors already on the device."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import init_seeds

    init_seeds(0, deterministic=deterministic)  # what the trainer does with `deterministic`
    if not deterministic:  # undo a previous call's global settings
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = False  # ultralytics leaves it off
    device = torch.device(args.device)
    model = DetectionModel(args.model, nc=2, verbose=False).to(device).train()
    model.args = get_cfg()  # loss gains (box, cls, dfl) as the trainer sets them
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    amp = device.type == "cuda" and args.amp is not False  # ultralytics trains with AMP on CUDA
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

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup_steps):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {
        "deterministic": deterministic,
        "steps": args.steps,
        "seconds": round(elapsed, 3),
        "images_per_s": round(args.steps * b / elapsed, 3),
        "ms_per_step": round(1000 * elapsed / args.steps, 2),
        "amp": amp,
    }
    if device.type == "cuda":
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch.use_deterministic_algorithms(False)
    return out


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    a, b = result.get("prefect", {}), result.get("yolo_cli", {})
    c = result.get("step", {}).get("same_settings", {})
    out: dict[str, Any] = {}
    if "steady_images_per_s" in a and "steady_images_per_s" in b:
        out["a_over_b"] = round(a["steady_images_per_s"] / b["steady_images_per_s"], 3)
    if "steady_images_per_s" in a and "images_per_s" in c:
        out["a_over_c"] = round(a["steady_images_per_s"] / c["images_per_s"], 3)
    if "images_per_s" in a and "images_per_s" in b:
        out["a_over_b_wall"] = round(a["images_per_s"] / b["images_per_s"], 3)
    if "images_per_s" in a and "images_per_s" in c:
        out["a_over_c_wall"] = round(a["images_per_s"] / c["images_per_s"], 3)
    if "wall_s" in a and "wall_s" in b:
        out["prefect_overhead_s"] = round(a["wall_s"] - b["wall_s"], 3)
    out["targets"] = {"a_over_b": 0.98, "a_over_c": 0.85}
    return out


def guarded(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``fn``'s result, or its error as a result: one failed measurement keeps the others."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, with the traceback in the log
        log.exception("%s failed", fn.__name__)
        return {"error": f"{type(exc).__name__}: {exc}"[:3000]}


def save(result: dict[str, Any], out: Path | None) -> str:
    """Write what is measured so far (a run cut short keeps it); return the JSON text."""
    text = json.dumps(result, indent=2, default=str)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text


def _bool(text: str) -> bool:
    return text.lower() in {"1", "true", "yes", "on"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="yolo11l.yaml", help="model .yaml (from scratch) or local .pt")
    p.add_argument("--imgsz", type=int, default=640, help="training image size, pixels")
    p.add_argument("--batch", type=int, default=32, help="batch size, images")
    p.add_argument("--epochs", type=int, default=3, help=">= 2 for the steady figures")
    p.add_argument("--data", type=Path, default=None, help="YOLO data.yaml; default: synthetic generator")
    p.add_argument("--images", type=int, default=3000, help="synthetic images (90%% train, 10%% val)")
    p.add_argument("--image-size", type=int, default=None, help="synthetic image side, pixels (default: --imgsz)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', '0' or 'cuda:0'")
    p.add_argument("--workers", default="auto", help="dataloader workers; 'auto' = the host's usable cores (<= 16)")
    p.add_argument("--cache", default="ram", choices=["ram", "disk", "false"], help="ultralytics' cache")
    p.add_argument("--no-val", dest="val", action="store_false", help="no validation after each epoch")
    p.add_argument("--deterministic", type=_bool, default=True, help="ultralytics' deterministic (the pipeline: true)")
    p.add_argument("--amp", type=_bool, default=None, help="force ultralytics' amp (default: its own choice)")
    p.add_argument("--steps", type=int, default=20, help="timed steps for (c)")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before (c)")
    p.add_argument("--skip-prefect", action="store_true", help="skip (a)")
    p.add_argument("--skip-cli", action="store_true", help="skip (b)")
    p.add_argument("--skip-step", action="store_true", help="skip (c)")
    p.add_argument("--keep-weights", type=Path, default=None, help="copy (a)'s best.pt here (for gpu_anonymize.py)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    args.workers = host_workers() if args.workers == "auto" else int(args.workers)
    args.cache = False if args.cache == "false" else args.cache
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    args.device = resolve_device(args.device)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="pyroblur-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "yolo-config"))
    # before anything imports prefect (environment() asks its version): a throwaway Prefect home
    # and data root for (a), so nothing is cached from an earlier run
    for key, sub in (("PREFECT_HOME", "prefect-home"), ("PYROBLUR_DATA_DIR", "pyroblur-data")):
        (work / sub).mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(work / sub)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # the temporary API server gets 20 s to start by default; a busy host needs more (its start
    # counts in (a)'s wall time either way, not in the steady figures)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    try:
        t0 = time.perf_counter()
        if args.data is None:
            n_val = max(1, args.images // 10)
            data_yaml = write_synthetic_yolo(
                work / "dataset", args.images - n_val, n_val, 0, size=args.image_size or args.imgsz
            )
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
                "cache": args.cache,
                "val": args.val,
                "deterministic": args.deterministic,
                "amp": args.amp,
                "data": str(args.data) if args.data else f"synthetic generator ({n_images} train images)",
            },
            "dataset_seconds": round(time.perf_counter() - t0, 3),
            "environment": environment(args.device),
            "amp_check": amp_check_offline(),
        }
        if not args.skip_step:
            log.info("(c) forward+backward on tensors already on %s", args.device)
            result["step"] = {
                "free": guarded(bench_step, args, deterministic=False),
                "same_settings": guarded(bench_step, args, deterministic=args.deterministic),
            }
            save(result, args.out)
        if not args.skip_cli:
            log.info("(b) yolo train (ultralytics' entry point)")
            result["yolo_cli"] = guarded(bench_yolo_cli, args, data_yaml, n_images, work)
            save(result, args.out)
        if not args.skip_prefect:
            log.info("(a) Prefect training task")
            result["prefect"] = guarded(bench_prefect, args, data_yaml, n_images, work)
            weights = result["prefect"].get("weights")
            if args.keep_weights and weights:
                args.keep_weights.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(weights, args.keep_weights)
                result["prefect"]["kept_weights"] = str(args.keep_weights)
        result["ratios"] = ratios(result)
        print(save(result, args.out))
        return result
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
