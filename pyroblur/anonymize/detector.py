"""Detectors: anything that turns a batch of frames into :class:`Detections`.

The anonymizer only needs the :class:`Detector` protocol, so tests inject an oracle that
returns ground-truth boxes and the real path wraps an ultralytics model (``.pt`` or an
exported ``.onnx``) behind :class:`UltralyticsDetector`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pyroblur import CLASSES
from pyroblur.core.detections import Detections
from pyroblur.core.devices import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["Detector", "UltralyticsDetector", "filter_detections", "resolve_device"]


@runtime_checkable
class Detector(Protocol):
    """Callable that detects faces and plates.

    ``__call__(frames)`` takes a list of ``(H, W, 3)`` BGR uint8 images and returns one
    :class:`Detections` per frame, boxes in **pixels** of that frame, class ids from
    :data:`pyroblur.CLASSES`.
    """

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]: ...


def filter_detections(
    dets: Detections,
    conf: Mapping[int, float],
    classes: Iterable[int] | None = None,
) -> Detections:
    """Keep boxes whose class is in ``classes`` (all when ``None``) and whose confidence
    reaches that class's threshold in ``conf`` (0 when a class has no entry)."""
    if len(dets) == 0:
        return dets
    keep = np.ones(len(dets), bool)
    if classes is not None:
        keep &= np.isin(dets.class_id, np.fromiter(classes, np.int64))
    thresholds = np.array([conf.get(int(c), 0.0) for c in dets.class_id], np.float32)
    keep &= dets.confidence >= thresholds
    return dets.filter(keep)


def trained_imgsz(model: Any, default: int = 640) -> int:
    """The input size (pixels) a YOLO model was trained or exported at, else ``default``."""
    size = (getattr(model, "overrides", None) or {}).get("imgsz")
    if size is None:
        size = ((getattr(model, "ckpt", None) or {}).get("train_args") or {}).get("imgsz")
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size) if size else default


class UltralyticsDetector:
    """A YOLO model (``.pt`` weights or an exported ``.onnx``) as a :class:`Detector`.

    Args:
        weights: path of the ``.pt`` or ``.onnx`` file.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda:0"``, ``"mps"``...
        half: FP16 inference; ``None`` means on when the device is CUDA (ignored elsewhere).
        conf: per-class confidence thresholds ``{class_id: threshold}``; missing classes use
            0.25.
        classes: class ids to return (default both faces and plates).
        imgsz: inference size in pixels (longest side), ultralytics' ``imgsz``; ``None`` uses
            the size the model was trained (or exported) at.
        iou: NMS IoU threshold.

    Batched inference: the caller passes a list of frames and the whole list runs as one
    batch (callers chunk by their ``batch_size``).
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str | None = "auto",
        half: bool | None = None,
        conf: Mapping[int, float] | None = None,
        classes: Sequence[int] | None = None,
        imgsz: int | None = None,
        iou: float = 0.5,
    ) -> None:
        from ultralytics import YOLO

        self.weights = Path(weights)
        if not self.weights.is_file():
            raise FileNotFoundError(f"model weights not found: {self.weights}")
        self.device = resolve_device(device)
        is_cuda = self.device.startswith("cuda") or self.device.isdigit()
        self.half = bool(is_cuda if half is None else half and is_cuda)
        self.conf = {i: 0.25 for i in range(len(CLASSES))} | dict(conf or {})
        self.classes = tuple(range(len(CLASSES)) if classes is None else classes)
        self.iou = iou
        task = "detect" if self.weights.suffix.lower() == ".onnx" else None
        self.model = YOLO(str(self.weights), task=task)
        # Objects look as large as in training only at the training size: a model trained at
        # 192 px and run at 640 px sees every face 3x too large and misses most of them.
        self.imgsz = imgsz or trained_imgsz(self.model)
        self._precision = self._precision_args(self.half)
        self._to_ours = self._class_map(getattr(self.model, "names", None) or {})
        # Ask the model only for its classes that map to ones we anonymize.
        self._model_classes = sorted(m for m, ours in self._to_ours.items() if ours in self.classes)
        logger.info(
            "Loaded %s on %s (imgsz=%d, half=%s, classes=%s, conf=%s)",
            self.weights,
            self.device,
            self.imgsz,
            self.half,
            [CLASSES[c] for c in self.classes],
            self.conf,
        )

    @staticmethod
    def _precision_args(half: bool) -> dict[str, Any]:
        """FP16 request in the spelling of the installed ultralytics (``quantize=16`` since
        8.4, ``half=True`` before)."""
        if not half:
            return {}
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}

    @staticmethod
    def _class_map(names: Mapping[int, str] | Sequence[str]) -> dict[int, int]:
        """Model class index -> our class id, by name; falls back to the index itself when
        the model does not name our classes (e.g. a freshly built ``yolo11n.yaml``)."""
        if not isinstance(names, Mapping):
            names = dict(enumerate(names))
        by_name = {int(i): CLASSES.index(n) for i, n in names.items() if n in CLASSES}
        if by_name:
            return by_name
        logger.warning(
            "Model class names %s do not include %s; assuming class ids 0=face, 1=license_plate",
            list(names.values())[:5],
            CLASSES,
        )
        return {i: i for i in range(len(CLASSES))}

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        if not self._model_classes:
            return [Detections.empty() for _ in frames]
        results: list[Any] = self.model.predict(
            list(frames),
            conf=min(self.conf.get(c, 0.25) for c in self.classes),
            iou=self.iou,
            classes=self._model_classes,
            device=self.device,
            imgsz=self.imgsz,
            verbose=False,
            **self._precision,
        )
        out = []
        for result in results:
            dets = Detections.from_ultralytics(result)
            if len(dets):
                lut = np.full(int(dets.class_id.max()) + 1, -1, np.int64)
                for m, ours in self._to_ours.items():
                    if m < len(lut):
                        lut[m] = ours
                dets = Detections(dets.xyxy, lut[dets.class_id], dets.confidence)
                dets = filter_detections(dets, self.conf, self.classes)
            out.append(dets)
        return out
