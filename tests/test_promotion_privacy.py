"""Privacy figures that feed the recall-floor gates: coverage at the operating point and leaks on
a moving clip, measured through anonymization's own box drawing and gap filling."""

from __future__ import annotations

import numpy as np
import pytest

from pyroblur.core.detections import Detections
from pyroblur.evaluation import privacy
from pyroblur.manifests import OperatingPoint

OP = OperatingPoint(conf={"face": 0.25, "license_plate": 0.25}, enlarge=1.0, memory_frames=0, covered_fraction=0.9)


def dets(rows: list[list[float]], cls: list[int]) -> Detections:
    return Detections(np.array(rows, np.float32).reshape(-1, 4), np.array(cls, np.int64), np.ones(len(cls), np.float32))


def test_operating_point_is_anonymizations_own_defaults() -> None:
    from pyroblur.anonymize.api import AnonymizeOptions

    opts = AnonymizeOptions()
    op = privacy.default_operating_point(0.9)
    assert op.conf == {"face": opts.conf_face, "license_plate": opts.conf_plate}
    assert op.enlarge == opts.enlarge and op.memory_frames == opts.memory_frames


@pytest.mark.parametrize(
    ("pred", "enlarge", "covered"),
    [
        ([], 1.0, False),  # nothing detected
        ([[10, 10, 30, 30]], 1.0, True),  # exactly the box
        ([[10, 10, 30, 28]], 1.0, True),  # 90% of the rows: just enough
        ([[10, 10, 30, 27]], 1.0, False),  # 85%: a visible strip
        ([[10, 10, 30, 27]], 1.2, True),  # the enlargement covers the strip
        ([[12, 12, 28, 28]], 1.0, False),  # too small
    ],
)
def test_coverage_at_the_operating_point(pred, enlarge, covered) -> None:
    gt = [dets([[10, 10, 30, 30], [50, 50, 70, 60]], [0, 1])]
    found = [dets(pred, [0] * len(pred))]
    op = OP.model_copy(update={"enlarge": enlarge})
    out = privacy.coverage(gt, found, [(100, 100)], op)
    assert out["face"].boxes == 1 and out["face"].covered == int(covered)
    assert out["face"].coverage == float(covered)
    assert out["license_plate"].boxes == 1 and out["license_plate"].coverage == 0.0


def test_coverage_of_a_class_without_boxes_is_unknown() -> None:
    out = privacy.coverage([dets([], [])], [dets([], [])], [(10, 10)], OP)
    assert out["face"].boxes == 0 and out["face"].coverage is None


class Oracle:
    """Returns each clip frame's true boxes, minus the (segment, object) pairs told to vanish."""

    def __init__(self, images, gts, frames: int, drop: set[tuple[int, int, int]]) -> None:
        self.per_frame = []
        for seg, (img, gt) in enumerate(zip(images, gts, strict=True)):
            _, moved = privacy.moving_clip(img, gt, frames)
            for t, boxes in enumerate(moved):
                keep = [k for k in range(len(boxes)) if (seg, t, k) not in drop]
                self.per_frame.append(dets(boxes[keep].tolist(), gt.class_id[keep].tolist()))
        self.calls = 0

    def __call__(self, frames):
        out = self.per_frame[self.calls : self.calls + len(frames)]
        self.calls += len(frames)
        return out


@pytest.fixture
def clip_input():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(2)]
    gts = [dets([[20, 20, 50, 60], [80, 70, 120, 90]], [0, 1]), dets([[30, 40, 60, 80]], [0])]
    return images, gts


def test_a_perfect_detector_leaks_nothing(clip_input) -> None:
    images, gts = clip_input
    out = privacy.leaks(Oracle(images, gts, 12, set()), images, gts, 12, OP)
    assert out["face"].clip_objects == 2 and out["license_plate"].clip_objects == 1
    assert out["face"].clip_pairs > 12  # both faces are in view most of the clip
    assert out["face"].leaks == 0 and out["license_plate"].leaks == 0


def test_missed_frames_are_leaks_unless_gap_filling_covers_them(clip_input) -> None:
    images, gts = clip_input
    drop = {(0, t, 0) for t in (4, 5, 6)} | {(1, 9, 0)}  # face of segment 0 for 3 frames, other face once
    out = privacy.leaks(Oracle(images, gts, 12, drop), images, gts, 12, OP)
    assert out["face"].leaks == 4 and out["face"].longest_leak == 3 and out["face"].objects_leaking == 2
    assert out["license_plate"].leaks == 0
    filled = privacy.leaks(Oracle(images, gts, 12, drop), images, gts, 12, OP.model_copy(update={"memory_frames": 5}))
    assert filled["face"].leaks < out["face"].leaks  # the video path's gap filling hides the gaps


def test_moving_clip_moves_boxes_with_the_picture(clip_input) -> None:
    images, gts = clip_input
    frames, boxes = privacy.moving_clip(images[0], gts[0], 8)
    assert len(frames) == len(boxes) == 8 and frames[0].shape == images[0].shape
    np.testing.assert_allclose(boxes[0], gts[0].xyxy, atol=1e-4)  # frame 0 is the image itself
    assert np.all(boxes[-1][:, 0] > boxes[0][:, 0])  # moved right
    assert np.all((boxes[-1][:, 2] - boxes[-1][:, 0]) > (boxes[0][:, 2] - boxes[0][:, 0]))  # and grew
