"""Why a stage runs instead of being ``Cached``, said in the run's logs.

The cache key of a stage (tasks/_cache.py) is one digest: it tells that something changed, not
what. Next to the key, this module keeps a small ledger per stage (``<data root>/cache-ledger/
<stage>.json``, the last :data:`LEDGER_SIZE` keys) of what went into each key, part by part:
every config key of the stage's section (``train.epochs``), every upstream manifest's digest,
other inputs, and the code (the meaning of each project definition the task reaches, as the key
itself counts it: ``pyroblur.core.codegraph.function_closure``). On a
miss, the parts are compared with the closest recorded key, and one line names the stage and
why: the config keys that changed (old -> new value), the upstream data, the code modules, or
that the cached outputs are gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pyroblur.core.hashing import digest_of
from pyroblur.core.io import write_atomic
from pyroblur.core.settings import get_paths

log = logging.getLogger(__name__)

#: Keys remembered per stage (each a few KB of parts).
LEDGER_SIZE = 64
#: Values up to this many characters are shown as they are; longer ones by a short digest.
SHOWN = 60


def _section_names() -> dict[type, str]:
    """Config model -> its section name in the pipeline config (``TrainConfig`` -> ``train``)."""
    from pyroblur.config import PipelineConfig

    return {f.annotation: name for name, f in PipelineConfig.model_fields.items() if isinstance(f.annotation, type)}


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else f"#{digest_of(value)[:12]}"


def _flatten(prefix: str, value: Any, out: dict[str, str], sections: dict[type, str]) -> None:
    from pyroblur.manifests import Manifest

    if isinstance(value, Manifest):
        out[f"upstream:{prefix} ({type(value).__name__})"] = value.digest[:16]
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _flatten(f"{prefix}.{name}", getattr(value, name), out, sections)
    elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        for i, item in enumerate(value):
            _flatten(f"{prefix}[{i}]", item, out, sections)
        out[f"config:{prefix}.length"] = str(len(value))
    else:
        out[f"config:{prefix}"] = _shown(value)


def key_parts(task: Any, inputs: dict[str, Any]) -> dict[str, str]:
    """What went into a stage's key, part by part (see module docstring)."""
    from pyroblur.core.codegraph import function_closure

    parts: dict[str, str] = {}
    sections = _section_names()
    for name, value in inputs.items():
        # a config section is named as in the config file (train.epochs), not by the parameter
        prefix = sections.get(type(value), name)
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            prefix = "sources" if name in ("sources", "cfg") else name
        _flatten(prefix, value, parts, sections)
    try:
        for name, meaning in function_closure(task).items:  # ("module:definition", its meaning)
            parts[f"code:{name}"] = hashlib.sha256(meaning.encode()).hexdigest()[:16]
    except Exception as exc:  # noqa: BLE001 - an explanation never breaks a run
        parts["code:?"] = f"unknown ({type(exc).__name__})"
    return parts


def _ledger(stage: str) -> Path:
    return get_paths().root / "cache-ledger" / f"{stage}.json"


def _read(stage: str) -> list[dict[str, Any]]:
    try:
        entries = json.loads(_ledger(stage).read_text())
        return entries if isinstance(entries, list) else []
    except (OSError, ValueError):
        return []


def known(stage: str, key: str) -> bool:
    """Whether the ledger already holds ``key``'s parts (a cached re-run then skips computing
    them: walking a stage's code closure for its parts costs seconds)."""
    return any(e.get("key") == key for e in _read(stage))


def remember(stage: str, key: str, parts: dict[str, str]) -> None:
    """Record ``key``'s parts as the stage's newest entry (bounded, best effort)."""
    entries = [e for e in _read(stage) if e.get("key") != key]
    entries.append({"key": key, "parts": parts})
    try:
        write_atomic(_ledger(stage), json.dumps(entries[-LEDGER_SIZE:]), durable=False)
    except OSError as exc:
        log.debug("cache ledger of %s not written: %s", stage, exc)


def _module_path(part: str) -> str:
    """``code:pyroblur.training.trainer:train_model`` -> ``pyroblur/training/trainer.py:train_model``."""
    module, _, name = part.removeprefix("code:").partition(":")
    path = module.replace(".", "/") + ".py"
    if not name or name.startswith("<external>"):
        return path
    return f"{path} (its imports)" if name == "<import>" else f"{path}:{name}"


def explain(stage: str, parts: dict[str, str]) -> str:
    """Why ``stage`` runs: its parts against the closest recorded key's."""
    entries = _read(stage)
    if not entries:
        return f"{stage} runs: no earlier run of this stage is recorded under this data root (first run)"
    closest = max(entries, key=lambda e: sum(e["parts"].get(k) == v for k, v in parts.items()))
    old = closest["parts"]
    config, upstream, code = [], [], []
    for k in sorted(set(parts) | set(old)):
        before, after = old.get(k, "(none)"), parts.get(k, "(none)")
        if before == after:
            continue
        kind, _, name = k.partition(":")
        if kind == "config":
            config.append(f"{name} {before} -> {after}")
        elif kind == "upstream":
            upstream.append(name)
        elif kind == "code" and _module_path(k) not in code:
            code.append(_module_path(k))
    reasons = []
    if config:
        reasons.append("config key " + ", ".join(config))
    if upstream:
        reasons.append("upstream data changed: " + ", ".join(upstream))
    if code:
        reasons.append("code changed: " + ", ".join(code))
    if not reasons:  # e.g. a new key scheme; still say something true
        reasons.append("its key changed without a difference this ledger can name")
    return f"{stage} runs (not cached): " + "; ".join(reasons)


def stale(stage: str, key: str, manifest_type: str) -> str:
    """The line for a cached result whose outputs are gone or changed."""
    return (
        f"{stage} runs (not cached): outputs gone: the cached {manifest_type} under {key[:24]} describes "
        "outputs that were deleted or changed since"
    )
