"""Load test of ``pyroblur serve`` on 127.0.0.1 beside the CLI's throughput on the same images.

One run measures, on the same machine and the same images:

* ``cli``: ``pyroblur anonymize FOLDER OUT`` as a subprocess (wall time, start and model load
  included) and the library's folder loop in this process after the detector is built (what
  the CLI does per image once started: its batch throughput);
* ``server``: ``pyroblur serve`` in a subprocess, ``--requests`` image requests (multipart,
  the same options) at each ``--concurrency`` from a thread pool of keep-alive sessions:
  throughput, p50/p99 latency, the detector's batch sizes (from ``/metrics``), and the server's
  RSS after 100 and after 1000 requests (counted over the whole run, after a warm-up of
  4 x the top concurrency requests at that concurrency, not counted).

    python benchmarks/serve.py                       # tiny random-init champion (smoke model)
    python benchmarks/serve.py --data data           # the champion of `make demo`
    python benchmarks/serve.py --requests 200 --concurrency 1 4 16

Prints one JSON document. Throughput figures depend on the machine and on its other load:
state both with the figures (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` JPEGs at ``size`` (width, height) from real photos that ship with scikit-image,
    each a different crop/flip so no two files are the same bytes."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rgb = photos[i % len(photos)]
        h, w = rgb.shape[:2]
        crop = rgb[i % 7 : h - (i % 5), i % 11 : w - (i % 3)]
        bgr = cv2.resize(np.ascontiguousarray(crop[..., ::-1]), size)
        if (i // len(photos)) % 2:
            bgr = bgr[:, ::-1]
        path = folder / f"img{i:03d}.jpg"
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def cli_throughput(images: list[Path], data: Path, work: Path, opts: dict[str, str]) -> dict:
    """The CLI as a subprocess, and the library's folder loop in-process (detector prebuilt)."""
    env = {**os.environ, "PYROBLUR_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    flags = []
    for k, v in opts.items():
        name = "--" + k.replace("_", "-")
        if v in ("true", "false"):
            flags.append(name if v == "true" else "--no-" + k.replace("_", "-"))
        else:
            flags += [name, v]
    out = work / "cli-out"
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "flows.cli", "anonymize", str(images[0].parent), str(out), *flags, "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])

    os.environ["PYROBLUR_DATA_DIR"] = str(data)
    from pyroblur.anonymize.api import anonymize_path
    from pyroblur.anonymize.models import build_detector, with_resolved_weights
    from pyroblur.serve.params import parse_options

    options = with_resolved_weights(parse_options(opts).model_copy(update={"progress": False}))
    detector = build_detector(options)
    anonymize_path(images[0], work / "warm.jpg", options, detector)
    start = time.perf_counter()
    report = anonymize_path(images[0].parent, work / "lib-out", options, detector)
    steady = time.perf_counter() - start
    assert len(report.processed) == len(images), report.skipped
    return {
        "images": len(images),
        "cli_subprocess_seconds": round(wall, 2),
        "cli_subprocess_images_per_s": round(len(images) / wall, 2),
        "cli_batch_images_per_s": round(len(images) / steady, 2),
    }


def batch_histogram(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=30).text
    out = {}
    for m in re.finditer(r'^pyroblur_batch_frames_(bucket\{le="([^"]+)"\}|count|sum) (\S+)$', text, re.M):
        key = m.group(2) or m.group(1)
        out[key] = float(m.group(3))
    return out


def load(server, images: list[Path], n: int, concurrency: int, opts: dict, counter: dict) -> dict:  # noqa: ANN001
    """``n`` requests at ``concurrency``; returns throughput, latencies and batch sizes."""
    local = threading.local()
    blobs = [(p.name, p.read_bytes()) for p in images]
    lock = threading.Lock()

    def one(i: int) -> float:
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        name, blob = blobs[i % len(blobs)]
        t = time.perf_counter()
        r = session.post(
            f"{server.url}/v1/images", params=opts, files={"file": (name, blob, "image/jpeg")}, timeout=600
        )
        latency = time.perf_counter() - t
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
        with lock:
            counter["n"] += 1
            if counter["n"] % 100 == 0:
                counter.setdefault("curve", {})[counter["n"]] = round(server.rss_mib(), 1)
        return latency

    before = batch_histogram(server.url)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    after = batch_histogram(server.url)
    calls = after["count"] - before["count"]
    frames = after["sum"] - before["sum"]
    cumulative = [(k, after[k] - before.get(k, 0)) for k in after if k not in ("count", "sum", "+Inf")]
    cumulative.sort(key=lambda kv: float(kv[0]))
    buckets, below, low = {}, 0.0, 0.0
    for le, count in cumulative:  # Prometheus buckets are cumulative: calls per range instead
        if count - below:
            buckets[f"{int(low) + 1}-{int(float(le))}"] = int(count - below)
        below, low = count, float(le)
    return {
        "concurrency": concurrency,
        "requests": n,
        "images_per_s": round(n / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        "detector_calls": int(calls),
        "mean_batch_frames": round(frames / calls, 2) if calls else None,
        "detector_calls_by_batch_frames": buckets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data dir with a champion (default: a tiny random-init one)")
    parser.add_argument("--requests", type=int, default=500, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images", type=int, default=32, help="distinct images (cycled)")
    parser.add_argument("--size", default="640x480", help="image size WxH")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10)
    parser.add_argument("--tiles", choices=["true", "false"], default="true")
    parser.add_argument("--work", type=Path, help="keep files here (default: a temporary folder)")
    args = parser.parse_args()

    from serve_tools import Server, make_champion

    work = args.work or Path(tempfile.mkdtemp(prefix="pyroblur-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = args.data.resolve()
    else:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # ultralytics' export log; stdout is the JSON
            data = make_champion(work / "champion")
    w, h = (int(v) for v in args.size.split("x"))
    images = make_images(work / "images", args.images, (w, h))
    opts = {"tiles": args.tiles}
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "data": str(data),
        "images": f"{args.images} JPEGs {args.size} (scikit-image photos)",
        "options": opts,
        "settings": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
    }
    result["cli"] = cli_throughput(images, data, work, opts)
    server = Server(
        data, work / "server.log", max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=256, reload_s=30
    )
    counter: dict = {"n": 0}
    try:
        # warm-up, not counted: the detector, and the threads (and their malloc arenas) that
        # the top concurrency needs, so that RSS growth measures leaks, not the ramp
        load(server, images, 4 * max(args.concurrency), max(args.concurrency), opts, {"n": 0})
        result["server"] = [load(server, images, args.requests, c, opts, counter) for c in args.concurrency]
        curve = counter.get("curve", {})
        result["rss_mib_after_100"] = curve.get(100)
        result["rss_mib_after_1000"] = curve.get(1000)
        result["rss_mib_every_100_requests"] = list(curve.values())
        result["rss_mib_end"] = round(server.rss_mib(), 1)
        result["requests_total"] = counter["n"]
    finally:
        server.stop()
    top = result["server"][-1]["images_per_s"]
    result["ratio_top_concurrency_vs_cli_batch"] = round(top / result["cli"]["cli_batch_images_per_s"], 3)
    if result["rss_mib_after_100"] and result["rss_mib_after_1000"]:
        result["rss_growth_100_to_1000"] = round(result["rss_mib_after_1000"] / result["rss_mib_after_100"] - 1, 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
