"""``pyroblur serve`` end to end over real HTTP: a server subprocess on a free port, a tiny
promoted champion (its real ONNX export), clips made with ffmpeg.

Image pixels are compared with ``pyroblur anonymize`` on the same file and options; a video
job is followed from queued to completed; a job survives a SIGKILL of the API; every bad
input gets its status code and a JSON error naming the problem, and leaves no temporary file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from serve_tools import CONF, ROOT, Server, make_champion, wait_for, write_clip, write_photo

from pyroblur.anonymize.video import probe_video
from pyroblur.serve.settings import hash_key

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# face_detector yolo: the random model is unproven, so the default (auto) would add CenterFace, and
# at CONF (1e-6) CenterFace returns thousands of boxes per frame (these tests are about serving)
OPTS = {"conf_face": CONF, "conf_plate": CONF, "tiles": "false", "face_detector": "yolo"}
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_champion(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(data, tmp_path_factory):
    srv = Server(data, tmp_path_factory.mktemp("logs") / "server.log", max_batch=8)
    yield srv
    srv.stop()


def _tmp_empty(data: Path, state: str = "serve") -> bool:
    tmp = data / state / "tmp"
    return not any(tmp.iterdir())


def _states(url: str, job_id: str, until: tuple[str, ...], timeout: float) -> list[dict]:
    seen: list[dict] = []

    def done() -> bool:
        r = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10)
        assert r.status_code == 200, r.text
        seen.append(r.json())
        return seen[-1]["state"] in until

    wait_for(done, timeout, f"job {job_id} to reach {until}")
    return seen


def test_openapi_lists_every_endpoint_with_schemas(server) -> None:
    doc = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    expected = {
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/v1/model"),
        ("post", "/v1/images"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs/{job_id}"),
        ("get", "/v1/jobs/{job_id}/result"),
        ("delete", "/v1/jobs/{job_id}"),
    }
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert expected <= found
    for method, path in expected:
        op = doc["paths"][path][method]
        ok = next(str(c) for c in op["responses"] if str(c).startswith("2"))
        assert op["responses"][ok].get("content"), f"{method} {path}: no response schema"
    # every option of the model is a documented query parameter, with its type
    from pyroblur.anonymize.options import AnonymizeOptions
    from pyroblur.serve.params import SERVER_ONLY

    params = {p["name"]: p for p in doc["paths"]["/v1/images"]["post"]["parameters"]}
    for name in set(AnonymizeOptions.model_fields) - SERVER_ONLY:
        assert name in params and params[name]["schema"], name
    assert "weights" not in params  # a server path is not the client's to choose
    assert "multipart/form-data" in doc["paths"]["/v1/images"]["post"]["requestBody"]["content"]
    assert doc["components"]["schemas"]["ErrorResponse"]
    assert requests.get(f"{server.url}/healthz", timeout=10).json()["status"] == "ok"
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    for name in (
        "pyroblur_requests_total",
        "pyroblur_request_seconds",
        "pyroblur_batch_frames",
        "pyroblur_queue_depth",
        "pyroblur_jobs",
    ):
        assert name in metrics, name


def test_image_round_trip_equals_cli(server, data, tmp_path) -> None:
    photo = write_photo(tmp_path / "street.png")
    env = {**os.environ, "PYROBLUR_DATA_DIR": str(data), "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    for mode in ("blur", "mosaic"):
        cli_out = tmp_path / f"cli-{mode}.png"
        cmd = [sys.executable, "-m", "flows.cli", "anonymize", str(photo), str(cli_out), "--mode", mode, "--no-tiles"]
        cmd += ["--conf-face", CONF, "--conf-plate", CONF, "--face-detector", "yolo"]  # as OPTS
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        # multipart for one, raw body for the other
        if mode == "blur":
            with photo.open("rb") as f:
                r = requests.post(
                    f"{server.url}/v1/images", params={**OPTS, "mode": mode}, files={"file": f}, timeout=120
                )
        else:
            r = requests.post(
                f"{server.url}/v1/images",
                params={**OPTS, "mode": mode},
                data=photo.read_bytes(),
                headers={"Content-Type": "image/png"},
                timeout=120,
            )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        served = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        cli = cv2.imread(str(cli_out), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(str(photo), cv2.IMREAD_UNCHANGED)
        assert int(r.headers["x-pyroblur-boxes"]) > 0
        assert not np.array_equal(served, original)  # something was hidden
        assert np.array_equal(served, cli), f"{mode}: served pixels differ from the CLI's"
    # JSON: the same image with its detections and audit record
    r = requests.post(
        f"{server.url}/v1/images", params={**OPTS, "format": "json"}, files={"file": photo.open("rb")}, timeout=120
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    import base64

    served = cv2.imdecode(np.frombuffer(base64.b64decode(doc["image_base64"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(served, cv2.imread(str(tmp_path / "cli-blur.png"), cv2.IMREAD_UNCHANGED))
    assert len(doc["detections"]) == doc["boxes"] > 0
    assert doc["audit"]["model"]["registry"]["gates_passed"] is True
    assert doc["audit"]["input"]["path"] == "street.png"
    cli_audit = json.loads((tmp_path / "cli-blur.png.audit.json").read_text())
    assert doc["audit"]["frames"] == cli_audit["frames"]
    assert doc["audit"]["model"]["sha256"] == cli_audit["model"]["sha256"]
    # requests that arrive together share detector batches: still the CLI's pixels
    from concurrent.futures import ThreadPoolExecutor

    def post(_: int) -> bytes:
        r = requests.post(f"{server.url}/v1/images", params=OPTS, files={"file": photo.open("rb")}, timeout=300)
        assert r.status_code == 200, r.text
        return r.content

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(post, range(16)))
    cli = cv2.imread(str(tmp_path / "cli-blur.png"), cv2.IMREAD_UNCHANGED)
    for content in outputs:
        assert np.array_equal(cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED), cli)
    assert wait_for(lambda: _tmp_empty(data), 10, "temporary uploads to be removed")


class _Callbacks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_video_job_created_running_completed(server, tmp_path) -> None:
    clip = write_clip(tmp_path / "dashcam.mp4", seconds=8)
    source = probe_video(clip)
    hook = HTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        with clip.open("rb") as f:
            r = requests.post(
                f"{server.url}/v1/jobs",
                params={**OPTS, "callback_url": f"http://127.0.0.1:{hook.server_port}/done"},
                files={"file": ("dashcam.mp4", f, "video/mp4")},
                timeout=120,
            )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] in ("queued", "running") and r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["frames_total"] == 200
        seen = _states(server.url, job["id"], ("completed", "failed"), timeout=600)
        states = [s["state"] for s in seen]
        assert states[-1] == "completed", seen[-1]
        assert "running" in states
        done = [s["frames_done"] for s in seen if s["state"] == "running"]
        assert done == sorted(done) and len(set(done)) >= 2, f"progress did not increase: {done}"
        assert any(s["eta_seconds"] is not None for s in seen if s["state"] == "running")
        result = requests.get(f"{server.url}/v1/jobs/{job['id']}/result", timeout=60)
        assert result.status_code == 200
        out = tmp_path / "out.mp4"
        out.write_bytes(result.content)
        info = probe_video(out)
        assert (info.frame_count, info.width, info.height) == (source.frame_count, 320, 240)
        assert info.fps == pytest.approx(source.fps)
        assert info.audio_codecs == source.audio_codecs == ("aac",)
        assert seen[-1]["result"]["frames"] == 200
        wait_for(lambda: _Callbacks.received, 30, "the callback")
        assert _Callbacks.received[-1]["id"] == job["id"] and _Callbacks.received[-1]["state"] == "completed"
    finally:
        hook.shutdown()


def test_cancel_a_running_job(server, data, tmp_path) -> None:
    clip = write_clip(tmp_path / "long.mp4", seconds=60, audio=False)
    r = requests.post(f"{server.url}/v1/jobs", params=OPTS, files={"file": clip.open("rb")}, timeout=120)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    _states(server.url, job_id, ("running",), timeout=120)
    wait_for(
        lambda: requests.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()["frames_done"] > 0, 120, "progress"
    )
    r = requests.delete(f"{server.url}/v1/jobs/{job_id}", timeout=10)
    assert r.status_code == 202 and r.json()["cancel_requested"]
    seen = _states(server.url, job_id, ("cancelled", "completed", "failed"), timeout=120)
    assert seen[-1]["state"] == "cancelled", seen[-1]
    assert seen[-1]["frames_done"] < 1500
    r = requests.get(f"{server.url}/v1/jobs/{job_id}/result", timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_completed"
    folder = data / "serve" / "jobs" / job_id
    assert not any(p.name.startswith("input") for p in folder.iterdir())  # the upload is gone
    assert not any(p.suffix == ".mp4" for p in folder.iterdir())  # no partial output either


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_job_survives_an_api_restart(data, tmp_path, how: str) -> None:
    """SIGKILL (a crash: nothing cleans up) or SIGTERM (a graceful stop mid-job)."""
    own = tmp_path / "data"
    # the registry of record (the MLflow store and its artifacts, registry.json its cache); no jobs
    shutil.copytree(data, own, ignore=shutil.ignore_patterns("serve", "tmp"))
    clip = write_clip(tmp_path / "clip.mp4", seconds=20, audio=True)
    first = Server(own, tmp_path / "first.log")
    try:
        r = requests.post(f"{first.url}/v1/jobs", params=OPTS, files={"file": clip.open("rb")}, timeout=120)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(
            lambda: requests.get(f"{first.url}/v1/jobs/{job_id}", timeout=10).json()["frames_done"] > 0,
            120,
            "the job to start",
        )
    finally:
        first.kill() if how == "kill" else first.stop()
    second = Server(own, tmp_path / "second.log")
    try:
        seen = _states(second.url, job_id, ("completed", "failed", "cancelled"), timeout=600)
        assert seen[-1]["state"] == "completed", seen[-1]
        assert seen[-1]["result"]["frames"] == probe_video(clip).frame_count
        assert "resuming 1 job(s)" in (tmp_path / "second.log").read_text()
        assert requests.get(f"{second.url}/v1/jobs/{job_id}/result", timeout=60).status_code == 200
    finally:
        second.stop()


# ---------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def strict(data, tmp_path_factory):
    """A server with small limits and an API key."""
    srv = Server(
        data,
        tmp_path_factory.mktemp("strict-logs") / "server.log",
        data_dir=data / "serve-strict",  # its own jobs and temporaries
        api_key_hashes=hash_key(KEY),
        max_upload_bytes=2_000_000,
        max_pixels=4_000_000,
        max_video_seconds=20,
        max_jobs_per_key=1,
        max_queue=1,
    )
    yield srv
    srv.stop()


def _post(srv: Server, path: str, key: str | None = KEY, **kw) -> requests.Response:
    headers = kw.pop("headers", {})
    if key is not None:
        headers["X-API-Key"] = key
    return requests.post(f"{srv.url}{path}", headers=headers, timeout=120, **kw)


def _error(r: requests.Response, status: int, code: str, mentions: str = "") -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert mentions in err["message"], err
    return err


def test_api_keys(strict, tmp_path) -> None:
    photo = write_photo(tmp_path / "a.png")
    _error(_post(strict, "/v1/images", key=None, files={"file": photo.open("rb")}), 401, "missing_api_key", "X-API-Key")
    _error(_post(strict, "/v1/images", key="wrong", files={"file": photo.open("rb")}), 403, "invalid_api_key")
    assert _post(strict, "/v1/images", params=OPTS, files={"file": photo.open("rb")}).status_code == 200


def test_bad_images(strict, data, tmp_path) -> None:
    bomb = tmp_path / "bomb.png"
    cv2.imwrite(str(bomb), np.zeros((3000, 3000), np.uint8))  # 9 MP declared, a few KB on disk
    assert bomb.stat().st_size < 100_000
    _error(_post(strict, "/v1/images", files={"file": bomb.open("rb")}), 422, "too_many_pixels", "3000x3000")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    _error(_post(strict, "/v1/images", files={"file": text.open("rb")}), 415, "not_an_image", "notes.jpg")
    _error(
        _post(strict, "/v1/images", data=b"x" * 10, headers={"Content-Type": "application/octet-stream"}),
        415,
        "unknown_type",
    )
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(3_000_000))
    _error(_post(strict, "/v1/images", files={"file": big.open("rb")}), 413, "upload_too_large", "2000000")

    def chunks():  # no Content-Length: the limit must hold on the stream itself
        for _ in range(30):
            yield b"\0" * 100_000

    _error(_post(strict, "/v1/images", params={"filename": "c.jpg"}, data=chunks()), 413, "upload_too_large", "2000000")
    _error(
        _post(strict, "/v1/images", params={"conf_face": "2"}, files={"file": text.open("rb")}),
        422,
        "invalid_option",
        "conf_face",
    )
    _error(
        _post(strict, "/v1/images", params={"classes": "face,cat"}, files={"file": text.open("rb")}),
        422,
        "invalid_option",
        "classes",
    )
    assert wait_for(lambda: _tmp_empty(data, "serve-strict"), 10, "temporary uploads to be removed")


def test_bad_videos_and_job_limits(strict, data, tmp_path) -> None:
    jobs = data / "serve-strict" / "jobs"
    before = set(jobs.iterdir())
    long = write_clip(tmp_path / "long.mp4", seconds=25, fps=5, size="64x64", audio=False)
    _error(_post(strict, "/v1/jobs", files={"file": long.open("rb")}), 422, "video_too_long", "25.0 s")
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\0" * 1000)
    _error(_post(strict, "/v1/jobs", files={"file": fake.open("rb")}), 415, "not_a_video", "fake.mp4")
    photo = write_photo(tmp_path / "p.png")
    _error(_post(strict, "/v1/jobs", files={"file": photo.open("rb")}), 415, "image_not_accepted", "/v1/images")
    assert set(jobs.iterdir()) == before  # refused uploads leave nothing behind
    clip = write_clip(tmp_path / "ok.mp4", seconds=15, audio=False)
    first = _post(strict, "/v1/jobs", params=OPTS, files={"file": clip.open("rb")})
    assert first.status_code == 202, first.text
    _error(_post(strict, "/v1/jobs", files={"file": clip.open("rb")}), 429, "too_many_jobs", "1 queued or running")
    assert len(set(jobs.iterdir()) - before) == 1
    # another key's jobs are not visible
    r = requests.get(f"{strict.url}/v1/jobs/{first.json()['id']}", timeout=10)
    assert r.status_code == 401
    requests.delete(f"{strict.url}/v1/jobs/{first.json()['id']}", headers={"X-API-Key": KEY}, timeout=10)


def test_queue_full_is_503_with_retry_after(strict, data, tmp_path) -> None:
    photo = write_photo(tmp_path / "q.png")
    # a client that starts an upload and stalls holds the only slot (max_queue=1)
    stalled = socket.create_connection(("127.0.0.1", strict.port))
    try:
        stalled.sendall(
            b"POST /v1/images?filename=s.png HTTP/1.1\r\nHost: x\r\nX-API-Key: "
            + KEY.encode()
            + b"\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
            + b"\x89PNG"
        )

        def inflight() -> bool:
            text = requests.get(f"{strict.url}/metrics", timeout=10).text
            return "pyroblur_inflight_requests 1.0" in text

        wait_for(inflight, 30, "the stalled request to be admitted")
        r = _post(strict, "/v1/images", files={"file": photo.open("rb")})
        _error(r, 503, "queue_full", "limit is 1")
        assert r.headers["retry-after"] == "1"
        assert requests.get(f"{strict.url}/healthz", timeout=10).status_code == 200  # no crash
    finally:
        stalled.close()
    wait_for(
        lambda: _post(strict, "/v1/images", params=OPTS, files={"file": photo.open("rb")}).status_code == 200,
        30,
        "the slot to free",
    )
    assert wait_for(lambda: _tmp_empty(data, "serve-strict"), 10, "the stalled upload's temporary file to be removed")


def test_promotion_is_picked_up_without_dropping_requests(data, tmp_path) -> None:
    from serve_tools import promote_another

    # a data root of its own with a champion of its own: a copied MLflow store keeps its
    # experiment's artifact location in the original root, where a new run's files would land
    own = tmp_path / "data"
    own.mkdir()
    promote_another(own, tmp_path / "first", map50_95=0.5)
    photo = write_photo(tmp_path / "p.png")
    srv = Server(own, tmp_path / "server.log")
    try:
        before = requests.get(f"{srv.url}/v1/model", timeout=10).json()
        statuses: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                r = requests.post(f"{srv.url}/v1/images", params=OPTS, files={"file": photo.open("rb")}, timeout=120)
                statuses.append(r.status_code)
                if r.status_code != 200:
                    errors.append(r.text)

        t = threading.Thread(target=client)
        t.start()
        try:
            wait_for(lambda: len(statuses) >= 2, 120, "requests before the promotion")
            new_id = promote_another(own, tmp_path, map50_95=0.9)
            after = wait_for(
                lambda: (m := requests.get(f"{srv.url}/v1/model", timeout=10).json())["version"] == new_id and m,
                120,
                "the promotion to be picked up",
            )
            n = len(statuses)
            wait_for(lambda: len(statuses) >= n + 2, 120, "requests after the promotion")
        finally:
            stop.set()
            t.join(timeout=120)
        assert before["version"] != new_id and before["gates_passed"] is True
        assert after["reloads"] == 1 and after["gates_passed"] is True
        assert set(statuses) == {200}, (statuses, errors[:3])
        r = requests.post(
            f"{srv.url}/v1/images", params={**OPTS, "format": "json"}, files={"file": photo.open("rb")}, timeout=120
        )
        assert r.json()["audit"]["model"]["registry"]["champion_id"] == new_id
    finally:
        srv.stop()


def test_exposed_without_keys_refuses_to_start(data, tmp_path) -> None:
    env = {**os.environ, "PYROBLUR_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), "PYROBLUR_SERVE_API_KEY_HASHES": ""}
    run = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "PYROBLUR_SERVE_API_KEY_HASHES" in run.stderr and "0.0.0.0" in run.stderr


def test_make_serve_binds_localhost_with_the_champion(data, tmp_path) -> None:
    """`make serve` (what the README says after `make demo`) on the champion of the data dir."""
    import signal

    from serve_tools import free_port

    port = free_port()
    env = {**os.environ, "PYROBLUR_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), "SERVE_PORT": str(port)}
    env["PYROBLUR_SERVE_DATA_DIR"] = str(tmp_path / "state")
    log = (tmp_path / "make.log").open("w")
    proc = subprocess.Popen(
        ["make", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "make.log").read_text()[-3000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, 180, "make serve to be ready", interval=0.2)
        model = requests.get(f"http://127.0.0.1:{port}/v1/model", timeout=10).json()
        from pyroblur.registry.store import load_registry

        assert model["version"] == load_registry(data / "registry.json").champion().id
        listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_compose_runs_the_service_on_localhost_with_keys_from_env() -> None:
    import yaml

    svc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["anonymize-api"]
    assert svc["command"][:2] == ["pyroblur", "serve"]
    assert svc["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${SERVE_PORT:-8000}:8000"]
    assert "${PYROBLUR_SERVE_API_KEY_HASHES" in svc["environment"]["PYROBLUR_SERVE_API_KEY_HASHES"]
    assert "PYROBLUR_SERVE_API_KEY_HASHES=" in (ROOT / "docker" / ".env.example").read_text()
