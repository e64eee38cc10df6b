"""The agent channel's receive path, aiortc's stock one against the bypass, in one run.

``.venv/bin/python benchmarks/webrtc_receive.py [seconds [path ...]]`` connects an aiortc client
to an `AgentChannel` over loopback in one process, once per receive path (``aiortc``: its
``JitterBuffer(capacity=16, prefetch=4)`` and decoder thread, then `AgentChannel._read`;
``bypass``: `webrtc.rtptap` hands the packets to `webrtc.playout.OpusPlayout`, our adaptive
jitter buffer and libopus, played by a 20 ms clock). The client sends pre-encoded Opus (a 1 kHz
tone, 20 ms packets, paced like the channel's own sender); the channel's sink stamps each frame
it gets. It reports, per path:

- delay: sink time minus send time of the same frame, p50/p99/max. On the aiortc path the k-th
  frame sent is the k-th delivered (no loss on loopback); on the bypass the frame is found by
  its RTP timestamp (concealed frames are not counted). It covers packetising, SRTP, UDP, the
  jitter buffer and decoding, up to the sink;
- CPU: the process's CPU per received frame with the page's audio on, minus the same run with
  the client sending nothing (so it includes the client's packetising and SRTP protect); the
  aiortc decoder threads' own CPU from ``/proc/self/task``; the channel's own (reader, or tap
  plus playout tick).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.procstat import thread_cpu_seconds  # noqa: E402
from webrtc.channel import FRAME_SAMPLES, AgentChannel, OpusSendTrack, _OpusEncoder  # noqa: E402


async def _run(seconds: float, send_audio: bool, path: str) -> dict[str, Any]:
    channel = AgentChannel("measure", receive_path=path, measure_cpu=True)
    arrivals: list[tuple[float, int | None]] = []

    def sink(samples: Any) -> None:
        playout = channel.playout
        arrivals.append((time.monotonic(), playout.last_timestamp if playout else None))

    channel.attach(None, sink)
    encoder = _OpusEncoder()
    t = np.arange(FRAME_SAMPLES)
    tone = (8000 * np.sin(2 * np.pi * 1000 * t / 48000)).astype(np.int16)
    payload = encoder.encode(tone)
    sent: list[float] = []
    slots: dict[int, float] = {}
    track: OpusSendTrack | None = None

    def next_payload() -> bytes:
        now = time.monotonic()
        sent.append(now)
        if track is not None:
            slots[track._slot] = now
        return payload

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if send_audio:
        track = OpusSendTrack(next_payload)
        client.addTrack(track)
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
    decoder_cpu0 = sum(thread_cpu_seconds(t.native_id or 0) for t in decoders)
    cpu0, own0, frames0 = (
        time.process_time(),
        channel.counters.cpu_seconds,
        channel.counters.frames,
    )
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    frames = channel.counters.frames - frames0
    decoder_cpu = sum(thread_cpu_seconds(t.native_id or 0) for t in decoders) - decoder_cpu0
    own = channel.counters.cpu_seconds - own0
    if path == "aiortc":
        pairs = list(zip(sent, arrivals, strict=False))[first_arrival:]
        delays = [a[0] - s for s, a in pairs]
    else:
        first = channel.playout.first_timestamp if channel.playout else None
        delays = []
        for at, ts in arrivals[first_arrival:]:
            if ts is None or first is None:
                continue
            slot = ((ts - first) & 0xFFFFFFFF) // FRAME_SAMPLES
            if slot in slots:
                delays.append(at - slots[slot])
    playout = channel.playout.counters.as_dict() if channel.playout else {}
    await client.close()
    await channel.close()
    return {
        "cpu": cpu,
        "frames": frames,
        "decoder_cpu": decoder_cpu,
        "decoder_threads": len(decoders),
        "own": own,
        "delays": delays,
        "playout": playout,
    }


def _report(path: str, seconds: float, on: dict[str, Any], off: dict[str, Any]) -> None:
    frames = max(1, on["frames"])
    ms = sorted(d * 1000 for d in on["delays"])
    print(f"[{path}] frames delivered: {on['frames']} in {seconds:g} s")
    print(
        f"  receive path CPU per frame: {(on['cpu'] - off['cpu']) / frames * 1e6:.0f} us "
        f"(process {on['cpu'] / seconds * 100:.1f}% with page audio, "
        f"{off['cpu'] / seconds * 100:.1f}% without)"
    )
    decoder = on["decoder_cpu"] - off["decoder_cpu"]
    print(
        f"  of which aiortc decoder threads ({on['decoder_threads']}, with audio minus "
        f"without): {decoder / frames * 1e6:.0f} us, channel (reader or tap+tick): "
        f"{on['own'] / frames * 1e6:.0f} us"
    )
    if ms:
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(
            f"  added delay send->sink: p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
            f"max {ms[-1]:.1f} ms ({len(ms)} frames)"
        )
    if on["playout"]:
        print(f"  playout: {on['playout']}")


def main(argv: list[str]) -> None:
    seconds = float(argv[0]) if argv else 10.0
    paths = argv[1:] or ["aiortc", "bypass"]
    for path in paths:
        on = asyncio.run(_run(seconds, True, path))
        off = asyncio.run(_run(seconds, False, path))
        _report(path, seconds, on, off)


if __name__ == "__main__":
    main(sys.argv[1:])
