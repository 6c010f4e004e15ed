"""Temporal memory for video: a face missed in one frame must not leak.

:class:`TemporalMemory` keeps each box alive for ``memory_frames`` frames after it was last
detected. Boxes are linked from frame to frame by IoU (greedy, same class), so a moving
object is one track: its remembered box follows the last seen position, optionally moved
on at the track's recent velocity and grown a little per missed frame so it still covers
an object that kept moving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pyroblur.core.detections import Detections
from pyroblur.evaluation.metrics import box_iou

logger = logging.getLogger(__name__)

__all__ = ["TemporalMemory", "box_iou"]


@dataclass
class _Track:
    box: np.ndarray  # (4,) pixels, last detected position
    class_id: int
    confidence: float
    velocity: np.ndarray  # (4,) pixels per frame
    missed: int = 0


class TemporalMemory:
    """Carry boxes across frames.

    Args:
        memory_frames: how many frames a box stays after it was last detected (0 = off).
        iou_threshold: minimum IoU for a detection to continue a track.
        predict_motion: move remembered boxes at the track's velocity (pixels/frame).
        grow_per_frame: enlarge remembered boxes by this fraction of their size per missed
            frame (e.g. 0.05 = 5 %), a margin for motion the velocity did not capture.

    Use one instance per video, calling :meth:`update` once per frame in order.
    """

    def __init__(
        self,
        memory_frames: int = 5,
        iou_threshold: float = 0.3,
        *,
        predict_motion: bool = True,
        grow_per_frame: float = 0.05,
    ) -> None:
        if memory_frames < 0:
            raise ValueError(f"memory_frames must be >= 0, got {memory_frames}")
        self.memory_frames = memory_frames
        self.iou_threshold = iou_threshold
        self.predict_motion = predict_motion
        self.grow_per_frame = grow_per_frame
        self._tracks: list[_Track] = []

    def reset(self) -> None:
        self._tracks = []

    def _predicted(self, t: _Track) -> np.ndarray:
        box = t.box + (t.velocity * t.missed if self.predict_motion else 0)
        if self.grow_per_frame and t.missed:
            centre = (box[:2] + box[2:]) / 2
            half = (box[2:] - box[:2]) / 2 * (1 + self.grow_per_frame * t.missed)
            box = np.concatenate([centre - half, centre + half])
        return box.astype(np.float32)

    def update(self, dets: Detections) -> tuple[Detections, np.ndarray]:
        """Feed this frame's detections; get the boxes to hide.

        Returns:
            ``(detections, remembered)``: this frame's detections plus remembered boxes of
            tracks not seen in this frame, and a bool ``(N,)`` mask that is true for the
            remembered rows.
        """
        if self.memory_frames == 0:
            return dets, np.zeros(len(dets), bool)
        for t in self._tracks:
            t.missed += 1
        prev = [self._predicted(t) for t in self._tracks]
        iou = box_iou(np.array(prev).reshape(-1, 4), dets.xyxy)
        matched_track: set[int] = set()
        matched_det: set[int] = set()
        # Greedy matching, best IoU first: a handful of boxes per frame, no need for Hungarian.
        for ti, di in sorted(np.argwhere(iou >= self.iou_threshold), key=lambda p: -iou[p[0], p[1]]):
            if ti in matched_track or di in matched_det:
                continue
            t = self._tracks[ti]
            if t.class_id != int(dets.class_id[di]):
                continue
            new = dets.xyxy[di].astype(np.float32)
            step = (new - t.box) / max(1, t.missed)
            t.velocity = 0.5 * t.velocity + 0.5 * step
            t.box, t.confidence, t.missed = new, float(dets.confidence[di]), 0
            matched_track.add(ti)
            matched_det.add(di)
        for di in range(len(dets)):
            if di not in matched_det:
                self._tracks.append(
                    _Track(
                        box=dets.xyxy[di].astype(np.float32),
                        class_id=int(dets.class_id[di]),
                        confidence=float(dets.confidence[di]),
                        velocity=np.zeros(4, np.float32),
                    )
                )
        self._tracks = [t for t in self._tracks if t.missed <= self.memory_frames]
        kept = [t for t in self._tracks if t.missed > 0]
        if not kept:
            return dets, np.zeros(len(dets), bool)
        merged = Detections(
            np.concatenate([dets.xyxy, np.stack([self._predicted(t) for t in kept])]),
            np.concatenate([dets.class_id, [t.class_id for t in kept]]),
            np.concatenate([dets.confidence, [t.confidence for t in kept]]),
        )
        remembered = np.zeros(len(merged), bool)
        remembered[len(dets) :] = True
        return merged, remembered
