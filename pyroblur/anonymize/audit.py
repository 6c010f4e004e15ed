"""Audit records: proof of what was done to each output, and the key for resuming.

``<output>.audit.json`` holds the input's and the output's sha256, the model (weights
sha256, and the registry entry with its promotion gates when the weights are the
champion's), the options (thresholds, classes, masks), per frame the boxes hidden (filled
ones marked) and the residual check's findings. A folder job that is run again skips a file
whose record matches: same input bytes, same output bytes, same model, same options.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pyroblur import CLASSES
from pyroblur.anonymize.options import AnonymizeOptions
from pyroblur.core.detections import Detections
from pyroblur.core.hashing import digest_of, sha256_file
from pyroblur.core.io import write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA",
    "audit_matches",
    "audit_path",
    "boxes_json",
    "options_digest",
    "write_audit",
]

SCHEMA = 1


def audit_path(output: Path) -> Path:
    """``<output>.audit.json``, next to the output."""
    return output.with_name(output.name + ".audit.json")


def options_digest(options: AnonymizeOptions) -> str:
    """Digest of every option that changes the output's pixels or its record."""
    return digest_of(options.model_dump(mode="json", exclude={"progress", "weights"}))


def boxes_json(
    dets: Detections, filled: np.ndarray | None = None, track_id: np.ndarray | None = None
) -> list[list[Any]]:
    """Compact rows ``[x1, y1, x2, y2, class, confidence, filled, track]`` (pixels, 1 decimal;
    track -1 where no track claimed the box)."""
    rows = []
    for i in range(len(dets)):
        rows.append(
            [*(round(float(v), 1) for v in dets.xyxy[i])]
            + [CLASSES[int(dets.class_id[i])], round(float(dets.confidence[i]), 4)]
            + [bool(filled[i]) if filled is not None else False]
            + [int(track_id[i]) if track_id is not None and i < len(track_id) else -1]
        )
    return rows


def write_audit(
    src: Path,
    dst: Path,
    options: AnonymizeOptions,
    model: dict[str, Any],
    *,
    frames: list[dict[str, Any]],
    written: int,
    expected: int | None,
    complete: bool,
    residual: dict[str, Any] | None,
    input_sha256: str | None = None,
) -> Path:
    """Write ``<dst>.audit.json`` atomically and return its path."""
    doc = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": {"path": str(src), "sha256": input_sha256 or sha256_file(src), "bytes": src.stat().st_size},
        "output": {"path": str(dst), "sha256": sha256_file(dst), "bytes": dst.stat().st_size},
        "model": model,
        "options": options.model_dump(mode="json", exclude={"progress"}),
        "options_digest": options_digest(options),
        "frames_written": written,
        "frames_expected": expected,
        "complete": complete,
        "residual": residual,
        "box_columns": ["x1", "y1", "x2", "y2", "class", "confidence", "filled", "track"],
        "frames": frames,
    }
    path = audit_path(dst)
    write_atomic(path, json.dumps(doc, separators=(",", ":")))
    return path


def audit_matches(src: Path, dst: Path, options: AnonymizeOptions, model_sha256: str | None) -> bool:
    """True when ``dst`` and its audit record prove that ``src`` was already anonymized
    with this model and these options, completely: the file can be skipped on a resume."""
    path = audit_path(dst)
    if not (path.is_file() and dst.is_file()):
        return False
    try:
        doc = json.loads(path.read_text())
        return bool(
            doc.get("schema") == SCHEMA
            and doc.get("complete")
            and doc["options_digest"] == options_digest(options)
            and doc["model"].get("sha256") == model_sha256
            and doc["input"]["sha256"] == sha256_file(src)
            and doc["output"]["sha256"] == sha256_file(dst)
            and (not options.strict or not (doc.get("residual") or {}).get("count"))
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.info("audit record %s does not match (%s): redoing %s", path, exc, src)
        return False
