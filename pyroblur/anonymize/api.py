"""Anonymize an image, a video or a folder tree: the one entry point that the CLI, the
Prefect task and the tests share.

Safety rules, checked before anything is written:

* an output never overwrites an input: the run is refused when OUTPUT resolves to INPUT
  or when any planned output path resolves to one of the input files;
* every output (and sidecar, and audit record) is written under a hidden temporary name in
  its final folder and renamed into place only when complete;
* a file that cannot be read or written is skipped with its reason and the others go on.

The pieces live in their own modules (options, planning, models, images, video, files,
audit); this module keeps the public names in one place.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyroblur.anonymize.detector import Detector
from pyroblur.anonymize.errors import (
    IncompleteOutputError,
    NoModelError,
    UnreadableInputError,
    UnsafeOutputError,
)
from pyroblur.anonymize.files import anonymize_file
from pyroblur.anonymize.models import build_detector, resolve_weights
from pyroblur.anonymize.options import AnonymizeOptions, FileResult, Report, Skipped
from pyroblur.anonymize.planning import Plan, plan_outputs
from pyroblur.core.io import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "AnonymizeOptions",
    "FileResult",
    "IncompleteOutputError",
    "NoModelError",
    "Plan",
    "Report",
    "Skipped",
    "UnreadableInputError",
    "UnsafeOutputError",
    "anonymize_file",
    "anonymize_path",
    "build_detector",
    "plan_outputs",
    "resolve_weights",
]


def anonymize_path(
    input: Path,
    output: Path,
    options: AnonymizeOptions | None = None,
    detector: Detector | None = None,
    *,
    resume: bool = False,
) -> Report:
    """Anonymize an image, a video, or a folder tree (see :func:`plan_outputs`).

    Args:
        input: file or folder.
        output: output file or folder; never an input.
        options: settings (defaults when ``None``).
        detector: a :class:`Detector`; ``None`` builds one from ``options.weights`` or the
            registry's champion.
        resume: skip files whose output and audit record already match (an interrupted
            folder job run again).

    Returns:
        A :class:`Report` of written and skipped files. Per-file failures are reported, not
        raised.

    Raises:
        FileNotFoundError, UnsafeOutputError, NoModelError: before anything is written.
    """
    options = options or AnonymizeOptions()
    plan = plan_outputs(Path(input), Path(output))
    report = Report(skipped=list(plan.skipped))
    if plan.items and detector is None:
        detector = build_detector(options)
        used = getattr(detector, "weights", None)
        if options.weights is None and isinstance(used, Path):
            # the champion's file actually loaded (its ONNX export or its .pt) goes into the
            # audit records, by path and sha256, instead of no model at all
            options = options.model_copy(update={"weights": used})
    for src, dst in plan.items:
        try:
            report.processed.append(anonymize_file(src, dst, options, detector, resume=resume))  # type: ignore[arg-type]
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            logger.warning("Skipped %s: %s", src, exc)
            report.skipped.append(Skipped(input=src, reason=f"{type(exc).__name__}: {exc}"))
    return report
