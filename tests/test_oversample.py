"""Oversampling a rare class: augmented copies of its training images (albumentations) bring the
train split up to its share of the balance target; val and test hold no copy, the originals and
the copies are counted apart."""

from __future__ import annotations

import math
import uuid

import cv2
import numpy as np
import pytest
from curation_data import box, photo, record, save_jpeg

from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
from pyroblur.curation.dataset import export_items
from pyroblur.curation.export import read_augmented, save_yolo_dataset
from pyroblur.curation.importer import curate
from pyroblur.curation.oversample import train_shortfall
from pyroblur.curation.split import balance_and_split

pytestmark = pytest.mark.integration

TARGET = 10


def test_shortfall_only_for_classes_below_the_target():
    assert train_shortfall({"face": 10, "license_plate": 4}, {"face": 8, "license_plate": 3}, 10, 0.8) == {
        "license_plate": 5
    }
    assert train_shortfall({"face": 10, "license_plate": 10}, {"face": 8, "license_plate": 8}, 10, 0.8) == {}
    assert train_shortfall({"face": 3}, {"face": 0}, 10, 0.8) == {}  # nothing in train to copy from


def test_rare_class_is_oversampled_in_train_only(tmp_path):
    recs = []
    for i in range(24):  # faces: plenty
        p = save_jpeg(photo(i, 96), tmp_path / "imgs" / f"f{i}.jpg")
        recs.append(record(p, (96, 96), [box(10, 10, 40, 44, cls=0)]))
    for i in range(24, 29):  # plates: five images, half the target
        p = save_jpeg(photo(i, 96), tmp_path / "imgs" / f"p{i}.jpg")
        recs.append(record(p, (96, 96), [box(20, 50, 70, 66, cls=1)]))
    name = f"pyroblur-oversample-{uuid.uuid4().hex[:6]}"
    curate(recs, CurationConfig(dataset_name=name), "c")
    bal = BalanceConfig(samples_per_class=TARGET, oversample=True, allow_small_evidence=True)
    split = balance_and_split(name, bal, SplitConfig(), "s")
    assert split.achieved["license_plate"] == 5 and split.achieved["face"] >= TARGET
    want = math.ceil(TARGET * 0.8)
    assert split.oversample == {"license_plate": want - split.per_class["train"]["license_plate"]}

    out = tmp_path / "export"
    counts = save_yolo_dataset(
        export_items(name), out, "d", allow_train_as_val=True, oversample=split.oversample, seed=3
    )
    augmented = read_augmented(out)
    assert augmented == split.oversample  # one copy per missing image, each holding a plate

    def files(split_name: str) -> list:
        return sorted((out / "images" / split_name).glob("*")) if (out / "images" / split_name).is_dir() else []

    originals = [p for p in files("train") if "_aug" not in p.stem]
    copies = [p for p in files("train") if "_aug" in p.stem]
    assert counts["train"] == len(originals) and len(copies) == sum(augmented.values())  # counted apart

    def has_plate(img) -> bool:
        label = out / "labels" / img.parent.name / f"{img.stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.stat().st_size else np.zeros((0, 5))
        return bool((rows[:, 0] == 1).any())

    assert sum(has_plate(p) for p in originals + copies) == want  # the train split reaches the target
    # Each copy comes from a training original, differs from it, and no copy is in val or test.
    train_stems = {p.stem for p in originals}
    for c in copies:
        stem = c.stem.rsplit("_aug", 1)[0]
        assert stem in train_stems
        orig = next(p for p in originals if p.stem == stem)
        a, b = cv2.imread(str(orig)), cv2.imread(str(c))
        assert a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() > 2
    for held in ("val", "test"):
        assert not any("_aug" in p.stem for p in files(held))
        assert not {p.stem for p in files(held)} & train_stems


def test_no_oversampling_unless_asked(tmp_path):
    recs = []
    for i in range(12):
        p = save_jpeg(photo(i, 96), tmp_path / "imgs" / f"{i}.jpg")
        recs.append(record(p, (96, 96), [box(20, 50, 70, 66, cls=i % 2)]))
    name = f"pyroblur-oversample-{uuid.uuid4().hex[:6]}"
    curate(recs, CurationConfig(dataset_name=name), "c")
    split = balance_and_split(
        name, BalanceConfig(samples_per_class=TARGET, allow_small_evidence=True), SplitConfig(), "s"
    )
    assert split.oversample == {}
    out = tmp_path / "export"
    save_yolo_dataset(export_items(name), out, "d", allow_train_as_val=True, oversample=split.oversample)
    assert read_augmented(out) == {} and not list(out.rglob("*_aug*"))
