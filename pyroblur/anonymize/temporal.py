"""Temporal gap filling for video: a face missed for a frame or two must not leak.

:class:`TrackFiller` links each frame's detections into tracks with ByteTrack's IoU
association (:class:`_ClassTracker`; one tracker per class, so a face never continues a plate's
track) and holds
``max_gap`` frames back (a look-ahead buffer). When a frame leaves the buffer it gets:

* every detection of that frame, unchanged: a detection is never removed or moved;
* for each track detected before *and* after it within ``max_gap + 1`` frames, a box
  interpolated linearly between those two detections (the gap is filled);
* for each track whose last detection lies at most ``max_gap`` frames back with no later
  one in sight, a *hold*: the last detected box, moved on at the track's measured centre
  velocity, same size;
* for each track whose first detection lies at most ``max_gap`` frames ahead, the same
  hold backwards (an object is usually visible a little before the detector first fires).

A filled box is never larger than ``max_scale`` times its track's largest detected box
(width and height separately). The old scheme grew remembered boxes 5 % per frame without
bound: one face box reached 3.3 times the frame's area. Interpolated and held boxes have
sizes between detected ones, so the bound only clips a box that a numeric corner case
would otherwise let through; it is checked, not assumed.

Boxes are in pixels, ``(x1, y1, x2, y2)``; frames are numbered from 0 in decode order.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyroblur.core.detections import Detections

logger = logging.getLogger(__name__)

__all__ = ["FilledFrame", "TrackFiller", "bound_box", "fill_video_detections"]


@dataclass
class FilledFrame:
    """The boxes to hide in one frame.

    ``detections`` holds this frame's detector output first (rows ``[:n_detected]``, in the
    detector's order) followed by filled boxes; ``filled`` is true for the filled rows and
    ``track_id`` gives each row's track (-1 for a detection no track claimed).
    """

    index: int
    detections: Detections
    filled: np.ndarray
    track_id: np.ndarray
    n_detected: int


@dataclass
class _Track:
    class_id: int
    frames: list[int] = field(default_factory=list)  # detection frames, ascending
    boxes: list[np.ndarray] = field(default_factory=list)  # (4,) pixels, one per frame above
    max_wh: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))

    def add(self, frame: int, box: np.ndarray) -> None:
        self.frames.append(frame)
        self.boxes.append(box)
        self.max_wh = np.maximum(self.max_wh, box[2:] - box[:2])

    def velocity(self, forward: bool, window: int = 5) -> np.ndarray:
        """Centre motion (pixels/frame) over up to ``window`` detections at the track's end
        (``forward``) or start; zero for a track seen once."""
        frames = self.frames[-window:] if forward else self.frames[:window]
        boxes = self.boxes[-window:] if forward else self.boxes[:window]
        if len(frames) < 2 or frames[-1] == frames[0]:
            return np.zeros(2, np.float32)
        centres = np.array([(b[:2] + b[2:]) / 2 for b in boxes], np.float32)
        return ((centres[-1] - centres[0]) / (frames[-1] - frames[0])).astype(np.float32)


def bound_box(box: np.ndarray, max_wh: np.ndarray, max_scale: float) -> np.ndarray:
    """Shrink ``box`` around its centre so that width and height are at most
    ``max_scale * max_wh`` (pixels); a box within the bound comes back unchanged."""
    box = np.asarray(box, np.float32)
    wh = box[2:] - box[:2]
    limit = np.asarray(max_wh, np.float32) * max_scale
    if (wh <= limit).all():
        return box
    centre = (box[:2] + box[2:]) / 2
    half = np.minimum(wh, limit) / 2
    return np.concatenate([centre - half, centre + half]).astype(np.float32)


class _ClassTracker:
    """Tracks of one class, fed with :class:`Detections` rows: ByteTrack's association as we
    ran ultralytics' ``BYTETracker`` (every threshold at 0, IoU alone deciding matches, every
    track confirmed at birth), without ultralytics.

    Each frame, every track (seen on the last frame or lost for at most ``buffer`` frames) is
    predicted at its last box moved on at its last measured velocity (corners, pixels/frame);
    detections and predictions are matched greedily, highest IoU first, at IoU ``min_iou`` or
    more (ultralytics: cost ``1 - IoU`` at most 0.9); a matched track takes the detection's
    box, every other detection starts a track. Importing ultralytics' tracker imported
    ultralytics and torch in every video run: 3.5-4.4 s of CPU time on the 2-core benchmark
    machine (docs/benchmarks.md, issue 28).

    Confirmed at birth: ByteTrack dropped a new track not matched again on the very next
    frame, so an object detected on every n-th frame only (the union's CenterFace) became
    one-frame tracks held still instead of one track interpolated along its motion.
    """

    def __init__(self, buffer: int, min_iou: float = 0.1) -> None:
        self.buffer = max(1, buffer)
        self.min_iou = min_iou
        self.frame_id = 0
        self._next_id = 1
        # id -> (last box, velocity of the corners in pixels/frame, frame of the last box)
        self._tracks: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}

    def update(self, xyxy: np.ndarray, conf: np.ndarray, cls: int, shape: tuple[int, int]) -> np.ndarray:
        """Track ids for the rows of this frame (every row gets one)."""
        from pyroblur.core.boxes import box_iou

        self.frame_id += 1
        now = self.frame_id
        self._tracks = {k: t for k, t in self._tracks.items() if now - t[2] <= self.buffer}
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        ids = np.full(len(boxes), -1, np.int64)
        keys = list(self._tracks)
        if keys and len(boxes):
            predicted = np.stack([box + v * (now - f) for box, v, f in (self._tracks[k] for k in keys)])
            iou = box_iou(boxes, predicted)
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                d, t = divmod(int(flat), len(keys))
                if iou[d, t] < self.min_iou:
                    break
                if ids[d] >= 0 or keys[t] is None:
                    continue
                box, _, frame = self._tracks[keys[t]]
                self._tracks[keys[t]] = (boxes[d], (boxes[d] - box) / (now - frame), now)
                ids[d] = keys[t]
                keys[t] = None  # type: ignore[call-overload]
        for d in np.flatnonzero(ids < 0).tolist():
            ids[d] = self._next_id
            self._tracks[self._next_id] = (boxes[d], np.zeros(4, np.float32), now)
            self._next_id += 1
        return ids


class TrackFiller:
    """Fill detection gaps in a stream of frames (see the module docstring).

    Args:
        max_gap: frames of look-ahead; the longest gap filled by interpolation and the
            longest hold at a track's start or end (0 = off: detections pass through).
        max_scale: a filled box is at most this times its track's largest detected box.

    Use one instance per video: :meth:`push` each frame's detections in order and pass on
    what it returns, then :meth:`flush` at the end. At most ``max_gap`` frames are held.
    """

    def __init__(self, max_gap: int = 5, *, max_scale: float = 1.1) -> None:
        if max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {max_gap}")
        if max_scale < 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        self.max_gap = max_gap
        self.max_scale = max_scale
        self._trackers: dict[int, _ClassTracker] = {}
        self._tracks: dict[tuple[int, int], _Track] = {}
        self._pending: deque[tuple[int, Detections, np.ndarray]] = deque()
        self._next = 0
        self.filled_total = 0

    def push(self, dets: Detections, shape: tuple[int, int] = (0, 0)) -> list[FilledFrame]:
        """Add the next frame's detections (``shape`` is ``(height, width)``); returns the
        frames now complete (oldest first), possibly none."""
        index = self._next
        self._next += 1
        if self.max_gap == 0:
            return [FilledFrame(index, dets, np.zeros(len(dets), bool), np.full(len(dets), -1), len(dets))]
        ids = np.full(len(dets), -1, np.int64)
        for cls in np.unique(dets.class_id).tolist() + [c for c in self._trackers if c not in dets.class_id]:
            rows = np.flatnonzero(dets.class_id == cls)
            tracker = self._trackers.get(cls)
            if tracker is None:
                tracker = self._trackers[cls] = _ClassTracker(2 * self.max_gap + 2)
            cls_ids = tracker.update(dets.xyxy[rows], dets.confidence[rows], int(cls), shape)
            for row, tid in zip(rows.tolist(), cls_ids.tolist(), strict=True):
                if tid < 0:
                    continue
                key = (int(cls), tid)
                track = self._tracks.setdefault(key, _Track(int(cls)))
                track.add(index, dets.xyxy[row].astype(np.float32))
                ids[row] = tid
        self._pending.append((index, dets, ids))
        out = []
        while self._pending and self._pending[0][0] + self.max_gap <= index:
            out.append(self._emit(*self._pending.popleft()))
        self._prune(out[-1].index if out else None)
        return out

    def flush(self) -> list[FilledFrame]:
        """The frames still held back (call once, after the last :meth:`push`)."""
        out = [self._emit(*item) for item in self._pending]
        self._pending.clear()
        return out

    def _prune(self, emitted: int | None) -> None:
        """Forget detections no future frame can use (older than the last emitted frame
        minus the gap), so memory stays bounded on long videos."""
        if emitted is None:
            return
        horizon = emitted - self.max_gap - 1
        for key in list(self._tracks):
            t = self._tracks[key]
            keep = next((i for i, f in enumerate(t.frames) if f >= horizon), len(t.frames))
            # Keep the last detection before the horizon: it anchors a gap still open.
            keep = max(0, keep - 1)
            if keep:
                del t.frames[:keep], t.boxes[:keep]
            if t.frames and t.frames[-1] < horizon - 1:
                del self._tracks[key]

    def _emit(self, index: int, dets: Detections, ids: np.ndarray) -> FilledFrame:
        boxes, classes, confs, tids = [], [], [], []
        present = {(int(c), int(t)) for c, t in zip(dets.class_id, ids, strict=True) if t >= 0}
        for key, t in self._tracks.items():
            if key in present or not t.frames:
                continue
            before = [i for i, f in enumerate(t.frames) if f < index]
            after = [i for i, f in enumerate(t.frames) if f > index]
            new: list[np.ndarray] = []
            a = before[-1] if before else None
            b = after[0] if after else None
            if a is not None and b is not None and t.frames[b] - t.frames[a] - 1 <= self.max_gap:
                fa, fb = t.frames[a], t.frames[b]
                w = (index - fa) / (fb - fa)
                new.append((1 - w) * t.boxes[a] + w * t.boxes[b])
            else:
                if a is not None and index - t.frames[a] <= self.max_gap:
                    v = _Track(t.class_id, t.frames[: a + 1], t.boxes[: a + 1]).velocity(forward=True)
                    shift = np.tile(v * (index - t.frames[a]), 2)
                    new.append(t.boxes[a] + shift)
                if b is not None and t.frames[b] - index <= self.max_gap:
                    # Velocity from the detections around b, earlier ones included: a track
                    # re-found after a long gap knows how it moved; a new one holds still.
                    lo = max(0, b - 4)
                    v = _Track(t.class_id, t.frames[lo:], t.boxes[lo:]).velocity(forward=False)
                    shift = np.tile(v * (t.frames[b] - index), 2)
                    new.append(t.boxes[b] - shift)
            for box in new:
                boxes.append(bound_box(box, t.max_wh, self.max_scale))
                classes.append(t.class_id)
                confs.append(0.0)  # filled, not detected: no score of its own
                tids.append(key[1])
        n = len(dets)
        if not boxes:
            return FilledFrame(index, dets, np.zeros(n, bool), ids, n)
        self.filled_total += len(boxes)
        merged = Detections(
            np.concatenate([dets.xyxy, np.stack(boxes)]),
            np.concatenate([dets.class_id, classes]),
            np.concatenate([dets.confidence, confs]),
        )
        filled = np.zeros(len(merged), bool)
        filled[n:] = True
        return FilledFrame(index, merged, filled, np.concatenate([ids, tids]).astype(np.int64), n)


def fill_video_detections(per_frame: list[Detections], max_gap: int = 5, **kwargs: Any) -> list[FilledFrame]:
    """:class:`TrackFiller` over a whole list of frames' detections (tests, benchmarks)."""
    filler = TrackFiller(max_gap, **kwargs)
    out: list[FilledFrame] = []
    for d in per_frame:
        out += filler.push(d)
    return out + filler.flush()
