"""Per-call CPU of the sans-IO SIP core alone (no sockets, no event loop).

Each call is what sipp's `uac` scenario sends to `echo`: INVITE with SDP -> (SDP negotiated) 200,
ACK, BYE -> 200, through the UA core, the transaction layer, dialogs and the message model. The
figure is for finding regressions and hot spots on one machine; `sip_cps.py` gives the end-to-end
figure with a peer measured in the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/ua_core.py [--calls N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from omlmedia.offer_answer import SIP_CAPABILITIES
from sip.endpoint import Endpoint
from sip.sdp import SessionDescription, negotiate
from sip.ua import IncomingCall, UserAgent

SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SOURCE = Endpoint("udp", "127.0.0.1", 5061)


def _request(method: str, i: int, cseq: int, branch: int, to_tag: str = "") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    body = SDP if method == "INVITE" else b""
    head = (
        f"{method} sip:echo@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-{i}-{branch}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5061>;tag=1SIPpTag00{i}\r\n"
        f"To: echo <sip:echo@127.0.0.1:5060>{tag}\r\n"
        f"Call-ID: {i}-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


CALL_INTERVAL = 0.02
"""Seconds between two calls' INVITEs (50 calls a second): a UDP server transaction stays 32 s
after its final response (Timers J, and RFC 6026's for the INVITE's 2xx), so at this pace ~3,200
live at once, the steady state, and their timers fire within the runs; a faster pace fills the
layer's cap (8,192 live server transactions: a stateless 503 past it) within the runs."""


def run(ua: UserAgent, first: int, calls: int, now: float) -> float:
    for i in range(first, first + calls):
        now += CALL_INTERVAL
        ua.receive(_request("INVITE", i, 1, 0), SOURCE, now)
        event = ua.next_event()
        assert isinstance(event, IncomingCall)
        call = event.call
        offer = SessionDescription.parse(call.remote_sdp)
        answer = negotiate(offer, SIP_CAPABILITIES, "127.0.0.1", 20000, session_id=1, version=0)
        ua.answer(call, bytes(answer.description), now)
        ua.datagrams_to_send()
        ua.receive(_request("ACK", i, 1, 1, call.local_tag), SOURCE, now)
        while ua.next_event() is not None:
            pass
        ua.receive(_request("BYE", i, 2, 2, call.local_tag), SOURCE, now)
        while ua.next_event() is not None:
            pass
        ua.datagrams_to_send()
        ua.handle_timer(now)
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ua = UserAgent(
        local_endpoints={"udp": Endpoint("udp", "127.0.0.1", 5060)},
        trusted_source=lambda ip: "pbx",
    )
    run(ua, 0, 200, 0.0)  # warm caches
    best = float("inf")
    now = 1.0
    for attempt in range(3):
        started = time.process_time()
        now = run(ua, (attempt + 1) * 100_000, args.calls, now)
        best = min(best, time.process_time() - started)
    per_call = 1e6 * best / args.calls
    print(f"{per_call:.0f} us CPU per call in the SIP core (best of 3 x {args.calls})")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, ua, 900_000, 2000, now)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
