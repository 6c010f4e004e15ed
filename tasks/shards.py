"""The anonymize flow's orchestration helpers (Prefect-side, no wiring): shard planning, the
window of per-file tasks in flight, and the shard runs' handling through Prefect's client
(create, claim, wait for, read back). ``flows/anonymize.py`` wires them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.deployments import run_deployment
from prefect.states import Cancelled, Completed, Pending
from pydantic import BaseModel, Field

from pyroblur.anonymize import AnonymizeOptions, FileResult, Report, Skipped, anonymize_items
from pyroblur.anonymize.planning import Plan
from pyroblur.config import OrchestrationConfig
from pyroblur.core.errors import PermanentError
from tasks.anonymize import anonymize_file_task
from tasks.remote import GpuStageTimeout, settle_link, wait_for_run

#: How often the parent polls a shard's flow run.
SHARD_POLL_SECONDS = 2.0


class ShardSummary(BaseModel):
    """What one shard did: where it ran and its counts."""

    index: int
    files: int
    bytes: int
    flow_run: str | None = Field(None, description="the flow run created for it (None: none was)")
    ran_here: bool = Field(True, description="run in the parent's own process, not by a worker")
    state: str = Field("Completed", description="final state of the shard's work")
    written: int = 0
    resumed: int = 0
    skipped: int = 0
    error: str | None = None


class AnonymizeFolderResult(BaseModel):
    """Counts of one run and the full per-file report (all shards merged)."""

    written: int
    resumed: int = 0
    skipped: int
    report: Report
    shards: list[ShardSummary] = Field(default_factory=list)


def _absolute(root: Path, path: Path) -> Path:
    """``path`` (relative to ``root``, or absolute) as a normalized absolute path (links kept)."""
    return Path(os.path.abspath(Path(root) / path))


def restrict_plan(plan: Plan, input_dir: Path, files: list[Path]) -> Plan:
    """The part of ``plan`` for ``files`` only; a listed file the plan does not hold (gone, hidden,
    inside the output) is reported as skipped rather than dropped."""
    wanted = {_absolute(input_dir, f): f for f in files}
    items = [(s, d) for s, d in plan.items if Path(os.path.abspath(s)) in wanted]
    skipped = [s for s in plan.skipped if Path(os.path.abspath(s.input)) in wanted]
    found = {Path(os.path.abspath(s)) for s, _ in items} | {Path(os.path.abspath(s.input)) for s in skipped}
    for path, given in wanted.items():
        if path not in found:
            reason = "not found under input_dir" if not path.exists() else "not a file of this job (hidden or output)"
            skipped.append(Skipped(input=path, reason=f"listed in files as {given}: {reason}"))
    return Plan(items=items, skipped=skipped)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def make_shards(items: list[tuple[Path, Path]], shards: int) -> list[list[tuple[Path, Path]]]:
    """Split ``items`` into at most ``shards`` non-empty shards of about equal total size.

    Deterministic (largest file first, ties by path, each to the lightest shard so far, ties to
    the lower index), so a re-run of the same job makes the same shards. Each shard is in path
    order.
    """
    count = max(1, min(shards, len(items)))
    sizes = {src: _size(src) for src, _ in items}
    order = sorted(items, key=lambda item: (-sizes[item[0]], str(item[0])))
    groups: list[list[tuple[Path, Path]]] = [[] for _ in range(count)]
    totals = [0] * count
    for item in order:
        k = min(range(count), key=lambda i: (totals[i], i))
        groups[k].append(item)
        totals[k] += sizes[item[0]]
    return [sorted(g, key=lambda item: str(item[0])) for g in groups if g]


def _run_files(items: list[tuple[Path, Path]], options: AnonymizeOptions, concurrency: int, resume: bool) -> Report:
    """One shard in this process: the library's folder loop (the one ``pyroblur anonymize DIR``
    runs), its step the retried per-file task, at most ``concurrency`` files in flight."""

    def step(src: Path, dst: Path) -> FileResult | Skipped:
        return anonymize_file_task(src, dst, options, resume)

    return anonymize_items(items, step, concurrency=concurrency)


def _summary(index: int, items: list[tuple[Path, Path]], report: Report, **kw: Any) -> ShardSummary:
    return ShardSummary(
        index=index,
        files=len(items),
        bytes=sum(_size(s) for s, _ in items),
        written=len(report.processed),
        resumed=sum(r.resumed for r in report.processed),
        skipped=len(report.skipped),
        **kw,
    )


def _this_run() -> FlowRun:
    """This flow run as the server has it: its own ``deployment_id`` (None when it was called
    directly, also as a subflow of another deployment's run, where ``runtime.deployment``
    would name that one) and its ``job_variables``."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(runtime.flow_run.id))


def _claim(run_id: UUID, why: str) -> bool:
    """Take a shard's flow run away from the pool if no worker has picked it up: propose
    Pending as a worker does (the server lets exactly one party move a run to Pending), then
    cancel it with ``why``. False when a worker got there first."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if run.state is None or run.state.type != StateType.SCHEDULED:
            return False
        if client.set_flow_run_state(run_id, Pending(message=why)).status != SetStateStatus.ACCEPT:
            return False
        client.set_flow_run_state(run_id, Cancelled(message=why), force=True)
        if run.parent_task_run_id is not None:  # the parent's link to it: not a failure
            client.set_task_run_state(run.parent_task_run_id, Completed(message=why), force=True)
        return True


def _child_report(run: FlowRun) -> Report:
    """A finished shard run's report, read from Prefect's result storage."""
    result = run.state.result() if run.state is not None else None
    if not isinstance(result, AnonymizeFolderResult):
        raise PermanentError(
            f"returned {type(result).__name__}, not AnonymizeFolderResult",
            hint="do all gpu workers run the same code and share Prefect's result storage?",
        )
    return result.report


def _wait_for_shard(
    run_id: UUID, orch: OrchestrationConfig, label: str, subject: str
) -> tuple[FlowRun, Report | None, str | None]:
    """Wait (bounded) for a shard's flow run: the run, its report, or why there is none."""
    try:
        run = wait_for_run(run_id, orch, label=label, subject=subject)
    except GpuStageTimeout as exc:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        settle_link(run, None)
        return run, None, str(exc)
    settle_link(run, None)
    if run.state is None or not run.state.is_completed():
        name = run.state.name if run.state else "unknown"
        return run, None, f"ended {name}: {run.state.message if run.state else ''}".rstrip(": ")
    try:
        return run, _child_report(run), None
    except Exception as exc:  # noqa: BLE001 - an unreadable result fails this shard only
        return run, None, f"result unreadable: {exc}"


def _fan_out(
    params: Any,  # flows.anonymize.AnonymizeFolderParams
    options: AnonymizeOptions,
    shards: list[list[tuple[Path, Path]]],
    this_run: FlowRun,
    report: Report,
) -> list[ShardSummary]:
    """Run shard 1 here and the others as flow runs of ``this_run``'s deployment, with its job
    variables; merge every shard's report into ``report`` (a failed shard's files become
    skipped entries naming it)."""
    log = get_run_logger()
    n = len(shards)
    parent = this_run.name or "this run"
    deployment_id, job_variables = this_run.deployment_id, this_run.job_variables or None
    children: dict[int, FlowRun] = {}
    local = [1]
    for k, items in enumerate(shards[1:], start=2):
        child = params.model_copy(
            update={
                "options": options,
                "shards": 1,
                "files": [
                    s.relative_to(params.input_dir) if s.is_relative_to(params.input_dir) else s for s, _ in items
                ],
            }
        )
        try:
            children[k] = run_deployment(
                deployment_id,
                parameters={"params": child.model_dump(mode="json")},
                flow_run_name=f"{parent}-shard-{k}of{n}",
                job_variables=job_variables,
                timeout=0,
            )
        except Exception as exc:  # noqa: BLE001 - never lose a shard: run it here instead
            log.warning("could not create a flow run for shard %d/%d (%s): it runs in this process", k, n, exc)
            local.append(k)
    names = ", ".join(f"{k} as '{run.name}'" for k, run in children.items()) or "none"
    log.info("%d shards: shard 1 (%d files) runs here; flow runs of this deployment: %s", n, len(shards[0]), names)

    summaries: dict[int, ShardSummary] = {}

    def run_here(k: int, flow_run: str | None = None) -> None:
        part = _run_files(shards[k - 1], options, params.concurrency, params.resume)
        summaries[k] = _summary(k, shards[k - 1], part, flow_run=flow_run)
        _merge(report, part)

    for k in local:
        run_here(k)
    # Shards no worker has started yet (one gpu worker, or the pool's slots all held): run here.
    for k in reversed(list(children)):
        why = f"shard {k}/{n} ran in the parent flow run '{parent}': no worker had started it"
        if _claim(children[k].id, why):
            log.info("%s (%d files)", why, len(shards[k - 1]))
            run_here(k, children.pop(k).name)

    orch = OrchestrationConfig(
        poll_seconds=SHARD_POLL_SECONDS,
        stage_start_timeout_minutes=params.shard_start_timeout_minutes,
        stage_timeout_hours=params.shard_timeout_hours,
    )
    for k, created in children.items():
        items = shards[k - 1]
        run, part, error = _wait_for_shard(
            created.id, orch, f"shard {k}/{n}", f"anonymize shards of flow run '{parent}'"
        )
        state = run.state.name if run.state else "unknown"
        if part is None:
            log.error("shard %d/%d (flow run '%s', %d files): %s", k, n, run.name, len(items), error)
            reason = f"shard {k}/{n} (flow run '{run.name}') {error}"
            part = Report(skipped=[Skipped(input=src, reason=reason) for src, _ in items])
            summaries[k] = _summary(k, items, Report(), flow_run=run.name, ran_here=False, state=state, error=error)
        else:
            summaries[k] = _summary(k, items, part, flow_run=run.name, ran_here=False, state=state)
            log.info(
                "shard %d/%d (flow run '%s'): %d written, %d skipped",
                k,
                n,
                run.name,
                len(part.processed),
                len(part.skipped),
            )
        _merge(report, part)
    return [summaries[k] for k in sorted(summaries)]


def _merge(report: Report, part: Report) -> None:
    report.processed.extend(part.processed)
    report.skipped.extend(part.skipped)


def _shards_markdown(shards: list[ShardSummary]) -> str:
    lines = [
        "",
        "## Shards",
        "",
        "| shard | flow run | state | files | MB | written | already done | skipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in shards:
        where = "this run" if s.ran_here else f"`{s.flow_run}`"
        lines.append(
            f"| {s.index}/{len(shards)} | {where} | {s.state} | {s.files} | {s.bytes / 1e6:.1f} "
            f"| {s.written} | {s.resumed} | {s.skipped} |"
        )
    return "\n".join(lines) + "\n"
