"""``anonymize_folder``: anonymize every image and video under a folder with the champion
model (or given weights), one retried task per file, and publish a markdown report."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from pyroblur.anonymize import AnonymizeOptions, FileResult, Report, Skipped, plan_outputs, resolve_weights
from tasks.anonymize import anonymize_file_task


class AnonymizeFolderParams(BaseModel):
    """The flow's parameters (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    input_dir: Path = Field(description="Folder (searched recursively), or a single image/video")
    output_dir: Path = Field(description="Receives the same tree as input_dir; never inside an input file")
    options: AnonymizeOptions = Field(default_factory=AnonymizeOptions)


class AnonymizeFolderResult(BaseModel):
    """Counts of one run and the full per-file report."""

    written: int
    skipped: int
    report: Report


@flow(name="anonymize_folder", log_prints=False)
def anonymize_folder(params: AnonymizeFolderParams) -> AnonymizeFolderResult:
    """Plan input -> output paths (refusing any that would overwrite an input), then run
    one task per file; a file that still fails after its retries is reported as skipped."""
    logger = get_run_logger()
    plan = plan_outputs(params.input_dir, params.output_dir)
    options = params.options.model_copy(update={"weights": resolve_weights(params.options.weights), "progress": False})
    logger.info("%d file(s) to anonymize with %s", len(plan.items), options.weights)
    report = Report(skipped=list(plan.skipped))
    for src, dst in plan.items:
        state = anonymize_file_task(src, dst, options, return_state=True)
        if state.is_completed():
            result = state.result()
            if isinstance(result, FileResult):
                report.processed.append(result)
            else:
                report.skipped.append(result)
        else:
            reason = state.message or state.name
            report.skipped.append(Skipped(input=src, reason=f"failed after retries: {reason}"))
    create_markdown_artifact(
        key="anonymize-report",
        markdown=report.to_markdown(f"Anonymized {params.input_dir}"),
        description="Files written and skipped by anonymize_folder",
    )
    logger.info("%d written, %d skipped", len(report.processed), len(report.skipped))
    return AnonymizeFolderResult(written=len(report.processed), skipped=len(report.skipped), report=report)
