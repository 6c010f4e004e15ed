"""The one detection type of the project, with adapters from ultralytics and FiftyOne.

Anonymization and evaluation code use :class:`Detections` only; they never touch a
library's own result types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes of one image.

    Attributes:
        xyxy: ``(N, 4)`` float32 array of ``x1, y1, x2, y2`` in **pixels** of the image.
        class_id: ``(N,)`` int64 array of class ids (0 face, 1 license_plate).
        confidence: ``(N,)`` float32 array of scores in ``[0, 1]`` (1.0 for ground truth).
    """

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        cls = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        if conf.size == 0 and cls.size:
            conf = np.ones(cls.shape, np.float32)
        if not (len(xyxy) == len(cls) == len(conf)):
            raise ValueError(
                f"Detections arrays disagree in length: xyxy {len(xyxy)}, class_id {len(cls)}, confidence {len(conf)}"
            )
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "class_id", cls)
        object.__setattr__(self, "confidence", conf)

    def __len__(self) -> int:
        return len(self.class_id)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32))

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        """The rows of every part, in order (empty when there are none)."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([d.xyxy for d in parts]),
            np.concatenate([d.class_id for d in parts]),
            np.concatenate([d.confidence for d in parts]),
        )

    def filter(self, mask: np.ndarray) -> Detections:
        """Keep the rows where ``mask`` (bool, shape ``(N,)``) is true."""
        return Detections(self.xyxy[mask], self.class_id[mask], self.confidence[mask])

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """Adapter from one ``ultralytics.engine.results.Results``."""
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return cls.empty()
        return cls(
            boxes.xyxy.cpu().numpy(),
            boxes.cls.cpu().numpy().astype(np.int64),
            boxes.conf.cpu().numpy(),
        )

    @classmethod
    def from_fiftyone(cls, detections: Any, width: int, height: int, classes: tuple[str, ...]) -> Detections:
        """Adapter from ``fo.Detections`` or a list of ``fo.Detection`` (relative ``[x, y, w, h]``
        boxes) to pixels of a ``width`` x ``height`` image; labels not in ``classes`` are skipped."""
        rows, ids, scores = [], [], []
        items = detections.detections if hasattr(detections, "detections") else detections
        for det in items or []:
            if det.label not in classes:
                continue
            x, y, w, h = det.bounding_box
            rows.append([x * width, y * height, (x + w) * width, (y + h) * height])
            ids.append(classes.index(det.label))
            scores.append(1.0 if det.confidence is None else float(det.confidence))
        if not rows:
            return cls.empty()
        return cls(np.array(rows), np.array(ids), np.array(scores))


def clip_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip ``(N, 4)`` pixel boxes to the image ``[0, width] x [0, height]``."""
    out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out
