"""Failure model through ``pyroblur run`` against a real Prefect API server (issue 14):
attempts counted by the server, preconditions checked before any stage, and a prompt, clean
stop on SIGTERM with the flow run marked Crashed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import API
from tiny_config import tiny_config

pytestmark = [pytest.mark.integration]


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(api: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    # Own data root: its registry, raw data and partial files are this test's alone.
    return {**os.environ, "PREFECT_API_URL": api, "PYROBLUR_DATA_DIR": str(tmp_path / "data"), **extra}


def _run(tmp_path: Path, api: str, cfg: dict, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "-c", str(_write(tmp_path, cfg)), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(api, tmp_path, **env),
    )


def _last_flow_run(api: str) -> dict | None:
    runs = API.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1}).json()
    return runs[0] if runs else None


def _created_after(run: dict, moment: datetime) -> bool:
    """Whether the API says ``run`` was created after ``moment`` (same machine, same clock)."""
    return datetime.fromisoformat(run["created"]) >= moment


def _task_runs(api: str, flow_run_id: str) -> dict[str, dict]:
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    return {tr["name"].split("-")[0]: tr for tr in API.post(f"{api}/task_runs/filter", json=body).json()}


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one error line (Prefect's own log lines come before and after it)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("pipeline failed: ", "error: "))]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_permanent_error_fails_on_the_first_attempt(tmp_path, prefect_server):
    folder = tmp_path / "coco"
    folder.mkdir()
    (folder / "_annotations.coco.json").write_text('{"images": [')
    source = {"kind": "local", "name": "mine", "path": str(folder), "format": "coco", "class_map": {"face": "face"}}
    proc = _run(tmp_path, prefect_server, tiny_config(sources=[source]), "--until", "download")
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = _error_line(proc)
    assert line.startswith("pipeline failed: ") and str(folder) in line
    flow_run = _last_flow_run(prefect_server)
    download = _task_runs(prefect_server, flow_run["id"])["download"]
    assert download["state"]["name"] == "Failed"
    assert download["run_count"] == 1  # not retried: the same folder fails the same way


def test_transient_error_is_retried(tmp_path, prefect_server):
    cfg = tiny_config(**{"sources.0.seed": 41, "sources.0.num_images": 8})
    proc = _run(tmp_path, prefect_server, cfg, "--until", "download", PYROBLUR_INJECT_FAILURE="download:transient")
    assert proc.returncode == 0, proc.stderr[-3000:]
    download = _task_runs(prefect_server, _last_flow_run(prefect_server)["id"])["download"]
    assert download["state"]["name"] == "Completed" and download["run_count"] == 2


def test_corrupt_registry_stops_the_run_before_any_stage(tmp_path, prefect_server):
    data = tmp_path / "data"
    data.mkdir()
    # the registry of record is the MLflow store (registry.json is only its derived cache)
    (data / "mlflow").mkdir()
    (data / "mlflow" / "mlflow.db").write_bytes(b"not a database" * 100)
    # Temporary files a killed run left behind are removed at the next start; a fresh one
    # (another process may be writing it) is kept.
    stale, fresh = data / "reports" / "r1" / ".report.partial-0123abcd.json", data / ".x.partial-89abcdef.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("{")
    fresh.write_text("x")
    os.utime(stale, (1, 1))
    proc = _run(tmp_path, prefect_server, tiny_config(**{"sources.0.seed": 42}))
    assert not stale.exists() and fresh.exists()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert str(data / "mlflow" / "mlflow.db") in _error_line(proc)
    flow_run = _last_flow_run(prefect_server)
    assert flow_run["state"]["name"] == "Failed"
    assert _task_runs(prefect_server, flow_run["id"]) == {}  # no stage ran, not even download
    assert not (data / "raw").exists()


def _shared_service(proc: psutil.Process) -> bool:
    try:
        text = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "mongod" in text or ("fiftyone" in text and "service" in text)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_sigterm_mid_stage_stops_promptly_and_marks_the_run_crashed(tmp_path, prefect_server):
    # Generating 20000 images takes minutes: the signal always lands mid-stage.
    cfg = tiny_config(**{"sources.0.seed": 43, "sources.0.num_images": 20000, "sources.0.image_size": 256})
    started = time.time()
    created_after = datetime.now(UTC)  # only our run, not an earlier test's
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "-c", str(_write(tmp_path, cfg)), "--until", "download"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(prefect_server, tmp_path),
        start_new_session=True,
    )
    try:
        # Wait (bounded) until the download task runs and has written images.
        deadline = time.monotonic() + 180
        flow_run = None
        raw = tmp_path / "data" / "raw"
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            latest = _last_flow_run(prefect_server)
            if latest and _created_after(latest, created_after) and latest["state"]["name"] == "Running":
                tasks = _task_runs(prefect_server, latest["id"])
                if tasks.get("download", {}).get("state", {}).get("name") == "Running" and any(raw.rglob("*.jpg")):
                    flow_run = latest
                    break
            time.sleep(0.5)
        assert flow_run is not None, "the download stage did not start in 180 s"
        children = psutil.Process(proc.pid).children(recursive=True)

        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=15)  # acceptance: exits within 15 s
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr
    leftovers = [c for c in children if _alive(c) and not _shared_service(c)]
    assert leftovers == [], [c.cmdline() for c in leftovers]
    state = API.get(f"{prefect_server}/flow_runs/{flow_run['id']}").json()["state"]["name"]
    assert state in ("Crashed", "Cancelled"), state
    download = _task_runs(prefect_server, flow_run["id"])["download"]
    assert download["state"]["name"] in ("Crashed", "Cancelled", "Failed")
    print(f"SIGTERM: exited in {stopped_in:.1f} s (run started {time.time() - started:.0f} s before); flow {state}")


@pytest.mark.slow
def test_group_sigterm_without_an_api_server_still_reports_the_crash(tmp_path):
    """No PREFECT_API_URL: Prefect runs a temporary API server. A SIGTERM to the whole process
    group (a terminal's Ctrl+C, ``timeout``, a container stop) used to kill that server first,
    so the run could not report its crash and stayed "Running" while the client retried for
    minutes. The server now runs in its own session and is stopped after the final state."""
    import re

    import requests

    cfg = tiny_config(**{"sources.0.seed": 44, "sources.0.num_images": 20000, "sources.0.image_size": 256})
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYROBLUR_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "run.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "-c", str(_write(tmp_path, cfg)), "--until", "download"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            raw = tmp_path / "data" / "raw"
            while not any(raw.rglob("*.jpg")):  # mid-stage: images are being generated
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the download stage did not start in 180 s"
                time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
    assert "Finished in state Crashed" in text and "Finished in state Running" not in text
    assert "Error logging to API" not in text
    port = re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", text)
    assert port, text[-3000:]
    deadline = time.monotonic() + 30
    while True:  # the temporary server is stopped too (bounded wait)
        try:
            requests.get(f"http://127.0.0.1:{port.group(1)}/api/health", timeout=2)
        except requests.RequestException:
            break
        assert time.monotonic() < deadline, "the temporary API server outlived the run"
        time.sleep(0.5)


def _hostile_zip(kind: str) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("_annotations.coco.json", "{}")
        if kind == "unsafe":
            zf.writestr("../escaped.txt", "outside the target")
        else:  # 256 MiB of zeros packed into about 250 KB: a zip bomb
            with zf.open("zeros.bin", "w") as fh:
                for _ in range(256):
                    fh.write(b"\0" * (1 << 20))
    return buf.getvalue()


@pytest.mark.parametrize(("kind", "expected"), [("unsafe", "contains a '..' component"), ("bomb", "zip bomb")])
def test_hostile_archive_fails_once_named_and_writes_nothing(tmp_path, prefect_server, kind, expected):
    """A downloaded archive that would escape its folder, or expand 1000x, is refused before
    anything is extracted, on the first attempt (an unsafe archive used to be retried 3 times)."""
    from http_fixtures import FileServer

    rev = "0123456789abcdef0123456789abcdef01234567"
    path = f"/datasets/acme/plates/resolve/{rev}/data/train.zip"
    with FileServer() as server:
        server.files[path] = _hostile_zip(kind)
        source = {
            "kind": "hf_coco",
            "name": "plates",
            "repo": "acme/plates",
            "revision": rev,
            "endpoint": server.url(""),
            "splits": ["train"],
            "http": {"retries": 1, "backoff_s": 0.01, "progress": False},
        }
        proc = _run(tmp_path, prefect_server, tiny_config(sources=[source]), "--until", "download")
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = _error_line(proc)
    assert "train.zip" in line and expected in line
    download = _task_runs(prefect_server, _last_flow_run(prefect_server)["id"])["download"]
    assert download["state"]["name"] == "Failed" and download["run_count"] == 1
    raw = tmp_path / "data" / "raw" / "plates"
    written = [p for p in raw.rglob("*") if p.is_file() and "archives" not in p.parts] if raw.exists() else []
    assert written == [] and not (raw / "escaped.txt").exists()  # nothing extracted, nothing escaped
    print(f"{kind}: {line}")


def _without_roboflow(tmp_path: Path, how: str) -> str:
    """A PYTHONPATH entry that makes ``roboflow`` missing (``absent``: blocked in sys.modules,
    as if not installed) or broken (``broken``: importing it fails) in the child process."""
    shim = tmp_path / f"shim-{how}"
    shim.mkdir()
    if how == "absent":
        (shim / "sitecustomize.py").write_text("import sys\nsys.modules['roboflow'] = None\n")
    else:
        (shim / "roboflow").mkdir()
        (shim / "roboflow" / "__init__.py").write_text("raise ImportError('roboflow is broken here (test shim)')\n")
    return str(shim)


def test_missing_package_is_named_before_any_stage(tmp_path, prefect_server):
    source = {"kind": "roboflow", "name": "rf"}
    proc = _run(
        tmp_path, prefect_server, tiny_config(sources=[source]), PYTHONPATH=_without_roboflow(tmp_path, "absent")
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "needs the Python package 'roboflow'" in _error_line(proc)
    assert _task_runs(prefect_server, _last_flow_run(prefect_server)["id"]) == {}


def test_unimportable_package_fails_the_stage_once(tmp_path, prefect_server):
    source = {"kind": "roboflow", "name": "rf"}
    proc = _run(
        tmp_path,
        prefect_server,
        tiny_config(sources=[source]),
        "--until",
        "download",
        PYTHONPATH=_without_roboflow(tmp_path, "broken"),
        ROBOFLOW_API_KEY="not-a-key",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "the roboflow package is needed" in _error_line(proc)
    download = _task_runs(prefect_server, _last_flow_run(prefect_server)["id"])["download"]
    assert download["state"]["name"] == "Failed" and download["run_count"] == 1
