"""The smoke run's driver inside the stack (docker/stack.sh smoke runs it in the cpu worker's
container: ``docker-compose exec cpu-worker python /app/docker/stack_smoke.py PHASE``).

Phases, each bounded and failing with what it saw:
  deploy            prefect.yaml's deployments + deployments/setup.py (make deploy's two steps)
  start [SET...]    a run of `train` with configs/demo.yaml (SET: --set overrides), training
                    sent to the gpu pool's train-stage, as `pyroblur trigger train` does
  wait-checkpoint   the child run is Running on the gpu pool and its first checkpoint exists
  wait-crashed      after the gpu worker was killed: the child Crashed (no heartbeat), the
                    parent Failed naming GpuStageError, no run of the gpu pool still active
  retry             the UI's Retry on the parent: Completed, the new child resumed training from
                    the killed one's checkpoint, a champion promoted
  sample-image      a JPEG of a real photo with a face (scikit-image's astronaut) on stdout
  check [--same-as-before]  the champion (verified weights) and the FiftyOne dataset; with the
                    flag, both must equal what the previous `check` recorded

State between phases lies on the shared data volume (/data/pyroblur/stack-smoke/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

CODE = Path(os.environ.get("PYROBLUR_CODE_DIR", "/app"))
sys.path.insert(0, str(CODE))
API = os.environ["PREFECT_API_URL"].rstrip("/")
AUTH = tuple(os.environ["PREFECT_API_AUTH_STRING"].split(":", 1))
STATE = Path(os.environ.get("PYROBLUR_DATA_DIR", "/data/pyroblur")) / "stack-smoke"
CONFIG = CODE / "configs" / "demo.yaml"
DATASET = "pyroblur-demo"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ACTIVE = ["RUNNING", "PENDING", "CANCELLING"]
SILENCE_S = 90  # the silent-run automation's window (deploy phase)


def log(msg: str) -> None:
    print(f"  [smoke] {msg}", file=sys.stderr, flush=True)


def call(method: str, path: str, body: Any = None) -> Any:
    r = requests.request(method, f"{API}{path}", json=body, auth=AUTH, timeout=60)
    if not r.ok:
        raise SystemExit(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}")
    return r.json() if r.content else None


def until(what: str, check: Any, timeout: float, every: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"{what}: not within {timeout:g} s")


def saved() -> dict[str, Any]:
    path = STATE / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save(**values: Any) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "run.json").write_text(json.dumps({**saved(), **values}, indent=1))


def run(flow_run_id: str) -> dict[str, Any]:
    return call("GET", f"/flow_runs/{flow_run_id}")


def children(parent_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}, "sort": "START_TIME_ASC"}
    return call("POST", "/flow_runs/filter", body)


def log_text(flow_run_id: str) -> str:
    lines: list[str] = []
    while True:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(lines)}
        page = call("POST", "/logs/filter", {**body, "sort": "TIMESTAMP_ASC"})
        lines += [entry["message"] for entry in page]
        if len(page) < 200:
            return "\n".join(lines)


def state_of(r: dict[str, Any]) -> str:
    s = r.get("state") or {}
    return f"{s.get('type')} ({s.get('name')}): {(s.get('message') or '')[:300]}"


def deploy() -> None:
    for cmd in (
        ["prefect", "--no-prompt", "deploy", "--all"],
        [sys.executable, "deployments/setup.py", "--retrain-config", "configs/demo.yaml",
         "--retrain-schedule", "paused", "--silence", str(SILENCE_S)],
    ):  # fmt: skip
        proc = subprocess.run(cmd, cwd=CODE, capture_output=True, text=True, timeout=600)
        tail = (proc.stdout + proc.stderr)[-3000:]
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:3])}: exit {proc.returncode}\n{tail}")
        log(f"{' '.join(cmd[:3])}: ok\n{proc.stdout[-1200:]}")


def start(overrides: list[str]) -> None:
    from tasks.trigger import DEPLOYMENTS, GPU_STAGE, parameters_for

    params = parameters_for(CONFIG, overrides, [], GPU_STAGE)
    dep = call("GET", f"/deployments/name/{DEPLOYMENTS['train']}")
    body = {"parameters": params, "state": {"type": "SCHEDULED"}}
    parent = call("POST", f"/deployments/{dep['id']}/create_flow_run", body)
    save(parent=parent["id"], started=time.time())
    log(f"train run {parent['name']} ({parent['id']}) scheduled on pool cpu, overrides {overrides or 'none'}")


def wait_checkpoint() -> None:
    parent = saved()["parent"]

    def running_child() -> dict[str, Any] | None:
        p = run(parent)
        if p["state"]["type"] in FINAL:
            raise SystemExit(f"the train run ended before its GPU stage ran: {state_of(p)}")
        kids = children(parent)
        return kids[0] if kids and kids[0]["state"]["type"] == "RUNNING" else None

    child = until("the GPU stage's run Running", running_child, 1800)
    if child["work_pool_name"] != "gpu":
        raise SystemExit(f"the GPU stage ran on pool {child['work_pool_name']!r}, not gpu")
    marker = "training run folder: "
    text = until("its training run folder in the log", lambda: marker in (t := log_text(child["id"])) and t, 600)
    run_dir = Path(text.split(marker, 1)[1].split()[0])
    until("the first checkpoint", lambda: (run_dir / "weights" / "last.pt").exists(), 900, every=1)
    save(child=child["id"], run_dir=str(run_dir))
    log(f"child {child['name']} Running on pool gpu, checkpoint {run_dir / 'weights' / 'last.pt'}")


def wait_crashed() -> None:
    s = saved()
    child = until(
        "the child run Crashed",
        lambda: (c := run(s["child"]))["state"]["type"] == "CRASHED" and c,
        SILENCE_S + 300,
    )
    if "no heartbeat" not in (child["state"]["message"] or ""):
        raise SystemExit(f"the child Crashed for another reason: {state_of(child)}")
    log(f"child: {state_of(child)}")
    parent = until("the parent's final state", lambda: (p := run(s["parent"]))["state"]["type"] in FINAL and p, 300)
    message = parent["state"]["message"] or ""
    if parent["state"]["type"] != "FAILED" or "GpuStageError" not in message or "Crashed" not in message:
        raise SystemExit(f"the parent did not fail naming the crashed GPU stage: {state_of(parent)}")
    log(f"parent: {state_of(parent)}")
    active = {"flow_runs": {"state": {"type": {"any_": ACTIVE}}}, "work_pools": {"name": {"any_": ["gpu"]}}}
    left = call("POST", "/flow_runs/filter", active)
    if left:
        raise SystemExit(f"the gpu pool still has active runs: {[state_of(r) for r in left]}")
    log("the gpu pool's slot is free (no active run)")


def retry() -> None:
    from pyroblur.registry.store import resolve_champion

    s = saved()
    body = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry (stack smoke)"}, "force": False}
    call("POST", f"/flow_runs/{s['parent']}/set_state", body)
    parent = until(
        "the retried train run's final state", lambda: (p := run(s["parent"]))["state"]["type"] in FINAL and p, 3600, 5
    )
    if parent["state"]["type"] != "COMPLETED":
        raise SystemExit(f"the retried train run: {state_of(parent)}")
    log(f"parent: {state_of(parent)}")
    resumed = [c for c in children(s["parent"]) if c["id"] != s["child"]]
    if len(resumed) != 1 or resumed[0]["state"]["type"] != "COMPLETED" or resumed[0]["work_pool_name"] != "gpu":
        raise SystemExit(f"expected one new completed GPU stage run, got {[state_of(c) for c in resumed]}")
    text = log_text(resumed[0]["id"])
    expected = f"resuming training from {Path(s['run_dir']) / 'weights' / 'last.pt'}"
    if expected not in text:
        raise SystemExit(f"the retry did not resume from the killed run's checkpoint ({expected!r} not in its log)")
    log(f"retry child {resumed[0]['name']}: {expected}")
    champion = resolve_champion(check_onnx=False)
    if champion is None:
        raise SystemExit(f"no champion after the demo: the parent's message was {state_of(parent)}")
    log(f"champion {champion.model_uri}, weights {champion.weights}")


def sample_image() -> None:
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    sys.stdout.buffer.write(buf.tobytes())


def check(same_as_before: bool) -> None:
    import hashlib

    import fiftyone as fo

    from pyroblur.registry.store import resolve_champion

    champion = resolve_champion(check_onnx=False)
    if champion is None:
        raise SystemExit("no champion in the registry (models:/pyroblur-detector@champion)")
    if DATASET not in fo.list_datasets():
        raise SystemExit(f"FiftyOne dataset {DATASET!r} is missing: {fo.list_datasets()}")
    ds = fo.load_dataset(DATASET)
    record = {
        "champion": champion.model_uri,
        "run_id": champion.entry.run_id,
        "weights_sha256": hashlib.sha256(champion.weights.read_bytes()).hexdigest(),
        "dataset": DATASET,
        "samples": len(ds),
    }
    log(f"check: {json.dumps(record)}")
    path = STATE / "check.json"
    if same_as_before:
        before = json.loads(path.read_text())
        if before != record:
            raise SystemExit(f"changed across down/up: before {before}, now {record}")
        log("champion and dataset are the same as before down/up")
    else:
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))


def main(argv: list[str]) -> None:
    phase, args = (argv[0], argv[1:]) if argv else ("", [])
    if phase == "deploy":
        deploy()
    elif phase == "start":
        start([a for a in args if a != "--set"])
    elif phase == "wait-checkpoint":
        wait_checkpoint()
    elif phase == "wait-crashed":
        wait_crashed()
    elif phase == "retry":
        retry()
    elif phase == "sample-image":
        sample_image()
    elif phase == "check":
        check("--same-as-before" in args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
