"""Fixtures of the cluster tests: a throwaway PostgreSQL (`pg`) and a throwaway Redis (`shared`,
the nodes' shared state), each started once for the test module that asks for it and stopped
after it; the test skips when the server is not installed, and fails under CI
(`tests.cluster.postgres`, `tests.cluster.redis`). A module that defines a fixture of the same
name keeps its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import postgres, redis


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    """A throwaway PostgreSQL for the module's tests (`postgres.fresh_database` per test)."""
    postgres.require()
    with postgres.postgres() as instance:
        yield instance


@pytest.fixture(scope="module")
def shared() -> Iterator[redis.Redis]:
    """A throwaway Redis for the module's tests: the cluster's shared state."""
    redis.require()
    with redis.redis() as instance:
        yield instance
