"""Retry settings and the test-only failure switch shared by all tasks."""

from __future__ import annotations

import os

from prefect import runtime
from prefect.tasks import exponential_backoff

#: Retries per task; the delay doubles each time from PYROBLUR_RETRY_DELAY seconds (default 10).
RETRIES = int(os.environ.get("PYROBLUR_RETRIES", "3"))
RETRY_DELAY = exponential_backoff(backoff_factor=float(os.environ.get("PYROBLUR_RETRY_DELAY", "10")))

INJECT_ENV = "PYROBLUR_INJECT_FAILURE"


class InjectedFailure(RuntimeError):
    """Raised by the test-only failure switch."""


def maybe_inject_failure(stage: str) -> None:
    """Test-only switch: ``PYROBLUR_INJECT_FAILURE="curate:transient,train:permanent"``.

    ``transient`` fails the first attempt only (the retry succeeds); ``permanent`` fails every
    attempt. ``*`` as the stage name applies to every stage.
    """
    spec = os.environ.get(INJECT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, mode = item.partition(":")
        if name not in (stage, "*"):
            continue
        attempt = runtime.task_run.run_count
        if mode == "permanent" or (mode == "transient" and attempt <= 1):
            raise InjectedFailure(f"injected {mode} failure in stage '{stage}' (attempt {attempt})")
