"""The CPU a supervisor's monitor adds to a call's audio: its mixing room, per 20 ms tick.

In process, no network: one `omlmedia.monitor.MonitoredCall` on an agent's call at the leg's
rate (8 kHz for G.711, 16 kHz for G.722, 48 kHz for Opus), its caller, agent and supervisor
each giving a frame every tick (speech-level noise) and taking their mix, in each mode; the
room's own work (read three frames, mix, push three mixes) measured with `time.process_time`,
best of `--runs` runs of `--ticks` ticks. The supervisor's browser stream (Opus, SRTP, UDP) comes
on top: it costs what an agent's does (`webrtc.channel`). Prints a Markdown table.

Command: ``PYTHONPATH=. .venv/bin/python benchmarks/monitor.py``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from omlmedia.desk import AgentCall, CallAudio
from omlmedia.monitor import MonitoredCall, MonitorMode
from webrtc.signaling import CallInfo

Samples = npt.NDArray[np.int16]
FRAME_SECONDS = 0.02


class Channel:
    """What the monitor attaches to (an agent's or a supervisor's channel): the page's frame
    arrives every tick through `sink`, the mix leaves through `source`."""

    def __init__(self) -> None:
        self.source: Callable[[], Any] | None = None
        self.sink: Callable[[Samples], None] | None = None

    def attach(self, source: Any, sink: Any, rate: int = 48000, *, relay: bool = False) -> None:
        self.source, self.sink = source, sink

    def detach(self) -> None:
        self.source = self.sink = None

    def kick(self) -> None:
        if self.source is not None:
            self.source()


async def measure(rate: int, mode: MonitorMode, ticks: int, runs: int) -> float:
    """Microseconds of CPU per room tick (best of `runs`)."""
    size = rate // 50
    noise = np.random.default_rng(1).integers(-3000, 3000, size).astype(np.int16)
    agent, supervisor = Channel(), Channel()
    audio = CallAudio(lambda: noise, lambda frame: None, rate, agent)  # type: ignore[arg-type]
    ac = AgentCall("bench", None, "agent1", CallInfo("bench"), 0.0)
    monitored = MonitoredCall(ac, audio, supervisor, mode)  # type: ignore[arg-type]
    room = monitored.room
    room.pacer.stop()
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        for _ in range(ticks):
            assert agent.sink is not None and supervisor.sink is not None
            agent.sink(noise)
            supervisor.sink(noise)
            room.tick(0.0)
        best = min(best, (time.process_time() - started) / ticks)
        room.pacer.stop()
    monitored.stop()
    return best * 1e6


async def _main(rates: list[int], ticks: int, runs: int) -> None:
    print("| rate | listen | whisper | barge | share of one core |")
    print("|---|---|---|---|---|")
    for rate in rates:
        costs = [await measure(rate, mode, ticks, runs) for mode in MonitorMode]
        share = max(costs) / (FRAME_SECONDS * 1e6) * 100
        cells = " | ".join(f"{cost:.1f} µs" for cost in costs)
        print(f"| {rate} | {cells} | {share:.2f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="8000,16000,48000", help="leg rates, comma-separated")
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    asyncio.run(_main(rates, args.ticks, args.runs))


if __name__ == "__main__":
    main()
