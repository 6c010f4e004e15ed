"""Retry settings and the retry condition shared by all tasks."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.tasks import exponential_backoff

from pyroblur.core.errors import is_transient

log = logging.getLogger(__name__)

#: Retries per task; the delay doubles each time from PYROBLUR_RETRY_DELAY seconds (default 10).
RETRIES = int(os.environ.get("PYROBLUR_RETRIES", "3"))
RETRY_DELAY = exponential_backoff(backoff_factor=float(os.environ.get("PYROBLUR_RETRY_DELAY", "10")))


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
