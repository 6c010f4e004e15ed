"""Pure anonymization ops, ellipse masks, tiling and union merging, and detection filtering:
table-driven, empty inputs first. (Track-based gap filling: tests/test_anonymize_tracking.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from pyroblur.anonymize.detector import UnionDetector, filter_detections, merge_overlapping, tile_origins
from pyroblur.anonymize.ops import (
    Mode,
    anonymize_image,
    blur_region,
    enlarge_boxes,
    integer_boxes,
    mosaic_region,
    solid_region,
)
from pyroblur.core.detections import Detections
from pyroblur.evaluation.metrics import box_iou

H, W = 120, 160


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Textured BGR image (2 px random blocks) so that every filter changes every pixel
    of a box (a flat patch would look the same blurred)."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (H // 2, W // 2, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((2, 2, 1), np.uint8))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel bool: any channel differs."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return d.max(axis=-1) > 0 if d.ndim == 3 else d > 0


# --- enlarge_boxes / integer_boxes -------------------------------------------------------


@pytest.mark.parametrize(
    ("boxes", "factor", "expected"),
    [
        (np.zeros((0, 4)), 1.5, np.zeros((0, 4))),
        ([[10, 10, 20, 20]], 1.0, [[10, 10, 20, 20]]),
        ([[10, 10, 20, 20]], 2.0, [[5, 5, 25, 25]]),
        ([[10, 10, 20, 30]], 0.5, [[12.5, 15, 17.5, 25]]),
        ([[0, 0, 10, 10]], 3.0, [[0, 0, 20, 20]]),  # clipped at the top-left corner
        ([[150, 110, 170, 130]], 1.0, [[150, 110, 160, 120]]),  # clipped at bottom-right
        ([[-50, -50, -10, -10]], 1.0, [[0, 0, 0, 0]]),  # wholly outside: zero area
    ],
)
def test_enlarge_boxes(boxes, factor, expected) -> None:
    out = enlarge_boxes(np.asarray(boxes, np.float32), factor, W, H)
    assert out.dtype == np.float32 and out.shape == (len(expected), 4)
    np.testing.assert_allclose(out, np.asarray(expected, np.float32).reshape(-1, 4))


def test_enlarge_boxes_rejects_non_positive_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        enlarge_boxes(np.zeros((1, 4)), 0, W, H)


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        (np.zeros((0, 4)), np.zeros((0, 4))),
        ([[1.2, 1.8, 3.1, 4.0]], [[1, 1, 4, 4]]),  # rounded outwards
        ([[5, 5, 5, 9]], np.zeros((0, 4))),  # zero width dropped
        ([[9, 9, 5, 5]], np.zeros((0, 4))),  # inverted dropped
        ([[-3, -3, 200, 200]], [[0, 0, W, H]]),
    ],
)
def test_integer_boxes(boxes, expected) -> None:
    out = integer_boxes(np.asarray(boxes, np.float32), W, H)
    np.testing.assert_array_equal(out, np.asarray(expected, np.int64).reshape(-1, 4))


# --- region filters ----------------------------------------------------------------------


@pytest.mark.parametrize("fn", [blur_region, mosaic_region, solid_region])
@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 5, 3), (1, 1, 3), (7, 3, 3), (40, 64, 3), (9, 9)])
def test_region_filters_keep_shape_and_dtype(fn, shape) -> None:
    region = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = fn(region)
    assert out.shape == region.shape and out.dtype == np.uint8
    assert out is not region


def test_blur_strength_grows_with_box_size() -> None:
    """The same relative strength hides a small and a large face equally: a pattern of
    6x6 features scaled to the box keeps about the same fraction of its contrast."""
    rng = np.random.default_rng(2)
    pattern = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    ratios = []
    for size in (24, 96, 384):
        region = np.kron(pattern, np.ones((size // 6, size // 6, 1), np.uint8))
        out = blur_region(region, 0.5)
        ratios.append(out.astype(np.float32).std() / region.astype(np.float32).std())
    assert max(ratios) < 0.35, ratios
    assert max(ratios) - min(ratios) < 0.1, ratios


def test_mosaic_cells_along_smaller_side() -> None:
    region = np.random.default_rng(3).integers(0, 256, (80, 160, 3), dtype=np.uint8)
    out = mosaic_region(region, cells=8)
    # 8 cells of 10 px along the 80 px side: each 10x10 block is one colour.
    block = out[10:20, 30:40].reshape(-1, 3)
    assert (block == block[0]).all()


# --- anonymize_image ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize(
    "boxes",
    [np.zeros((0, 4)), [[-40, -40, -5, -5]], [[200, 10, 260, 60]], [[30, 30, 30, 60]]],
    ids=["empty", "outside-left", "outside-right", "zero-width"],
)
def test_nothing_to_hide_leaves_image_unchanged(image, mode, boxes) -> None:
    out = anonymize_image(image, np.asarray(boxes, np.float32), mode)
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize(
    ("box", "enlarge", "hidden"),
    [
        ((40, 30, 88, 78), 1.0, (40, 30, 88, 78)),
        ((40, 30, 88, 78), 1.5, (28, 18, 100, 90)),
        ((-20, 90, 30, 140), 1.0, (0, 90, 30, H)),  # partly outside: clipped
        ((40.4, 30.6, 87.5, 77.2), 1.0, (40, 30, 88, 78)),  # fractional: rounded outwards
    ],
)
def test_box_is_hidden_and_the_rest_untouched(image, mode, box, enlarge, hidden) -> None:
    out = anonymize_image(image, np.array([box], np.float32), mode, enlarge=enlarge)
    changed = _changed(out, image)
    x1, y1, x2, y2 = hidden
    inside = np.zeros_like(changed)
    inside[y1:y2, x1:x2] = True
    assert not changed[~inside].any(), "pixels outside the box changed"
    assert changed[inside].mean() > 0.8, "box not hidden"


def test_input_not_mutated_unless_inplace(image) -> None:
    before = image.copy()
    out = anonymize_image(image, np.array([[10, 10, 50, 50]]), "solid")
    np.testing.assert_array_equal(image, before)
    same = anonymize_image(out, np.array([[60, 60, 90, 90]]), "solid", inplace=True)
    assert same is out


def test_solid_colour(image) -> None:
    out = anonymize_image(image, np.array([[10, 20, 30, 40]]), "solid")
    assert (out[20:40, 10:30] == 0).all()


def test_overlapping_boxes(image) -> None:
    out = anonymize_image(image, np.array([[10, 10, 60, 60], [40, 40, 100, 100]]), "mosaic")
    changed = _changed(out, image)
    assert changed[10:60, 10:60].mean() > 0.8 and changed[60:100, 60:100].mean() > 0.8
    assert not changed[100:, :].any() and not changed[:10, :].any()


def test_feather_hides_box_fully_and_fades_outside(image) -> None:
    box = (50, 40, 90, 80)  # 40 px: feather 0.25 -> 10 px soft edge
    hard = anonymize_image(image, np.array([box]), "solid")
    soft = anonymize_image(image, np.array([box]), "solid", feather=0.25)
    # Inside the box the feathered result equals the hard one (fully hidden).
    np.testing.assert_array_equal(soft[40:80, 50:90], hard[40:80, 50:90])
    changed = _changed(soft, image)
    assert changed[40:80, 40:50].any()  # the soft margin blends
    ring = np.ones_like(changed)
    ring[30:90, 40:100] = False
    assert not changed[ring].any()  # nothing beyond the margin
    # The margin fades: closer to the box means darker (solid black blended in).
    row = soft[60, 40:50].astype(int).sum(axis=-1) / image[60, 40:50].astype(int).sum(axis=-1)
    assert row[0] > row[-1]


def test_gray_image() -> None:
    gray = np.random.default_rng(4).integers(0, 256, (50, 50), dtype=np.uint8)
    out = anonymize_image(gray, np.array([[10, 10, 40, 40]]), "blur", feather=0.2)
    assert out.shape == gray.shape
    assert _changed(out, gray)[10:40, 10:40].mean() > 0.8


def test_unknown_mode(image) -> None:
    with pytest.raises(ValueError):
        anonymize_image(image, np.array([[0, 0, 5, 5]]), "pixelate")


# --- detection filtering -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_ids", "scores", "conf", "classes", "kept"),
    [
        ([], [], {0: 0.5, 1: 0.5}, None, []),
        ([0, 1], [0.6, 0.6], {0: 0.5, 1: 0.5}, None, [0, 1]),
        ([0, 1], [0.6, 0.4], {0: 0.5, 1: 0.3}, None, [0, 1]),
        ([0, 1], [0.4, 0.4], {0: 0.5, 1: 0.3}, None, [1]),
        ([0, 1, 0], [0.9, 0.9, 0.9], {}, [0], [0, 2]),
        ([0, 1, 7], [0.9, 0.9, 0.9], {}, [0, 1], [0, 1]),
    ],
)
def test_filter_detections(class_ids, scores, conf, classes, kept) -> None:
    n = len(class_ids)
    dets = Detections(np.arange(n * 4).reshape(n, 4), np.array(class_ids), np.array(scores))
    out = filter_detections(dets, conf, classes)
    np.testing.assert_array_equal(out.xyxy, dets.xyxy[kept])


# --- temporal memory ---------------------------------------------------------------------


def _d(*boxes: tuple[float, float, float, float], cls: int = 0) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), cls))


def test_box_iou() -> None:
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]], rtol=1e-5)


@pytest.mark.parametrize(
    ("width", "height", "tile", "expected"),
    [
        (100, 80, 128, []),  # fits in one tile: no tiling
        (128, 128, 128, []),
        (256, 100, 128, [(0, 0), (96, 0), (128, 0)]),  # last window flush with the edge
        (200, 200, 128, [(0, 0), (72, 0), (0, 72), (72, 72)]),
    ],
)
def test_tile_origins(width, height, tile, expected) -> None:
    origins = tile_origins(width, height, tile)
    assert origins == expected
    for x, y in origins:  # every window inside the frame
        assert 0 <= x <= width - min(tile, width) and 0 <= y <= height - min(tile, height)


def test_tiles_cover_every_pixel() -> None:
    covered = np.zeros((300, 500), bool)
    for x, y in tile_origins(500, 300, 128):
        covered[y : y + 128, x : x + 128] = True
    assert covered.all()


def test_merge_overlapping_takes_the_union_per_class() -> None:
    assert len(merge_overlapping(Detections.empty())) == 0
    dets = Detections(
        np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
        np.array([0, 0, 1, 0]),
        np.array([0.9, 0.5, 0.8, 0.7], np.float32),
    )
    out = merge_overlapping(dets)
    rows = sorted(zip(out.class_id.tolist(), out.xyxy.tolist(), strict=True))
    # The two overlapping faces become their union; the plate at the same place stays apart.
    assert rows == [(0, [0, 0, 11, 10]), (0, [50, 50, 60, 60]), (1, [0, 0, 10, 10])]


def test_union_detector_keeps_every_member_box() -> None:
    a = lambda frames: [_d((0, 0, 10, 10)) for _ in frames]  # noqa: E731
    b = lambda frames: [_d((100, 100, 120, 120), cls=1) for _ in frames]  # noqa: E731
    out = UnionDetector([a, b])([np.zeros((4, 4, 3), np.uint8)] * 2)
    assert len(out) == 2 and all(sorted(d.class_id.tolist()) == [0, 1] for d in out)
    with pytest.raises(ValueError):
        UnionDetector([])


def test_ellipse_hides_the_inscribed_ellipse_only(image) -> None:
    box = np.array([[40, 20, 120, 100]], np.float32)
    out = anonymize_image(image, box, Mode.solid, color=(255, 255, 255), ellipse=True)
    changed = (out != image).any(axis=2)
    assert changed[60, 80] and out[60, 80].tolist() == [255, 255, 255]  # centre hidden
    assert not changed[21, 41], "box corner changed: not an ellipse"
    assert not changed[:20].any() and not changed[:, :40].any(), "pixels outside the box changed"
    # Per-box flags: the second box (a plate) stays a full rectangle.
    two = np.array([[0, 0, 30, 30], [100, 80, 150, 110]], np.float32)
    out = anonymize_image(image, two, Mode.solid, color=(255, 255, 255), ellipse=np.array([True, False]))
    assert (out[0, 0] == image[0, 0]).all() and out[80, 100].tolist() == [255, 255, 255]
