"""Several calls' changes in one libnftables transaction, against a real kernel in a network
namespace the test makes: hang-ups' removals wait for the next install (or their delay) and go
with it, atomically per call, and a refused shared transaction is tried again call by call so
that only the refused call's change fails."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from media.kernelpath import ForwardedPair, FourTuple, Leg
from media.kernelpath_nft import KernelPath, KernelPathError
from tests.media.netns import enter, in_ns, ip, require_kernel_tools

TABLE = "okbatch"
DEADLINE = 20.0


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    require_kernel_tools()
    name = f"okb{os.getpid() % 100000}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        ip("netns", "del", name)


def pair(n: int) -> ForwardedPair:
    """Call `n`: our ports 20000+2n and 30000+2n, far ends on two other hosts."""
    return ForwardedPair(
        str(n),
        Leg(("198.18.1.1", 20000 + 2 * n), ("198.18.1.2", 5000 + 2 * n)),
        Leg(("198.18.2.1", 30000 + 2 * n), ("198.18.2.2", 4000 + 2 * n)),
    )


def in_kernel(kernel: KernelPath) -> set[FourTuple]:
    """The counted elements (one per direction) the kernel holds now."""
    return set(kernel.counters())


def keys(*calls: int) -> set[FourTuple]:
    return {pair(n).counted(d) for n in calls for d in ("ab", "ba")}


@pytest.fixture
def kernel(namespace: str) -> Iterator[KernelPath]:
    with enter(namespace):
        made = KernelPath(table=TABLE, removal_delay=60.0)
        made.start()
    try:
        yield made
    finally:
        made.stop()


async def test_hangups_wait_and_go_in_the_next_installs_transaction(kernel: KernelPath) -> None:
    for n in (1, 2, 3):
        kernel.install(pair(n))
    assert kernel.stats.transactions == 3
    kernel.remove("1", "hangup")
    kernel.remove("2", "hangup")
    # Queued: the calls are gone from the bookkeeping, their elements still in the kernel.
    assert kernel.pending == 2 and set(kernel.pairs) == {"3"}
    assert kernel.stats.transactions == 3
    assert in_kernel(kernel) == keys(1, 2, 3)
    assert kernel.stats.fallbacks == {"hangup": 2} and kernel.stats.removed == 2
    kernel.install(pair(4))
    # Two removals and an install: one transaction (the status API says so too).
    assert kernel.stats.transactions == 4 and kernel.pending == 0
    assert kernel.status()["transactions"] == 4
    assert in_kernel(kernel) == keys(3, 4)
    assert kernel.stats.failures == 0


async def test_a_removal_for_hold_goes_at_once_with_the_queued_hangups(kernel: KernelPath) -> None:
    for n in (1, 2):
        kernel.install(pair(n))
    kernel.remove("1", "hangup")
    kernel.remove("2", "hold")  # the legs must have the next packet: not queued
    assert kernel.pending == 0 and kernel.stats.transactions == 3
    assert in_kernel(kernel) == set()


async def test_queued_removals_go_together_when_their_delay_runs_out(namespace: str) -> None:
    with enter(namespace):
        kernel = KernelPath(table=TABLE, removal_delay=0.05)
        kernel.start()
    try:
        for n in range(1, 6):
            kernel.install(pair(n))
        for n in range(1, 5):
            kernel.remove(str(n), "hangup")
        assert kernel.pending == 4
        deadline = time.monotonic() + DEADLINE
        while kernel.pending and time.monotonic() < deadline:  # noqa: ASYNC110 - a timer of the loop
            await asyncio.sleep(0.01)
        assert kernel.pending == 0
        assert kernel.stats.transactions == 5 + 1
        assert in_kernel(kernel) == keys(5)
    finally:
        kernel.stop()


def test_without_a_running_loop_a_hangups_removal_goes_at_once(kernel: KernelPath) -> None:
    kernel.install(pair(1))
    kernel.remove("1", "hangup")
    assert kernel.pending == 0 and in_kernel(kernel) == set()


async def test_a_refused_removal_in_a_shared_transaction_fails_alone(
    kernel: KernelPath, namespace: str
) -> None:
    for n in (1, 2, 3):
        kernel.install(pair(n))
    kernel.remove("1", "hangup")
    kernel.remove("2", "hangup")
    # Someone deleted one of call 2's elements behind the server's back: its removal is refused.
    source, sport, via, vport = pair(2).counted("ab")
    in_ns(
        namespace, "nft", "delete", "element", "inet", TABLE, "pre_port4",
        f"{{ {source} . {sport} . {via} . {vport} }}",
    )  # fmt: skip
    kernel.install(pair(4))
    # Call 1's removal and call 4's install applied; call 2's removal alone refused, counted.
    assert kernel.stats.failures == 1
    assert set(kernel.pairs) == {"3", "4"}
    assert in_kernel(kernel) == keys(3, 4) | {pair(2).counted("ba")}
    assert kernel.pending == 0


async def test_a_refused_install_fails_alone_and_the_queued_removals_still_apply(
    kernel: KernelPath, namespace: str
) -> None:
    for n in (1, 2):
        kernel.install(pair(n))
    kernel.remove("1", "hangup")
    # An element of call 3's key is already there with another value: its install is refused.
    source, sport, via, vport = pair(3).counted("ab")
    in_ns(
        namespace, "nft", "add", "element", "inet", TABLE, "pre_port4",
        f"{{ {source} . {sport} . {via} . {vport} : 9 }}",
    )  # fmt: skip
    with pytest.raises(KernelPathError, match="File exists"):
        kernel.install(pair(3))
    assert set(kernel.pairs) == {"2"} and kernel.stats.failures == 1
    assert kernel.stats.installed == 2
    assert keys(1).isdisjoint(in_kernel(kernel))
    assert keys(2) <= in_kernel(kernel)


def test_status_polls_read_the_counters_at_most_once_per_max_age(namespace: str) -> None:
    now = [0.0]
    with enter(namespace):
        kernel = KernelPath(table=TABLE, clock=lambda: now[0], max_age=0.5)
        kernel.start()
    try:
        kernel.install(pair(1))
        assert kernel.status()["calls"] == 1 and kernel.stats.listings == 1
        for _ in range(10):  # polled every 0.04 s: served from the same reading
            now[0] += 0.04
            kernel.status()
        assert kernel.stats.listings == 1
        now[0] += 0.2
        kernel.status()
        assert kernel.stats.listings == 2
    finally:
        kernel.stop()
