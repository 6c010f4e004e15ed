"""``pyroblur`` command line: one command per stage, calling the same flows the deployments run.

Every error is one line on stderr (``error: ...``) naming the file, key or URL, and the exit code
says what kind it was (``pyroblur.core.errors``): 0 success, 1 the work failed or could not
start, 2 configuration/usage error or failed precondition, 3 unreadable or hostile input
(anonymize: some files skipped), 130/143 stopped by SIGINT/SIGTERM. ``--debug`` (or
``PYROBLUR_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from pyroblur.config import PipelineConfig, load_config
from pyroblur.core.errors import EXIT_CONFIG, exit_code_of, one_line
from pyroblur.core.runtime import Interrupted, configure_environment, stop_children

log = logging.getLogger(__name__)


class _LazyCommands(TyperGroup):
    """Commands whose modules are imported only when they are asked for (or for ``--help``):
    ``pyroblur run`` does not pay for the anonymizer's and the trigger's imports."""

    LAZY: dict[str, Callable[[], Callable[..., Any]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self.LAZY if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.LAZY:
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            one.command(cmd_name)(self.LAZY[cmd_name]())
            self.add_command(typer.main.get_command(one), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyCommands,
    help="PyroBlur: train a face + license-plate detector with Prefect and FiftyOne, and anonymize with it.\n\n"
    "Exit codes: 0 success; 1 the work failed or could not start; 2 bad config, option or precondition; "
    "3 unreadable or hostile input (anonymize: some files skipped); 130/143 stopped by SIGINT/SIGTERM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEBUG = {"on": os.environ.get("PYROBLUR_DEBUG", "") not in ("", "0", "false")}


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Print full tracebacks for errors (also PYROBLUR_DEBUG=1).")
    ] = False,
) -> None:
    """PyroBlur command line."""
    if debug:
        _DEBUG["on"] = True


def _fail(exc: BaseException) -> None:
    """Print ``exc`` as one line (plus the traceback with --debug) and exit with its code."""
    if _DEBUG["on"]:
        traceback.print_exception(exc)
    code = exit_code_of(exc)
    signum = getattr(exc, "signum", None) or getattr(exc, "signal", None)
    if isinstance(signum, int):
        code = 128 + signum
        text = f"stopped by {signal.Signals(signum).name}; work in progress was abandoned cleanly"
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted; work in progress was abandoned cleanly"
    else:
        text = one_line(exc)
    typer.secho(f"error: {text}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: any error becomes one line and its documented exit code; a signal stops
    the child processes we started. Typer reads the signature through ``functools.wraps``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
            if not isinstance(exc, Exception):  # a signal or Ctrl+C: leave nothing running
                with contextlib.suppress(ValueError):  # ValueError: not the main thread
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
                stop_children()
            _fail(exc)

    return wrapper


def _command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` with :func:`guarded` applied."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        app.command(*args, **kwargs)(guarded(fn))
        return fn

    return register


ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Pipeline config YAML (see configs/).", show_default=True)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value, e.g. --set train.epochs=5 (repeatable)."),
]


#: Temporary files younger than this may belong to a live writer and are kept.
PARTIAL_MIN_AGE_S = 120


def _clean_partials(folder: Path, pattern: str | None = None) -> None:
    """Remove the temporary files an interrupted run left under ``folder`` (recursively), or
    only those directly in ``folder`` whose name matches ``pattern``."""
    import time

    from pyroblur.core.io import is_partial, remove_partials

    if pattern is None:
        removed = remove_partials(folder, older_than=PARTIAL_MIN_AGE_S)
    else:
        cutoff, removed = time.time() - PARTIAL_MIN_AGE_S, []
        for path in folder.glob(pattern) if folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if is_partial(path) and path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run under %s", len(removed), folder)


def _load(config: Path, overrides: list[str] | None) -> PipelineConfig:
    return load_config(config, overrides or [])  # a ConfigError exits 2 through guarded()


@_command()
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
    configure_environment()
    from typing import get_args

    from pyroblur.core.runlock import hold_data_root
    from pyroblur.core.settings import get_paths

    # A second run on this data root stops here, named, before it starts anything.
    with hold_data_root(get_paths().root, "run"):
        # The temporary API server (when no Prefect API is configured) starts in its own process
        # while this one imports the flow: on a cached re-run its start-up was a third of the time.
        server = start_temporary_api_server()
        if server is None:  # an API is configured, or Prefect already imported: Prefect's own way
            isolate_ephemeral_api_server()
        from flows.training import Stage, training_pipeline

        if until not in get_args(Stage):
            typer.secho(
                f"error: --until must be one of {', '.join(get_args(Stage))}, got '{until}'", fg="red", err=True
            )
            raise typer.Exit(EXIT_CONFIG)
        _clean_partials(get_paths().root)
        # Every stage after download checks or writes the FiftyOne dataset: import FiftyOne and
        # connect (its mongod starts) while the API server starts; joined before the flow starts,
        # so no two threads import at once while the flow runs.
        warm = threading.Thread(target=_warm_fiftyone, daemon=True) if until != "download" else None
        if warm is not None:
            warm.start()
        if server is not None:
            server.wait_ready()
        if warm is not None:
            warm.join()
        try:
            result = training_pipeline(cfg, until=until)
        except Exception as exc:  # noqa: BLE001 - the flow already logged the traceback
            if _DEBUG["on"]:
                traceback.print_exception(exc)
            typer.secho(f"pipeline failed: {one_line(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exit_code_of(exc)) from None
    typer.echo("\nstage states:")
    for stage, state in result.states.items():
        typer.echo(f"  {stage:<14} {state}")
    from pyroblur.evaluation.report import to_markdown

    if result.benchmark is not None:
        typer.echo("\n" + to_markdown(result.benchmark))
    if result.promotion is not None:
        verdict = "promoted" if result.promotion.promoted else "not promoted"
        typer.echo(f"Promotion: {verdict}: {result.promotion.reason}")
        for g in result.promotion.gates:
            typer.echo(f"  gate {g.name:<30} {'pass' if g.passed else 'FAIL'}  {g.detail}")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(result.model_dump(), indent=2))


@_command()
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
    """Hyperparameter sweep (the config's sweep section; docs/sweep.md): the data stages once
    (cached), trials with Optuna (grid, random or TPE), pruned early when clearly worse, each a
    child run of the sweep's MLflow run, then the best trial benchmarked and promoted only if it
    passes every gate.

    The study lives in a database beside MLflow's (<data>/mlflow/optuna.db, or
    PYROBLUR_OPTUNA_STORAGE): stopped (Ctrl+C, SIGTERM) and started again, a sweep continues its
    study; finished trials never run again, interrupted ones do (their training resumes from
    last.pt). Here trials run one after another; the `sweep` deployment runs one per gpu slot.
    """
    cfg = _load(config, set_)
    if cfg.sweep is None:
        typer.secho(f"error: {config}: no sweep section (see configs/sweep-demo.yaml, docs/sweep.md)", fg="red",
                    err=True)  # fmt: skip
        raise typer.Exit(EXIT_CONFIG)
    if until not in ("sweep", "promote"):
        typer.secho(f"error: --until must be sweep or promote, got '{until}'", fg="red", err=True)
        raise typer.Exit(EXIT_CONFIG)
    configure_environment()
    from pyroblur.core.runlock import hold_data_root
    from pyroblur.core.settings import get_paths

    with hold_data_root(get_paths().root, "sweep"):
        server = start_temporary_api_server()
        if server is None:
            isolate_ephemeral_api_server()
        from flows.sweep import hyperparameter_sweep

        _clean_partials(get_paths().root)
        if server is not None:
            server.wait_ready()
        try:
            result = hyperparameter_sweep(cfg, until=until)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the flow already logged the traceback
            if _DEBUG["on"]:
                traceback.print_exception(exc)
            typer.secho(f"sweep failed: {one_line(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exit_code_of(exc)) from None
    figures = {k: v for k, v in result.sweep.figures.items() if k not in ("best", "comparison")}
    typer.echo(f"\nstudy {result.sweep.study_name} ({result.sweep.storage}): {figures}")
    typer.echo(f"comparison: {result.sweep.figures.get('comparison', {})}")
    typer.echo(f"best parameters: {result.sweep.best_params}")
    typer.echo("stage states:")
    for stage, state in result.states.items():
        typer.echo(f"  {stage:<14} {state}")
    if result.promotion is not None:
        verdict = "promoted" if result.promotion.promoted else "not promoted"
        typer.echo(f"Promotion of the best trial: {verdict}: {result.promotion.reason}")
        for g in result.promotion.gates:
            typer.echo(f"  gate {g.name:<30} {'pass' if g.passed else 'FAIL'}  {g.detail}")
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(result.model_dump_json(indent=2))


@_command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="Config YAML to validate.")]) -> None:
    """Validate a config file and print it with every default filled in."""
    cfg = _load(config, None)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@_command()
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
    from pyroblur.core.runlock import hold_data_root

    with hold_data_root(get_paths().root, "download"):
        _clean_partials(get_paths().root)
        for src in cfg.sources:
            records = fetch_source(src, raw / src.name)
            typer.echo(f"[{src.name}] {len(records)} images")


@_command("app")
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
    name = dataset or _load(config, None).curation.dataset_name
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
app.add_typer(corrections_app, name="corrections")


@corrections_app.command("export")
@guarded
def corrections_export(
    config: ConfigOpt = Path("configs/pyroblur.yaml"),
    dataset: Annotated[str | None, typer.Option(help="FiftyOne dataset (default: curation.dataset_name).")] = None,
) -> None:
    """Write the labels edited or tagged (remove/add) in the App as a new corrections version;
    the next pipeline run applies it at curation. Raw data is never modified."""
    name = dataset or _load(config, None).curation.dataset_name
    configure_environment()
    from pyroblur.curation.corrections import export

    path, changed = export(name)
    if path is None:
        typer.echo(f"no label of '{name}' changed since curation: nothing to export")
        return
    typer.echo(f"{path.stem}: {changed} images with corrected labels -> {path}")
    typer.echo("the next pipeline run applies them at curation (curation.corrections: latest)")


def _anonymize() -> Callable[..., Any]:
    from pyroblur.anonymize.cli import anonymize_command

    return guarded(_anonymize_preflight(anonymize_command))


def _trigger() -> Callable[..., Any]:
    from flows.trigger import trigger_command  # flows/trigger.py

    return guarded(trigger_command)


def _serve() -> Callable[..., Any]:
    from pyroblur.serve.cli import serve_command  # pyroblur/serve/

    return guarded(serve_command)


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


def _anonymize_preflight(command: Callable[..., Any]) -> Callable[..., Any]:
    """Before anonymizing: refuse an OUTPUT under a root that does not exist, and remove
    temporary files an interrupted run left in OUTPUT."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pyroblur.core.errors import PermanentError

        output, input = kwargs.get("output"), kwargs.get("input")
        if output is not None and input is not None:
            output, input = Path(output), Path(input)
            problem = _output_folder_problem(input, output)
            if problem:
                raise PermanentError(problem, subject=f"OUTPUT {output}")
            if input.is_dir() or output.is_dir() or output.suffix == "":
                _clean_partials(output)  # the output tree is ours
            else:  # one output file: only its own leftovers, never the whole folder it lies in
                _clean_partials(output.parent, pattern=f".{output.stem}*")
        return command(*args, **kwargs)

    return wrapper


_LazyCommands.LAZY.update(anonymize=_anonymize, trigger=_trigger, serve=_serve)


def _warm_fiftyone() -> None:
    try:
        import fiftyone.core.odm.database as fod

        fod.get_db_conn()
    except Exception as exc:  # noqa: BLE001 - the stage that needs the database reports it
        log.debug("FiftyOne warm-up failed: %s", exc)


def _api_url_configured() -> bool:
    """Whether Prefect would find an API URL (env, ``.env``, ``prefect.toml``, ``pyproject.toml``,
    the active profile), read without importing Prefect (its import fixes its settings)."""
    import tomllib

    if os.environ.get("PREFECT_API_URL"):
        return True
    cwd = Path.cwd()
    env_file = cwd / ".env"
    if env_file.is_file() and any(
        line.strip().startswith("PREFECT_API_URL") for line in env_file.read_text().splitlines()
    ):
        return True
    try:
        for path, keys in ((cwd / "prefect.toml", ()), (cwd / "pyproject.toml", ("tool", "prefect"))):
            if path.is_file():
                data = tomllib.loads(path.read_text())
                for k in keys:
                    data = data.get(k, {})
                if (data.get("api") or {}).get("url") or data.get("PREFECT_API_URL"):
                    return True
        home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
        profiles = home / "profiles.toml"
        if profiles.is_file():
            data = tomllib.loads(profiles.read_text())
            active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
            if (data.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL"):
                return True
    except (OSError, ValueError):  # unreadable: let Prefect decide, its own way
        return True
    return False


class TemporaryApiServer:
    """Prefect's temporary API server (the command ``SubprocessASGIServer`` runs), started by us
    before Prefect is imported, so this process never imports the server's modules (seconds of
    every run) and Prefect's clients simply use ``PREFECT_API_URL``. It runs in its own session
    (a group SIGTERM or Ctrl+C must not kill it before the run reports its crash) and is stopped
    at exit, after the final state was sent."""

    def __init__(self) -> None:
        import subprocess
        from importlib.util import find_spec

        spec = find_spec("prefect")
        app_dir = str(Path(next(iter(spec.submodule_search_locations or []))).parent) if spec else "."
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        log.info("Starting temporary server on http://127.0.0.1:%d", self.port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory", "prefect.server.api.server:create_app"]
            + ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env,
            start_new_session=True,
        )
        os.environ["PREFECT_API_URL"] = self.url  # before Prefect reads its settings
        import atexit

        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until ``/health`` answers (bounded); raises naming the server when it does not."""
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the temporary Prefect API server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect API server on {self.url} did not answer in {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            log.info("Stopping temporary server on http://127.0.0.1:%d", self.port)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: it must go anyway
                self.process.kill()
                self.process.wait()


def start_temporary_api_server() -> TemporaryApiServer | None:
    """Start Prefect's temporary API server now, unless an API is configured or Prefect is
    already imported (its settings are then fixed: Prefect starts its own, see
    :func:`isolate_ephemeral_api_server`)."""
    if "prefect" in sys.modules or _api_url_configured():
        return None
    return TemporaryApiServer()


def isolate_ephemeral_api_server() -> None:
    """When no Prefect API is configured, Prefect starts a temporary API server as a child in
    our process group: a Ctrl+C or a group SIGTERM then kills it first, and the run can no
    longer report that it crashed (it stayed "Running" while the client retried for minutes).
    This starts that server in its own session instead; Prefect stops it at exit as usual."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    import subprocess

    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's clients will start and use
    if getattr(server, "_pyroblur_isolated", False) or server.running:
        return
    launch = server._run_uvicorn_command

    def launch_in_own_session() -> subprocess.Popen:
        real_popen = subprocess.Popen
        subprocess.Popen = lambda *a, **kw: real_popen(*a, start_new_session=True, **kw)  # type: ignore[misc]
        try:
            return launch()
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]

    server._run_uvicorn_command = launch_in_own_session  # type: ignore[method-assign]
    server._pyroblur_isolated = True  # type: ignore[attr-defined]


def _raise_interrupted(signum: int, frame: Any) -> None:
    """SIGTERM outside a flow run: unwind like Ctrl+C, so ``finally`` blocks remove temporary
    files and children are stopped (inside a flow run Prefect's own handler marks it Crashed)."""
    raise Interrupted(signum)


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_environment()  # before ultralytics or Prefect are imported: offline, no auto-install
    signal.signal(signal.SIGTERM, _raise_interrupted)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
