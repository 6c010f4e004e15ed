"""``anonymize_folder``: anonymize every image and video under a folder with the champion
model (or given weights), one retried task per file with a bounded number in flight, and
publish a markdown report. Run again after an interruption, it skips every file whose output
and audit record already match (``resume``).

Fan-out (``shards`` > 1): the planned files are split into shards balanced by size (the same
shards on every run of the same job). A run of a deployment (``anonymize`` on the gpu pool)
sends every shard but the first to the *same* deployment as a flow run of its own (``files``:
that shard's list, ``shards=1``, the weights it resolved), so each free gpu worker takes one;
the first shard runs here, because this run already holds a gpu slot. A child no worker has
started by the time this run is done with its own shard is taken over and run here (so one gpu
worker, or a full pool, never deadlocks the job). The children are waited for with the GPU
stage's bounded wait (``tasks.remote.wait_for_run``), their reports merged into this run's
artifact, and a failed child fails this run naming the shard, after the other shards' outputs
are written. Called directly (no deployment: the ``pyroblur`` CLI, ``python -m``, a test), every
shard runs in this process, which the log says.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pyroblur.anonymize import AnonymizeOptions, Report, plan_outputs, with_resolved_weights
from pyroblur.core.errors import PermanentError
from tasks.shards import (
    AnonymizeFolderResult,
    ShardSummary,
    _absolute,
    _fan_out,
    _merge,
    _run_files,
    _shards_markdown,
    _this_run,
    make_shards,
    restrict_plan,
)


class AnonymizeFolderParams(BaseModel):
    """The flow's parameters (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    input_dir: Path = Field(description="Folder (searched recursively), or a single image/video")
    output_dir: Path = Field(description="Receives the same tree as input_dir; never inside an input file")
    options: AnonymizeOptions = Field(default_factory=AnonymizeOptions)
    concurrency: int = Field(
        1, ge=1, le=16, description="files in flight at once in this worker (each holds its own model)"
    )
    resume: bool = Field(True, description="skip files whose output and audit record already match")
    shards: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "split the files into this many shards balanced by size; a deployment run sends every shard "
            "but the first to the same deployment (one flow run per shard, so each free gpu worker takes "
            "one). Set it to the number of gpu workers. Called directly: all shards run in this process"
        ),
    )
    files: list[Path] | None = Field(
        None,
        description=(
            "only these files (relative to input_dir, or absolute paths under it); empty: every file "
            "under input_dir. A run with shards sets it for each shard's flow run"
        ),
    )
    shard_start_timeout_minutes: float = Field(
        60.0, gt=0, description="fail a shard whose flow run no gpu worker has started in this time"
    )
    shard_timeout_hours: float = Field(
        48.0, gt=0, description="fail a shard whose flow run has not finished in this time"
    )

    @model_validator(mode="after")
    def check_files_under_input(self) -> AnonymizeFolderParams:
        """Every entry of ``files`` must name a path under ``input_dir`` (checked on the names,
        without following links, as the plan does): a shard never reaches outside its job."""
        if not self.files:  # the UI's form sends [] for a list left empty
            self.files = None
            return self
        root = Path(os.path.abspath(self.input_dir))
        outside = [str(f) for f in self.files if not _absolute(self.input_dir, f).is_relative_to(root)]
        if outside:
            raise ValueError(f"files outside input_dir {self.input_dir}: {', '.join(outside[:5])}")
        return self


class ShardsFailed(PermanentError):
    """One or more shards' flow runs failed, crashed, were cancelled or timed out; the other
    shards' outputs are written and a re-run of the same job redoes only what is missing."""


@flow(name="anonymize_folder", log_prints=False, persist_result=True)
def anonymize_folder(params: AnonymizeFolderParams) -> AnonymizeFolderResult:
    """Plan input -> output paths (refusing any that would overwrite an input), then run
    one task per file, at most ``concurrency`` at a time; a file that still fails after its
    retries is reported as skipped. With ``shards`` > 1 in a deployment run, the files are
    fanned out over the deployment's work pool (see the module's docstring).

    Raises:
        ShardsFailed: a shard's flow run failed, crashed, was cancelled or timed out (the
            report and the other shards' outputs are written first).
    """
    logger = get_run_logger()
    plan = plan_outputs(params.input_dir, params.output_dir)
    if params.files is not None:
        plan = restrict_plan(plan, params.input_dir, params.files)
    # Resolved once here, so every task (and its audit record, and every shard) uses the same champion.
    options = with_resolved_weights(params.options).model_copy(update={"progress": False})
    logger.info("%d file(s) to anonymize with %s", len(plan.items), options.weights)
    report = Report(skipped=list(plan.skipped))
    shards = make_shards(plan.items, params.shards)
    this_run = _this_run() if len(shards) > 1 else None
    summaries: list[ShardSummary] = []
    if this_run is not None and this_run.deployment_id is not None:
        summaries = _fan_out(params, options, shards, this_run, report)
    else:
        if len(shards) > 1:
            logger.info(
                "shards=%d: this run is not a deployment run (called directly, e.g. by the pyroblur CLI), "
                "so all %d shards run in this process",
                params.shards,
                len(shards),
            )
        _merge(report, _run_files(plan.items, options, params.concurrency, params.resume))
    report.processed.sort(key=lambda r: str(r.input))
    markdown = report.to_markdown(f"Anonymized {params.input_dir}")
    create_markdown_artifact(
        key="anonymize-report",
        markdown=markdown + (_shards_markdown(summaries) if summaries else ""),
        description="Files written and skipped by anonymize_folder",
    )
    resumed = sum(r.resumed for r in report.processed)
    logger.info("%d written (%d already done), %d skipped", len(report.processed), resumed, len(report.skipped))
    failed = [s for s in summaries if s.error]
    if failed:
        named = "; ".join(
            f"shard {s.index}/{len(summaries)} (flow run '{s.flow_run}', {s.files} files): {s.error}" for s in failed
        )
        raise ShardsFailed(
            f"{len(failed)} of {len(summaries)} shards failed: {named}. The other shards' "
            f"{len(report.processed)} outputs are written",
            subject=str(params.input_dir),
            hint="fix the cause (see the shard's flow run) and run the same job again: finished files are skipped",
        )
    return AnonymizeFolderResult(
        written=len(report.processed), resumed=resumed, skipped=len(report.skipped), report=report, shards=summaries
    )
