"""omlmedia.upkeep: RTCP reports on every leg once, and the media-timeout sweep."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

from media.leg import RtpLeg
from omlmedia.upkeep import MediaWatch, Upkeep
from sip.service import SipService
from sip.ua import Call, CallState
from tests.omlmedia.deskfakes import FakeClock, FakeService, inbound_call


class FakeLeg:
    port = 20000

    def __init__(self) -> None:
        self.reports = 0

    def clock(self) -> float:
        return 1.0

    def send_report(self, now: float) -> None:
        self.reports += 1


class Target:
    def __init__(self, legs: list[Any], watched: list[tuple[Call, MediaWatch, int]]) -> None:
        self._legs = legs
        self._watched = watched

    @property
    def legs(self) -> Iterator[RtpLeg]:
        return iter(cast(list[RtpLeg], self._legs))

    def watched(self) -> Iterator[tuple[Call, MediaWatch, int]]:
        return iter(self._watched)


def test_a_watch_counts_idle_time_from_the_last_change_and_hold_resets_it() -> None:
    watch = MediaWatch()
    assert watch.idle_for(5, 10.0) == 0.0
    assert watch.idle_for(5, 12.5) == 2.5
    assert watch.idle_for(6, 13.0) == 0.0
    watch.set_hold(True)
    assert watch.on_hold and watch.idle_since is None
    watch.set_hold(False)
    assert watch.idle_for(6, 20.0) == 0.0


async def test_each_leg_gets_one_report_per_tick_even_when_two_targets_show_it() -> None:
    shared, own = FakeLeg(), FakeLeg()
    service = cast(SipService, FakeService(FakeClock()))
    upkeep = Upkeep(service, [Target([shared, own], []), Target([shared], [])], [], 0)
    upkeep._rtcp_tick()
    upkeep.stop()
    assert (shared.reports, own.reports) == (1, 1)


async def test_the_sweep_ends_a_call_whose_media_stood_still_too_long() -> None:
    fake = FakeService(FakeClock())
    now = asyncio.get_running_loop().time()
    dead, alive = inbound_call("echo"), inbound_call("echo")
    dead.state = alive.state = CallState.CONFIRMED
    stale = MediaWatch(packets=3, idle_since=now - 10.0)
    fresh = MediaWatch(packets=3, idle_since=now)
    timeouts: list[int] = []
    upkeep = Upkeep(
        cast(SipService, fake),
        [],
        [Target([], [(dead, stale, 3), (alive, fresh, 3)])],
        5.0,
        on_timeout=lambda: timeouts.append(1),
    )
    upkeep._sweep(1.0)
    upkeep.stop()
    assert fake.ua.actions == [("hangup", dead.call_id)]
    assert dead.end_cause == "media-timeout" and timeouts == [1]
