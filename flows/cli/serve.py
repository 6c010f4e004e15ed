"""The ``pyroblur serve`` command: the HTTP service of :mod:`pyroblur.serve`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

__all__ = ["serve_command"]


def serve_command(
    host: Annotated[
        str | None,
        typer.Option(help="Bind address \\[default: 127.0.0.1]; anything but loopback needs API keys."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port \\[default: 8000]; 0 picks a free one.")] = None,
    hash_key: Annotated[
        str | None,
        typer.Option(
            "--hash-key",
            help="Print the sha256 of this API key (for PYROBLUR_SERVE_API_KEY_HASHES) and exit.",
        ),
    ] = None,
) -> None:
    """Serve anonymization over HTTP: images, durable video jobs, a web page, OpenAPI at /docs.

    Limits and keys come from PYROBLUR_SERVE_* variables (or .env); see docs/serve.md.
    """
    from pyroblur.serve.settings import ServeSettings
    from pyroblur.serve.settings import hash_key as digest

    if hash_key is not None:
        typer.echo(digest(hash_key))
        return
    import uvicorn

    from pyroblur.serve.app import create_app

    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = ServeSettings(**updates)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
