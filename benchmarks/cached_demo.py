"""Where a cached re-run of ``make demo`` spends its time; prints JSON.

    .venv/bin/python benchmarks/cached_demo.py [--runs 3] [--profile out.html]

Runs ``make demo`` (the demo config, the checkout's data root) ``--runs`` times after the data
exist, i.e. with nothing changed, and splits each run's wall time by the timestamps of Prefect's
own log lines: process start until the temporary API server is asked for (imports, config,
preflight of the CLI), the server's start-up, each task's key check until it reports ``Cached``,
and the end (summary, server stop, interpreter exit), with the CPU seconds of the run's
processes and the 1-minute load average before and after each run (on a shared machine the
wall time carries the other jobs). It fails if a task ran instead of being served from the cache. ``--profile`` also runs the CLI once under pyinstrument (if installed)
and writes its HTML report. Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _when(line: str) -> float | None:
    m = STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run() -> dict:
    load_before, cpu_before = os.getloadavg()[0], _children_cpu_s()
    start = time.time()
    proc = subprocess.run(["make", "demo"], cwd=ROOT, capture_output=True, text=True)
    end = time.time()
    # CPU seconds of make, the CLI and its API server (every waited-for descendant): a figure
    # the other jobs on a shared machine do not inflate as much as the wall time.
    cpu_s = round(_children_cpu_s() - cpu_before, 2)
    if proc.returncode != 0:
        raise SystemExit(f"make demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    marks: list[tuple[str, float]] = []
    states: list[str] = []
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        t = _when(line)
        if t is None:
            continue
        if "Starting temporary server" in line:
            marks.append(("server_requested", t))
        elif "Beginning flow run" in line:
            marks.append(("flow_started", t))
        elif "Finished in state" in line and "prefect.task_runs" in line:
            states.append(line.rsplit("Finished in state", 1)[1].strip())
            marks.append((f"task_{len(states)}", t))
        elif "prefect.flow_runs" in line and "Finished in state" in line:
            marks.append(("flow_finished", t))
        elif "Stopping temporary server" in line:
            marks.append(("server_stopping", t))
    phases: dict[str, float] = {}
    prev_name, prev = "process_start", start
    for name, t in marks:
        phases[f"{prev_name} -> {name}"] = round(t - prev, 2)
        prev_name, prev = name, t
    phases[f"{prev_name} -> exit"] = round(end - prev, 2)
    return {
        "wall_s": round(end - start, 2),
        "cpu_s": cpu_s,
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "task_states": states,
        "phases_s": phases,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    not_cached = [s for r in runs for s in r["task_states"] if not s.startswith("Cached")]
    if not_cached:
        raise SystemExit(f"a task ran instead of being cached: {not_cached}")
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_avg_before": os.getloadavg(),
        "runs": runs,
        "best_wall_s": min(r["wall_s"] for r in runs),
    }
    if args.profile:
        cmd = [str(ROOT / ".venv/bin/python"), "-m", "pyinstrument", "-r", "html", "-o", str(args.profile)]
        cmd += ["-m", "flows.cli", "run", "--config", "configs/demo.yaml"]
        env = {**os.environ, "YOLO_OFFLINE": "1", "PREFECT_HOME": str(ROOT / ".prefect")}
        env.setdefault("PYROBLUR_DATA_DIR", str(ROOT / "data"))
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        out["profile"] = str(args.profile)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
