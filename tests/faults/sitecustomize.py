"""Fault injection for the tests, installed from outside the product.

The tests put this folder on the ``PYTHONPATH`` of every process they start (``tests/conftest.py``),
so Python imports this module at start-up (``site`` imports ``sitecustomize``). It does nothing
unless ``PYROBLUR_INJECT_FAILURE`` is set, e.g. ``"curate:transient,train:permanent"``:

* ``<stage>:transient`` raises a :class:`~pyroblur.core.errors.TransientError` on the first
  attempt of that pipeline task only (its retry succeeds);
* ``<stage>:permanent`` raises a :class:`~pyroblur.core.errors.PermanentError` on every attempt
  (never retried); ``*`` as the stage applies to every task;
* ``anonymize`` is the per-file task of the anonymize flow; ``anonymize_shard`` fails a shard run
  of the anonymize flow (a run given its ``files``) before it plans anything.

It wraps the task functions when their modules are imported (an import hook), so the product
reads no switch of its own. The wrapper keeps ``__wrapped__``: Prefect's parameter binding and
the cache key (``inspect.unwrap``) see the real function.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

ENV = "PYROBLUR_INJECT_FAILURE"
PIPELINE_STAGES = ("download", "curate", "balance_split", "export", "train", "benchmark", "promote")


def _modes(stage: str) -> list[str]:
    out = []
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        name, _, mode = item.partition(":")
        if name in (stage, "*"):
            out.append(mode)
    return out


def inject(stage: str, attempt: int) -> None:
    """Raise the failure ``PYROBLUR_INJECT_FAILURE`` asks for in ``stage`` at ``attempt``, if any."""
    from pyroblur.core.errors import PermanentError, TransientError

    for mode in _modes(stage):
        message = f"injected {mode} failure in stage '{stage}' (attempt {attempt})"
        if mode == "permanent":
            raise PermanentError(message, hint=f"test fault injection {ENV}")
        if mode == "transient" and attempt <= 1:
            raise TransientError(message)


def _wrap_task(task: Any, stage: str) -> None:
    fn = task.fn

    @functools.wraps(fn)
    def with_fault(*args: Any, **kwargs: Any) -> Any:
        from prefect import runtime

        inject(stage, runtime.task_run.run_count)
        return fn(*args, **kwargs)

    task.fn = with_fault


def _patch_pipeline(module: Any) -> None:
    for stage in PIPELINE_STAGES:
        _wrap_task(getattr(module, stage), stage)


def _patch_anonymize_tasks(module: Any) -> None:
    _wrap_task(module.anonymize_file_task, "anonymize")


def _patch_shards(module: Any) -> None:
    # Patched where it is defined, before flows/anonymize.py binds it: a deployment run loads
    # the flow from its file path under another module name, which no hook on
    # "flows.anonymize" would see.
    restrict = module.restrict_plan  # called only by shard runs (a run given its files)

    @functools.wraps(restrict)
    def failing_restrict(*args: Any, **kwargs: Any) -> Any:
        inject("anonymize_shard", 1)
        return restrict(*args, **kwargs)

    module.restrict_plan = failing_restrict


PATCHES = {
    "tasks.pipeline": _patch_pipeline,
    "tasks.anonymize": _patch_anonymize_tasks,
    "tasks.shards": _patch_shards,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``PATCHES[name]`` on a module right after it is executed."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


# Always installed: a script may set PYROBLUR_INJECT_FAILURE after start-up (read per call).
sys.meta_path.insert(0, _PatchOnImport())
