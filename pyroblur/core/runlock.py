"""One run per data root: ``run`` and ``download`` hold ``<root>/.pyroblur.lock``.

Two ``pyroblur run`` on one data root used to collide (a database port bind timeout,
"Failed to update document", both training into the same run folder). The second now stops
at once with one line naming the holder. The lock is an ``flock`` on an open file: the kernel
releases it when the holder exits, however it exits, so a killed run leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyroblur.core.errors import PermanentError

__all__ = ["LOCK_NAME", "DataRootBusyError", "hold_data_root"]

LOCK_NAME = ".pyroblur.lock"


class DataRootBusyError(PermanentError):
    """Another pyroblur process holds the data root (exit code 1)."""


@contextlib.contextmanager
def hold_data_root(root: Path, command: str) -> Iterator[Path]:
    """Hold ``root``'s lock for the duration of the block.

    Raises:
        DataRootBusyError: another process holds it; the message names its pid, command and
            start time, and what to do.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            raise DataRootBusyError(
                f"another pyroblur process holds the data root {root}{holder}",
                subject=str(root),
                hint="wait for it to finish, or set PYROBLUR_DATA_DIR to another folder",
            ) from None
        info = {"pid": os.getpid(), "command": command, "argv": sys.argv, "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads(path.read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f" (pid {int(info['pid'])}, `pyroblur {info['command']}`, started {started})"
    return ""
