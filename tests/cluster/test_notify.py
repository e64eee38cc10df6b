"""Change notifications between nodes sharing one PostgreSQL database (`omlmedia.notify`), with
two account books on a throwaway PostgreSQL: a change committed by one reaches the other's
listener; a change made while the listener's connection was cut (its notification lost) is
applied by the full reload that follows the reconnection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from omlmedia.accounts import AccountBook
from omlmedia.authz import Identity, Role
from omlmedia.notify import ACCOUNTS, APPLICATION, ChangeListener
from omlmedia.storage import Store
from tests.cluster import postgres

ADMIN = Identity("admin", Role.ADMIN, None)


async def until(check: Callable[[], bool], what: str) -> None:
    # Generous: a notification, a reload, or a reconnection (retry 0.05 s) and a reload, each
    # with PostgreSQL round trips on a shared machine; nothing else applies the change.
    deadline = time.monotonic() + 15.0
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_change_missed_while_the_listener_was_cut_off_is_applied_after_it_reconnects(
    pg: postgres.Postgres,
) -> None:
    dsn = postgres.fresh_database(pg)
    a, b = AccountBook(dsn), AccountBook(dsn)

    async def reload_b() -> None:
        await b.call(b.reload)

    # Both books live in this process: b's listener must not skip a's changes as its own.
    listener = ChangeListener(dsn, {ACCOUNTS: reload_b}, retry=0.05, origin="b")
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        token, row = await a.call(a.create_token, ADMIN, integration="crm", role=Role.SUPERVISOR)
        await until(lambda: b.authenticate(token) is not None, "b never heard of the token")

        # A change whose notification never reaches b (written without one, as if it had been
        # sent while b was not listening): b is stale...
        store = Store(dsn)
        db = store.connect()
        try:
            db.execute("UPDATE api_tokens SET revoked = ? WHERE id = ?", (time.time(), row.id))
            await asyncio.sleep(0.3)
            assert b.authenticate(token) is not None
            # ...until its connection is cut: it reconnects, and reloads everything.
            cut = db.execute(  # this test's database only: the PostgreSQL is the package's
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = ? AND datname = current_database()",
                (APPLICATION,),
            ).fetchall()
            assert cut == [(True,)], cut
        finally:
            db.close()
            store.close()
        await until(
            lambda: b.authenticate(token) is None,
            "the reload after reconnecting did not apply the missed change",
        )
        # Connected is set once that reload returned: b's thread applies the change a moment
        # before, so waited for, not read at once.
        await asyncio.wait_for(listener.connected.wait(), 10)
    finally:
        await listener.close()
        a.close()
        b.close()
