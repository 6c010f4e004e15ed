"""Secrets that live in Prefect blocks, handed to the library through the environment.

The library never imports Prefect: a source that needs a key reads it from an environment
variable. Here, in the orchestration layer, a Secret block named in the config is loaded and put
into that variable for this process only (never logged, never written to a manifest).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from pyroblur.core.errors import ConfigurationError


def load_secret_blocks(sources: Iterable[Any]) -> None:
    """For each source with ``api_key_secret_block`` set, load that Secret into ``api_key_env``.

    An environment variable that is already set wins (explicit beats stored). A block that
    cannot be loaded is a configuration error naming the block, never the key.
    """
    from prefect.blocks.system import Secret

    for src in sources:
        block = getattr(src, "api_key_secret_block", None)
        env = getattr(src, "api_key_env", None)
        if not block or not env or os.environ.get(env, "").strip():
            continue
        try:
            value = Secret.load(block).get()
        except Exception as exc:  # noqa: BLE001 - any failure: a clear message, no key inside
            raise ConfigurationError(
                f"cannot load the Prefect Secret block {block!r} ({type(exc).__name__})",
                subject=f"source {getattr(src, 'name', '?')!r}",
                hint=f"create the block with the API key, or unset api_key_secret_block and set ${env}",
            ) from None
        if value:
            os.environ[env] = str(value)
