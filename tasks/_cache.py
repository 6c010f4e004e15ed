"""Content-based cache keys that never return a stale result.

The key of a stage is: the stage's config section + the upstream manifests (whose ``digest``
fields are content digests) + the source of the task and of the library modules it calls.
Before Prefect looks the key up, the policy reads the cached manifest and calls its
``verify()``; when its outputs are gone or changed (FiftyOne dataset deleted, export folder
removed, weights replaced), the cached record is deleted so the stage runs again.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy, TaskSource
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem

from pyroblur.core.hashing import digest_of

log = logging.getLogger(__name__)


def code_digest(modules: tuple[str, ...]) -> str:
    """Digest of the source of library modules (a code change must miss the cache)."""
    names = [m.removesuffix(".__init__") for m in modules]
    return digest_of([inspect.getsource(importlib.import_module(m)) for m in names])


def stage_digest(stage: str, modules: tuple[str, ...], *inputs: Any) -> str:
    """Digest of a stage's inputs and code; also names its output folder."""
    return digest_of(stage, code_digest(modules), *inputs)


def _invalidate(store: Any, key: str) -> bool:
    removed = False
    for storage in (store.result_storage, store.metadata_storage):
        if isinstance(storage, LocalFileSystem):
            Path(storage._resolve_path(key)).unlink(missing_ok=True)
            removed = True
    return removed


@dataclass
class StagePolicy(CachePolicy):
    """Cache policy of one pipeline stage (see module docstring)."""

    stage: str = ""
    modules: tuple[str, ...] = field(default_factory=tuple)

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        source = TaskSource().compute_key(task_ctx, inputs, flow_parameters) or ""
        key = f"{self.stage}-{digest_of(stage_digest(self.stage, self.modules, *inputs.values()), source)}"
        store = getattr(task_ctx, "result_store", None)
        if store is None or not store.exists(key):
            return key
        try:
            ok = bool(store.read(key).result.verify())
        except Exception as exc:  # noqa: BLE001 - unreadable record = stale
            log.warning("cached result %s unreadable (%s); recomputing", key, exc)
            ok = False
        if not ok:
            if _invalidate(store, key):
                log.info("stage %s: cached outputs are gone or changed; recomputing", self.stage)
            else:  # remote result storage: cannot delete, so step around the stale record
                import uuid

                log.warning("stage %s: stale cache record in remote storage; using a fresh key", self.stage)
                return f"{key}-refresh-{uuid.uuid4().hex}"
        return key
