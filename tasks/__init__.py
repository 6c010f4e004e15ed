"""Prefect tasks: thin shells (retries, cache policy, artifacts) over the ``pyroblur`` library."""

from pyroblur.core.runtime import configure_environment

configure_environment()  # before Prefect reads its settings
