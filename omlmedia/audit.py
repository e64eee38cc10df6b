"""The audit log: who changed what, when, from what to what.

Every administrative change (accounts, tokens) and every supervisor action (pause, unpause, log
out an agent) is one row of ``audit_log``: the `time`, the `actor` (an account's name,
``integration:<name>``, ``bootstrap`` for the configured API token, ``config`` for what the
configuration file seeds at start), its `role`, the `action` (``account.create``,
``token.revoke``, ``agent.pause``...), the `target` (the account, token or agent acted on), and
the `before` and `after` views (JSON; never a password hash or a token). An administrative change
and its audit row are written in one transaction (`omlmedia.accounts.AccountBook`), so neither is
ever stored without the other. Rows are only ever appended.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AuditEntry", "append", "entries", "entries_page"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log (`id` is 0 until stored)."""

    time: float
    actor: str
    role: str
    action: str
    target: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    id: int = 0

    def view(self) -> dict[str, Any]:
        """The entry as the API serves it."""
        return {
            "id": self.id,
            "time": self.time,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "before": dict(self.before) if self.before is not None else None,
            "after": dict(self.after) if self.after is not None else None,
        }


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), default=str, separators=(",", ":"))


def append(db: sqlite3.Connection, entry: AuditEntry) -> None:
    """Insert `entry` (inside the caller's transaction)."""
    db.execute(
        "INSERT INTO audit_log (time, actor, role, action, target, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            entry.time,
            entry.actor,
            entry.role,
            entry.action,
            entry.target,
            _json(entry.before),
            _json(entry.after),
        ),
    )


def _where(
    since: float,
    until: float,
    actor: str | None,
    action: str | None,
    target: str | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of entries in [since, until) by `actor`, `action`
    (a prefix when it ends in ``.`` or ``*``) and `target` when given."""
    sql = "time >= ?"
    args: list[Any] = [since]
    if until != float("inf"):
        sql += " AND time < ?"
        args.append(until)
    if actor is not None:
        sql += " AND actor = ?"
        args.append(actor)
    if target is not None:
        sql += " AND target = ?"
        args.append(target)
    if action is not None:
        if action.endswith(("*", ".")):
            sql += " AND substr(action, 1, ?) = ?"
            prefix = action.rstrip("*")
            args += [len(prefix), prefix]
        else:
            sql += " AND action = ?"
            args.append(action)
    return sql, args


_SELECT = "SELECT id, time, actor, role, action, target, before, after FROM audit_log"


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    ident, time, who, role, what, target, before, after = row
    return AuditEntry(
        time,
        who,
        role,
        what,
        target,
        json.loads(before) if before is not None else None,
        json.loads(after) if after is not None else None,
        ident,
    )


def entries(
    db: sqlite3.Connection,
    since: float = 0.0,
    until: float = float("inf"),
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[AuditEntry]:
    """Stored entries in [since, until) in time order, by `actor`, `action` and `target` when
    given (`action` ending in ``.`` or ``*`` matches a prefix: ``account.`` is every account
    change)."""
    where, args = _where(since, until, actor, action, target)
    return [_entry(row) for row in db.execute(f"{_SELECT} WHERE {where} ORDER BY time, id", args)]


def entries_page(
    db: sqlite3.Connection,
    since: float = 0.0,
    until: float = float("inf"),
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[AuditEntry], int]:
    """One page of `entries` cut in SQL (``LIMIT``/``OFFSET`` over the time index), and how
    many entries the span holds with those filters."""
    where, args = _where(since, until, actor, action, target)
    row = db.execute(f"SELECT COUNT(*) FROM audit_log WHERE {where}", args).fetchone()
    rows = db.execute(
        f"{_SELECT} WHERE {where} ORDER BY time, id LIMIT ? OFFSET ?", [*args, limit, offset]
    )
    return [_entry(r) for r in rows], int(row[0]) if row else 0
