"""webrtc.fastpath: the audio of a channel moved by us once DTLS is up, with a real aiortc peer."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.webrtc.test_channel import WITHIN, until
from webrtc.channel import AgentChannel, OpusSendTrack, _OpusEncoder
from webrtc.fastpath import (
    CONTINUOUS,
    PUSH_HOLDOFF,
    AudioParameters,
    audio_parameters,
    fastpath_problems,
    header_template,
    rtp_payload,
)

TONE = (8000 * np.sin(2 * np.pi * 1000 * np.arange(960) / 48000)).astype(np.int16)

ANSWER = """v=0\r
o=- 1 1 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=rtpmap:111 opus/48000/2\r
a=ssrc:305419896 cname:abc-def\r
m=video 9 UDP/TLS/RTP/SAVPF 97\r
a=mid:1\r
a=rtpmap:97 VP8/90000\r
a=ssrc:42 cname:abc-def\r
"""


def test_aiortc_and_aioice_still_fit_the_fast_path() -> None:
    """Fails when an aiortc or aioice upgrade moves what the fast path relies on (channels fall
    back to aiortc's own path then: fix webrtc/fastpath.py)."""
    assert fastpath_problems() == ()


def test_audio_parameters_come_from_the_audio_section_of_the_answer() -> None:
    params = audio_parameters(ANSWER)
    assert params == AudioParameters(111, 305419896, "abc-def", "0", 1)
    assert audio_parameters(ANSWER.replace("opus", "PCMU")) is None
    assert audio_parameters("v=0\r\nm=video 9 RTP/AVP 97\r\n") is None


def test_our_header_carries_the_mid_and_parses_back() -> None:
    params = AudioParameters(111, 0x12345678, "c", "0", 1)
    header = bytearray(header_template(params))
    struct.pack_into("!HI", header, 2, 7, 960)
    parsed = rtp_payload(bytes(header) + b"opus")
    assert parsed == (7, 960, 0x12345678, b"opus")
    assert header[0] == 0x90 and header[12:16] == b"\xbe\xde\x00\x01" and header[16:18] == b"\x100"
    plain = header_template(AudioParameters(111, 1, "c"))
    assert len(plain) == 12 and rtp_payload(plain + b"x") == (0, 0, 1, b"x")


def test_malformed_rtp_is_refused_not_raised() -> None:
    good = bytes([0x80, 111]) + bytes(10) + b"payload"
    assert rtp_payload(good) is not None
    assert rtp_payload(good[:11]) is None
    assert rtp_payload(bytes([0x8F, 111]) + bytes(10) + b"x") is None  # 15 CSRCs announced
    assert rtp_payload(bytes([0x90, 111]) + bytes(10) + b"\xbe\xde\xff\xff") is None
    assert rtp_payload(bytes([0xA0, 111]) + bytes(10) + b"ab\x09") is None  # padding too long
    assert rtp_payload(bytes([0xA0, 111]) + bytes(10) + b"ab\x00") is None  # zero padding
    assert rtp_payload(bytes([0xA0, 111]) + bytes(10) + b"ab\x01") == (0, 0, 0, b"ab")


async def _connected(channel: AgentChannel, payload: bytes) -> RTCPeerConnection:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(OpusSendTrack(lambda: payload))
    await client.setLocalDescription(await client.createOffer())
    answer = await channel.accept_offer(client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return client


async def test_audio_both_ways_goes_through_the_fast_path_with_rtcp() -> None:
    channel = AgentChannel("agent1")
    received: list[np.ndarray] = []
    tone8 = TONE[::6].copy()
    channel.attach(lambda: tone8, received.append, rate=8000)
    client_frames: list[object] = []
    readers: list[asyncio.Future[None]] = []
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(OpusSendTrack(lambda: _OpusEncoder().encode(TONE)))

    @client.on("track")
    def on_track(track: object) -> None:
        async def read() -> None:
            while True:
                client_frames.append(await track.recv())  # type: ignore[attr-defined]

        readers.append(asyncio.ensure_future(read()))

    try:
        await client.setLocalDescription(await client.createOffer())
        answer = await channel.accept_offer(client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        fast = channel.fast_path
        assert fast is not None
        await until(lambda: fast.active and len(received) > 20 and len(client_frames) > 20)
        # The tone the client sends is what the channel's sink hears, at 8 kHz.
        audio = np.concatenate(received[-10:]).astype(float)
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        assert abs(np.argmax(spectrum) * 8000 / len(audio) - 1000) < 20
        # aiortc's sender sent none of it (its task waits in the deferred track); ours did.
        assert fast.counters.sent > 20 and fast.counters.received > 20
        # RTCP: the client's SR/RR reach us (RTT), our RR reaches the client.
        deadline = time.monotonic() + WITHIN
        while time.monotonic() < deadline:
            report = await client.getStats()
            remote = [s for s in report.values() if s.type == "remote-inbound-rtp"]
            outbound = [s for s in report.values() if s.type == "outbound-rtp"]
            if remote and fast.round_trip_time is not None:
                break
            await asyncio.sleep(0.02)
        assert remote and remote[0].packetsReceived > 0 and outbound
        assert fast.round_trip_time is not None and 0 <= fast.round_trip_time < 0.5
        assert fast.counters.rtcp_received >= 1 and fast.counters.rtcp_sent >= 1
        stats = await channel.stats()
        assert stats.packets_sent > 20 and stats.packets_received > 20 and stats.packets_lost == 0
        assert stats.fast_path["sent"] == fast.counters.sent
        # The client's view of our stream: aiortc's SR figures were kept current by the path.
        inbound = [s for s in report.values() if s.type == "inbound-rtp"]
        assert inbound and inbound[0].packetsReceived > 20
    finally:
        for reader in readers:
            reader.cancel()
        await client.close()
        await channel.close()
    assert not fast.active


async def test_forged_and_garbage_rtp_from_the_peer_address_is_counted_not_played() -> None:
    channel = AgentChannel("agent1")
    received: list[np.ndarray] = []
    channel.attach(None, received.append)
    client = await _connected(channel, _OpusEncoder().encode(TONE))
    try:
        fast = channel.fast_path
        assert fast is not None
        await until(lambda: fast.active and fast.counters.received > 10)
        # Inject into the client's own socket towards the channel, so the source check passes:
        # SRTP that does not authenticate, and RTCP that does not either.
        pair = client.getSenders()[0].transport.transport._connection._nominated[1]
        opus = fast.params.payload_type
        for forged in (
            bytes([0x80, opus]) + bytes(10) + b"forged payload" + bytes(10),
            bytes([0x80, 200]) + bytes(30),
            bytes([0x80, opus]),
        ):
            pair.protocol.transport.sendto(forged, pair.remote_addr)
        count = len(received)
        await until(lambda: fast.counters.srtp_errors >= 3)
        await until(lambda: len(received) > count)  # the call goes on
    finally:
        await client.close()
        await channel.close()


async def test_stock_receive_path_keeps_aiortc_sending() -> None:
    channel = AgentChannel("agent1", receive_path="aiortc")
    client = await _connected(channel, _OpusEncoder().encode(TONE))
    try:
        assert channel.fast_path is None
        deadline = time.monotonic() + WITHIN
        while time.monotonic() < deadline:
            stats = await channel.stats()
            if stats.packets_sent > 10:
                break
            await asyncio.sleep(0.02)
        assert stats.packets_sent > 10 and not stats.fast_path
    finally:
        await client.close()
        await channel.close()


async def test_pushed_frames_go_out_at_once_and_the_clock_stands_aside() -> None:
    from collections import deque

    from webrtc.rtptap import install_audio_tap

    channel = AgentChannel("agent1")
    tone8 = TONE[::6].copy()
    frames: deque[np.ndarray] = deque()
    channel.attach(lambda: frames.popleft() if frames else None, None, rate=8000)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(OpusSendTrack(lambda: _OpusEncoder().encode(TONE)))
    arrivals: list[tuple[int, int]] = []

    @client.on("track")
    def on_track(track: object) -> None:
        receiver = next(r for r in client.getReceivers() if r.track is track)
        install_audio_tap(receiver, lambda p: arrivals.append((p.sequence_number, p.timestamp)))

    try:
        await client.setLocalDescription(await client.createOffer())
        answer = await channel.accept_offer(client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        fast = channel.fast_path
        assert fast is not None
        await until(lambda: fast.active and len(arrivals) >= 10)  # the clock's stream runs
        # When each packet left (by sequence number), and how long after the last pushed frame
        # each packet the clock sent meanwhile left: a loaded machine may pause the pushing
        # longer than the hold-off, and then the clock rightly sends.
        sent_at: dict[int, float] = {}
        clock_sends: list[float] = []
        slot = fast.send_slot

        def watched(index: int) -> None:
            sequence, sent = fast._sequence, fast.counters.sent
            slot(index)
            if fast.counters.sent > sent:
                sent_at[sequence] = fast.clock()
                clock_sends.append(fast.clock() - fast._pushed_at)

        fast.send_slot = watched  # type: ignore[method-assign]

        def push() -> None:
            frames.append(tone8)
            sent_at[fast._sequence] = fast.clock()
            channel.kick()

        before, first = fast.counters.sent, len(arrivals)
        for k in range(40):  # frames from the network: every 20 ms, two at once now and then
            push()
            if k % 10 == 9:
                push()
            await asyncio.sleep(0.02)
        pushed = 44
        sent, clocked = fast.counters.sent - before, len(clock_sends)
        last = (fast._sequence - 1) & 0xFFFF
        # Each pushed frame went out when it came, and the clock sent nothing while frames came
        # (it would have sent ~40 more): only after a pause of the pushing past the hold-off.
        assert sent - clocked == pushed, (sent, clocked)
        assert all(gap >= PUSH_HOLDOFF for gap in clock_sends), clock_sends
        await until(lambda: any(a[0] == last for a in arrivals))
        run = arrivals[first:]
        assert all((b[0] - a[0]) & 0xFFFF == 1 for a, b in itertools.pairwise(run))
        # RTP time frame by frame wherever a packet followed the one before within CONTINUOUS
        # (a longer pause is marked and its RTP time follows the time that passed).
        steps = [
            (b[1] - a[1]) & 0xFFFFFFFF
            for a, b in itertools.pairwise(run)
            if a[0] in sent_at
            and b[0] in sent_at
            and sent_at[b[0]] - sent_at[a[0]] < CONTINUOUS - 0.005
        ]
        assert len(steps) >= 10 and all(step == 960 for step in steps), steps
    finally:
        await client.close()
        await channel.close()


async def test_a_new_offer_moves_the_audio_to_a_new_fast_path() -> None:
    """An ICE restart or a reloaded page: the old path stops, the new one carries the call."""
    channel = AgentChannel("agent1")
    received: list[np.ndarray] = []
    channel.attach(lambda: TONE[::6].copy(), received.append, rate=8000, relay=True)
    payload = _OpusEncoder().encode(TONE)
    first = await _connected(channel, payload)
    second: RTCPeerConnection | None = None
    try:
        old = channel.fast_path
        assert old is not None
        await until(lambda: old.active and old.counters.received > 10)
        await first.close()
        second = await _connected(channel, payload)
        new = channel.fast_path
        assert new is not None and new is not old and not old.active
        count = len(received)
        await until(lambda: new.active and new.counters.received > 10 and new.counters.sent > 10)
        assert len(received) > count + 10
    finally:
        await first.close()
        if second is not None:
            await second.close()
        await channel.close()
