"""The review loop's round trip: labels edited through FiftyOne (as the App does: label tags, and
box edits saved through the API an annotation backend uses), ``pyroblur corrections export``,
the pipeline re-run; curation and every later stage run again, the exported YOLO labels hold the
corrected boxes, lineage names the corrections version, the curation report counts the changed
labels, and the raw data is byte-for-byte unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import API
from tiny_config import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = ["download", "curate", "balance_split", "export", "train", "benchmark", "promote"]
NAME = "pyroblur-test-corrections"
TINY = tiny_config(**{"curation.dataset_name": NAME, "sources.0.seed": 21, "benchmark.onnx": False})


def _cli(tmp_path: Path, api: str, *args: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PREFECT_API_URL": api},
    )


def _run(tmp_path: Path, api: str) -> dict:
    summary = tmp_path / "summary.json"
    summary.unlink(missing_ok=True)
    proc = _cli(tmp_path, api, "run", "--summary-json", str(summary))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(summary.read_text())


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _pixels(rel: list[float], w: int, h: int) -> tuple[float, float, float, float]:
    x, y, bw, bh = rel
    return (x * w, y * h, (x + bw) * w, (y + bh) * h)


def _yolo_boxes(export_dir: Path, split: str, stem: str, w: int, h: int) -> list[tuple]:
    rows = np.loadtxt(export_dir / "labels" / split / f"{stem}.txt", ndmin=2)
    return sorted(
        (
            int(c),
            round((cx - bw / 2) * w, 1),
            round((cy - bh / 2) * h, 1),
            round((cx + bw / 2) * w, 1),
            round((cy + bh / 2) * h, 1),
        )
        for c, cx, cy, bw, bh in rows
    )


def _expected(dets: list, w: int, h: int) -> list[tuple]:
    from pyroblur import CLASSES

    return sorted((CLASSES.index(d.label), *(round(v, 1) for v in _pixels(d.bounding_box, w, h))) for d in dets)


def test_corrections_round_trip(tmp_path, prefect_server):
    import fiftyone as fo

    from pyroblur.core.settings import get_paths

    first = _run(tmp_path, prefect_server)
    assert first["states"] == dict.fromkeys(STAGES, "Completed")
    # The benchmark left its review behind: four ranked views and the error report.
    ds = fo.load_dataset(NAME)
    for view in ("likely missing labels", "likely wrong labels", "worst false negatives by size",
                 "false positives with high confidence"):  # fmt: skip
        assert ds.has_saved_view(view), view
    # The benchmark's own error report, as a person opens it: pictures first.
    from test_review import render_report

    figures, decoded, gallery_top, table_top, text = render_report(
        Path(first["benchmark"]["error_report"]), "error_report_pipeline.png"
    )
    assert figures == decoded and gallery_top < table_top and "Errors by class" in text

    raw = get_paths().raw
    raw_before = _tree_digest(raw)
    assert raw_before

    # A person's edits, as the App makes them (label tags) and as an annotation backend saves
    # them (boxes changed through FiftyOne's API).
    from fiftyone import ViewField as F

    labelled = F("ground_truth.detections").length() > 0  # the split also holds hard negatives
    train = ds.match_tags("train").match(labelled).sort_by("sha256")
    multi = [s for s in train if len(s.ground_truth.detections) >= 2
             and s.ground_truth.detections[0].label in [d.label for d in s.ground_truth.detections[1:]]]  # fmt: skip
    removed, moved, added = multi[0], train.exclude([multi[0].id]).first(), train.exclude([multi[0].id]).skip(1).first()
    gone = removed.ground_truth.detections[0]
    ds.select_labels(ids=[gone.id]).tag_labels("remove")  # what the App's label tagger calls
    box = moved.ground_truth.detections[0]
    x, y, bw, bh = box.bounding_box
    box.bounding_box = [min(x + bw / 4, 1 - bw), min(y + bh / 4, 1 - bh), bw, bh]  # IoU ~0.4 with the old one
    moved.save()
    new = fo.Detection(label=added.ground_truth.detections[0].label, bounding_box=[0.05, 0.05, 0.2, 0.2])
    added.ground_truth.detections.append(new)
    added.save()
    every = first["benchmark"]["predictions_field"] + "_all"  # this benchmark's boxes down to conf 0.001

    def candidates(sample: Any) -> list:
        w, h = sample.metadata.width, sample.metadata.height
        return [p for p in sample[every].detections
                if p.label in {d.label for d in sample.ground_truth.detections}  # the image's classes stay the same
                and p.bounding_box[2] * w >= 8 and p.bounding_box[3] * h >= 8
                and p.bounding_box[0] >= 0 and p.bounding_box[1] >= 0
                and p.bounding_box[0] + p.bounding_box[2] <= 1 and p.bounding_box[1] + p.bounding_box[3] <= 1]  # fmt: skip

    # the first labelled test image (by content) where the tiny model boxed something usable
    test_sample = next(
        s for s in ds.match_tags("test").exists(every).match(labelled).sort_by("sha256") if candidates(s)
    )
    taken = max(candidates(test_sample), key=lambda p: p.confidence)
    ds.select_labels(ids=[taken.id]).tag_labels("add")  # a missed label: take the model's box
    expected = {}
    for s, split in ((removed, "train"), (moved, "train"), (added, "train"), (test_sample, "test")):
        s.reload()
        dets = [d for d in s.ground_truth.detections if "remove" not in (d.tags or [])]
        if s.id == test_sample.id:
            dets.append(taken)
        expected[s.sha256[:20]] = (
            split,
            s.metadata.width,
            s.metadata.height,
            _expected(dets, s.metadata.width, s.metadata.height),
        )

    proc = _cli(tmp_path, prefect_server, "corrections", "export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "v0001: 4 images" in proc.stdout, proc.stdout
    version = get_paths().root / "corrections" / NAME / "v0001.json"
    assert len(json.loads(version.read_text())["entries"]) == 4

    second = _run(tmp_path, prefect_server)
    assert second["states"] == {"download": "Cached", **dict.fromkeys(STAGES[1:], "Completed")}

    exports = sorted((get_paths().exports).iterdir(), key=lambda p: p.stat().st_mtime)
    export_dir = exports[-1]
    data = yaml.safe_load((export_dir / "data.yaml").read_text())
    assert data["pyroblur_corrections"] == "v0001"
    for stem, (split, w, h, want) in expected.items():
        got = _yolo_boxes(export_dir, split, stem, w, h)
        assert len(got) == len(want) and np.allclose(got, want, atol=0.2), (stem, got, want)

    # The curation report counts what changed; lineage names the version.
    body = {"artifacts": {"key": {"any_": ["pyroblur-curation"]}}, "sort": "CREATED_DESC", "limit": 1}
    table = API.post(f"{prefect_server}/artifacts/filter", json=body).json()[0]["data"]
    rows = {r["reason"]: r["count"] for r in (json.loads(table) if isinstance(table, str) else table)}
    assert rows["v0001: images"] == 4
    assert rows["v0001: removed"] == 1 and rows["v0001: added"] == 2 and rows["v0001: moved"] == 1
    lineage = json.loads((get_paths().root / "lineage.json").read_text())["models"]
    assert lineage[second["promotion"]["digest"]]["corrections"] == "v0001"

    # Raw data untouched; the dataset now holds the corrected labels, so nothing is left to export.
    assert _tree_digest(raw) == raw_before
    proc = _cli(tmp_path, prefect_server, "corrections", "export")
    assert proc.returncode == 0 and "nothing to export" in proc.stdout, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- library, fast


@pytest.mark.parametrize(
    ("before", "after", "want"),
    [
        ([], [], {"removed": 0, "added": 0, "moved": 0}),
        ([(0, 10, 10, 30, 30)], [(0, 10, 10, 30, 30)], {"removed": 0, "added": 0, "moved": 0}),
        ([(0, 10, 10, 30, 30)], [], {"removed": 1, "added": 0, "moved": 0}),
        ([], [(1, 0, 0, 5, 5)], {"removed": 0, "added": 1, "moved": 0}),
        ([(0, 10, 10, 30, 30)], [(0, 14, 14, 34, 34)], {"removed": 0, "added": 0, "moved": 1}),
        ([(0, 10, 10, 30, 30)], [(1, 14, 14, 34, 34)], {"removed": 1, "added": 1, "moved": 0}),  # class changed
        ([(0, 10, 10, 30, 30)], [(0, 60, 60, 80, 80)], {"removed": 1, "added": 1, "moved": 0}),  # elsewhere
    ],
)
def test_label_changes(before, after, want):
    from curation_data import box

    from pyroblur.curation.corrections import label_changes

    def boxes(rows: list) -> list:
        return [box(*xyxy, cls=c) for c, *xyxy in rows]

    assert label_changes(boxes(before), boxes(after)) == want


@pytest.mark.integration
def test_resolve_names_missing_versions_and_keeps_the_plain_digest(tmp_path):
    from pyroblur.core.errors import ConfigurationError
    from pyroblur.curation.corrections import data_digest, resolve

    assert resolve("no-corrections-here", "latest") is None and resolve("x", "none") is None
    with pytest.raises(ConfigurationError, match="v0009"):
        resolve("no-corrections-here", "v0009")
    assert data_digest("abc", None) == "abc"  # lineage recorded before corrections still matches


@pytest.mark.integration
def test_unexported_edits_are_rebuilt_from_the_records(tmp_path, caplog):
    import uuid

    import fiftyone as fo
    from curation_data import box, photo, record, save_jpeg

    from pyroblur.config import CurationConfig
    from pyroblur.curation.importer import curate

    recs = [record(save_jpeg(photo(i, 64), tmp_path / f"{i}.jpg"), (64, 64), [box(8, 8, 40, 40)]) for i in range(3)]
    name = f"pyroblur-unexported-{uuid.uuid4().hex[:6]}"
    cfg = CurationConfig(dataset_name=name)
    curate(recs, cfg, "c1")
    ds = fo.load_dataset(name)
    s = ds.first()
    original = [d.bounding_box for d in s.ground_truth.detections]
    s.ground_truth.detections[0].bounding_box = [0.5, 0.5, 0.2, 0.2]
    s.save()
    with caplog.at_level("WARNING"):
        curate(recs, cfg, "c2")
    assert "1 curated samples have label edits that were not exported" in caplog.text
    restored = fo.load_dataset(name).match({"filepath": s.filepath}).first()
    assert [d.bounding_box for d in restored.ground_truth.detections] == original
