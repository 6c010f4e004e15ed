"""Shared fixtures: an isolated data root, FiftyOne database and a real Prefect API server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "test-artifacts"
#: Fault injection for the processes the tests start (tests/faults/sitecustomize.py): on the
#: PYTHONPATH of every child process, inert unless PYROBLUR_INJECT_FAILURE is set.
FAULTS = ROOT / "tests" / "faults"


def with_faults(pythonpath: str | Path | None) -> str:
    """``pythonpath`` with the fault-injection hook's folder appended."""
    return os.pathsep.join(p for p in (str(pythonpath or ""), str(FAULTS)) if p)


os.environ["PYTHONPATH"] = with_faults(os.environ.get("PYTHONPATH"))


def api_session() -> requests.Session:
    """HTTP session for the Prefect API that retries 503s, as Prefect's own client does.

    The server answers 503 for errors it marks retryable (e.g. SQLite busy while two workers
    write); the transaction failed, so sending the request again is safe.
    """
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=6, status_forcelist=[503], allowed_methods=None, backoff_factor=0.5, raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


API = api_session()


def run_flow_script(
    script: str, args: list[str], prefect_server: str
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``script`` (``python -c``) from the repository against ``prefect_server``; fail on a
    non-zero exit, else return the process and the JSON of every ``RESULT <json>`` line it
    printed, in order."""
    import json

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONPATH": with_faults(root)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own data root, Prefect home and FiftyOne database.

    FiftyOne starts its own mongod (or reuses the one already running for this user); a unique
    database *name* keeps test data apart and is dropped at the end. We do not point FiftyOne at
    a temporary database dir: other FiftyOne processes of the user would attach to that mongod
    while the tests run and see their datasets vanish with it.
    """
    base = tmp_path_factory.mktemp("session")
    db_name = f"pyroblur-test-{uuid.uuid4().hex[:8]}"
    env = {
        "PYROBLUR_DATA_DIR": str(base / "data"),
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_LOCAL_STORAGE_PATH": str(base / "data" / "prefect-results"),
        "FIFTYONE_DATABASE_NAME": db_name,
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "YOLO_OFFLINE": "1",
        "PYROBLUR_RETRY_DELAY": "0.2",
        "YOLO_CONFIG_DIR": str(base / "ultralytics"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    if "fiftyone" in sys.modules:
        try:
            import fiftyone as fo

            fo.core.odm.database.get_db_conn().client.drop_database(db_name)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``prefect server start`` on 127.0.0.1 and a free port; stopped afterwards."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    # The UI asks PREFECT_UI_API_URL for its API (default: port 4200, not --port's).
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": "",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        # SQLite on a busy 2-core machine: wait longer for locks, and log what the API retries.
        "PREFECT_SERVER_DATABASE_TIMEOUT": "30",
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
    }
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited early; see {home / 'server.log'}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not become healthy in 120 s")
    try:
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()
