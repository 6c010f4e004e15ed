"""Duplicates through FiftyOne, balancing and leak-free splits on the real dataset path.

* planted exact and near-duplicates (across two sources and their source splits) are all found
  and each pair ends up in one split; no image digest and no near-duplicate group is in two splits;
* skewed classes (5000 face, 1200 plate, 300 both): exactly N plate images, the same selection
  on a re-run with the same seed, another one with another seed.
"""

from __future__ import annotations

import io
import uuid
from collections import defaultdict

import pytest
from curation_data import box, noise_image, photo, record, save_jpeg
from PIL import Image, ImageEnhance

from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
from pyroblur.curation.dataset import SPLITS
from pyroblur.curation.importer import curate
from pyroblur.curation.split import balance_and_split

pytestmark = pytest.mark.integration  # needs FiftyOne's mongod


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


PLANTS = {
    "exact": None,
    "jpeg_q95": lambda im: _jpeg(im, 95),
    "jpeg_q50": lambda im: _jpeg(im, 50),
    "resize_90": lambda im: im.resize((58, 58)),
    "resize_120": lambda im: im.resize((77, 77)),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
    "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.9),
}


def split_of(ds) -> dict[str, set[str]]:
    """sample id -> the split tags it carries."""
    ids, tags = ds.values(["id", "tags"])
    return {i: {t for t in ts if t in SPLITS} for i, ts in zip(ids, tags, strict=True)}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """40 distinct photos in two sources; each plant is a copy of one photo in the other source."""
    root = tmp_path_factory.mktemp("planted")
    recs, pairs = [], []
    for k in range(40):
        src = "a" if k % 2 else "b"
        cls = 1 if k % 3 == 0 else 0
        p = save_jpeg(photo(k), root / src / f"photo_{k}.jpg", quality=92)
        recs.append(record(p, (64, 64), [box(8, 8, 40, 40, cls=cls)], source=src, source_split="train"))
    for k, (name, make) in enumerate(PLANTS.items()):
        orig = recs[k]
        other = "b" if orig.source == "a" else "a"
        dest = root / other / f"plant_{name}.jpg"
        if make is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(open(orig.filepath, "rb").read())
            size = (64, 64)
        else:
            img = make(Image.open(orig.filepath).convert("RGB"))
            save_jpeg(img, dest, quality=92)
            size = img.size
        scale = size[0] / 64
        recs.append(
            record(dest, size, [box(8 * scale, 8 * scale, 40 * scale, 40 * scale, cls=orig.boxes[0].class_id)],
                   source=other, source_split="val")
        )  # fmt: skip
        pairs.append((name, str(orig.filepath), str(dest)))
    name = f"planted-{uuid.uuid4().hex[:6]}"
    manifest = curate(recs, CurationConfig(dataset_name=name), "c")
    return name, manifest, pairs


def test_every_planted_pair_is_found(planted):
    import fiftyone as fo

    name, manifest, pairs = planted
    ds = fo.load_dataset(name)
    info = {fp: (g, dup_of, rej) for fp, g, dup_of, rej in zip(*ds.values(["filepath", "dup_group", "duplicate_of",
                                                                          "rejection"]), strict=True)}  # fmt: skip
    for plant, orig, copy in pairs:
        assert info[orig][0] == info[copy][0], f"{plant}: not in one near-duplicate group"
        if plant == "exact":
            # One of the two byte-identical files is kept; the other names it.
            kept, dropped = sorted([orig, copy], key=lambda p: (("a" if "/a/" in p else "b"), p))
            assert info[dropped][1:] == (kept, "duplicate")
    assert manifest.exact_duplicates == 1
    assert manifest.duplicate_groups >= len(PLANTS) - 1
    assert len(ds.load_saved_view("duplicates")) >= 2 * len(PLANTS) - 1


def test_pairs_never_straddle_splits(planted):
    import fiftyone as fo

    name, _, pairs = planted
    for seed in (0, 1, 2):
        balance_and_split(
            name,
            BalanceConfig(samples_per_class=1000, seed=seed, allow_small_evidence=True),
            SplitConfig(train=0.5, val=0.25, test=0.25),
            f"s{seed}",
        )
        ds = fo.load_dataset(name)
        splits = split_of(ds)
        ids, fps, shas, groups = ds.values(["id", "filepath", "sha256", "dup_group"])
        by_fp = dict(zip(fps, ids, strict=True))
        for plant, orig, copy in pairs:
            together = splits[by_fp[orig]] | splits[by_fp[copy]]
            assert len(together) <= 1, f"seed {seed}: {plant} pair in {together}"
        digest_splits, group_splits = defaultdict(set), defaultdict(set)
        for sid, sha, grp in zip(ids, shas, groups, strict=True):
            digest_splits[sha] |= splits[sid]
            if grp:
                group_splits[grp] |= splits[sid]
        assert all(len(s) <= 1 for s in digest_splits.values()), "an image digest is in two splits"
        assert all(len(s) <= 1 for s in group_splits.values()), "a near-duplicate group is in two splits"
        assert {s for ss in splits.values() for s in ss} == set(SPLITS)


# ----------------------------------------------------------------------------- balancing


N_FACE, N_PLATE, N_BOTH, N_NONE = 5000, 1200, 300, 200


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """6700 tiny (16x16) images: 5000 face-only, 1200 plate-only, 300 with both, 200 with none."""
    root = tmp_path_factory.mktemp("skewed")
    recs, kinds = [], {}
    plan = [("face", N_FACE, [0]), ("plate", N_PLATE, [1]), ("both", N_BOTH, [0, 1]), ("none", N_NONE, [])]
    seed = 0
    for kind, n, classes in plan:
        for i in range(n):
            seed += 1
            p = save_jpeg(noise_image(seed), root / kind / f"{i}.jpg")
            boxes = [box(1 + 7 * j, 2, 7 + 7 * j, 9, cls=c) for j, c in enumerate(classes)]
            recs.append(record(p, (16, 16), boxes))
            kinds[str(p.resolve())] = kind
    name = f"skewed-{uuid.uuid4().hex[:6]}"
    manifest = curate(recs, CurationConfig(dataset_name=name), "c")
    return name, manifest, kinds


def selected(name: str) -> list[str]:
    import fiftyone as fo

    return sorted(fo.load_dataset(name).match_tags("selected").values("sha256"))


def test_skewed_classes_balance_to_exactly_n_plates(skewed):
    import fiftyone as fo

    name, manifest, kinds = skewed
    assert manifest.num_curated == len(kinds)
    m = balance_and_split(
        name, BalanceConfig(samples_per_class=1000, seed=7, negative_fraction=0.05), SplitConfig(), "s"
    )
    assert m.achieved == {"face": 1000, "license_plate": 1000}
    assert m.warnings == []
    ds = fo.load_dataset(name)
    fps = ds.match_tags("selected").values("filepath")
    picked = defaultdict(int)
    for fp in fps:
        picked[kinds[fp]] += 1
    assert picked["plate"] + picked["both"] == 1000  # images containing a plate
    assert picked["face"] + picked["both"] == 1000
    assert picked["none"] == round(0.05 * (len(fps) - picked["none"]))
    assert m.instances["license_plate"] == 1000 and m.instances["face"] == 1000
    assert sum(m.images.values()) == len(fps)
    assert sum(m.per_class[s]["license_plate"] for s in SPLITS) == 1000

    first = selected(name)
    balance_and_split(name, BalanceConfig(samples_per_class=1000, seed=7, negative_fraction=0.05), SplitConfig(), "s2")
    assert selected(name) == first  # same seed, same selection
    balance_and_split(name, BalanceConfig(samples_per_class=1000, seed=8, negative_fraction=0.05), SplitConfig(), "s3")
    assert selected(name) != first


def test_fewer_available_takes_all_and_warns(skewed):
    name, _, _ = skewed
    m = balance_and_split(name, BalanceConfig(samples_per_class=2000, seed=0, negative_fraction=0), SplitConfig(), "w")
    assert m.achieved["license_plate"] == N_PLATE + N_BOTH
    assert any("license_plate" in w and f"only {N_PLATE + N_BOTH}" in w for w in m.warnings)
    assert m.achieved["face"] >= 2000


def test_export_of_the_split_uses_fixed_class_order(planted, tmp_path):
    import yaml

    from pyroblur.curation.dataset import export_items
    from pyroblur.curation.export import save_yolo_dataset

    name, _, _ = planted
    m = balance_and_split(name, BalanceConfig(samples_per_class=1000, allow_small_evidence=True), SplitConfig(), "e")
    items = export_items(name)
    counts = save_yolo_dataset(items, tmp_path / "yolo", "digest")
    assert counts == {s: n for s, n in m.images.items() if n}
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "face", 1: "license_plate"}
    lines = [ln.split() for f in (tmp_path / "yolo" / "labels").rglob("*.txt") for ln in f.read_text().splitlines()]
    classes = {int(ln[0]) for ln in lines}
    assert classes == {0, 1}
    assert sum(1 for ln in lines if ln[0] == "1") == m.instances["license_plate"]
    assert all(0 <= float(v) <= 1 for ln in lines for v in ln[1:])
