"""Curation through FiftyOne: every validation reason, the report, incremental import, stamps.

Each case of the table below plants one problem in one image among good ones; a single curation
run over all of them must reject (or fix) exactly that image or label, count it by reason and keep
every other image.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from curation_data import box, dataset_dump, jpeg_bytes, noise_image, record, save_jpeg

from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
from pyroblur.curation.dataset import dataset_stamp, insert_docs
from pyroblur.curation.importer import curate, report_rows, run_curation, sample_doc
from pyroblur.curation.split import balance_and_split

pytestmark = pytest.mark.integration  # needs FiftyOne's mongod

SIZE = (64, 48)
GOOD = 10

#: name -> (how to make the record, expected image reason, expected label reasons)
IMAGE_CASES = {
    "missing_file": "missing_file",
    "corrupt_jpeg": "unreadable",
    "truncated_jpeg": "truncated",
    "missing_labels": "missing_labels",
    "bad_labels": "bad_labels",
    "size_mismatch": "size_mismatch",
    "too_many_boxes": "too_many_boxes",
    "exact_copy": "duplicate",
}
LABEL_CASES = {
    "box_outside": (box(70, 10, 90, 30), "outside"),
    "box_zero_width": (box(10, 10, 10, 30), "invalid_geometry"),
    "box_negative_size": (box(30, 30, 10, 10), "invalid_geometry"),
    "box_nan": (box(math.nan, 10, 20, 30), "invalid_geometry"),
    "box_unknown_class": (box(10, 10, 30, 30, cls=7), "unknown_class"),
    "box_too_small": (box(10, 10, 12, 30), "too_small"),
    "box_wider_invalid": (box(10, 10, 30, 30, invalid=1), "flagged_invalid"),
    "box_heavy_occlusion": (box(10, 10, 30, 30, occlusion=2), "heavy_occlusion"),
}
CFG = {"max_boxes_per_image": 5, "drop_heavy_occlusion": True, "min_box_size": {"face": 4, "license_plate": 4}}
GOOD_BOX = box(20, 10, 40, 30)


def build_cases(root: Path) -> tuple[list, dict[str, str]]:
    """Records for GOOD good images + one per case; returns them and case -> filepath."""
    recs, where = [], {}
    for i in range(GOOD):
        p = save_jpeg(noise_image(i, SIZE), root / f"good_{i}.jpg")
        recs.append(record(p, SIZE, [GOOD_BOX, box(1, 1, 9, 9, cls=1)]))
    k = 100

    def img(name: str) -> Path:
        nonlocal k
        k += 1
        return save_jpeg(noise_image(k, SIZE), root / f"{name}.jpg")

    for name in IMAGE_CASES:
        path = root / f"{name}.jpg"
        kw: dict = {}
        boxes = [GOOD_BOX]
        size = SIZE
        if name == "missing_file":
            pass
        elif name == "corrupt_jpeg":
            # A real JPEG header followed by garbage: the decoder identifies it, then refuses it.
            data = jpeg_bytes(noise_image(201, SIZE))
            path.write_bytes(data[:200] + np.random.default_rng(0).bytes(len(data) - 200))
        elif name == "truncated_jpeg":
            data = jpeg_bytes(noise_image(200, SIZE))
            path.write_bytes(data[: len(data) * 2 // 3])
        elif name == "exact_copy":
            path = root / "z_copy_of_good_0.jpg"  # the copy that sorts first by (source, path) is kept
            path.write_bytes(Path(recs[0].filepath).read_bytes())
        else:
            path = img(name)
            if name == "missing_labels":
                kw["issues"], boxes = ["missing_labels"], []
            elif name == "bad_labels":
                kw["issues"], boxes = ["bad_labels"], []
            elif name == "size_mismatch":
                size = (100, 100)
            elif name == "too_many_boxes":
                boxes = [box(2 * i, 2 * i, 2 * i + 10, 2 * i + 10) for i in range(6)]
        recs.append(record(path, size, boxes, **kw))
        where[name] = str(path.resolve())
    for name, (bad, _) in LABEL_CASES.items():
        path = img(name)
        recs.append(record(path, SIZE, [GOOD_BOX, bad]))
        where[name] = str(path.resolve())
    path = img("box_clipped")
    recs.append(record(path, SIZE, [GOOD_BOX, box(-10, 20, 30, 60)]))
    where["box_clipped"] = str(path.resolve())
    return recs, where


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    recs, where = build_cases(root)
    cfg = CurationConfig(dataset_name=f"cases-{uuid.uuid4().hex[:6]}", **CFG)
    manifest = curate(recs, cfg, "digest-1")
    import fiftyone as fo

    ds = fo.load_dataset(cfg.dataset_name)
    by_path = {s.filepath: s for s in ds.select_fields(["rejection", "ground_truth", "rejected_gt", "duplicate_of"])}
    return manifest, by_path, where, recs, cfg


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_reason(curated, case):
    _, by_path, where, _, _ = curated
    sample = by_path[where[case]]
    assert sample.rejection == IMAGE_CASES[case]
    assert "rejected" in sample.tags and f"rejected:{IMAGE_CASES[case]}" in sample.tags
    assert "curated" not in sample.tags


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_label_reason(curated, case):
    _, by_path, where, _, _ = curated
    sample = by_path[where[case]]
    assert sample.tags == ["curated"]  # a bad box does not reject the image
    kept = sample.ground_truth.detections
    assert len(kept) == 1 and kept[0].tags == []
    dropped = sample.rejected_gt.detections
    assert [d.tags for d in dropped] == [[f"rejected:{LABEL_CASES[case][1]}"]]


def test_clipped_box_is_kept_clipped_and_tagged(curated):
    _, by_path, where, _, _ = curated
    sample = by_path[where["box_clipped"]]
    clipped = [d for d in sample.ground_truth.detections if d.tags == ["clipped"]]
    assert len(clipped) == 1
    x, y, w, h = clipped[0].bounding_box
    assert (x, y) == (0.0, 20 / 48) and x + w == pytest.approx(30 / 64) and y + h == pytest.approx(1.0)
    assert sample.rejected_gt is None


def test_good_images_are_curated_and_the_report_counts_every_reason(curated):
    manifest, by_path, where, recs, _ = curated
    assert manifest.num_imported == len(recs)
    assert manifest.num_curated == GOOD + len(LABEL_CASES) + 1
    assert manifest.rejected == dict(sorted(Counter(IMAGE_CASES.values()).items()))
    want_labels = Counter(reason for _, reason in LABEL_CASES.values())
    want_labels["clipped"] = 1
    assert manifest.label_issues == dict(sorted(want_labels.items()))
    assert manifest.exact_duplicates == 1
    rows = {(r["level"], r["reason"]): r["count"] for r in report_rows(manifest)}
    for reason, n in manifest.rejected.items():
        assert rows[("image", reason)] == n
    for reason, n in manifest.label_issues.items():
        assert rows[("box", reason)] == n
    assert rows[("summary", "curated")] == manifest.num_curated
    for i in range(GOOD):
        assert by_path[str(Path(recs[i].filepath).resolve())].tags == ["curated"]


def test_exact_copy_names_the_kept_file(curated):
    _, by_path, where, recs, _ = curated
    assert by_path[where["exact_copy"]].duplicate_of == str(Path(recs[0].filepath).resolve())


def test_saved_views(curated):
    manifest, _, _, _, cfg = curated
    import fiftyone as fo

    ds = fo.load_dataset(cfg.dataset_name)
    assert {"curated", "rejected", "duplicates"} <= set(ds.list_saved_views())
    assert len(ds.load_saved_view("curated")) == manifest.num_curated
    assert len(ds.load_saved_view("rejected")) == sum(manifest.rejected.values())


def test_missing_labels_background_policy(tmp_path):
    p = save_jpeg(noise_image(1, SIZE), tmp_path / "a.jpg")
    recs = [record(p, SIZE, [], issues=["missing_labels"])]
    cfg = CurationConfig(dataset_name=f"bg-{uuid.uuid4().hex[:6]}", missing_labels="background")
    m = curate(recs, cfg, "d")
    assert m.num_curated == 1 and m.rejected == {}


def test_local_yolo_source_with_broken_files_is_curated_not_crashed(tmp_path):
    """A YOLO folder with a corrupt image, a missing and an unparseable label file."""
    from pyroblur.data.sources.local import fetch
    from pyroblur.data.sources.models import LocalFolderSource

    root = tmp_path / "yolo"
    (root / "labels").mkdir(parents=True)
    for i in range(4):
        save_jpeg(noise_image(i, SIZE), root / "images" / f"ok{i}.jpg")
        (root / "labels" / f"ok{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    save_jpeg(noise_image(10, SIZE), root / "images" / "nolabel.jpg")
    save_jpeg(noise_image(11, SIZE), root / "images" / "badlabel.jpg")
    (root / "labels" / "badlabel.txt").write_text("0 nan 0.5 0.3 0.3\n")
    (root / "images" / "corrupt.jpg").write_bytes(b"garbage" * 10)
    (root / "labels" / "corrupt.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    src = LocalFolderSource(name="mine", path=root, format="yolo", class_map={"0": "face"})
    recs = fetch(src, tmp_path / "dest")
    issues = {Path(r.filepath).stem: r.issues for r in recs}
    assert issues["nolabel"] == ["missing_labels"] and issues["badlabel"] == ["bad_labels"]
    m = curate(recs, CurationConfig(dataset_name=f"yolo-{uuid.uuid4().hex[:6]}"), "d")
    assert m.num_curated == 4
    assert m.rejected == {"bad_labels": 1, "missing_labels": 1, "unreadable": 1}


def test_stamps_curate_then_split_and_recurate_clears_split(curated, tmp_path):
    _, _, _, recs, cfg = curated
    assert dataset_stamp(cfg.dataset_name, "curate") == "digest-1"
    balance_and_split(
        cfg.dataset_name, BalanceConfig(samples_per_class=5, allow_small_evidence=True), SplitConfig(), "split-1"
    )
    assert dataset_stamp(cfg.dataset_name, "split") == "split-1"
    curate(recs, cfg, "digest-2")
    assert dataset_stamp(cfg.dataset_name, "curate") == "digest-2"
    assert dataset_stamp(cfg.dataset_name, "split") is None
    assert dataset_stamp("no-such-dataset-here", "curate") is None


# ----------------------------------------------------------------------------- incremental import


def test_incremental_import_equals_fresh_build(tmp_path):
    root = tmp_path / "inc"
    recs = []
    for i in range(30):
        p = save_jpeg(noise_image(i, SIZE), root / f"{i}.jpg")
        recs.append(record(p, SIZE, [GOOD_BOX] if i % 2 else [box(1, 1, 9, 9, cls=1)]))
    recs.append(record(save_jpeg(noise_image(0, SIZE), root / "copy.jpg"), SIZE, [GOOD_BOX]))
    cfg = CurationConfig(dataset_name=f"inc-{uuid.uuid4().hex[:6]}")
    first = run_curation(recs, cfg, "a")
    assert first.imported == {"added": 31, "removed": 0, "unchanged": 0, "decoded": 31}
    before = dataset_dump(cfg.dataset_name)

    again = run_curation(recs, cfg, "b")
    assert again.imported == {"added": 0, "removed": 0, "unchanged": 31, "decoded": 0}
    assert again.manifest.model_dump(exclude={"digest"}) == first.manifest.model_dump(exclude={"digest"})
    assert dataset_dump(cfg.dataset_name) == before

    # Change things: drop a record, move a box, new bytes at the same path, a new image, and the
    # kept copy of the duplicate pair disappears (its copy must become the kept one).
    changed = [r for r in recs if Path(r.filepath).name not in ("3.jpg", "0.jpg")]
    changed[0] = changed[0].model_copy(update={"boxes": [box(5, 5, 25, 25)]})
    save_jpeg(noise_image(999, SIZE), root / "7.jpg")
    changed.append(record(save_jpeg(noise_image(500, SIZE), root / "new.jpg"), SIZE, [GOOD_BOX]))
    run = run_curation(changed, cfg, "c")
    inc = run.manifest
    assert run.imported == {"added": 3, "removed": 4, "unchanged": 27, "decoded": 2}

    fresh_cfg = CurationConfig(dataset_name=f"fresh-{uuid.uuid4().hex[:6]}")
    fresh = curate(changed, fresh_cfg, "c")
    assert dataset_dump(cfg.dataset_name) == dataset_dump(fresh_cfg.dataset_name)
    # The manifest does not depend on the way there (downstream cache keys hash it whole).
    assert inc.model_dump(exclude={"dataset_name"}) == fresh.model_dump(exclude={"dataset_name"})
    assert inc.rejected == {}  # the copy is the only one left: no longer a duplicate


def test_config_change_rebuilds_labels_without_decoding(tmp_path):
    p = save_jpeg(noise_image(3, SIZE), tmp_path / "a.jpg")
    recs = [record(p, SIZE, [box(10, 10, 16, 16)])]
    cfg = CurationConfig(dataset_name=f"cfg-{uuid.uuid4().hex[:6]}")
    assert curate(recs, cfg, "a").label_issues == {}
    stricter = cfg.model_copy(update={"min_box_size": {"face": 8.0, "license_plate": 8.0}})
    run = run_curation(recs, stricter, "b")
    assert run.manifest.label_issues == {"too_small": 1}
    assert run.imported == {"added": 1, "removed": 1, "unchanged": 0, "decoded": 0}


def test_raw_documents_match_add_samples(tmp_path):
    """The bulk insert writes the documents ``Dataset.add_samples`` would write (fiftyone 1.22)."""
    import fiftyone as fo

    p = save_jpeg(noise_image(5, SIZE), tmp_path / "a.jpg")
    rec = record(p, SIZE, [box(-4, 10, 30, 30, blur=2), box(10, 10, 11, 30, cls=1)], source_split="train")
    cfg = CurationConfig()
    from pyroblur.curation.importer import inspect_images

    (info,), _ = inspect_images([str(p)])
    doc, _ = sample_doc(rec, info, cfg, "key")

    raw = fo.Dataset()
    from pyroblur.curation.dataset import ensure_schema

    ensure_schema(raw)
    insert_docs(raw, [dict(doc)])
    ours = raw._sample_collection.find_one()

    ref = fo.Dataset()
    det = fo.Detection(label="face", bounding_box=[0.0, 10 / 48, 30 / 64, 20 / 48], tags=["clipped"], blur=2)
    bad = fo.Detection(
        label="license_plate", bounding_box=[10 / 64, 10 / 48, 1 / 64, 20 / 48], tags=["rejected:too_small"]
    )
    sample = fo.Sample(
        filepath=str(p.resolve()),
        metadata=fo.ImageMetadata(width=SIZE[0], height=SIZE[1]),
        ground_truth=fo.Detections(detections=[det]),
        rejected_gt=fo.Detections(detections=[bad]),
        **{
            k: doc[k] for k in ("source", "source_split", "sha256", "phash", "record_issues", "import_key", "gt_digest")
        },
    )
    ref.add_sample(sample)
    theirs = ref._sample_collection.find_one()

    def norm(d: dict) -> dict:
        d = {k: v for k, v in d.items() if k not in ("_id", "_rand", "_dataset_id", "created_at", "last_modified_at")}
        for field in ("ground_truth", "rejected_gt"):
            for det in d[field]["detections"]:
                det.pop("_id")
                det["bounding_box"] = [round(v, 9) for v in det["bounding_box"]]
        return d

    assert norm(ours) == norm(theirs)
    loaded = raw.first()
    assert loaded.ground_truth.detections[0].tags == ["clipped"] and loaded.metadata.width == SIZE[0]
