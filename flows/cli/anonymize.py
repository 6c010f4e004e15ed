"""The ``pyroblur anonymize`` command, generated from :class:`AnonymizeOptions` (the one
declaration of the options: names, types, defaults, ranges and help all come from it).

Exit codes: 0 all files written; 1 nothing could start (no model, missing input, an OUTPUT
that would overwrite an input); 2 bad arguments; 3 finished, but some files were skipped
(listed with their reason), a video was truncated (frames written vs expected), or under
``--strict`` the residual check still found something.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import click
import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.table import Table

from flows.cli.app import clean_partials
from pyroblur import CLASSES
from pyroblur.anonymize.api import (
    AnonymizeOptions,
    NoModelError,
    Report,
    UnsafeOutputError,
    anonymize_path,
)
from pyroblur.core.errors import PermanentError, PyroblurError

logger = logging.getLogger(__name__)

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_SKIPPED",
    "anonymize_command",
    "cli_options",
    "make_anonymize_command",
    "options_from_cli",
]

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
        if r.output.suffix.lower() != r.input.suffix.lower():
            console.print(f"[bold]Note:[/] {r.input} written as {r.output} ({r.input.suffix} cannot hold H.264 video).")
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


#: Presentation only: the panel of ``--help`` each option is listed in (default: Run) and the
#: flags that differ from ``--<field-name>``. Names, types, defaults, ranges and help texts all
#: come from :class:`AnonymizeOptions`, the one declaration of the options.
_PANEL = {
    **dict.fromkeys(
        (
            "weights",
            "face_detector",
            "conf_face",
            "conf_plate",
            "classes",
            "tiles",
            "tile_every",
            "batch_size",
            "device",
            "imgsz",
        ),
        _DET,
    ),
    **dict.fromkeys(
        ("mode", "ellipse", "enlarge", "feather", "blur_strength", "mosaic_cells", "color", "memory_frames"), _HIDE
    ),
    "half": _DET,
    "fill_scale": _HIDE,
}
_FLAGS: dict[str, tuple[str, ...]] = {"weights": ("--model", "-m"), "ellipse": ("--ellipse/--box",)}
_AUTO_ON_OFF = {"auto": None, "on": True, "off": False}


@dataclass(frozen=True)
class CliOption:
    """How one field of :class:`AnonymizeOptions` appears on the command line."""

    name: str
    annotation: Any
    info: Any  # typer.Option(...)
    to_model: Callable[[Any], Any]


def _help(field: FieldInfo, extra: str = "") -> str:
    text = (field.description or "").strip()
    text = text.rstrip(".") + "." if text else ""
    # rich reads an unescaped [ ... ] as markup and drops it
    return (text + extra).replace("[", "\\[")


def _range(field: FieldInfo, kind: type) -> click.ParamType:
    bounds: dict[str, Any] = {}
    for m in field.metadata:
        for attr, key, is_open in (
            ("ge", "min", False),
            ("gt", "min", True),
            ("le", "max", False),
            ("lt", "max", True),
        ):
            if getattr(m, attr, None) is not None:
                bounds[key] = getattr(m, attr)
                if is_open:
                    bounds[f"{key}_open"] = True
    if kind is int:
        return click.IntRange(**{k: v for k, v in bounds.items() if not k.endswith("_open")})
    return click.FloatRange(**bounds)


def cli_option(name: str, field: FieldInfo) -> CliOption:
    """The typer option of field ``name``: its type, default, range and help from the field."""
    ann = field.annotation
    optional = type(None) in get_args(ann) and get_origin(ann) in (Union, UnionType)
    inner = next((a for a in get_args(ann) if a is not type(None)), ann) if optional else ann
    default = field.get_default(call_default_factory=True)
    flag = "--" + name.replace("_", "-")
    decls = _FLAGS.get(name, (flag,))
    panel = _PANEL.get(name, _RUN)
    same: Callable[[Any], Any] = lambda v: v  # noqa: E731
    if name == "color":  # OpenCV's BGR in the model, R,G,B for people
        shown = ",".join(str(v) for v in reversed(default))
        info = typer.Option(
            shown, *decls, help="Fill colour for --mode solid, as R,G,B (0-255).", rich_help_panel=panel
        )
        return CliOption(name, str, info, _parse_color)
    if get_origin(inner) is list and get_origin(get_args(inner)[0]) is Literal:
        choices = ", ".join(get_args(get_args(inner)[0]))
        extra = f" Comma-separated or repeated: {choices}. Default: all."
        info = typer.Option(None, *decls, help=_help(field, extra), rich_help_panel=panel, show_default=False)
        return CliOption(name, list[str] | None, info, _parse_classes)
    if inner is bool and optional:  # tri-state: None means "decided for the device"
        info = typer.Option(
            "auto", *decls, help=_help(field), rich_help_panel=panel, click_type=click.Choice(list(_AUTO_ON_OFF))
        )
        return CliOption(name, str, info, _AUTO_ON_OFF.__getitem__)
    if inner is bool:
        if name not in _FLAGS:
            decls = (f"{flag}/--no-{flag[2:]}",)
        return CliOption(name, bool, typer.Option(default, *decls, help=_help(field), rich_help_panel=panel), same)
    if inner in (int, float):
        info = typer.Option(default, *decls, help=_help(field), rich_help_panel=panel, click_type=_range(field, inner))
        return CliOption(name, inner | None if optional else inner, info, same)
    if get_origin(inner) is Literal:
        info = typer.Option(
            default, *decls, help=_help(field), rich_help_panel=panel, click_type=click.Choice(list(get_args(inner)))
        )
        return CliOption(name, str, info, same)
    if isinstance(inner, type) and issubclass(inner, Enum | str | Path):
        info = typer.Option(default, *decls, help=_help(field), rich_help_panel=panel)
        return CliOption(name, inner | None if optional else inner, info, same)
    raise TypeError(
        f"AnonymizeOptions.{name}: no command-line form for type {ann!r}; add one in flows/cli/anonymize.py:cli_option"
    )


def cli_options(model: type[AnonymizeOptions] = AnonymizeOptions) -> dict[str, CliOption]:
    """Every field of ``model`` as a command-line option, in declaration order."""
    return {name: cli_option(name, field) for name, field in model.model_fields.items()}


def options_from_cli(values: dict[str, Any], model: type[AnonymizeOptions] = AnonymizeOptions) -> AnonymizeOptions:
    """The options model from the parsed command line (``--strict`` implies ``--verify``).

    Raises:
        typer.BadParameter: one line per option the model refuses.
    """
    opts = cli_options(model)
    fields = {name: opts[name].to_model(value) for name, value in values.items()}
    fields["verify"] = bool(fields.get("verify") or fields.get("strict"))
    try:
        return model(**fields)
    except ValidationError as exc:  # one line per bad option, not pydantic's dump
        bad = "; ".join(
            f"{opts[str(e['loc'][0])].info.param_decls[0].split('/')[0]}: {e['msg']}"
            for e in exc.errors()
            if e["loc"] and str(e["loc"][0]) in opts
        )
        raise typer.BadParameter(bad or str(exc).splitlines()[0]) from None


def make_anonymize_command(model: type[AnonymizeOptions] = AnonymizeOptions) -> Callable[..., None]:
    """The ``pyroblur anonymize`` command for ``model``: INPUT, OUTPUT, one option per field of
    the model, and ``--resume``."""
    opts = cli_options(model)

    def anonymize_command(input: Path, output: Path, resume: bool = False, **values: Any) -> None:
        """Hide faces and license plates in an image, a video, or a folder tree.

        Videos keep their frame rate, size and audio; a box missed for a few frames stays
        hidden (tracks fill the gap, --memory-frames). Outputs are written under a temporary
        name and renamed when complete, and never overwrite inputs.

        Exit codes: 0 all written, 1 could not start, 2 bad arguments, 3 some files skipped
        (each listed with its reason), a truncated video, or a --strict residual found.
        """
        _run(input, output, resume, options_from_cli(values, model))

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "input",
            kw,
            annotation=Path,
            default=typer.Argument(..., help="Image, video, or folder (searched recursively).", show_default=False),
        ),
        inspect.Parameter(
            "output",
            kw,
            annotation=Path,
            default=typer.Argument(
                ...,
                help="Output file, or folder that receives the same tree as INPUT. Never an input.",
                show_default=False,
            ),
        ),
        *(inspect.Parameter(o.name, kw, annotation=o.annotation, default=o.info) for o in opts.values()),
        inspect.Parameter(
            "resume",
            kw,
            annotation=bool,
            default=typer.Option(
                False,
                "--resume",
                help="Skip files whose output and audit record already match (an interrupted folder job).",
                rich_help_panel=_RUN,
            ),
        ),
    ]
    anonymize_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    anonymize_command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return anonymize_command


def _output_folder_problem(input: Path, output: Path) -> str | None:
    """Why OUTPUT cannot be used: it may create one new folder (``results/``), not a tree
    under a root that does not exist (``/mnt/usb/...`` with the disk not mounted would
    silently fill the system disk instead)."""
    folder = output if (input.is_dir() or output.is_dir() or output.suffix == "") else output.parent
    if folder.exists() or folder.parent.exists():
        return None
    missing = folder.parent
    while not missing.parent.exists():
        missing = missing.parent
    return f"{missing} does not exist; create it first (or check that the disk is mounted)"


def _prepare_output(input: Path, output: Path) -> None:
    """Refuse an OUTPUT under a root that does not exist, and remove the temporary files an
    interrupted run left in OUTPUT (the whole tree for a folder; for one output file only its
    own, never the rest of the folder it lies in).

    Raises:
        PermanentError: naming OUTPUT and the missing folder.
    """
    problem = _output_folder_problem(input, output)
    if problem:
        raise PermanentError(problem, subject=f"OUTPUT {output}")
    if input.is_dir() or output.is_dir() or output.suffix == "":
        clean_partials(output)
    else:
        clean_partials(output.parent, of=output)


def _run(input: Path, output: Path, resume: bool, options: AnonymizeOptions) -> None:
    console = Console(stderr=True)
    _prepare_output(Path(input), Path(output))
    device = options.device
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


anonymize_command = make_anonymize_command()
