"""The throwaway PostgreSQL of `benchmarks.pgserver` for the tests, and `require()`: a test
that needs it fails under CI (where ``make test`` installs it) and skips elsewhere."""

from __future__ import annotations

import os

import pytest

from benchmarks.pgserver import BIN, Postgres, available, free_port, fresh_database, postgres

__all__ = ["BIN", "Postgres", "available", "free_port", "fresh_database", "postgres", "require"]


def require() -> None:
    """Skip the calling test when PostgreSQL is not installed; fail it under CI, where
    ``make test`` installs it (a missing tool must not pass as a skip)."""
    if available():
        return
    message = f"PostgreSQL 15 is not installed ({BIN}): run make setup-test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
