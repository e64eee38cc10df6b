"""benchmarks/storage.py: both backends write every call's rows, and the report says what each
cost."""

from __future__ import annotations

from benchmarks.storage import run
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
