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

import contextvars
import errno
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
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
from pyroblur.anonymize.models import build_detector, resolve_weights, with_resolved_weights
from pyroblur.anonymize.options import AnonymizeOptions, FileResult, Report, Skipped
from pyroblur.anonymize.planning import Plan, plan_outputs
from pyroblur.core.io import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "AnonymizeOptions",
    "FileResult",
    "FileStep",
    "IncompleteOutputError",
    "NoModelError",
    "Plan",
    "Report",
    "Skipped",
    "UnreadableInputError",
    "UnsafeOutputError",
    "anonymize_file",
    "anonymize_items",
    "anonymize_path",
    "build_detector",
    "plan_outputs",
    "resolve_weights",
    "with_resolved_weights",
]

#: One file of a job: ``(input, output) -> FileResult | Skipped``; raises when the file failed.
FileStep = Callable[[Path, Path], FileResult | Skipped]


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
    if plan.items and detector is None:
        # the file actually loaded (the champion's ONNX export or its .pt) goes into the audit
        # records, by path and sha256, instead of no model at all
        options = with_resolved_weights(options)
        detector = build_detector(options)
    done = anonymize_items(
        plan.items,
        lambda src, dst: anonymize_file(src, dst, options, detector, resume=resume),  # type: ignore[arg-type]
    )
    return Report(processed=done.processed, skipped=[*plan.skipped, *done.skipped])


def anonymize_items(items: Sequence[tuple[Path, Path]], step: FileStep, *, concurrency: int = 1) -> Report:
    """The one loop over a job's files, which ``pyroblur anonymize DIR`` (through
    :func:`anonymize_path`) and every shard of the anonymize flow (``step``: its retried
    per-file task) share.

    ``step`` runs once per ``(input, output)`` pair, at most ``concurrency`` at a time (in
    threads, each started in a copy of the caller's context, so a step that reads context
    variables, e.g. a Prefect task called inside a flow run, sees the caller's); the report lists
    the results in ``items`` order. A step that raises skips its file with the reason, and the
    others go on; a full disk stops the loop instead (every later file would fail too), after
    the files in flight (no other file starts); Ctrl+C and ``MemoryError`` stop it at once.

    Raises:
        OutputSpaceError: the disk filled up (the file being written was removed).
    """
    results: list[FileResult | Skipped | None] = [None] * len(items)

    def settle(i: int, future: Future | None = None) -> None:
        src, dst = items[i]
        try:
            results[i] = future.result() if future is not None else step(src, dst)
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
            results[i] = Skipped(input=src, reason=f"{type(exc).__name__}: {exc}")

    if concurrency <= 1 or len(items) <= 1:
        for i in range(len(items)):
            settle(i)
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="anonymize") as pool:
            in_flight: dict[Future, int] = {}
            try:
                for i, item in enumerate(items):
                    if len(in_flight) >= concurrency:  # a sliding window: the next starts when one ends
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            settle(in_flight.pop(future), future)
                    in_flight[pool.submit(contextvars.copy_context().run, step, *item)] = i
                for future in as_completed(list(in_flight)):
                    settle(in_flight.pop(future), future)
            except BaseException:
                for future in in_flight:  # what has not started does not start
                    future.cancel()
                raise
    report = Report()
    for result in results:
        (report.processed if isinstance(result, FileResult) else report.skipped).append(result)  # type: ignore[arg-type]
    return report
