"""Process environment defaults shared by the CLI, flows and workers.

Call :func:`configure_environment` before Prefect or ultralytics is imported: both read their
settings once, at import.

The environment is immutable at run time: ultralytics would otherwise pip-install packages it
misses (``check_requirements``, e.g. ``pi-heif`` the first time Pillow meets an unknown image)
and probe the internet. ``YOLO_AUTOINSTALL=false`` turns the installs off, ``YOLO_OFFLINE=1``
the online checks, and what it would install is pinned in ``pyproject.toml`` instead.
"""

from __future__ import annotations

import logging
import os

from pyroblur.core.settings import get_paths

log = logging.getLogger(__name__)

#: Environment defaults for ultralytics: no run-time pip installs, no online checks.
ULTRALYTICS_ENV = {"YOLO_AUTOINSTALL": "false", "YOLO_OFFLINE": "1"}


def configure_environment() -> None:
    """Project-local result store under the data root; no telemetry; ultralytics never installs
    packages or goes online by itself. Existing values win."""
    paths = get_paths()
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(paths.root / "prefect-results"))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    # FiftyOne's own mongod is 6.0 (the oldest it supports); the warning is expected.
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    configure_fiftyone_database()
    configure_ultralytics()


def configure_fiftyone_database() -> str:
    """Put FiftyOne's database under the data root (``<root>/fiftyone/db``) unless
    ``FIFTYONE_DATABASE_URI`` or ``FIFTYONE_DATABASE_DIR`` already says where; returns where.

    FiftyOne's default is one database per user (``~/.fiftyone/var/lib/mongo``), shared by every
    data root and left behind by ``make clean``. FiftyOne reads the folder when it starts its
    mongod, so this must run before the first database call of the process (FiftyOne's config
    is corrected in place when it was imported already).
    """
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    if uri:
        return uri
    folder = os.environ.get("FIFTYONE_DATABASE_DIR") or str(get_paths().fiftyone_db)
    os.environ["FIFTYONE_DATABASE_DIR"] = folder
    import sys

    fo = sys.modules.get("fiftyone")
    config = getattr(fo, "config", None)
    if config is not None and getattr(config, "database_dir", folder) != folder and config.database_uri is None:
        config.database_dir = folder
    return folder


def configure_ultralytics() -> None:
    """Turn ultralytics' auto-install and online checks off (also when it is already imported)."""
    for key, value in ULTRALYTICS_ENV.items():
        os.environ.setdefault(key, value)
    import sys

    # Imported before us: its module constants were read already; correct them in place.
    off = os.environ["YOLO_AUTOINSTALL"].lower() in ("false", "0")
    offline = os.environ["YOLO_OFFLINE"].lower() not in ("", "0", "false")
    for name in ("ultralytics.utils", "ultralytics.utils.checks"):
        module = sys.modules.get(name)
        if module is not None and off and hasattr(module, "AUTOINSTALL"):
            module.AUTOINSTALL = False
        if module is not None and offline and hasattr(module, "ONLINE"):
            module.ONLINE = False


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or another stop signal) turned into an exception, so ``finally`` blocks run
    and temporary files are removed. A ``KeyboardInterrupt`` so code that lets Ctrl+C through
    lets this through too."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def _is_shared_service(cmdline: list[str]) -> bool:
    """Daemons meant to outlive one client: FiftyOne's database service and its mongod (other
    processes may use them), and Prefect's temporary API server (Prefect stops it at exit,
    after the final state is sent). FiftyOne's App server service is ours to stop."""
    text = " ".join(cmdline)
    return "mongod" in text or "--51-service db" in text or "prefect.server.api.server:create_app" in text


def stop_children(timeout: float = 5.0) -> list[int]:
    """Terminate this process's child processes (then kill what is left after ``timeout`` s);
    return their pids. Shared services (:func:`_is_shared_service`) are left alone."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the dependencies
        return []
    victims = []
    for child in psutil.Process().children(recursive=True):
        try:
            if _is_shared_service(child.cmdline()):
                continue
            child.terminate()
            victims.append(child)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(victims, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            continue
    if victims:
        log.info("stopped %d child process(es)", len(victims))
    return [c.pid for c in victims]
