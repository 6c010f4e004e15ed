"""Tests of pyroblur.registry.store: promotion rules, the derived cache, locking, refusals.

Every test promotes into a real MLflow store (SQLite under its tmp folder); see also
tests/test_mlflow_registry.py for the aliases and version tags themselves."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path

import pytest

from pyroblur.registry import tracking
from pyroblur.registry.store import (
    ENTRY_TAG,
    Candidate,
    CorruptRegistryError,
    Gate,
    UngatedChampionError,
    champion_weights,
    load_registry,
    promote_if_better,
)

METRIC = "mAP50-95"


def make_candidate(tmp: Path, name: str, value: float, **extra: float) -> Candidate:
    weights = tmp / "runs" / name / "best.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(f"weights of {name}".encode())
    return Candidate(
        weights=weights,
        metrics={METRIC: value, **extra},
        config_digest="c",
        data_digest="d",
    )


def test_empty_registry_has_no_champion(tmp_path: Path) -> None:
    assert champion_weights(tmp_path / "registry.json") is None
    assert load_registry(tmp_path / "registry.json").models == []


def test_first_model_becomes_champion_and_weights_are_copied(tmp_path: Path) -> None:
    reg = tmp_path / "reg" / "registry.json"
    d = promote_if_better(reg, make_candidate(tmp_path, "a", 0.30), METRIC, 0.01)
    assert d.promoted and d.champion_id is None and d.champion_value is None
    assert "no champion yet" in d.reason
    path = champion_weights(reg)
    assert path is not None and path.read_bytes() == b"weights of a"
    assert path.is_relative_to(reg.parent / "mlflow" / "artifacts")  # logged on its MLflow run
    entry = load_registry(reg).models[0]
    assert entry.status == "champion" and entry.primary_value == 0.30 and entry.id == d.candidate_id


@pytest.mark.parametrize(
    ("new_value", "margin", "promoted"),
    [
        (0.25, 0.0, False),  # worse
        (0.30, 0.0, False),  # a tie is not better, even without a margin
        (0.30, 0.01, False),  # equal, margin required
        (0.305, 0.01, False),  # better, but less than the margin
        (0.31, 0.01, True),  # better by exactly the margin (within float rounding)
        (0.40, 0.01, True),  # clearly better
        (math.nan, 0.0, False),  # not a number
    ],
)
def test_promotion_rules(tmp_path: Path, new_value: float, margin: float, promoted: bool) -> None:
    reg = tmp_path / "registry.json"
    first = promote_if_better(reg, make_candidate(tmp_path, "a", 0.30), METRIC, margin)
    d = promote_if_better(reg, make_candidate(tmp_path, "b", new_value), METRIC, margin)
    assert d.promoted is promoted, d.reason
    assert d.champion_value == 0.30 and d.champion_id == first.candidate_id
    assert (d.candidate_value == new_value) or math.isnan(new_value)
    statuses = {m.id: m.status for m in load_registry(reg).models}
    if promoted:
        assert statuses == {first.candidate_id: "retired", d.candidate_id: "champion"}
        assert champion_weights(reg).read_bytes() == b"weights of b"  # type: ignore[union-attr]
    else:
        assert statuses == {
            first.candidate_id: "champion",
            d.candidate_id: "challenger",
        }
        assert champion_weights(reg).read_bytes() == b"weights of a"  # type: ignore[union-attr]
        assert "champion kept" in d.reason or "not promoted" in d.reason


def test_exact_margin_is_enough(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.25), METRIC, 0.25)
    assert promote_if_better(reg, make_candidate(tmp_path, "b", 0.5), METRIC, 0.25).promoted


def test_reason_names_both_values(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC, 0.0)
    d = promote_if_better(reg, make_candidate(tmp_path, "b", 0.4), METRIC, 0.0)
    assert "0.4000" in d.reason and "0.5000" in d.reason


def test_champion_metrics_override(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    # re-measured on the new test set the champion only reaches 0.3: 0.4 wins
    d = promote_if_better(reg, make_candidate(tmp_path, "b", 0.4), METRIC, champion_metrics={METRIC: 0.3})
    assert d.promoted and d.champion_value == 0.3


def test_champion_lacking_metric_is_kept(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    cand = make_candidate(tmp_path, "b", 0.4, mAP50=0.9)
    d = promote_if_better(reg, cand, "mAP50")
    assert not d.promoted and "no finite mAP50" in d.reason


def test_same_weights_twice_changes_nothing(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    cand = make_candidate(tmp_path, "a", 0.5)
    assert promote_if_better(reg, cand, METRIC).promoted
    before = reg.read_text()
    again = promote_if_better(reg, cand, METRIC)
    assert again.promoted and "already registered" in again.reason
    assert reg.read_text() == before


def test_missing_metric_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="mAP50"):
        promote_if_better(tmp_path / "r.json", make_candidate(tmp_path, "a", 0.5), "mAP50")


def test_missing_weights_raises(tmp_path: Path) -> None:
    cand = Candidate(weights=tmp_path / "nope.pt", metrics={METRIC: 0.5})
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        promote_if_better(tmp_path / "r.json", cand, METRIC)


@pytest.mark.parametrize(
    "content",
    ["", "{not json", '{"schema_version": 1, "models": [{"id": 1}]}', "[]", "\x00\xff"],
)
def test_a_damaged_cache_is_rebuilt_from_mlflow(tmp_path: Path, content: str) -> None:
    reg = tmp_path / "registry.json"
    first = promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    reg.write_text(content, encoding="utf-8", errors="surrogateescape")
    assert load_registry(reg).champion().id == first.candidate_id  # type: ignore[union-attr]
    assert champion_weights(reg).read_bytes() == b"weights of a"  # type: ignore[union-attr]
    d = promote_if_better(reg, make_candidate(tmp_path, "b", 0.6), METRIC)
    assert d.promoted and load_registry(reg).champion().id == d.candidate_id  # type: ignore[union-attr]


def test_an_unreadable_entry_tag_raises_naming_the_version(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    _client(reg).set_model_version_tag(tracking.MODEL_NAME, "1", ENTRY_TAG, "{not json")
    with pytest.raises(CorruptRegistryError, match="v1"):
        champion_weights(reg)


def test_written_file_is_plain_json_without_temp_leftovers(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    data = json.loads(reg.read_text())
    assert data["schema_version"] == 2 and data["models"][0]["status"] == "champion"
    assert data["tracking_uri"].startswith("sqlite:///") and data["derived_from"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _worker(args: tuple[str, str, float]) -> bool:
    reg, tmp, value = args
    return promote_if_better(Path(reg), make_candidate(Path(tmp), f"m{value}", value), METRIC, 0.0).promoted


def test_concurrent_promotions_lose_no_update(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    values = [0.1 * i for i in range(1, 9)]
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_worker, [(str(reg), str(tmp_path), v) for v in values])
    models = load_registry(reg).models
    assert len(models) == len(values)
    champions = [m for m in models if m.status == "champion"]
    assert len(champions) == 1 and champions[0].primary_value == pytest.approx(max(values))


def test_every_entry_records_its_gates(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    d = promote_if_better(reg, make_candidate(tmp_path, "b", 0.5), METRIC)
    assert not d.promoted and [g.name for g in d.gates] == ["improvement"]
    entries = load_registry(reg).models
    assert all(e.gates for e in entries)
    assert entries[0].gates[0].passed and not entries[1].gates[0].passed  # type: ignore[index]
    assert entries[1].gates[0].threshold == 0.5 and entries[1].gates[0].value == 0.5  # type: ignore[index]


def test_a_failed_extra_gate_keeps_the_champion(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    first = promote_if_better(reg, make_candidate(tmp_path, "a", 0.3), METRIC)
    floor = Gate(name="recall_floor:face", value=0.5, threshold=0.9, passed=False, detail="face coverage 0.5 < 0.9")
    d = promote_if_better(reg, make_candidate(tmp_path, "b", 0.9), METRIC, gates=[floor])
    assert not d.promoted and "face coverage 0.5 < 0.9" in d.reason and "not promoted" in d.reason
    assert load_registry(reg).champion().id == first.candidate_id  # type: ignore[union-attr]
    entry = load_registry(reg).get(d.candidate_id)
    assert entry is not None and [g.name for g in entry.gates or []] == ["improvement", "recall_floor:face"]


def _client(reg: Path):
    return tracking.client(tracking.store_for(reg.parent))


def _edit_entry(reg: Path, **changes: object) -> None:
    """Edit version 1's entry tag in MLflow, as a hand edit in the UI or API would."""
    c = _client(reg)
    entry = json.loads(c.get_model_version(tracking.MODEL_NAME, "1").tags[ENTRY_TAG])
    entry.update(changes)
    c.set_model_version_tag(tracking.MODEL_NAME, "1", ENTRY_TAG, json.dumps(entry))


def test_champion_without_a_gate_record_is_refused(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    promote_if_better(reg, make_candidate(tmp_path, "a", 0.5), METRIC)
    _edit_entry(reg, gates=None)  # as written before gates existed
    with pytest.raises(UngatedChampionError, match="no record of passed promotion gates") as err:
        champion_weights(reg)
    assert str(reg) in str(err.value) and "--model" in str(err.value)
    _edit_entry(
        reg, gates=[{"name": "recall_floor:face", "value": 0.1, "threshold": 0.9, "passed": False, "detail": "x"}]
    )
    with pytest.raises(UngatedChampionError, match="recall_floor:face"):
        champion_weights(reg)
