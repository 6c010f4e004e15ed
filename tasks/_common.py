"""Retry settings, the retry condition and the test-only failure switch shared by all tasks."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import runtime
from prefect.tasks import exponential_backoff

from pyroblur.core.errors import PermanentError, TransientError, is_transient

log = logging.getLogger(__name__)

#: Retries per task; the delay doubles each time from PYROBLUR_RETRY_DELAY seconds (default 10).
RETRIES = int(os.environ.get("PYROBLUR_RETRIES", "3"))
RETRY_DELAY = exponential_backoff(backoff_factor=float(os.environ.get("PYROBLUR_RETRY_DELAY", "10")))

INJECT_ENV = "PYROBLUR_INJECT_FAILURE"


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors that a retry can outlive.

    A permanent error (bad input, bad config, a missing package, a bug) fails on the first
    attempt with its own message instead of three more attempts and minutes of backoff.
    Must stay a plain function: Prefect calls only functions (``inspect.isfunction``).
    """
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    if exc is None:
        return True  # a failed state without an exception: keep Prefect's default
    retry = is_transient(exc)
    if not retry:
        log.info("not retrying task %s: permanent %s", getattr(task, "name", "?"), type(exc).__name__)
    return retry


class InjectedTransientFailure(TransientError):
    """Raised by the test-only failure switch on the first attempt (a retry succeeds)."""


class InjectedPermanentFailure(PermanentError):
    """Raised by the test-only failure switch on every attempt (never retried)."""


#: Both kinds, for ``except`` clauses.
InjectedFailure = (InjectedTransientFailure, InjectedPermanentFailure)


def maybe_inject_failure(stage: str) -> None:
    """Test-only switch: ``PYROBLUR_INJECT_FAILURE="curate:transient,train:permanent"``.

    ``transient`` raises a :class:`~pyroblur.core.errors.TransientError` on the first attempt
    only (the retry succeeds); ``permanent`` raises a
    :class:`~pyroblur.core.errors.PermanentError`, which is not retried. ``*`` as the stage
    name applies to every stage.
    """
    spec = os.environ.get(INJECT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, mode = item.partition(":")
        if name not in (stage, "*"):
            continue
        attempt = runtime.task_run.run_count
        message = f"injected {mode} failure in stage '{stage}' (attempt {attempt})"
        if mode == "permanent":
            raise InjectedPermanentFailure(message, hint="test switch PYROBLUR_INJECT_FAILURE")
        if mode == "transient" and attempt <= 1:
            raise InjectedTransientFailure(message)
