"""Change notifications between nodes that share one PostgreSQL database.

Theory of operation. Each node keeps the accounts, API tokens, webhooks and the directory
(agents, queues, campaigns, routes) in memory, loaded at start from the database. When one node
changes them, the transaction that writes the change also runs ``pg_notify`` on `CHANNEL`
(`notify_statement`: PostgreSQL delivers it when, and only if, the transaction commits) with the
kind of change (`ACCOUNTS`: accounts, tokens and the directory, which the account book writes;
`WEBHOOKS`) and the writing process's `ORIGIN`. Every node runs a `ChangeListener`: one asyncpg
connection of its own that ``LISTEN``s on the channel and, for each notification of another
process, runs the reload of that kind (read the tables again, apply the difference). So a token
revoked on node A is refused on node B once B has read it again: within a few milliseconds of
the commit on a LAN.

A notification is not queued for a listener that is not connected: after every ``LISTEN`` (the
first, and each reconnection after the connection was lost, retried with backoff) the listener
reloads every kind, so a change made while it was away is applied too, and a node is never left
stale by a missed notification. A connection that died silently is found by a ``SELECT 1``
every `KEEPALIVE` seconds of quiet.

SQLite (one node) has no listeners and no notifications: `notify_statement` gives None.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import asyncpg

from omlmedia.storage_pg import PgConnection, PgError, redact

__all__ = [
    "ACCOUNTS",
    "CHANNEL",
    "ORIGIN",
    "WEBHOOKS",
    "ChangeListener",
    "notify_statement",
]

logger = logging.getLogger(__name__)

CHANNEL: Final = "omlmedia_changes"
"""The PostgreSQL notification channel."""

ACCOUNTS: Final = "accounts"
"""Accounts, API tokens, and the directory's agents, queues, campaigns and routes."""

WEBHOOKS: Final = "webhooks"
"""Webhook subscriptions."""

ORIGIN: Final = secrets.token_hex(6)
"""This process: its own notifications are not reloaded (its memory is already current)."""

APPLICATION: Final = "omlmedia-notify"
"""The listener's ``application_name`` (seen in ``pg_stat_activity``)."""

KEEPALIVE: Final = 5.0
"""Seconds of quiet after which the listener checks that its connection is alive."""


def notify_statement(db: Any, kind: str) -> tuple[str, tuple[Any, ...]] | None:
    """The statement that tells the other nodes about a change of `kind`, to run inside the
    transaction that writes it; None when `db` is not PostgreSQL (one node, nobody to tell)."""
    if not isinstance(db, PgConnection):
        return None
    return "SELECT pg_notify(?, ?)", (CHANNEL, f"{kind} {ORIGIN}")


Reload = Callable[[], Awaitable[None]]


class ChangeListener:
    """Listens on `CHANNEL` at `dsn` and runs `reloads[kind]` for every change of another
    process; every reload after each (re)connection. Runs on the server's event loop."""

    def __init__(
        self,
        dsn: str,
        reloads: Mapping[str, Reload],
        *,
        retry: float = 0.5,
        most: float = 5.0,
        origin: str = ORIGIN,
    ) -> None:
        self.dsn = dsn
        self.origin = origin
        """Notifications of this origin are skipped (this process's own: its memory is current)."""
        self.reloads = dict(reloads)
        self.retry = retry
        self.most = most
        self.connected = asyncio.Event()
        """Set while listening (after the reload that follows each connection)."""
        self.reloaded = 0
        """Reloads run (of any kind) since start."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (in the background)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _reload(self, kinds: set[str]) -> None:
        for kind in sorted(kinds):
            reload = self.reloads.get(kind)
            if reload is None:
                continue
            try:
                await reload()
                self.reloaded += 1
            except Exception:
                logger.exception("reloading %s after a change on another node failed", kind)

    async def _run(self) -> None:
        delay = self.retry
        while True:
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    self.dsn, timeout=10, server_settings={"application_name": APPLICATION}
                )
            except (*PgError, asyncpg.PostgresError) as exc:
                logger.warning("change notifications: %s: %s; retrying", redact(self.dsn), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.most)
                continue
            delay = self.retry
            try:
                await self._listen(conn)
            except (*PgError, asyncpg.PostgresError) as exc:
                logger.warning("change notifications: connection lost (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        inbox: asyncio.Queue[str | None] = asyncio.Queue()

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            inbox.put_nowait(payload)

        conn.add_termination_listener(lambda _conn: inbox.put_nowait(None))
        await conn.add_listener(CHANNEL, heard)
        # Whatever changed while not listening (or between loading at start and now).
        await self._reload(set(self.reloads))
        self.connected.set()
        while True:
            try:
                payload = await asyncio.wait_for(inbox.get(), KEEPALIVE)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=KEEPALIVE)
                continue
            payloads = [payload]
            while not inbox.empty():
                payloads.append(inbox.get_nowait())
            if None in payloads:
                raise ConnectionResetError("the notification connection closed")
            kinds = set()
            for text in payloads:
                assert text is not None
                kind, _, origin = text.partition(" ")
                if origin != self.origin:
                    kinds.add(kind)
            if kinds:
                await self._reload(kinds)

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
