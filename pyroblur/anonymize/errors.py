"""The anonymizer's errors, in the project's taxonomy (:mod:`pyroblur.core.errors`)."""

from __future__ import annotations

from pyroblur.core.errors import InputError, PermanentError

__all__ = ["IncompleteOutputError", "NoModelError", "OutputSpaceError", "UnreadableInputError", "UnsafeOutputError"]


class NoModelError(PermanentError):
    """No ``--model`` given and no champion in the registry, or weights that do not load."""


class UnsafeOutputError(PermanentError, ValueError):
    """The requested output would overwrite an input."""


class UnreadableInputError(InputError, ValueError):
    """An input that can never be processed (corrupt, truncated, unsupported): retrying
    will not help (exit code 3)."""


class IncompleteOutputError(InputError):
    """An output was written but does not cover the whole input (a truncated video), or the
    residual check found something still detectable under ``--strict`` (exit code 3)."""


class OutputSpaceError(PermanentError, OSError):
    """The output's disk or quota is full: not the input's fault (exit code 1); the run stops."""
