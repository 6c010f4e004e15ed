import math

import pytest

from pyroblur.records import BoxRecord
from pyroblur.validation import check_boxes

W, H = 100, 80
MIN = {"face": 4.0, "license_plate": 4.0}


def box(x1, y1, x2, y2, cls=0, **attrs):
    return BoxRecord(class_id=cls, x1=x1, y1=y1, x2=x2, y2=y2, attributes=attrs)


@pytest.mark.parametrize(
    ("b", "kept", "reason"),
    [
        (box(10, 10, 30, 30), True, None),
        (box(0, 0, 100, 80), True, None),  # touching every border is fine
        (box(-10, 10, 30, 30), True, "clipped"),
        (box(90, 70, 120, 100), True, "clipped"),
        (box(110, 10, 130, 30), False, "outside"),
        (box(-30, -30, -5, -5), False, "outside"),
        (box(10, 10, 10, 30), False, "invalid_geometry"),  # zero width
        (box(30, 10, 10, 30), False, "invalid_geometry"),  # negative width
        (box(math.nan, 10, 20, 30), False, "invalid_geometry"),
        (box(10, 10, 30, 30, cls=5), False, "unknown_class"),
        (box(10, 10, 12, 30), False, "too_small"),
        (box(10, 10, 30, 30, invalid=1), False, "flagged_invalid"),
    ],
)
def test_check_boxes_table(b, kept, reason):
    res = check_boxes([b], W, H, MIN)
    assert (len(res.kept) == 1) is kept
    if reason:
        assert res.issues[reason] == 1
    else:
        assert not res.issues
    if not kept:
        assert res.dropped[0][1] == reason


def test_empty():
    res = check_boxes([], W, H, MIN)
    assert res.kept == [] and res.dropped == [] and not res.issues


def test_clipped_box_is_clipped_to_image():
    res = check_boxes([box(-10, -5, 150, 90)], W, H, MIN)
    k = res.kept[0]
    assert (k.x1, k.y1, k.x2, k.y2) == (0, 0, W, H)


def test_occlusion_policy():
    b = box(10, 10, 30, 30, occlusion=2)
    assert check_boxes([b], W, H, MIN).kept
    assert check_boxes([b], W, H, MIN, drop_heavy_occlusion=True).issues["heavy_occlusion"] == 1
    assert check_boxes([box(10, 10, 30, 30, invalid=1)], W, H, MIN, drop_invalid=False).kept
