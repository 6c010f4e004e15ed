"""Prefect task that anonymizes one file: a thin shell over :func:`pyroblur.anonymize.anonymize_file`.

Retried per file with backoff (a transient I/O or GPU error costs one file, not the batch).
A file that cannot be read at all, or whose output fails the ``strict`` residual check, is
not an error to retry: it comes back as a :class:`~pyroblur.anonymize.Skipped` with its reason.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pyroblur.anonymize import AnonymizeOptions, Detector, FileResult, Skipped, anonymize_file, build_detector
from pyroblur.core.errors import InputError
from tasks._common import RETRIES, RETRY_DELAY, retry_transient

# One model per worker thread: ultralytics models are not safe to call from two threads at
# once, and the flow runs up to `concurrency` files in parallel threads.
_local = threading.local()


def get_detector(options: AnonymizeOptions) -> Detector:
    """This thread's loaded detector for these options (loading per file would dominate).

    Keyed on the whole options model (and the weights file's version): an option added later
    can never be served a detector built for other options. Options that only change how
    boxes are hidden rebuild the detector too; a job has one set of options, so that costs once.
    """
    weights = Path(options.weights) if options.weights else None
    stamp = weights.stat().st_mtime_ns if weights and weights.exists() else None
    key = (options.model_dump_json(), stamp)
    cached = getattr(_local, "detector", None)
    if cached is None or cached[0] != key:
        _local.detector = (key, build_detector(options))
    return _local.detector[1]


@task(
    name="anonymize_file",
    task_run_name="anonymize {source.name}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY,
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_transient,
    # Output files and their audit records are the result; resume=True skips matching ones.
    cache_policy=NO_CACHE,
    persist_result=False,
)
def anonymize_file_task(
    source: Path, destination: Path, options: AnonymizeOptions, resume: bool = True
) -> FileResult | Skipped:
    """Anonymize ``source`` into ``destination`` (atomic write); see ``anonymize_file``."""
    logger = get_run_logger()
    try:
        result = anonymize_file(source, destination, options, get_detector(options), resume=resume)
    except InputError as exc:
        logger.warning("skipped %s: %s", source, exc)
        return Skipped(input=source, reason=str(exc))
    logger.info("%s -> %s: %d boxes in %.1f s", source, destination, result.boxes, result.seconds)
    return result
