"""Serve the FiftyOne App on a curated dataset (what ``pyroblur app`` and ``make app`` run)."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

#: Saved views curation, the split and the benchmark create, in the order a person looks at them
#: (``predictions``: the latest benchmark's test samples at the operating point, most misses first).
VIEWS = ("curated", "rejected", "duplicates", "train", "val", "test", "predictions")
#: Saved views the review after each benchmark creates (pyroblur.curation.review.REVIEW_VIEWS).
REVIEW_VIEWS = (
    "likely missing labels",
    "likely wrong labels",
    "worst false negatives by size",
    "false positives with high confidence",
)


class AppError(RuntimeError):
    """The App cannot be opened (dataset or view missing); the message says what to do."""


def load_view(dataset_name: str, view: str | None = None) -> Any:
    """The dataset, or one of its saved views, to show in the App."""
    import fiftyone as fo

    if not fo.dataset_exists(dataset_name):
        known = ", ".join(sorted(fo.list_datasets())) or "none"
        raise AppError(
            f"FiftyOne dataset '{dataset_name}' does not exist (datasets: {known}). "
            "Run the pipeline first (make demo / pyroblur run)."
        )
    ds = fo.load_dataset(dataset_name)
    if view is None:
        return ds
    if not ds.has_saved_view(view):
        raise AppError(f"dataset '{dataset_name}' has no saved view '{view}' (saved: {ds.list_saved_views()})")
    return ds.load_saved_view(view)


def serve(dataset_name: str, address: str = "127.0.0.1", port: int = 5151, view: str | None = None) -> Any:
    """Start the App server for ``dataset_name`` (optionally a saved ``view``); returns the session.

    The saved views (:data:`VIEWS`) are listed in the App's view bar. ``remote=True`` serves
    without trying to open a browser on this machine; the caller keeps the process alive
    (``session.wait(-1)``).
    """
    import logging as _logging

    import fiftyone as fo

    target = load_view(dataset_name, view)
    # FiftyOne logs its own remote hint, always with 5151 as the local port of the tunnel; the
    # CLI prints :func:`remote_hint` instead, once, with the port actually served.
    session_log = _logging.getLogger("fiftyone.core.session.session")
    level = session_log.level
    session_log.setLevel(_logging.WARNING)
    try:
        session = fo.launch_app(target, address=address, port=port, remote=True, auto=False)
    finally:
        session_log.setLevel(level)
    log.info(
        "FiftyOne App serving '%s'%s at http://%s:%d", dataset_name, f" (view {view})" if view else "", address, port
    )
    return session


def remote_hint(address: str, port: int) -> str:
    """How to open the App from another machine (an ssh tunnel to the port actually served)."""
    if address in ("0.0.0.0", "::"):
        return f"The App listens on every interface: open http://<this-host>:{port} (mind who can reach it)."
    return (
        f"From another machine: ssh -N -L {port}:{address}:{port} [<user>@]<this-host>, "
        f"then open http://localhost:{port}"
    )
