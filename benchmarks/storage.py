"""The store's cost per queued call, SQLite against PostgreSQL: what a node pays to keep its
records, and how many calls a second one writer keeps up with.

    python benchmarks/storage.py [--calls 3000] [--per-flush 20]

Each call writes what a call through a queue writes (`omlmedia.acd`, `omlmedia.events`): its
open-call row, six queue log entries (enter, offer, ringing, answer, complete, wrap-up), eight
events and its call record, the record replacing the open-call row. The writes are flushed every
`--per-flush` calls, one transaction each, as the server's writer does every 0.2 s (20 calls per
flush is 100 calls a second). Reported per backend: the flush time per call (wall clock) and the
calls a second one writer sustains at that rate, the writer process's CPU per call, and, for
PostgreSQL, the database server's CPU per call (its processes' /proc times over the run). Both
run on this machine: SQLite in a temp dir (WAL, synchronous=FULL), PostgreSQL a throwaway
instance started for the run (`benchmarks/pgserver.py`; Debian's ``postgresql``, fsync on).

Measured on the 2-core development machine, shared with other work (load average 5-10 during
the runs), 3,000 calls, 20 per flush, five runs (database CPU: the last three):

| backend | flush/call (wall) | calls/s, one writer | writer CPU/call | database CPU/call |
|---|---|---|---|---|
| SQLite | 116-336 us | 3,000-8,600 | 130-151 us | (in the writer) |
| PostgreSQL | 456-1,709 us | 585-2,190 | 173-227 us | 200-217 us |

The wall-clock figures follow the machine's load (fsyncs and scheduling); the CPU figures hold
steady. PostgreSQL costs the node about 1.4 times SQLite's CPU per call, plus about as much
again in the database server. One writer keeps up with several hundred queued calls a second
even on this loaded machine, far more than the 80-90 agents of one node can answer: the records
are not what limits a node.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
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


def run(calls: int, per_flush: int) -> dict[str, Any]:
    """Both backends, SQLite first."""
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
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--per-flush", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.calls, args.per_flush), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
