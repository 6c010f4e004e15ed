"""FiftyOne curation: import, validate, deduplicate, balance, split and read back for export.

The FiftyOne dataset is the inspectable record of curation: rejected samples stay in it with a
``rejected:<reason>`` tag, dropped labels live in ``rejected_gt`` with the reason as a label tag,
and the split is written as ``train``/``val``/``test`` tags plus saved views. Stages stamp their
content digest into ``dataset.info["pyroblur"]`` so cached results can be checked against it.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pyroblur import CLASSES
from pyroblur.balance import Candidate, balance, split
from pyroblur.config import BalanceConfig, CurationConfig, SplitConfig
from pyroblur.export import ExportItem
from pyroblur.hashing import digest_of
from pyroblur.manifests import CurateManifest, SplitManifest
from pyroblur.records import SampleRecord
from pyroblur.validation import check_boxes

log = logging.getLogger(__name__)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

SPLITS = ("train", "val", "test")


@dataclass
class ImageInfo:
    sha256: str | None
    width: int
    height: int
    phash: int
    reason: str | None  # None when readable


def inspect_image(path: str) -> ImageInfo:
    """Content sha256, real size, 64-bit perceptual hash; ``reason`` set when unusable."""
    import hashlib

    import imagehash
    from PIL import Image

    try:
        data = Path(path).read_bytes()
    except OSError:
        return ImageInfo(None, 0, 0, 0, "missing_file")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes fully: truncated or corrupt files raise here
            w, h = im.size
            ph = int(str(imagehash.phash(im)), 16)
    except Exception:  # noqa: BLE001 - any decoder failure means the file is unusable
        return ImageInfo(sha, 0, 0, 0, "unreadable")
    return ImageInfo(sha, w, h, ph, None)


def near_duplicate_groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Union-find group index for each 64-bit hash: pairs within ``max_distance`` bits join."""
    n = len(hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    h = hashes.astype(np.uint64)
    chunk = 2048
    for start in range(0, n, chunk):
        block = h[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj):
            if j > i:
                ri, rj = find(int(i)), find(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def _detections(boxes: list, width: int, height: int, tag: str | None = None):  # noqa: ANN202
    import fiftyone as fo

    dets = []
    for item in boxes:
        b, reason = item if isinstance(item, tuple) else (item, None)
        x1, y1 = b.x1 / width if width else 0.0, b.y1 / height if height else 0.0
        w = (b.x2 - b.x1) / width if width else 0.0
        h = (b.y2 - b.y1) / height if height else 0.0
        label = CLASSES[b.class_id] if 0 <= b.class_id < len(CLASSES) else f"class_{b.class_id}"
        det = fo.Detection(label=label, bounding_box=[x1, y1, w, h])
        for k, v in b.attributes.items():
            det[k] = v
        if reason or tag:
            det.tags = [f"rejected:{reason or tag}"]
        dets.append(det)
    return fo.Detections(detections=dets)


def dataset_stamp(name: str, stage: str) -> str | None:
    """The digest ``stage`` stamped into dataset ``name``, or None if the dataset is gone."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        return None
    return (fo.load_dataset(name).info.get("pyroblur") or {}).get(stage)


def _stamp(ds, stage: str, digest: str) -> None:  # noqa: ANN001
    info = dict(ds.info.get("pyroblur") or {})
    info[stage] = digest
    if stage == "curate":
        info.pop("split", None)
    ds.info["pyroblur"] = info
    ds.save()


def curate(records: list[SampleRecord], cfg: CurationConfig, digest: str) -> CurateManifest:
    """Build the FiftyOne dataset ``cfg.dataset_name`` from ``records`` (replacing it).

    Every record becomes a sample; unusable ones are tagged ``rejected:<reason>`` and kept for
    inspection, the others are tagged ``curated``. Exact duplicates (same sha256) keep their first
    occurrence; near-duplicates share a ``dup_group`` so the split keeps them together.
    """
    import fiftyone as fo

    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        infos = list(
            tqdm(
                pool.map(inspect_image, [r.filepath for r in records]),
                total=len(records),
                desc="inspect images",
                unit="img",
                mininterval=1.0,
            )
        )
    rejected: Counter = Counter()
    label_issues: Counter = Counter()
    seen_sha: set[str] = set()
    reasons: list[str | None] = []
    for rec, info in zip(records, infos):
        reason = info.reason
        if reason is None and (info.width, info.height) != (rec.width, rec.height):
            reason = "size_mismatch"
        if reason is None and len(rec.boxes) > cfg.max_boxes_per_image:
            reason = "too_many_boxes"
        if reason is None and info.sha256 in seen_sha:
            reason = "duplicate"
        if reason is None:
            seen_sha.add(info.sha256)
        else:
            rejected[reason] += 1
        reasons.append(reason)

    good = [i for i, r in enumerate(reasons) if r is None]
    groups = near_duplicate_groups(np.array([infos[i].phash for i in good], np.uint64), cfg.near_duplicate_distance)
    group_of = {i: f"g{infos[good[g]].sha256[:16]}" for i, g in zip(good, groups)}

    samples = []
    for i, (rec, info) in enumerate(zip(records, infos)):
        sample = fo.Sample(filepath=str(Path(rec.filepath).resolve()))
        sample["source"] = rec.source
        sample["source_split"] = rec.source_split
        sample["sha256"] = info.sha256
        if reasons[i] is None:
            sample.metadata = fo.ImageMetadata(width=info.width, height=info.height)
            check = check_boxes(
                rec.boxes, info.width, info.height, dict(cfg.min_box_size), cfg.drop_invalid, cfg.drop_heavy_occlusion
            )
            label_issues.update(check.issues)
            sample["ground_truth"] = _detections(check.kept, info.width, info.height)
            if check.dropped:
                sample["rejected_gt"] = _detections(check.dropped, info.width, info.height)
            sample["phash"] = f"{info.phash:016x}"
            sample["dup_group"] = group_of[i]
            sample.tags = ["curated"]
        else:
            sample["ground_truth"] = _detections(rec.boxes, rec.width or 1, rec.height or 1)
            sample.tags = [f"rejected:{reasons[i]}", "rejected"]
        samples.append(sample)

    ds = fo.Dataset(cfg.dataset_name, persistent=True, overwrite=True)
    ds.add_samples(samples, progress=False)
    ds.save_view("curated", ds.match_tags("curated"))
    ds.save_view("rejected", ds.match_tags("rejected"))
    _stamp(ds, "curate", digest)
    n_groups = len(set(group_of.values()))
    log.info(
        "curated %d of %d images into FiftyOne dataset '%s'; rejected %s; label issues %s",
        len(good), len(records), cfg.dataset_name, dict(rejected), dict(label_issues),
    )
    return CurateManifest(
        digest=digest,
        dataset_name=cfg.dataset_name,
        num_imported=len(records),
        num_curated=len(good),
        rejected=dict(rejected),
        label_issues=dict(label_issues),
        duplicate_groups=len(good) - n_groups,
    )


def balance_and_split(
    dataset_name: str, bal: BalanceConfig, spl: SplitConfig, digest: str
) -> SplitManifest:
    """Select ``bal.samples_per_class`` images per class and tag them train/val/test."""
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    view = ds.match_tags("curated")
    ids, shas, groups, labels = view.values(["id", "sha256", "dup_group", "ground_truth.detections.label"])
    cands = []
    key_to_id = {}
    instances_of: dict[str, Counter] = {}
    for sid, sha, grp, labs in zip(ids, shas, groups, labels):
        labs = labs or []
        cls = frozenset(CLASSES.index(lb) for lb in labs if lb in CLASSES)
        cands.append(Candidate(key=sha, classes=cls, group=grp))
        key_to_id[sha] = sid
        instances_of[sha] = Counter(labs)
    sel = balance(cands, bal.samples_per_class, len(CLASSES), bal.seed, bal.negative_fraction, CLASSES)
    chosen = set(sel.keys)
    assign = split([c for c in cands if c.key in chosen], spl.model_dump(), bal.seed)

    for tag in (*SPLITS, "selected"):
        ds.untag_samples(tag)
    ds.select([key_to_id[k] for k in sel.keys]).tag_samples("selected")
    per_split: dict[str, dict[str, int]] = {s: dict.fromkeys(CLASSES, 0) for s in SPLITS}
    images = dict.fromkeys(SPLITS, 0)
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    cls_of = {c.key: c.classes for c in cands}
    for key, s in assign.items():
        by_split[s].append(key_to_id[key])
        images[s] += 1
        for c in cls_of[key]:
            per_split[s][CLASSES[c]] += 1
    for s, sids in by_split.items():
        if sids:
            ds.select(sids).tag_samples(s)
        ds.save_view(s, ds.match_tags(s), overwrite=True)
    instances = Counter()
    for k in sel.keys:
        instances.update(instances_of[k])
    _stamp(ds, "split", digest)
    log.info("selected %d images; per class %s; per split %s", len(sel.keys), sel.achieved, images)
    return SplitManifest(
        digest=digest,
        dataset_name=dataset_name,
        images=images,
        per_class=per_split,
        instances={c: int(instances.get(c, 0)) for c in CLASSES},
        achieved={CLASSES[c]: n for c, n in sel.achieved.items()},
        requested=bal.samples_per_class,
        warnings=sel.warnings,
    )


def export_items(dataset_name: str) -> list[ExportItem]:
    """The selected samples with their split, pixel boxes and class ids, in a stable order."""
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    items = []
    for split_name in SPLITS:
        view = ds.match_tags(split_name).sort_by("sha256")
        fields = ["filepath", "sha256", "metadata.width", "metadata.height", "ground_truth.detections"]
        for fp, sha, w, h, dets in zip(*view.values(fields)):
            rows = [
                [d.bounding_box[0] * w, d.bounding_box[1] * h,
                 (d.bounding_box[0] + d.bounding_box[2]) * w, (d.bounding_box[1] + d.bounding_box[3]) * h]
                for d in dets or []
            ]
            cls = [CLASSES.index(d.label) for d in dets or []]
            items.append(
                ExportItem(fp, sha[:20], split_name, w, h, np.array(rows, np.float32).reshape(-1, 4), np.array(cls, np.int64))
            )
    return items


def dataset_digest(records: list[SampleRecord]) -> str:
    """Digest of what curation reads: the records themselves (paths, sizes, boxes)."""
    return digest_of([r.model_dump(mode="json") for r in records])
