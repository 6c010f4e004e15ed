import json

import numpy as np
import pytest
import yaml

from pyroblur.core.errors import PermanentError
from pyroblur.curation.export import ExportItem, item_boxes, read_stamp, save_yolo_dataset
from pyroblur.data.formats.yolo import to_yolo_labels


@pytest.mark.parametrize(
    ("xyxy", "cls", "expected"),
    [
        (np.zeros((0, 4)), np.zeros(0), ""),
        ([[0, 0, 100, 50]], [0], "0 0.500000 0.500000 1.000000 1.000000\n"),
        (
            [[10, 5, 30, 25], [50, 0, 100, 10]],
            [1, 0],
            "1 0.200000 0.300000 0.200000 0.400000\n0 0.750000 0.100000 0.500000 0.200000\n",
        ),
    ],
)
def test_export_item_labels(xyxy, cls, expected):
    item = ExportItem("a.jpg", "a", "train", 100, 50, np.array(xyxy, np.float32).reshape(-1, 4), np.array(cls))
    assert to_yolo_labels(item_boxes(item), 100, 50) == expected


def test_save_yolo_dataset(tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"jpeg")
    items = [
        ExportItem(str(img), "a", "train", 100, 50, np.array([[0, 0, 50, 50]], np.float32), np.array([0])),
        ExportItem(str(img), "b", "test", 100, 50, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
    ]
    items.append(ExportItem(str(img), "c", "val", 100, 50, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    out = tmp_path / "out"
    counts = save_yolo_dataset(items, out, "abc")
    assert counts == {"train": 1, "test": 1, "val": 1}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "face", 1: "license_plate"}
    assert (out / "labels/train/a.txt").read_text().startswith("0 0.250000")
    assert (out / "labels/test/b.txt").read_text() == ""
    assert read_stamp(out) == "abc"
    assert not (tmp_path / "out.part").exists()
    assert read_stamp(tmp_path / "missing") is None


def test_export_never_uses_train_as_val_silently(tmp_path, caplog):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"jpeg")
    items = [
        ExportItem(str(img), "a", "train", 100, 50, np.array([[0, 0, 50, 50]], np.float32), np.array([0])),
        ExportItem(str(img), "b", "test", 100, 50, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
    ]
    with pytest.raises(PermanentError, match="no validation images"):
        save_yolo_dataset(items, tmp_path / "refused", "abc")
    assert not (tmp_path / "refused").exists()
    with caplog.at_level("WARNING", logger="pyroblur.curation.export"):
        counts = save_yolo_dataset(items, tmp_path / "allowed", "abc", allow_train_as_val=True)
    assert counts == {"train": 1, "test": 1}
    assert "validating on the training images" in caplog.text
    data = yaml.safe_load((tmp_path / "allowed" / "data.yaml").read_text())
    assert data["val"] == "images/train" and data["pyroblur_val_is"] == "train"
    assert json.loads((tmp_path / "allowed" / ".pyroblur-export.json").read_text())["substituted"] == {"val": "train"}
