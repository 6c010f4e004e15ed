"""Curation throughput on a generated index of small JPEGs; prints JSON.

    .venv/bin/python benchmarks/curation.py [--images 25000] [--size 64] [--workers N]

Generates ``--images`` distinct ``size x size`` JPEGs (smooth random patterns, so their
perceptual hashes differ) with one or two boxes each (10% negatives), plus planted exact copies
and re-encoded near-duplicates, then runs the library's curation exactly as the pipeline's
``curate`` and ``balance_split`` tasks do, into a throw-away FiftyOne dataset in a private
database (its own mongod under a temporary folder unless FIFTYONE_DATABASE_DIR/URI is set).
Reports seconds and images/s per phase, a second (incremental, unchanged) import, and whether
every planted duplicate was found. Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_image(i: int, size: int) -> np.ndarray:
    """A distinct smooth image: an upscaled 8x8 random colour grid plus mild noise (BGR)."""
    rng = np.random.default_rng(i)
    grid = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))


def generate(root: Path, n: int, size: int, plants: int, workers: int) -> tuple[list, list[tuple[str, str, str]]]:
    """Write the images and return (records, planted pairs (kind, original, copy))."""
    from pyroblur.core.records import BoxRecord, SampleRecord

    root.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> SampleRecord:
        path = root / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        ok, buf = cv2.imencode(".jpg", make_image(i, size), [cv2.IMWRITE_JPEG_QUALITY, 90])
        path.write_bytes(buf.tobytes())
        rng = np.random.default_rng(10_000_000 + i)
        boxes = []
        if rng.random() >= 0.1:
            classes = [0] if rng.random() < 0.7 else [1]
            if rng.random() < 0.1:
                classes = [0, 1]
            for c in classes:
                x, y = rng.uniform(0, size * 0.6, 2)
                s = rng.uniform(size * 0.1, size * 0.35)
                boxes.append(BoxRecord(class_id=c, x1=x, y1=y, x2=x + s, y2=y + s * (1 if c == 0 else 0.4)))
        return SampleRecord(filepath=str(path), source="bench", source_split="train", width=size, height=size,
                            boxes=boxes)  # fmt: skip

    with ThreadPoolExecutor(workers) as pool:
        records = list(pool.map(one, range(n)))
    pairs = []
    plant_dir = root / "planted"
    plant_dir.mkdir(exist_ok=True)
    for k in range(plants):
        orig = records[k * 97 % n]
        if k % 2 == 0:  # exact copy
            dest = plant_dir / f"exact_{k}.jpg"
            shutil.copyfile(orig.filepath, dest)
            kind = "exact"
        else:  # re-encoded at another JPEG quality
            dest = plant_dir / f"near_{k}.jpg"
            img = cv2.imread(orig.filepath)
            cv2.imwrite(str(dest), img, [cv2.IMWRITE_JPEG_QUALITY, 60])
            kind = "jpeg_q60"
        records.append(orig.model_copy(update={"filepath": str(dest), "source": "bench_plants"}))
        pairs.append((kind, str(Path(orig.filepath).resolve()), str(dest.resolve())))
    return records, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=25_000)
    ap.add_argument("--size", type=int, default=64, help="image side, pixels")
    ap.add_argument("--plants", type=int, default=40, help="planted duplicates (half exact, half re-encoded)")
    ap.add_argument("--per-class", type=int, default=1000, help="balance.samples_per_class")
    ap.add_argument("--workers", type=int, default=None, help="reader threads (default: 2 x cores, max 8)")
    ap.add_argument("--keep", action="store_true", help="keep the generated images and dataset")
    args = ap.parse_args()

    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="pyroblur-bench-curation-"))
    if not (os.environ.get("FIFTYONE_DATABASE_URI") or os.environ.get("FIFTYONE_DATABASE_DIR")):
        os.environ["FIFTYONE_DATABASE_DIR"] = str(work / "fiftyone-db")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    workers = args.workers or min(8, (os.cpu_count() or 1) * 2)

    t = time.perf_counter()
    records, pairs = generate(work / "images", args.images, args.size, args.plants, workers)
    t_gen = time.perf_counter() - t

    t = time.perf_counter()
    import fiftyone as fo

    fo.list_datasets()  # starts mongod
    t_start = time.perf_counter() - t

    from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
    from pyroblur.curation.importer import run_curation
    from pyroblur.curation.split import balance_and_split

    name = f"bench-curation-{uuid.uuid4().hex[:6]}"
    cfg = CurationConfig(dataset_name=name)
    t = time.perf_counter()
    first_run = run_curation(records, cfg, "bench-1", workers=workers)
    first = first_run.manifest
    t_curate = time.perf_counter() - t
    t = time.perf_counter()
    again = run_curation(records, cfg, "bench-2", workers=workers)
    t_again = time.perf_counter() - t
    t = time.perf_counter()
    sel = balance_and_split(name, BalanceConfig(samples_per_class=args.per_class), SplitConfig(), "bench-split")
    t_balance = time.perf_counter() - t

    ds = fo.load_dataset(name)
    info = {
        fp: (g, dup_of) for fp, g, dup_of in zip(*ds.values(["filepath", "dup_group", "duplicate_of"]), strict=True)
    }
    found = sum(1 for _, a, b in pairs if info[a][0] == info[b][0])
    n = len(records)
    s = first_run.seconds
    rate = lambda secs: round(n / secs, 1) if secs > 0 else None  # noqa: E731
    out = {
        "images": n,
        "image_size_px": args.size,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "seconds": {
            "generate": round(t_gen, 2),
            "fiftyone_start": round(t_start, 2),
            "curate_total": round(t_curate, 2),
            **{f"curate_{k}": v for k, v in s.items()},
            "reimport_unchanged": round(t_again, 2),
            "balance_split": round(t_balance, 2),
        },
        "images_per_s": {
            # import: building the documents and writing them to FiftyOne
            "import": rate(s["import"] + s["open"]),
            # validation: read + sha256 + decode + box checks (perceptual hashing included)
            "validation": rate(s["read"] + s["validate"]),
            # dedup: exact + near-duplicate search and tag/field updates over the whole dataset
            "dedup": rate(s["dedup"]),
            "curate_total": rate(t_curate),
            "reimport_unchanged": rate(t_again),
            "balancing": rate(t_balance),
        },
        "curated": first.num_curated,
        "rejected": first.rejected,
        "exact_duplicates": first.exact_duplicates,
        "near_duplicate_groups": first.duplicate_groups,
        "planted_pairs_found": f"{found}/{len(pairs)}",
        "reimport": again.imported,
        "selected": sel.achieved,
        "total_s": None,
    }
    if not args.keep:
        fo.delete_dataset(name)
        shutil.rmtree(work / "images", ignore_errors=True)
    out["total_s"] = round(time.perf_counter() - t_all, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
