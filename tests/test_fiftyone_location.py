"""Where FiftyOne's database lives: under the data root unless FIFTYONE_DATABASE_URI or
FIFTYONE_DATABASE_DIR says otherwise, as every entry point (CLI, flows, workers) configures it;
``make clean`` removes it with the data root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import flows, fiftyone as fo; print(fo.config.database_uri or fo.config.database_dir)"


def _where(tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FIFTYONE_DATABASE_", "PYROBLUR_DATA_DIR"))}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "PYTHONPATH": str(ROOT), "PYROBLUR_DATA_DIR": str(tmp_path / "root"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_the_database_lives_under_the_data_root(tmp_path):
    assert _where(tmp_path) == str(tmp_path / "root" / "fiftyone" / "db")


def test_fiftyone_database_dir_or_uri_win(tmp_path):
    assert _where(tmp_path, FIFTYONE_DATABASE_DIR=str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert _where(tmp_path, FIFTYONE_DATABASE_URI="mongodb://127.0.0.1:9") == "mongodb://127.0.0.1:9"


def test_make_clean_removes_the_data_root_with_the_database():
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.pyroblur-installed", "clean", "PYROBLUR_DATA_DIR=/srv/pyroblur-data"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "rm -rf /srv/pyroblur-data" in out.stdout, out.stdout
