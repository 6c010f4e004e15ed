"""Dataset sources. Each kind lives in ``pyroblur.data.sources.<kind>`` and provides::

    fetch(cfg, dest: Path) -> list[SampleRecord]   # download/generate into dest, return records
    plan(cfg, dest: Path) -> list[PlannedDownload]  # what fetch would download (for --dry-run)

``dest`` is ``<data root>/raw/<source name>``; raw data there is never modified in place. The
records are indexed once, by the pipeline's download task (``<data root>/indexes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyroblur.core.errors import PyroblurError
from pyroblur.core.records import SampleRecord
from pyroblur.data.sources.models import SourceConfig
from pyroblur.manifests import SourceOutput

__all__ = ["SourceConfig", "fetch_and_index", "fetch_source", "plan_source"]


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
    """Download or generate one source into ``dest`` and return its sample records.

    Errors name the source: a parser's ``ValueError`` (malformed annotations) becomes a
    permanent :class:`~pyroblur.data.sources._common.SourceDataError`; the project's own errors
    (unreachable host, checksum, ...) keep their class (and so their retry decision).
    """
    from pyroblur.data.sources._common import SourceDataError

    try:
        return _module(cfg).fetch(cfg, dest)
    except PyroblurError as exc:
        if f"source {cfg.name!r}" not in exc.message:
            exc.message = f"source {cfg.name!r}: {exc.message}"
            exc.args = (exc.message,)
        raise
    except ValueError as exc:
        raise SourceDataError(f"source {cfg.name!r}: {exc}", hint="the data does not have the expected format") from exc


def plan_source(cfg: Any, dest: Path) -> list[Any]:
    """List the downloads ``fetch_source`` would make (URL, expected size, destination)."""
    return _module(cfg).plan(cfg, dest)


def fetch_and_index(cfg: Any, dest: Path, indexes: Path) -> SourceOutput:
    """Fetch one source into ``dest`` and write its records once, content-addressed, under
    ``indexes`` (two configs sharing a source name never overwrite each other's index)."""
    from pyroblur import CLASSES
    from pyroblur.core.hashing import digest_of, sha256_file
    from pyroblur.core.records import save_records

    records = fetch_source(cfg, dest)
    index = indexes / f"{cfg.name}-{digest_of([r.model_dump(mode='json') for r in records])[:16]}.jsonl"
    if not index.exists():
        save_records(records, index)
    boxes = {c: sum(1 for r in records for b in r.boxes if b.class_id == i) for i, c in enumerate(CLASSES)}
    return SourceOutput(
        name=cfg.name,
        kind=cfg.kind,
        index_path=str(index),
        index_sha256=sha256_file(index),
        num_images=len(records),
        num_boxes=boxes,
    )
