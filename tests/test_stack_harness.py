"""docker/stack.sh's offline harness (make stack-*): the stand-ins enter only through
docker/compose.stack.yaml, compose.yaml keeps the real images for users, and the rendered
harness file still publishes on 127.0.0.1 only. The smoke run itself (minutes, dockerd) is
`make stack-smoke`, not part of `make test`; docs/operations.md has its log."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from test_compose_mlflow import parse_env_file
from test_docker import COMPOSE, DOCKER, ROOT

OVERRIDE = DOCKER / "compose.stack.yaml"
REAL = {"postgres": "postgres:", "mlflow-db": "postgres:", "mongodb": "mongo:", "minio": "minio/minio:"}


def test_compose_keeps_the_real_images_and_the_override_swaps_only_third_party_ones() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    override = yaml.safe_load(OVERRIDE.read_text())["services"]
    assert "pyroblur-local" not in COMPOSE.read_text()
    for name, prefix in REAL.items():
        assert services[name]["image"].startswith(prefix), name
        assert override[name]["image"].startswith("pyroblur-local/"), name
    assert set(override) <= set(services)
    # the project's own services are never replaced by a stand-in
    for name in ("prefect-server", "fiftyone-app", "cpu-worker", "gpu-worker", "anonymize-api", "mlflow"):
        assert name not in override
    assert override["minio-init"]["image"] == services["cpu-worker"]["image"]
    for name in ("mongodb", "minio"):  # their tools differ: health checks that ping the service
        assert override[name]["healthcheck"]["test"][0] == "CMD"


def test_stack_script_is_valid_shell_with_every_make_target() -> None:
    proc = subprocess.run(["bash", "-n", str(DOCKER / "stack.sh")], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    makefile = (ROOT / "Makefile").read_text()
    for target in ("build", "up", "smoke", "down"):
        assert f"stack-{target}:" in makefile and f"docker/stack.sh {target}" in makefile


def test_rendered_harness_file_uses_the_stand_ins_and_binds_localhost() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose binary not installed (apt-get install -y docker-compose)")
    example = parse_env_file(DOCKER / ".env.example")
    env = {k: v for k, v in os.environ.items() if k not in example}
    proc = subprocess.run(
        [exe, "-f", str(COMPOSE), "-f", str(OVERRIDE), "--env-file", str(DOCKER / ".env.example"), "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)["services"]
    for name in REAL:
        assert rendered[name]["image"].startswith("pyroblur-local/"), name
    for name, svc in rendered.items():
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    # the worker health endpoint stays inside its container
    for name in ("cpu-worker", "gpu-worker"):
        assert rendered[name]["environment"]["PREFECT_WORKER_WEBSERVER_HOST"] == "127.0.0.1"
        assert "8080/health" in " ".join(rendered[name]["healthcheck"]["test"])
