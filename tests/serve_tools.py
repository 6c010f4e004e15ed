"""What the service tests and the benchmark share: a tiny promoted champion, a ``pyroblur
serve`` subprocess on a free port, clips made with ffmpeg."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160
#: A random-init head scores every anchor ~1e-5: this keeps boxes, so pixels change.
CONF = "0.000001"


def make_champion(base: Path) -> Path:
    """A tiny random-init YOLO11n "trained at" SIZE px, promoted through the real gates (with
    its real ONNX export) into ``base/data/registry.json``; returns the data dir."""
    from test_champion_onnx import _decide
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    weights = base / "run" / "best.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    YOLO("yolo11n.yaml").save(weights)
    strip_optimizer(weights, updates={"train_args": {"imgsz": SIZE, "task": "detect"}})
    decision = _decide(base / "data" / "registry.json", weights, onnx_imgsz=SIZE)
    assert decision.promoted, decision.reason
    return base / "data"


def promote_another(data: Path, base: Path, map50_95: float) -> str:
    """Promote a second random-init model (a better score) into ``data``'s registry through
    the real gates and export; returns its registry id."""
    from test_champion_onnx import FLOORS, _report
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    from pyroblur.evaluation.report import flat_metrics
    from pyroblur.manifests import Evidence
    from pyroblur.registry import promotion

    weights = base / "run2" / "best.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    YOLO("yolo11n.yaml").save(weights)
    strip_optimizer(weights, updates={"train_args": {"imgsz": SIZE, "task": "detect"}})
    rep = _report(weights)
    rep = rep.model_copy(update={"overall": {**rep.overall, "map50_95": map50_95}})
    evidence = Evidence(
        counts={s: {"face": 30, "license_plate": 30} for s in ("val", "test")}, minimums={"val": 20, "test": 20}
    )
    decision = promotion.decide(
        data / "registry.json", rep, flat_metrics(rep), "data", evidence, "map50_95", 0.0, FLOORS, onnx_imgsz=SIZE
    )
    assert decision.promoted, decision.reason
    from pyroblur.registry.store import load_registry

    champion = load_registry(data / "registry.json").champion()
    assert champion is not None
    return champion.id


def write_photo(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A real photo (scikit-image's astronaut) at ``size`` (width, height)."""
    from skimage.data import astronaut

    cv2.imwrite(str(path), cv2.resize(np.ascontiguousarray(astronaut()[..., ::-1]), size))
    return path


def write_clip(path: Path, seconds: float, fps: int = 25, size: str = "320x240", audio: bool = True) -> Path:
    """A moving test pattern (with a sine tone when ``audio``), H.264 + AAC."""
    from video_tools import run_ffmpeg

    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440", "-map", "0:v", "-map", "1:a", "-c:a", "aac"]
    run_ffmpeg(*args, "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``pyroblur serve`` in a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, data: Path, log: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYROBLUR_DATA_DIR": str(data),
            "PYTHONPATH": str(ROOT),
            "CUDA_VISIBLE_DEVICES": "",
            "YOLO_OFFLINE": "1",
            "PYROBLUR_SERVE_RELOAD_S": "0.5",
        }
        env |= {f"PYROBLUR_SERVE_{k.upper()}": str(v) for k, v in settings.items()}
        self.log = log
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pyroblur serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"pyroblur serve not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def rss_mib(self) -> float:
        """Resident memory of the server process (MiB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, as in a crash."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
