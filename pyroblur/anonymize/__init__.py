"""Anonymization: hide faces and license plates in images, folders and videos.

Layers, each usable alone:

* :mod:`.ops` pure pixel operations (blur, mosaic, solid, ellipses, box enlargement, feathering);
* :mod:`.detector` the :class:`Detector` protocol, the ultralytics implementation (full frame
  plus tiles) and the union of detectors; :mod:`.centerface` CenterFace through onnxruntime;
* :mod:`.temporal` track-based gap filling (ByteTrack) with a bounded look-ahead;
* :mod:`.video` ffmpeg decode/encode through pipes, audio kept, truncation reported;
* :mod:`.options` options and reports; :mod:`.planning` input -> output paths;
  :mod:`.models` the one resolution of weights (``with_resolved_weights``) and the detector; :mod:`.images` still images;
  :mod:`.files` one file end to end; :mod:`.audit` audit records and resume checks;
* :mod:`.api` :func:`anonymize_path` for a file or a folder tree, with a :class:`Report`, and
  :func:`anonymize_items`, the one folder loop (the CLI's and every shard of the flow's);
* the ``pyroblur anonymize`` command lives with the other commands in ``flows/cli/anonymize.py``.

Nothing here imports Prefect.
"""

from pyroblur.anonymize.api import (
    AnonymizeOptions,
    FileResult,
    IncompleteOutputError,
    NoModelError,
    Report,
    Skipped,
    UnreadableInputError,
    UnsafeOutputError,
    anonymize_file,
    anonymize_items,
    anonymize_path,
    build_detector,
    plan_outputs,
    resolve_weights,
    with_resolved_weights,
)
from pyroblur.anonymize.detector import Detector, UltralyticsDetector, UnionDetector
from pyroblur.anonymize.ops import Mode, anonymize_image
from pyroblur.anonymize.temporal import TrackFiller

__all__ = [
    "AnonymizeOptions",
    "Detector",
    "FileResult",
    "IncompleteOutputError",
    "Mode",
    "NoModelError",
    "Report",
    "Skipped",
    "TrackFiller",
    "UltralyticsDetector",
    "UnionDetector",
    "UnreadableInputError",
    "UnsafeOutputError",
    "anonymize_file",
    "anonymize_image",
    "anonymize_items",
    "anonymize_path",
    "build_detector",
    "plan_outputs",
    "resolve_weights",
    "with_resolved_weights",
]
