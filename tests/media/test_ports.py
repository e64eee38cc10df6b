"""RTP port pairs: ports another process holds are skipped, counted, logged once, and tried again
later; a range wholly held gives PortsExhausted saying so, and leaks nothing."""

from __future__ import annotations

import errno
import logging
import random
import socket
from collections.abc import Iterator

import pytest

from media.ports import (
    PortAllocator,
    PortPair,
    PortsExhausted,
    RtpSocket,
    RtpSocketPool,
    bind_pair,
)

HOST = "127.0.0.1"
PAIRS = 6


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


@pytest.fixture
def held() -> Iterator[dict[int, socket.socket]]:
    """Every port of a range of PAIRS pairs (below the ephemeral range), held by the test's own
    sockets (port -> socket); the test closes those it wants the allocator to have."""
    for _ in range(50):
        low = random.randrange(12000, 19000, 2)
        sockets: dict[int, socket.socket] = {}
        try:
            for port in range(low, low + 2 * PAIRS):
                sockets[port] = _bind(port)
        except OSError:
            for sock in sockets.values():
                sock.close()
            continue
        yield sockets
        for sock in sockets.values():
            sock.close()
        return
    pytest.fail("no free range of RTP ports to test with")


def _let_go(held: dict[int, socket.socket], *ports: int) -> None:
    for port in ports:
        held.pop(port).close()


def _allocator(held: dict[int, socket.socket]) -> tuple[int, PortAllocator]:
    """The held range's first port, and an allocator of all its pairs."""
    low = min(held)
    return low, PortAllocator(low, low + 2 * PAIRS - 1)


async def test_pairs_held_by_another_process_are_skipped_counted_and_logged_once(
    held: dict[int, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    low, ports = _allocator(held)
    pool = RtpSocketPool(ports, HOST, max_idle=0)
    # Pairs 0 and 1 stay wholly held; pair 2's RTP port is free but its RTCP port is held.
    _let_go(held, low + 4, *range(low + 6, low + 2 * PAIRS))
    try:
        with caplog.at_level(logging.WARNING, logger="media.ports"):
            got = [await pool.acquire() for _ in range(3)]
        assert [pair.port for pair in got] == [low + 6, low + 8, low + 10]
        for pair in got:
            assert pair.rtp.transport is not None and pair.rtcp.transport is not None
        assert ports.held_elsewhere == 3 and ports.in_use == 3 and pool.failures == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert f"RTP port {low} (range {low}-{low + 2 * PAIRS - 1})" in warnings[0]
        assert "held by another process" in warnings[0]
        # The other process lets go: the skipped pairs are back in the rotation, last.
        _let_go(held, low, low + 1, low + 2, low + 3, low + 5)
        for pair in got:
            pool.release(pair)
        again = [await pool.acquire() for _ in range(3)]
        assert [pair.port for pair in again] == [low, low + 2, low + 4]
        assert ports.held_elsewhere == 3 and len(caplog.records) == 1
        for pair in again:
            pool.release(pair)
    finally:
        pool.close()
    assert ports.in_use == 0


async def test_a_range_wholly_held_elsewhere_is_exhausted_with_the_reason_and_leaks_nothing(
    held: dict[int, socket.socket],
) -> None:
    low, ports = _allocator(held)
    pool = RtpSocketPool(ports, HOST)
    with pytest.raises(PortsExhausted) as raised:
        await pool.acquire()
    expected = (
        f"the {PAIRS} RTP port pairs tried of the {PAIRS} free of {low}-{low + 2 * PAIRS - 1}"
    )
    assert expected in str(raised.value)
    assert (ports.held_elsewhere, ports.in_use, ports.free, pool.failures) == (PAIRS, 0, PAIRS, 1)
    # Once one pair is let go, the next call gets it.
    _let_go(held, low + 8, low + 9)
    pair = await pool.acquire()
    assert pair.port == low + 8 and ports.held_elsewhere == PAIRS + 4  # pairs 0-3 again
    pool.release(pair)
    pool.close()


async def test_a_bind_error_other_than_in_use_is_raised_at_once_without_trying_the_range() -> None:
    ports = PortAllocator(14000, 14000 + 2 * PAIRS - 1)
    pool = RtpSocketPool(ports, "192.0.2.1")  # TEST-NET-1: not an address of this host
    with pytest.raises(OSError) as raised:
        await pool.acquire()
    assert raised.value.errno == errno.EADDRNOTAVAIL
    assert (ports.held_elsewhere, ports.in_use, ports.free, pool.failures) == (0, 0, PAIRS, 1)


async def test_a_range_wholly_in_use_by_our_own_calls_says_so(
    held: dict[int, socket.socket],
) -> None:
    low = min(held)
    _let_go(held, low, low + 1, low + 2, low + 3)
    ports = PortAllocator(low, low + 3)
    pool = RtpSocketPool(ports, HOST)
    first = await pool.acquire()
    second = await pool.acquire()
    with pytest.raises(PortsExhausted, match=f"all RTP ports of {low}-{low + 3} are in use"):
        await pool.acquire()
    assert pool.failures == 1 and ports.held_elsewhere == 0
    for pair in (first, second):
        pool.release(pair)
    pool.close()
    assert ports.in_use == 0


async def test_a_call_tries_a_bounded_number_of_pairs_and_the_next_goes_on_past_them(
    held: dict[int, socket.socket],
) -> None:
    low, ports = _allocator(held)
    _let_go(held, low + 4, low + 5)  # pairs 0 and 1 held, pair 2 free
    with pytest.raises(PortsExhausted, match=f"the 2 RTP port pairs tried of the {PAIRS} free"):
        await bind_pair(ports, HOST, RtpSocket, RtpSocket, tries=2)
    port, rtp, rtcp = await bind_pair(ports, HOST, RtpSocket, RtpSocket, tries=2)
    assert port == low + 4 and ports.held_elsewhere == 2
    for sock in (rtp, rtcp):
        assert sock.transport is not None
        sock.transport.close()
    ports.release(port)


async def test_a_warm_pool_binds_nothing_calls_reuse_the_pairs_of_the_first_ones() -> None:
    """Calls of two legs, ten at a time (one ending as the next starts): the pool binds a pair
    only while it has fewer than the peak of legs, 20, and a second round of calls gets every
    pair from those, bound nothing (K1's `bind_pair` samples in a fixed-calls run are its
    first calls': 2 N pairs at N calls up)."""
    low = random.randrange(12000, 19000, 2)
    pool = RtpSocketPool(PortAllocator(low, low + 999), HOST)
    rng = random.Random(1)

    async def calls(count: int) -> set[PortPair]:
        handed: set[PortPair] = set()
        active: list[tuple[PortPair, PortPair]] = []
        for _ in range(count):
            if len(active) == 10:
                for pair in active.pop(rng.randrange(10)):
                    pool.release(pair)
            legs = (await pool.acquire(), await pool.acquire())
            handed.update(legs)
            active.append(legs)
            assert pool.idle + pool.in_use <= 20
        for legs in active:
            for pair in legs:
                pool.release(pair)
        return handed

    try:
        bound = await calls(60)
        assert len(bound) == 20 and pool.idle == 20 and pool.in_use == 0
        assert await calls(60) <= bound  # the same pair objects: nothing bound
        assert pool.idle == 20 and pool.failures == 0
    finally:
        pool.close()
