"""Dataset sources. Each kind lives in ``pyroblur.sources.<kind>`` and provides::

    fetch(cfg, dest: Path) -> list[SampleRecord]   # download/generate into dest, return records
    plan(cfg, dest: Path) -> list[PlannedDownload]  # what fetch would download (for --dry-run)

``dest`` is ``<data root>/raw/<source name>``; raw data there is never modified in place.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pyroblur.records import SampleRecord
from pyroblur.sources.models import SourceConfig

__all__ = ["SourceConfig", "fetch_source", "plan_source"]


def _module(cfg: Any) -> Any:
    try:
        return importlib.import_module(f"pyroblur.sources.{cfg.kind}")
    except ModuleNotFoundError as exc:  # a kind in the config without an implementation
        raise NotImplementedError(f"source kind {cfg.kind!r} ({cfg.name}) is not implemented") from exc


def fetch_source(cfg: Any, dest: Path) -> list[SampleRecord]:
    """Download or generate one source into ``dest`` and return its sample records."""
    return _module(cfg).fetch(cfg, dest)


def plan_source(cfg: Any, dest: Path) -> list[Any]:
    """List the downloads ``fetch_source`` would make (URL, expected size, destination)."""
    return _module(cfg).plan(cfg, dest)
