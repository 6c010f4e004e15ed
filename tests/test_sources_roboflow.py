"""The Roboflow source through the real ``roboflow`` package, its HTTP calls answered locally.

The package resolves ``API_URL`` from the environment at import, so each run is a child process
with ``API_URL`` pointing at a 127.0.0.1 server that answers what the package asks for (key
check, workspace, project + versions, version status, export link) and serves the export zip
in the layout Roboflow publishes for that format. The package's own ``Version.download`` then
downloads, extracts and (for yolov5pytorch / mt-yolov6) rewrites data.yaml, as it does for users.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from PIL import Image

pytest.importorskip("roboflow", reason="the roboflow extra is not installed (pip install -e '.[dev]')")

KEY = "rf_fake_k3y_not_real_8c1f"
WS, PROJECT, VERSION = "roboflow-universe-projects", "license-plate-recognition-rxg4e", 4


def jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (100, 100, 100)).save(buf, format="JPEG")
    return buf.getvalue()


def export_zip(fmt: str) -> bytes:
    """An export as Roboflow ships it: README.roboflow.txt + data.yaml with ``../<split>/images``
    (YOLO formats; mt-yolov6 writes ``./<split>/images``) or <split>/_annotations.coco.json."""
    members: dict[str, bytes] = {"README.roboflow.txt": b"License Plate Recognition - v4\n"}
    files = {"train": ["a.jpg", "b.jpg"], "valid": ["c.jpg"], "test": ["d.jpg"]}
    if fmt == "coco":
        for split, names in files.items():
            data = {
                "categories": [
                    {"id": 0, "name": "license-plates", "supercategory": "none"},
                    {"id": 1, "name": "License_Plate", "supercategory": "license-plates"},
                ],
                "images": [{"id": i, "file_name": n, "width": 80, "height": 40} for i, n in enumerate(names)],
                "annotations": [
                    {"id": 0, "image_id": 0, "category_id": 1, "bbox": [8, 4, 16, 8], "area": 128, "iscrowd": 0}
                ],
            }
            members[f"{split}/_annotations.coco.json"] = json.dumps(data).encode()
            members |= {f"{split}/{n}": jpeg(80, 40) for n in names}
        return _zip(members)
    prefix = "./" if fmt == "mt-yolov6" else "../"
    members["data.yaml"] = yaml.safe_dump(
        {
            "train": f"{prefix}train/images",
            "val": f"{prefix}valid/images",
            "test": f"{prefix}test/images",
            "nc": 1,
            "names": ["License_Plate"],
            "roboflow": {"workspace": WS, "project": PROJECT, "version": VERSION},
        }
    ).encode()
    for split, names in files.items():
        for n in names:
            members[f"{split}/images/{n}"] = jpeg(80, 40)
            members[f"{split}/labels/{n[:-4]}.txt"] = b"0 0.25 0.25 0.2 0.2\n"
    return _zip(members)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


class FakeRoboflowApi:
    """Answers the roboflow package's requests for one project version."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.zip = export_zip(fmt)
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: object, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                outer.paths.append("POST " + self.path)
                if urlsplit(self.path).path == "/":
                    self._json({"workspace": WS})
                else:
                    self._json({"error": "unexpected"}, 404)

            def do_GET(self) -> None:
                outer.paths.append("GET " + self.path)
                path = urlsplit(self.path).path
                version = {
                    "id": f"{WS}/{PROJECT}/{VERSION}",
                    "name": "v4",
                    "created": 1673631000,
                    "images": 4,
                    "splits": {"train": 2, "valid": 1, "test": 1},
                    "augmentation": {},
                    "preprocessing": {},
                    "exports": [outer.fmt],
                    "generating": False,
                    "progress": 1.0,
                }
                project = {
                    "id": f"{WS}/{PROJECT}",
                    "name": "License Plate Recognition",
                    "type": "object-detection",
                    "annotation": "License_Plate",
                    "classes": {"License_Plate": 5},
                    "colors": {},
                    "created": 1650000000,
                    "updated": 1673631000,
                    "images": 4,
                    "public": True,
                    "splits": {"train": 2, "valid": 1, "test": 1},
                    "unannotated": 0,
                    "versions": 1,
                }
                if path == f"/{WS}":
                    self._json({"workspace": {"name": WS, "url": WS, "projects": [project], "members": []}})
                elif path == f"/{WS}/{PROJECT}":
                    self._json({"workspace": {"name": WS, "url": WS}, "project": project, "versions": [version]})
                elif path == f"/{WS}/{PROJECT}/{VERSION}":
                    self._json({"workspace": {"name": WS, "url": WS}, "project": project, "version": version})
                elif path == f"/{WS}/{PROJECT}/{VERSION}/{outer.fmt}":
                    self._json({"export": {"link": outer.url("/export/roboflow.zip"), "format": outer.fmt}})
                elif path == "/export/roboflow.zip":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.zip)))
                    self.end_headers()
                    self.wfile.write(outer.zip)
                else:
                    self._json({"error": {"message": f"not found: {path}"}}, 404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "") -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> FakeRoboflowApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


CHILD = """
import json, sys
from pathlib import Path
from pyroblur.data.sources import fetch_source
from pyroblur.data.sources.models import RoboflowSource
cfg = RoboflowSource(export_format=sys.argv[2], class_map={"License_Plate": "license_plate", "license-plates": "ignore"})
records = fetch_source(cfg, Path(sys.argv[1]))
print(json.dumps([r.model_dump(mode="json") for r in records]))
"""


def run_child(api: FakeRoboflowApi, dest: Path, fmt: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "API_URL": api.url(),
        "ROBOFLOW_API_KEY": KEY,
        "ROBOFLOW_CONFIG_DIR": str(dest.parent / "rf-config.json"),  # no user config is read
        "TQDM_DISABLE": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(dest), fmt], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(params=["yolov11", "yolov5pytorch", "mt-yolov6", "coco"])
def fmt(request: pytest.FixtureRequest) -> str:
    return request.param


def test_roboflow_package_download_is_read_in_every_supported_format(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / "raw" / "roboflow_plates"
    with FakeRoboflowApi(fmt) as api:
        proc = run_child(api, dest, fmt)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(Path(r["filepath"]).name for r in records) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert {r["source_split"] for r in records} == (
        {"train", "valid", "test"} if fmt == "coco" else {"train", "val", "test"}
    )
    assert all(Path(r["filepath"]).is_file() and str(dest / "export") in r["filepath"] for r in records)
    boxes = [(b["class_id"], b["x1"], b["y1"], b["x2"], b["y2"]) for r in records for b in r["boxes"]]
    assert boxes and all(b[0] == 1 for b in boxes)
    assert any(p.startswith(f"GET /{WS}/{PROJECT}/{VERSION}/{fmt}") for p in api.paths)
    if fmt in ("yolov5pytorch", "mt-yolov6"):
        # The package rewrote data.yaml to absolute paths inside the download folder: still valid
        # because the export is never moved after download.
        data = yaml.safe_load((dest / "export" / "data.yaml").read_text())
        assert Path(data["train"]).is_absolute() and Path(data["train"]).is_dir()
    assert KEY not in (dest / "export" / ".pyroblur-roboflow.json").read_text()


def test_roboflow_unknown_project_is_permanent_and_keyless(tmp_path: Path) -> None:
    child = CHILD.replace("RoboflowSource(", "RoboflowSource(project='no-such-project', ")
    child = (
        "import sys\ntry:\n"
        + "\n".join("    " + line for line in child.strip().splitlines())
        + """
except Exception as exc:
    from pyroblur.core.errors import is_transient
    print("ERR", type(exc).__name__, is_transient(exc), exc)
"""
    )
    with FakeRoboflowApi("yolov11") as api:
        env = {
            **os.environ,
            "API_URL": api.url(),
            "ROBOFLOW_API_KEY": KEY,
            "ROBOFLOW_CONFIG_DIR": str(tmp_path / "c.json"),
        }
        proc = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path / "rf"), "yolov11"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ERR"))
    assert line.startswith("ERR RoboflowError False") and "no-such-project" in line
    assert KEY not in proc.stdout + proc.stderr
    assert not (tmp_path / "rf" / "export").exists()
