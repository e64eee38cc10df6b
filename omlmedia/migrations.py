"""Schema migrations of the store: an ordered list of steps, applied at start.

Theory of operation. The database records the version it is at (`meta.schema_version`). At
start, `migrate()` applies every step above that version, each in its own transaction together
with the new version number, so a crash mid-migration leaves the database at the last complete
step and the next start resumes there. A database from a newer release (a version above the
last step) is refused rather than written with a schema this code does not know. Steps are only
ever appended: a released step never changes.

One list for both databases. A step is written in SQLite's SQL and runs unchanged on SQLite; on
PostgreSQL (``[storage] dsn``) `omlmedia.storage_pg.translate` rewrites the few differences
(``INTEGER PRIMARY KEY`` → an identity column, ``INTEGER`` → ``BIGINT``, ``REAL`` → ``DOUBLE
PRECISION``, ``?`` → ``$n``, the column name ``end`` quoted) and `omlmedia.storage_pg.migrate_pg`
holds an advisory lock so that nodes starting together apply each step once. To add a step that
runs on both: use only the types ``INTEGER``, ``REAL``, ``TEXT``; ``INTEGER PRIMARY KEY`` for an
automatic id; ``IF NOT EXISTS``; no ``AUTOINCREMENT``, no ``INSERT OR REPLACE``/``OR IGNORE``
(write ``ON CONFLICT (...) DO UPDATE``/``DO NOTHING``), no SQLite-only function, no column named
after a word PostgreSQL reserves (``user``, ``order``, ``limit``...). ``ALTER TABLE t ADD COLUMN
c TEXT NOT NULL DEFAULT ''`` works on both. ``tests/omlmedia/test_storage_pg.py`` applies
every step on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MIGRATIONS", "Migration", "SchemaTooNewError", "migrate", "schema_version"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: the version it brings the database to, what it does, and its statements."""

    version: int
    name: str
    statements: tuple[str, ...]


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer release than this one."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "queue log, call records, calls in progress",
        (
            "CREATE TABLE IF NOT EXISTS queue_log ("
            " id INTEGER PRIMARY KEY, time REAL NOT NULL, call_id TEXT NOT NULL DEFAULT '',"
            " queue TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL DEFAULT '',"
            " event TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}')",
            "CREATE INDEX IF NOT EXISTS queue_log_time ON queue_log (time)",
            "CREATE INDEX IF NOT EXISTS queue_log_call ON queue_log (call_id)",
            "CREATE TABLE IF NOT EXISTS cdr ("
            " id INTEGER PRIMARY KEY, call_id TEXT NOT NULL UNIQUE, start REAL NOT NULL,"
            " answer REAL, end REAL NOT NULL, direction TEXT NOT NULL DEFAULT 'inbound',"
            " caller TEXT NOT NULL DEFAULT '', caller_name TEXT NOT NULL DEFAULT '',"
            " callee TEXT NOT NULL DEFAULT '', target TEXT NOT NULL DEFAULT '',"
            " trunk TEXT NOT NULL DEFAULT '', campaign TEXT NOT NULL DEFAULT '',"
            " queue TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL DEFAULT '',"
            " disposition TEXT NOT NULL DEFAULT '', notes TEXT NOT NULL DEFAULT '',"
            " hangup_by TEXT NOT NULL DEFAULT '', cause TEXT NOT NULL DEFAULT '',"
            " recording TEXT NOT NULL DEFAULT '', legs TEXT NOT NULL DEFAULT '[]')",
            "CREATE INDEX IF NOT EXISTS cdr_start ON cdr (start)",
            "CREATE TABLE IF NOT EXISTS open_calls ("
            " call_id TEXT PRIMARY KEY, start REAL NOT NULL, data TEXT NOT NULL DEFAULT '{}')",
        ),
    ),
    Migration(
        2,
        "the event log: every event with its monotonic id",
        (
            "CREATE TABLE IF NOT EXISTS events ("
            " id INTEGER PRIMARY KEY, time REAL NOT NULL, type TEXT NOT NULL,"
            " call_id TEXT NOT NULL DEFAULT '', queue TEXT NOT NULL DEFAULT '',"
            " agent TEXT NOT NULL DEFAULT '', campaign TEXT NOT NULL DEFAULT '',"
            " data TEXT NOT NULL DEFAULT '{}')",
            "CREATE INDEX IF NOT EXISTS events_time ON events (time)",
        ),
    ),
    Migration(
        3,
        "accounts, API tokens, audit log",
        (
            "CREATE TABLE IF NOT EXISTS accounts ("
            " name TEXT PRIMARY KEY, role TEXT NOT NULL, display_name TEXT NOT NULL DEFAULT '',"
            " password_hash TEXT NOT NULL DEFAULT '', scope TEXT,"
            " disabled INTEGER NOT NULL DEFAULT 0, origin TEXT NOT NULL DEFAULT 'api',"
            " created REAL NOT NULL, updated REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS api_tokens ("
            " id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL, account TEXT,"
            " integration TEXT, role TEXT, scope TEXT, label TEXT NOT NULL DEFAULT '',"
            " created REAL NOT NULL, created_by TEXT NOT NULL DEFAULT '', expires REAL,"
            " revoked REAL)",
            "CREATE INDEX IF NOT EXISTS api_tokens_account ON api_tokens (account)",
            "CREATE TABLE IF NOT EXISTS audit_log ("
            " id INTEGER PRIMARY KEY, time REAL NOT NULL, actor TEXT NOT NULL,"
            " role TEXT NOT NULL DEFAULT '', action TEXT NOT NULL,"
            " target TEXT NOT NULL DEFAULT '', before TEXT, after TEXT)",
            "CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time)",
        ),
    ),
    Migration(
        4,
        "webhook subscriptions and their outbox",
        (
            "CREATE TABLE IF NOT EXISTS webhooks ("
            " id TEXT PRIMARY KEY, url TEXT NOT NULL, types TEXT NOT NULL DEFAULT '[]',"
            " scope TEXT, secret TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,"
            " verify_tls INTEGER NOT NULL DEFAULT 1, description TEXT NOT NULL DEFAULT '',"
            " created REAL NOT NULL, updated REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS webhook_outbox ("
            " webhook TEXT NOT NULL, event_id INTEGER NOT NULL,"
            " call_id TEXT NOT NULL DEFAULT '', body TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
            " last_error TEXT NOT NULL DEFAULT '', updated REAL NOT NULL,"
            " PRIMARY KEY (webhook, event_id))",
            "CREATE INDEX IF NOT EXISTS webhook_outbox_status ON webhook_outbox (status)",
        ),
    ),
    Migration(
        5,
        "queues managed at run time, and what the configuration file seeded",
        (
            "CREATE TABLE IF NOT EXISTS queues ("
            " name TEXT PRIMARY KEY, settings TEXT NOT NULL DEFAULT '{}',"
            " origin TEXT NOT NULL DEFAULT 'api', created REAL NOT NULL, updated REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS config_seeds ("
            " kind TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL,"
            " PRIMARY KEY (kind, name))",
        ),
    ),
    Migration(
        6,
        "campaigns changed at run time",
        (
            "CREATE TABLE IF NOT EXISTS campaigns ("
            " name TEXT PRIMARY KEY, settings TEXT NOT NULL DEFAULT '{}',"
            " origin TEXT NOT NULL DEFAULT 'config', created REAL NOT NULL,"
            " updated REAL NOT NULL)",
        ),
    ),
    Migration(
        7,
        "routes (DIDs) created at run time",
        (
            "CREATE TABLE IF NOT EXISTS routes ("
            " name TEXT PRIMARY KEY, settings TEXT NOT NULL DEFAULT '{}',"
            " origin TEXT NOT NULL DEFAULT 'api', created REAL NOT NULL,"
            " updated REAL NOT NULL)",
        ),
    ),
    Migration(
        8,
        "the node that wrote each event (nodes sharing one PostgreSQL database)",
        (
            "ALTER TABLE events ADD COLUMN node TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX IF NOT EXISTS events_node ON events (node, id)",
        ),
    ),
    Migration(
        9,
        "pause reasons administered at run time",
        (
            "CREATE TABLE IF NOT EXISTS pause_reasons ("
            " name TEXT PRIMARY KEY, origin TEXT NOT NULL DEFAULT 'api', created REAL NOT NULL)",
        ),
    ),
    Migration(
        10,
        "named disposition sets administered at run time",
        (
            "CREATE TABLE IF NOT EXISTS disposition_sets ("
            " name TEXT PRIMARY KEY, settings TEXT NOT NULL DEFAULT '{}',"
            " origin TEXT NOT NULL DEFAULT 'api', created REAL NOT NULL,"
            " updated REAL NOT NULL)",
        ),
    ),
    Migration(
        11,
        "each event's place in the commit order of every node (the cluster-wide event stream)",
        (
            # Given by PostgreSQL writers in commit order (`omlmedia.storage.Store.flush`);
            # the events stored before get their id. SQLite (one node) leaves it empty.
            "ALTER TABLE events ADD COLUMN pos INTEGER",
            "UPDATE events SET pos = id",
            "CREATE INDEX IF NOT EXISTS events_pos ON events (pos)",
        ),
    ),
)
"""Every step, in order. Append new steps at the end with the next version number."""


def schema_version(db: Any) -> int:
    """The version the database is at (0 for a new, empty database). `db`: a
    `sqlite3.Connection` (``isolation_level=None``) or an `omlmedia.storage_pg.PgConnection`,
    which takes the same calls."""
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: Any, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring `db` (opened with ``isolation_level=None``) to the last step; returns the versions
    applied. Raises `SchemaTooNewError` for a database newer than the last step."""
    current = schema_version(db)
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise SchemaTooNewError(
            f"the database is at schema version {current}; this release knows up to {latest}"
        )
    applied: list[int] = []
    for step in migrations:
        if step.version <= current:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in step.statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(step.version),),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied.append(step.version)
    return applied
