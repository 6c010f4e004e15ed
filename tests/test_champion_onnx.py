"""The champion's ONNX export: promotion writes it and records its sha256; ``pyroblur anonymize``
without ``--model`` on a CPU runs it without importing torch, ultralytics, prefect or fiftyone,
with the same boxes as the champion's ``.pt``; a changed or missing export is never used (the
``.pt`` is, with a warning), and a champion promoted before exports existed still works.

One tiny random-init model is promoted (and really exported) once for the module. A random
head scores every anchor the same, so which of two overlapping equal-score boxes NMS keeps is
up to each runner (see tests/test_anonymize_onnx.py): boxes are compared as there, every box
one runner keeps must be a candidate of the other before suppression, at the same place with
the same score (within the sidecar's rounding: 0.1 px, 4 decimals).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyroblur.core.hashing import sha256_file
from pyroblur.evaluation.metrics import box_iou
from pyroblur.manifests import BenchmarkManifest, ClassPrivacy, ClassSummary, Evidence, OperatingPoint
from pyroblur.registry import export as export_mod
from pyroblur.registry import promotion, tracking
from pyroblur.registry.store import ENTRY_TAG, UngatedChampionError, artifact_file, load_registry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160
FLOORS = {"face": 0.5, "license_plate": 0.5}
#: What a still image through the CLI must not import when the champion's ONNX is used.
HEAVY = ("torch", "ultralytics", "prefect", "fiftyone", "mlflow")  # mlflow: the registry cache is current
CONF = "0.000001"  # a random head scores ~1e-5: keep every candidate NMS does not suppress


def _report(weights: Path) -> BenchmarkManifest:
    cls = ClassSummary(map50=0.9, map50_95=0.6, precision=0.9, recall=0.9, f1=0.9, images=30, instances=60)
    return BenchmarkManifest(
        digest="bench",
        weights=str(weights),
        report_json=str(weights.parent / "report.json"),
        report_md=str(weights.parent / "report.md"),
        per_class={"face": cls, "license_plate": cls},
        overall={"map50": 0.9, "map50_95": 0.6, "precision": 0.9, "recall": 0.9},
        ms_per_image=1.0,
        device="cpu",
        parameters=1,
        size_mb=1.0,
        test_digest="testdigest",
        operating_point=OperatingPoint(conf={"face": 0.25, "license_plate": 0.25}, enlarge=1.2, covered_fraction=0.9),
        privacy={c: ClassPrivacy(boxes=60, covered=57, coverage=0.95) for c in FLOORS},
    )


def _decide(registry: Path, weights: Path, onnx_imgsz: int | None):
    from pyroblur.evaluation.report import flat_metrics

    rep = _report(weights)
    evidence = Evidence(
        counts={s: {"face": 30, "license_plate": 30} for s in ("val", "test")}, minimums={"val": 20, "test": 20}
    )
    return promotion.decide(
        registry, rep, flat_metrics(rep), "data", evidence, "map50_95", 0.0, FLOORS, onnx_imgsz=onnx_imgsz
    )


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict:
    """A tiny random-init model trained "at" SIZE px, promoted through the gates (with its real
    ONNX export), and a square test image (no letterbox padding on either path)."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    base = tmp_path_factory.mktemp("champion_onnx")
    weights = base / "run" / "best.pt"
    weights.parent.mkdir()
    YOLO("yolo11n.yaml").save(weights)
    strip_optimizer(weights, updates={"train_args": {"imgsz": SIZE, "task": "detect"}})
    registry = base / "data" / "registry.json"
    decision = _decide(registry, weights, onnx_imgsz=SIZE)
    assert decision.promoted, decision.reason
    from skimage.data import astronaut

    image = base / "one.png"
    cv2.imwrite(str(image), cv2.resize(np.ascontiguousarray(astronaut()[..., ::-1]), (SIZE, SIZE)))
    entry = load_registry(registry).champion()
    assert entry is not None
    return {"base": base, "registry": registry, "entry": entry, "source": weights, "image": image}


def _copy_data(champion: dict, dest: Path) -> Path:
    """A copy of the champion's data folder (tests that change files do it on their own copy)."""
    shutil.copytree(champion["registry"].parent, dest / "data")
    return dest / "data" / "registry.json"


def _files(registry: Path) -> tuple[Path, Path]:
    entry = load_registry(registry).champion()
    assert entry is not None and entry.onnx is not None
    return artifact_file(registry, entry.weights), artifact_file(registry, entry.onnx.path)


def _edit_entry(registry: Path, edit) -> None:
    """Change the champion's entry tag in the MLflow store of ``registry``'s folder (a hand edit)."""
    c = tracking.client(tracking.store_for(registry.parent))
    version = load_registry(registry).champion().version  # type: ignore[union-attr]
    entry = json.loads(c.get_model_version(tracking.MODEL_NAME, str(version)).tags[ENTRY_TAG])
    edit(entry)
    c.set_model_version_tag(tracking.MODEL_NAME, str(version), ENTRY_TAG, json.dumps(entry))


def _anonymize(data: Path, image: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``pyroblur anonymize IMAGE OUT`` (no --model, device auto on a host whose GPUs are hidden)
    in a fresh interpreter under ``-X importtime``; returns the run and the modules it imported."""
    env = {**os.environ, "PYROBLUR_DATA_DIR": str(data), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-X", "importtime", "-m", "flows.cli", "anonymize", str(image), str(out)]
    cmd += ["--sidecar", "--no-tiles", "--conf-face", CONF, "--conf-plate", CONF, *extra]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", run.stderr, flags=re.M))
    assert imported, "no -X importtime lines in stderr"
    return run, imported


def _sidecar_boxes(out: Path) -> tuple[np.ndarray, np.ndarray]:
    dets = json.loads(out.with_name(out.name + ".json").read_text())["detections"]
    return (
        np.array([d["xyxy"] for d in dets], np.float32).reshape(-1, 4),
        np.array([d["confidence"] for d in dets], np.float32),
    )


def _found_in(xyxy: np.ndarray, conf: np.ndarray, cand_xyxy: np.ndarray, cand_conf: np.ndarray) -> np.ndarray:
    """Per box: is it one of the candidates (same place, same score, within the sidecar's rounding)?"""
    same = (box_iou(xyxy, cand_xyxy) > 0.99) & (np.abs(conf[:, None] - cand_conf[None, :]) <= 1.5e-4)
    return same.any(axis=1)


def _candidates(weights: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every box ``weights`` score above CONF on ``image`` before suppression (NMS at IoU 1.0)."""
    from ultralytics import YOLO

    conf = float(CONF)
    if weights.suffix == ".onnx":
        from pyroblur.anonymize.onnx_detector import OnnxDetector

        d = OnnxDetector(weights, device="cpu", conf={0: conf, 1: conf}, iou=1.0, max_det=100000)
        dets = d([cv2.imread(str(image))])[0]
        return dets.xyxy, dets.confidence
    boxes = (
        YOLO(str(weights))
        .predict(
            str(image), imgsz=SIZE, conf=conf, iou=1.0, classes=[0, 1], max_det=100000, verbose=False, device="cpu"
        )[0]
        .boxes
    )
    return boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy()


def test_promotion_exports_the_champion_and_records_its_sha256(champion) -> None:
    entry, registry = champion["entry"], champion["registry"]
    assert entry.onnx is not None
    pt, onnx = _files(registry)
    assert onnx.is_relative_to(registry.parent / "mlflow" / "artifacts") and onnx.name == "best.onnx"
    assert onnx.parent.name == "onnx" and onnx.is_file()  # logged on the model's MLflow run
    assert entry.onnx.sha256 == sha256_file(onnx)
    assert entry.onnx.source_sha256 == sha256_file(pt) == sha256_file(champion["source"])
    assert entry.onnx.source_sha256.startswith(entry.id) and entry.onnx.imgsz == SIZE
    assert "ultralytics" in entry.onnx.exporter
    assert not list(onnx.parent.glob(".onnx-export-*"))  # the work folder is gone
    from pyroblur.anonymize.onnx_detector import OnnxDetector

    assert OnnxDetector(onnx, device="cpu").imgsz == SIZE  # exported at the training size


def test_a_retry_does_not_export_again(champion, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export_mod, "export_onnx_file", boom)
    again = _decide(champion["registry"], champion["source"], onnx_imgsz=SIZE)  # the promote task retried
    assert again.promoted and "already registered" in again.reason
    assert load_registry(champion["registry"]).champion().onnx == champion["entry"].onnx  # type: ignore[union-attr]


def test_cli_default_champion_on_cpu_runs_the_onnx_without_torch(champion, tmp_path) -> None:
    out = tmp_path / "out.png"
    run, imported = _anonymize(champion["registry"].parent, champion["image"], out)
    assert run.returncode == 0, run.stderr[-3000:]
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"the ONNX path imported {heavy[:10]}"
    pt, onnx = _files(champion["registry"])
    model = json.loads(out.with_name(out.name + ".audit.json").read_text())["model"]
    assert model["weights"] == str(onnx) and model["sha256"] == champion["entry"].onnx.sha256
    # the record still proves which gated champion the export belongs to
    assert model["registry"]["champion_id"] == champion["entry"].id and model["registry"]["file"] == "onnx export"
    # ...and which MLflow model version and run it is
    assert model["registry"]["model_uri"] == f"models:/{tracking.MODEL_NAME}/{champion['entry'].version}"
    assert model["registry"]["mlflow_run_id"] == champion["entry"].run_id != ""
    assert model["registry"]["gates_passed"] is True and model["registry"]["gates"]
    # this champion passed no real-face gate: by default its faces come from the union with
    # CenterFace (ONNX too: still no torch), so its own boxes are compared in a yolo-only run
    assert model["face_detector"] == "union"

    out = tmp_path / "out-yolo.png"
    run, imported = _anonymize(champion["registry"].parent, champion["image"], out, "--face-detector", "yolo")
    assert run.returncode == 0, run.stderr[-3000:]
    assert not sorted(m for m in imported if m.split(".")[0] in HEAVY)
    ours_xyxy, ours_conf = _sidecar_boxes(out)
    assert len(ours_xyxy) > 0
    pt_xyxy, pt_conf = _candidates(pt, champion["image"])
    assert _found_in(ours_xyxy, ours_conf, pt_xyxy, pt_conf).all()  # every box kept is one the .pt scores
    onnx_xyxy, onnx_conf = _candidates(onnx, champion["image"])
    assert len(onnx_xyxy) == len(pt_xyxy)  # the same candidates before suppression


def test_cli_changed_onnx_is_not_used_the_pt_is(champion, tmp_path) -> None:
    registry = _copy_data(champion, tmp_path)
    pt, onnx = _files(registry)
    with onnx.open("ab") as fh:
        fh.write(b"tampered")
    out = tmp_path / "out.png"
    # our model's boxes alone (the default would add CenterFace's: this champion has no real-face gate)
    run, imported = _anonymize(registry.parent, champion["image"], out, "--face-detector", "yolo")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "changed since export, not used" in run.stderr and str(onnx) in run.stderr
    assert "torch" in imported and "ultralytics" in imported  # it ran the .pt
    model = json.loads(out.with_name(out.name + ".audit.json").read_text())["model"]
    assert model["weights"] == str(pt) and model["registry"]["gates_passed"] is True
    assert model["registry"]["file"] == "weights"

    pt_boxes = _sidecar_boxes(out)
    onnx_xyxy, onnx_conf = _candidates(
        artifact_file(champion["registry"], champion["entry"].onnx.path), champion["image"]
    )
    assert len(pt_boxes[0]) > 0
    assert _found_in(*pt_boxes, onnx_xyxy, onnx_conf).all()  # every box the .pt keeps, the ONNX scores too


def _resolve(registry: Path, device: str | None = "cpu") -> Path:
    from pyroblur.anonymize.models import resolve_weights

    return resolve_weights(None, registry, device=device)


def test_champion_promoted_before_exports_uses_the_pt(champion, tmp_path, caplog) -> None:
    registry = _copy_data(champion, tmp_path)
    pt, _ = _files(registry)
    _edit_entry(registry, lambda e: e.update(onnx=None))  # as written before exports existed
    with caplog.at_level(logging.INFO, logger="pyroblur.anonymize.models"):
        assert _resolve(registry) == pt
    assert "no ONNX export recorded" in caplog.text


def test_missing_or_foreign_onnx_is_not_used(champion, tmp_path, caplog) -> None:
    registry = _copy_data(champion, tmp_path)
    pt, onnx = _files(registry)
    assert _resolve(registry) == onnx
    assert _resolve(registry, device="cuda:0") == pt  # a GPU runs the .pt
    assert _resolve(registry, device=None) == pt  # callers that do not say where it runs
    _edit_entry(registry, lambda e: e["onnx"].update(source_sha256="0" * 64))  # names other weights
    with caplog.at_level(logging.WARNING, logger="pyroblur.anonymize.models"):
        assert _resolve(registry) == pt
    assert "not this model" in caplog.text
    caplog.clear()
    registry = _copy_data(champion, tmp_path / "again")
    _files(registry)[1].unlink()
    with caplog.at_level(logging.WARNING, logger="pyroblur.anonymize.models"):
        assert _resolve(registry) == _files(registry)[0]
    assert "is missing" in caplog.text


def test_an_ungated_champion_is_refused_even_with_its_onnx(champion, tmp_path) -> None:
    registry = _copy_data(champion, tmp_path)
    _edit_entry(registry, lambda e: e["gates"][0].update(passed=False))
    with pytest.raises(UngatedChampionError):
        _resolve(registry)


def test_a_failed_export_keeps_the_promotion_and_warns(tmp_path, monkeypatch, caplog) -> None:
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnxslim'")

    monkeypatch.setattr(export_mod, "export_onnx_file", missing)
    weights = tmp_path / "run" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights of a model")
    registry = tmp_path / "data" / "registry.json"
    with caplog.at_level(logging.WARNING, logger="pyroblur.registry.export"):
        assert _decide(registry, weights, onnx_imgsz=SIZE).promoted
    assert "ONNX export" in caplog.text and "onnxslim" in caplog.text
    entry = load_registry(registry).champion()
    assert entry is not None and entry.onnx is None
    assert not list(registry.parent.rglob(".onnx-export-*"))


def test_weights_changed_after_promotion_are_not_exported(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(export_mod, "export_onnx_file", lambda *a, **k: pytest.fail("exported changed weights"))
    weights = tmp_path / "run" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights of a model")
    registry = tmp_path / "data" / "registry.json"
    decision = _decide(registry, weights, onnx_imgsz=None)
    artifact_file(registry, load_registry(registry).champion().weights).write_bytes(b"other bytes")  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="pyroblur.registry.export"):
        assert export_mod.export_champion_onnx(registry, decision.candidate_id, SIZE) is None
    assert "altered since registration" in caplog.text


@pytest.mark.parametrize(
    ("device", "env", "expected"),
    [("cpu", None, True), ("cuda:0", None, False), ("0", None, False), ("auto", "", True), ("auto", "-1", True)],
)
def test_cpu_without_torch(device, env, expected, monkeypatch) -> None:
    from pyroblur.core.devices import cpu_without_torch

    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert cpu_without_torch(device) is (expected and (device == "cpu" or sys.platform.startswith("linux")))
