"""Benchmark a trained model on the held-out test split: accuracy per class, speed, size."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from pyroblur import CLASSES
from pyroblur.config import BenchmarkConfig
from pyroblur.manifests import BenchmarkManifest, ClassMetrics
from pyroblur.training import resolve_device

log = logging.getLogger(__name__)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def measure_latency(weights: Path, images: list[Path], imgsz: int, device: str) -> float:
    """Mean end-to-end ms per image at batch 1 (pre-process, inference, NMS), after 3 warm-ups."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    if not images:
        return float("nan")
    for p in images[:3]:
        model.predict(str(p), imgsz=imgsz, device=device, verbose=False)
    start = time.perf_counter()
    for p in images:
        model.predict(str(p), imgsz=imgsz, device=device, verbose=False)
    return (time.perf_counter() - start) * 1000 / len(images)


def benchmark(
    weights: Path, data_yaml: Path, imgsz: int, cfg: BenchmarkConfig, out_dir: Path, digest: str
) -> BenchmarkManifest:
    """Evaluate ``weights`` on the ``test`` split of ``data_yaml``; write JSON + markdown reports."""
    import yaml
    from ultralytics import YOLO

    device = resolve_device(cfg.device)
    model = YOLO(str(weights))
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = model.val(
        data=str(data_yaml), split="test", imgsz=imgsz, conf=cfg.conf, iou=cfg.iou, device=device,
        batch=16, plots=False, verbose=False, project=str(out_dir), name="val", exist_ok=True,
    )
    box = metrics.box
    counts = getattr(metrics, "nt_per_class", None)
    img_counts = getattr(metrics, "nt_per_image", None)
    per_class: dict[str, ClassMetrics] = {}
    for idx, name in enumerate(CLASSES):
        pos = list(box.ap_class_index).index(idx) if idx in list(box.ap_class_index) else None
        if pos is None:
            per_class[name] = ClassMetrics(map50=0, map50_95=0, precision=0, recall=0, f1=0, images=0, instances=0)
            continue
        p, r = float(box.p[pos]), float(box.r[pos])
        per_class[name] = ClassMetrics(
            map50=float(box.ap50[pos]),
            map50_95=float(box.ap[pos]),
            precision=p,
            recall=r,
            f1=_f1(p, r),
            images=int(img_counts[idx]) if img_counts is not None else 0,
            instances=int(counts[idx]) if counts is not None else 0,
        )
    data = yaml.safe_load(Path(data_yaml).read_text())
    test_dir = Path(data["path"]) / data.get("test", data["val"])
    images = sorted(test_dir.glob("*.*"))[: cfg.speed_images]
    ms = measure_latency(weights, images, imgsz, device)
    params = int(sum(p.numel() for p in model.model.parameters()))
    size_mb = Path(weights).stat().st_size / 1e6
    overall = {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": float(np.mean(box.p)) if len(box.p) else 0.0,
        "recall": float(np.mean(box.r)) if len(box.r) else 0.0,
    }
    manifest = BenchmarkManifest(
        digest=digest,
        weights=str(weights),
        report_json=str(out_dir / "report.json"),
        report_md=str(out_dir / "report.md"),
        per_class=per_class,
        overall=overall,
        ms_per_image=ms,
        device=device,
        parameters=params,
        size_mb=size_mb,
    )
    (out_dir / "report.md").write_text(to_markdown(manifest))
    (out_dir / "report.json").write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest


def to_markdown(m: BenchmarkManifest, title: str = "PyroBlur benchmark") -> str:
    """The report as a markdown table (also the Prefect artifact)."""
    rows = [
        f"# {title}",
        "",
        f"Weights: `{m.weights}` ({m.parameters / 1e6:.2f} M parameters, {m.size_mb:.1f} MB); device `{m.device}`.",
        "",
        "| class | images | instances | mAP50 | mAP50-95 | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in m.per_class.items():
        rows.append(
            f"| {name} | {c.images} | {c.instances} | {c.map50:.3f} | {c.map50_95:.3f} | "
            f"{c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} |"
        )
    o = m.overall
    rows.append(f"| **all** | | | {o['map50']:.3f} | {o['map50_95']:.3f} | {o['precision']:.3f} | {o['recall']:.3f} | |")
    rows += ["", f"Latency: **{m.ms_per_image:.1f} ms/image** at batch 1 (end to end, {m.device})."]
    if m.promotion:
        rows += ["", f"Promotion: {m.promotion}"]
    return "\n".join(rows) + "\n"


def flat_metrics(m: BenchmarkManifest) -> dict[str, float]:
    """``{"map50": .., "map50_95": .., "face/map50": .., "ms_per_image": ..}`` for registries and logs."""
    out = {k: float(v) for k, v in m.overall.items()}
    for name, c in m.per_class.items():
        for key in ("map50", "map50_95", "precision", "recall", "f1"):
            out[f"{name}/{key}"] = float(getattr(c, key))
    out["ms_per_image"] = float(m.ms_per_image)
    return out
