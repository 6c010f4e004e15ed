"""One error taxonomy for the whole project.

Every error a user can act on is a :class:`PyroblurError` that says whether retrying can help
(``transient``) and names what it is about (``subject``: a file, a config key, a URL) and what
to do (``hint``). Prefect tasks retry only transient errors; the CLI prints ``str(error)`` as
one line and exits with ``exit_code``.
"""

from __future__ import annotations


class PyroblurError(Exception):
    """Base of the project's errors. Permanent unless a subclass or ``transient=True`` says so.

    ``subject`` names the file, key or URL; ``hint`` says what to do. ``exit_code`` is the CLI's
    exit status for this error (see the README's exit-code table).
    """

    transient: bool = False
    exit_code: int = 1

    def __init__(
        self, message: str, *, subject: str | None = None, hint: str | None = None, transient: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject
        self.hint = hint
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        text = self.message
        if self.subject and self.subject not in text:
            text = f"{self.subject}: {text}"
        if self.hint and self.hint not in text:
            text = f"{text} ({self.hint})"
        return text


class PermanentError(PyroblurError):
    """Retrying cannot help: bad input, bad config, missing file, failed check."""


class TransientError(PyroblurError):
    """Retrying may help: a timeout, a dropped connection, HTTP 429/5xx, a busy database."""

    transient = True


class ConfigurationError(PermanentError):
    """A config file or option is invalid (exit code 2)."""

    exit_code = 2


class InputError(PermanentError):
    """An input file is unreadable, corrupt, too large or hostile (exit code 3)."""

    exit_code = 3


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` can succeed.

    Our own errors say so themselves. Of foreign exceptions, network and OS-level hiccups are
    transient (connection reset, timeout); everything else (programming errors, ValueError,
    KeyError, ...) is permanent: retrying the same code on the same input gives the same result.
    """
    if isinstance(exc, PyroblurError):
        return exc.transient
    try:
        import requests

        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return True
    except ImportError:  # pragma: no cover - requests is a dependency
        pass
    return isinstance(exc, TimeoutError | ConnectionResetError | ConnectionAbortedError | BrokenPipeError)
