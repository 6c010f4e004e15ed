"""A YOLO model exported to ONNX by ultralytics, run with onnxruntime alone.

Loading torch and ultralytics takes most of the start-up of a one-image run (seconds on a
CPU); an exported ``.onnx`` needs neither. The pre- and post-processing follow ultralytics'
own for detection exports (checked against ``YOLO(path).predict`` on the same file in
tests/test_anonymize_onnx.py): a letterbox to ``imgsz`` x ``imgsz`` (grey 114, centred), RGB
scaled to 0-1, output ``(batch, 4 + classes, anchors)`` with centre-x, centre-y, width,
height in input pixels, then per-class NMS.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pyroblur.anonymize.detector import TiledDetector, filter_detections
from pyroblur.core.detections import Detections
from pyroblur.core.devices import cpu_without_torch, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["OnnxDetector", "session_options"]


def session_options() -> Any:
    """onnxruntime session options for our detectors: worker threads that sleep when idle.

    onnxruntime's default keeps its intra-op threads spinning between operators; on a CPU
    shared with other work (a decoder, an encoder, the other detector of a union, other jobs)
    that spinning is CPU time spent on nothing: CenterFace on a 1280x720 frame on 2 loaded
    cores took 0.93 s of CPU time with spinning, 0.67 s without (``docs/benchmarks.md``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """``image`` scaled to fit ``size`` x ``size`` and centred on grey 114 (ultralytics'
    LetterBox). Returns ``(canvas, scale, (pad_x, pad_y))`` in pixels."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else image
    dw, dh = (size - nw) / 2, (size - nh) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return canvas, r, (left, top)


class OnnxDetector(TiledDetector):
    """An ultralytics ONNX detection export as a :class:`~pyroblur.anonymize.detector.Detector`.

    Args mirror :class:`~pyroblur.anonymize.detector.UltralyticsDetector` (``half`` does
    not apply: the precision is the export's).
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str | None = "auto",
        conf: Mapping[int, float] | None = None,
        classes: Sequence[int] | None = None,
        imgsz: int | None = None,
        iou: float = 0.5,
        tiles: bool = False,
        tile_min_ratio: float = 1.5,
        tile_batch: int = 32,
        max_det: int = 300,
    ) -> None:
        import onnxruntime as ort

        self._configure(
            weights,
            conf=conf,
            classes=classes,
            iou=iou,
            tiles=tiles,
            tile_min_ratio=tile_min_ratio,
            tile_batch=tile_batch,
        )
        # auto on a host without a GPU driver is the CPU: no torch import to find that out
        self.device = "cpu" if cpu_without_torch(device) else resolve_device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.weights), session_options(), providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        names = ast.literal_eval(meta.get("names", "{}")) or {}
        trained = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
        shape = self.session.get_inputs()[0].shape  # [batch, 3, h, w], str where dynamic
        static = isinstance(shape[2], int) and isinstance(shape[3], int)
        self.imgsz = int(shape[2]) if static else int(imgsz or max(trained))
        if static and imgsz and imgsz != self.imgsz:
            logger.warning("%s has a fixed input of %d px; --imgsz %d ignored", self.weights, self.imgsz, imgsz)
        self.batch_fixed = int(shape[0]) if isinstance(shape[0], int) else None
        self.max_det = max_det
        self._map_classes(names)
        self._input = self.session.get_inputs()[0].name
        logger.info("Loaded %s with onnxruntime %s (imgsz=%d)", self.weights, providers[0], self.imgsz)

    def _run(self, blob: np.ndarray) -> np.ndarray:
        if self.batch_fixed is None or self.batch_fixed == len(blob):
            return self.session.run(None, {self._input: blob})[0]
        return np.concatenate([self.session.run(None, {self._input: blob[i : i + 1]})[0] for i in range(len(blob))])

    def _predict(self, images: list[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        boxed = [letterbox(im, self.imgsz) for im in images]
        blob = np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c, _, _ in boxed]).transpose(0, 3, 1, 2)
        output = self._run(np.ascontiguousarray(blob, dtype=np.float32) / 255.0)
        threshold = min(self.conf.get(c, 0.25) for c in self.classes)
        out = []
        for (_, r, (px, py)), pred in zip(boxed, output, strict=True):
            pred = pred.T  # (anchors, 4 + classes)
            scores = pred[:, 4:]
            cls = scores.argmax(1)
            score = scores[np.arange(len(cls)), cls]
            keep = (score >= threshold) & np.isin(cls, self._model_classes)
            if not keep.any():
                out.append(Detections.empty())
                continue
            xywh, cls, score = pred[keep, :4], cls[keep], score[keep]
            xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
            xyxy = (xyxy - np.array([px, py, px, py], np.float32)) / r
            # NMS on the unclipped boxes, clipping after, as ultralytics does: clipping first
            # raises the overlap of boxes that run past the border and drops more of them.
            ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            idx = cv2.dnn.NMSBoxesBatched(ltwh.tolist(), score.tolist(), cls.tolist(), threshold, self.iou)
            idx = np.asarray(idx, np.int64).reshape(-1)[: self.max_det]
            h, w = images[len(out)].shape[:2]
            xyxy = np.clip(xyxy, 0, [w, h, w, h])
            lut = np.full(int(cls.max()) + 1, -1, np.int64)
            for m, ours in self._to_ours.items():
                if m < len(lut):
                    lut[m] = ours
            dets = Detections(xyxy[idx], lut[cls[idx]], score[idx])
            out.append(filter_detections(dets, self.conf, self.classes))
        return out
