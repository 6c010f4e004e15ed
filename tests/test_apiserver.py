"""The temporary API server skips Prefect's migration check only when Prefect's default database
still has the revision this Prefect version migrated it to; any doubt means it migrates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tasks import apiserver


def _database(home: Path, revision: str) -> Path:
    db = home / "prefect.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("DELETE FROM alembic_version")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    return db


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.chdir(tmp_path)  # no .env or prefect.toml of the checkout
    for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "prefect").mkdir()
    return tmp_path / "prefect"


def test_no_record_or_no_database_means_migrate(home):
    assert not apiserver.database_is_current()
    _database(home, "abc123")
    assert not apiserver.database_is_current()  # never recorded


def test_a_recorded_revision_is_current_until_the_database_changes(home, monkeypatch):
    db = _database(home, "abc123")
    apiserver._record_migration()
    assert apiserver.database_is_current()
    _database(home, "def456")  # migrated by someone else since
    assert not apiserver.database_is_current()
    _database(home, "abc123")
    monkeypatch.setattr(apiserver, "_prefect_version", lambda: "0.0.1")  # another Prefect
    assert not apiserver.database_is_current()
    monkeypatch.undo()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    db.unlink()
    assert not apiserver.database_is_current()


def test_another_configured_database_is_never_skipped(home, monkeypatch, tmp_path):
    _database(home, "abc123")
    apiserver._record_migration()
    assert apiserver.database_is_current()
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    assert not apiserver.database_is_current()
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL")
    (tmp_path / "prefect.toml").write_text('[server.database]\nconnection_url = "sqlite+aiosqlite:////x.db"\n')
    assert not apiserver.database_is_current()
