"""The training pipeline's commands: ``run``, ``check-config``, ``download``, ``app`` and
``corrections``; each calls the flow or library function the deployments use."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.app import ConfigOpt, SetOpt, clean_partials, debug_on, guarded, load
from pyroblur.core.errors import EXIT_CONFIG, exit_code_of, one_line
from pyroblur.core.runtime import configure_environment

log = logging.getLogger(__name__)

__all__ = ["check_config", "corrections_app", "download", "open_app", "run", "sweep"]


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
    cfg = load(config, set_)

    def load_flow() -> Callable[[], Any]:
        from typing import get_args

        from flows.training import Stage, training_pipeline

        if until not in get_args(Stage):
            typer.secho(
                f"error: --until must be one of {', '.join(get_args(Stage))}, got '{until}'", fg="red", err=True
            )
            raise typer.Exit(EXIT_CONFIG)
        return lambda: training_pipeline(cfg, until=until)

    # Every stage after download checks or writes the FiftyOne dataset.
    result = _run_flow("run", load_flow, failed="pipeline failed", warm_fiftyone=until != "download")
    typer.echo("\nstage states:")
    for stage, state in result.states.items():
        typer.echo(f"  {stage:<14} {state}")
    from pyroblur.evaluation.report import to_markdown

    if result.benchmark is not None:
        typer.echo("\n" + to_markdown(result.benchmark))
    _echo_promotion(result.promotion, "Promotion")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(result.model_dump(), indent=2))


def sweep(
    config: ConfigOpt = Path("configs/sweep-demo.yaml"),
    set_: SetOpt = None,
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="Also write the sweep's summary (figures, best trial) here.")
    ] = None,
    until: Annotated[
        str, typer.Option(help="promote (default): benchmark and gate the best trial; sweep: stop after the trials.")
    ] = "promote",
) -> None:
    """Hyperparameter sweep over the config's sweep section (Optuna, MLflow; docs/sweep.md).

    The data stages run once (cached), then trials with Optuna (grid, random or TPE), pruned early when clearly worse, each a
    child run of the sweep's MLflow run, then the best trial benchmarked and promoted only if it
    passes every gate.

    The study lives in a database beside MLflow's (<data>/mlflow/optuna.db, or
    PYROBLUR_OPTUNA_STORAGE): stopped (Ctrl+C, SIGTERM) and started again, a sweep continues its
    study; finished trials never run again, interrupted ones do (their training resumes from
    last.pt). Here trials run one after another; the `sweep` deployment runs one per gpu slot.
    """
    cfg = load(config, set_)
    if cfg.sweep is None:
        typer.secho(f"error: {config}: no sweep section (see configs/sweep-demo.yaml, docs/sweep.md)", fg="red",
                    err=True)  # fmt: skip
        raise typer.Exit(EXIT_CONFIG)
    if until not in ("sweep", "promote"):
        typer.secho(f"error: --until must be sweep or promote, got '{until}'", fg="red", err=True)
        raise typer.Exit(EXIT_CONFIG)

    def load_flow() -> Callable[[], Any]:
        from flows.sweep import hyperparameter_sweep

        return lambda: hyperparameter_sweep(cfg, until=until)  # type: ignore[arg-type]

    result = _run_flow("sweep", load_flow, failed="sweep failed")
    figures = {k: v for k, v in result.sweep.figures.items() if k not in ("best", "comparison")}
    typer.echo(f"\nstudy {result.sweep.study_name} ({result.sweep.storage}): {figures}")
    typer.echo(f"comparison: {result.sweep.figures.get('comparison', {})}")
    typer.echo(f"best parameters: {result.sweep.best_params}")
    typer.echo("stage states:")
    for stage, state in result.states.items():
        typer.echo(f"  {stage:<14} {state}")
    _echo_promotion(result.promotion, "Promotion of the best trial")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(result.model_dump_json(indent=2))


def _run_flow(
    lock: str, load_flow: Callable[[], Callable[[], Any]], *, failed: str, warm_fiftyone: bool = False
) -> Any:
    """The frame of a flow run from the command line: the data root's lock (a second run stops,
    named, before it starts anything), Prefect's temporary API server when no API is configured
    (started in its own process while this one imports the flow: ``load_flow`` imports it and
    returns the call), partial files of a killed run removed, and a failure as one red line and
    the error's exit code (the flow already logged the traceback; ``--debug`` prints it).
    ``warm_fiftyone``: import FiftyOne and connect (its mongod starts) while the server starts,
    joined before the flow, so no two threads import at once while the flow runs."""
    configure_environment()
    from pyroblur.core.runlock import hold_data_root
    from pyroblur.core.settings import get_paths

    with hold_data_root(get_paths().root, lock):
        from tasks.apiserver import isolate_ephemeral_api_server, start_temporary_api_server

        server = start_temporary_api_server()
        if server is None:  # an API is configured, or Prefect already imported: Prefect's own way
            isolate_ephemeral_api_server()
        call = load_flow()
        clean_partials(get_paths().root)
        warm = threading.Thread(target=_warm_fiftyone, daemon=True) if warm_fiftyone else None
        if warm is not None:
            warm.start()
        if server is not None:
            server.wait_ready()
        if warm is not None:
            warm.join()
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the flow already logged the traceback
            if debug_on():
                traceback.print_exception(exc)
            typer.secho(f"{failed}: {one_line(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exit_code_of(exc)) from None


def _echo_promotion(promotion: Any, title: str) -> None:
    if promotion is None:
        return
    verdict = "promoted" if promotion.promoted else "not promoted"
    typer.echo(f"{title}: {verdict}: {promotion.reason}")
    for g in promotion.gates:
        typer.echo(f"  gate {g.name:<30} {'pass' if g.passed else 'FAIL'}  {g.detail}")


def check_config(config: Annotated[Path, typer.Argument(help="Config YAML to validate.")]) -> None:
    """Validate a config file and print it with every default filled in."""
    cfg = load(config, None)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


def download(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    set_: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List URLs, sizes and destinations; download nothing.")
    ] = False,
) -> None:
    """Download (or generate) every source of the config into the data root."""
    cfg = load(config, set_)
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
    from pyroblur.core.runlock import hold_data_root

    with hold_data_root(get_paths().root, "download"):
        clean_partials(get_paths().root)
        for src in cfg.sources:
            records = fetch_source(src, raw / src.name)
            typer.echo(f"[{src.name}] {len(records)} images")


def open_app(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    dataset: Annotated[str | None, typer.Option(help="FiftyOne dataset (default: curation.dataset_name).")] = None,
    view: Annotated[
        str | None,
        typer.Option(
            help="Open a saved view: curated, rejected, duplicates, train, val, test, predictions (the "
            "latest benchmark's test samples at the operating point), or after a benchmark "
            "'likely missing labels', 'likely wrong labels', 'worst false negatives by size', "
            "'false positives with high confidence'."
        ),
    ] = None,
    address: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the FiftyOne App.")] = 5151,
) -> None:
    """Open the FiftyOne App on the curated dataset (saved views: curated, rejected, duplicates, train, val, test)."""
    name = dataset or load(config, None).curation.dataset_name
    configure_environment()
    from pyroblur.curation.app import AppError, remote_hint, serve

    try:
        session = serve(name, address=address, port=port, view=view)
    except AppError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    typer.echo(f"FiftyOne App serving '{name}' at http://{address}:{port} (Ctrl+C to stop)")
    typer.echo(remote_hint(address, port))
    session.wait(-1)


corrections_app = typer.Typer(
    help="Label corrections made in the FiftyOne App (docs/curation.md).", no_args_is_help=True
)


@corrections_app.command("export")
@guarded
def corrections_export(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    dataset: Annotated[str | None, typer.Option(help="FiftyOne dataset (default: curation.dataset_name).")] = None,
) -> None:
    """Write the labels edited or tagged (remove/add) in the App as a new corrections version;
    the next pipeline run applies it at curation. Raw data is never modified."""
    name = dataset or load(config, None).curation.dataset_name
    configure_environment()
    from pyroblur.curation.corrections import export

    path, changed = export(name)
    if path is None:
        typer.echo(f"no label of '{name}' changed since curation: nothing to export")
        return
    typer.echo(f"{path.stem}: {changed} images with corrected labels -> {path}")
    typer.echo("the next pipeline run applies them at curation (curation.corrections: latest)")


def _warm_fiftyone() -> None:
    try:
        import fiftyone.core.odm.database as fod

        fod.get_db_conn()
    except Exception as exc:  # noqa: BLE001 - the stage that needs the database reports it
        log.debug("FiftyOne warm-up failed: %s", exc)
