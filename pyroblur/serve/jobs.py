"""Durable video jobs: a SQLite table in the service's data dir and worker threads.

Why not Prefect flow runs: the service must work where no Prefect server is configured (the
laptop, the offline demo) and a job must survive a restart of the API process on its own.
The table is that record: a job is ``queued`` when its upload is on disk, ``running`` while a
worker anonymizes it, then ``completed``, ``failed`` or ``cancelled``. On start the service
puts every job it finds ``running`` back to ``queued`` (its process died mid-job; the partial
output was never renamed into place) and the workers take them up again. Run the service
on the GPU host so long jobs run where the GPU is (docs/serve.md).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ACTIVE", "FINAL", "Cancelled", "Job", "JobStore", "JobWorkers"]

ACTIVE = ("queued", "running")
FINAL = ("completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    filename TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    options TEXT NOT NULL,
    callback_url TEXT,
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER,
    started REAL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    error TEXT,
    result TEXT,
    cancel INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


class Cancelled(Exception):
    """Raised inside a running job when its cancel flag is set."""


@dataclass
class Job:
    id: str
    owner: str
    state: str
    filename: str
    input: Path
    output: Path
    options: dict[str, Any]
    callback_url: str | None
    frames_done: int
    frames_total: int | None
    started: float | None
    created: str
    updated: str
    error: str | None
    result: dict[str, Any] | None
    cancel: bool
    attempts: int

    @property
    def folder(self) -> Path:
        return self.input.parent


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JobStore:
    """The job table (one SQLite file, a connection per call, WAL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders = root / "jobs"
        self.folders.mkdir(parents=True, exist_ok=True)
        self.path = root / "jobs.sqlite"
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def _job(self, row: sqlite3.Row) -> Job:
        d = dict(row)
        return Job(
            **{
                **d,
                "input": Path(d["input"]),
                "output": Path(d["output"]),
                "options": json.loads(d["options"]),
                "result": json.loads(d["result"]) if d["result"] else None,
                "cancel": bool(d["cancel"]),
            }
        )

    def new_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.folders / job_id
        folder.mkdir()
        return job_id, folder

    def create(
        self,
        job_id: str,
        owner: str,
        filename: str,
        input: Path,
        output: Path,
        options: dict[str, Any],
        callback_url: str | None,
        frames_total: int | None,
        max_active: int,
    ) -> Job | None:
        """Insert a queued job; ``None`` when ``owner`` already has ``max_active`` active jobs
        (checked and inserted in one transaction)."""
        now = _now()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            (active,) = db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE owner=? AND state IN {ACTIVE}", (owner,)
            ).fetchone()
            if active >= max_active:
                db.execute("ROLLBACK")
                return None
            db.execute(
                "INSERT INTO jobs (id, owner, state, filename, input, output, options, callback_url, frames_total,"
                " created, updated) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    owner,
                    filename,
                    str(input),
                    str(output),
                    json.dumps(options),
                    callback_url,
                    frames_total,
                    now,
                    now,
                ),
            )
            db.execute("COMMIT")
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def update(self, job_id: str, **fields: Any) -> None:
        if "result" in fields and fields["result"] is not None:
            fields["result"] = json.dumps(fields["result"])
        fields["updated"] = _now()
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    def claim(self) -> Job | None:
        """The oldest queued job, now ``running`` (atomically: two workers never share one)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            db.execute(
                "UPDATE jobs SET state='running', started=?, frames_done=0, attempts=attempts+1, updated=? WHERE id=?",
                (time.time(), _now(), row["id"]),
            )
            db.execute("COMMIT")
        return self.get(row["id"])

    def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one is flagged (its worker stops it)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE jobs SET state='cancelled', cancel=1, updated=? WHERE id=? AND state='queued'",
                (_now(), job_id),
            )
            db.execute("UPDATE jobs SET cancel=1, updated=? WHERE id=? AND state='running'", (_now(), job_id))
            db.execute("COMMIT")
        return self.get(job_id)

    def requeue_running(self) -> list[str]:
        """Jobs left ``running`` by a process that died: back to ``queued`` (on start)."""
        with self._db() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE state='running'")]
            db.execute("UPDATE jobs SET state='queued', frames_done=0, updated=? WHERE state='running'", (_now(),))
        return ids

    def count_by_state(self) -> dict[str, int]:
        with self._db() as db:
            return {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def cancel_flag(self, job_id: str) -> bool:
        with self._db() as db:
            row = db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])


class JobWorkers:
    """Threads that take queued jobs and run ``run(job, progress)``; ``progress(done)`` records
    frames done and raises :class:`Cancelled` when the job's cancel flag is set."""

    def __init__(
        self,
        store: JobStore,
        run: Callable[[Job, Callable[[int], None]], dict[str, Any]],
        *,
        workers: int = 1,
        on_final: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.store = store
        self._run = run
        self._on_final = on_final
        self._stop = threading.Event()
        self._wake = threading.Event()
        requeued = store.requeue_running()
        if requeued:
            logger.warning("resuming %d job(s) interrupted by a restart: %s", len(requeued), ", ".join(requeued))
        self._threads = [
            threading.Thread(target=self._loop, name=f"job-worker-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._execute(job)

    def _execute(self, job: Job) -> None:
        last = [0.0]

        def progress(done: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.25:  # a write per quarter second, not per frame
                last[0] = now
                self.store.update(job.id, frames_done=done)
                if self.store.cancel_flag(job.id):
                    raise Cancelled(job.id)
            if self._stop.is_set():
                raise Cancelled(job.id)

        try:
            result = self._run(job, progress)
        except BaseException as exc:
            if self._stop.is_set() and not self.store.cancel_flag(job.id):
                # shutting down (whatever the job's own error then): it stays running and the
                # next start resumes it
                logger.info("job %s interrupted by shutdown (%s); resumed on the next start", job.id, exc)
                return
            if not isinstance(exc, Exception):
                raise
            self._record_failure(job, exc)
        else:
            self.store.update(
                job.id, state="completed", result=result, frames_done=result.get("frames", job.frames_done)
            )
            _remove_input(job)
        final = self.store.get(job.id)
        if final is not None:
            self._on_final(final)

    def _record_failure(self, job: Job, exc: Exception) -> None:
        if isinstance(exc, Cancelled):
            self.store.update(job.id, state="cancelled", error="cancelled by request")
        else:  # a failed job is recorded, the worker lives on
            logger.warning("job %s failed: %s", job.id, exc)
            self.store.update(job.id, state="failed", error=f"{type(exc).__name__}: {exc}")
        _remove_input(job)


def _remove_input(job: Job) -> None:
    job.input.unlink(missing_ok=True)


def remove_job_files(job: Job) -> None:
    shutil.rmtree(job.folder, ignore_errors=True)
