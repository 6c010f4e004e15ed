"""Process environment defaults shared by the CLI, flows and workers.

Call :func:`configure_environment` before Prefect is imported: Prefect reads its settings once.
"""

from __future__ import annotations

import logging
import os

from pyroblur.core.settings import get_paths


def configure_environment() -> None:
    """Project-local result store under the data root; no telemetry. Existing values win."""
    paths = get_paths()
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(paths.root / "prefect-results"))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    # The library's log lines (download warnings, "resuming training from ...") go into each
    # run's logs in the UI; outside a run they stay on the console without a warning per line.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pyroblur")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    if logging.getLogger("pyroblur").level == logging.NOTSET:
        logging.getLogger("pyroblur").setLevel(logging.INFO)  # the root logger's WARNING would drop INFO
    # FiftyOne's own mongod is 6.0 (the oldest it supports); the warning is expected.
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
