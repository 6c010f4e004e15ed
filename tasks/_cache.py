"""Content-based cache keys that never return a stale result.

The key of a stage is ``<stage>-<digest>``: the digest of the task's code closure (its body,
the helpers it uses and every project module it reaches through imports, computed from the
import graph by ``pyroblur.core.codegraph``) and its inputs (config section + upstream
manifests, whose ``digest`` fields are content digests).

A record under that key may describe outputs that were deleted or replaced since (FiftyOne
dataset deleted, export folder removed, weights overwritten). Computing a key deletes nothing:
the policy reads the record through Prefect's public ``ResultStore.exists``/``read`` and, when
its outputs are no longer intact (``tasks._verify.outputs_intact``), steps to a *derived* key,
``<key>~<digest of the stale record>``. The derived key is deterministic, so the next run finds
the fresh result there, with local and remote result storage alike; if that one goes stale too,
the walk continues (bounded) from it.

When a stage is not served from the cache, the run's log says why in one line (the config keys
that changed, the upstream data, the code modules, or outputs gone): ``tasks._explain``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from pyroblur.core.hashing import digest_of
from tasks._keys import stage_digest
from tasks._verify import outputs_intact

log = logging.getLogger(__name__)

#: How many stale records in a row the key walks past before giving up on this input
#: (each hop is one deletion of outputs behind a cached result; 32 is far beyond normal use).
MAX_HOPS = 32


def _fingerprint(record: Any) -> str:
    result = getattr(record, "result", None)
    try:
        return digest_of(result)[:12]
    except Exception:  # noqa: BLE001 - an unhashable or unreadable result still gets a stable name
        return digest_of(repr(result))[:12]


def resolve_key(
    store: Any, base: str, intact: Any = outputs_intact, on_stale: Callable[[str, Any], None] | None = None
) -> str:
    """The first key, from ``base`` along the derived chain, with no record or an intact one;
    ``on_stale(key, record)`` hears of each stale record walked past (``None``: unreadable)."""
    key = base
    for _ in range(MAX_HOPS):
        if store is None or not store.exists(key):
            return key
        try:
            record = store.read(key)
            ok = bool(intact(record.result))
        except Exception as exc:  # noqa: BLE001 - unreadable record = stale
            log.warning("cached result %s unreadable (%s); recomputing", key, exc)
            record, ok = None, False
        if ok:
            return key
        log.info("cached result %s describes outputs that are gone or changed; recomputing", key)
        if on_stale is not None:
            on_stale(key, record)
        # named after the stale record and the key it lay under: a stale record found under a
        # derived key leads to the next key, never back to the same one
        key = f"{base}~{_fingerprint(record) if record is not None else 'unreadable'}-{digest_of(key)[:8]}"
    return key


@dataclass
class StagePolicy(CachePolicy):
    """Cache policy of one pipeline stage (see module docstring)."""

    stage: str = ""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        base = f"{self.stage}-{stage_digest(task_ctx.task, *inputs.values())}"
        store = getattr(task_ctx, "result_store", None)
        walked: list[tuple[str, Any]] = []
        key = resolve_key(store, base, on_stale=lambda k, record: walked.append((k, record)))
        try:
            self._say_why(task_ctx, store, base, key, inputs, walked)
        except Exception as exc:  # noqa: BLE001 - an explanation never breaks a run
            log.debug("no cache explanation for %s: %s", self.stage, exc)
        return key

    def _say_why(
        self, task_ctx: Any, store: Any, base: str, key: str, inputs: dict[str, Any], walked: list[tuple[str, Any]]
    ) -> None:
        """Log to the run why the stage is not served from the cache; remember this key's parts."""
        from prefect.logging import get_run_logger

        from tasks import _explain

        hit = store is not None and store.exists(key)
        if hit and _explain.known(self.stage, base):
            return  # served from the cache, its parts already in the ledger: no closure walk
        parts = _explain.key_parts(task_ctx.task, inputs)
        if not hit:
            if walked:
                stale_key, record = walked[0]
                kind = type(getattr(record, "result", None)).__name__ if record is not None else "unreadable record"
                line = _explain.stale(self.stage, stale_key, kind)
            else:
                line = _explain.explain(self.stage, parts)
            get_run_logger(task_ctx).info(line)
        _explain.remember(self.stage, base, parts)
