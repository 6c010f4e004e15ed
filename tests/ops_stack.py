"""Pytest plugin of the operations tests: a real Prefect server with one worker per pool and
the deployments of ``prefect.yaml``, plus one completed ``train`` run shared by the tests.

Used with ``pytest_plugins = ["ops_stack"]`` so that the session-scoped stack starts once even
when several test modules need it. Every process it starts runs in its own process group and
is killed (TERM, then KILL) when the session ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import API, start_mongod, stop_group, with_faults
from tiny_config import tiny_config, with_changes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "test-artifacts"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

#: The shared tiny config with its own dataset and seed, training sent to the gpu pool.
TINY_OPS: dict[str, Any] = tiny_config(
    **{
        "name": "tiny-ops",
        "sources.0.seed": 21,
        "curation.dataset_name": "pyroblur-test-ops",
        "orchestration": {"train_deployment": "train_stage/train-stage", "poll_seconds": 1},
        # 60 synthetic images give a handful of val/test images per class
        "balance.min_images_per_class": {"val": 1, "test": 1},
    }
)
#: Seconds without a heartbeat (every 30 s, docker/worker-entrypoint.sh) before the automation
#: of deployments/setup.py sets a run Crashed; short for the tests, 150 s by default.
SILENCE_S = 90


def tiny(**changes: Any) -> dict[str, Any]:
    """A copy of :data:`TINY_OPS` with dotted-key changes, e.g. ``tiny(**{"sources.0.seed": 3})``."""
    return with_changes(TINY_OPS, **changes)


@dataclass
class Stack:
    """Handle on the running stack: the API and helpers the UI's buttons also use."""

    api: str
    logs: dict[str, Path]
    deployments: dict[str, str] = field(default_factory=dict)
    upcoming: list[dict[str, Any]] = field(default_factory=list)
    base: Path = Path()
    env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    retired: list[subprocess.Popen] = field(default_factory=list)
    #: Workers beyond one per pool (e.g. a second gpu worker), by worker name.
    extra_workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    setup_output: str = ""
    started: dict[str, float] = field(default_factory=dict)
    code: Path = ROOT

    def _spawn_worker(self, pool: str, name: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A worker process for ``pool`` named ``name``, started as ``make worker`` starts it
        (docker/worker-entrypoint.sh: cpu limit 2, gpu limit 1 with the GPU job template)."""
        extra = {"WORK_POOL_CONCURRENCY": "2" if pool == "cpu" else "1"}
        if pool == "gpu":
            extra["WORK_POOL_TEMPLATE"] = str(self.base / "gpu-pool.json")
        with log.open("w") as fh:
            return subprocess.Popen(
                ["sh", str(self.code / "docker" / "worker-entrypoint.sh")],
                env={
                    **self.env,
                    **extra,
                    **(env or {}),
                    "WORK_POOL": pool,
                    "WORK_POOL_TYPE": "process",
                    "WORKER_NAME": name,
                },
                cwd=self.code,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_worker(self, pool: str) -> subprocess.Popen:
        """The worker for ``pool`` (see :meth:`_spawn_worker`)."""
        log = self.base / f"worker-{pool}-{len(self.retired)}.log"
        self.logs[f"worker {pool}"] = log
        proc = self._spawn_worker(pool, f"{pool}-test", log)
        self.workers[pool] = proc
        self.started[pool] = time.time() - 1
        return proc

    def wait_for_workers(self, pools: tuple[str, ...] = ("cpu", "gpu"), timeout: float = 120) -> None:
        """Until each pool's worker (the one we started last) has sent a heartbeat since it started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self.workers[p].poll() is not None for p in pools):
                pytest.fail(f"a worker exited early\n{self.worker_logs()}")
            if all(self._beating_since(p, self.started[p]) for p in pools):
                return
            time.sleep(1)
        pytest.fail(f"workers {pools} not up in {timeout} s\n{self.worker_logs()}")

    def _beating_since(self, pool: str, since: float) -> bool:
        r = API.post(f"{self.api}/work_pools/{pool}/workers/filter", json={}, timeout=30)
        if r.status_code == 404:  # the entrypoint has not created the pool yet
            return False
        r.raise_for_status()
        return any(
            w["last_heartbeat_time"] and datetime.fromisoformat(w["last_heartbeat_time"]).timestamp() >= since
            for w in r.json()
        )

    def start_extra_worker(self, pool: str, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Another worker for ``pool`` named ``name`` (e.g. a second gpu worker: one per GPU), as
        ``make worker WORKER_NAME=name`` starts it, with its own ``--limit 1`` on the gpu pool.
        Its entrypoint sets the pool's limit to ``WORK_POOL_LIMIT`` from ``env`` (``make worker
        GPUS=n``), else to its own limit. Stopped by :meth:`stop_extra_worker` or at the
        session's end."""
        log = self.base / f"worker-{name}.log"
        self.logs[f"worker {name}"] = log
        proc = self._spawn_worker(pool, name, log, env)
        self.extra_workers[name] = proc
        return proc

    def wait_for_worker(self, pool: str, name: str, since: float, timeout: float = 120) -> None:
        """Until worker ``name`` of ``pool`` has sent a heartbeat at or after ``since`` (epoch s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.extra_workers.get(name)
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"worker {name} exited early\n{self.worker_logs()}")
            r = API.post(f"{self.api}/work_pools/{pool}/workers/filter", json={}, timeout=30)
            if r.status_code != 404:
                r.raise_for_status()
                if any(
                    w["name"] == name
                    and w["last_heartbeat_time"]
                    and datetime.fromisoformat(w["last_heartbeat_time"]).timestamp() >= since
                    for w in r.json()
                ):
                    return
            time.sleep(1)
        pytest.fail(f"worker {name} of pool {pool} not up in {timeout} s\n{self.worker_logs()}")

    def stop_extra_worker(self, name: str, pool: str = "gpu") -> None:
        """Stop worker ``name`` of ``pool`` (TERM, then KILL, its process group) and remove it
        from the pool, so that later tests see the pool's workers as the stack started them."""
        proc = self.extra_workers.pop(name)
        _stop(proc)
        self.retired.append(proc)
        r = API.delete(f"{self.api}/work_pools/{pool}/workers/{name}", timeout=30)
        if r.status_code != 404:
            r.raise_for_status()

    @contextlib.contextmanager
    def second_gpu_worker(self, name: str) -> Iterator[Stack]:
        """A second gpu worker ``name`` (one per GPU, each --limit 1), started as `make worker
        POOL=gpu GPU=1 GPUS=2` starts it: its entrypoint raises the pool's limit to 2. Stopped,
        and the limit set back to 1, afterwards, so that other tests see the stack as it was."""
        since = time.time() - 1
        self.start_extra_worker("gpu", name, env={"WORK_POOL_LIMIT": "2"})
        try:
            self.wait_for_worker("gpu", name, since)
            assert self.pool_limit("gpu") == 2  # set by the entrypoint before the worker started
            yield self
        finally:
            self.stop_extra_worker(name)
            self.set_pool_limit("gpu", 1)

    def pool_limit(self, pool: str) -> int | None:
        """The work pool's concurrency limit as the server has it."""
        r = API.get(f"{self.api}/work_pools/{pool}", timeout=30)
        r.raise_for_status()
        return r.json()["concurrency_limit"]

    def set_pool_limit(self, pool: str, limit: int) -> None:
        """The work pool's concurrency limit (what ``prefect work-pool set-concurrency-limit`` sets)."""
        r = API.patch(f"{self.api}/work_pools/{pool}", json={"concurrency_limit": limit}, timeout=30)
        r.raise_for_status()

    def kill_worker(self, pool: str) -> list[int]:
        """SIGKILL a worker and everything it started, as when its host dies: its process group
        and its flow runs (Prefect starts those in sessions of their own). Returns the pids."""
        proc = self.workers.pop(pool)
        pids = [proc.pid, *descendants(proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.retired.append(proc)
        return pids

    def get(self, path: str) -> Any:
        r = API.get(f"{self.api}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = API.post(f"{self.api}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def create_run(self, deployment: str, parameters: dict[str, Any]) -> requests.Response:
        """What the UI's Run button sends: POST /deployments/{id}/create_flow_run."""
        return API.post(
            f"{self.api}/deployments/{self.deployments[deployment]}/create_flow_run",
            json={"parameters": parameters, "state": {"type": "SCHEDULED"}},
            timeout=30,
        )

    def worker_logs(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text(errors='replace')[-chars:]}" for n, p in self.logs.items())

    def wait(self, flow_run_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/flow_runs/{flow_run_id}")
            if run["state"] and run["state"]["type"] in FINAL:
                return run
            time.sleep(1)
        pytest.fail(f"flow run {flow_run_id} did not finish in {timeout} s\n{self.worker_logs()}")

    def run(self, deployment: str, parameters: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        r = self.create_run(deployment, parameters)
        assert r.status_code == 201, r.text
        run = self.wait(r.json()["id"], timeout)
        assert run["state"]["type"] == "COMPLETED", (
            f"{deployment}: {run['state']['name']}: {run['state'].get('message')}\n{self.worker_logs()}"
        )
        return run

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})

    def child_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})

    def log_text(self, flow_run_id: str, expect: str = "", timeout: float = 30) -> str:
        """The run's log lines (a run's last lines may reach the API just after its final state)."""
        deadline = time.monotonic() + timeout
        while True:
            body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
            text = "\n".join(entry["message"] for entry in self.post("/logs/filter", body))
            if expect in text or time.monotonic() > deadline:
                return text
            time.sleep(1)


def _take_scheduled_runs(stack: Stack, deployment: str, timeout: float = 90) -> list[dict[str, Any]]:
    """Wait for the server's scheduler to create the deployment's upcoming runs, return them,
    then pause the deployment and delete them: future runs in a shared test server would be the
    "latest" runs other tests look at."""
    dep_id = stack.deployments[deployment]
    body = {"deployments": {"id": {"any_": [dep_id]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not runs and time.monotonic() < deadline:
        runs = stack.post("/flow_runs/filter", body)
        if not runs:
            time.sleep(2)
    API.patch(f"{stack.api}/deployments/{dep_id}", json={"paused": True}, timeout=30).raise_for_status()
    for run in stack.post("/flow_runs/filter", body):
        API.delete(f"{stack.api}/flow_runs/{run['id']}", timeout=30)
    return runs


def snapshot_code(dest: Path) -> Path:
    """Copy the checkout's files (tracked and untracked, not ignored) to ``dest``."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc."""
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


_stop = stop_group


@pytest.fixture(scope="session")
def ops_stack(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Workers for the ``cpu`` and ``gpu`` pools (created as ``make worker`` does) and
    ``prefect deploy --all`` of the repository's prefect.yaml, against ``prefect_server``."""
    base = tmp_path_factory.mktemp("ops")
    code = snapshot_code(base / "code")
    # One MongoDB of the stack's own, as a real deployment has (FIFTYONE_DATABASE_URI): flow-run
    # processes come and go, and one that starts while the last one's private mongod shuts down
    # can find the curated dataset missing; FiftyOne's shared per-user mongod can be stopped by
    # another FiftyOne process of the user while the stack runs.
    mongod, mongo_uri = start_mongod(base / "mongo")
    env = {
        **os.environ,  # the session's FiftyOne database name
        "FIFTYONE_DATABASE_URI": mongo_uri,
        # A data root (registry, lineage, result storage) of its own: other tests' champions
        # must not decide whether retrain-weekly sees "unchanged sources".
        "PYROBLUR_DATA_DIR": str(base / "data"),
        "PREFECT_LOCAL_STORAGE_PATH": str(base / "data" / "prefect-results"),
        "PREFECT_API_URL": prefect_server,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # The code the workers run: a copy of the working tree taken now. Cache keys hash the
        # code, so an edit in the checkout while the session runs must not change them
        # between a killed run and its retry.
        "PYROBLUR_CODE_DIR": str(code),
        "PYTHONPATH": with_faults(code),  # the tests' fault-injection hook too (inert unless asked)
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        # Flow runs inherit their worker's GPU pin (the template sets none): none here.
        "CUDA_VISIBLE_DEVICES": "",
    }
    # What the workers' entrypoint must set itself (heartbeats, library logs to the API): the
    # tests check its defaults, not ours.
    for key in (
        "PREFECT_LOGGING_EXTRA_LOGGERS",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
        "PREFECT_RUNNER_HEARTBEAT_FREQUENCY",
    ):
        env.pop(key, None)
    # The GPU template's data root is the containers'; point it at this session's (as `make worker`).
    template = json.loads((ROOT / "deployments" / "gpu-process-pool.json").read_text())
    template["variables"]["properties"]["env"]["default"]["PYROBLUR_DATA_DIR"] = env["PYROBLUR_DATA_DIR"]
    (base / "gpu-pool.json").write_text(json.dumps(template))
    stack = Stack(api=prefect_server, logs={}, base=base, env=env, code=code)
    try:
        for pool in ("cpu", "gpu"):
            stack.start_worker(pool)
        stack.wait_for_workers()
        deploy = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            env=env,
            cwd=code,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        # make deploy's second step: the silent-run automation, retrain-weekly's config and schedule
        retrain_yaml = base / "retrain.yaml"
        retrain_yaml.write_text(yaml.safe_dump(TINY_OPS))
        setup = subprocess.run(
            [sys.executable, str(code / "deployments" / "setup.py"), "--retrain-config", str(retrain_yaml),
             "--retrain-schedule", "active", "--silence", str(SILENCE_S)],
            env=env, cwd=code, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
        stack.setup_output = setup.stdout
        for dep in stack.post("/deployments/filter", {}):
            stack.deployments[dep["name"]] = dep["id"]
        stack.upcoming = _take_scheduled_runs(stack, "retrain-weekly")
        yield stack
    finally:
        for proc in [*stack.workers.values(), *stack.extra_workers.values(), *stack.retired, mongod]:
            _stop(proc)


@pytest.fixture(scope="session")
def trained_run(ops_stack: Stack) -> dict[str, Any]:
    """One completed run of the ``train`` deployment with the tiny parameters."""
    return ops_stack.run("train", {"config": TINY_OPS}, timeout=300)


# ----------------------------------------------------------------------------- failure webhook


class _Sink(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Sink.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Sink.received = []
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", _Sink.received
    finally:
        server.shutdown()
        server.server_close()
