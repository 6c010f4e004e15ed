"""The temporary Prefect API server of a command-line run when no Prefect API is configured.

Started before Prefect is imported (:func:`start_temporary_api_server`), so the CLI process
never imports the server's modules and Prefect's clients simply use ``PREFECT_API_URL``; or,
when Prefect is imported already, Prefect's own ephemeral server moved into its own session
(:func:`isolate_ephemeral_api_server`). Orchestration plumbing for ``flows.cli``; no wiring.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["TemporaryApiServer", "isolate_ephemeral_api_server", "start_temporary_api_server"]


def _api_url_configured() -> bool:
    """Whether Prefect would find an API URL (env, ``.env``, ``prefect.toml``, ``pyproject.toml``,
    the active profile), read without importing Prefect (its import fixes its settings)."""
    import tomllib

    if os.environ.get("PREFECT_API_URL"):
        return True
    cwd = Path.cwd()
    env_file = cwd / ".env"
    if env_file.is_file() and any(
        line.strip().startswith("PREFECT_API_URL") for line in env_file.read_text().splitlines()
    ):
        return True
    try:
        for path, keys in ((cwd / "prefect.toml", ()), (cwd / "pyproject.toml", ("tool", "prefect"))):
            if path.is_file():
                data = tomllib.loads(path.read_text())
                for k in keys:
                    data = data.get(k, {})
                if (data.get("api") or {}).get("url") or data.get("PREFECT_API_URL"):
                    return True
        home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
        profiles = home / "profiles.toml"
        if profiles.is_file():
            data = tomllib.loads(profiles.read_text())
            active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
            if (data.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL"):
                return True
    except (OSError, ValueError):  # unreadable: let Prefect decide, its own way
        return True
    return False


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
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
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
