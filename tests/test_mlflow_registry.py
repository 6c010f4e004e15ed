"""The MLflow Model Registry as the registry of record, against a real SQLite-backed store.

No mocks of mlflow: every test promotes into ``<tmp>/mlflow/mlflow.db`` (the embedded default
store of that folder) and reads the result back through ``MlflowClient``.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from pyroblur.manifests import Gate
from pyroblur.registry import tracking
from pyroblur.registry.store import (
    Candidate,
    ChampionIntegrityError,
    load_registry,
    promote_if_better,
    resolve_champion,
)

METRIC = "mAP50-95"
FLOOR = Gate(name="recall_floor:face", value=0.9, threshold=0.8, passed=True, detail="face coverage 0.9 >= 0.8")
LOW = Gate(name="recall_floor:face", value=0.5, threshold=0.8, passed=False, detail="face coverage 0.5 below 0.8")


def candidate(tmp: Path, name: str, value: float) -> Candidate:
    weights = tmp / "runs" / name / "best.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(f"weights of {name}".encode())
    return Candidate(weights=weights, metrics={METRIC: value}, data_digest="d", test_digest="t")


def client_of(registry: Path):
    return tracking.client(tracking.store_for(registry.parent))


def version_of(c, decision_id: str):
    [v] = [
        v for v in c.search_model_versions(f"name = '{tracking.MODEL_NAME}'") if v.tags["pyroblur.id"] == decision_id
    ]
    return v


def test_two_promotions_move_the_champion_alias_and_tag_every_gate(tmp_path: Path) -> None:
    registry = tmp_path / "data" / "registry.json"
    first = promote_if_better(registry, candidate(tmp_path, "first", 0.30), METRIC, 0.01, gates=[FLOOR])
    better = promote_if_better(registry, candidate(tmp_path, "better", 0.40), METRIC, 0.01, gates=[FLOOR])
    worse = promote_if_better(registry, candidate(tmp_path, "worse", 0.35), METRIC, 0.01, gates=[FLOOR])
    failing = promote_if_better(registry, candidate(tmp_path, "failing", 0.90), METRIC, 0.01, gates=[LOW])
    assert first.promoted and better.promoted and not worse.promoted and not failing.promoted

    c = client_of(registry)
    assert (tmp_path / "data" / "mlflow" / "mlflow.db").is_file()
    model = c.get_registered_model(tracking.MODEL_NAME)
    v_first, v_better, v_worse, v_failing = (version_of(c, d.candidate_id) for d in (first, better, worse, failing))
    assert model.aliases["champion"] == v_better.version  # the better candidate took @champion
    assert model.aliases["challenger"] == v_failing.version  # the latest loser
    assert "champion" not in v_failing.aliases and "champion" not in v_worse.aliases
    assert v_first.tags["pyroblur.status"] == "retired" and v_worse.tags["pyroblur.status"] == "challenger"
    for v, verdict in ((v_better, "pass"), (v_worse, "fail")):  # gate value, threshold, verdict on both
        assert v.tags["gate.improvement.verdict"] == verdict
        assert v.tags["gate.recall_floor:face.value"] == "0.9"
        assert v.tags["gate.recall_floor:face.threshold"] == "0.8"
        assert v.tags["gate.recall_floor:face.verdict"] == "pass"
    assert float(v_worse.tags["gate.improvement.threshold"]) == pytest.approx(0.41)
    assert v_failing.tags["gate.improvement.verdict"] == "pass"  # better by the metric...
    assert v_failing.tags["gate.recall_floor:face.verdict"] == "fail"  # ...but a gate failed: no alias
    # each version's source is the weights logged on its run, with the sha256 on the version
    assert v_better.run_id and v_better.source.endswith("/weights/best.pt")
    champion = resolve_champion(registry)
    assert champion is not None and champion.weights.read_bytes() == b"weights of better"
    assert champion.entry.version == int(v_better.version) and champion.entry.run_id == v_better.run_id
    assert champion.model_uri == f"models:/{tracking.MODEL_NAME}/{v_better.version}"


def test_offering_the_same_weights_again_adds_no_version(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    cand = candidate(tmp_path, "a", 0.3)
    promote_if_better(registry, cand, METRIC, gates=[FLOOR])
    again = promote_if_better(registry, cand, METRIC, gates=[FLOOR])
    assert again.promoted and "already registered" in again.reason
    assert len(client_of(registry).search_model_versions(f"name = '{tracking.MODEL_NAME}'")) == 1


def test_cache_follows_mlflow_and_never_disagrees(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    a = promote_if_better(registry, candidate(tmp_path, "a", 0.3), METRIC, gates=[FLOOR])
    b = promote_if_better(registry, candidate(tmp_path, "b", 0.4), METRIC, gates=[FLOOR])
    assert load_registry(registry).champion().id == b.candidate_id  # type: ignore[union-attr]
    # someone moves the alias in the MLflow UI / API: the cache is stale and must not be believed
    c = client_of(registry)
    c.set_registered_model_alias(tracking.MODEL_NAME, "champion", version_of(c, a.candidate_id).version)
    assert load_registry(registry).champion().id == a.candidate_id  # type: ignore[union-attr]
    registry.write_text("{not json")  # a damaged cache is rebuilt, never trusted
    assert load_registry(registry).champion().id == a.candidate_id  # type: ignore[union-attr]


def test_altered_or_deleted_champion_weights_are_refused(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    promote_if_better(registry, candidate(tmp_path, "a", 0.3), METRIC, gates=[FLOOR])
    weights = resolve_champion(registry).weights  # type: ignore[union-attr]
    weights.write_bytes(b"someone else's model")
    with pytest.raises(ChampionIntegrityError, match="altered since registration"):
        resolve_champion(registry)
    weights.unlink()
    with pytest.raises(ChampionIntegrityError, match="missing"):
        resolve_champion(registry)


def _promote(args: tuple[str, str, float]) -> bool:
    registry, name, value = args
    tmp = Path(registry).parent
    return promote_if_better(Path(registry), candidate(tmp, name, value), METRIC, gates=[FLOOR]).promoted


def test_concurrent_promotions_leave_exactly_one_champion(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    promote_if_better(registry, candidate(tmp_path, "base", 0.1), METRIC, gates=[FLOOR])
    jobs = [(str(registry), f"m{i}", 0.2 + i / 100) for i in range(4)]
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_promote, jobs)
    reg = load_registry(registry)
    assert [m.status for m in reg.models].count("champion") == 1
    # whatever the order, the best of them holds the alias (each compared under the lock)
    assert reg.champion().primary_value == pytest.approx(0.23)  # type: ignore[union-attr]


def test_tracking_store_down_is_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(tracking.TrackingStoreError, match="127.0.0.1:9"):
        tracking.check_store(tmp_path)
