"""A web caller's ICE candidates (issue 12 item 8): the visitor's offer loses the candidates the
server must never send checks to (loopback, link-local and cloud metadata, multicast, internal
addresses of a public server) before aiortc sees it, and the answer lists only the advertised
address, not every interface of the host. The last test runs a real aiortc peer as the visitor."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from webrtc.webcaller import WebCaller, candidate_allowed, trim_candidates

PUBLIC_SERVER = "93.184.216.34"
LAN_SERVER = "10.1.2.3"


@pytest.mark.parametrize(
    ("address", "public", "lan", "loopback"),
    [
        ("93.184.216.99", True, True, True),
        ("2606:2800:220:1::1", True, True, True),
        ("10.0.0.7", False, True, True),
        ("192.168.1.20", False, True, True),
        ("100.64.1.1", False, True, True),
        ("fd00::7", False, True, True),
        ("a1b2c3d4-0000-4000-8000-000000000000.local", False, True, True),
        ("127.0.0.1", False, False, True),
        ("::1", False, False, True),
        ("169.254.169.254", False, False, False),
        ("fe80::1", False, False, False),
        ("224.0.0.251", False, False, False),
        ("0.0.0.0", False, False, False),
        ("::ffff:169.254.169.254", False, False, False),
        ("240.0.0.1", False, False, False),
        ("not an address", False, False, False),
    ],
)
def test_which_candidates_a_server_may_check(
    address: str, public: bool, lan: bool, loopback: bool
) -> None:
    assert candidate_allowed(address, PUBLIC_SERVER) is public
    assert candidate_allowed(address, LAN_SERVER) is lan
    assert candidate_allowed(address, "127.0.0.1") is loopback


def test_trimming_keeps_everything_but_the_refused_candidate_lines() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2130706431 93.184.216.99 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 169.254.169.254 80 typ host\r\n"
        "a=candidate:3 1 udp 1694498815 10.0.0.7 5002 typ srflx raddr 0.0.0.0 rport 0\r\n"
        "a=candidate:broken\r\n"
        "a=end-of-candidates\r\n"
    )
    trimmed, dropped = trim_candidates(sdp, lambda a, _: candidate_allowed(a, PUBLIC_SERVER))
    assert dropped == 3
    assert trimmed == (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2130706431 93.184.216.99 5000 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    kinds: list[str] = []

    def record(address: str, kind: str) -> bool:
        kinds.append(kind)
        return True

    assert trim_candidates(sdp, record) == (sdp.replace("a=candidate:broken\r\n", ""), 1)
    assert kinds == ["host", "host", "srflx"]


async def test_a_real_visitor_s_hostile_candidates_never_reach_aiortc_and_the_call_connects() -> (
    None
):
    advertised = "192.0.2.2"  # this test machine's address (a private one: LAN rules)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("audio", direction="sendrecv")
    caller = WebCaller("web:test", advertised=advertised)
    try:
        await client.setLocalDescription(await client.createOffer())
        offer = client.localDescription.sdp
        if advertised not in offer:
            pytest.fail(f"this test needs the address {advertised} on an interface: {offer}")
        hostile = "".join(
            f"a=candidate:9{n} 1 udp 2130706431 {address} {port} typ host\r\n"
            for n, (address, port) in enumerate(
                [("169.254.169.254", 80), ("127.0.0.1", 22), ("224.0.0.251", 5353)]
            )
        )
        offer = offer.replace("a=end-of-candidates", hostile + "a=end-of-candidates", 1)
        answer = await caller.accept_offer(offer)
        assert caller.candidates_refused == 3
        pc = caller.peer_connection
        assert pc is not None
        remote = [
            c.ip
            for t in pc.getTransceivers()
            for c in t.receiver.transport.transport.getRemoteCandidates()
        ]
        assert remote and not {"169.254.169.254", "127.0.0.1", "224.0.0.251"} & set(remote)
        answered = [
            line.split()[4] for line in answer.split("\r\n") if line.startswith("a=candidate:")
        ]
        assert answered and set(answered) == {advertised}, answer
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        deadline = time.monotonic() + 20  # ICE on a loaded machine
        while time.monotonic() < deadline:
            if pc.iceConnectionState in ("completed", "connected"):
                break
            await asyncio.sleep(0.02)
        assert pc.iceConnectionState in ("completed", "connected")
    finally:
        await client.close()
        await caller.close()
