"""``pyroblur trigger DEPLOYMENT``: start a deployment's run from a terminal (the client side
lives in :mod:`tasks.trigger`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pyroblur.core.errors import PyroblurError
from tasks.trigger import DEPLOYMENTS, GPU_STAGE, parameters_for, trigger

__all__ = ["trigger_command"]


def trigger_command(
    deployment: Annotated[str, typer.Argument(help=f"Deployment: {', '.join(DEPLOYMENTS)} or 'flow/deployment'.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config YAML sent as the 'config' parameter.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override a config value, e.g. --set train.epochs=5.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Another parameter as KEY=JSON (repeatable).")
    ] = None,
    inline: Annotated[
        bool, typer.Option("--inline", help="Train inside the cpu pool's run instead of the gpu pool's train-stage.")
    ] = False,
    wait: Annotated[float, typer.Option("--wait", help="Minutes to wait for the run (0: do not wait).")] = 120.0,
) -> None:
    """Start a run of a deployment on the Prefect server (PREFECT_API_URL, default make server's),
    wait for it and print each run's pool and state. Exit 0 only when it Completed."""
    train_deployment = None if inline else GPU_STAGE
    try:
        parameters = parameters_for(config, set_ or [], param or [], train_deployment if config else None)
        final = trigger(deployment, parameters, wait, echo=typer.echo)
    except PyroblurError as exc:  # a config or server problem: one line, its exit code (2: config)
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(exc.exit_code) from None
    if wait > 0 and final != "COMPLETED":
        raise typer.Exit(1)
