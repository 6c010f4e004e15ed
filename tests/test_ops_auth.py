"""No one in where they don't belong: the Prefect server with an auth string refuses anonymous
requests while an authenticated worker and client work (as the compose stack runs them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AUTH = "pyroblur:test-secret"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def auth_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "PREFECT_UI_API_URL": url,
    }
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).ok:  # health probes need no credentials
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server with auth did not come up in 120 s")
        yield url
    finally:
        _stop(proc)
        log.close()


def test_auth_string_refuses_strangers_and_admits_workers_and_clients(auth_server, tmp_path):
    url = auth_server
    assert requests.post(f"{url}/flows/filter", json={}, timeout=10).status_code == 401
    assert requests.post(f"{url}/flows/filter", json={}, auth=("pyroblur", "wrong"), timeout=10).status_code == 401
    assert requests.post(f"{url}/flows/filter", json={}, auth=tuple(AUTH.split(":")), timeout=10).ok
    base = {**os.environ, "PREFECT_API_URL": url, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    base.pop("PREFECT_API_AUTH_STRING", None)

    # A client without the string is refused, naming what to set; with it, it works.
    trigger = [str(BIN / "pyroblur"), "trigger", "train", "--config", "configs/demo.yaml"]
    proc = subprocess.run(trigger, env=base, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "PREFECT_API_AUTH_STRING" in proc.stderr, proc.stderr
    authed = {**base, "PREFECT_API_AUTH_STRING": AUTH}
    proc = subprocess.run(trigger, env=authed, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such deployment" in proc.stderr, proc.stderr  # got past the auth

    # A worker with the string creates its pool and registers, through docker/worker-entrypoint.sh.
    worker_env = {**authed, "WORK_POOL": "cpu", "WORK_POOL_TYPE": "process", "WORK_POOL_CONCURRENCY": "1",
                  "WORKER_NAME": "cpu-auth", "PYROBLUR_CODE_DIR": str(ROOT), "PREFECT_HOME": str(tmp_path / "w")}  # fmt: skip
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        ["sh", str(ROOT / "docker" / "worker-entrypoint.sh")],
        env=worker_env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and not workers:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            r = requests.post(f"{url}/work_pools/cpu/workers/filter", json={}, auth=tuple(AUTH.split(":")), timeout=10)
            workers = r.json() if r.ok else []
            time.sleep(1)
        assert [w["name"] for w in workers] == ["cpu-auth"], (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        _stop(worker)
        log.close()

    # The same worker without the string cannot even look up its pool.
    anon = {**worker_env, "WORKER_NAME": "cpu-anon"}
    anon.pop("PREFECT_API_AUTH_STRING")
    proc = subprocess.run(["sh", str(ROOT / "docker" / "worker-entrypoint.sh")], env=anon, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-2000:]
