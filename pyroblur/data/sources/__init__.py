"""Dataset sources. Each kind lives in ``pyroblur.data.sources.<kind>`` and provides::

    fetch(cfg, dest: Path) -> list[SampleRecord]   # download/generate into dest, return records
    plan(cfg, dest: Path) -> list[PlannedDownload]  # what fetch would download (for --dry-run)

``dest`` is ``<data root>/raw/<source name>``; raw data there is never modified in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyroblur.core.records import SampleRecord
from pyroblur.data.sources.models import SourceConfig

__all__ = ["SourceConfig", "fetch_source", "plan_source"]


def _module(cfg: Any) -> Any:
    # Static imports (lazy, one per kind) so the cache policy's import graph sees every source.
    kind = cfg.kind
    if kind == "synthetic":
        from pyroblur.data.sources import synthetic as mod
    elif kind == "wider_face":
        from pyroblur.data.sources import wider_face as mod
    elif kind == "hf_coco":
        from pyroblur.data.sources import hf_coco as mod
    elif kind == "roboflow":
        from pyroblur.data.sources import roboflow as mod
    elif kind == "open_images":
        from pyroblur.data.sources import open_images as mod
    elif kind == "local":
        from pyroblur.data.sources import local as mod
    else:  # a kind in the config without an implementation
        raise NotImplementedError(f"source kind {kind!r} ({cfg.name}) is not implemented")
    return mod


def fetch_source(cfg: Any, dest: Path) -> list[SampleRecord]:
    """Download or generate one source into ``dest`` and return its sample records."""
    return _module(cfg).fetch(cfg, dest)


def plan_source(cfg: Any, dest: Path) -> list[Any]:
    """List the downloads ``fetch_source`` would make (URL, expected size, destination)."""
    return _module(cfg).plan(cfg, dest)
