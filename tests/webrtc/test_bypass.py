"""The receive bypass: aiortc hooks still fit, bounded delay, concealment, RTCP still working."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from webrtc.channel import FRAME_SAMPLES, SILENCE, AgentChannel, OpusSendTrack, _OpusEncoder
from webrtc.playout import OpusPlayout
from webrtc.rtptap import JITTER_BUFFER_ATTRIBUTE, AudioTap, VideoTap, tap_problems

TONE = (8000 * np.sin(2 * np.pi * 1000 * np.arange(960) / 48000)).astype(np.int16)


def test_aiortc_still_fits_the_hooks() -> None:
    """Fails when an aiortc upgrade moves what webrtc.rtptap replaces: fix rtptap then."""
    assert tap_problems() == []
    source = RTCRtpReceiver._handle_rtp_packet.__code__
    assert "_RTCRtpReceiver__jitter_buffer" in source.co_names
    from aiortc.jitterbuffer import JitterBuffer

    assert JitterBuffer(capacity=16, prefetch=4).add.__code__.co_argcount == 2


def simulate(
    delay: list[float], lost: set[int], payloads: list[bytes]
) -> tuple[list[float], OpusPlayout, int]:
    """Packet k is sent at k*20 ms and arrives delay[k] later (unless lost); the playout clock
    runs as the channel runs it. Returns the added delay of every played packet."""
    playout = OpusPlayout()
    count = len(delay)
    arrivals = sorted((k * 0.02 + delay[k], k) for k in range(count) if k not in lost)
    due = arrivals[0][0] + 0.001
    delays: list[float] = []
    frames = 0
    index = 0
    while due < count * 0.02 + 0.5:
        while index < len(arrivals) and arrivals[index][0] <= due:
            at, k = arrivals[index]
            playout.put(k & 0xFFFF, (1000 + k * FRAME_SAMPLES) & 0xFFFFFFFF, payloads[k % 50], at)
            index += 1
        samples = playout.get(due)
        assert samples is not None and samples.shape == (FRAME_SAMPLES,)
        frames += 1
        if playout.last_timestamp is not None:
            k = (playout.last_timestamp - 1000) // FRAME_SAMPLES
            delays.append(due - k * 0.02)
        due = playout.next_due(due)
    return delays, playout, frames


def test_no_standing_delay_after_loss_jitter_and_a_burst() -> None:
    encoder = _OpusEncoder()
    payloads = [encoder.encode(np.roll(TONE, 7 * k)) for k in range(50)]
    rng = random.Random(4)
    count = 1000
    delay = [0.005 + rng.uniform(0, 0.004) for _ in range(count)]
    for k in range(300, 400):  # 2 s of heavy jitter (0-40 ms)
        delay[k] = 0.005 + rng.uniform(0, 0.04)
    for k in range(500, 525):  # a 500 ms outage, then everything at once
        delay[k] = 525 * 0.02 - k * 0.02 + 0.005
    lost = {100, 101, 700}
    delays, playout, frames = simulate(delay, lost, payloads)
    ms = [d * 1000 for d in delays]
    before = statistics.median(ms[50:290])
    after = statistics.median(ms[-200:])
    assert before < 15 and after < before + 5, (before, after)
    jitter = sorted(ms[320:390])
    assert jitter[-1] <= 60 + 40 + 1, jitter[-1]  # cap: at most 60 ms waiting after arrival
    stats = playout.stats
    counters = playout.counters
    assert counters.fec + counters.concealed >= 3
    assert stats.current_delay_ms < 20
    assert frames >= count - 5


async def connect(channel: AgentChannel, next_payload: object) -> RTCPeerConnection:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(OpusSendTrack(next_payload))  # type: ignore[arg-type]
    await client.setLocalDescription(await client.createOffer())
    answer = await channel.accept_offer(client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return client


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Poll `condition` (frames have no event to await) until it holds: fails after `within` s."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def watch_stalls(stalls: list[tuple[float, float]], over: float = 0.02) -> None:
    """Note each span (start, end) in which this event loop ran nothing for more than `over`
    seconds (a task waking every 5 ms woke late): the process was paused, or the loop busy."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(0.005)
        now = time.monotonic()
        if now - last > over:
            stalls.append((last, now))
        last = now


async def test_loopback_delay_loss_and_receiver_reports() -> None:
    channel = AgentChannel("agent1")
    payload = _OpusEncoder().encode(TONE)
    sent: dict[int, float] = {}
    track_holder: list[OpusSendTrack] = []

    def next_payload() -> bytes:
        sent[track_holder[0]._slot] = time.monotonic()
        return payload

    received: list[tuple[float, int | None]] = []

    def sink(samples: np.ndarray) -> None:
        assert samples.shape == (FRAME_SAMPLES,)
        received.append((time.monotonic(), channel.playout.last_timestamp))  # type: ignore[union-attr]

    channel.attach(None, sink)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = OpusSendTrack(next_payload)
    track_holder.append(track)
    client.addTrack(track)
    stalls: list[tuple[float, float]] = []
    watch = asyncio.ensure_future(watch_stalls(stalls))
    try:
        await client.setLocalDescription(await client.createOffer())
        answer = await channel.accept_offer(client.localDescription.sdp)
        assert channel.tapped
        receiver = channel.peer_connection.getReceivers()[0]  # type: ignore[union-attr]
        assert isinstance(getattr(receiver, JITTER_BUFFER_ATTRIBUTE), AudioTap)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        # Drop two RTP packets on the client's side, after SRTP would have been applied.
        transport = client.getSenders()[0].transport
        original = transport._send_rtp
        dropped: list[int] = []

        async def lossy(data: bytes) -> None:
            if data[1] & 0x7F == 111 or 96 <= data[1] & 0x7F < 128:
                seq = int.from_bytes(data[2:4], "big")
                if (len(sent) >= 60 and not dropped) or len(dropped) == 1:
                    dropped.append(seq)
                    return
            await original(data)

        transport._send_rtp = lossy  # type: ignore[method-assign]

        def judged() -> list[float]:
            """The delay of each frame (ms) the machine did not pause the process for while it
            travelled: a loaded machine's pause delays every frame then in flight."""
            first = channel.playout.first_timestamp  # type: ignore[union-attr]
            if first is None:
                return []
            timed = [
                (sent[((ts - first) & 0xFFFFFFFF) // FRAME_SAMPLES], at)
                for at, ts in received[10:]
                if ts is not None and ((ts - first) & 0xFFFFFFFF) // FRAME_SAMPLES in sent
            ]
            return sorted(
                (at - left) * 1000
                for left, at in timed
                if not any(start < at and end > left for start, end in stalls)
            )

        await until(lambda: len(received) > 120 and len(judged()) > 100)
        watch.cancel()
        assert len(dropped) == 2
        delays = judged()
        print(f"{len(delays)} frames judged; the loop paused {len(stalls)} times: {stalls}")
        p99 = delays[int(len(delays) * 0.99)]
        assert p99 < 40, delays[-10:]
        counters = channel.playout.counters  # type: ignore[union-attr]
        assert counters.fec + counters.concealed >= 2, counters.as_dict()
        # RTCP: the channel's receiver reports (about 1 a second) reach the client and count
        # the two packets lost.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            report = await client.getStats()
            remote = [s for s in report.values() if s.type == "remote-inbound-rtp"]
            if remote and remote[0].packetsLost >= 1:
                break
            await asyncio.sleep(0.02)
        assert remote and remote[0].packetsLost >= 1
        stats = await channel.stats()
        assert stats.packets_received > 100 and stats.playout["decoded"] > 100
    finally:
        watch.cancel()
        await client.close()
        await channel.close()


def test_video_tap_passes_pli_and_frames() -> None:
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    frames: list[tuple[bytes, int]] = []
    tap = VideoTap(JitterBuffer(capacity=128, is_video=True), lambda d, t: frames.append((d, t)))
    for seq in range(3):
        packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000)
        packet._data = b"\x00\x01\x02"  # type: ignore[attr-defined]
        packet.marker = 1
        assert tap.add(packet) == (False, None)
    assert [t for _, t in frames] == [0, 3000]
    tap.request_keyframe()
    packet = RtpPacket(payload_type=96, sequence_number=3, timestamp=9000)
    packet._data = b"\x00"  # type: ignore[attr-defined]
    assert tap.add(packet)[0] is True


def test_playout_decodes_straight_to_the_callers_rate() -> None:
    encoder = _OpusEncoder()
    payloads = [encoder.encode(np.roll(TONE, 7 * k)) for k in range(50)]
    playout = OpusPlayout(rate=8000)
    assert playout.frame_samples == 160
    frames = []
    due = 0.0
    for k in range(60):
        if k != 30:  # one loss: FEC or PLC at 8 kHz too
            playout.put(k, (1000 + k * FRAME_SAMPLES) & 0xFFFFFFFF, payloads[k % 50], k * 0.02)
        samples = playout.get(k * 0.02 + 0.001)
        assert samples is not None and samples.shape == (160,)
        frames.append(samples)
        due = playout.next_due(due)
    audio = np.concatenate(frames[5:]).astype(float)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 8000 / len(audio) - 1000) < 10
    assert playout.counters.fec + playout.counters.concealed == 1
    playout.set_rate(48000)
    playout.put(60, (1000 + 60 * FRAME_SAMPLES) & 0xFFFFFFFF, payloads[10], 1.2)
    samples = playout.get(1.201)
    assert samples is not None and samples.shape == (960,)


def test_relay_decodes_on_arrival_fills_gaps_and_drops_late_packets() -> None:
    encoder = _OpusEncoder()
    payloads = [encoder.encode(np.roll(TONE, 7 * k)) for k in range(60)]
    playout = OpusPlayout(rate=8000)
    frames: list[np.ndarray] = []
    counts = []
    for k in range(60):
        if k in (20, 30, 31, 32):  # one loss, then three in a row
            continue
        got = playout.relay(k, (5000 + k * FRAME_SAMPLES) & 0xFFFFFFFF, payloads[k])
        counts.append(len(got))
        frames += got
    assert all(f.shape == (160,) for f in frames)
    assert len(frames) == 60  # every slot has a frame: no hole for the SIP leg
    assert counts.count(2) == 1 and counts.count(4) == 1  # the gaps filled on arrival
    assert playout.counters.fec == 2 and playout.counters.concealed == 2
    assert playout.relay(45, 5000 + 45 * FRAME_SAMPLES, payloads[45]) == []  # late
    assert playout.relay(59, 5000 + 59 * FRAME_SAMPLES, payloads[59]) == []  # duplicate
    assert playout.counters.late == 2
    # A long outage is not invented: the stream goes on with the packet that arrived.
    assert len(playout.relay(200, 5000 + 200 * FRAME_SAMPLES, payloads[0])) == 1
    # A corrupt payload is concealed, never raised.
    assert len(playout.relay(201, 5000 + 201 * FRAME_SAMPLES, b"\xff" * 3)) == 1
    audio = np.concatenate(frames[5:]).astype(float)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 8000 / len(audio) - 1000) < 10


def test_a_new_relayed_call_starts_the_sequence_again() -> None:
    payload = _OpusEncoder().encode(TONE)
    playout = OpusPlayout(rate=8000)
    assert len(playout.relay(40000, 0, payload)) == 1
    # Between calls the page sent 40,000 packets nobody relayed: the next call's packets are
    # more than half the sequence space ahead and would look late.
    later = (40000 + 40000) & 0xFFFF
    assert playout.relay(later, FRAME_SAMPLES, payload) == []
    playout.restart_relay()
    assert len(playout.relay(later + 1, 2 * FRAME_SAMPLES, payload)) == 1
    assert len(playout.relay(later + 2, 3 * FRAME_SAMPLES, payload)) == 1


async def test_a_relaying_channel_hands_frames_over_as_packets_arrive() -> None:
    channel = AgentChannel("agent1")
    payload = _OpusEncoder().encode(TONE)
    arrivals: list[float] = []
    channel.attach(None, lambda samples: arrivals.append(time.monotonic()), 8000, relay=True)
    client = await connect(channel, lambda: payload)
    try:
        await until(lambda: len(arrivals) > 30)
        assert channel._tick_handle is None  # no playout clock of ours
        assert channel.playout is not None and channel.playout.counters.decoded > 30
        # Back to clocked delivery (two browsers joined): the clock starts again.
        received: list[np.ndarray] = []
        channel.attach(None, received.append, 8000)
        await until(lambda: len(received) > 10)
        assert channel._tick_handle is not None
    finally:
        await client.close()
        await channel.close()


def test_the_channel_encodes_and_decodes_at_the_attached_rate() -> None:
    channel = AgentChannel("agent1")
    tone8 = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype(np.int16)
    received: list[np.ndarray] = []
    channel.attach(lambda: tone8, received.append, rate=8000)
    assert channel.rate == 8000 and channel._encoder.rate == 8000
    assert channel._encoder.complexity == 3
    payloads = [channel._next_payload() for _ in range(50)]
    decoder = OpusPlayout().decoder
    decoded = np.concatenate([decoder.decode(p) for p in payloads[10:]]).astype(float)
    spectrum = np.abs(np.fft.rfft(decoded * np.hanning(len(decoded))))
    assert abs(np.argmax(spectrum) * 48000 / len(decoded) - 1000) < 10  # a 48 kHz peer hears it
    assert all(p[0] >> 3 < 4 for p in payloads)  # TOC config 0-3: SILK narrowband
    channel.attach(lambda: TONE, None)
    assert channel.rate == 48000 and len(channel._next_payload()) > 3
    try:
        channel.attach(None, None, rate=44100)
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("44.1 kHz accepted")


def test_digital_silence_and_no_source_skip_the_encoder() -> None:
    channel = AgentChannel("agent1")
    quiet = np.zeros(160, np.int16)
    tone8 = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype(np.int16)
    frames = [tone8] * 5 + [quiet] * 20 + [tone8] * 5 + [None] * 5 + [tone8] * 2
    it = iter(frames)
    channel.attach(lambda: next(it), None, rate=8000)
    payloads = [channel._next_payload() for _ in frames]
    # Speech, 2 frames of encoded hangover, then the cached silence packet; speech again.
    assert [p == SILENCE for p in payloads[5:25]] == [False] * 2 + [True] * 18
    assert all(p != SILENCE for p in payloads[25:30])
    assert all(p == SILENCE for p in payloads[30:35]) and payloads[35] != SILENCE
    assert channel.encoded_frames == 5 + 2 + 5 + 2
    assert channel.silent_frames == 18 + 5
    # The far end decodes it all (speech, CELT silence, speech again) without errors.
    playout = OpusPlayout(rate=8000)
    for k, payload in enumerate(payloads):
        playout.put(k, k * FRAME_SAMPLES, payload, k * 0.02)
        assert playout.get(k * 0.02 + 0.001) is not None
    assert playout.counters.decode_errors == 0 and playout.counters.decoded == len(frames)
    detached = AgentChannel("agent2")
    assert detached._next_payload() == SILENCE and detached.encoded_frames == 0
