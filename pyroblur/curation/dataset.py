"""The one owner of the FiftyOne dataset's state: schema, samples, tags, saved views, stamps
and prediction fields. Every stage reads and writes the dataset through these functions.

Stamps: a stage records the content digest of what it wrote in ``dataset.info["pyroblur"]``, so
a cached result can be checked against the dataset. Stamps form a chain in the order they were
set: (re)stamping or clearing one drops every stamp set after it, so an upstream change (a new
curation) invalidates whatever later stages wrote, without this module (or the earlier stage)
knowing which stages exist.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pyroblur import CLASSES
from pyroblur.core.detections import Detections
from pyroblur.curation.export import ExportItem

log = logging.getLogger(__name__)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

SPLITS = ("train", "val", "test")
#: Tags this module owns on samples; any other tag (e.g. set by a person in the App) is kept.
MANAGED_TAGS = frozenset({"curated", "rejected", "selected", *SPLITS})
_INSERT_BATCH = 2000  # samples per insert_many
#: The sample field that holds the benchmarked model's predictions on the test split (the one
#: place its name is written: the benchmark writes it, the review ranks and views read it).
PREDICTIONS_FIELD = "predictions"

#: Sample fields written by curation, with the description the App shows.
FIELDS: dict[str, tuple[str, str]] = {
    "source": ("str", "Name of the source (config `sources[].name`)."),
    "source_split": ("str", "Split the source put the image in (not ours)."),
    "sha256": ("str", "sha256 of the image file's bytes."),
    "phash": ("str", "64-bit DCT perceptual hash (hex)."),
    "read_problem": ("str", "What decoding the file found: missing_file, unreadable, too_large, truncated."),
    "record_issues": ("list", "Problems the source recorded: missing_labels, bad_labels."),
    "image_problem": ("str", "Image-level reason found for this image alone (before deduplication)."),
    "rejection": ("str", "Why the image is rejected (None when curated)."),
    "duplicate_of": ("str", "Filepath of the byte-identical image that is kept instead."),
    "dup_group": ("str", "Near-duplicate group: images in one group always share a split."),
    "dup_size": ("int", "Number of images in the near-duplicate group."),
    "import_key": ("str", "Digest of record + file sha256 + per-image config: unchanged = not re-imported."),
    "ground_truth": ("dets", "Boxes kept for training (clipped to the image; tag `clipped` when they were)."),
    "rejected_gt": ("dets", "Boxes dropped by validation; the label tag `rejected:<reason>` says why."),
    "gt_digest": (
        "str",
        "Digest of ground_truth as curation wrote it: `pyroblur corrections export` finds edits by it.",
    ),
}


def to_fiftyone_box(xyxy: Any, width: float, height: float) -> list[float]:
    """Pixel ``[x1, y1, x2, y2]`` -> FiftyOne's relative ``[x, y, w, h]`` (non-finite -> 0)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    box = [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height]
    return [v if np.isfinite(v) else 0.0 for v in box]


def ensure_schema(ds: Any) -> None:
    """Declare curation's fields (with descriptions) through FiftyOne's public API."""
    import fiftyone as fo

    if ds.media_type is None:
        ds.media_type = "image"
    schema = ds.get_field_schema()
    kinds = {
        "str": {"ftype": fo.StringField},
        "int": {"ftype": fo.IntField},
        "list": {"ftype": fo.ListField, "subfield": fo.StringField},
        "dets": {"ftype": fo.EmbeddedDocumentField, "embedded_doc_type": fo.Detections},
    }
    for name, (kind, description) in FIELDS.items():
        if name not in schema:
            ds.add_sample_field(name, description=description, **kinds[kind])


def insert_docs(ds: Any, docs: list[dict[str, Any]]) -> None:
    """Bulk-insert sample documents, as ``Dataset.add_samples`` writes them.

    ``add_samples`` builds and validates a ``fo.Sample`` per image and reloads it afterwards,
    about 1.3 ms per image here; the documents are built directly instead (their shape is
    checked against ``add_samples`` in tests/test_curation_fiftyone.py for fiftyone 1.22).
    """
    from fiftyone.core.odm.sample import _generate_rand

    now = datetime.utcnow()
    for start in range(0, len(docs), _INSERT_BATCH):
        batch = docs[start : start + _INSERT_BATCH]
        for d in batch:
            d.update(_rand=_generate_rand(), _dataset_id=ds._doc.id, created_at=now, last_modified_at=now)
        ds._sample_collection.insert_many(batch, ordered=False)


def open_dataset(name: str) -> Any:
    import fiftyone as fo

    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
    else:
        ds = fo.Dataset(name, persistent=True)
        ds.default_classes = list(CLASSES)
    ensure_schema(ds)
    return ds


def load_dataset(name: str) -> Any:
    """The existing dataset ``name`` (raises ``ValueError`` from FiftyOne when it is missing)."""
    import fiftyone as fo

    return fo.load_dataset(name)


# ----------------------------------------------------------------------------- stamps


def dataset_stamp(name: str, stage: str) -> str | None:
    """The digest ``stage`` stamped into dataset ``name``, or None if it (or the dataset) is gone."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        return None
    return (fo.load_dataset(name).info.get("pyroblur") or {}).get(stage)


def set_stamp(ds: Any, stage: str, digest: str | None) -> None:
    """Record (or, with ``digest=None``, clear) ``stage``'s digest; drops every later stamp."""
    old = dict(ds.info.get("pyroblur") or {})
    info: dict[str, str] = {}
    for name, value in old.items():  # insertion order = the order the stages stamped
        if name == stage:
            break
        info[name] = value
    if digest is not None:
        info[stage] = digest
    ds.info["pyroblur"] = info
    ds.save()


# ----------------------------------------------------------------------------- tags and views


def save_curation_views(ds: Any) -> None:
    """Saved views ``curated``, ``rejected`` and ``duplicates``."""
    from fiftyone import ViewField as F

    ds.save_view("curated", ds.match_tags("curated"), overwrite=True)
    ds.save_view("rejected", ds.match_tags("rejected"), overwrite=True)
    ds.save_view("duplicates", ds.match(F("dup_size") > 1).sort_by("dup_group"), overwrite=True)


def tag_split(ds: Any, selected: list[str], by_split: dict[str, list[str]]) -> None:
    """Tag ``selected`` sample ids ``selected`` and each split's ids with its name (previous
    ``selected``/split tags are removed first); save one view per split."""
    ds.untag_samples(["selected", *SPLITS])
    ds.select(selected).tag_samples("selected")
    for s in SPLITS:
        sids = by_split.get(s) or []
        if sids:
            ds.select(sids).tag_samples(s)
        ds.save_view(s, ds.match_tags(s), overwrite=True)


def export_items(dataset_name: str) -> list[ExportItem]:
    """The selected samples with their split, pixel boxes and class ids, in a stable order."""
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    items = []
    for split_name in SPLITS:
        view = ds.match_tags(split_name).sort_by("sha256")
        fields = ["filepath", "sha256", "metadata.width", "metadata.height", "ground_truth.detections"]
        for fp, sha, w, h, dets in zip(*view.values(fields), strict=True):
            boxes = Detections.from_fiftyone(dets, w, h, CLASSES)
            items.append(ExportItem(fp, sha[:20], split_name, w, h, boxes.xyxy, boxes.class_id))
    return items


def gt_attributes(dataset_name: str, names: tuple[str, ...]) -> dict[str, list[dict]]:
    """Per selected sample (by exported name, the sha256's first 20 hex digits), one dict per
    ground-truth box with the attributes ``names`` it carries (WIDER flags), in box order."""
    import fiftyone as fo

    view = fo.load_dataset(dataset_name).match_tags("selected")
    out = {}
    for sha, dets in zip(*view.values(["sha256", "ground_truth.detections"]), strict=True):
        out[sha[:20]] = [
            {n: d.get_field(n) for n in names if d.has_field(n)} for d in (dets or []) if d.label in CLASSES
        ]
    return out


# ----------------------------------------------------------------------------- predictions


#: Saved view of the latest benchmark's predictions at the operating point (test samples).
LATEST_PREDICTIONS_VIEW = "predictions"


def predictions_field(digest: str) -> str:
    """The field holding one benchmark's predictions at the operating point.

    One field per benchmark (named by its digest: model, test split and benchmark config), so
    that another config's benchmark never overwrites it (and its cached result stays valid).
    ``<field>_all`` holds every prediction down to ``benchmark.conf`` (the PR curve and mAP).
    """
    return f"predictions_{digest[:8]}"


def _stamp_field(ds: Any, field: str, digest: str) -> None:
    """Stamp one benchmark's field without dropping the other benchmarks' stamps (they are
    side by side, not a chain); a new curation or split still drops them all (:func:`set_stamp`)."""
    info = dict(ds.info.get("pyroblur") or {})
    info[f"benchmark:{field}"] = digest
    ds.info["pyroblur"] = info
    ds.save()


def record_predictions(
    dataset_name: str,
    images: list[Path],
    preds: list[Detections],
    digest: str,
    *,
    model: str,
    operating_conf: dict[str, float],
) -> dict[str, Any]:
    """Attach ``preds`` (pixels) to the dataset's test samples and evaluate them.

    Two fields per benchmark (see :func:`predictions_field`): ``<field>`` keeps the boxes at
    the operating point (``operating_conf``: class -> anonymization's confidence threshold),
    what the App shows by default and what per-sample ``eval_<digest8>_tp/fp/fn`` count;
    ``<field>_all`` keeps every prediction for FiftyOne's mAP and PR curves. Each box carries
    ``model`` (which weights made it). Saved views ``predictions_<digest8>`` and
    :data:`LATEST_PREDICTIONS_VIEW` show the test samples with the operating-point field.

    Exported test images are named by the first 20 hex digits of the sample's sha256, which is
    how they are matched back. Returns the field names, FiftyOne's COCO-style mAP (all
    predictions) and the TP/FP/FN totals at the operating point.
    """
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    test = ds.match_tags("test")
    ids, shas, widths, heights = test.values(["id", "sha256", "metadata.width", "metadata.height"])
    by_name = {sha[:20]: (sid, w, h) for sid, sha, w, h in zip(ids, shas, widths, heights)}
    field = predictions_field(digest)
    eval_key = f"eval_{digest[:8]}"
    every, kept = {}, {}
    for img, det in zip(images, preds):
        if img.stem not in by_name:
            continue
        sid, w, h = by_name[img.stem]
        boxes = [
            fo.Detection(
                label=CLASSES[int(c)], bounding_box=to_fiftyone_box(xyxy, w, h), confidence=float(s), model=model
            )
            for xyxy, c, s in zip(det.xyxy, det.class_id, det.confidence, strict=True)
        ]
        every[sid] = fo.Detections(detections=boxes)
        kept[sid] = fo.Detections(
            detections=[b.copy() for b in boxes if b.confidence >= operating_conf.get(b.label, 0.0)]
        )
    if not every:
        raise ValueError(f"no exported test image matches a test sample of FiftyOne dataset '{dataset_name}'")
    conf = ", ".join(f"{k} >= {v:g}" for k, v in sorted(operating_conf.items()))
    for name, values, what in (
        (field, kept, f"at the operating point ({conf})"),
        (f"{field}_all", every, "every box down to the benchmark's confidence (PR curve, mAP)"),
    ):
        ds.set_values(name, values, key_field="id")
        schema_field = ds.get_field(name)
        schema_field.description = f"Predictions of {model} {what}; benchmark {digest[:16]}"
        schema_field.save()
    evaluate = dict(gt_field="ground_truth", classes=list(CLASSES), progress=False)
    test = ds.match_tags("test")
    results = test.evaluate_detections(f"{field}_all", eval_key=f"{eval_key}_all", compute_mAP=True, **evaluate)
    test.evaluate_detections(field, eval_key=eval_key, **evaluate)
    view = test.sort_by(f"{eval_key}_fn", reverse=True)
    for name in (field, LATEST_PREDICTIONS_VIEW):
        ds.save_view(
            name, view, description=f"Test samples with {field}: {model} at the operating point", overwrite=True
        )
    # The App shows the ground truth and the latest benchmark's operating point by default.
    ds.app_config.active_fields = fo.core.odm.dataset.ActiveFields(paths=["ground_truth", field])
    registry = dict(ds.info.get("pyroblur_predictions") or {})
    registry[field] = {
        "model": model,
        "digest": digest,
        "operating_conf": dict(operating_conf),
        "all_field": f"{field}_all",
        "eval_key": eval_key,
        "recorded": datetime.utcnow().isoformat(timespec="seconds"),
    }
    ds.info["pyroblur_predictions"] = registry
    ds.save()
    _stamp_field(ds, field, digest)
    out = {
        "field": field,
        "eval_key": eval_key,
        "fiftyone_map50_95": float(results.mAP()),
        # None on a sample with neither ground truth nor predictions (an image with nothing on it)
        "tp": float(sum(v or 0 for v in test.values(f"{eval_key}_tp"))),
        "fp": float(sum(v or 0 for v in test.values(f"{eval_key}_fp"))),
        "fn": float(sum(v or 0 for v in test.values(f"{eval_key}_fn"))),
    }
    log.info("predictions of %d test samples written to '%s' field %s: %s", len(every), dataset_name, field, out)
    return out


def attach_predictions(
    dataset_name: str, images: list[Path], preds: list[Detections], field: str, tag: str = "train"
) -> int:
    """Write ``preds`` (pixels) into ``field`` of the samples tagged ``tag`` (the review's
    training-split predictions; the benchmark's own are :func:`record_predictions`).

    Exported images are named by the first 20 hex digits of the sample's sha256, which is how
    they are matched back (augmented copies match no sample and are skipped). Returns how many
    samples got predictions.
    """
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    ids, shas, widths, heights = ds.match_tags(tag).values(["id", "sha256", "metadata.width", "metadata.height"])
    by_name = {sha[:20]: (sid, w, h) for sid, sha, w, h in zip(ids, shas, widths, heights)}
    values = {}
    for img, det in zip(images, preds):
        if img.stem not in by_name:
            continue
        sid, w, h = by_name[img.stem]
        values[sid] = fo.Detections(
            detections=[
                fo.Detection(label=CLASSES[int(c)], bounding_box=to_fiftyone_box(xyxy, w, h), confidence=float(s))
                for xyxy, c, s in zip(det.xyxy, det.class_id, det.confidence, strict=True)
            ]
        )
    if values:
        ds.set_values(field, values, key_field="id")
    return len(values)
