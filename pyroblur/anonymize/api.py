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

import errno
import logging
from pathlib import Path

from pyroblur.anonymize.detector import Detector
from pyroblur.anonymize.errors import (
    IncompleteOutputError,
    NoModelError,
    OutputSpaceError,
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


def _disk_full(exc: BaseException) -> str | None:
    """The OS error text when ``exc`` (or what caused it) is a full disk or quota."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen.strerror or str(seen)
        if "No space left on device" in str(seen):
            return "No space left on device"
        seen = seen.__cause__ or seen.__context__
    return None


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
        OutputSpaceError: the disk filled up (the file being written is removed; the run stops).
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
            full = _disk_full(exc)
            if full is not None:  # not the input's fault, and every later file would fail too
                raise OutputSpaceError(
                    f"no space left on the device while writing {dst} ({full}); nothing partial was kept",
                    subject=str(dst),
                    hint="free space or choose another OUTPUT, then run again with --resume",
                ) from exc
            logger.warning("Skipped %s: %s", src, exc)
            report.skipped.append(Skipped(input=src, reason=f"{type(exc).__name__}: {exc}"))
    return report
