"""Prefect task that anonymizes one file: a thin shell over :func:`pyroblur.anonymize.anonymize_file`.

Retried per file with backoff (a transient I/O or GPU error costs one file, not the batch).
A file that cannot be read at all is not an error to retry: it comes back as a
:class:`~pyroblur.anonymize.Skipped` with its reason.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pyroblur.anonymize import AnonymizeOptions, Detector, FileResult, Skipped, anonymize_file, build_detector
from pyroblur.anonymize.api import UnreadableInputError
from tasks._common import RETRIES, RETRY_DELAY, maybe_inject_failure, retry_transient

_detectors: dict[tuple, Detector] = {}
_lock = threading.Lock()


def get_detector(options: AnonymizeOptions) -> Detector:
    """One loaded model per worker process and settings (loading per file would dominate)."""
    weights = Path(options.weights) if options.weights else None
    stamp = weights.stat().st_mtime_ns if weights and weights.exists() else None
    key = (str(weights), stamp, options.device, options.half, options.imgsz, options.conf_face)
    key += (options.conf_plate, tuple(options.class_ids))
    with _lock:
        if key not in _detectors:
            _detectors.clear()
            _detectors[key] = build_detector(options)
        return _detectors[key]


@task(
    name="anonymize_file",
    task_run_name="anonymize {source.name}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY,
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_transient,
    # Output files are the result; re-running a file is cheap and always correct.
    cache_policy=NO_CACHE,
    persist_result=False,
)
def anonymize_file_task(source: Path, destination: Path, options: AnonymizeOptions) -> FileResult | Skipped:
    """Anonymize ``source`` into ``destination`` (atomic write); see ``anonymize_file``."""
    maybe_inject_failure("anonymize")
    logger = get_run_logger()
    try:
        result = anonymize_file(source, destination, options, get_detector(options))
    except UnreadableInputError as exc:
        logger.warning("skipped %s: %s", source, exc)
        return Skipped(input=source, reason=str(exc))
    logger.info("%s -> %s: %d boxes in %.1f s", source, destination, result.boxes, result.seconds)
    return result
