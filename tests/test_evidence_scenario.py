"""The issue's scenario: a new user's local source of 6 clean images, through the real FiftyOne
path. With the real defaults it stops at balancing (before any training) naming the split, the
class, the count and the setting; with ``allow_small_evidence`` it goes on, export says it
validates on train, and even perfect test figures are not promoted."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from curation_data import box, photo, record, save_jpeg

from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
from pyroblur.curation.balance import InsufficientEvidenceError
from pyroblur.curation.importer import curate
from pyroblur.curation.split import balance_and_split

pytestmark = pytest.mark.integration  # needs FiftyOne's mongod


@pytest.fixture(scope="module")
def six_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    recs = []
    for k in range(6):
        p = save_jpeg(photo(k, 96), root / f"clean_{k}.jpg", quality=92)
        boxes = [box(10, 10, 40, 44, cls=0)] + ([box(50, 60, 90, 75, cls=1)] if k % 2 else [])
        recs.append(record(p, (96, 96), boxes))
    name = f"six-{uuid.uuid4().hex[:6]}"
    manifest = curate(recs, CurationConfig(dataset_name=name), "c6")
    assert manifest.num_curated == 6
    return name


def test_real_defaults_stop_before_training_with_a_named_message(six_images) -> None:
    with pytest.raises(InsufficientEvidenceError) as err:
        balance_and_split(six_images, BalanceConfig(), SplitConfig(), "s6")
    text = str(err.value)
    # 6 images cannot reach 80 per class anywhere: every held-out split and class is named, with its count
    for split in ("val", "test"):
        for cls in ("face", "license_plate"):
            assert re.search(rf"split '{split}' has \d images containing '{cls}'", text), (split, cls, text)
    assert "balance.min_images_per_class.val = 80" in text
    assert "balance.min_images_per_class.test = 80" in text
    assert err.value.exit_code == 1


def test_allowed_small_evidence_runs_but_never_promotes(six_images, tmp_path) -> None:
    from pyroblur.curation.dataset import export_items
    from pyroblur.curation.export import save_yolo_dataset
    from pyroblur.evaluation.report import flat_metrics
    from pyroblur.manifests import BenchmarkManifest, ClassPrivacy, ClassSummary, OperatingPoint
    from pyroblur.registry import promotion
    from pyroblur.registry.store import load_registry

    m = balance_and_split(six_images, BalanceConfig(allow_small_evidence=True), SplitConfig(), "s6-allowed")
    assert m.evidence is not None and m.evidence.allowed and m.evidence.shortfalls
    assert any("val" in w and "face" in w for w in m.warnings)
    assert sum(m.images.values()) == 6
    items = export_items(six_images)
    if m.images["val"] == 0:  # the case: export must say so, and only when allowed
        with pytest.raises(Exception, match="no validation images"):
            save_yolo_dataset(items, tmp_path / "refused", "d")
    counts = save_yolo_dataset(items, tmp_path / "yolo", "d", allow_train_as_val=True)
    assert sum(counts.values()) == 6

    # Even a candidate with perfect test figures is not promoted on this evidence.
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"candidate")
    perfect = ClassSummary(map50=1, map50_95=1, precision=1, recall=1, f1=1, images=1, instances=1)
    report = BenchmarkManifest(
        digest="b", weights=str(weights), report_json="r.json", report_md="r.md",
        per_class={"face": perfect, "license_plate": perfect},
        overall={"map50": 1.0, "map50_95": 1.0, "precision": 1.0, "recall": 1.0},
        ms_per_image=1, device="cpu", parameters=1, size_mb=1,
        operating_point=OperatingPoint(conf={"face": 0.25, "license_plate": 0.25}, enlarge=1.2, covered_fraction=0.9),
        privacy={c: ClassPrivacy(boxes=1, covered=1, coverage=1.0) for c in ("face", "license_plate")},
    )  # fmt: skip
    registry = tmp_path / "registry.json"
    decision = promotion.decide(
        registry, report, flat_metrics(report), "d", m.evidence, "map50_95", 0.0, {"face": 0.9, "license_plate": 0.9}
    )
    assert not decision.promoted
    failed = [g.name for g in decision.gates if not g.passed]
    assert "evidence:val/face" in failed and "evidence:test/face" in failed
    assert load_registry(registry).champion() is None


# ------------------------------------------------------------------ the same through `pyroblur run`


def _run(tmp_path, api: str, cfg: dict, name: str):
    import json
    import os
    import subprocess
    import sys

    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = tmp_path / f"{name}-summary.json"
    cmd = [sys.executable, "-m", "flows.cli", "run", "-c", str(path), "--summary-json", str(summary)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PREFECT_API_URL": api})
    return proc, (json.loads(summary.read_text()) if summary.exists() else None)


@pytest.mark.slow
def test_six_image_run_fails_before_training_or_trains_and_does_not_promote(tmp_path, prefect_server) -> None:
    from tiny_config import tiny_config

    six = tiny_config(
        **{
            "sources.0.num_images": 6,
            "sources.0.negative_fraction": 0.0,
            "curation.dataset_name": f"six-run-{uuid.uuid4().hex[:6]}",
            "balance": {"seed": 0},  # the real defaults: 1000 per class, 80 per class in val and test
            "benchmark.leak_clip_images": 1,
            "benchmark.leak_clip_frames": 4,
        }
    )
    proc, summary = _run(tmp_path, prefect_server, six, "strict")
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out[-3000:]
    assert re.search(r"split 'val' has \d images containing 'face', below balance.min_images_per_class.val = 80", out)
    assert summary is None  # the run failed: no summary, and no train stage ran
    assert "Starting training" not in out

    allowed = {**six, "balance": {"seed": 0, "allow_small_evidence": True}}
    proc, summary = _run(tmp_path, prefect_server, allowed, "allowed")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert summary["states"]["train"] == "Completed" and summary["states"]["promote"] == "Completed"
    promotion = summary["promotion"]
    assert promotion["promoted"] is False
    failed = {g["name"] for g in promotion["gates"] if not g["passed"]}
    assert {"evidence:val/face", "evidence:test/face"} <= failed
    assert "gate evidence:val/face" in proc.stdout and "FAIL" in proc.stdout


def test_held_out_source_splits_and_their_near_duplicates_stay_out(tmp_path) -> None:
    import fiftyone as fo

    from pyroblur.config import HoldOut

    recs = []
    for k in range(12):
        src, split = ("wider", "val") if k < 4 else ("plates", "train")
        p = save_jpeg(photo(k, 96), tmp_path / src / f"{k}.jpg", quality=92)
        recs.append(record(p, (96, 96), [box(10, 10, 40, 44, cls=k % 2)], source=src, source_split=split))
    # a near-duplicate of a held-out image, in a training source
    near = save_jpeg(photo(0, 96).resize((90, 90)), tmp_path / "plates" / "near0.jpg", quality=80)
    recs.append(record(near, (90, 90), [box(9, 9, 38, 41, cls=0)], source="plates", source_split="train"))
    name = f"hold-{uuid.uuid4().hex[:6]}"
    curate(recs, CurationConfig(dataset_name=name), "ch")
    bal = BalanceConfig(allow_small_evidence=True, hold_out=[HoldOut(source="wider", split="val")])
    m = balance_and_split(name, bal, SplitConfig(), "sh")
    assert m.held_out == {"wider/val": 4, "plates/train": 1}
    ds = fo.load_dataset(name)
    chosen = set(ds.match_tags("selected").values("filepath"))
    assert not any("/wider/" in fp for fp in chosen) and str(near.resolve()) not in chosen
    assert sum(m.images.values()) == 8

    # the held-out split is readable as an external suite, boxes in pixels
    from pyroblur.evaluation.benchmark import holdout_testset

    suite = holdout_testset(name, "wider", "val")
    assert len(suite.images) == 4 and all("/wider/" in str(p) for p in suite.images)
    assert [len(g) for g in suite.gt] == [1, 1, 1, 1]
    np.testing.assert_allclose(suite.gt[0].xyxy, [[10, 10, 40, 44]], atol=1e-3)
    with pytest.raises(Exception, match="no curated image of source 'wider' split 'test'"):
        holdout_testset(name, "wider", "test")
