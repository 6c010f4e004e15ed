"""Table-driven tests of the pure format parsers (WIDER txt, COCO json, YOLO txt).

The same scene is written in each format and must parse into identical records.
"""

from __future__ import annotations

import math

import pytest

from pyroblur.core.records import BoxRecord
from pyroblur.data.formats import (
    detection_problem,
    parse_coco,
    parse_wider_annotations,
    parse_yolo_labels,
    to_yolo_labels,
)

W, H = 200, 100


def box(cls: int, x1: float, y1: float, x2: float, y2: float, **attrs: int) -> BoxRecord:
    return BoxRecord(class_id=cls, x1=x1, y1=y1, x2=x2, y2=y2, attributes=attrs)


FLAGS0 = {
    "blur": 0,
    "expression": 0,
    "illumination": 0,
    "invalid": 0,
    "occlusion": 0,
    "pose": 0,
}

# One scene, three formats: an image with a normal face, a face touching the top-left and
# right borders, a zero-width face; an empty image.
SCENE_BOXES = [
    (10.0, 20.0, 40.0, 60.0),  # normal
    (0.0, 0.0, 30.0, 25.0),  # touches the top-left corner
    (170.0, 50.0, 200.0, 100.0),  # touches the right and bottom border
    (50.0, 50.0, 50.0, 70.0),  # zero width
]

WIDER_SCENE = """\
a--Scene/img_1.jpg
4
10 20 30 40 0 0 0 0 0 0
0 0 30 25 0 0 0 0 0 0
170 50 30 50 0 0 0 0 0 0
50 50 0 20 0 0 0 0 0 0
a--Scene/img_empty.jpg
0
0 0 0 0 0 0 0 0 0 0
"""

COCO_SCENE = {
    "categories": [
        {"id": 0, "name": "faces", "supercategory": "none"},
        {"id": 1, "name": "face", "supercategory": "faces"},
    ],
    "images": [
        {"id": 7, "file_name": "img_1.jpg", "width": W, "height": H},
        {"id": 8, "file_name": "img_empty.jpg", "width": W, "height": H},
    ],
    "annotations": [
        {"id": i, "image_id": 7, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]}
        for i, (x1, y1, x2, y2) in enumerate(SCENE_BOXES)
    ],
}


def _yolo_line(cls: int, x1: float, y1: float, x2: float, y2: float) -> str:
    return f"{cls} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} {(y2 - y1) / H}"


YOLO_SCENE = "\n".join(_yolo_line(0, *b) for b in SCENE_BOXES) + "\n"


def _strip_attrs(
    boxes: list[BoxRecord],
) -> list[tuple[int, float, float, float, float]]:
    return [(b.class_id, b.x1, b.y1, b.x2, b.y2) for b in boxes]


def _approx(boxes: list[tuple[int, float, float, float, float]]) -> list:
    return [(c, *(pytest.approx(v, abs=1e-6) for v in xyxy)) for c, *xyxy in boxes]


EXPECTED_SCENE = [(0, *b) for b in SCENE_BOXES]


@pytest.mark.parametrize(
    "fmt, parse",
    [
        (
            "wider",
            lambda: {p.split("/")[-1]: b for p, b in parse_wider_annotations(WIDER_SCENE)},
        ),
        (
            "coco",
            lambda: {i.file_name: i.boxes for i in parse_coco(COCO_SCENE, {"face": "face"})},
        ),
        (
            "yolo",
            lambda: {
                "img_1.jpg": parse_yolo_labels(YOLO_SCENE, W, H, {0: 0}),
                "img_empty.jpg": parse_yolo_labels("", W, H, {0: 0}),
            },
        ),
    ],
)
def test_same_scene_parses_identically_in_every_format(fmt: str, parse) -> None:
    parsed = parse()
    assert list(parsed) == ["img_1.jpg", "img_empty.jpg"]
    assert _strip_attrs(parsed["img_1.jpg"]) == _approx(EXPECTED_SCENE)
    assert parsed["img_empty.jpg"] == []


# ----------------------------------------------------------------------------- WIDER

WIDER_CASES = [
    pytest.param("", [], id="empty-file"),
    pytest.param(
        "0--Parade/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n",
        [("0--Parade/a.jpg", [])],
        id="zero-faces-ten-zeros",
    ),
    pytest.param(
        "0--Parade/a.jpg\n0\n1--Handshaking/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n",
        [
            ("0--Parade/a.jpg", []),
            ("1--Handshaking/b.jpg", [box(0, 1, 2, 4, 6, **FLAGS0)]),
        ],
        id="zero-faces-without-zero-line",
    ),
    pytest.param(
        "0--Parade/a.jpg\n2\n449 330 122 149 2 1 1 1 2 1 \n  5 6 0 0 0 0 0 0 0 0\n",
        [
            (
                "0--Parade/a.jpg",
                [
                    box(
                        0,
                        449,
                        330,
                        571,
                        479,
                        blur=2,
                        expression=1,
                        illumination=1,
                        invalid=1,
                        occlusion=2,
                        pose=1,
                    ),
                    box(0, 5, 6, 5, 6, **FLAGS0),  # zero-size box kept
                ],
            )
        ],
        id="flags-invalid-zero-size-trailing-space",
    ),
    pytest.param(
        "a.jpg\n1\n10 20 30 40\n",
        [("a.jpg", [box(0, 10, 20, 40, 60)])],
        id="coordinates-only",
    ),
    pytest.param(
        "a.jpg\r\n1\r\n10 20 30 40 0 0 0 0 0 0\r\n\r\n",
        [("a.jpg", [box(0, 10, 20, 40, 60, **FLAGS0)])],
        id="crlf-and-blank-lines",
    ),
]


@pytest.mark.parametrize("text, expected", WIDER_CASES)
def test_parse_wider(text: str, expected: list) -> None:
    assert parse_wider_annotations(text) == expected


WIDER_ERRORS = [
    pytest.param("a.jpg\nx\n", "gt.txt:2", "integer", id="bad-count"),
    pytest.param("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", "gt.txt:4", "declares 2", id="missing-lines"),
    pytest.param("a.jpg\n1\n1 2 3\n", "gt.txt:3", "got 3 values", id="too-few-fields"),
    pytest.param("a.jpg\n1\n1 2 3 4 0 0\n", "gt.txt:3", "got 6 values", id="partial-flags"),
    pytest.param("a.jpg\n1\n1 2 nan 4\n", "gt.txt:3", "NaN", id="nan"),
    pytest.param("a.jpg\n1\n1 2 abc 4\n", "gt.txt:3", "not a number", id="text"),
    pytest.param("a.jpg\n1\n1 2 -3 4\n", "gt.txt:3", "negative", id="negative-size"),
    pytest.param("a.jpg\n", "gt.txt:1", "missing face count", id="eof-after-path"),
    pytest.param("a.jpg\n0\n1 2 3 4 0 0 0 0 0 0\n", "gt.txt:3", "non-zero", id="zero-then-box"),
    pytest.param("5\n", "gt.txt:1", "image path", id="count-without-path"),
]


@pytest.mark.parametrize("text, where, what", WIDER_ERRORS)
def test_parse_wider_errors_name_file_and_line(text: str, where: str, what: str) -> None:
    with pytest.raises(ValueError, match=what) as err:
        parse_wider_annotations(text, source_name="gt.txt")
    assert where in str(err.value)


# ----------------------------------------------------------------------------- COCO


def _coco(annotations: list[dict], categories: list[dict] | None = None) -> dict:
    return {
        "categories": categories
        or [
            {"id": 0, "name": "license-plates", "supercategory": "none"},
            {"id": 1, "name": "license_plate", "supercategory": "license-plates"},
            {"id": 2, "name": "car", "supercategory": "license-plates"},
        ],
        "images": [
            {"id": 0, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 1, "file_name": "b.jpg", "width": 320, "height": 240},
        ],
        "annotations": annotations,
    }


PLATES = {"license_plate": "license_plate", "car": "ignore"}

COCO_CASES = [
    pytest.param(
        _coco([]),
        [("a.jpg", 640, 480, []), ("b.jpg", 320, 240, [])],
        id="no-annotations",
    ),
    pytest.param(
        _coco(
            [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": [0, 0, 320, 240],
                    "iscrowd": 0,
                },
                {
                    "id": 2,
                    "image_id": 1,
                    "category_id": 2,
                    "bbox": [1, 1, 5, 5],
                },  # ignored
                {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10.5, 20, 0, 0]},
            ]
        ),
        [
            ("a.jpg", 640, 480, []),
            (
                "b.jpg",
                320,
                240,
                [box(1, 0, 0, 320, 240, iscrowd=0), box(1, 10.5, 20, 10.5, 20)],
            ),
        ],
        id="full-image-box-ignore-zero-size",
    ),
]


@pytest.mark.parametrize("data, expected", COCO_CASES)
def test_parse_coco(data: dict, expected: list) -> None:
    assert [tuple(i)[:4] for i in parse_coco(data, PLATES)] == expected


COCO_ERRORS = [
    pytest.param(
        _coco([{"id": 9, "image_id": 0, "category_id": 0, "bbox": [1, 2, 3, 4]}]),
        "categories ['license-plates'] are used but not in class_map",
        id="unknown-name",
    ),
    pytest.param(
        _coco([{"id": 9, "image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4]}]),
        "annotation 9 refers to unknown image id 5",
        id="unknown-image",
    ),
    pytest.param(
        _coco(
            [
                {
                    "id": 9,
                    "image_id": 0,
                    "category_id": 1,
                    "bbox": [1, 2, float("nan"), 4],
                }
            ]
        ),
        "annotation 9: w is nan",
        id="nan",
    ),
    pytest.param(
        _coco([{"id": 9, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3]}]),
        "annotation 9: bbox must be",
        id="short-bbox",
    ),
    pytest.param(
        _coco([{"id": 9, "image_id": 0, "category_id": 1, "bbox": [1, 2, -3, 4]}]),
        "negative box size",
        id="negative",
    ),
    pytest.param(
        _coco([{"id": 9, "image_id": 0, "category_id": 42, "bbox": [1, 2, 3, 4]}]),
        "unknown category id 42",
        id="unknown-category-id",
    ),
]


@pytest.mark.parametrize("data, message", COCO_ERRORS)
def test_parse_coco_errors(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match="plates.json") as err:
        parse_coco(data, PLATES, source_name="plates.json")
    assert message in str(err.value)


def test_parse_coco_bad_annotation_tags_its_image_only() -> None:
    data = _coco(
        [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 0, "category_id": 1, "bbox": [1, 2, float("nan"), 4]},
            {"id": 3, "image_id": 0, "category_id": 42, "bbox": [1, 2, 3, 4]},
            {"id": 4, "image_id": 77, "category_id": 1, "bbox": [1, 2, 3, 4]},
        ]
    )
    data["annotations"].append({"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]})
    first, ok = parse_coco(data, PLATES, bad="tag")
    assert first.issues == ("bad_labels",) and first.boxes == []  # no half-labelled image
    assert ok.issues == () and len(ok.boxes) == 1
    with pytest.raises(ValueError, match="w is nan"):
        parse_coco(data, PLATES)


@pytest.mark.parametrize(
    "data, problem",
    [
        pytest.param({"images": [], "annotations": [], "categories": []}, None, id="empty-detection"),
        pytest.param(
            {"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "a car"}]},
            "captions",
            id="captions",
        ),
        pytest.param(
            {
                "images": [],
                "annotations": [{"bbox": [0, 0, 1, 1], "keypoints": []}],
                "categories": [{"id": 1, "name": "person", "keypoints": ["nose"]}],
            },
            "keypoint",
            id="person-keypoints",
        ),
        pytest.param(
            {"images": [], "annotations": [{"segments_info": []}], "categories": [{"id": 1, "name": "x"}]},
            "panoptic",
            id="panoptic",
        ),
        pytest.param([1, 2], "not a JSON object", id="list"),
    ],
)
def test_detection_problem(data: object, problem: str | None) -> None:
    got = detection_problem(data)
    assert got is None if problem is None else problem in got


def test_parse_coco_unknown_drop_and_bad_class_map() -> None:
    data = _coco([{"id": 9, "image_id": 0, "category_id": 0, "bbox": [1, 2, 3, 4]}])
    assert parse_coco(data, PLATES, unknown="drop")[0].boxes == []
    with pytest.raises(ValueError, match="'plate' to 'car'"):
        parse_coco(data, {"plate": "car"})


# ----------------------------------------------------------------------------- YOLO

YOLO_CASES = [
    pytest.param("", {0: 0}, [], id="empty"),
    pytest.param("\n# comment\n\n", {0: 0}, [], id="blank-and-comment"),
    pytest.param("0 0.5 0.5 1 1\n", {0: 1}, [box(1, 0, 0, 200, 100)], id="full-image"),
    pytest.param("3 0.25 0.5 0 0\n", {3: 0}, [box(0, 50, 50, 50, 50)], id="zero-size"),
    pytest.param(
        "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        {0: 0, 1: None},
        [box(0, 80, 40, 120, 60)],
        id="ignore",
    ),
    pytest.param(
        "0 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n",
        {0: 1},
        [box(1, 20, 20, 60, 60)],
        id="polygon",
    ),
    pytest.param("0 1.0 0.5 0.2 1.2\n", {0: 0}, [box(0, 180, -10, 220, 110)], id="past-border"),
]


@pytest.mark.parametrize("text, class_map, expected", YOLO_CASES)
def test_parse_yolo(text: str, class_map: dict, expected: list) -> None:
    got = parse_yolo_labels(text, W, H, class_map)
    assert _strip_attrs(got) == _approx(_strip_attrs(expected))


YOLO_ERRORS = [
    pytest.param("0 0.5 0.5 0.2\n", "a.txt:1", "got 4 values", id="too-few"),
    pytest.param("0 0.5 0.5 0.2 0.2 0.9\n", "a.txt:1", "got 6 values", id="six"),
    pytest.param("x 0.5 0.5 0.2 0.2\n", "a.txt:1", "not an integer", id="bad-class"),
    pytest.param("\n5 0.5 0.5 0.2 0.2\n", "a.txt:2", "class id 5", id="unmapped-class"),
    pytest.param("0 nan 0.5 0.2 0.2\n", "a.txt:1", "NaN", id="nan"),
    pytest.param("0 0.5 0.5 inf 0.2\n", "a.txt:1", "infinity", id="inf"),
    pytest.param("0 0.5 0.5 -0.2 0.2\n", "a.txt:1", "negative", id="negative"),
    pytest.param("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.3 0.1 0.2 0.4\n", "a.txt:2", "mixes box lines", id="mixed"),
]


def test_parse_yolo_polygon_is_marked_and_pose_keeps_its_box() -> None:
    # 7 values = class + 3 points: a (triangle) polygon, as ultralytics reads it; marked as such.
    (tri,) = parse_yolo_labels("0 0.1 0.2 0.3 0.2 0.2 0.6\n", W, H, {0: 1})
    assert tri.attributes == {"polygon": True}
    assert (tri.x1, tri.y1, tri.x2, tri.y2) == pytest.approx((20, 20, 60, 60))
    # A pose line (box + 3 keypoints x, y, visibility) with kpt_shape [3, 3]: the box only.
    (pose,) = parse_yolo_labels("0 0.5 0.5 0.2 0.2 " + "0.5 0.5 2 " * 3, W, H, {0: 0}, kpt_values=9)
    assert pose.attributes == {} and (pose.x1, pose.x2) == pytest.approx((80, 120))
    # A UTF-8 byte-order mark (ultralytics reads labels as utf-8-sig) is not part of the class id.
    assert len(parse_yolo_labels("\ufeff0 0.5 0.5 0.2 0.2\n", W, H, {0: 0})) == 1


@pytest.mark.parametrize("text, where, what", YOLO_ERRORS)
def test_parse_yolo_errors(text: str, where: str, what: str) -> None:
    with pytest.raises(ValueError, match=what) as err:
        parse_yolo_labels(text, W, H, {0: 0}, source_name="a.txt")
    assert where in str(err.value)


@pytest.mark.parametrize(
    "boxes",
    [
        [],
        [box(0, 10, 20, 40, 60), box(1, 0, 0, 200, 100)],
        [box(1, 50, 50, 50, 50)],  # zero-size round-trips
    ],
)
def test_yolo_round_trip(boxes: list[BoxRecord]) -> None:
    text = to_yolo_labels(boxes, W, H)
    assert text == "" if not boxes else text.endswith("\n")
    back = parse_yolo_labels(text, W, H, {0: 0, 1: 1})
    assert _strip_attrs(back) == _approx(_strip_attrs(boxes))


def test_to_yolo_labels_format_and_bad_size() -> None:
    assert to_yolo_labels([box(1, 0, 0, 100, 50)], W, H) == "1 0.250000 0.250000 0.500000 0.500000\n"
    with pytest.raises(ValueError, match="positive"):
        to_yolo_labels([], 0, H)
    with pytest.raises(ValueError, match="positive"):
        parse_yolo_labels("", W, 0, {})
    assert math.isclose(parse_yolo_labels("0 .5 .5 .5 .5", 2, 2, {0: 0})[0].x2, 1.5)
