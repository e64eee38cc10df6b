"""Live call quality: every few seconds, both legs of every queue call in progress measured and
published as a ``call.live_quality`` event, for the supervisors' wallboard.

Theory of operation. `LiveQuality.sample` walks the ACD's callers (`omlmedia.acd.AcdRuntime
.callers`) whose call an agent answered. The caller's leg is an `RtpLeg`: its RFC 3550 reception
figures and the RTT its RTCP reports give (`RtpLeg.quality`). The agent's leg is the agent's
WebRTC channel (`webrtc.channel.AgentChannel.stats`: the fast path's RTCP figures, or aiortc's
getStats). Loss is over the interval since the previous sample (packets lost over packets
expected in it), so a burst shows while it lasts instead of being diluted over the call; jitter is
the RFC 3550 running estimate; the MOS is the E-model's (`media.quality.estimate_mos`, the RTT's
half as the one-way delay). A call with a leg whose MOS falls below ``[wallboard]
mos_threshold`` is flagged: the sample says ``flagged``, and the call keeps the flag and its
lowest MOS until it ends (`summary`, which the ACD writes into the call record's legs).

Event data: ``{"legs": {"caller": leg, "agent": leg}, "mos": lowest of the legs, "flagged":
bool, "min_mos": lowest so far}``, a leg being ``{"codec", "packets", "lost", "loss",
"jitter_ms", "rtt_ms", "mos"}`` (``loss`` a fraction over the interval; ``rtt_ms`` and ``mos``
null until known). Cost: one `RtpLeg.quality` and one channel `stats` per call and interval
(microseconds each, `media.quality`), nothing per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from media.quality import QualityError, estimate_mos
from omlmedia.events import NO_EVENTS, EventSink

__all__ = ["CALL_LIVE_QUALITY", "LiveQuality"]

logger = logging.getLogger(__name__)

CALL_LIVE_QUALITY = "call.live_quality"
"""A queue call's two legs measured while it lasts (every ``[wallboard] quality_interval``)."""


class ChannelStats(Protocol):
    """What is read of an agent channel's figures (`webrtc.channel.ChannelStats`)."""

    packets_received: int
    packets_lost: int
    jitter: float
    round_trip_time: float | None


@runtime_checkable
class Channel(Protocol):
    """An agent's media channel (`webrtc.channel.AgentChannel`): its getStats-like figures."""

    async def stats(self) -> Any: ...


@dataclass(slots=True)
class _Counts:
    received: int = 0
    lost: int = 0


@dataclass(slots=True)
class _Call:
    caller: _Counts
    agent: _Counts
    agent_name: str
    min_mos: float | None = None
    flagged: bool = False
    samples: int = 0
    last: Mapping[str, Any] | None = None


def _mos(codec: str, rtt_ms: float | None, loss: float, jitter_ms: float) -> float | None:
    try:
        return round(
            estimate_mos(codec or "PCMU", (rtt_ms or 0.0) / 2, min(max(loss, 0.0), 1.0), jitter_ms),
            2,
        )
    except (QualityError, ValueError):
        return None


def _leg(
    codec: str,
    received: int,
    lost: int,
    before: _Counts,
    jitter_ms: float,
    rtt_ms: float | None,
) -> dict[str, Any] | None:
    """One leg's sample from its cumulative counts; None before its first packet."""
    if received <= 0:
        return None
    got = max(0, received - before.received)
    missed = max(0, lost - before.lost)
    before.received, before.lost = received, lost
    loss = missed / (got + missed) if got + missed else 0.0
    return {
        "codec": codec,
        "packets": received,
        "lost": lost,
        "loss": round(loss, 4),
        "jitter_ms": round(jitter_ms, 2),
        "rtt_ms": None if rtt_ms is None else round(rtt_ms, 1),
        "mos": _mos(codec, rtt_ms, loss, jitter_ms),
    }


class LiveQuality:
    """Samples the ACD's answered calls every `interval` seconds (see the module docstring).

    `callers` gives the ACD's queued callers by call id, `channel_of(agent)` an agent's channel
    (None, or one without figures, when it has none), `events` where the samples go,
    `threshold` the MOS below which a call is flagged.
    """

    def __init__(
        self,
        callers: Callable[[], Mapping[str, Any]],
        channel_of: Callable[[str], Any],
        events: EventSink = NO_EVENTS,
        *,
        interval: float = 5.0,
        threshold: float = 3.5,
    ) -> None:
        self.callers = callers
        self.channel_of = channel_of
        self.events = events
        self.interval = interval
        self.threshold = threshold
        self.calls: dict[str, _Call] = {}
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> int:
        """Measure and publish every answered call once; returns how many were sampled."""
        live = {
            call_id: qc
            for call_id, qc in self.callers().items()
            if qc.agent and qc.connected is not None and not qc.ended
        }
        for gone in set(self.calls) - set(live):
            del self.calls[gone]
        count = 0
        for call_id, qc in live.items():
            state = self.calls.get(call_id)
            if state is None or state.agent_name != qc.agent:
                state = self.calls[call_id] = _Call(_Counts(), _Counts(), qc.agent)
            data = await self._measure(qc, state)
            if data is None:
                continue
            campaign = qc.campaign.name if qc.campaign is not None else ""
            self.events.publish(
                CALL_LIVE_QUALITY,
                call_id=call_id,
                queue=qc.queue,
                agent=qc.agent,
                campaign=campaign,
                data=data,
            )
            count += 1
        self.samples += count
        return count

    async def _measure(self, qc: Any, state: _Call) -> dict[str, Any] | None:
        quality = qc.leg.quality()
        fmt = qc.leg.format
        caller = _leg(
            fmt.encoding_name if fmt is not None else "",
            quality.packets_received,
            quality.packets_lost,
            state.caller,
            quality.jitter_ms,
            quality.round_trip_ms,
        )
        agent: dict[str, Any] | None = None
        channel = self.channel_of(qc.agent)
        if isinstance(channel, Channel):
            try:
                stats = await channel.stats()
            except Exception:
                logger.debug("agent channel stats failed", exc_info=True)
            else:
                rtt = stats.round_trip_time
                agent = _leg(
                    "opus",
                    stats.packets_received,
                    stats.packets_lost,
                    state.agent,
                    stats.jitter * 1000,
                    None if rtt is None else rtt * 1000,
                )
        legs = {name: leg for name, leg in (("caller", caller), ("agent", agent)) if leg}
        if not legs:
            return None
        scores = [leg["mos"] for leg in legs.values() if leg["mos"] is not None]
        mos = min(scores) if scores else None
        if mos is not None:
            state.min_mos = mos if state.min_mos is None else min(state.min_mos, mos)
            state.flagged = state.flagged or mos < self.threshold
        state.samples += 1
        state.last = legs
        return {
            "legs": legs,
            "mos": mos,
            "min_mos": state.min_mos,
            "flagged": mos is not None and mos < self.threshold,
            "threshold": self.threshold,
        }

    def record_legs(
        self, call_id: str, legs: tuple[Mapping[str, Any], ...]
    ) -> tuple[Mapping[str, Any], ...]:
        """A call record's `legs` (the caller's first) with what was seen live: each leg gets
        the call's lowest MOS (``min_mos``) and its low-MOS flag (``low_mos``), and the agent's
        leg is added from its last sample (`LiveQuality` as the ACD's ``live_quality``)."""
        summary = self.summary(call_id)
        if summary is None:
            return legs
        flags = {"min_mos": summary["min_mos"], "low_mos": summary["low_mos"]}
        result = [{**leg, **flags} for leg in legs]
        agent = summary["agent_leg"]
        if agent is not None and not any(leg.get("role") == "agent" for leg in legs):
            result.append({"role": "agent", **agent, **flags})
        return tuple(result)

    def summary(self, call_id: str) -> dict[str, Any] | None:
        """What the call record keeps of a call's live quality: its lowest MOS, whether it was
        flagged, and its agent leg's last sample (None for a call never sampled)."""
        state = self.calls.get(call_id)
        if state is None or not state.samples:
            return None
        return {
            "min_mos": state.min_mos,
            "low_mos": state.flagged,
            "agent_leg": dict(state.last["agent"])
            if state.last and "agent" in state.last
            else None,
        }

    def start(self) -> None:
        """Sample every `interval` seconds until `stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sample()
            except Exception:
                logger.exception("live call quality sampling failed")

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
