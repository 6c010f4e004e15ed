"""CPU fast start with the champion of record: ``pyroblur anonymize one.jpg out.jpg``.

Runs the real command (the installed ``pyroblur`` script of this venv, or ``python -m
flows.cli`` with ``--module``) ``--runs`` times on one 1280x720 JPEG (skimage's astronaut, a
real photo, resized) against the data root ``PYROBLUR_DATA_DIR`` (default ``./data``: what
``make demo`` promoted), with the default champion (no ``--model``). Prints JSON: wall and CPU
seconds of each run (process start, champion resolution through the MLflow registry's cache,
sha256 checks, model load, detection, blur, audit record), whether ``mlflow``, ``torch``
or ``ultralytics`` were imported (one extra run under ``-X importtime``), and the model the
audit record names (MLflow model version and run).

    PYROBLUR_DATA_DIR=data python benchmarks/fast_start.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _image(path: Path) -> None:
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut()[:, :, ::-1], (1280, 720))
    cv2.imwrite(str(path), img)


def _cmd(module: bool) -> list[str]:
    script = Path(sys.executable).with_name("pyroblur")
    if module or not script.exists():
        return [sys.executable, "-m", "flows.cli"]
    return [str(script)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--module", action="store_true", help="python -m flows.cli instead of the pyroblur script")
    args = parser.parse_args()
    env = {**os.environ, "PYROBLUR_DATA_DIR": os.environ.get("PYROBLUR_DATA_DIR", str(ROOT / "data"))}
    with tempfile.TemporaryDirectory(prefix="fast-start-") as tmp:
        src, out = Path(tmp) / "one.jpg", Path(tmp) / "out.jpg"
        _image(src)
        runs = []
        for _ in range(args.runs):
            out.unlink(missing_ok=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(
                [*_cmd(args.module), "anonymize", str(src), str(out)], env=env, capture_output=True, text=True
            )
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                sys.exit(f"pyroblur anonymize failed ({proc.returncode}): {proc.stderr[-2000:]}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            runs.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
        audit = json.loads(out.with_name(out.name + ".audit.json").read_text())
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "flows.cli", "anonymize", str(src), str(out)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    walls = sorted(r["wall_s"] for r in runs)
    print(
        json.dumps(
            {
                "command": "pyroblur anonymize one.jpg out.jpg (1280x720 JPEG, default champion)",
                "data_dir": env["PYROBLUR_DATA_DIR"],
                "runs": runs,
                "wall_s_median": walls[len(walls) // 2],
                "wall_s_max": walls[-1],
                "imported": {m: m in imported for m in ("mlflow", "torch", "ultralytics", "onnxruntime")},
                "audit_model": audit.get("model"),
                "loadavg": os.getloadavg(),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
