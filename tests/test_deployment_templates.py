"""The work-pool job templates in deployments/ parse, validate and declare their GPU settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DEPLOYMENTS = Path(__file__).resolve().parents[1] / "deployments"
TEMPLATES = ["gpu-process-pool.json", "gpu-docker-pool.json", "gpu-k8s-pool.json"]


def load(name: str) -> dict[str, Any]:
    return json.loads((DEPLOYMENTS / name).read_text())


def defaults(template: dict[str, Any]) -> dict[str, Any]:
    """Default value of every variable that has one (what a run without overrides gets)."""
    props = template["variables"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def render(template: dict[str, Any]) -> dict[str, Any]:
    from prefect.utilities.templating import apply_values

    return apply_values(template["job_configuration"], defaults(template))


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_has_sections_and_validates(name: str) -> None:
    template = load(name)
    assert isinstance(template["job_configuration"], dict) and template["job_configuration"]
    assert template["variables"]["type"] == "object" and template["variables"]["properties"]
    from prefect.server.schemas.actions import validate_base_job_template

    validate_base_job_template(template)  # every placeholder is a declared variable


@pytest.mark.parametrize("name", TEMPLATES)
def test_defaults_match_their_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    template = load(name)
    jsonschema.validate(defaults(template), template["variables"])
    env = defaults(template)["env"]
    assert env["PYROBLUR_DATA_DIR"] == "/data/pyroblur"


def test_process_pool_leaves_the_gpu_to_the_worker() -> None:
    # A value here would override every worker's CUDA_VISIBLE_DEVICES (Prefect's process
    # worker starts a run with its own environment updated by `env`): all on one GPU.
    env = render(load("gpu-process-pool.json"))["env"]
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_docker_pool_requests_nvidia_gpus() -> None:
    config = render(load("gpu-docker-pool.json"))
    kwargs = config["container_create_kwargs"]
    (request,) = kwargs["device_requests"]
    assert request["driver"] == "nvidia" and request["capabilities"] == [["gpu"]]
    assert request["count"] == -1
    assert kwargs["shm_size"]
    assert any(v.endswith(":/data/pyroblur") for v in config["volumes"])


def test_k8s_pool_limits_one_gpu() -> None:
    config = render(load("gpu-k8s-pool.json"))
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"mountPath": "/data/pyroblur", "name": "pyroblur-data"} in container["volumeMounts"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_readme_documents_concurrency_limit() -> None:
    text = (DEPLOYMENTS / "README.md").read_text()
    assert "prefect work-pool set-concurrency-limit gpu 1" in text
    for name in TEMPLATES:
        assert name in text
