"""The compose stack's MLflow server, its Postgres and MinIO: 127.0.0.1 only, credentials
from the env file (docker/.env, made from docker/.env.example), none baked into the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_docker import COMPOSE, DOCKER, ROOT, interpolate

SERVICES = ("mlflow", "mlflow-db", "minio")
SECRETS = ("MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as docker-compose reads an env file (comments and blanks skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=value: {line!r}"
        env[key.strip()] = value.strip()
    return env


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_env_example_has_every_credential_and_the_compose_file_none() -> None:
    env = parse_env_file(DOCKER / ".env.example")
    for key in SECRETS:
        assert env.get(key), f"docker/.env.example lacks {key}"
    text = COMPOSE.read_text()
    for key in SECRETS:  # required from the env file: no default a stack could start with
        assert re.search(rf"\$\{{{key}:\?", text), f"{key} must be ${{{key}:?...}} in compose.yaml"
        assert not re.search(rf"\$\{{{key}:-", text), f"{key} has a default in compose.yaml"
    svc = services()
    with pytest.raises(KeyError, match="MLFLOW_DB_PASSWORD"):
        interpolate(svc["mlflow-db"]["environment"]["POSTGRES_PASSWORD"], {})
    rendered = {k: interpolate(v, env) for k, v in svc["mlflow"]["environment"].items()}
    assert rendered["AWS_SECRET_ACCESS_KEY"] == env["MINIO_ROOT_PASSWORD"]
    assert rendered["MLFLOW_DB_PASSWORD"] == env["MLFLOW_DB_PASSWORD"]
    assert rendered["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_mlflow_postgres_and_minio_bind_localhost() -> None:
    env = parse_env_file(DOCKER / ".env.example")
    svc = services()
    assert set(SERVICES) <= set(svc)
    assert not svc["mlflow-db"].get("ports"), "the MLflow Postgres is not published at all"
    for name in ("mlflow", "minio"):
        assert svc[name]["ports"]
        for port in svc[name]["ports"]:
            assert interpolate(port, env).startswith("127.0.0.1:"), (name, port)
    command = " ".join(svc["mlflow"]["command"])
    assert "postgresql://" in command and "s3://" in command and "--serve-artifacts" in command
    # the workers log to the stack's server unless MLFLOW_TRACKING_URI says otherwise
    worker_env = svc["cpu-worker"]["environment"]
    assert interpolate(worker_env["MLFLOW_TRACKING_URI"], env) == "http://mlflow:5000"


def test_docker_compose_renders_the_env_file() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose binary not installed (apt-get install -y docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in parse_env_file(DOCKER / ".env.example")}
    proc = subprocess.run(
        [exe, "-f", str(COMPOSE), "--env-file", str(DOCKER / ".env.example"), "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)["services"]
    example = parse_env_file(DOCKER / ".env.example")
    for name in ("mlflow", "minio"):
        for port in rendered[name]["ports"]:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    assert rendered["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == example["MINIO_ROOT_PASSWORD"]
    assert rendered["mlflow-db"]["environment"]["POSTGRES_PASSWORD"] == example["MLFLOW_DB_PASSWORD"]
