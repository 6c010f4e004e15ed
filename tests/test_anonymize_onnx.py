"""The torch-free ONNX runner against the real thing: an ultralytics ONNX export run by
ultralytics itself (``YOLO(path).predict``) and by our onnxruntime-only
:class:`~pyroblur.anonymize.onnx_detector.OnnxDetector` must give the same boxes; its
letterbox must equal ultralytics' ``LetterBox``; building from a ``.onnx`` must not import
torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyroblur.anonymize.onnx_detector import OnnxDetector, letterbox
from pyroblur.evaluation.metrics import box_iou

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 160


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("onnx")
    YOLO("yolo11n.yaml").save(folder / "random.pt")
    return Path(YOLO(str(folder / "random.pt")).export(format="onnx", imgsz=SIZE, dynamic=True, verbose=False))


def _scene(h: int, w: int) -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(np.ascontiguousarray(astronaut()[..., ::-1]), (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(("h", "w"), [(SIZE, SIZE), (100, 240), (300, 200)])
def test_letterbox_matches_ultralytics(h, w) -> None:
    from ultralytics.data.augment import LetterBox

    image = _scene(h, w)
    ours, _, _ = letterbox(image, SIZE)
    theirs = LetterBox((SIZE, SIZE), auto=False, center=True)(image=image)
    np.testing.assert_array_equal(ours, theirs)


def test_same_boxes_as_ultralytics_on_the_same_export(onnx_model) -> None:
    """Decoding, un-letterboxing and scores agree with ultralytics on the same export.

    A random head scores every anchor the same, so which of two overlapping equal-score boxes
    NMS keeps is up to each implementation's sort (and one different pick changes what it
    suppresses next: once 14 of 32 kept boxes differed). The comparison is therefore made
    against the other runner's candidates before suppression (NMS at IoU 1.0 keeps them all):
    every box one runner keeps must be a candidate of the other, at the same place with the
    same score. The suppression itself is OpenCV's NMSBoxesBatched.
    """
    from ultralytics import YOLO

    image = _scene(SIZE, SIZE)
    conf = 1e-6
    ours = OnnxDetector(onnx_model, conf={0: conf, 1: conf}, device="cpu")([image])[0]
    ours_all = OnnxDetector(onnx_model, conf={0: conf, 1: conf}, iou=1.0, max_det=100000, device="cpu")([image])[0]
    model = YOLO(str(onnx_model), task="detect")
    theirs = model.predict(image, imgsz=SIZE, conf=conf, iou=0.5, classes=[0, 1], verbose=False)[0].boxes
    theirs_all = model.predict(image, imgsz=SIZE, conf=conf, iou=1.0, classes=[0, 1], verbose=False, max_det=100000)[
        0
    ].boxes
    assert len(ours) > 0 and len(theirs) > 0
    assert len(ours_all) == len(theirs_all) > len(ours)  # the same candidates before suppression

    def found_in(boxes, scores, xyxy, conf_) -> np.ndarray:
        same = (box_iou(boxes, xyxy) > 0.999) & np.isclose(scores[:, None], conf_[None, :], rtol=1e-4)
        return same.any(axis=1)

    t_xyxy, t_conf = theirs.xyxy.cpu().numpy(), theirs.conf.cpu().numpy()
    ta_xyxy, ta_conf = theirs_all.xyxy.cpu().numpy(), theirs_all.conf.cpu().numpy()
    assert found_in(ours_all.xyxy, ours_all.confidence, ta_xyxy, ta_conf).all()
    assert found_in(ours.xyxy, ours.confidence, ta_xyxy, ta_conf).all()
    assert found_in(t_xyxy, t_conf, ours_all.xyxy, ours_all.confidence).all()
    assert OnnxDetector(onnx_model, device="cpu").imgsz == SIZE  # from the export's metadata


def test_onnx_weights_do_not_import_torch(onnx_model, tmp_path) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from pyroblur.anonymize import AnonymizeOptions, build_detector\n"
        f"w = Path({str(onnx_model)!r})\n"
        "import numpy as np\n"
        "for face in ('yolo', 'auto'):  # auto: an unproven model runs in the union with CenterFace\n"
        "    d = build_detector(AnonymizeOptions(weights=w, device='cpu', face_detector=face))\n"
        "    d([np.zeros((64, 64, 3), np.uint8)])\n"
        "    print('torch' in sys.modules, type(d).__name__)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "OnnxDetector", "False", "UnionDetector"]
