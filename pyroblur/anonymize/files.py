"""Anonymize one file (image or video): detection, hiding, gap filling, the residual
check, the audit record and the sidecar, each delegated to its module."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyroblur import CLASSES
from pyroblur.anonymize.audit import audit_matches, audit_path, boxes_json, write_audit
from pyroblur.anonymize.detector import Detector, detect_in_video, filter_detections
from pyroblur.anonymize.errors import IncompleteOutputError, UnreadableInputError
from pyroblur.anonymize.images import anonymize_image_file
from pyroblur.anonymize.models import model_record
from pyroblur.anonymize.ops import anonymize_image
from pyroblur.anonymize.options import AnonymizeOptions, FileResult
from pyroblur.anonymize.planning import file_kind
from pyroblur.anonymize.temporal import TrackFiller
from pyroblur.anonymize.video import FrameRecord, VideoError, anonymize_video
from pyroblur.core.detections import Detections
from pyroblur.core.hashing import sha256_file
from pyroblur.core.io import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["anonymize_file", "filtered", "make_hider"]


def _det_json(dets: Detections, remembered: np.ndarray | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(dets)):
        row: dict[str, Any] = {
            "class": CLASSES[int(dets.class_id[i])],
            "class_id": int(dets.class_id[i]),
            "confidence": round(float(dets.confidence[i]), 4),
            "xyxy": [round(float(v), 1) for v in dets.xyxy[i]],
        }
        if remembered is not None:
            row["remembered"] = bool(remembered[i])
        rows.append(row)
    return rows


def _sidecar_path(dst: Path) -> Path:
    return dst.with_name(dst.name + ".json")


def make_hider(options: AnonymizeOptions) -> Callable[[np.ndarray, Detections], np.ndarray]:
    """``hide(frame, detections)`` with the mask settings of ``options`` (faces as
    ellipses when ``options.ellipse``)."""

    def hide(frame: np.ndarray, dets: Detections) -> np.ndarray:
        return anonymize_image(
            frame,
            dets.xyxy,
            options.mode,
            enlarge=options.enlarge,
            feather=options.feather,
            blur_strength=options.blur_strength,
            mosaic_cells=options.mosaic_cells,
            color=options.color,
            ellipse=(dets.class_id == 0) if options.ellipse else False,
        )

    return hide


class _Filtered:
    """``detector`` with the class selection and thresholds of ``options`` applied."""

    def __init__(self, detector: Detector, options: AnonymizeOptions) -> None:
        self.detector, self.options = detector, options

    def _apply(self, found: list[Detections]) -> list[Detections]:
        return [filter_detections(d, self.options.conf, self.options.class_ids) for d in found]

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        return self._apply(self.detector(frames))

    def detect_sequence(self, frames: list[np.ndarray], first_index: int) -> list[Detections]:
        return self._apply(detect_in_video(self.detector, frames, first_index))


def filtered(detector: Detector, options: AnonymizeOptions) -> Detector:
    """Apply the class selection and thresholds to any detector (an injected one too)."""
    return _Filtered(detector, options)


def _residual_summary(per_frame: list[tuple[int, Detections]]) -> dict[str, Any]:
    hits = [(i, d) for i, d in per_frame if len(d)]
    return {
        "checked_frames": len(per_frame),
        "count": sum(len(d) for _, d in hits),
        "frames": [{"frame": i, "boxes": boxes_json(d)} for i, d in hits[:200]],
    }


@dataclass
class _Collected:
    """What one file's run gathers frame by frame for its audit record and sidecar."""

    audit: list[dict[str, Any]] = field(default_factory=list)
    sidecar: list[dict[str, Any]] = field(default_factory=list)
    residuals: list[tuple[int, Detections]] = field(default_factory=list)
    boxes: int = 0
    filled: int = 0
    keep_sidecar: bool = False

    def add(self, index: int, dets: Detections, filled: np.ndarray | None, track_id: np.ndarray | None) -> None:
        self.boxes += len(dets)
        self.filled += int(filled.sum()) if filled is not None else 0
        self.audit.append({"frame": index, "boxes": boxes_json(dets, filled, track_id)})
        if self.keep_sidecar:
            self.sidecar.append({"frame": index, "detections": _det_json(dets, filled)})


def _resumed(src: Path, dst: Path) -> FileResult:
    """The result of a file skipped on a resume, read back from its audit record: the boxes it
    hid and those filled from tracks count as when it was written (a resumed report must not
    say "0 boxes hidden" for work done by the interrupted run)."""
    doc = json.loads(audit_path(dst).read_text())
    rows = [row for frame in doc.get("frames", []) for row in frame.get("boxes", [])]
    filled = doc.get("box_columns", []).index("filled") if "filled" in doc.get("box_columns", []) else None
    return FileResult(
        input=src,
        output=dst,
        kind=file_kind(src) or "image",
        frames=doc.get("frames_written") or 1,
        expected_frames=doc.get("frames_expected"),
        complete=doc.get("complete", True),
        boxes=len(rows),
        remembered=sum(1 for row in rows if filled is not None and row[filled]),
        residual=(doc.get("residual") or {}).get("count"),
        audit=audit_path(dst),
        resumed=True,
    )


def _image(
    src: Path, dst: Path, options: AnonymizeOptions, detect: Detector, verify: Detector | None, got: _Collected
) -> FileResult:
    dets, hidden, (h, w) = anonymize_image_file(
        src, dst, detect, make_hider(options), jpeg_quality=options.jpeg_quality
    )
    if verify is not None:
        got.residuals.append((0, verify([hidden])[0]))
    got.add(0, dets, None, None)
    sidecar = _sidecar_path(dst) if options.sidecar else None
    if sidecar is not None:
        doc = {"input": str(src), "output": str(dst), "width": w, "height": h, "detections": _det_json(dets)}
        write_atomic(sidecar, json.dumps(doc, indent=1).encode())
    return FileResult(input=src, output=dst, kind="image", boxes=len(dets), sidecar=sidecar)


def _video(
    src: Path, dst: Path, options: AnonymizeOptions, detect: Detector, verify: Detector | None, got: _Collected
) -> FileResult:
    def on_frame(rec: FrameRecord) -> None:
        got.add(rec.index, rec.detections, rec.remembered, rec.track_id)
        if rec.residual is not None:
            got.residuals.append((rec.index, rec.residual))

    try:  # anonymize_video probes first: an unreadable file raises before anything is written
        outcome = anonymize_video(
            src,
            dst,
            detect,
            make_hider(options),
            batch_size=options.batch_size,
            filler=TrackFiller(options.memory_frames, max_scale=options.fill_scale) if options.memory_frames else None,
            progress=options.progress,
            on_frame=on_frame,
            crf=options.crf,
            verify=verify,
            imgsz=options.imgsz,
        )
    except VideoError as exc:
        raise UnreadableInputError(str(exc), subject=str(src)) from exc
    sidecar = _sidecar_path(dst) if options.sidecar else None
    if sidecar is not None:
        info = outcome.info
        doc = {
            "input": str(src),
            "output": str(dst),
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "frames": got.sidecar,
        }
        write_atomic(sidecar, json.dumps(doc).encode())
    return FileResult(
        input=src,
        output=dst,
        kind="video",
        frames=outcome.frames,
        expected_frames=outcome.expected,
        complete=outcome.complete,
        boxes=got.boxes,
        remembered=got.filled,
        sidecar=sidecar,
    )


def anonymize_file(
    src: Path,
    dst: Path,
    options: AnonymizeOptions,
    detector: Detector,
    *,
    resume: bool = False,
) -> FileResult:
    """Anonymize one image or video into ``dst`` (atomic). Raises on any failure.

    ``detector`` gets the class selection and per-class thresholds of ``options`` applied
    on top of its own. With ``resume``, a file whose output and audit record already match
    (see :func:`~pyroblur.anonymize.audit.audit_matches`) is not redone.

    Raises:
        UnreadableInputError: the input cannot be decoded.
        IncompleteOutputError: ``options.strict`` and the residual check found something;
            the output is then removed (fail closed).
    """
    start = time.perf_counter()
    kind = file_kind(src)
    if kind is None:
        raise UnreadableInputError(f"unsupported file type {src.suffix!r}", subject=str(src))
    # Which detectors run and why (build_detector's choice for face_detector=auto): the record says it.
    provenance = dict(getattr(detector, "provenance", None) or {})
    model = model_record(options.weights, face_detector=provenance.get("face_detector", options.face_detector))
    model |= {k: v for k, v in provenance.items() if k != "face_detector"}
    if resume and options.audit and audit_matches(src, dst, options, model.get("sha256")):
        logger.info("%s: output and audit record match, skipped (resume)", src)
        return _resumed(src, dst)
    input_sha = sha256_file(src) if options.audit else None
    detect = filtered(detector, options)
    verify = detect if (options.verify or options.strict) else None
    got = _Collected(keep_sidecar=options.sidecar)
    result = (_image if kind == "image" else _video)(src, dst, options, detect, verify, got)
    residual = _residual_summary(got.residuals) if verify is not None else None
    result.residual = residual["count"] if residual is not None else None
    if options.audit:
        try:
            result.audit = write_audit(
                src,
                dst,
                options,
                model,
                frames=got.audit,
                written=result.frames,
                expected=result.expected_frames,
                complete=result.complete,
                residual=residual,
                input_sha256=input_sha,
            )
        except BaseException:
            # an output without its audit record is not published (e.g. the disk filled up)
            dst.unlink(missing_ok=True)
            if result.sidecar is not None:
                result.sidecar.unlink(missing_ok=True)
            raise
    if options.strict and result.residual:
        # Fail closed: an output in which the detector still finds something is not published.
        dst.unlink(missing_ok=True)
        raise IncompleteOutputError(
            f"the residual check still finds {result.residual} box(es) in the anonymized output; output removed",
            subject=str(src),
            hint=f"see {result.audit or 'the audit record'} for where; lower the thresholds, raise --enlarge "
            "or use --mode solid",
        )
    result.seconds = round(time.perf_counter() - start, 3)
    logger.info("Anonymized %s -> %s (%d boxes)", src, dst, result.boxes)
    return result
