"""Shared fixtures: an isolated data root, FiftyOne database and a real Prefect API server."""

from __future__ import annotations

import os
import signal
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


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True``: TERM its group, then KILL."""
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


def start_mongod(dbpath: Path, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """FiftyOne's bundled mongod on 127.0.0.1 and a free port, data in ``dbpath``; returns the
    process (its own session: :func:`stop_group` stops it) and its URI."""
    import importlib.util

    binary = Path(importlib.util.find_spec("fiftyone").origin).parent / "db" / "bin" / "mongod"
    dbpath.mkdir(parents=True)
    port = free_port()
    log_path = dbpath.parent / f"{dbpath.name}-mongod.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(binary), "--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mongod exited: {log_path.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    stop_group(proc)
    pytest.fail(f"mongod did not listen on {port} in {timeout} s; see {log_path}")


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own data root, Prefect home and FiftyOne database.

    The database is a mongod of the session's own (``FIFTYONE_DATABASE_URI``), stopped at the
    end, unless ``FIFTYONE_DATABASE_URI`` is set already (then a unique database name there,
    dropped at the end). Not FiftyOne's own database service: it is shared by every FiftyOne
    process of the user whatever their database folder (a new process attaches to the one
    running), so a temporary folder of ours would serve the user's other FiftyOne processes
    while the tests run, and the user's would serve the tests.
    """
    base = tmp_path_factory.mktemp("session")
    db_name = f"pyroblur-test-{uuid.uuid4().hex[:8]}"
    mongod = None
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    if not uri:
        mongod, uri = start_mongod(base / "mongo")
    env = {
        "FIFTYONE_DATABASE_URI": uri,
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
        # two test processes train at once on 2 cores: one torch thread each (more threads than
        # free cores made CPU training 4x slower; pyroblur.core.devices.cpu_training_threads)
        "PYROBLUR_CPU_THREADS": "1",
        "YOLO_CONFIG_DIR": str(base / "ultralytics"),
        "MLFLOW_TRACKING_URI": "",  # each data root's embedded SQLite store, never a user's server
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if "fiftyone" in sys.modules:  # imported while collecting: its config was read already
        import fiftyone as fo

        fo.config.database_uri, fo.config.database_name = uri, db_name
    try:
        yield base
    finally:
        if "fiftyone" in sys.modules:
            try:
                import fiftyone as fo

                fo.core.odm.database.get_db_conn().client.drop_database(db_name)
                fo.core.odm.database._disconnect()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        if mongod is not None:
            stop_group(mongod)
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


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """An untrained YOLO11n saved as a .pt: enough for the CLI to load a model
    (the hostile-input and failure tests run the real CLI with it)."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("model") / "yolo11n-untrained.pt"
    YOLO("yolo11n.yaml").save(str(path))
    return path


#: Fixtures that start a whole stack of servers: every test file that uses one runs in the same
#: xdist group, so that each pytest-xdist worker builds it at most once (one worker in practice).
_SHARED_STACKS = ("ops_stack",)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n N --dist loadgroup`` (what ``make test`` runs).

    A test file is one group, so its module fixtures are built once; files that use a shared
    stack (``ops_stack``) form one group together. The groups that take longest (the stack's,
    then files with ``slow`` tests) are put first: xdist hands groups out in order, and a long
    group handed out last would leave the other worker idle at the end. Without xdist the marks
    are inert and only the order changes.
    """
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def weight(name: str) -> int:
        tests = files[name]
        if any(f in t.fixturenames for t in tests for f in _SHARED_STACKS):
            return 0
        return 1 if any(t.get_closest_marker("slow") for t in tests) else 2

    ordered: list[pytest.Item] = []
    for name in sorted(files, key=weight):  # stable: collection order within a weight
        group = "shared-stack" if weight(name) == 0 else name
        for item in files[name]:
            item.add_marker(pytest.mark.xdist_group(group))
            ordered.append(item)
    items[:] = ordered
