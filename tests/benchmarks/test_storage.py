"""benchmarks/storage.py: both backends write every call's rows, and the report says what each
cost; a PostgreSQL flush of events only is one round trip (one statement, its own transaction)."""

from __future__ import annotations

from benchmarks.storage import run, run_calls
from tests.cluster import postgres


def test_the_storage_benchmark_writes_every_call_on_both_backends() -> None:
    postgres.require()
    report = run(calls=60, per_flush=20)
    for backend in ("sqlite", "postgresql"):
        figures = report[backend]
        assert figures["records_written"] == figures["calls"] == 60
        assert figures["flush_us_per_call"] > 0 and figures["writer_cpu_us_per_call"] > 0
        assert figures["calls_per_second_one_writer"] > 0
    assert report["postgresql"]["database_cpu_us_per_call"] >= 0


def test_the_per_call_benchmark_counts_round_trips_and_cpu_of_each_side() -> None:
    postgres.require()
    report = run_calls(calls=30, runs=1)
    for shape, flushes in (("events", 1), ("queue", 2)):
        sqlite, pg = report[shape]["sqlite"], report[shape]["postgresql"]
        assert sqlite["flushes_per_call"] == pg["flushes_per_call"] == flushes
        assert sqlite["process_us"] > 0 and pg["process_us"] > 0 and pg["backend_us"] > 0
        assert pg["transactions_per_flush"] == 1
        assert pg["wal_bytes_per_call"] > 0
        assert report[shape]["ratio_process"] > 0
    # A flush of events only: lock, insert and notification in one statement, no BEGIN/COMMIT.
    assert report["events"]["postgresql"]["round_trips_per_flush"] == 1
    # A flush with other rows: BEGIN, each table's statement, the events' statement, COMMIT.
    assert report["queue"]["postgresql"]["round_trips_per_flush"] <= 6
