"""A queue caller who finds no media port: 503, logged with the reason, counted."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from typing import cast

import pytest

from media.ports import PortAllocator, RtpSocketPool
from omlmedia.acd import AcdRuntime
from queueing.config import build_config
from queueing.engine import AcdEngine
from sip.service import SipService
from tests.omlmedia.deskfakes import HOST, FakeClock, FakeService, FakeTimers, inbound_call

FIELDS = "omlmedia_fields"  # where omlmedia.logs.event keeps an event's fields
PAIRS = 4


def held_range() -> list[socket.socket]:
    """Sockets holding every port of a range of PAIRS pairs, as another process would."""
    for _ in range(50):
        low = random.randrange(12000, 19000, 2)
        held: list[socket.socket] = []
        try:
            for port in range(low, low + 2 * PAIRS):
                held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                held[-1].bind((HOST, port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        return held
    pytest.fail("no free range of RTP ports to test with")


async def test_a_queue_caller_gets_503_logged_with_the_reason_when_the_range_is_held_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = held_range()
    low = held[0].getsockname()[1]
    clock = FakeClock()
    timers, service = FakeTimers(clock), FakeService(clock)
    ports = PortAllocator(low, low + 2 * PAIRS - 1)
    pool = RtpSocketPool(ports, HOST)
    engine = AcdEngine(
        build_config({"agents": {"agent1": {}}, "queues": {"support": {"members": ["agent1"]}}}),
        rng=random.Random(1),
    )
    acd = AcdRuntime(
        engine,
        pool,
        HOST,
        service=cast(SipService, service),
        clock=clock,
        call_later=timers.call_later,
    )
    try:
        call = inbound_call("support")
        with caplog.at_level(logging.INFO):
            acd.enter(call, "support")
            deadline = time.monotonic() + 20.0
            while ("reject", call.call_id, 503) not in service.ua.actions:
                assert time.monotonic() < deadline, service.ua.actions
                await asyncio.sleep(0.01)
        assert call.call_id not in acd.callers
        (rejected,) = [r for r in caplog.records if r.getMessage() == "call-rejected"]
        assert rejected.levelno == logging.WARNING
        fields = getattr(rejected, FIELDS)
        assert fields["call_id"] == call.call_id and fields["status"] == 503
        assert fields["reason"] == "no-media-port"
        reason = f"RTP port pairs tried of the {PAIRS} free of {low}-{low + 2 * PAIRS - 1} are held"
        assert reason in fields["error"], fields
        assert (pool.failures, ports.held_elsewhere, ports.in_use) == (1, PAIRS, 0)
    finally:
        acd.close()
        pool.close()
        for sock in held:
            sock.close()
