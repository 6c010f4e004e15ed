"""Anonymization: hide faces and license plates in images, folders and videos.

Layers, each usable alone:

* :mod:`.ops` pure pixel operations (blur, mosaic, solid, box enlargement, feathering);
* :mod:`.detector` the :class:`Detector` protocol and the ultralytics implementation;
* :mod:`.temporal` temporal memory that carries boxes over missed frames;
* :mod:`.video` ffmpeg decode/encode through pipes, audio kept, atomic output;
* :mod:`.api` :func:`anonymize_path` for a file or a folder tree, with a :class:`Report`;
* :mod:`.cli` the ``pyroblur anonymize`` typer command.

Nothing here imports Prefect.
"""

from pyroblur.anonymize.api import (
    AnonymizeOptions,
    FileResult,
    NoModelError,
    Report,
    Skipped,
    UnreadableInputError,
    UnsafeOutputError,
    anonymize_file,
    anonymize_path,
    build_detector,
    plan_outputs,
    resolve_weights,
)
from pyroblur.anonymize.detector import Detector, UltralyticsDetector
from pyroblur.anonymize.ops import Mode, anonymize_image
from pyroblur.anonymize.temporal import TemporalMemory

__all__ = [
    "AnonymizeOptions",
    "Detector",
    "FileResult",
    "Mode",
    "NoModelError",
    "Report",
    "Skipped",
    "TemporalMemory",
    "UltralyticsDetector",
    "UnreadableInputError",
    "UnsafeOutputError",
    "anonymize_file",
    "anonymize_image",
    "anonymize_path",
    "build_detector",
    "plan_outputs",
    "resolve_weights",
]
