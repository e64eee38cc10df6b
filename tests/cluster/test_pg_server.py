"""A real `omlmedia serve` configured with ``[storage] dsn`` keeps its records in PostgreSQL: a
sipp call into a queue leaves its queue log, its call record and its events there, the accounts
the file seeds are there, and there is no SQLite file in the data dir."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from benchmarks import harness
from omlmedia.storage import Store
from tests.cluster import postgres
from tests.interop.harness import run_sipp
from tests.interop.pages import calls_over


def test_a_server_on_postgresql_stores_a_sipp_calls_record_and_queue_log_there(
    pg: postgres.Postgres, tmp_path: Path
) -> None:
    dsn = postgres.fresh_database(pg)
    storage = f'\n[storage]\ndsn = "{dsn}"\nnode = "n1"\n'
    try:
        server = harness.start_server(tmp_path / "node", edit_config=lambda text: text + storage)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        result = run_sipp(
            [
                *("-sn", "uac", f"127.0.0.1:{server.sip_port}", "-s", "sales"),
                *("-i", "127.0.0.1", "-p", "0", "-m", "1", "-d", "1500"),
            ],
            tmp_path,
        )
        assert result.returncode == 0, result.output + result.errors
        calls_over(server)
    finally:
        assert server.stop() == 0, server.log()[-3000:]
    store = Store(dsn)
    try:
        deadline = time.monotonic() + 10
        while not store.call_records():
            assert time.monotonic() < deadline, "no call record reached PostgreSQL"
            time.sleep(0.1)
        (record,) = store.call_records()
        # The caller hung up while waiting in the queue: no agent answered it.
        assert (record.queue, record.answer, record.hangup_by) == ("sales", None, "caller")
        assert record.end - record.start > 1.0
        events = [row.event for row in store.queue_log(call_id=record.call_id)]
        assert events[0] == "enter" and "abandon" in events, events
        stored = [row[2] for row in store.all_events(0, 100) if row[3] == record.call_id]
        assert "call.ended" in stored, stored
        assert store.open_calls() == []
        # The accounts (the agents the file declares) and their audit are there too.
        db = store.connect()
        try:
            names = {row[0] for row in db.execute("SELECT name FROM accounts")}
            assert {"agent1", "agent2"} <= names, names
            assert db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] > 0
        finally:
            db.close()
    finally:
        store.close()
    assert not (tmp_path / "node" / "data" / "omlmedia.db").exists()


def test_a_node_given_a_missing_database_does_not_start(
    pg: postgres.Postgres, tmp_path: Path
) -> None:
    missing = pg.database("nowhere")
    with pytest.raises(harness.ServerStartError) as refused:
        harness.start_server(
            tmp_path / "missing",
            edit_config=lambda text: text + f'\n[storage]\ndsn = "{missing}"\nnode = "n1"\n',
            timeout=30,
        )
    message = str(refused.value)
    assert "exited at start (status 2)" in message, message
    assert 'database "nowhere" does not exist' in message, message


def test_a_node_killed_mid_call_records_the_call_as_lost_in_postgresql_when_it_restarts(
    pg: postgres.Postgres, tmp_path: Path
) -> None:
    dsn = postgres.fresh_database(pg)
    storage = f'\n[storage]\ndsn = "{dsn}"\nnode = "n1"\n'
    server = harness.start_server(tmp_path / "node", edit_config=lambda text: text + storage)
    caller = threading.Thread(
        target=run_sipp,
        args=(
            [
                *("-sn", "uac", f"127.0.0.1:{server.sip_port}", "-s", "support"),
                # 5 s on the line: the node is killed as soon as the call is committed (0.2 s)
                *("-i", "127.0.0.1", "-p", "0", "-m", "1", "-d", "5000", "-recv_timeout", "3000"),
            ],
            tmp_path,
        ),
    )
    caller.start()
    store = Store(dsn)
    try:
        deadline = time.monotonic() + 10
        while not store.open_calls():  # committed: the call is known to the database
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.05)
        (call_id,) = store.open_calls()
        server.process.kill()
        server.process.wait()
        caller.join(30)
        restarted = harness.start_server(tmp_path / "node", edit_config=lambda text: text + storage)
        try:
            record = store.call_record(call_id)
            assert record is not None and record.cause == "server-restart"
            assert record.queue == "support"
            events = [row.event for row in store.queue_log(call_id=call_id)]
            assert events[0] == "enter" and events[-1] == "closed-at-restart", events
            assert store.open_calls() == []
        finally:
            assert restarted.stop() == 0
    finally:
        store.close()
