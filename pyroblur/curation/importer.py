"""Import records into the FiftyOne dataset, validate them and find duplicates.

The FiftyOne dataset is the inspectable record of curation (docs/curation.md):

* every record of every source is one sample; unusable images stay in the dataset tagged
  ``rejected`` and ``rejected:<reason>`` (``rejection`` holds the reason), usable ones ``curated``;
* boxes that were dropped live in ``rejected_gt`` with a ``rejected:<reason>`` label tag, boxes
  that were clipped to the image stay in ``ground_truth`` with a ``clipped`` tag;
* byte-identical copies are rejected as ``duplicate`` (``duplicate_of`` names the kept file);
  near-duplicates (perceptual hash within ``near_duplicate_distance`` bits) share a
  ``dup_group`` so the split keeps them together;
* the split is written as ``train``/``val``/``test`` tags; saved views ``curated``,
  ``rejected``, ``duplicates``, ``train``, ``val``, ``test``.

The import is incremental: a sample is keyed by its record, its file's sha256 and the
per-image part of the config. Re-importing unchanged data adds nothing and decodes nothing;
changed or new records are (re)built, records that are gone are removed, and the dataset-wide
results (duplicates, tags) are recomputed from scratch, so the dataset equals a fresh build.
Stages stamp their content digest into ``dataset.info["pyroblur"]`` so cached results can be
checked against it; the stamps are cleared first, so an interrupted run never verifies.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pyroblur import CLASSES
from pyroblur.config import CurationConfig
from pyroblur.core.errors import InputError
from pyroblur.core.hashing import digest_of
from pyroblur.core.limits import read_bounded
from pyroblur.core.records import BoxRecord, SampleRecord
from pyroblur.curation import corrections as corr
from pyroblur.curation.dataset import (
    MANAGED_TAGS,
    insert_docs,
    open_dataset,
    save_curation_views,
    set_stamp,
    to_fiftyone_box,
)
from pyroblur.curation.dedup import exact_duplicate_keepers, near_duplicate_groups, phash_batch, thumbnail
from pyroblur.curation.validation import check_boxes, image_problem
from pyroblur.manifests import CorrectionsManifest, CurateManifest

log = logging.getLogger(__name__)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

#: Config fields that only affect dataset-wide results, not how one image is validated.
_GLOBAL_FIELDS = {"dataset_name", "near_duplicate_distance", "corrections"}
_CHUNK = 4096  # images decoded per batch of perceptual hashes (bounds memory)

# ----------------------------------------------------------------------------- timing


@contextmanager
def _phase(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------------------- reading images


@dataclass(frozen=True)
class ImageInfo:
    """What curation needs from an image file: digest, real size in pixels, perceptual hash.

    ``problem`` is ``missing_file``, ``unreadable``, ``too_large`` or ``truncated`` when the file
    cannot be used (``width``/``height``/``phash`` are then 0).
    """

    sha256: str | None
    width: int
    height: int
    phash: int
    problem: str | None


def _decode(data: bytes) -> tuple[int, int, np.ndarray | None, str | None]:
    """Real ``(width, height)``, the 32x32 hash thumbnail, and a problem when undecodable
    or over the project's pixel limit (``PYROBLUR_MAX_IMAGE_PIXELS``, checked on the header)."""
    from PIL import Image

    from pyroblur.core.errors import InputError
    from pyroblur.core.images import apply_pillow_limit, check_pixels

    apply_pillow_limit()  # the same limit as every other decoder
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            try:
                check_pixels(width, height)
            except InputError:
                return 0, 0, None, "too_large"
            # JPEG: decode at a reduced scale (still reads every byte, so truncation shows).
            im.draft("L", (64, 64))
            im.load()
            thumb = thumbnail(im)
    except Image.DecompressionBombError:  # more than twice the limit: Pillow refuses to open it
        return 0, 0, None, "too_large"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the file is unusable
        problem = "truncated" if "truncat" in str(exc).lower() else "unreadable"
        return 0, 0, None, problem
    return width, height, thumb, None


def _read(path: str, known: dict[str, ImageInfo]) -> tuple[ImageInfo, np.ndarray | None, bool]:
    """Read one file: its sha256 always; decode it only when the digest is not in ``known``.

    Returns the info (``phash`` still 0 for a fresh decode), the thumbnail to hash (or None),
    and whether the file was decoded.
    """
    try:  # a regular file within the byte limit: /dev/zero or a FIFO named by a label file never ends
        data = read_bounded(Path(path), "image_bytes", what="image")
    except InputError as exc:
        log.warning("%s", exc)
        return ImageInfo(None, 0, 0, 0, "too_large" if "over the limit" in exc.message else "unreadable"), None, False
    except OSError:
        return ImageInfo(None, 0, 0, 0, "missing_file"), None, False
    sha = hashlib.sha256(data).hexdigest()
    if sha in known:
        return known[sha], None, False
    width, height, thumb, problem = _decode(data)
    return ImageInfo(sha, width, height, 0, problem), thumb, True


def inspect_images(
    paths: list[str], known: dict[str, ImageInfo] | None = None, workers: int | None = None
) -> tuple[list[ImageInfo], int]:
    """:class:`ImageInfo` of each path, and how many files had to be decoded.

    Files whose sha256 is in ``known`` (results of an earlier import) are not decoded again.
    Threads overlap file reads and decoding (PIL and hashlib release the GIL); the perceptual
    hashes of each chunk of images are computed in one vectorised step.
    """
    known = known or {}
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    out: list[ImageInfo] = []
    decoded = 0
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(paths), desc="read images", unit="img", mininterval=1.0, disable=len(paths) < 5000) as bar,
    ):
        for start in range(0, len(paths), _CHUNK):
            chunk = list(pool.map(lambda p: _read(p, known), paths[start : start + _CHUNK]))
            infos = [info for info, _, _ in chunk]
            fresh = [i for i, (_, thumb, _) in enumerate(chunk) if thumb is not None]
            if fresh:
                hashes = phash_batch(np.stack([chunk[i][1] for i in fresh]))
                for i, h in zip(fresh, hashes, strict=True):
                    infos[i] = ImageInfo(infos[i].sha256, infos[i].width, infos[i].height, int(h), None)
            decoded += sum(1 for _, _, was_decoded in chunk if was_decoded)
            out.extend(infos)
            bar.update(len(chunk))
    return out, decoded


# ----------------------------------------------------------------------------- FiftyOne documents


#: Fields of ``fo.Detection`` (source attributes with these names are not copied).
_DETECTION_FIELDS = frozenset(
    {"id", "_id", "_cls", "attributes", "tags", "label", "bounding_box", "mask", "mask_path", "confidence", "index"}
)


def _det_doc(b: BoxRecord, norm_w: float, norm_h: float, tags: list[str]) -> dict[str, Any]:
    """A ``fo.Detection`` backing document; ``bounding_box`` is ``[x, y, w, h]`` in [0, 1]."""
    from bson import ObjectId

    label = CLASSES[b.class_id] if 0 <= b.class_id < len(CLASSES) else f"class_{b.class_id}"
    # NaN/inf cannot be shown or stored usefully: keep the label, zero the box.
    box = to_fiftyone_box((b.x1, b.y1, b.x2, b.y2), norm_w, norm_h)
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "_cls": "Detection",
        "attributes": {},
        "tags": tags,
        "label": label,
        "bounding_box": box,
    }
    for k, v in b.attributes.items():
        if k not in _DETECTION_FIELDS:  # a source attribute must not shadow a Detection field
            doc[k] = v
    return doc


def _dets_doc(dets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"_cls": "Detections", "detections": dets}


def sample_doc(rec: SampleRecord, info: ImageInfo, cfg: CurationConfig, import_key: str) -> tuple[dict, Counter]:
    """The backing document of one sample (image-level checks and box checks) and its box issues.

    Dataset-wide fields (``rejection``, ``dup_group``, tags) are set later by :func:`_dedup_and_tag`.
    Boxes are normalised by the real image size, or by the annotated size when the image is
    rejected (so a rejected image still shows its labels where the annotator put them).
    """
    problem = image_problem(
        read_problem=info.problem,
        real_size=(info.width, info.height),
        annotated_size=(rec.width, rec.height),
        num_boxes=len(rec.boxes),
        record_issues=rec.issues,
        max_boxes=cfg.max_boxes_per_image,
        missing_labels=cfg.missing_labels,
    )
    width, height = (info.width, info.height) if problem is None else (rec.width or 1, rec.height or 1)
    check = check_boxes(rec.boxes, width, height, dict(cfg.min_box_size), cfg.drop_invalid, cfg.drop_heavy_occlusion)
    kept = [
        _det_doc(b, width, height, ["clipped"] if c else []) for b, c in zip(check.kept, check.clipped, strict=True)
    ]
    dropped = [_det_doc(b, width, height, [f"rejected:{reason}"]) for b, reason in check.dropped]
    doc: dict[str, Any] = {
        "filepath": str(Path(rec.filepath).resolve()),
        "tags": [],
        "_media_type": "image",
        "source": rec.source,
        "source_split": rec.source_split,
        "sha256": info.sha256,
        "phash": f"{info.phash:016x}" if info.problem is None else None,
        "read_problem": info.problem,
        "record_issues": list(rec.issues),
        "image_problem": problem,
        "import_key": import_key,
        "ground_truth": _dets_doc(kept),
        "gt_digest": corr.gt_digest(kept),
        "rejected_gt": _dets_doc(dropped) if dropped else None,
    }
    if info.problem is None:
        doc["metadata"] = {"_cls": "ImageMetadata", "width": info.width, "height": info.height}
    return {k: v for k, v in doc.items() if v is not None}, check.issues


# ----------------------------------------------------------------------------- curate


def import_key(record_json: str, sha256: str | None, cfg_digest: str) -> str:
    """Identity of a sample's per-image results: same record, same bytes, same config."""
    return hashlib.sha256(f"{record_json}\0{sha256}\0{cfg_digest}".encode()).hexdigest()


def _known_infos(ds: Any) -> dict[str, ImageInfo]:
    """Image facts already in the dataset, by sha256 (so unchanged files are not decoded)."""
    fields = ["sha256", "metadata.width", "metadata.height", "phash", "read_problem"]
    out = {}
    for sha, w, h, ph, problem in zip(*ds.values(fields), strict=True):
        if sha is not None and (problem is not None or ph is not None):
            out[sha] = ImageInfo(sha, w or 0, h or 0, int(ph, 16) if ph else 0, problem)
    return out


def _dedup_and_tag(ds: Any, max_distance: int) -> dict[str, Any]:
    """Dataset-wide pass: exact and near-duplicates, ``rejection``, tags. Writes changes only."""
    fields = ["id", "source", "filepath", "sha256", "phash", "image_problem", "tags", "rejection", "dup_group",
              "dup_size", "duplicate_of"]  # fmt: skip
    ids, sources, paths, shas, phashes, problems, tags, *old = ds.values(fields)
    ok = [i for i, p in enumerate(problems) if p is None]
    keeper = exact_duplicate_keepers([shas[i] for i in ok], [(sources[i], paths[i]) for i in ok])
    labels = near_duplicate_groups(np.array([int(phashes[i], 16) for i in ok], np.uint64), max_distance)
    group_sha: dict[int, str] = {}
    for i, lab in zip(ok, labels, strict=True):
        group_sha[lab] = min(group_sha.get(lab, shas[i]), shas[i])
    size = Counter(labels.tolist())

    n = len(ids)
    rejection: list[str | None] = list(problems)
    dup_group: list[str | None] = [None] * n
    dup_size: list[int | None] = [None] * n
    duplicate_of: list[str | None] = [None] * n
    for k, (i, lab) in enumerate(zip(ok, labels, strict=True)):
        dup_group[i] = f"g{group_sha[lab][:16]}"
        dup_size[i] = size[lab]
        if keeper[k] is not None:
            rejection[i] = "duplicate"
            duplicate_of[i] = paths[ok[keeper[k]]]
    new_tags = []
    for i in range(n):
        own = [t for t in tags[i] or [] if t not in MANAGED_TAGS and not t.startswith("rejected:")]
        mine = ["curated"] if rejection[i] is None else ["rejected", f"rejected:{rejection[i]}"]
        new_tags.append(mine + own)

    current = [[t or [] for t in tags], *old]
    for name, new, cur in zip(
        ("tags", "rejection", "dup_group", "dup_size", "duplicate_of"),
        (new_tags, rejection, dup_group, dup_size, duplicate_of),
        current,
        strict=True,
    ):
        changed = {ids[i]: new[i] for i in range(n) if new[i] != cur[i]}
        if changed:
            ds.set_values(name, changed, key_field="id")
    curated = sum(1 for r in rejection if r is None)
    curated_groups = Counter(dup_group[i] for i in range(n) if rejection[i] is None)
    return {
        "curated": curated,
        "rejected": dict(Counter(r for r in rejection if r is not None)),
        "exact_duplicates": sum(1 for k in keeper if k is not None),
        "near_duplicate_groups": sum(1 for c in curated_groups.values() if c > 1),
        "near_duplicate_images": sum(c for c in curated_groups.values() if c > 1),
        "largest_group": max(curated_groups.values(), default=0),
    }


def _unexported_edits(ds: Any, ids: set[str]) -> tuple[set[str], set[str]]:
    """Ids (of ``ids``) whose ground truth no longer matches the digest curation wrote, and ids
    without that digest (written before curation recorded it)."""
    edited, undigested = set(), set()
    for sid, dets, stored in zip(*ds.values(["id", "ground_truth.detections", "gt_digest"]), strict=True):
        if sid not in ids:
            continue
        if stored is None:
            undigested.add(sid)
        elif corr.gt_digest(dets) != stored:
            edited.add(sid)
    return edited, undigested


@dataclass(frozen=True)
class CurationRun:
    """A curation's manifest plus what this particular run did (not part of the manifest,
    whose content must not depend on how it was reached: caches key on it).

    ``imported``: added, removed, unchanged and decoded images; ``seconds``: per phase.
    """

    manifest: CurateManifest
    imported: dict[str, int]
    seconds: dict[str, float]


def curate(
    records: list[SampleRecord],
    cfg: CurationConfig,
    digest: str,
    *,
    workers: int | None = None,
    corrections: CorrectionsManifest | None = None,
) -> CurateManifest:
    """Import ``records`` into the persistent FiftyOne dataset ``cfg.dataset_name`` and curate it.

    Incremental (see the module docstring): the result equals a fresh build for the same
    records and config. ``workers`` threads read and decode images. Counts by reason and
    duplicate statistics are in the manifest; :func:`run_curation` also says what the run did.
    """
    return run_curation(records, cfg, digest, workers=workers, corrections=corrections).manifest


def run_curation(
    records: list[SampleRecord],
    cfg: CurationConfig,
    digest: str,
    *,
    workers: int | None = None,
    corrections: CorrectionsManifest | None = None,
) -> CurationRun:
    """:func:`curate`, returning the manifest with the import statistics and phase timings.

    ``corrections`` (:mod:`pyroblur.curation.corrections`) replace the boxes of the records of
    the images they name (by sha256) before import; the records on disk are not touched.
    Samples whose ground truth was edited in the App but not exported are rebuilt from their
    record (a warning says how many): the dataset always equals raw data + corrections.
    """
    seconds: dict[str, float] = {}
    with _phase(seconds, "open"):
        ds = open_dataset(cfg.dataset_name)
        set_stamp(ds, "curate", None)  # an interrupted run must never verify as done
        cfg_digest = digest_of(cfg.model_dump(mode="json", exclude=_GLOBAL_FIELDS))
        existing: dict[str, str] = {}
        stale: list[str] = []
        for key, sid in zip(*ds.values(["import_key", "id"]), strict=True):
            if key is None or key in existing:
                stale.append(sid)  # not ours, or a second copy of one sample
            else:
                existing[key] = sid
        known = _known_infos(ds)

    with _phase(seconds, "read"):
        infos, decoded = inspect_images([r.filepath for r in records], known, workers)

    changes: dict[str, int] = {}
    if corrections is not None:
        records, changes = corr.apply(records, [i.sha256 for i in infos], corrections)
        log.info("corrections %s: %s", corrections.version, changes)

    with _phase(seconds, "validate"):
        keys: dict[str, int] = {}
        repeated = 0
        for i, rec in enumerate(records):
            key = import_key(rec.model_dump_json(), infos[i].sha256, cfg_digest)
            if key in keys:
                repeated += 1  # the same record twice: one sample, as a fresh build makes it
            else:
                keys[key] = i
        edited, undigested = _unexported_edits(ds, {sid for k, sid in existing.items() if k in keys})
        if undigested:
            log.info("%d samples predate gt_digest: rebuilt once", len(undigested))
        if edited:
            log.warning(
                "%d curated samples have label edits that were not exported (pyroblur corrections export): "
                "rebuilt from their records; export corrections before the next run to keep such edits",
                len(edited),
            )
        existing = {k: sid for k, sid in existing.items() if sid not in edited | undigested}
        stale += list(edited | undigested)
        new = [(k, i) for k, i in keys.items() if k not in existing]
        stale += [sid for k, sid in existing.items() if k not in keys]
        docs = [sample_doc(records[i], infos[i], cfg, k)[0] for k, i in new]

    with _phase(seconds, "import"):
        if stale:
            ds.delete_samples(stale)
        insert_docs(ds, docs)
        if any(b.attributes for _, i in new for b in records[i].boxes):
            ds.add_dynamic_sample_fields()  # WIDER flags (blur, occlusion, ...) become filterable

    with _phase(seconds, "dedup"):
        stats = _dedup_and_tag(ds, cfg.near_duplicate_distance)

    with _phase(seconds, "report"):
        label_tags = ds.match_tags("curated").count_label_tags(["ground_truth", "rejected_gt"])
        label_issues = {t.removeprefix("rejected:"): n for t, n in sorted(label_tags.items())}
        save_curation_views(ds)
        set_stamp(ds, "curate", digest)

    if repeated:
        log.warning("%d records were listed more than once; each became one sample", repeated)
    imported = {"added": len(new), "removed": len(stale), "unchanged": len(keys) - len(new), "decoded": decoded}
    log.info(
        "FiftyOne dataset '%s': %d images, %d curated; import %s; rejected %s; label issues %s; "
        "exact duplicates %d, near-duplicate groups %d (largest %d); seconds %s",
        cfg.dataset_name, len(keys), stats["curated"], imported, stats["rejected"], label_issues,
        stats["exact_duplicates"], stats["near_duplicate_groups"], stats["largest_group"],
        {k: round(v, 2) for k, v in seconds.items()},
    )  # fmt: skip
    manifest = CurateManifest(
        digest=digest,
        dataset_name=cfg.dataset_name,
        num_imported=len(keys),
        num_curated=stats["curated"],
        rejected=dict(sorted(stats["rejected"].items())),
        label_issues=label_issues,
        duplicate_groups=stats["near_duplicate_groups"],
        exact_duplicates=stats["exact_duplicates"],
        near_duplicate_images=stats["near_duplicate_images"],
        corrections=corrections.version if corrections else None,
        labels_changed=changes,
    )
    return CurationRun(manifest, imported, {k: round(v, 3) for k, v in seconds.items()})


def report_rows(manifest: CurateManifest) -> list[dict[str, Any]]:
    """Rows of the curation table artifact: one per reason, images or boxes counted."""
    rows: list[dict[str, Any]] = [
        {"level": "image", "reason": k, "count": v} for k, v in sorted(manifest.rejected.items())
    ]
    rows += [{"level": "box", "reason": k, "count": v} for k, v in sorted(manifest.label_issues.items())]
    rows += [
        {"level": "summary", "reason": "imported", "count": manifest.num_imported},
        {"level": "summary", "reason": "curated", "count": manifest.num_curated},
        {"level": "summary", "reason": "near-duplicate groups", "count": manifest.duplicate_groups},
        {"level": "summary", "reason": "images in near-duplicate groups", "count": manifest.near_duplicate_images},
    ]
    if manifest.corrections:
        rows += [
            {"level": "corrections", "reason": f"{manifest.corrections}: {k}", "count": v}
            for k, v in manifest.labels_changed.items()
        ]
    return rows


def dataset_digest(records: list[SampleRecord]) -> str:
    """Digest of what curation reads: the records themselves (paths, sizes, boxes)."""
    return digest_of([r.model_dump(mode="json") for r in records])
