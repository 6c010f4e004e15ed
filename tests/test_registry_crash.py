"""The registry survives a process that dies while writing it (atomic replace)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyroblur.registry.store import Candidate, champion_weights, load_registry, promote_if_better

METRIC = "mAP50-95"

# Runs in a child process: promote a better model, but die at a chosen instant of the write.
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import pyroblur.registry.store as reg

    registry, weights, when = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    real_write_bytes, real_replace = Path.write_bytes, os.replace

    def write_bytes(self, data):
        if when == "mid-write" and ".partial-" in self.name:
            with open(self, "wb") as fh:
                fh.write(data[: len(data) // 2]); fh.flush()
            os._exit(9)  # killed in the middle of writing the temporary file
        return real_write_bytes(self, data)

    def replace(src, dst):
        if when == "before-rename":
            os._exit(9)  # killed after the temp file is complete, before the rename
        real_replace(src, dst)

    Path.write_bytes, os.replace = write_bytes, replace
    reg.promote_if_better(registry, reg.Candidate(weights=weights, metrics={"mAP50-95": 0.9}), "mAP50-95")
    os._exit(0)
    """
)


def _weights(tmp: Path, name: str) -> Path:
    w = tmp / name / "best.pt"
    w.parent.mkdir(parents=True)
    w.write_bytes(name.encode())
    return w


@pytest.mark.parametrize("when", ["mid-write", "before-rename"])
def test_crash_during_write_keeps_the_old_registry(tmp_path, when):
    registry = tmp_path / "registry.json"
    first = promote_if_better(registry, Candidate(weights=_weights(tmp_path, "old"), metrics={METRIC: 0.5}), METRIC)
    assert first.promoted
    before = registry.read_bytes()

    better = _weights(tmp_path, "better")
    child = subprocess.run([sys.executable, "-c", CHILD, str(registry), str(better), when], capture_output=True)
    assert child.returncode == 9, child.stderr.decode()[-2000:]

    # The file is the complete old registry, and still names the old champion.
    assert registry.read_bytes() == before
    assert load_registry(registry).champion().id == first.candidate_id
    # The next promotion works as if nothing happened.
    again = promote_if_better(registry, Candidate(weights=better, metrics={METRIC: 0.9}), METRIC)
    assert again.promoted and again.champion_id == first.candidate_id
    assert champion_weights(registry).read_bytes() == b"better"
    assert load_registry(registry).champion().id == again.candidate_id


def test_looking_up_a_champion_writes_nothing(tmp_path):
    root = tmp_path / "no-data-yet"
    assert champion_weights(root / "registry.json") is None
    assert not root.exists()
