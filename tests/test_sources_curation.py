"""What a real-layout source records reaches curation as rejections it reports (FiftyOne DB)."""

from __future__ import annotations

import uuid
from pathlib import Path

from test_sources import write_coco2017

from pyroblur.config import CurationConfig
from pyroblur.curation.importer import curate
from pyroblur.data.sources import fetch_source
from pyroblur.data.sources.models import LocalFolderSource


def test_coco_missing_file_and_bad_annotation_become_reported_rejections(tmp_path: Path) -> None:
    write_coco2017(tmp_path / "coco")
    src = LocalFolderSource(
        name="coco", path=tmp_path / "coco", format="coco", class_map={"person": "face", "car": "license_plate"}
    )
    records = fetch_source(src, tmp_path / "raw")
    manifest = curate(records, CurationConfig(dataset_name=f"coco-{uuid.uuid4().hex[:6]}"), "d")
    assert manifest.rejected == {"missing_file": 1, "bad_labels": 1}
    assert manifest.num_curated == 2
