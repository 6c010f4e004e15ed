"""Prefect flows: wiring only (which task after which, with which config section)."""

from pyroblur.core.runtime import configure_environment

configure_environment()  # before Prefect reads its settings
