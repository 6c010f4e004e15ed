"""Which source data each registered model was trained on.

The registry stores the digest of the *exported* dataset a model was measured on; deciding
whether a scheduled retrain has anything new to learn needs the digest of the *downloads*
(before curation), known right after the download stage. ``<data root>/lineage.json`` maps a
registry model id to that digest::

    {"models": {"<model id>": {"sources_digest": "<sha256>", "recorded_at": "<UTC ISO time>"}}}

It is rewritten atomically under an ``fcntl`` lock, like the registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pyroblur.core.settings import get_paths
from pyroblur.registry.store import load_registry

logger = logging.getLogger(__name__)


def lineage_path() -> Path:
    """``<data root>/lineage.json``."""
    return get_paths().root / "lineage.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("models", {}))
    except (ValueError, AttributeError) as exc:
        # Losing lineage only costs one retrain; never block a pipeline over it.
        logger.warning("lineage file %s is unreadable (%s); treating it as empty", path, exc)
        return {}


def record_sources(
    model_id: str, sources_digest: str, path: Path | None = None, corrections: str | None = None
) -> None:
    """Remember that model ``model_id`` was trained on downloads (and label ``corrections``,
    a version name) with ``sources_digest``."""
    path = path or lineage_path()
    with _locked(path):
        models = _read(path)
        if models.get(model_id, {}).get("sources_digest") == sources_digest:
            return
        models[model_id] = {"sources_digest": sources_digest, "recorded_at": datetime.now(UTC).isoformat()}
        if corrections:
            models[model_id]["corrections"] = corrections
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"models": models}, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)


def sources_of(model_id: str, path: Path | None = None) -> str | None:
    """The sources digest model ``model_id`` was trained on, or ``None`` when unknown."""
    return _read(path or lineage_path()).get(model_id, {}).get("sources_digest")


def unchanged_reason(sources_digest: str, registry: Path | None = None, path: Path | None = None) -> str | None:
    """Why retraining is pointless, or ``None`` when it is not.

    Returns a sentence when the current champion was trained on exactly these downloads
    (``sources_digest``); ``None`` when there is no champion, its sources are unknown, or they
    differ.
    """
    registry = registry or get_paths().registry
    champion = load_registry(registry).champion() if registry.exists() else None
    if champion is None:
        return None
    trained_on = sources_of(champion.id, path)
    if trained_on != sources_digest:
        return None
    return (
        f"sources unchanged since champion {champion.id} was trained "
        f"(sources digest {sources_digest[:12]}): nothing new to learn"
    )
