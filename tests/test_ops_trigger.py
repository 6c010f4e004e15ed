"""``pyroblur trigger``: start a deployment's run from a new terminal (no PREFECT_API_URL set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from ops_stack import TINY_OPS, Stack

pytest_plugins = ["ops_stack"]

ROOT = Path(__file__).resolve().parents[1]
PYROBLUR = Path(sys.executable).parent / "pyroblur"


def new_terminal_env(**extra: str) -> dict[str, str]:
    """The environment of a new terminal: no Prefect API URL or auth string exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, **extra}


def test_parameters_send_training_to_the_gpu_pool_unless_inline():
    from tasks.trigger import GPU_STAGE, parameters_for

    params = parameters_for(ROOT / "configs" / "demo.yaml", ["train.epochs=2"], ['until="curate"'], GPU_STAGE)
    assert params["config"]["orchestration"]["train_deployment"] == GPU_STAGE
    assert params["config"]["train"]["epochs"] == 2 and params["until"] == "curate"
    inline = parameters_for(ROOT / "configs" / "demo.yaml", [], ["input_dir=/data/in"], None)
    assert inline["config"]["orchestration"]["train_deployment"] is None and inline["input_dir"] == "/data/in"


def test_no_server_is_one_line_naming_the_url():
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [str(PYROBLUR), "trigger", "train", "--config", "configs/demo.yaml"],
        env=new_terminal_env(PREFECT_PORT=str(port)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"http://127.0.0.1:{port}/api" in proc.stderr and "make server" in proc.stderr, proc.stderr
    assert "ephemeral" not in proc.stderr + proc.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_trigger_from_a_new_terminal_runs_on_both_pools(ops_stack: Stack, trained_run, tmp_path):
    """As documented: `make server` on its port, then from a new terminal
    `pyroblur trigger train --config FILE` (here the server's port stands in for 4200)."""
    config = {k: v for k, v in TINY_OPS.items() if k != "orchestration"}  # the file names no gpu deployment
    config["orchestration"] = {"poll_seconds": 1}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    port = ops_stack.api.rsplit(":", 1)[1].split("/")[0]
    proc = subprocess.run(
        [str(PYROBLUR), "trigger", "train", "--config", str(path), "--wait", "10"],
        env=new_terminal_env(PREFECT_PORT=port),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = proc.stdout.split("final states:", 1)[1].splitlines()
    pools = {line.split("pool")[1].split()[0] for line in final if "pool" in line}
    assert pools == {"cpu", "gpu"}, proc.stdout  # the parent on cpu, the GPU stage on gpu
    assert all("Completed" in line or "Cached" in line for line in final if "pool" in line), proc.stdout
