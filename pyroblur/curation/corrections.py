"""Label corrections made by a person in the FiftyOne App, kept as versioned files and applied
at the next curation. Raw data is never modified.

What a person does in the App (offline, the open-source App: it can tag labels and samples but
has no box editor) or through FiftyOne's Python API / an annotation backend
(``dataset.annotate`` + ``load_annotations`` write edited boxes back into ``ground_truth``):

* tag a ground-truth box ``remove``: the label is wrong (a box on background, a duplicate);
* tag a predicted or second-opinion box ``add``: a missed label, take the box as ground truth;
* edit, add or delete boxes in ``ground_truth`` directly (the API or an annotation tool).

``pyroblur corrections export`` compares each curated sample's ground truth (after the tags) with
the digest curation recorded when it wrote the sample (``gt_digest``) and writes every changed
sample, keyed by the image's sha256 (content, not path), into
``<data>/corrections/<dataset>/vNNNN.json``: the previous version's entries plus the new ones.
Curation (``curation.corrections``, default ``latest``) replaces the boxes of those images'
records with the corrected ones before importing them; the curate stage's cache key includes
the version's digest, so curation and every later stage run again.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pyroblur import CLASSES
from pyroblur.core.errors import ConfigurationError
from pyroblur.core.hashing import digest_of
from pyroblur.core.io import write_atomic
from pyroblur.core.records import BoxRecord, SampleRecord
from pyroblur.core.settings import get_paths
from pyroblur.manifests import CorrectionsManifest

log = logging.getLogger(__name__)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

REMOVE_TAG = "remove"
ADD_TAG = "add"
_VERSION = re.compile(r"^v(\d{4})\.json$")
#: Detection attributes carried with a corrected box (the WIDER flags); others are the App's own.
_CARRIED = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


class CorrectedBox(BaseModel):
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    attributes: dict[str, Any] = Field(default_factory=dict)


class CorrectedImage(BaseModel):
    """The whole corrected ground truth of one image (pixels of ``width`` x ``height``)."""

    filepath: str = Field(description="where the image was when corrected (for people; matching is by sha256)")
    width: int
    height: int
    boxes: list[CorrectedBox]


class CorrectionsFile(BaseModel):
    version: str
    dataset: str
    created_at: str
    parent: str | None = None
    entries: dict[str, CorrectedImage] = Field(description="image sha256 -> corrected ground truth")


def corrections_dir(dataset_name: str) -> Path:
    """``<data root>/corrections/<dataset_name>``."""
    return get_paths().root / "corrections" / dataset_name


def versions(dataset_name: str) -> list[Path]:
    """The version files of ``dataset_name``, oldest first."""
    folder = corrections_dir(dataset_name)
    return sorted(p for p in folder.glob("v*.json") if _VERSION.match(p.name)) if folder.is_dir() else []


def load_file(path: Path) -> CorrectionsFile:
    """Read and validate a corrections file.

    Raises:
        ConfigurationError: the file is not valid JSON or not a corrections file.
    """
    try:
        return CorrectionsFile.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read corrections file: {exc}",
            subject=str(path),
            hint="restore it from version control or delete it (and the versions after it)",
        ) from exc


def resolve(dataset_name: str, which: str) -> CorrectionsManifest | None:
    """The corrections ``which`` (``latest``, ``none`` or a version such as ``v0002``) names.

    Raises:
        ConfigurationError: a named version does not exist.
    """
    if which == "none":
        return None
    found = versions(dataset_name)
    if which == "latest":
        if not found:
            return None
        path = found[-1]
    else:
        path = corrections_dir(dataset_name) / f"{which}.json"
        if not path.exists():
            raise ConfigurationError(
                f"corrections version '{which}' does not exist",
                subject=str(path),
                hint=f"curation.corrections: latest, none or one of {[p.stem for p in found]}",
            )
    f = load_file(path)
    digest = digest_of({k: v.model_dump(mode="json") for k, v in sorted(f.entries.items())})
    return CorrectionsManifest(version=f.version, path=str(path), digest=digest, images=len(f.entries))


# ----------------------------------------------------------------------------- digests


def data_digest(downloads_digest: str, corrections: CorrectionsManifest | None) -> str:
    """What a model learns from: the downloads, and the corrections when there are any (the
    downloads digest alone otherwise, so lineage recorded before corrections existed still holds)."""
    return downloads_digest if corrections is None else digest_of(downloads_digest, corrections.digest)


def gt_digest(detections: list[dict[str, Any]] | None) -> str:
    """Digest of a sample's ground truth as labels and relative boxes (1e-6), order-free.

    Takes backing documents or ``fo.Detection`` objects (both answer ``["label"]`` etc.)."""
    rows = sorted((d["label"], [round(float(v), 6) for v in d["bounding_box"]]) for d in (detections or []))
    return digest_of(rows)[:16]


# ----------------------------------------------------------------------------- export


def _corrected(sample_dets: list[Any], extra: list[Any]) -> list[Any]:
    """Ground truth after the App's tags: ``remove`` dropped, ``add`` boxes taken in."""
    kept = [d for d in sample_dets if REMOVE_TAG not in (d.tags or [])]
    return kept + [d for d in extra if ADD_TAG in (d.tags or [])]


def export(dataset_name: str) -> tuple[Path | None, int]:
    """Write a new corrections version with every curated sample whose labels changed since
    curation; returns its path (``None`` when nothing changed) and the number of new images."""
    import fiftyone as fo

    ds = fo.load_dataset(dataset_name)
    view = ds.match_tags("curated")
    # Boxes tagged `add` may sit in any box field but the labels': every benchmark's predictions
    # field, the second opinion.
    extra_fields = [f for f in ds.get_field_schema(embedded_doc_type=fo.Detections)
                    if f not in ("ground_truth", "rejected_gt")]  # fmt: skip
    changed: dict[str, CorrectedImage] = {}
    for sample in view.select_fields(["ground_truth", "sha256", "gt_digest", "metadata", *extra_fields]):
        extra = [d for f in extra_fields if sample[f] is not None for d in sample[f].detections]
        dets = _corrected(sample.ground_truth.detections if sample.ground_truth else [], extra)
        if gt_digest(dets) == sample["gt_digest"]:
            continue
        w, h = sample.metadata.width, sample.metadata.height
        boxes = []
        for d in dets:
            if d.label not in CLASSES:
                log.warning("%s: label '%s' is not one of %s; left out", sample.filepath, d.label, CLASSES)
                continue
            x, y, bw, bh = d.bounding_box
            attrs = {k: d[k] for k in _CARRIED if d.has_field(k) and d[k] is not None}
            boxes.append(CorrectedBox(label=d.label, x1=x * w, y1=y * h, x2=(x + bw) * w, y2=(y + bh) * h,
                                      attributes=attrs))  # fmt: skip
        changed[sample["sha256"]] = CorrectedImage(filepath=sample.filepath, width=w, height=h, boxes=boxes)
    if not changed:
        log.info("no label of '%s' changed since curation: no new corrections version", dataset_name)
        return None, 0
    found = versions(dataset_name)
    parent = load_file(found[-1]) if found else None
    number = int(_VERSION.match(found[-1].name).group(1)) + 1 if found else 1
    version = f"v{number:04d}"
    f = CorrectionsFile(
        version=version,
        dataset=dataset_name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parent=parent.version if parent else None,
        entries={**(parent.entries if parent else {}), **changed},
    )
    path = corrections_dir(dataset_name) / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, f.model_dump_json(indent=2))
    log.info("corrections %s of '%s': %d images changed (%d in all) -> %s", version, dataset_name,
             len(changed), len(f.entries), path)  # fmt: skip
    return path, len(changed)


# ----------------------------------------------------------------------------- apply


def _same(a: BoxRecord, b: BoxRecord, tol: float = 0.5) -> bool:
    return (
        a.class_id == b.class_id and max(abs(a.x1 - b.x1), abs(a.y1 - b.y1), abs(a.x2 - b.x2), abs(a.y2 - b.y2)) <= tol
    )


def _iou(a: BoxRecord, b: BoxRecord) -> float:
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def label_changes(before: list[BoxRecord], after: list[BoxRecord]) -> dict[str, int]:
    """``removed``/``added``/``moved`` boxes from ``before`` to ``after`` (a moved box: same
    class, IoU >= 0.3 with a box that is gone, not the same within half a pixel)."""
    rest_b = [b for b in before if not any(_same(b, a) for a in after)]
    rest_a = [a for a in after if not any(_same(a, b) for b in before)]
    moved = 0
    for a in list(rest_a):
        match = max(((_iou(a, b), i) for i, b in enumerate(rest_b) if b.class_id == a.class_id), default=(0.0, -1))
        if match[0] >= 0.3:
            moved += 1
            rest_a.remove(a)
            rest_b.pop(match[1])
    return {"removed": len(rest_b), "added": len(rest_a), "moved": moved}


def apply(
    records: list[SampleRecord], shas: list[str | None], manifest: CorrectionsManifest
) -> tuple[list[SampleRecord], dict[str, int]]:
    """``records`` with the boxes of corrected images (matched by ``shas``, the files' sha256)
    replaced; returns them and the label changes counted against the source's own boxes
    (``images`` corrected, boxes ``removed``/``added``/``moved``).

    Raises:
        ConfigurationError: the file changed since ``manifest`` was resolved (digest mismatch).
    """
    f = load_file(Path(manifest.path))
    digest = digest_of({k: v.model_dump(mode="json") for k, v in sorted(f.entries.items())})
    if digest != manifest.digest:
        raise ConfigurationError(
            "corrections file changed after the run resolved it",
            subject=manifest.path,
            hint="version files are written once; export a new version instead of editing one",
        )
    out, totals = [], {"images": 0, "removed": 0, "added": 0, "moved": 0}
    for rec, sha in zip(records, shas, strict=True):
        entry = f.entries.get(sha) if sha else None
        if entry is None:
            out.append(rec)
            continue
        # Corrected pixels are those of the image; the record may be annotated at another size.
        sx, sy = (rec.width or entry.width) / entry.width, (rec.height or entry.height) / entry.height
        boxes = [
            BoxRecord(
                class_id=CLASSES.index(b.label),
                x1=b.x1 * sx,
                y1=b.y1 * sy,
                x2=b.x2 * sx,
                y2=b.y2 * sy,
                attributes=b.attributes,
            )  # fmt: skip
            for b in entry.boxes
        ]
        changes = label_changes(rec.boxes, boxes)
        totals["images"] += 1
        for k, v in changes.items():
            totals[k] += v
        out.append(rec.model_copy(update={"boxes": boxes, "issues": [i for i in rec.issues if i != "missing_labels"]}))
    return out, totals
