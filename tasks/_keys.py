"""The content digest of a stage: its code closure plus its inputs.

Task bodies use it to name their outputs (run folder, export folder, dataset stamps); the cache
policy (tasks/_cache.py) keys on the same digest. Kept apart from the policy so that a task's own
code closure does not include the cache machinery's imports.
"""

from __future__ import annotations

from typing import Any

from pyroblur.core.codegraph import code_digest
from pyroblur.core.hashing import digest_of


def stage_digest(task: Any, *inputs: Any) -> str:
    """Digest of ``task`` (a Prefect task or a plain function): the name, the source of what it
    runs (its body, same-module helpers, every project module reached through imports) and the
    inputs (pydantic models and manifests hash by content, see ``digest_of``)."""
    name = getattr(task, "name", None) or getattr(task, "__name__", "?")
    return digest_of(name, code_digest(task), *inputs)
