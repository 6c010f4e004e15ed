"""``pyroblur`` command line: one command per stage, calling the same flows the deployments run."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from pyroblur.config import ConfigError, PipelineConfig, load_config

app = typer.Typer(
    help="PyroBlur: train a face + license-plate detector with Prefect and FiftyOne, and anonymize with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Pipeline config YAML (see configs/).", show_default=True)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value, e.g. --set train.epochs=5 (repeatable)."),
]


def _load(config: Path, overrides: list[str] | None) -> PipelineConfig:
    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    set_: SetOpt = None,
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="Also write the run summary (stage states, metrics) here.")
    ] = None,
    until: Annotated[
        str,
        typer.Option(
            help="Stop after this stage: download, curate, balance_split, export, train or promote (all).",
        ),
    ] = "promote",
) -> None:
    """Run the whole training pipeline (download, curate, balance+split, export, train, benchmark).

    Each stage is a cached Prefect task: running again with nothing changed returns cached
    results; changing one config section re-runs that stage and the ones after it.
    """
    cfg = _load(config, set_)
    from pyroblur.core.runtime import configure_environment

    configure_environment()
    from typing import get_args

    from flows.training import Stage, training_pipeline

    if until not in get_args(Stage):
        typer.secho(f"error: --until must be one of {', '.join(get_args(Stage))}, got '{until}'", fg="red", err=True)
        raise typer.Exit(2)
    try:
        result = training_pipeline(cfg, until=until)
    except Exception as exc:  # noqa: BLE001 - the flow already logged the traceback
        typer.secho(f"pipeline failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo("\nstage states:")
    for stage, state in result.states.items():
        typer.echo(f"  {stage:<14} {state}")
    from pyroblur.evaluation.benchmark import to_markdown

    if result.benchmark is not None:
        typer.echo("\n" + to_markdown(result.benchmark))
    if result.promotion is not None:
        verdict = "promoted" if result.promotion.promoted else "not promoted"
        typer.echo(f"Promotion: {verdict}: {result.promotion.reason}")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(result.model_dump(), indent=2))


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="Config YAML to validate.")]) -> None:
    """Validate a config file and print it with every default filled in."""
    cfg = _load(config, None)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@app.command()
def download(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    set_: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List URLs, sizes and destinations; download nothing.")
    ] = False,
) -> None:
    """Download (or generate) every source of the config into the data root."""
    cfg = _load(config, set_)
    from pyroblur.core.settings import get_paths
    from pyroblur.data.sources import fetch_source, plan_source

    raw = get_paths().raw
    if dry_run:
        total = 0
        for src in cfg.sources:
            items = plan_source(src, raw / src.name)
            if not items:
                typer.echo(f"[{src.name}] ({src.kind}) nothing to download")
            for it in items:
                size, approx = getattr(it, "size", None), getattr(it, "approx_size", None)
                total += size or approx or 0
                size_txt = f"{size:,} B" if size else f"~{approx:,} B (approximate)" if approx else "size unknown"
                typer.echo(f"[{src.name}] {it.url}\n    {size_txt} -> {it.dest}")
        typer.echo(f"total expected: ~{total:,} B")
        return
    for src in cfg.sources:
        records = fetch_source(src, raw / src.name)
        typer.echo(f"[{src.name}] {len(records)} images")


@app.command("app")
def open_app(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    dataset: Annotated[str | None, typer.Option(help="FiftyOne dataset (default: curation.dataset_name).")] = None,
    view: Annotated[
        str | None, typer.Option(help="Open a saved view: curated, rejected, duplicates, train, val or test.")
    ] = None,
    address: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the FiftyOne App.")] = 5151,
) -> None:
    """Open the FiftyOne App on the curated dataset (saved views: curated, rejected, duplicates, train, val, test)."""
    name = dataset or _load(config, None).curation.dataset_name
    from pyroblur.core.runtime import configure_environment

    configure_environment()
    from pyroblur.curation.app import AppError, serve

    try:
        session = serve(name, address=address, port=port, view=view)
    except AppError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"FiftyOne App serving '{name}' at http://{address}:{port} (Ctrl+C to stop)")
    session.wait(-1)


def _register_optional_commands() -> None:
    try:
        from pyroblur.anonymize.cli import anonymize_command
    except ImportError:
        return
    app.command("anonymize")(anonymize_command)


_register_optional_commands()
app.command("trigger")(__import__("flows.trigger", fromlist=["trigger_command"]).trigger_command)  # flows/trigger.py


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
