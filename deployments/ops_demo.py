"""``make ops-demo``: the operations stack end to end on this host, then everything stopped.

Starts a Prefect server (127.0.0.1, a free port, its own state under ``.ops-demo/``), a worker
for the ``cpu`` pool and one for the ``gpu`` pool (process workers: on a host without a GPU
the gpu pool's flow runs use the CPU), deploys prefect.yaml (``make deploy``'s two steps,
retrain-weekly paused), runs ``pyroblur trigger train`` with the demo config and training sent
to the gpu pool, prints each run's pool and state, and stops every process it started
(workers, their flow runs, the server), checking that none is left.

The data root (``.ops-demo/data``) and FiftyOne database (``.ops-demo/mongo``) are the
demo's own: its champion never lands in your registry. ``OPS_DEMO_SET`` holds ``--set``
overrides (default: 2 epochs, to keep it to a few minutes on a CPU; empty for the full demo).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (flow runs start in their own sessions: a group kill misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def stop(name: str, proc: subprocess.Popen) -> list[int]:
    """TERM the process, its group and every descendant; KILL what is left after 20 s."""
    pids = [proc.pid, *descendants(proc.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in pids if p != proc.pid):
            time.sleep(0.5)
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue
        if not any(alive(p) for p in pids):
            break
    left = [p for p in pids if alive(p)]
    print(f"stopped {name} (pid {proc.pid}{f', {len(pids) - 1} child process(es)' if len(pids) > 1 else ''})")
    return left


def main() -> int:
    base = ROOT / ".ops-demo"
    (base / "prefect-home").mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("OPS_DEMO_PORT") or free_port())
    api = f"http://127.0.0.1:{port}/api"
    data = base / "data"
    env = {
        **os.environ,
        "PREFECT_HOME": str(base / "prefect-home"),
        "PYROBLUR_DATA_DIR": str(data),
        "PREFECT_LOCAL_STORAGE_PATH": str(data / "prefect-results"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "FIFTYONE_DATABASE_NAME": "pyroblur-ops-demo",
        # its own mongod (stopped with the demo), not the one other FiftyOne processes share
        "FIFTYONE_DATABASE_DIR": str(base / "mongo"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",  # its mongod 6.0 is the oldest supported: expected
        "YOLO_OFFLINE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYROBLUR_CODE_DIR": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    keys = ("PYROBLUR_DATA_DIR", "FIFTYONE_DATABASE_NAME", "FIFTYONE_DATABASE_DIR", "FIFTYONE_DATABASE_VALIDATION")
    keys += ("PREFECT_HOME",)
    os.environ.update({k: env[k] for k in keys})
    procs: dict[str, subprocess.Popen] = {}
    logs = base / "logs"
    logs.mkdir(exist_ok=True)

    def start(name: str, cmd: list[str], extra: dict[str, str]) -> None:
        with (logs / f"{name.replace(' ', '-')}.log").open("w") as fh:
            procs[name] = subprocess.Popen(
                cmd, env={**env, **extra}, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        print(f"started {name} (pid {procs[name].pid}), log {logs / (name.replace(' ', '-') + '.log')}")

    rc = 1
    try:
        # One mongod for the demo's processes (flow runs come and go; see docs/operations.md).
        import fiftyone as fo

        fo.list_datasets()
        start(
            "prefect server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            {"PREFECT_API_URL": "", "PREFECT_UI_API_URL": api},
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{api}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or procs["prefect server"].poll() is not None:
                print("the Prefect server did not come up; see its log", file=sys.stderr)
                return 1
            time.sleep(1)
        print(f"Prefect UI: http://127.0.0.1:{port}")
        env["PREFECT_API_URL"] = os.environ["PREFECT_API_URL"] = api
        template = json.loads((ROOT / "deployments" / "gpu-process-pool.json").read_text())
        template["variables"]["properties"]["env"]["default"]["PYROBLUR_DATA_DIR"] = str(data)
        (base / "gpu-process-pool.json").write_text(json.dumps(template))
        for pool, extra in (
            ("cpu", {"WORK_POOL_CONCURRENCY": "2"}),
            ("gpu", {"WORK_POOL_CONCURRENCY": "1", "WORK_POOL_TEMPLATE": str(base / "gpu-process-pool.json")}),
        ):
            start(
                f"{pool} worker",
                ["sh", str(ROOT / "docker" / "worker-entrypoint.sh")],
                {**extra, "WORK_POOL": pool, "WORK_POOL_TYPE": "process", "WORKER_NAME": f"{pool}-ops-demo"},
            )
        deadline = time.monotonic() + 180
        while True:
            up = [
                p
                for p in ("cpu", "gpu")
                if requests.post(f"{api}/work_pools/{p}/workers/filter", json={}, timeout=10).ok
                and requests.post(f"{api}/work_pools/{p}/workers/filter", json={}, timeout=10).json()
            ]
            if len(up) == 2:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                print("the workers did not come up; see their logs", file=sys.stderr)
                return 1
            time.sleep(1)
        print("workers up: cpu-ops-demo (pool cpu), gpu-ops-demo (pool gpu)")
        deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        if deploy.returncode != 0:
            print(deploy.stdout[-2000:] + deploy.stderr[-2000:], file=sys.stderr)
            return 1
        setup = [sys.executable, str(ROOT / "deployments" / "setup.py"), "--retrain-config", "configs/demo.yaml"]
        subprocess.run([*setup, "--retrain-schedule", "paused"], env=env, cwd=ROOT, check=True, timeout=120)
        overrides = shlex.split(os.environ.get("OPS_DEMO_SET", "train.epochs=2"))
        print(f"\n$ pyroblur trigger train --config configs/demo.yaml {' '.join('--set ' + o for o in overrides)}")
        from tasks.trigger import GPU_STAGE, parameters_for, trigger

        params = parameters_for(ROOT / "configs" / "demo.yaml", overrides, [], GPU_STAGE)
        final = trigger("train", params, wait_minutes=float(os.environ.get("OPS_DEMO_WAIT_MINUTES", "40")))
        runs = requests.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        stage = [r for r in runs if r["name"] and r.get("work_pool_name") == "gpu"]
        print(f"\ntrain: {final}; GPU stage on pool: {', '.join(r['work_pool_name'] for r in stage) or 'none'}")
        rc = 0 if final == "COMPLETED" and stage else 1
    finally:
        left: list[int] = []
        for name in ("cpu worker", "gpu worker", "prefect server"):
            if name in procs:
                left += stop(name, procs[name])
        print(f"processes left running: {left or 'none'}")
        rc = rc or (1 if left else 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
