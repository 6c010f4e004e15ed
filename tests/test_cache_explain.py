"""The one line a run logs when a stage is not served from the cache (tasks/_explain.py), on the
real train task's key parts. The same lines through a real Prefect run: tests/test_pipeline.py."""

from __future__ import annotations

import pytest
from tiny_config import tiny_config


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """``key_parts`` of the real ``train`` task for a train section and an export manifest."""
    monkeypatch.setenv("PYROBLUR_DATA_DIR", str(tmp_path / "root"))
    from pyroblur.config import parse_config
    from pyroblur.manifests import ExportManifest
    from tasks import _explain
    from tasks.pipeline import train

    def of(dataset_digest: str = "d" * 64, **train_changes) -> dict[str, str]:
        cfg = parse_config(tiny_config(**{f"train.{k}": v for k, v in train_changes.items()}))
        dataset = ExportManifest(digest=dataset_digest, path="/x", data_yaml="/x/data.yaml", images={"train": 1})
        return _explain.key_parts(train, {"cfg": cfg.train, "dataset": dataset})

    return of


def test_parts_name_config_keys_upstream_data_and_code(parts):
    p = parts()
    assert p["config:train.epochs"] == "1" and p["config:train.model"] == "'yolo11n.yaml'"
    assert p["upstream:dataset (ExportManifest)"] == "d" * 16
    assert "code:tasks.pipeline:train" in p
    assert any(k.startswith("code:pyroblur.training.trainer:") for k in p), sorted(p)


def test_the_line_says_which_stage_and_why(parts):
    from tasks import _explain

    assert "first run" in _explain.explain("train", parts())
    _explain.remember("train", "train-aaa", parts())
    assert _explain.explain("train", parts(epochs=2)) == "train runs (not cached): config key train.epochs 1 -> 2"
    line = _explain.explain("train", parts(dataset_digest="e" * 64))
    assert line == "train runs (not cached): upstream data changed: dataset (ExportManifest)"
    # the closest recorded key is the one compared with
    _explain.remember("train", "train-bbb", parts(epochs=2))
    assert _explain.explain("train", parts(epochs=2, seed=3)) == "train runs (not cached): config key train.seed 0 -> 3"


def test_a_code_change_names_the_module(parts, monkeypatch):
    from tasks import _explain

    _explain.remember("train", "train-aaa", parts())
    changed = dict(parts())
    key = sorted(k for k in changed if k.startswith("code:pyroblur.training.trainer:") and "<" not in k)[0]
    changed[key] = "0" * 16
    name = key.rsplit(":", 1)[1]
    line = _explain.explain("train", changed)
    assert line == f"train runs (not cached): code changed: pyroblur/training/trainer.py:{name}", line


def test_outputs_gone_line():
    from tasks import _explain

    line = _explain.stale("curate", "curate-0123456789abcdef0123456789", "CurateManifest")
    assert line.startswith("curate runs (not cached): outputs gone: the cached CurateManifest")


def test_a_cached_hit_whose_parts_are_recorded_does_not_walk_the_code_again(parts, monkeypatch):
    """A cached re-run skips the parts (a closure walk: seconds per stage); a hit on a key the
    ledger does not know yet still records its parts, and a miss always computes them."""
    from types import SimpleNamespace

    from tasks import _cache, _explain

    policy = _cache.StagePolicy(stage="train")
    computed: list[str] = []
    recorded = parts()
    monkeypatch.setattr(_explain, "key_parts", lambda task, inputs: computed.append("parts") or recorded)

    class Store:
        def __init__(self, keys: set[str]) -> None:
            self.keys = keys

        def exists(self, key: str) -> bool:
            return key in self.keys

    ctx = SimpleNamespace(task=None)
    policy._say_why(ctx, Store({"train-aaa"}), "train-aaa", "train-aaa", {}, [])  # hit, unknown: recorded
    assert computed == ["parts"] and _explain.known("train", "train-aaa")
    policy._say_why(ctx, Store({"train-aaa"}), "train-aaa", "train-aaa", {}, [])  # hit, known: nothing walked
    assert computed == ["parts"]
    lines: list[str] = []
    monkeypatch.setattr("prefect.logging.get_run_logger", lambda *a: SimpleNamespace(info=lines.append))
    policy._say_why(ctx, Store(set()), "train-aaa", "train-aaa", {}, [])  # miss: computed and said
    assert computed == ["parts", "parts"] and len(lines) == 1
