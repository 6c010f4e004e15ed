import math

import pytest

from pyroblur.core.records import BoxRecord
from pyroblur.curation.validation import IMAGE_REASONS, LABEL_REASONS, RECORD_ISSUES, check_boxes, image_problem

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


def test_clipped_flags_follow_kept_boxes():
    res = check_boxes([box(10, 10, 30, 30), box(-5, 10, 30, 30), box(200, 0, 300, 10)], W, H, MIN)
    assert res.clipped == [False, True]
    assert res.issues == {"clipped": 1, "outside": 1}


def test_flag_values_that_are_not_numbers_do_not_crash():
    res = check_boxes([box(10, 10, 30, 30, invalid="yes", occlusion="")], W, H, MIN, drop_heavy_occlusion=True)
    assert len(res.kept) == 1
    assert check_boxes([box(10, 10, 30, 30, invalid="1")], W, H, MIN).issues == {"flagged_invalid": 1}


def test_inf_and_too_small_after_clipping():
    res = check_boxes([box(math.inf, 10, 20, 30), box(-20, 10, 2, 30)], W, H, MIN)
    assert [r for _, r in res.dropped] == ["invalid_geometry", "too_small"]


OK = {"read_problem": None, "real_size": (W, H), "annotated_size": (W, H), "num_boxes": 1, "record_issues": [],
      "max_boxes": 5}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"read_problem": "missing_file"}, "missing_file"),
        ({"read_problem": "unreadable"}, "unreadable"),
        ({"read_problem": "truncated"}, "truncated"),
        ({"record_issues": ["missing_labels"]}, "missing_labels"),
        ({"record_issues": ["missing_labels"], "missing_labels": "background"}, None),
        ({"record_issues": ["bad_labels"]}, "bad_labels"),
        ({"annotated_size": (W + 1, H)}, "size_mismatch"),
        ({"num_boxes": 6}, "too_many_boxes"),
        ({"num_boxes": 5}, None),
        # The first applicable reason wins: a file that cannot be read has no size to compare.
        ({"read_problem": "unreadable", "annotated_size": (1, 1), "num_boxes": 99}, "unreadable"),
    ],
)
def test_image_problem_table(change, reason):
    assert image_problem(**{**OK, **change}) == reason


def test_every_reason_is_documented():
    assert set(RECORD_ISSUES) <= set(IMAGE_REASONS)
    assert len(set(IMAGE_REASONS) & set(LABEL_REASONS)) == 0
