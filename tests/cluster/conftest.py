"""Fixtures of the cluster tests: a throwaway PostgreSQL (`pg`), started once for the package
(the modules that ask for it share it, each test on a database of its own from
`postgres.fresh_database`: one instance instead of one a module) and a throwaway Redis
(`shared`, the nodes' shared state), started once for the test module that asks for it; each is
stopped after its last test. A test skips when the server is not installed, and fails under CI
(`tests.cluster.postgres`, `tests.cluster.redis`). A module that defines a fixture of the same
name keeps its own (`test_outages` stops and freezes its PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import postgres, redis


@pytest.fixture(scope="package")
def pg() -> Iterator[postgres.Postgres]:
    """A throwaway PostgreSQL for the package's tests (`postgres.fresh_database` per test or
    module fixture: no test touches another's database)."""
    postgres.require()
    with postgres.postgres() as instance:
        yield instance


@pytest.fixture(scope="module")
def shared() -> Iterator[redis.Redis]:
    """A throwaway Redis for the module's tests: the cluster's shared state."""
    redis.require()
    with redis.redis() as instance:
        yield instance
