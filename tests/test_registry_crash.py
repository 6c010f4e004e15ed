"""A promotion that dies half-way never leaves two champions or none, and the next one works.

The record is MLflow's registry: the candidate's version is created, tagged, then ``@champion``
moves in one update. A process killed between any two of those steps leaves the old champion
in place (a version without its entry tag is not a registered candidate, and is ignored).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyroblur.registry.store import Candidate, champion_weights, load_registry, promote_if_better

METRIC = "mAP50-95"

# Runs in a child process: promote a better model, but die at a chosen step of the registration.
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from mlflow import MlflowClient
    import pyroblur.registry.store as reg

    registry, weights, when = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    real_create, real_alias = MlflowClient.create_model_version, MlflowClient.set_registered_model_alias

    def create_model_version(self, *a, **k):
        version = real_create(self, *a, **k)
        if when == "after-version":
            os._exit(9)  # killed with the version created, before its tags
        return version

    def set_registered_model_alias(self, *a, **k):
        if when == "before-alias":
            os._exit(9)  # killed with the version tagged, before the alias moved
        return real_alias(self, *a, **k)

    MlflowClient.create_model_version = create_model_version
    MlflowClient.set_registered_model_alias = set_registered_model_alias
    reg.promote_if_better(registry, reg.Candidate(weights=weights, metrics={"mAP50-95": 0.9}), "mAP50-95")
    os._exit(0)
    """
)


def _weights(tmp: Path, name: str) -> Path:
    w = tmp / name / "best.pt"
    w.parent.mkdir(parents=True)
    w.write_bytes(name.encode())
    return w


@pytest.mark.parametrize("when", ["after-version", "before-alias"])
def test_crash_during_promotion_keeps_the_old_champion(tmp_path, when):
    registry = tmp_path / "registry.json"
    first = promote_if_better(registry, Candidate(weights=_weights(tmp_path, "old"), metrics={METRIC: 0.5}), METRIC)
    assert first.promoted

    better = _weights(tmp_path, "better")
    child = subprocess.run([sys.executable, "-c", CHILD, str(registry), str(better), when], capture_output=True)
    assert child.returncode == 9, child.stderr.decode()[-2000:]

    # Still exactly one champion, the old one.
    reg = load_registry(registry)
    assert [m.status for m in reg.models].count("champion") == 1
    assert reg.champion().id == first.candidate_id
    # The next promotion works as if nothing happened.
    again = promote_if_better(registry, Candidate(weights=better, metrics={METRIC: 0.9}), METRIC)
    assert again.promoted and again.champion_id == first.candidate_id
    assert champion_weights(registry).read_bytes() == b"better"
    assert load_registry(registry).champion().id == again.candidate_id


def test_looking_up_a_champion_writes_nothing(tmp_path):
    root = tmp_path / "no-data-yet"
    assert champion_weights(root / "registry.json") is None
    assert not root.exists()
