"""``anonymize_folder``: anonymize every image and video under a folder with the champion
model (or given weights), one retried task per file with a bounded number in flight, and
publish a markdown report. Run again after an interruption, it skips every file whose output
and audit record already match (``resume``)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, as_completed, wait
from pydantic import BaseModel, ConfigDict, Field

from pyroblur.anonymize import AnonymizeOptions, FileResult, Report, Skipped, plan_outputs, resolve_weights
from tasks.anonymize import anonymize_file_task


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


class AnonymizeFolderResult(BaseModel):
    """Counts of one run and the full per-file report."""

    written: int
    resumed: int = 0
    skipped: int
    report: Report


def _collect(future: PrefectFuture, src: Path, report: Report) -> None:
    future.wait()
    state = future.state
    if state.is_completed():
        # From the future, not the state: results are not persisted, so only the future
        # (same process) still holds the value.
        result = future.result()
        (report.processed if isinstance(result, FileResult) else report.skipped).append(result)
    else:
        reason = state.message or state.name
        report.skipped.append(Skipped(input=src, reason=f"failed after retries: {reason}"))


@flow(name="anonymize_folder", log_prints=False)
def anonymize_folder(params: AnonymizeFolderParams) -> AnonymizeFolderResult:
    """Plan input -> output paths (refusing any that would overwrite an input), then run
    one task per file, at most ``concurrency`` at a time; a file that still fails after its
    retries is reported as skipped."""
    logger = get_run_logger()
    plan = plan_outputs(params.input_dir, params.output_dir)
    # Resolved once here, so every task (and its audit record) uses the same champion.
    needs_model = params.options.face_detector != "centerface" or 1 in params.options.class_ids
    weights = resolve_weights(params.options.weights) if needs_model else None
    options = params.options.model_copy(update={"weights": weights, "progress": False})
    logger.info("%d file(s) to anonymize with %s", len(plan.items), options.weights)
    report = Report(skipped=list(plan.skipped))
    in_flight: dict[PrefectFuture, Path] = {}
    for src, dst in plan.items:
        if len(in_flight) >= params.concurrency:
            # A sliding window: the next file starts as soon as any one finishes.
            future = next(as_completed(list(in_flight)))
            _collect(future, in_flight.pop(future), report)
        in_flight[anonymize_file_task.submit(src, dst, options, params.resume)] = src
    wait(list(in_flight))
    for future, src in in_flight.items():
        _collect(future, src, report)
    report.processed.sort(key=lambda r: str(r.input))
    create_markdown_artifact(
        key="anonymize-report",
        markdown=report.to_markdown(f"Anonymized {params.input_dir}"),
        description="Files written and skipped by anonymize_folder",
    )
    resumed = sum(r.resumed for r in report.processed)
    logger.info("%d written (%d already done), %d skipped", len(report.processed), resumed, len(report.skipped))
    return AnonymizeFolderResult(
        written=len(report.processed), resumed=resumed, skipped=len(report.skipped), report=report
    )
