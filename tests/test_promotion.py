"""Promotion fails closed: ties, thin evidence and recall below the floor never promote; every
gate is listed in the registry entry and the report; anonymization refuses an ungated champion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyroblur.manifests import BenchmarkManifest, ClassPrivacy, ClassSummary, Evidence, OperatingPoint
from pyroblur.registry import promotion
from pyroblur.registry.store import UngatedChampionError, champion_weights, load_registry

FLOORS = {"face": 0.9, "license_plate": 0.8}
MIN = {"val": 20, "test": 20}


def report(
    tmp: Path, name: str, map50_95: float, face_cov: float = 0.95, plate_cov: float = 0.9, test_images: int = 30
):
    weights = tmp / name / "best.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(f"weights {name}".encode())
    cls = ClassSummary(
        map50=0.9, map50_95=map50_95, precision=0.9, recall=0.9, f1=0.9, images=test_images, instances=60
    )
    return BenchmarkManifest(
        digest=f"bench-{name}",
        weights=str(weights),
        report_json=str(tmp / name / "report.json"),
        report_md=str(tmp / name / "report.md"),
        per_class={"face": cls, "license_plate": cls},
        overall={"map50": 0.9, "map50_95": map50_95, "precision": 0.9, "recall": 0.9},
        ms_per_image=1.0,
        device="cpu",
        parameters=1,
        size_mb=1.0,
        test_digest="testdigest",
        operating_point=OperatingPoint(conf={"face": 0.25, "license_plate": 0.25}, enlarge=1.2, covered_fraction=0.9),
        privacy={
            "face": ClassPrivacy(boxes=60, covered=round(60 * face_cov), coverage=face_cov),
            "license_plate": ClassPrivacy(boxes=60, covered=round(60 * plate_cov), coverage=plate_cov),
        },
    )


def evidence(val: int = 30, test: int = 30, allowed: bool = False) -> Evidence:
    counts = {"val": {"face": val, "license_plate": val}, "test": {"face": test, "license_plate": test}}
    return Evidence(counts=counts, minimums=MIN, allowed=allowed)


def decide(reg: Path, rep: BenchmarkManifest, ev: Evidence | None = None, margin: float = 0.0):
    from pyroblur.evaluation.report import flat_metrics

    return promotion.decide(
        reg, rep, flat_metrics(rep), "data", ev or evidence(), "map50_95", margin, FLOORS, champion_metrics=None
    )


def test_first_model_with_every_gate_passed_is_champion(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    d = decide(reg, report(tmp_path, "a", 0.5))
    assert d.promoted, d.reason
    names = [g.name for g in d.gates]
    assert names == [
        "improvement",
        "evidence:val/face",
        "evidence:val/license_plate",
        "evidence:test/face",
        "evidence:test/license_plate",
        "recall_floor:face",
        "recall_floor:license_plate",
    ]
    entry = load_registry(reg).champion()
    assert entry is not None and entry.gates_passed() and entry.test_digest == "testdigest"
    assert entry.report.endswith("report.json")
    assert champion_weights(reg) is not None


def test_a_candidate_equal_to_the_champion_is_not_promoted(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    first = decide(reg, report(tmp_path, "a", 0.5))
    d = decide(reg, report(tmp_path, "b", 0.5))
    assert not d.promoted and "champion kept" in d.reason
    assert load_registry(reg).champion().id == first.candidate_id  # type: ignore[union-attr]


def test_higher_map_but_face_recall_below_the_floor_is_not_promoted(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    first = decide(reg, report(tmp_path, "a", 0.5))
    d = decide(reg, report(tmp_path, "b", 0.7, face_cov=0.85))
    assert not d.promoted
    floor = next(g for g in d.gates if g.name == "recall_floor:face")
    assert not floor.passed and floor.value == pytest.approx(0.85) and floor.threshold == 0.9
    assert next(g for g in d.gates if g.name == "improvement").passed  # it was better on mAP
    assert "face coverage 0.8500 below benchmark.recall_floors.face" in d.reason
    assert load_registry(reg).champion().id == first.candidate_id  # type: ignore[union-attr]


def test_thin_evidence_is_not_promoted_even_as_first_model(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    d = decide(reg, report(tmp_path, "a", 0.9, test_images=1), evidence(val=0, test=1, allowed=True))
    assert not d.promoted
    failed = {g.name: g for g in d.gates if not g.passed}
    assert set(failed) == {"evidence:val/face", "evidence:val/license_plate", "evidence:test/face",
                           "evidence:test/license_plate"}  # fmt: skip
    assert failed["evidence:val/face"].value == 0 and failed["evidence:val/face"].threshold == 20
    assert "balance.min_images_per_class.val = 20" in failed["evidence:val/face"].detail
    assert load_registry(reg).champion() is None


def test_no_evidence_record_fails_closed(tmp_path: Path) -> None:
    from pyroblur.evaluation.report import flat_metrics

    rep = report(tmp_path, "a", 0.9)
    d = promotion.decide(tmp_path / "r.json", rep, flat_metrics(rep), "data", None, "map50_95", 0.0, FLOORS)
    assert not d.promoted and any(g.name == "evidence" and not g.passed for g in d.gates)


def test_unmeasured_coverage_fails_its_floor(tmp_path: Path) -> None:
    rep = report(tmp_path, "a", 0.9)
    rep = rep.model_copy(update={"privacy": {"face": ClassPrivacy(boxes=0)}})
    d = decide(tmp_path / "r.json", rep)
    gates = {g.name: g for g in d.gates}
    assert not gates["recall_floor:face"].passed and gates["recall_floor:face"].value is None
    assert not gates["recall_floor:license_plate"].passed  # no figure at all
    assert not d.promoted


def test_registry_entry_and_report_list_each_gate(tmp_path: Path) -> None:
    reg = tmp_path / "registry.json"
    decide(reg, report(tmp_path, "a", 0.5))
    d = decide(reg, report(tmp_path, "b", 0.7, face_cov=0.5))
    raw = json.loads(reg.read_text())["models"][1]
    assert [g["name"] for g in raw["gates"]] == [g.name for g in d.gates]
    assert all({"value", "threshold", "passed", "detail"} <= set(g) for g in raw["gates"])
    assert raw["test_digest"] == "testdigest"
    md = promotion.to_markdown(promotion.to_manifest(d, reg, "testdigest"))
    assert "**Not promoted**" in md and "Test set digest: `testdigest`" in md
    for g in d.gates:
        assert f"| {g.name} |" in md
    assert "| recall_floor:face | 0.5000 | 0.9000 | **FAIL** |" in md


# ------------------------------------------------------------------ anonymization refuses


def _ungated_champion(data: Path) -> Path:
    reg = data / "registry.json"
    decide(reg, report(data, "a", 0.5))
    raw = json.loads(reg.read_text())
    del raw["models"][0]["gates"]  # an entry from before gates existed
    reg.write_text(json.dumps(raw))
    return reg


def test_anonymize_with_an_ungated_champion_exits_1_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    from flows.cli import app

    data = tmp_path / "data"
    data.mkdir()
    _ungated_champion(data)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")  # never read: the model is refused first
    monkeypatch.setenv("PYROBLUR_DATA_DIR", str(data))
    result = CliRunner().invoke(app, ["anonymize", str(tmp_path / "in"), str(tmp_path / "out")])
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "no record of passed promotion gates" in text and "--model" in text
    assert not (tmp_path / "out").exists()


def test_an_explicit_model_still_works_beside_an_ungated_champion(tmp_path: Path) -> None:
    from pyroblur.anonymize.api import resolve_weights

    reg = _ungated_champion(tmp_path)
    with pytest.raises(UngatedChampionError):
        resolve_weights(None, reg)
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"x")
    assert resolve_weights(mine, reg) == mine


def test_report_shows_privacy_wider_and_held_out_suites(tmp_path: Path) -> None:
    from pyroblur.evaluation.report import flat_metrics, to_markdown
    from pyroblur.manifests import SuiteResult, WiderResult

    rep = report(tmp_path, "a", 0.5)
    rep = rep.model_copy(
        update={
            "wider": WiderResult(name="w", images=3, faces=9, easy=0.9, medium=0.8, hard=0.5, in_training=2),
            "suites": [SuiteResult(name="plates_test", images=4, per_class=rep.per_class)],
        }
    )
    md = to_markdown(rep)
    assert "| 0.900 | 0.800 | 0.500 |" in md and "**Not independent**: 2 suite images" in md
    assert "Held-out suite `plates_test` (4 images" in md
    assert "| face | 60 | 0.950 | n/a |" in md  # boxes, coverage, mean hidden area (not measured here)
    flat = flat_metrics(rep)
    assert flat["wider/hard"] == 0.5 and flat["face/coverage"] == pytest.approx(0.95)
    assert flat["plates_test/face/map50"] == pytest.approx(0.9)
