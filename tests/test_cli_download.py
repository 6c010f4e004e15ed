"""`pyroblur download --dry-run` on the real config: every URL, a size and a destination; no writes."""

import os
import re
import subprocess
import sys
from pathlib import Path

from pyroblur.config import load_config
from pyroblur.data.sources import plan_source

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_lists_every_download_of_the_real_config(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "download",
            "--config",
            str(ROOT / "configs" / "pyroblur.yaml"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYROBLUR_DATA_DIR": str(data)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(ROOT / "configs" / "pyroblur.yaml")
    planned = [p for s in cfg.sources for p in plan_source(s, data / "raw" / s.name)]
    urls = {p.url for p in planned}
    assert any(u.endswith("/WIDER_train.zip") for u in urls)
    assert any("license-plate-object-detection" in u for u in urls)
    for p in planned:
        block = re.search(re.escape(p.url) + r"\n\s+(.+) -> (.+)", proc.stdout)
        assert block, f"{p.url} not listed"
        size_txt, dest = block.groups()
        assert re.match(r"~?[\d,]+ B", size_txt), f"no size for {p.url}: {size_txt}"
        assert dest == str(p.dest)
    assert "1,465,602,149 B" in proc.stdout  # WIDER_train.zip, the official size
    assert not data.exists()  # a dry run downloads and creates nothing


def test_download_without_network_fails_fast_naming_host_and_remedy(tmp_path):
    """The real config with its Hub endpoint on a name that never resolves (what no network looks like)."""
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "download",
            "--config",
            str(ROOT / "configs" / "pyroblur.yaml"),
            "--set",
            "sources.0.endpoint=https://hub.no-such-host.invalid",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYROBLUR_DATA_DIR": str(data)},
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "source 'wider_face': cannot reach hub.no-such-host.invalid (DNS lookup failed" in err
    for name in ("WIDER_train.zip", "WIDER_val.zip", "wider_face_split.zip"):
        assert str(data / "raw" / "wider_face" / "archives" / name) in err
    assert "`local` source" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1  # one line a user can act on


def test_run_of_the_real_config_without_network_stops_before_any_stage(tmp_path):
    """`pyroblur run` checks every download host before the first stage: with no network it exits
    2 naming each unreachable host, the files to put in place and the `local` alternative (and, on
    this GPU-less machine, the GPU devices, in the same message)."""
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--config",
            str(ROOT / "configs" / "pyroblur.yaml"),
            "--set",
            "sources.0.endpoint=https://hub.no-such-host.invalid",
            "--set",
            "sources.1.endpoint=https://hub.no-such-host.invalid",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYROBLUR_DATA_DIR": str(data), "PREFECT_API_URL": ""},
        timeout=180,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("pipeline failed:")]
    assert len(line) == 1, proc.stderr[-2000:]
    for name in ("wider_face", "license_plates"):
        assert f"source '{name}': cannot reach hub.no-such-host.invalid (DNS lookup failed" in line[0]
    assert str(data / "raw" / "wider_face" / "archives" / "WIDER_train.zip") in line[0]
    assert "`local` source" in line[0]
    assert not (data / "raw" / "wider_face" / "archives").exists()  # nothing was downloaded or started


def test_reachability_check_skips_files_already_in_place(tmp_path):
    import socket

    from pyroblur.data.download import PlannedDownload, check_reachable

    with socket.socket() as s:  # a port on which nothing listens: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "a.zip"
    planned = [PlannedDownload(url=f"http://127.0.0.1:{port}/a.zip", dest=dest)]
    err = check_reachable(planned, timeout=2)
    assert err is not None and "connection refused" in str(err) and str(dest) in str(err)
    dest.write_bytes(b"already here")  # pre-downloaded by the user: no network needed
    assert check_reachable(planned, timeout=2) is None
