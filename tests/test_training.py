"""Training: resume after a killed run, offline-weights errors, finished runs not retrained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_config import tiny_config

from pyroblur.config import TrainConfig
from pyroblur.training.trainer import WeightsUnavailableError, epochs_done, resolve_model

TINY = tiny_config(
    **{
        "curation.dataset_name": "pyroblur-test-resume",
        "sources.0.seed": 21,
        "train.epochs": 6,
    }
)


def test_missing_weights_fail_at_once_naming_the_file(tmp_path):
    cfg = TrainConfig(model=str(tmp_path / "mine.pt"), allow_download=False)
    with pytest.raises(WeightsUnavailableError, match="mine.pt.*not found.*yolo11l.yaml"):
        resolve_model(cfg)


def test_unknown_weights_cannot_be_downloaded():
    # Not an official asset: ultralytics has nothing to fetch, and we must not fall back to
    # random initialisation.
    with pytest.raises(WeightsUnavailableError, match="no_such_model.pt"):
        resolve_model(TrainConfig(model="no_such_model.pt"))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell one thread from all")
def test_cpu_training_threads_follow_the_setting_and_the_free_cores(monkeypatch):
    import types

    import torch
    from ultralytics.utils import NUM_THREADS

    from pyroblur.core.devices import cpu_training_threads
    from pyroblur.training.trainer import _yolo, use_free_cpu_cores

    cores = len(os.sched_getaffinity(0))
    assert NUM_THREADS < cores or cores > 8  # what ultralytics' device selection would leave
    assert use_free_cpu_cores in _yolo("yolo11n.yaml").callbacks["on_pretrain_routine_start"]
    monkeypatch.setenv("PYROBLUR_CPU_THREADS", "auto")
    monkeypatch.setattr(os, "getloadavg", lambda: (1.1, 1.0, 1.0))  # this process alone
    assert cpu_training_threads() == cores
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 1.0, 1.0))  # another busy process
    assert cpu_training_threads() is None
    monkeypatch.setenv("PYROBLUR_CPU_THREADS", "many")
    with pytest.raises(ValueError, match="PYROBLUR_CPU_THREADS='many'"):
        cpu_training_threads()
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PYROBLUR_CPU_THREADS", str(cores))
        torch.set_num_threads(1)
        use_free_cpu_cores(types.SimpleNamespace(device=torch.device("cuda", 0)))
        assert torch.get_num_threads() == 1  # a GPU training keeps ultralytics' choice
        use_free_cpu_cores(types.SimpleNamespace(device=torch.device("cpu")))
        assert torch.get_num_threads() == cores
        monkeypatch.setenv("PYROBLUR_CPU_THREADS", "auto")  # busy machine: ultralytics' choice stays
        torch.set_num_threads(1)
        use_free_cpu_cores(types.SimpleNamespace(device=torch.device("cpu")))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_yaml_models_train_from_scratch_explicitly():
    assert resolve_model(TrainConfig(model="yolo11n.yaml")) == "yolo11n.yaml"


@pytest.mark.slow
@pytest.mark.integration
def test_killed_training_resumes_from_last_checkpoint(tmp_path, prefect_server):
    cfg = tmp_path / "resume.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    cmd = [sys.executable, "-m", "flows.cli", "run", "-c", str(cfg)]
    runs = Path(os.environ["PYROBLUR_DATA_DIR"]) / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()  # earlier tests' runs are not ours
    log1 = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        run_dir = None
        while time.monotonic() < deadline and first.poll() is None:
            dirs = (
                [d for d in runs.glob("*") if d not in before and (d / "results.csv").exists()] if runs.exists() else []
            )
            if dirs and epochs_done(dirs[0]) >= 2 and (dirs[0] / "weights" / "last.pt").exists():
                run_dir = dirs[0]
                break
            time.sleep(0.2)
        assert run_dir is not None, "training never reached epoch 2"
        os.killpg(first.pid, signal.SIGKILL)  # the worker dies mid-run
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log1.close()
    done_before = epochs_done(run_dir)
    assert 2 <= done_before < 6
    rows_before = (run_dir / "results.csv").read_text().splitlines()[: done_before + 1]

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert f"resuming training from {run_dir / 'weights' / 'last.pt'} (epochs done: {done_before})" in out
    assert epochs_done(run_dir) == 6
    # the epochs trained before the kill are kept, not trained again
    assert (run_dir / "results.csv").read_text().splitlines()[: done_before + 1] == rows_before
