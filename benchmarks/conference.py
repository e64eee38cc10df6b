"""CPU of a conference room per 20 ms tick, by number of parties (omlmedia/conference.py).

Every party is a PCMU leg whose packet arrives each tick, on sockets whose transport discards what
is sent. "tick" is the room's own work: read (jitter buffer, decode, resample 8 -> 16 kHz), mix,
write (resample 16 -> 8 kHz, encode, build the packet and hand it to the transport); "receive" is
the legs' receive handlers for the tick's packets (validation, statistics, jitter buffer put).
Times are `time.process_time`, the best of `--runs` runs of `--ticks` ticks; prints a Markdown
table (the one in omlmedia/conference.py's docstring).

    PYTHONPATH=. .venv/bin/python benchmarks/conference.py [--parties 3,10,30] [--ticks N]
        [--runs K]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import numpy as np

from media.codecs import codec_for
from media.leg import RtpLeg
from media.mixer import Role
from media.ports import PortPair, RtpSocket
from media.rtp import rtp_header
from omlmedia.conference import FRAME_SECONDS, Room, _SipParty
from sip.sdp import PCMU, TELEPHONE_EVENT, Direction, NegotiatedStream
from sip.ua import Call, CallState


@dataclass
class _NullTransport:
    sent: int = 0

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


class _Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def measure(count: int, ticks: int, runs: int) -> tuple[float, float]:
    """Best (tick, receive) CPU in µs per tick for a room of `count` PCMU parties."""
    clock = _Clock()
    room = Room("bench", asyncio.get_running_loop(), clock)
    encoder = codec_for("PCMU").encoder()
    rng = np.random.default_rng(count)
    feeds = []
    for n in range(count):
        rtp, rtcp = RtpSocket(), RtpSocket()
        rtp.transport = _NullTransport()  # type: ignore[assignment]
        rtcp.transport = _NullTransport()  # type: ignore[assignment]
        call = Call(f"call-{n}", "inbound", None, None, CallState.CONFIRMED, "tag")  # type: ignore[arg-type]
        party = _SipParty(call, "bench", Role.PARTICIPANT, None)
        party.leg = RtpLeg(PortPair(40000 + 2 * n, rtp, rtcp), clock=clock)
        stream = NegotiatedStream(
            0,
            PCMU,
            TELEPHONE_EVENT,
            "127.0.0.1",
            30000 + 2 * n,
            "127.0.0.1",
            30001 + 2 * n,
            False,
            Direction.SENDRECV,
        )
        party.configure(stream, False, 60)
        room.add(party, Role.PARTICIPANT, None, None)
        payload = encoder.encode(rng.integers(-8000, 8000, 160, dtype=np.int16))
        feeds.append((rtp, payload, ("127.0.0.1", 30000 + 2 * n)))
    room.pacer.stop()
    best_tick = best_receive = float("inf")
    seq = 0
    cpu = time.process_time
    for _ in range(runs):
        ticked = received = 0.0
        for _ in range(ticks):
            clock.now += FRAME_SECONDS
            header = rtp_header(0, False, seq & 0xFFFF, 160 * seq & 0xFFFFFFFF, 0x1234)
            started = cpu()
            for rtp, payload, addr in feeds:
                rtp.datagram_received(header + payload, addr)
            fed = cpu()
            room.tick(clock.now)
            ticked += cpu() - fed
            received += fed - started
            seq += 1
        best_tick = min(best_tick, ticked / ticks)
        best_receive = min(best_receive, received / ticks)
    room.close()
    return best_tick * 1e6, best_receive * 1e6


async def _main(parties: list[int], ticks: int, runs: int) -> None:
    print("| parties | tick | receive | per party | share of one core |")
    print("|---|---|---|---|---|")
    for count in parties:
        tick, receive = await measure(count, ticks, runs)
        total = tick + receive
        print(
            f"| {count} | {tick:.0f} µs | {receive:.0f} µs | {total / count:.0f} µs "
            f"| {total / (FRAME_SECONDS * 1e6) * 100:.1f} % |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parties", default="3,10,30", help="room sizes, comma-separated")
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    parties = [int(p) for p in args.parties.split(",")]
    asyncio.run(_main(parties, args.ticks, args.runs))


if __name__ == "__main__":
    main()
