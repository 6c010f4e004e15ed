"""End-to-end tests of the real sources against small real-format archives served locally."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pyroblur.core.errors import ConfigurationError, is_transient
from pyroblur.data.download import ChecksumMismatchError, HTTPStatusError
from pyroblur.data.sources import fetch_source, plan_source, wider_face
from pyroblur.data.sources import roboflow as rf_source
from pyroblur.data.sources._common import SourceDataError
from pyroblur.data.sources.models import (
    WIDER_REVISION,
    WIDER_SHA256,
    HttpOptions,
    HuggingFaceCocoSource,
    LocalFolderSource,
    RoboflowSource,
    WiderFaceSource,
)

try:
    from http_fixtures import FileServer
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests.http_fixtures import FileServer

FAST = HttpOptions(retries=2, backoff_s=0.01, read_timeout_s=5, progress=False)


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buf, format="JPEG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def boxes_of(rec) -> list[tuple]:
    return [(b.class_id, b.x1, b.y1, b.x2, b.y2) for b in rec.boxes]


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as srv:
        yield srv


# ----------------------------------------------------------------------------- WIDER FACE

TRAIN_GT = """\
0--Parade/0_Parade_marchingband_1_5.jpg
2
10 8 20 24 0 0 0 0 0 0
40 0 24 30 2 0 1 1 2 0
1--Handshaking/1_Handshaking_2.jpg
0
0 0 0 0 0 0 0 0 0 0
"""
VAL_GT = "2--Demonstration/2_Demo_9.jpg\n1\n0 0 5 5 1 0 0 0 0 1\n"


def serve_wider(srv: FileServer) -> dict[str, bytes]:
    files = {
        "WIDER_train.zip": zip_bytes(
            {
                "WIDER_train/images/0--Parade/0_Parade_marchingband_1_5.jpg": jpeg(64, 48),
                "WIDER_train/images/1--Handshaking/1_Handshaking_2.jpg": jpeg(32, 40),
            }
        ),
        "WIDER_val.zip": zip_bytes({"WIDER_val/images/2--Demonstration/2_Demo_9.jpg": jpeg(20, 10)}),
        "wider_face_split.zip": zip_bytes(
            {
                "wider_face_split/wider_face_train_bbx_gt.txt": TRAIN_GT.encode(),
                "wider_face_split/wider_face_val_bbx_gt.txt": VAL_GT.encode(),
                "wider_face_split/readme.txt": b"x",
            }
        ),
    }
    for name, data in files.items():
        srv.files[f"/wider/data/{name}"] = data
    return files


def test_wider_plan_lists_pinned_urls_sizes_checksums_and_destinations(tmp_path: Path) -> None:
    planned = plan_source(WiderFaceSource(), tmp_path)
    base = f"https://huggingface.co/datasets/CUHK-CSE/wider_face/resolve/{WIDER_REVISION}/data"
    assert [(p.url, p.size, p.sha256, p.dest) for p in planned] == [
        (
            f"{base}/WIDER_train.zip",
            1_465_602_149,
            WIDER_SHA256["WIDER_train.zip"],
            tmp_path / "archives" / "WIDER_train.zip",
        ),
        (f"{base}/WIDER_val.zip", 362_752_168, WIDER_SHA256["WIDER_val.zip"], tmp_path / "archives" / "WIDER_val.zip"),
        (
            f"{base}/wider_face_split.zip",
            3_591_642,
            WIDER_SHA256["wider_face_split.zip"],
            tmp_path / "archives" / "wider_face_split.zip",
        ),
    ]
    assert all(p.token_env == "HF_TOKEN" for p in planned)
    mirror = plan_source(WiderFaceSource(base_url="https://mirror.example/w"), tmp_path)
    assert mirror[0].url == "https://mirror.example/w/WIDER_train.zip" and mirror[0].token_env is None


def test_hub_sources_refuse_an_unpinned_revision() -> None:
    with pytest.raises(ValueError, match="not a commit hash"):
        WiderFaceSource(revision="main")
    with pytest.raises(ValueError, match="not a commit hash"):
        HuggingFaceCocoSource(revision="main")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        WiderFaceSource(sha256={"WIDER_val.zip": "abc"})
    assert HuggingFaceCocoSource(revision="main", allow_unpinned=True).revision == "main"


def test_wider_fetch_end_to_end(server: FileServer, tmp_path: Path) -> None:
    serve_wider(server)
    server.script("/wider/data/WIDER_train.zip", "drop", 503)  # resumed through retries
    cfg = WiderFaceSource(base_url=server.url("/wider/data"), verify_checksums=False, http=FAST)
    dest = tmp_path / "raw" / "wider_face"
    records = fetch_source(cfg, dest)

    by_name = {Path(r.filepath).name: r for r in records}
    assert list(by_name) == [
        "0_Parade_marchingband_1_5.jpg",
        "1_Handshaking_2.jpg",
        "2_Demo_9.jpg",
    ]
    parade = by_name["0_Parade_marchingband_1_5.jpg"]
    assert Path(parade.filepath).is_absolute() and Path(parade.filepath).is_file()
    assert parade.filepath.endswith("WIDER_train/images/0--Parade/0_Parade_marchingband_1_5.jpg")
    assert (parade.width, parade.height, parade.source, parade.source_split) == (64, 48, "wider_face", "train")
    assert boxes_of(parade) == [(0, 10, 8, 30, 32), (0, 40, 0, 64, 30)]  # 2nd touches border
    assert parade.boxes[1].attributes == {
        "blur": 2,
        "expression": 0,
        "illumination": 1,
        "invalid": 1,
        "occlusion": 2,
        "pose": 0,
    }
    assert by_name["1_Handshaking_2.jpg"].boxes == []
    assert (by_name["1_Handshaking_2.jpg"].width, by_name["1_Handshaking_2.jpg"].height) == (32, 40)
    assert by_name["2_Demo_9.jpg"].source_split == "val"
    assert not (dest / "index.jsonl").exists()  # one index, written by the download task
    assert any(r for r in server.requests_for("/wider/data/WIDER_train.zip") if r)

    # Second run: nothing downloaded or extracted again, same records.
    n = len(server.requests)
    assert fetch_source(cfg, dest) == records
    assert len(server.requests) == n


def serve_pinned_wider(srv: FileServer, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, bytes], str]:
    """The WIDER files at the Hub's resolve/<commit> URLs, with their sizes; returns files, commit."""
    files = serve_wider(srv)
    rev = "0123456789abcdef0123456789abcdef01234567"
    for name, data in files.items():
        srv.files[f"/datasets/CUHK-CSE/wider_face/resolve/{rev}/data/{name}"] = data
    monkeypatch.setattr(wider_face, "SIZES", {n: len(d) for n, d in files.items()})
    return files, rev


def test_wider_pinned_revision_checksums_and_token(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, rev = serve_pinned_wider(server, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    cfg = WiderFaceSource(endpoint=server.url(""), revision=rev, sha256=sha, splits=["train"], max_images=1, http=FAST)
    records = fetch_source(cfg, tmp_path / "w")
    assert [Path(r.filepath).name for r in records] == ["0_Parade_marchingband_1_5.jpg"]
    paths = [p for p, _ in server.requests]
    assert f"/datasets/CUHK-CSE/wider_face/resolve/{rev}/data/WIDER_train.zip" in paths
    assert not any("WIDER_val" in p for p in paths)
    assert all(h.get("Authorization") == "Bearer hf_test_token" for _, h in server.request_headers)


def test_changed_file_at_the_same_url_is_detected_and_named(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acceptance: the pinned sha256 catches a file replaced under the same URL."""
    files, rev = serve_pinned_wider(server, monkeypatch)
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    server.script(f"/datasets/CUHK-CSE/wider_face/resolve/{rev}/data/wider_face_split.zip", "wrong")
    cfg = WiderFaceSource(endpoint=server.url(""), revision=rev, sha256=sha, splits=["val"], http=FAST)
    with pytest.raises(ChecksumMismatchError, match="wider_face_split.zip") as err:
        fetch_source(cfg, tmp_path / "w")
    assert "source 'wider_face'" in str(err.value) and not is_transient(err.value)
    assert not (tmp_path / "w" / "archives" / "wider_face_split.zip").exists()


def test_wider_bad_base_url_names_url(server: FileServer, tmp_path: Path) -> None:
    cfg = WiderFaceSource(base_url=server.url("/nowhere"), verify_checksums=False, http=FAST)
    with pytest.raises(HTTPStatusError, match=r"404.*/nowhere/WIDER_train.zip"):
        fetch_source(cfg, tmp_path / "w")


# ----------------------------------------------------------------------------- HF COCO


KP_REV = "fedcba9876543210fedcba9876543210fedcba98"
KP_PATH = f"/datasets/keremberke/license-plate-object-detection/resolve/{KP_REV}/data"


def coco_zip(
    images: dict[str, tuple[int, int]], anns: list[tuple[str, int, list[float]]], categories: list[dict] | None = None
) -> bytes:
    """A split zip as keremberke/license-plate-object-detection publishes it: images and
    ``_annotations.coco.json`` at the zip's root (its loading script reads both from the
    extracted folder) and one category, id 0 ``license_plate`` (roboflow2huggingface dropped
    Roboflow's supercategory entry and renumbered; the script's ClassLabel is ['license_plate'])."""
    ids = {name: i for i, name in enumerate(images)}
    data = {
        "info": {"description": "mini keremberke-style export"},
        "categories": categories or [{"id": 0, "name": "license_plate", "supercategory": "none"}],
        "images": [{"id": ids[n], "file_name": n, "width": w, "height": h} for n, (w, h) in images.items()],
        "annotations": [
            {"id": k, "image_id": ids[n], "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (n, c, b) in enumerate(anns)
        ],
    }
    members = {"_annotations.coco.json": json.dumps(data).encode()}
    members |= {n: jpeg(w, h) for n, (w, h) in images.items()}
    return zip_bytes(members)


def test_hf_coco_plan_and_fetch(server: FileServer, tmp_path: Path) -> None:
    planned = plan_source(HuggingFaceCocoSource(revision=KP_REV), tmp_path)
    base = f"https://huggingface.co{KP_PATH}"
    assert [p.url for p in planned] == [f"{base}/train.zip", f"{base}/valid.zip", f"{base}/test.zip"]
    assert planned[0].size is None and planned[0].dest == tmp_path / "archives" / "train.zip"

    server.files[f"{KP_PATH}/train.zip"] = coco_zip(
        {"car_1.jpg": (80, 60), "empty.jpg": (40, 30)},
        [("car_1.jpg", 0, [10, 20, 30, 10]), ("car_1.jpg", 0, [50, 50, 30, 10])],
    )
    server.files[f"{KP_PATH}/valid.zip"] = coco_zip({"car_2.jpg": (50, 50)}, [("car_2.jpg", 0, [0, 0, 0, 0])])
    cfg = HuggingFaceCocoSource(endpoint=server.url(""), revision=KP_REV, splits=["train", "valid"], http=FAST)
    records = fetch_source(cfg, tmp_path / "plates")
    got = {Path(r.filepath).name: (r.source_split, r.width, r.height, boxes_of(r)) for r in records}
    assert got == {
        "car_1.jpg": ("train", 80, 60, [(1, 10, 20, 40, 30), (1, 50, 50, 80, 60)]),
        "empty.jpg": ("train", 40, 30, []),
        "car_2.jpg": ("valid", 50, 50, [(1, 0, 0, 0, 0)]),  # zero-size kept for curation
    }
    assert all(Path(r.filepath).is_absolute() and Path(r.filepath).exists() for r in records)


def test_hf_coco_pinned_sha256_and_hub_published_sha256(server: FileServer, tmp_path: Path) -> None:
    data = coco_zip({"a.jpg": (10, 10)}, [("a.jpg", 0, [1, 1, 2, 2])])
    server.files[f"{KP_PATH}/train.zip"] = data
    # Unpinned in the config: the Hub's X-Linked-Etag is checked instead, and a lie is caught.
    server.headers[f"{KP_PATH}/train.zip"] = {"X-Linked-Etag": '"' + "1" * 64 + '"', "X-Repo-Commit": KP_REV}
    cfg = HuggingFaceCocoSource(endpoint=server.url(""), revision=KP_REV, splits=["train"], http=FAST)
    with pytest.raises(ChecksumMismatchError, match="train.zip"):
        fetch_source(cfg, tmp_path / "p")
    server.headers[f"{KP_PATH}/train.zip"] = {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"'}
    assert len(fetch_source(cfg, tmp_path / "p")) == 1
    pinned = cfg.model_copy(update={"sha256": {"train.zip": "2" * 64}})
    with pytest.raises(ChecksumMismatchError, match="expected 2222"):
        fetch_source(pinned, tmp_path / "p2")


def test_hf_coco_unknown_category_is_a_config_error(server: FileServer, tmp_path: Path) -> None:
    server.files[f"{KP_PATH}/train.zip"] = coco_zip(
        {"a.jpg": (10, 10)}, [("a.jpg", 1, [1, 1, 2, 2])], [{"id": 1, "name": "plate", "supercategory": "none"}]
    )
    cfg = HuggingFaceCocoSource(endpoint=server.url(""), revision=KP_REV, splits=["train"], http=FAST)
    with pytest.raises(ConfigurationError, match=r"categories \['plate'\] are used but not in class_map"):
        fetch_source(cfg, tmp_path / "plates")


# ----------------------------------------------------------------------------- local folders


def write_yolo_export(root: Path, names: list[str]) -> None:
    """A Roboflow-style YOLO export: data.yaml with ../<split>/images paths."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": "../train/images", "val": "../valid/images", "nc": len(names), "names": names})
    )
    for split, files in {
        "train": {"a.jpg": "0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.2 0.2\n", "bg.jpg": None},
        "valid": {"b.jpg": "0 0.0 0.5 0.2 1.0\n"},
    }.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for name, label in files.items():
            (root / split / "images" / name).write_bytes(jpeg(100, 50))
            if label is not None:
                (root / split / "labels" / name.replace(".jpg", ".txt")).write_text(label)


def test_local_yolo_folder(tmp_path: Path) -> None:
    write_yolo_export(tmp_path / "ds", ["License_Plate", "car"])
    cfg = LocalFolderSource(
        name="mine", path=tmp_path / "ds", format="yolo", class_map={"License_Plate": "license_plate", "car": "ignore"}
    )
    assert plan_source(cfg, tmp_path / "raw") == []
    records = fetch_source(cfg, tmp_path / "raw" / "mine")
    got = {Path(r.filepath).name: (r.source_split, r.width, r.height, boxes_of(r)) for r in records}
    assert got == {
        "a.jpg": ("train", 100, 50, [(1, 25, 12.5, 75, 37.5)]),
        "bg.jpg": ("train", 100, 50, []),
        "b.jpg": ("val", 100, 50, [(1, -10, 0, 10, 50)]),  # crosses the border: kept
    }
    assert not (tmp_path / "raw" / "mine").exists()  # nothing written: the download task indexes


def test_local_yolo_unmapped_class_is_named(tmp_path: Path) -> None:
    write_yolo_export(tmp_path / "ds", ["License_Plate", "car"])
    cfg = LocalFolderSource(name="m", path=tmp_path / "ds", format="yolo", class_map={"License_Plate": "license_plate"})
    with pytest.raises(ConfigurationError, match=r"\['car'\]"):
        fetch_source(cfg, tmp_path / "raw")


def test_local_coco_folder(tmp_path: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(coco_zip({"x.jpg": (30, 20)}, [("x.jpg", 0, [1, 2, 3, 4])]))) as zf:
        zf.extractall(tmp_path / "coco" / "train")
    cfg = LocalFolderSource(
        name="c", path=tmp_path / "coco", format="coco", class_map={"license_plate": "license_plate"}
    )
    (rec,) = fetch_source(cfg, tmp_path / "raw")
    assert (rec.source_split, rec.width, rec.height, boxes_of(rec)) == ("train", 30, 20, [(1, 1, 2, 4, 6)])


def write_coco2017(root: Path) -> None:
    """The COCO 2017 release's layout, cut down: annotations/{instances,captions,person_keypoints}_
    <split>.json next to <split>/ image folders (what pycocotools and the COCO site use)."""
    cats = [
        {"supercategory": "person", "id": 1, "name": "person"},
        {"supercategory": "vehicle", "id": 3, "name": "car"},
    ]
    images = {
        "train2017": [
            (9, "000000000009.jpg", 64, 48),
            (25, "000000000025.jpg", 40, 40),
            (30, "000000000030.jpg", 32, 32),
        ],
        "val2017": [(139, "000000000139.jpg", 50, 30)],
    }
    anns = {
        "train2017": [
            {"id": 1, "image_id": 9, "category_id": 1, "bbox": [1.5, 2.0, 10.0, 20.0], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 3, "bbox": [30, 10, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 3, "image_id": 25, "category_id": 1, "bbox": [0, 0, float("nan"), 5], "area": 0, "iscrowd": 0},
            {"id": 4, "image_id": 25, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 5, "image_id": 30, "category_id": 1, "bbox": [2, 2, 4, 4], "area": 16, "iscrowd": 1},
        ],
        "val2017": [{"id": 9, "image_id": 139, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0}],
    }
    (root / "annotations").mkdir(parents=True)
    for split, imgs in images.items():
        entries = [{"id": i, "file_name": f, "width": w, "height": h, "license": 1} for i, f, w, h in imgs]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"info": {}, "licenses": [], "images": entries, "annotations": anns[split], "categories": cats})
        )
        captions = [{"id": k, "image_id": i, "caption": "A person near a car."} for k, (i, *_rest) in enumerate(imgs)]
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"info": {}, "licenses": [], "images": entries, "annotations": captions})
        )
        kp_cats = [{"supercategory": "person", "id": 1, "name": "person", "keypoints": ["nose"], "skeleton": []}]
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(
            json.dumps({"images": entries, "annotations": anns[split][:1], "categories": kp_cats})
        )
        (root / split).mkdir()
        for _, f, w, h in imgs:
            if f != "000000000030.jpg":  # listed in the JSON, absent on disk
                (root / split / f).write_bytes(jpeg(w, h))


def test_local_coco_2017_layout_with_captions_beside(tmp_path: Path) -> None:
    write_coco2017(tmp_path / "coco")
    cfg = LocalFolderSource(
        name="coco", path=tmp_path / "coco", format="coco", class_map={"person": "face", "car": "license_plate"}
    )
    records = fetch_source(cfg, tmp_path / "raw")
    got = {Path(r.filepath).name: (r.source_split, r.width, r.height, boxes_of(r), r.issues) for r in records}
    assert got == {
        "000000000009.jpg": ("train2017", 64, 48, [(0, 1.5, 2, 11.5, 22), (1, 30, 10, 50, 20)], []),
        # one bad annotation rejects its own image, not the whole source
        "000000000025.jpg": ("train2017", 40, 40, [], ["bad_labels"]),
        # listed but missing: a record at its expected place, which curation rejects as missing_file
        "000000000030.jpg": ("train2017", 32, 32, [], ["crowd_regions"]),  # iscrowd=1: rejected
        "000000000139.jpg": ("val2017", 50, 30, [(0, 5, 5, 15, 15)], []),
    }
    missing = next(r for r in records if r.filepath.endswith("000000000030.jpg"))
    assert missing.filepath == str(tmp_path / "coco" / "train2017" / "000000000030.jpg")
    assert all(Path(r.filepath).is_file() for r in records if r is not missing)


def test_local_coco_only_captions_is_a_clear_error(tmp_path: Path) -> None:
    write_coco2017(tmp_path / "coco")
    for p in (tmp_path / "coco" / "annotations").glob("instances_*.json"):
        p.unlink()
    cfg = LocalFolderSource(name="c", path=tmp_path / "coco", format="coco", class_map={"person": "face"})
    with pytest.raises(SourceDataError, match="no COCO detection JSON"):
        fetch_source(cfg, tmp_path / "raw")


def test_local_yolo_relative_path_and_txt_image_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ultralytics data.yaml: relative path:, train: a .txt list (./ = relative to the list),
    val: a folder; a label without an image, a polygon line and a bad label file."""
    ds = tmp_path / "datasets" / "plates"
    for split in ("train", "val"):
        (ds / "images" / split).mkdir(parents=True)
        (ds / "labels" / split).mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (ds / "images" / "train" / name).write_bytes(jpeg(100, 50))
    (ds / "images" / "val" / "v.jpg").write_bytes(jpeg(100, 50))
    (ds / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (ds / "labels" / "train" / "b.txt").write_text("0 0.1 0.2 0.3 0.2 0.2 0.6\n")  # 7 columns: a triangle
    (ds / "labels" / "train" / "c.txt").write_text("0 0.5 0.5 0.2\n")  # 4 values: bad
    (ds / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (ds / "labels" / "val" / "v.txt").write_text("")
    (ds / "train.txt").write_text("./images/train/a.jpg\n./images/train/b.jpg\n./images/train/c.jpg\n")
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "plates.yaml").write_text(
        yaml.safe_dump({"path": "../datasets/plates", "train": "train.txt", "val": "images/val", "names": {0: "plate"}})
    )
    monkeypatch.chdir(tmp_path / "datasets")  # the yaml's folder wins over the working directory
    cfg = LocalFolderSource(name="y", path=cfg_dir / "plates.yaml", format="yolo", class_map={"plate": "license_plate"})
    records = fetch_source(cfg, tmp_path / "raw")
    got = {Path(r.filepath).name: (r.source_split, boxes_of(r), r.issues) for r in records}
    assert got == {
        "a.jpg": ("train", [(1, 40, 20, 60, 30)], []),
        "b.jpg": ("train", [(1, 10, 10, 30, 30)], []),
        "c.jpg": ("train", [], ["bad_labels"]),
        "v.jpg": ("val", [], []),
    }
    assert next(r for r in records if r.filepath.endswith("b.jpg")).boxes[0].attributes == {"polygon": True}


def test_local_yolo_label_without_image_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_yolo_export(tmp_path / "ds", ["License_Plate", "car"])
    (tmp_path / "ds" / "train" / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    cfg = LocalFolderSource(
        name="m", path=tmp_path / "ds", format="yolo", class_map={"License_Plate": "license_plate", "car": "ignore"}
    )
    with caplog.at_level(logging.WARNING):
        fetch_source(cfg, tmp_path / "raw")
    assert "1 label files have no image" in caplog.text and "ghost.txt" in caplog.text


def test_local_yolo_without_yaml_names_from_classes_txt(tmp_path: Path) -> None:
    root = tmp_path / "labelimg"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "x.png").write_bytes(jpeg(40, 20))
    (root / "labels" / "x.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "classes.txt").write_text("person_face\nplate\n")
    cfg = LocalFolderSource(
        name="l", path=root, format="yolo", class_map={"person_face": "face", "plate": "license_plate"}
    )
    (rec,) = fetch_source(cfg, tmp_path / "raw")
    assert [b[0] for b in boxes_of(rec)] == [1, 0]
    with pytest.raises(ConfigurationError, match=r"\['plate'\]"):
        fetch_source(cfg.model_copy(update={"class_map": {"person_face": "face"}}), tmp_path / "raw")


# ----------------------------------------------------------------------------- Roboflow

FAKE_KEY = "rf_FAKE_k3y_d0_not_leak_8c1f"


def fake_roboflow(download) -> types.ModuleType:
    """A stand-in ``roboflow`` module whose version.download runs ``download``."""
    module = types.ModuleType("roboflow")
    calls: list[str] = []

    class Version:
        def download(self, model_format: str, location: str, overwrite: bool = True) -> None:
            calls.append(model_format)
            download(Path(location))

    class Roboflow:
        def __init__(self, api_key: str) -> None:
            self.api_key = api_key
            logging.getLogger("roboflow").info("loading Roboflow workspace with key %s", api_key)

        def workspace(self, name: str):
            return types.SimpleNamespace(project=lambda p: types.SimpleNamespace(version=lambda v: Version()))

    module.Roboflow = Roboflow  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def _failing_download(location: Path) -> None:
    log = logging.getLogger("roboflow")
    try:
        raise ConnectionError(f"HTTPSConnectionPool: /dataset?api_key={FAKE_KEY} unreachable")
    except ConnectionError:
        log.exception("request to https://api.roboflow.com/?api_key=%s failed", FAKE_KEY)
        raise


def test_roboflow_key_never_leaks_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ROBOFLOW_API_KEY", FAKE_KEY)
    monkeypatch.setitem(sys.modules, "roboflow", fake_roboflow(_failing_download))
    with pytest.raises(rf_source.RoboflowError) as err:
        fetch_source(RoboflowSource(), tmp_path / "rf")
    chain = [err.value, err.value.__cause__, err.value.__context__]
    assert "unreachable" in str(err.value) and "***" in str(err.value)
    assert all(FAKE_KEY not in repr(e) for e in chain if e is not None)
    assert not (tmp_path / "rf" / ".export-tmp").exists() and not (tmp_path / "rf" / "export").exists()
    assert "api_key=*** failed" in caplog.text
    assert "unreachable" in caplog.text  # the scrubbed traceback is kept
    assert FAKE_KEY not in caplog.text


def test_roboflow_success_indexes_export_without_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ROBOFLOW_API_KEY", FAKE_KEY)
    module = fake_roboflow(lambda loc: write_yolo_export(loc, ["License_Plate", "car"]))
    monkeypatch.setitem(sys.modules, "roboflow", module)
    dest = tmp_path / "rf"
    cfg = RoboflowSource(class_map={"License_Plate": "license_plate", "car": "ignore"})
    records = fetch_source(cfg, dest)
    assert module.calls == ["yolov11"]
    assert len(records) == 3 and {r.source for r in records} == {"roboflow_plates"}
    assert all(Path(r.filepath).is_file() for r in records)
    assert sum(len(r.boxes) for r in records) == 2
    assert FAKE_KEY not in json.dumps([r.model_dump(mode="json") for r in records])
    assert all(FAKE_KEY not in p.read_text(errors="ignore") for p in dest.rglob("*") if p.is_file())
    assert FAKE_KEY not in caplog.text
    # Already exported: no second call, no key needed.
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    assert fetch_source(cfg, dest) == records
    assert module.calls == ["yolov11"]


def test_roboflow_missing_key_and_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_RF_KEY", raising=False)
    monkeypatch.setitem(sys.modules, "roboflow", fake_roboflow(lambda loc: None))
    with pytest.raises(rf_source.RoboflowKeyMissingError, match="MY_RF_KEY"):
        fetch_source(RoboflowSource(api_key_env="MY_RF_KEY"), tmp_path / "rf")
    monkeypatch.setitem(sys.modules, "roboflow", None)  # makes `import roboflow` fail
    with pytest.raises(rf_source.RoboflowError, match="pip install roboflow"):
        fetch_source(RoboflowSource(), tmp_path / "rf")
    plan = plan_source(RoboflowSource(), tmp_path / "rf")
    assert plan[0].url.endswith("/license-plate-recognition-rxg4e/dataset/4")


# ----------------------------------------------------------------------------- Open Images


class FakeDetection(dict):
    """Duck-types fiftyone's Detection (label, bounding_box, has_field, item access) without
    importing fiftyone, whose import starts its database."""

    def __init__(self, label: str, bounding_box: list[float], **attrs: object) -> None:
        super().__init__(attrs)
        self.label, self.bounding_box = label, bounding_box

    def has_field(self, name: str) -> bool:
        return name in self


def test_open_images_conversion_and_plan(tmp_path: Path) -> None:
    """The zoo download needs internet; the conversion of its detections is tested here."""
    from pyroblur.data.sources.models import OpenImagesSource
    from pyroblur.data.sources.open_images import detections_to_boxes

    dets = [
        FakeDetection("Human face", [0.1, 0.2, 0.3, 0.4], IsOccluded=True, IsGroupOf=None),
        FakeDetection("Vehicle registration plate", [0.0, 0.5, 1.0, 0.5]),
        FakeDetection("Car", [0.0, 0.0, 1.0, 1.0]),
    ]
    classes = OpenImagesSource().classes
    boxes = detections_to_boxes(dets, 200, 100, classes)
    assert [(b.class_id, b.x1, b.y1, b.x2, b.y2) for b in boxes] == [
        (0, 20, 20, pytest.approx(80), pytest.approx(60)),
        (1, 0, 50, 200, 100),
    ]
    assert boxes[0].attributes == {"IsOccluded": True}
    (planned,) = plan_source(OpenImagesSource(), tmp_path)
    assert "open-images-v7" in planned.url and planned.size is None
