"""Measure aiortc's receive path as the agent channel uses it: CPU per frame and added delay.

``.venv/bin/python -m webrtc.measure [seconds]`` connects an aiortc client to an `AgentChannel`
over loopback in one process. The client sends pre-encoded Opus (a 1 kHz tone, 20 ms packets,
paced like the channel's own sender); the channel's sink stamps each frame it gets. It reports:

- delay: sink time minus send time of the same frame (k-th sent = k-th delivered: no loss on
  loopback), p50/p99/max; it covers packetising, SRTP, UDP, aiortc's jitter buffer (prefetch 4),
  the decoder thread and its hop back to the loop, and the channel's downmix;
- CPU: the process's CPU per received frame with the page's audio on, minus the same run with
  the client sending nothing (so it includes the client's packetising and SRTP protect); the
  decoder thread's own CPU from ``/proc/self/task``; the channel reader's own CPU.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from webrtc.channel import FRAME_SAMPLES, AgentChannel, OpusSendTrack, _OpusEncoder


def _thread_cpu(native_id: int) -> float:
    try:
        with open(f"/proc/self/task/{native_id}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


async def _run(seconds: float, send_audio: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    channel = AgentChannel("measure")
    arrivals: list[float] = []
    channel.attach(None, lambda samples: arrivals.append(loop.time()))
    encoder = _OpusEncoder()
    t = np.arange(FRAME_SAMPLES)
    tone = (8000 * np.sin(2 * np.pi * 1000 * t / 48000)).astype(np.int16)
    payload = encoder.encode(tone)
    sent: list[float] = []

    def next_payload() -> bytes:
        sent.append(loop.time())
        return payload

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if send_audio:
        client.addTrack(OpusSendTrack(next_payload))
    else:
        client.addTransceiver("audio", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    answer = await channel.accept_offer(client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    for _ in range(500):
        if channel.ice_state in ("completed", "connected"):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    first_arrival = len(arrivals)
    decoders = [t for t in threading.enumerate() if t.native_id and "decoder" in repr(t.name)]
    decoder_cpu0 = sum(_thread_cpu(t.native_id or 0) for t in decoders)
    cpu0, reader0, frames0 = (
        time.process_time(),
        channel.counters.cpu_seconds,
        channel.counters.frames,
    )
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    frames = channel.counters.frames - frames0
    decoder_cpu = sum(_thread_cpu(t.native_id or 0) for t in decoders) - decoder_cpu0
    reader = channel.counters.cpu_seconds - reader0
    delays = [a - s for s, a in zip(sent, arrivals, strict=False)][first_arrival:]
    await client.close()
    await channel.close()
    return {
        "cpu": cpu,
        "frames": frames,
        "decoder_cpu": decoder_cpu,
        "decoder_threads": len(decoders),
        "reader": reader,
        "delays": delays,
        "lost": len(sent) - len(arrivals),
    }


def main(argv: list[str]) -> None:
    seconds = float(argv[0]) if argv else 10.0
    on = asyncio.run(_run(seconds, True))
    off = asyncio.run(_run(seconds, False))
    frames = max(1, on["frames"])
    delays = sorted(on["delays"])
    ms = [d * 1000 for d in delays]
    print(f"frames received: {on['frames']} in {seconds:g} s (sent-delivered: {on['lost']})")
    print(
        f"receive path CPU per frame: {(on['cpu'] - off['cpu']) / frames * 1e6:.0f} us "
        f"(process {on['cpu'] / seconds * 100:.1f}% with page audio, "
        f"{off['cpu'] / seconds * 100:.1f}% without)"
    )
    print(
        f"  of which aiortc decoder thread(s) ({on['decoder_threads']}): "
        f"{on['decoder_cpu'] / frames * 1e6:.0f} us, channel reader: "
        f"{on['reader'] / frames * 1e6:.0f} us"
    )
    if ms:
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(
            f"added delay send->sink: p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
            f"max {ms[-1]:.1f} ms"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
