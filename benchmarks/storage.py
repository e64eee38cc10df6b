"""The store's cost, SQLite against PostgreSQL: what a node pays to keep its records.

    python benchmarks/storage.py [call|batch|both] [--calls 400] [--runs 3] [--per-flush 20]

Section ``call`` (the cluster's question: what PostgreSQL's writes cost a node per call, as
work, not over a time window): the real writer (`omlmedia.storage.Store.flush`, as the server's
`AsyncStore` runs it every 0.2 s) commits one call's rows at a time, which is what a node at a
few calls a second flushes (`benchmarks/cluster.py ops`: ~1.3 transactions a call). Two shapes
of call: ``events``, a plain call of the cluster (`echo`: its three events, nothing else, one
flush) and ``queue``, a queue call (its open-call row, two queue log entries, six events, its
record with the legs' quality replacing the open-call row: two flushes, its start and its end).
Each run writes `--calls` calls of each shape to SQLite (a temp dir, WAL, synchronous=FULL) and
to a throwaway PostgreSQL (`benchmarks/pgserver.py`, fsync on, synchronous_commit on), in turn,
after 20 calls of warm-up; `--runs` runs, medians reported. Counted over the fixed number of
calls, so other work on the machine changes the wall clock, not the figures:

- ``process_us``: this process's CPU per call (`time.process_time`: every thread), split into
  ``writer_us`` (the thread calling `flush`) and ``connection_us`` (PostgreSQL's connection
  thread, `omlmedia.storage_pg.PgConnection`), read from ``/proc/self/task/*/schedstat``;
- ``backend_us``: the PostgreSQL backend process serving the writer's connection
  (``/proc/<pid>/schedstat``), and ``instance_us``: every process of the instance (the backend,
  the WAL writer, the checkpointer... from their ``/proc`` times, 10 ms ticks);
- ``round_trips_per_flush``: requests the connection sent and waited an answer for (writes to
  its socket), ``transactions_per_flush`` (PostgreSQL's transaction ids drawn) and ``wal_bytes``
  per call;
- ``ratio``: PostgreSQL's process CPU over SQLite's, and with the backend added.

Section ``batch``: 20 queue calls a flush (`--per-flush`), as the writer does at 100 calls a
second: the flush time per call (wall clock), the calls a second one writer sustains, the
writer's CPU per call and, for PostgreSQL, the whole instance's CPU per call.

Measured figures and how they were taken: ``docs/cluster.md`` ("PostgreSQL's writes per call").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from omlmedia.storage import CallRecord, QueueLogRow, Store  # noqa: E402

LOG_EVENTS = ("enter", "offer", "ringing", "answer", "complete", "wrapup")
EVENT_TYPES = (
    "call.started",
    "queue.entered",
    "agent.offered",
    "agent.ringing",
    "call.answered",
    "agent.state",
    "call.ended",
    "agent.wrapup",
)
TICKS = os.sysconf("SC_CLK_TCK")


def write_calls(store: Store, calls: int, per_flush: int) -> dict[str, float]:
    """Write `calls` calls' rows, flushing every `per_flush` calls; the time spent flushing and
    the writer's CPU over the run (seconds)."""
    event_id = store.last_event_id()
    flushing = 0.0
    cpu = time.process_time()
    base = 1_765_000_000.0
    for n in range(calls):
        call_id = f"bench-{n}"
        start = base + n * 0.01
        store.call_started(call_id, start, {"queue": "support", "caller": f"555{n:04d}"})
        for step, event in enumerate(LOG_EVENTS):
            store.append(
                QueueLogRow(start + step, event, call_id, "support", "agent1", {"n": step})
            )
        for step, kind in enumerate(EVENT_TYPES):
            event_id += 1
            data = json.dumps({"call_id": call_id, "step": step}, separators=(",", ":"))
            store.append_event(
                (event_id, start + step, kind, call_id, "support", "agent1", "", data)
            )
        store.call_ended(
            CallRecord(
                call_id,
                start,
                start + 60.0,
                start + 3.0,
                caller=f"555{n:04d}",
                queue="support",
                agent="agent1",
                hangup_by="caller",
                cause="bye",
                legs=({"role": "caller", "codec": "PCMU", "mos": 4.3},),
            )
        )
        if (n + 1) % per_flush == 0 or n + 1 == calls:
            started = time.perf_counter()
            store.flush()
            flushing += time.perf_counter() - started
    return {"flush_seconds": flushing, "writer_cpu_seconds": time.process_time() - cpu}


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu(directory: Path) -> float:
    """The CPU seconds of the instance in `directory` so far: its postmaster's own and that of
    its children, those it has reaped (cutime, cstime) and those alive."""
    postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    fields = _stat(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    for child in children:
        try:
            fields = _stat(int(child))
        except OSError:
            continue  # gone since the listing: its time is in the postmaster's cutime now
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


def measure(location: Path | str, calls: int, per_flush: int) -> dict[str, Any]:
    """One backend's figures."""
    store = Store(location, node="bench", writer=True)
    try:
        figures = write_calls(store, calls, per_flush)
        written = len(store.call_records())
    finally:
        store.close()
    return {
        "calls": calls,
        "records_written": written,
        "flush_us_per_call": round(figures["flush_seconds"] / calls * 1e6, 1),
        "calls_per_second_one_writer": round(calls / figures["flush_seconds"]),
        "writer_cpu_us_per_call": round(figures["writer_cpu_seconds"] / calls * 1e6, 1),
    }


# -- section call: one call's rows a flush, CPU counted per call --------------------------------

SHAPES = ("events", "queue")
WARM_UP = 20
"""Calls written before counting (PostgreSQL prepares each statement at its first use)."""


def _event_data(call_id: str, step: int) -> str:
    """An event's data about the size of the server's (a call's parties, trunk and node)."""
    data = {
        "call_id": call_id,
        "caller": "sip:5551234567@198.51.100.7",
        "callee": "sip:echo@omlmedia.example",
        "trunk": "carrier-a",
        "node": "node-1",
        "step": step,
    }
    return json.dumps(data, separators=(",", ":"))


def queue_call(store: Store, n: int, event_id: int) -> tuple[int, int]:
    """One queue call's rows (the `queue` shape), flushed as the writer would at a few calls a
    second: a flush at its start (its open-call row, the queue log's ``enter``, three events)
    and one at its end (``abandon``, three events, its record with the legs' quality, which
    replaces the open-call row). Returns the last event id used and the flushes made."""
    call_id = f"call-{n}"
    start = 1_765_000_000.0 + n
    store.call_started(call_id, start, {"queue": "sales", "caller": f"555{n:04d}"})
    for part, event in enumerate(("enter", "abandon")):
        store.append(QueueLogRow(start + part, event, call_id, "sales", "", {"position": 1}))
        for step in range(3 * part, 3 * part + 3):
            event_id += 1
            data = _event_data(call_id, step)
            kind = EVENT_TYPES[step]
            store.append_event((event_id, start + step, kind, call_id, "sales", "", "", data))
        if part:
            quality = {"codec": "PCMU", "mos": 4.3, "jitter_ms": 1.2, "lost": 0, "packets": 400}
            store.call_ended(
                CallRecord(
                    call_id,
                    start,
                    start + 3.0,
                    None,
                    caller=f"555{n:04d}",
                    queue="sales",
                    hangup_by="caller",
                    cause="abandon",
                    legs=({"role": "caller", **quality},),
                )
            )
        store.flush()
    return event_id, 2


def plain_call(store: Store, n: int, event_id: int) -> tuple[int, int]:
    """One plain call's rows (the `events` shape: a call to `echo` in the cluster writes its
    three events and nothing else), in one flush. Returns the last event id used and the
    flushes made."""
    call_id = f"call-{n}"
    start = 1_765_000_000.0 + n
    for step, kind in enumerate(("call.started", "call.answered", "call.ended")):
        event_id += 1
        data = _event_data(call_id, step)
        store.append_event((event_id, start + step, kind, call_id, "", "", "", data))
    store.flush()
    return event_id, 1


def _task_ns(path: str) -> int:
    """CPU time in ns of the task at `path` (``/proc/.../schedstat``: its first field)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class _Writes:
    """Counts the requests a PostgreSQL connection sends (each one answered before the next:
    one round trip) by wrapping its socket transport's `write`."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, store: Store) -> bool:
        conn = getattr(getattr(store, "_db", None), "_conn", None)
        transport = getattr(conn, "_transport", None)
        if transport is None:
            return False
        write = transport.write

        def counted(data: Any) -> None:
            self.count += 1
            write(data)

        try:
            transport.write = counted
        except (AttributeError, TypeError):
            return False  # a transport in C (uvloop): not counted
        return True


def _next_xid(store: Store) -> int:
    row = store._db.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    return int(row[0]) if row else 0


def _wal_lsn(store: Store) -> int:
    row = store._db.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def per_call(location: Path | str, shape: str, calls: int, instance: Path | None) -> dict[str, Any]:
    """One backend's cost of `calls` calls of `shape`, one flush each (see the module doc)."""
    write = queue_call if shape == "queue" else plain_call
    store = Store(location, node="bench", writer=True)
    try:
        event_id = store.last_event_id() + 10_000
        for n in range(WARM_UP):
            event_id, _ = write(store, n, event_id)
        db = store._db
        pg = instance is not None
        backend = int(db.execute("SELECT pg_backend_pid()").fetchone()[0]) if pg else 0
        connection = getattr(getattr(db, "_thread", None), "native_id", None)
        writes = _Writes()
        counting = pg and writes.wrap(store)
        xid, lsn = (_next_xid(store), _wal_lsn(store)) if pg else (0, 0)
        flushes = 0
        me = threading.get_native_id()
        own = f"/proc/self/task/{me}/schedstat"
        theirs = f"/proc/self/task/{connection}/schedstat" if connection else ""
        server = f"/proc/{backend}/schedstat" if backend else ""
        whole = postgres_cpu(instance) if instance is not None else 0.0
        before = (time.process_time(), _task_ns(own), _task_ns(theirs) if theirs else 0)
        backend_before = _task_ns(server) if server else 0
        sent = writes.count
        started = time.perf_counter()
        for n in range(WARM_UP, WARM_UP + calls):
            event_id, made = write(store, n, event_id)
            flushes += made
        wall = time.perf_counter() - started
        process = time.process_time() - before[0]
        writer_ns = _task_ns(own) - before[1]
        connection_ns = (_task_ns(theirs) - before[2]) if theirs else 0
        backend_ns = (_task_ns(server) - backend_before) if server else 0
        sent = writes.count - sent
        figures: dict[str, Any] = {
            "calls": calls,
            "flushes_per_call": flushes / calls,
            "flush_wall_us": round(wall / flushes * 1e6, 1),
            "process_us": round(process / calls * 1e6, 1),
            "writer_us": round(writer_ns / calls / 1e3, 1),
        }
        if pg:
            assert instance is not None
            figures["connection_us"] = round(connection_ns / calls / 1e3, 1)
            figures["backend_us"] = round(backend_ns / calls / 1e3, 1)
            figures["instance_us"] = round((postgres_cpu(instance) - whole) / calls * 1e6, 1)
            figures["round_trips_per_flush"] = round(sent / flushes, 2) if counting else None
            figures["transactions_per_flush"] = round((_next_xid(store) - xid - 1) / flushes, 2)
            figures["wal_bytes_per_call"] = round((_wal_lsn(store) - lsn) / calls)
        return figures
    finally:
        store.close()


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def run_calls(calls: int, runs: int) -> dict[str, Any]:
    """Section ``call``: `runs` runs, each both shapes on SQLite then PostgreSQL; medians."""
    from benchmarks import pgserver as postgres

    report: dict[str, Any] = {"calls_per_run": calls, "runs": runs, "load": os.getloadavg()}
    if not postgres.available():
        report["postgresql"] = "not installed (Debian: postgresql)"
        return report
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        shape: {"sqlite": [], "postgresql": []} for shape in SHAPES
    }
    with (
        postgres.postgres() as instance,
        tempfile.TemporaryDirectory(prefix="omlmedia-bench-") as tmp,
    ):
        for run in range(runs):
            for shape in SHAPES:
                path = Path(tmp) / f"{shape}-{run}.db"
                samples[shape]["sqlite"].append(per_call(path, shape, calls, None))
                dsn = postgres.fresh_database(instance)
                samples[shape]["postgresql"].append(per_call(dsn, shape, calls, instance.directory))
    for shape in SHAPES:
        result: dict[str, Any] = {}
        for backend, rows in samples[shape].items():
            keys = [key for key in rows[0] if key != "calls"]
            result[backend] = {
                key: None if rows[0][key] is None else _median([row[key] for row in rows])
                for key in keys
            }
            result[backend]["process_us_runs"] = [row["process_us"] for row in rows]
        sqlite, pg = result["sqlite"], result["postgresql"]
        result["ratio_process"] = round(pg["process_us"] / sqlite["process_us"], 2)
        result["ratio_process_and_backend"] = round(
            (pg["process_us"] + pg["backend_us"]) / sqlite["process_us"], 2
        )
        report[shape] = result
    report["load_after"] = os.getloadavg()
    return report


# -- section batch: 20 calls a flush ----------------------------------------------------------


def run(calls: int, per_flush: int) -> dict[str, Any]:
    """Section ``batch``: both backends, SQLite first."""
    from benchmarks import pgserver as postgres

    report: dict[str, Any] = {"per_flush": per_flush}
    with tempfile.TemporaryDirectory(prefix="omlmedia-bench-") as directory:
        report["sqlite"] = measure(Path(directory) / "omlmedia.db", calls, per_flush)
    if not postgres.available():
        report["postgresql"] = "not installed (Debian: postgresql)"
        return report
    with postgres.postgres() as instance:
        dsn = postgres.fresh_database(instance)
        before = postgres_cpu(instance.directory)
        report["postgresql"] = measure(dsn, calls, per_flush)
        server_cpu = postgres_cpu(instance.directory) - before
        report["postgresql"]["database_cpu_us_per_call"] = round(server_cpu / calls * 1e6, 1)
    report["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("section", nargs="?", choices=("call", "batch", "both"), default="both")
    parser.add_argument("--calls", type=int, default=400, help="calls a run (section call)")
    parser.add_argument("--runs", type=int, default=3, help="runs (section call)")
    parser.add_argument("--batch-calls", type=int, default=3000, help="calls (section batch)")
    parser.add_argument("--per-flush", type=int, default=20, help="calls a flush (section batch)")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    if args.section in ("call", "both"):
        report["call"] = run_calls(args.calls, args.runs)
    if args.section in ("batch", "both"):
        report["batch"] = run(args.batch_calls, args.per_flush)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
