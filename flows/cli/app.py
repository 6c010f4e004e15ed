"""The ``pyroblur`` typer app and what every command shares: one-line errors with their exit
codes (:func:`guarded`), ``--debug``, commands imported only when asked for, the config
options, the removal of what an interrupted run left, and the console entry point.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from typer.core import TyperGroup

from pyroblur.config import PipelineConfig, load_config
from pyroblur.core.errors import exit_code_of, one_line
from pyroblur.core.runtime import Interrupted, configure_environment, stop_children

log = logging.getLogger(__name__)

#: Every command, in ``--help`` order: name -> ``module:attribute`` (a function, or a typer app
#: for a group). A command's module is imported only when it is asked for (or for ``--help``):
#: ``pyroblur anonymize one.jpg`` does not pay for the pipeline's or the server's imports.
COMMANDS: dict[str, str] = {
    "run": "flows.cli.pipeline:run",
    "sweep": "flows.cli.pipeline:sweep",
    "check-config": "flows.cli.pipeline:check_config",
    "download": "flows.cli.pipeline:download",
    "app": "flows.cli.pipeline:open_app",
    "corrections": "flows.cli.pipeline:corrections_app",
    "anonymize": "flows.cli.anonymize:anonymize_command",
    "trigger": "flows.cli.trigger:trigger_command",
    "serve": "flows.cli.serve:serve_command",
}


class _LazyCommands(TyperGroup):
    """Resolves :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            target = getattr(importlib.import_module(module), attr)
            if isinstance(target, typer.Typer):
                command: click.Command = typer.main.get_group(target)
                command.name = cmd_name
            else:
                one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
                one.command(cmd_name)(guarded(target))
                command = typer.main.get_command(one)
            self.add_command(command, cmd_name)
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


def debug_on() -> bool:
    """Whether ``--debug`` (or ``PYROBLUR_DEBUG=1``) asked for tracebacks."""
    return _DEBUG["on"]


ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Pipeline config YAML (see configs/).", show_default=True)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value, e.g. --set train.epochs=5 (repeatable)."),
]


def load(config: Path, overrides: list[str] | None) -> PipelineConfig:
    """The config, validated (a ConfigError exits 2 through :func:`guarded`)."""
    return load_config(config, overrides or [])


#: Temporary files younger than this may belong to a live writer and are kept.
PARTIAL_MIN_AGE_S = 120


def clean_partials(folder: Path, *, of: Path | None = None) -> None:
    """Remove the temporary files an interrupted run left under ``folder`` (recursively), or
    only those of the one output file ``of`` (see :func:`pyroblur.core.io.remove_partials`)."""
    from pyroblur.core.io import remove_partials

    removed = remove_partials(folder, older_than=PARTIAL_MIN_AGE_S, of=of)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run under %s", len(removed), folder)


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
    try:
        app()
    except SystemExit as exc:
        end(exc.code)
    end(0)


def end(code: int | str | None) -> NoReturn:  # pragma: no cover - ends the process
    """End the process once its work is done: the atexit handlers run (logs flushed, the
    temporary API server stopped, FiftyOne's and Prefect's own clean-up), and then the process
    exits without the interpreter's finalization, which frees every object one by one: after a
    pipeline run that parsed the project for its cache keys and imported Prefect, FiftyOne and
    MLflow, that took seconds of a cached re-run (every file is closed by then). With a
    non-daemon thread still running, the usual exit waits for it instead."""
    import sys
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)
