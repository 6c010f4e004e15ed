"""The temporary Prefect API server of a command-line run when no Prefect API is configured.

Started before Prefect is imported (:func:`start_temporary_api_server`), so the CLI process
never imports the server's modules and Prefect's clients simply use ``PREFECT_API_URL``; or,
when Prefect is imported already, Prefect's own ephemeral server moved into its own session
(:func:`isolate_ephemeral_api_server`). Orchestration plumbing for ``flows.cli``; no wiring.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["TemporaryApiServer", "isolate_ephemeral_api_server", "start_temporary_api_server"]


#: Settings of the temporary server: no UI (its start copies and rewrites the UI's static build),
#: the ephemeral set of services (task runs and events are recorded, nothing is scheduled), and
#: no automation triggers and actions (a temporary server has no automations; reconciling them
#: at start costs a compiled query on the start's critical path). Explicit values in the
#: environment win, but for the first three.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
SERVER_ENV_DEFAULTS = {"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"}

#: Where the last migration of Prefect's default database was recorded (under PREFECT_HOME).
MIGRATED_STAMP = ".pyroblur-migrated.json"


def _configured(env_names: tuple[str, ...], toml_keys: tuple[tuple[str, ...], ...]) -> bool:
    """Whether Prefect would find one of these settings (env, ``.env``, ``prefect.toml``,
    ``pyproject.toml``'s ``[tool.prefect]``, the active profile), read without importing Prefect
    (its import fixes its settings). Unreadable files count as configured: Prefect decides."""
    import tomllib

    if any(os.environ.get(n) for n in env_names):
        return True
    cwd = Path.cwd()
    try:
        env_file = cwd / ".env"
        if env_file.is_file() and any(line.strip().startswith(env_names) for line in env_file.read_text().splitlines()):
            return True
        for path, root in ((cwd / "prefect.toml", ()), (cwd / "pyproject.toml", ("tool", "prefect"))):
            if path.is_file():
                data = tomllib.loads(path.read_text())
                for k in root:
                    data = data.get(k, {})
                if any(data.get(n) for n in env_names):
                    return True
                for keys in toml_keys:
                    found: object = data
                    for k in keys:
                        found = found.get(k) if isinstance(found, dict) else None
                    if found:
                        return True
        profiles = _prefect_home() / "profiles.toml"
        if profiles.is_file():
            data = tomllib.loads(profiles.read_text())
            active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
            if any((data.get("profiles", {}).get(active) or {}).get(n) for n in env_names):
                return True
    except (OSError, ValueError):
        return True
    return False


def _prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def _api_url_configured() -> bool:
    return _configured(("PREFECT_API_URL",), (("api", "url"),))


def _default_database() -> Path | None:
    """Prefect's default SQLite database file (``$PREFECT_HOME/prefect.db``), or None when
    another database is configured."""
    names = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
    if _configured(names, (("server", "database", "connection_url"), ("api", "database", "connection_url"))):
        return None
    return _prefect_home() / "prefect.db"


def _revision(database: Path) -> str | None:
    """The Alembic revision a SQLite database was migrated to (None: not a migrated database)."""
    import sqlite3

    if not database.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return ",".join(sorted(r[0] for r in rows)) or None


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


def database_is_current() -> bool:
    """Whether Prefect's default database still has the revision this very Prefect version
    migrated it to (recorded by :meth:`TemporaryApiServer.wait_ready`): the server can then
    skip its migration check at start. Any doubt (another database configured, no record,
    another Prefect version, another revision) means False: the server migrates as usual."""
    database = _default_database()
    stamp = _prefect_home() / MIGRATED_STAMP
    if database is None or not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    current = {"prefect": _prefect_version(), "database": str(database), "revision": _revision(database)}
    return current["revision"] is not None and recorded == current


def _record_migration() -> None:
    """Record the revision the server just migrated the default database to."""
    from pyroblur.core.io import write_atomic

    database = _default_database()
    revision = _revision(database) if database is not None else None
    if database is None or revision is None:
        return
    record = {"prefect": _prefect_version(), "database": str(database), "revision": revision}
    with contextlib.suppress(OSError):
        write_atomic(_prefect_home() / MIGRATED_STAMP, json.dumps(record), durable=False)


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
        env = {**SERVER_ENV_DEFAULTS, **os.environ, **SERVER_ENV}
        self.migrates = not database_is_current()
        if not self.migrates:  # the check costs Alembic's import and a read of every migration script
            env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
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
                        if self.migrates:
                            _record_migration()
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
