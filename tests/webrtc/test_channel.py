"""webrtc.channel: media both ways with an aiortc client, the source check, the backlog limit."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from webrtc.channel import AgentChannel, BacklogLimiter, OpusSendTrack, _OpusEncoder, guard_counters


def test_backlog_limiter_passes_real_time_and_drops_bursts() -> None:
    limiter = BacklogLimiter(max_backlog=0.06)
    assert all(limiter.admit(i * 0.02) for i in range(100))
    burst = [limiter.admit(2.5) for _ in range(10)]
    assert burst.count(True) == 3
    assert limiter.admit(2.52)


async def test_media_both_ways_and_foreign_source_is_dropped() -> None:
    channel = AgentChannel("agent1")
    received: list[np.ndarray] = []
    tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(960) / 48000)).astype(np.int16)
    channel.attach(lambda: tone, received.append)
    payload = _OpusEncoder().encode(tone)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(OpusSendTrack(lambda: payload))
    client_frames: list[object] = []
    readers: list[asyncio.Future[None]] = []

    @client.on("track")
    def on_track(track: object) -> None:
        async def read() -> None:
            while True:
                client_frames.append(await track.recv())  # type: ignore[attr-defined]

        readers.append(asyncio.ensure_future(read()))

    try:
        await client.setLocalDescription(await client.createOffer())
        answer = await channel.accept_offer(client.localDescription.sdp)
        assert "opus/48000" in answer and "a=candidate:" in answer
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        for _ in range(200):
            if len(received) > 10 and len(client_frames) > 10:
                break
            await asyncio.sleep(0.02)
        assert len(received) > 10 and len(client_frames) > 10
        assert received[-1].shape == (960,) and received[-1].dtype == np.int16

        before = guard_counters["dropped_foreign_source"]
        addresses = [
            (line.split()[4], int(line.split()[5]))
            for line in answer.splitlines()
            if line.startswith("a=candidate:") and "." in line.split()[4]
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for address in addresses:
                attacker.sendto(b"\x80\x60" + bytes(200), address)
                attacker.sendto(b"\x16\xfe\xfd" + bytes(100), address)
        await asyncio.sleep(0.2)
        assert guard_counters["dropped_foreign_source"] >= before + 2
        count = len(received)
        await asyncio.sleep(0.3)
        assert len(received) > count
        stats = await channel.stats()
        assert stats.packets_sent > 10 and stats.packets_received > 10
        assert stats.ice_state in ("completed", "connected")
    finally:
        await client.close()
        await channel.close()


async def test_bad_offer_is_a_value_error() -> None:
    channel = AgentChannel("agent1")
    try:
        await channel.accept_offer("v=0\r\nnonsense")
    except ValueError as exc:
        assert "offer cannot be answered" in str(exc)
    else:
        raise AssertionError("a bad offer was accepted")
    finally:
        await channel.close()
