"""Ultralytics' own MLflow callback is off: a training opens no run of its own, anywhere.

The test's name contains ``test_mlflow`` on purpose: ultralytics skips its MLflow callback under
pytest unless the running test's name does, so here it would log if it were still attached.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pyroblur.config import TrainConfig
from pyroblur.training.trainer import train

pytestmark = [pytest.mark.slow]


def _tiny_yolo_dataset(root: Path) -> Path:
    """Six 64x64 images with one bright square each (class 0), as a YOLO dataset."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(3):
            img = (rng.random((64, 64, 3)) * 60).astype(np.uint8)
            x, y = 10 + 8 * i, 12 + 6 * i
            img[y : y + 20, x : x + 20] = 230
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), img)
            (root / "labels" / split / f"{i}.txt").write_text(
                f"0 {(x + 10) / 64:.4f} {(y + 10) / 64:.4f} {20 / 64:.4f} {20 / 64:.4f}\n"
            )
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: face\n  1: license_plate\n")
    return data


def test_mlflow_ultralytics_callback_opens_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # where the callback would log...
    monkeypatch.chdir(tmp_path)  # ...or ./mlruns without a URI
    data = _tiny_yolo_dataset(tmp_path / "ds")
    cfg = TrainConfig(model="yolo11n.yaml", epochs=1, imgsz=64, batch=2, device="cpu", workers=0)
    manifest = train(data, cfg, tmp_path / "run")
    assert Path(manifest.weights).is_file()
    client = MlflowClient(tracking_uri=store)
    experiments = client.search_experiments()
    assert [e.name for e in experiments] == ["Default"]  # ultralytics' would be named after the project
    assert client.search_runs([e.experiment_id for e in experiments]) == []
    assert not (tmp_path / "mlruns").exists()
