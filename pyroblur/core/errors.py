"""One error taxonomy for the whole project.

Every error a user can act on is a :class:`PyroblurError` that says whether retrying can help
(``transient``) and names what it is about (``subject``: a file, a config key, a URL) and what
to do (``hint``). Prefect tasks retry only transient errors (``tasks._common.retry_transient``);
the CLI prints :func:`one_line` and exits with :func:`exit_code_of`.

Exit codes of every ``pyroblur`` command (also in the README):

====  ======================================================================================
0     success
1     the work failed or could not start (a stage failed, no model, a transient error that
      outlived its retries, an unexpected error)
2     configuration or usage error: a bad config file or option, a failed precondition found
      before any work started (corrupt registry, missing package, unusable device)
3     an input is unreadable, corrupt, too large or hostile (anonymize: some files skipped)
130   interrupted by SIGINT (Ctrl+C); 143 terminated by SIGTERM
====  ======================================================================================
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class PyroblurError(Exception):
    """Base of the project's errors. Permanent unless a subclass or ``transient=True`` says so.

    ``subject`` names the file, key or URL; ``hint`` says what to do. ``exit_code`` is the CLI's
    exit status for this error (see the table above).
    """

    transient: bool = False
    exit_code: int = EXIT_FAILURE

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

    def __reduce__(self):  # keep subject/hint when Prefect pickles the exception into a state
        return (_rebuild, (type(self), self.message, self.subject, self.hint, self.transient), dict(self.__dict__))


def _rebuild(cls: type[PyroblurError], message: str, subject: str | None, hint: str | None, transient: bool):
    exc = cls.__new__(cls)
    PyroblurError.__init__(exc, message, subject=subject, hint=hint, transient=transient)
    return exc


class PermanentError(PyroblurError):
    """Retrying cannot help: bad input, bad config, missing file, failed check."""


class TransientError(PyroblurError):
    """Retrying may help: a timeout, a dropped connection, HTTP 429/5xx, a busy database."""

    transient = True


class ConfigurationError(PermanentError):
    """A config file or option is invalid, or a precondition of the run fails (exit code 2)."""

    exit_code = EXIT_CONFIG


class InputError(PermanentError):
    """An input file is unreadable, corrupt, too large or hostile (exit code 3)."""

    exit_code = EXIT_INPUT


# errno values of OS errors that a retry can outlive (a busy resource, a dropped peer).
_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EBUSY, errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE}
)
# Foreign exception classes, by "module.Class" name, that mean "try again later". Matched by
# name (along the MRO) so this module imports none of those libraries.
_TRANSIENT_NAMES = frozenset(
    {
        "requests.exceptions.ConnectionError",
        "requests.exceptions.Timeout",
        "requests.exceptions.ChunkedEncodingError",
        "urllib3.exceptions.ProtocolError",
        "urllib3.exceptions.TimeoutError",
        "httpx.TransportError",
        "pymongo.errors.AutoReconnect",
        "pymongo.errors.ServerSelectionTimeoutError",
        "pymongo.errors.NetworkTimeout",
    }
)


def _class_names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` can succeed.

    Our own errors say so themselves; so may any exception with a boolean ``transient``
    attribute, and one with an HTTP ``status`` (429 and 5xx are transient). Of foreign
    exceptions, network, database-busy and OS-level hiccups are transient (connection reset,
    timeout, EAGAIN); everything else (programming errors, ValueError, KeyError, a missing
    package, an interrupt, ...) is permanent: the same code on the same input fails the same
    way. An error raised ``from`` a transient one is transient unless it says otherwise.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        flag = getattr(current, "transient", None)
        if isinstance(flag, bool):
            return flag
        status = getattr(current, "status", None)
        if status is None:  # requests/httpx HTTP errors carry the response
            status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(status, int) and 400 <= status < 600:
            return status == 429 or status >= 500
        if not isinstance(current, Exception):  # KeyboardInterrupt, SystemExit, signals
            return False
        if isinstance(current, TimeoutError | ConnectionError):
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        if _class_names(current) & _TRANSIENT_NAMES:
            return True
        current = current.__cause__
    return False


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit status for ``exc`` (see the module's table)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return EXIT_FAILURE


def one_line(exc: BaseException) -> str:
    """``exc`` as the one line the CLI prints: our errors as they are, foreign ones prefixed
    with their type (``ModuleNotFoundError: No module named 'x'``). Multi-line messages keep
    only their first line unless they are a list (a config with several bad keys)."""
    text = str(exc).strip()
    if not isinstance(exc, PyroblurError):
        first = text.splitlines()[0] if text else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if isinstance(exc, ImportError) and exc.name:
            text += " (a required package is missing from this environment; see the README's install section)"
    return text
