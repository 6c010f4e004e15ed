"""Pytest plugin of the operations tests: a real Prefect server with one worker per pool and
the deployments of ``prefect.yaml``, plus one completed ``train`` run shared by the tests.

Used with ``pytest_plugins = ["ops_stack"]`` so that the session-scoped stack starts once even
when several test modules need it. Every process it starts runs in its own process group and
is killed (TERM, then KILL) when the session ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import API
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
    }
)


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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ops_stack(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Workers for the ``cpu`` and ``gpu`` pools (created as ``make worker`` does) and
    ``prefect deploy --all`` of the repository's prefect.yaml, against ``prefect_server``."""
    base = tmp_path_factory.mktemp("ops")
    # One mongod for the whole session, as a real deployment has (FIFTYONE_DATABASE_URI): flow-run
    # processes come and go, and one that starts while the last one's private mongod shuts down
    # can find the curated dataset missing (the cache check then rightly recomputes).
    import fiftyone as fo

    fo.list_datasets()
    env = {
        **os.environ,  # the session's isolated FiftyOne database
        # A data root (registry, lineage, result storage) of its own: other tests' champions
        # must not decide whether retrain-weekly sees "unchanged sources".
        "PYROBLUR_DATA_DIR": str(base / "data"),
        "PREFECT_LOCAL_STORAGE_PATH": str(base / "data" / "prefect-results"),
        "PREFECT_API_URL": prefect_server,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYROBLUR_CODE_DIR": str(ROOT),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks,pyroblur",  # e.g. why a cache entry was not used
    }
    # The GPU template's data root is the containers'; point it at this session's (as `make worker`).
    template = json.loads((ROOT / "deployments" / "gpu-process-pool.json").read_text())
    template["variables"]["properties"]["env"]["default"]["PYROBLUR_DATA_DIR"] = env["PYROBLUR_DATA_DIR"]
    template["variables"]["properties"]["env"]["default"]["CUDA_VISIBLE_DEVICES"] = ""
    (base / "gpu-pool.json").write_text(json.dumps(template))
    pools = {
        "cpu": {"WORK_POOL_CONCURRENCY": "2"},
        "gpu": {"WORK_POOL_CONCURRENCY": "1", "WORK_POOL_TEMPLATE": str(base / "gpu-pool.json")},
    }
    procs: list[subprocess.Popen] = []
    stack = Stack(api=prefect_server, logs={})
    try:
        for pool, extra in pools.items():
            log = base / f"worker-{pool}.log"
            stack.logs[f"worker {pool}"] = log
            with log.open("w") as fh:
                procs.append(
                    subprocess.Popen(
                        ["sh", str(ROOT / "docker" / "worker-entrypoint.sh")],
                        env={
                            **env,
                            **extra,
                            "WORK_POOL": pool,
                            "WORK_POOL_TYPE": "process",
                            "WORKER_NAME": f"{pool}-test",
                        },
                        cwd=ROOT,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(p.poll() is None for p in procs) and all(
                API.post(f"{prefect_server}/work_pools/{pool}/workers/filter", json={}, timeout=10).ok
                and API.post(f"{prefect_server}/work_pools/{pool}/workers/filter", json={}, timeout=10).json()
                for pool in pools
            ):
                break
            if any(p.poll() is not None for p in procs):
                pytest.fail(f"a worker exited early\n{stack.worker_logs()}")
            time.sleep(1)
        else:
            pytest.fail(f"workers did not come up in 120 s\n{stack.worker_logs()}")
        deploy = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        for dep in stack.post("/deployments/filter", {}):
            stack.deployments[dep["name"]] = dep["id"]
        stack.upcoming = _take_scheduled_runs(stack, "retrain-weekly")
        yield stack
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture(scope="session")
def trained_run(ops_stack: Stack) -> dict[str, Any]:
    """One completed run of the ``train`` deployment with the tiny parameters."""
    return ops_stack.run("train", {"config": TINY_OPS}, timeout=300)
