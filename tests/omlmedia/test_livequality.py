"""Live call quality: both legs of an answered queue call sampled, loss over each interval, the
E-model MOS, the low-MOS flag kept until the call ends and written into its record's legs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from media.leg import LegQuality
from media.quality import estimate_mos
from omlmedia.livequality import CALL_LIVE_QUALITY, LiveQuality


@dataclass
class Format:
    encoding_name: str = "PCMU"


@dataclass
class Leg:
    quality_now: LegQuality
    format: Format = field(default_factory=Format)

    def quality(self) -> LegQuality:
        return self.quality_now


@dataclass
class Campaign:
    name: str


@dataclass
class Caller:
    leg: Leg
    agent: str = "agent1"
    connected: float | None = 100.0
    ended: bool = False
    queue: str = "support"
    campaign: Campaign | None = None


@dataclass
class Stats:
    packets_received: int
    packets_lost: int
    jitter: float
    round_trip_time: float | None


class Channel:
    def __init__(self, stats: Stats) -> None:
        self.now = stats

    async def stats(self) -> Stats:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, type_: str, **fields: Any) -> None:
        self.events.append({"type": type_, **fields})


def leg_quality(received: int, lost: int, jitter_ms: float, rtt_ms: float | None) -> LegQuality:
    return LegQuality(received, lost, 0.0, jitter_ms, rtt_ms, None, None, None)


async def test_both_legs_are_sampled_with_the_loss_of_each_interval_and_flagged() -> None:
    caller = Caller(Leg(leg_quality(250, 0, 4.0, 40.0)), campaign=Campaign("help"))
    waiting = Caller(Leg(leg_quality(10, 0, 1.0, None)), agent="", connected=None)
    channel = Channel(Stats(250, 0, 0.002, 0.030))
    sink = Sink()
    live = LiveQuality(
        lambda: {"c1": caller, "c2": waiting},
        lambda agent: channel if agent == "agent1" else None,
        sink,
        threshold=3.5,
    )
    assert await live.sample() == 1  # the waiting caller has no agent leg yet: not sampled
    first = sink.events[-1]
    assert first["type"] == CALL_LIVE_QUALITY and first["call_id"] == "c1"
    assert (first["queue"], first["agent"], first["campaign"]) == ("support", "agent1", "help")
    legs = first["data"]["legs"]
    assert legs["caller"]["loss"] == 0.0 and legs["caller"]["rtt_ms"] == 40.0
    assert legs["caller"]["mos"] == round(estimate_mos("PCMU", 20.0, 0.0, 4.0), 2)
    assert legs["agent"]["codec"] == "opus" and legs["agent"]["jitter_ms"] == 2.0
    assert legs["agent"]["mos"] == round(estimate_mos("opus", 15.0, 0.0, 2.0), 2)
    assert first["data"]["flagged"] is False

    # The next 250 packets lose 50 on the caller's side: 50 / (200 + 50) = 20 % this interval,
    # not 50 / 500 over the call.
    caller.leg.quality_now = leg_quality(450, 50, 30.0, 40.0)
    channel.now = Stats(500, 0, 0.002, 0.030)
    await live.sample()
    second = sink.events[-1]["data"]
    assert second["legs"]["caller"]["loss"] == 0.2
    low = round(estimate_mos("PCMU", 20.0, 0.2, 30.0), 2)
    assert second["legs"]["caller"]["mos"] == low and low < 3.5
    assert second["flagged"] is True and second["mos"] == low and second["min_mos"] == low

    # The loss stops: the sample is no longer flagged, the call keeps its flag and lowest MOS.
    caller.leg.quality_now = leg_quality(700, 50, 4.0, 40.0)
    await live.sample()
    assert sink.events[-1]["data"]["flagged"] is False
    assert sink.events[-1]["data"]["min_mos"] == low

    legs_out = live.record_legs("c1", ({"role": "caller", "codec": "PCMU", "mos": 4.3},))
    assert [leg["role"] for leg in legs_out] == ["caller", "agent"]
    assert all(leg["low_mos"] is True and leg["min_mos"] == low for leg in legs_out)
    assert legs_out[1]["codec"] == "opus" and legs_out[1]["packets"] == 500


async def test_an_ended_call_is_forgotten_and_a_record_of_an_unsampled_call_is_unchanged() -> None:
    caller = Caller(Leg(leg_quality(100, 0, 1.0, 20.0)))
    callers = {"c1": caller}
    live = LiveQuality(lambda: callers, lambda agent: None, Sink())
    await live.sample()
    assert live.summary("c1") is not None
    del callers["c1"]
    await live.sample()
    assert live.summary("c1") is None
    legs = ({"role": "caller", "mos": 4.1},)
    assert live.record_legs("c1", legs) is legs
