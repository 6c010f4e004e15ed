"""TIFF test images are benchmarked (the benchmark's own suffix list once lacked ``.tif``)."""

from __future__ import annotations

import cv2
import numpy as np
import yaml

from pyroblur.core.io import IMAGE_SUFFIXES
from pyroblur.evaluation.benchmark import load_yolo_split
from pyroblur.evaluation.metrics import evaluate


def _dataset(tmp_path, suffixes):
    root = tmp_path / "ds"
    (root / "images" / "test").mkdir(parents=True)
    (root / "labels" / "test").mkdir(parents=True)
    for i, suffix in enumerate(suffixes):
        img = np.full((40, 60, 3), 30 * i, np.uint8)
        assert cv2.imwrite(str(root / "images" / "test" / f"img{i}{suffix}"), img)
        (root / "labels" / "test" / f"img{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump({"path": str(root), "test": "images/test", "names": {0: "face", 1: "license_plate"}})
    )
    return data


def test_tiff_images_are_in_the_test_set_and_scored(tmp_path):
    assert {".tif", ".tiff"} <= IMAGE_SUFFIXES
    data = _dataset(tmp_path, [".jpg", ".tif", ".tiff", ".png"])
    test = load_yolo_split(data, "test")
    assert sorted(p.suffix for p in test.images) == [".jpg", ".png", ".tif", ".tiff"]
    tif = [i for i, p in enumerate(test.images) if p.suffix == ".tif"][0]
    # 60x40 image, box centred, half the size: pixels 15..45 x 10..30
    np.testing.assert_allclose(test.gt[tif].xyxy, [[15, 10, 45, 30]])
    # predictions equal to the ground truth score perfectly, TIFF included
    result = evaluate(test.gt, test.gt)
    assert result.per_class[0].num_gt == 4  # the TIFF boxes count
    assert result.per_class[0].ap50 > 0.99
