"""``pyroblur app`` serves the FiftyOne App; headless Chromium shows the dataset and its count.

The App is started as a user would (``python -m flows.cli app``) in its own process group on
a free port and killed with the group afterwards. Chromium is driven through the DevTools
protocol rather than ``--screenshot`` so the test can wait until the App has rendered and read
its text, and mark FiftyOne's one-time "Enterprise" pop-up as seen (it would cover the sample
count). The screenshot is kept as test-artifacts/app_curated_dataset.png.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO

import pytest
import requests
from conftest import ARTIFACTS, free_port
from curation_data import box, photo, record, save_jpeg

from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
from pyroblur.curation.importer import curate
from pyroblur.curation.split import balance_and_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,900",
]  # fmt: skip


class DevTools:
    """Minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=20)
        self.next_id = 0

    def call(self, method: str, timeout: float = 30, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def text(self) -> str:
        # innerText, plus the values of inputs (the dataset selector shows its name in one).
        js = (
            "(document.body ? document.body.innerText : '') + '\\n' + "
            "Array.from(document.querySelectorAll('input')).map(i => i.value).join('\\n')"
        )
        res = self.call("Runtime.evaluate", expression=js)
        return res.get("result", {}).get("value", "")

    def close(self) -> None:
        self.ws.close()


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Headless Chromium with a DevTools port; returns the process and the page websocket URL."""
    proc = subprocess.Popen(
        [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    port = None
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if m:
            port = int(m.group(1))
        elif not line and proc.poll() is not None:
            break
    if port is None:
        proc.kill()
        raise RuntimeError("chromium did not open a DevTools port")
    for _ in range(50):
        pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json() if t["type"] == "page"]
        if pages:
            return proc, pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise RuntimeError("no page target in chromium")


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def start_app(log: IO[str], *args: str) -> tuple[subprocess.Popen, int]:
    """``pyroblur app ARGS --port <free port>`` in a process group of its own, its output in
    ``log``; returns once the App answers (at most 120 s), or stops it and fails."""
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "app", *args, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert app.poll() is None, Path(log.name).read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/", timeout=2).ok:
                    return app, port
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the App did not answer in 120 s"
            time.sleep(0.5)
    except BaseException:
        stop_group(app)
        raise


def port_closed(port: int, timeout: float = 60) -> bool:
    """Wait (bounded) until nothing answers on ``port``. FiftyOne's App server runs under a
    service process in its own process group: it stops after ours, not with it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        except requests.RequestException:
            return True
        time.sleep(0.5)
    return False


#: Thumbnails painted in the grid: decoded <img> elements and non-blank canvases.
THUMBNAILS_JS = """(() => {
  const imgs = Array.from(document.querySelectorAll('img'))
    .filter(i => !i.src.includes('/assets/') && i.complete && i.naturalWidth > 16
      && i.getBoundingClientRect().width > 16);  // not the App's own logo and icons
  const canvases = Array.from(document.querySelectorAll('canvas')).filter(c => {
    if (c.width < 16 || c.height < 16) return false;
    try {
      const ctx = c.getContext('2d');
      if (!ctx) return true;  // a WebGL canvas: count it once it has a size
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let k = 3; k < d.length; k += 4 * 97) if (d[k] !== 0) return true;
      return false;
    } catch (e) { return true; }
  });
  return imgs.length + canvases.length;
})()"""


@pytest.fixture
def curated_dataset(tmp_path):
    recs = []
    for i in range(24):
        p = save_jpeg(photo(i, 128), tmp_path / "imgs" / f"{i}.jpg")
        recs.append(record(p, (128, 128), [box(20, 30, 70, 80, cls=i % 2)]))
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not an image")
    recs.append(record(tmp_path / "imgs" / "broken.jpg", (96, 64)))
    name = f"pyroblur-app-{uuid.uuid4().hex[:6]}"
    m = curate(recs, CurationConfig(dataset_name=name), "c")
    balance_and_split(name, BalanceConfig(samples_per_class=10, allow_small_evidence=True), SplitConfig(), "s")
    return name, m.num_imported


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_app_shows_curated_dataset_name_and_count(curated_dataset, tmp_path):
    pytest.importorskip("websockets")
    name, count = curated_dataset
    log = (tmp_path / "app.log").open("w")
    app, port = start_app(log, "--dataset", name)
    chrome = None
    try:
        url = f"http://127.0.0.1:{port}/datasets/{name}"
        chrome, ws_url = start_chromium(tmp_path / "chrome-profile")
        page = DevTools(ws_url)
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            source="localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true')",
        )
        page.call("Page.navigate", url=url)
        want = re.compile(rf"\b{count}\s+samples?\b", re.IGNORECASE)
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            text = page.text()
            if name in text and want.search(text):
                break
            time.sleep(1)
        # The screenshot shows the grid with its thumbnails painted, not the empty grid.
        thumbs, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            res = page.call("Runtime.evaluate", expression=THUMBNAILS_JS)
            thumbs = res.get("result", {}).get("value") or 0
            if thumbs >= min(count, 4):
                break
            time.sleep(0.5)
        shot = page.call("Page.captureScreenshot", format="png")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "app_curated_dataset.png").write_bytes(base64.b64decode(shot["data"]))
        page.close()
        assert name in text, f"dataset name not shown; page text: {text[:1500]}"
        assert want.search(text), f"'{count} samples' not shown; page text: {text[:1500]}"
        assert thumbs >= min(count, 4), f"only {thumbs} thumbnails painted in 60 s"
        for view in ("curated", "rejected", "train"):  # saved views the App lists
            import fiftyone as fo

            assert fo.load_dataset(name).has_saved_view(view)
    finally:
        if chrome is not None:
            stop_group(chrome)
        stop_group(app)
        log.close()
    assert port_closed(port), f"the App still answers on port {port} 60 s after its process stopped"
    # One remote-access hint, with the port actually served (FiftyOne's own says 5151 twice).
    out = (tmp_path / "app.log").read_text()
    assert out.count("ssh -N -L") == 1, out[-3000:]
    assert f"ssh -N -L {port}:127.0.0.1:{port}" in out and f"http://localhost:{port}" in out


def test_app_unknown_dataset_exits_with_message():
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "app", "--dataset", f"nope-{uuid.uuid4().hex[:6]}", "--port", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_app_unknown_view_exits_with_message(curated_dataset):
    name, _ = curated_dataset
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "app", "--dataset", name, "--view", "nope", "--port", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no saved view 'nope'" in proc.stderr and "curated" in proc.stderr
