"""The anonymizer runs a model at the size it was trained at unless told otherwise.

Regression: a model trained at 192 px and run at 640 px saw every face 3x too large and left
most faces and plates of the demo images visible.
"""

from types import SimpleNamespace

import pytest

from pyroblur.anonymize.detector import UltralyticsDetector, trained_imgsz


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (SimpleNamespace(), 640),
        (SimpleNamespace(overrides={"imgsz": 192}), 192),
        (SimpleNamespace(overrides={}, ckpt={"train_args": {"imgsz": 320}}), 320),
        (SimpleNamespace(overrides={"imgsz": [256, 320]}), 320),
        (SimpleNamespace(overrides={"imgsz": None}, ckpt=None), 640),
    ],
)
def test_trained_imgsz(model, expected):
    assert trained_imgsz(model) == expected


def test_detector_uses_the_checkpoint_training_size(tmp_path):
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    weights = tmp_path / "trained192.pt"
    YOLO("yolo11n.yaml").save(weights)
    strip_optimizer(weights, updates={"train_args": {"imgsz": 192, "task": "detect"}})
    assert UltralyticsDetector(weights, device="cpu").imgsz == 192
    assert UltralyticsDetector(weights, device="cpu", imgsz=320).imgsz == 320

    plain = tmp_path / "plain.pt"
    YOLO("yolo11n.yaml").save(plain)
    assert UltralyticsDetector(plain, device="cpu").imgsz == 640
