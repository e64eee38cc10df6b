"""Schema migrations: applied once, in order, each step atomic; a newer database is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from omlmedia.migrations import (
    MIGRATIONS,
    Migration,
    SchemaTooNewError,
    migrate,
    schema_version,
)
from omlmedia.storage import QueueLogRow, Store


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def test_a_new_database_gets_every_step_and_a_second_start_applies_none(tmp_path: Path) -> None:
    db = connect(tmp_path / "a.db")
    assert migrate(db) == [step.version for step in MIGRATIONS]
    assert schema_version(db) == MIGRATIONS[-1].version
    assert migrate(db) == []


def test_steps_are_numbered_one_after_another() -> None:
    assert [step.version for step in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_a_database_of_the_first_release_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for statement in MIGRATIONS[0].statements:
        db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO queue_log (time, event) VALUES (1.0, 'enter')")
    db.close()
    store = Store(path)
    assert [row.event for row in store.queue_log()] == ["enter"]
    store.append(QueueLogRow(time=2.0, event="abandon"))
    store.flush()
    assert [row.event for row in store.queue_log()] == ["enter", "abandon"]
    store.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = connect(tmp_path / "new.db")
    migrate(db)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(SchemaTooNewError, match="schema version 999"):
        migrate(db)


def test_a_failing_step_leaves_the_last_complete_version_and_a_retry_resumes(
    tmp_path: Path,
) -> None:
    db = connect(tmp_path / "c.db")
    good = Migration(1, "t", ("CREATE TABLE t (x INTEGER)",))
    broken = Migration(2, "u", ("CREATE TABLE u (x INTEGER)", "INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, (good, broken))
    assert schema_version(db) == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'u'").fetchone() is None
    fixed = Migration(2, "u", ("CREATE TABLE u (x INTEGER)",))
    assert migrate(db, (good, fixed)) == [2]
    assert schema_version(db) == 2
