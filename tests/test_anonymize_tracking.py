"""Track-based gap filling (ByteTrack's IoU association, without ultralytics, in pyroblur.anonymize.temporal):
gaps filled by interpolation, bounded holds at track ends, no detection ever removed, no
filled box larger than its track's largest detected box times the bound, classes apart,
memory bounded. Table-driven, empty input first."""

from __future__ import annotations

import numpy as np
import pytest

from pyroblur.anonymize.temporal import TrackFiller, bound_box, fill_video_detections
from pyroblur.core.detections import Detections

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _d(*boxes: tuple[float, float, float, float], cls: int = 0) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), cls))


def _moving(n: int, missing: set[int], step: float = 5.0, size: float = 64.0) -> list[Detections]:
    """One face moving ``step`` px/frame to the right, not detected in ``missing`` frames."""
    return [_d() if i in missing else _d((10 + step * i, 30, 10 + step * i + size, 30 + size)) for i in range(n)]


def _truth(i: int, step: float = 5.0, size: float = 64.0) -> np.ndarray:
    return np.array([10 + step * i, 30, 10 + step * i + size, 30 + size], np.float32)


def _covers(boxes: np.ndarray, target: np.ndarray, tol: float = 1.0) -> bool:
    return any((b[:2] <= target[:2] + tol).all() and (b[2:] >= target[2:] - tol).all() for b in boxes)


@pytest.mark.parametrize(
    ("max_gap", "n", "missing", "covered", "uncovered"),
    [
        (3, 0, set(), set(), set()),  # empty in, empty out
        (0, 6, {2}, set(), {2}),  # off: a missed frame stays missed
        (3, 12, {4}, {4}, set()),  # one missed frame: interpolated
        (3, 12, {4, 5, 6}, {4, 5, 6}, set()),  # gap == max_gap: interpolated
        (2, 14, {4, 5, 6, 7, 8}, {4, 5, 7, 8}, {6}),  # gap > max_gap: held 2 frames at each end only
        (3, 10, {0, 1}, {0, 1}, set()),  # track start: held backwards
        (3, 10, {8, 9}, {8, 9}, set()),  # track end: held forwards at the track's velocity
    ],
)
def test_gap_filling(max_gap, n, missing, covered, uncovered) -> None:
    out = fill_video_detections(_moving(n, missing), max_gap)
    assert [f.index for f in out] == list(range(n)), "every frame comes out once, in order"
    for f in out:
        if f.index in covered:
            assert f.filled.any() and _covers(f.detections.xyxy, _truth(f.index)), f"frame {f.index} not covered"
        elif f.index in uncovered:
            assert len(f.detections) == 0 or not _covers(f.detections.xyxy, _truth(f.index), tol=8)
        if f.index not in missing:
            assert not f.filled[: f.n_detected].any()
            np.testing.assert_array_equal(f.detections.xyxy[0], _truth(f.index))


def test_no_detection_is_ever_removed_or_moved() -> None:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(40):
        k = int(rng.integers(0, 4))
        xy = rng.uniform(0, 500, (k, 2))
        wh = rng.uniform(5, 80, (k, 2))
        frames.append(Detections(np.concatenate([xy, xy + wh], 1), rng.integers(0, 2, k), rng.uniform(0.1, 1, k)))
    out = fill_video_detections(frames, 4)
    for src, f in zip(frames, out, strict=True):
        assert f.n_detected == len(src)
        np.testing.assert_array_equal(f.detections.xyxy[: len(src)], src.xyxy)
        np.testing.assert_array_equal(f.detections.class_id[: len(src)], src.class_id)
        assert not f.filled[: len(src)].any() and f.filled[len(src) :].all()


def test_filled_boxes_never_exceed_the_track_bound() -> None:
    """A face growing from 20 to 80 px while detected every third frame: every filled box
    stays within 1.1 x the track's largest detected box (the old memory grew 5 %/frame
    without bound)."""
    frames = []
    for i in range(60):
        s = 20 + i if i < 60 else 80
        frames.append(_d((100 + 2 * i, 100, 100 + 2 * i + s, 100 + s)) if i % 3 == 0 else _d())
    out = fill_video_detections(frames, 5, max_scale=1.1)
    largest = 0.0
    for f in out:
        det = f.detections.xyxy[: f.n_detected]
        if len(det):
            largest = max(largest, float((det[:, 2:] - det[:, :2]).max()))
        for box in f.detections.xyxy[f.filled]:
            assert (box[2:] - box[:2]).max() <= 1.1 * 80 + 1e-3
    assert sum(int(f.filled.sum()) for f in out) > 0 and largest > 0


def test_bound_box_shrinks_only_oversized_boxes() -> None:
    np.testing.assert_array_equal(bound_box(np.array([0, 0, 10, 10]), np.array([10, 10]), 1.1), [0, 0, 10, 10])
    np.testing.assert_allclose(bound_box(np.array([0, 0, 40, 10]), np.array([10, 10]), 1.0), [15, 0, 25, 10])


def test_classes_are_tracked_apart() -> None:
    """A plate detected where a face was must not continue (or fill) the face's track."""
    frames = [_d((0, 0, 40, 40)), _d(), _d((0, 0, 40, 40), cls=1)]
    out = fill_video_detections(frames, 2)
    middle = out[1]
    # Frame 1: the face held forwards and the plate held backwards, each with its own class.
    assert sorted(middle.detections.class_id.tolist()) == [0, 1]


def test_look_ahead_is_bounded() -> None:
    filler = TrackFiller(3)
    emitted = []
    for i in range(10):
        emitted += filler.push(_d((i, 0, i + 10, 10)))
        assert i + 1 - len(emitted) <= 3, "more than max_gap frames held back"
    emitted += filler.flush()
    assert [f.index for f in emitted] == list(range(10))
    assert filler.flush() == []


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TrackFiller(-1)
    with pytest.raises(ValueError):
        TrackFiller(3, max_scale=0.5)


def test_a_face_detected_on_every_third_frame_is_one_track_interpolated_between() -> None:
    # The union's CenterFace runs on every n-th frame: a face it finds on frames 2, 5, 8, 11 only
    # must be one track, not four one-frame tracks held still, so the frames between are
    # interpolated along its motion (5 px/frame here). Another face, detected in every frame
    # from the first, keeps the class's tracker going (a tracker's first frame confirms every
    # track it starts; the later ones start unconfirmed).
    n, still = 12, (300.0, 30.0, 340.0, 70.0)
    moving = _moving(n, {i for i in range(n) if i % 3 != 2})
    out = fill_video_detections([Detections.concat([_d(still), m]) for m in moving], max_gap=5)
    ids = {int(t) for f in out for t, box in zip(f.track_id, f.detections.xyxy, strict=True) if box[0] < 300}
    assert len(ids) == 1
    for f in out[2:]:
        assert _covers(f.detections.xyxy, _truth(f.index)), f"frame {f.index} not covered"


def test_tracking_imports_neither_ultralytics_nor_torch() -> None:
    # ultralytics' tracker imported ultralytics and torch in every video run: seconds of CPU time
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from pyroblur.anonymize.temporal import fill_video_detections\n"
        "from pyroblur.core.detections import Detections\n"
        "dets = [Detections(np.array([[10 + 4 * i, 10, 40 + 4 * i, 40]], np.float32), np.array([0]))"
        " if i % 3 == 0 else Detections.empty() for i in range(9)]\n"
        "out = fill_video_detections(dets, 3)\n"
        "assert len({int(t) for f in out for t in f.track_id}) == 1 and all(len(f.detections) for f in out)\n"
        "print(sorted(m for m in ('ultralytics', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
