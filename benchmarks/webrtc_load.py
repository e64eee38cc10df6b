"""Load generator of benchmarks/webrtc_bridge.py: N WebRTC agents and N SIP callers, one process.

Runs in a child process on its own core (`generator_main`). Per call k (1..N):

- an **agent**: an aiortc `RTCPeerConnection` that logs in as ``benchK`` over the server's
  WebSocket (wss, self-signed certificate not verified), sends its offer (no ICE servers), goes
  Ready, waits for ICE connected, and answers the ringing call with the protocol's ``answer``
  command. It sends pre-encoded Opus (`AGENT_PATTERN`, a loop encoded once: cheap) and takes
  the server's packets before aiortc's jitter buffer (no decoder thread in the generator): once
  DTLS is up through `webrtc.fastpath` as the server's channels do (aiortc set up ICE, DTLS and
  SRTP; the packets skip its per-packet tasks, so one generator core carries more calls than
  the server is given), before that through `webrtc.channel.OpusSendTrack` and `webrtc.rtptap`;
  each packet is decoded with libopus (`media.codecs`) to look for the caller's bursts;
- a **caller**: an INVITE to ``agent-benchK`` through the project's own UA (sip.ua behind
  sip.service), PCMU only; on 200 OK a UDP socket sends 50 RTP packets/s of `CALLER_PATTERN` to
  the address of the answer and receives the server's packets.

Latency (robust to transcoding, which rewrites every payload). Each direction's audio is
silence with a one-frame tone burst every `PERIOD_FRAMES` frames (300 ms). The sender stamps
when each burst packet left (monotonic clock); the receiver decodes every packet and finds
the first sample above `THRESHOLD` after at least `QUIET_FRAMES` quiet frames (`OnsetDetector`).
One-way latency = (arrival of that packet + the sample's offset in it) - (send time of the burst
packet + the onset's offset in the source frame, found by decoding the pattern the same way).
So it is sample-accurate, counts the transcoding's algorithmic delay (resampler, the bridge's
Opus look-ahead) but not the sender's own encoder delay, and needs no marker in the payload.
A burst is matched to the latest burst sent before it arrived (`match_onsets`): valid while the
latency stays under the period. A burst that never shows up (a frame the bridge concealed or
dropped) counts as missed.

Loss on the wire per stream, from RTP timestamps over the packets that arrived in the window
(`StreamCounter`): expected = span / step + 1, so a slot the server's sender skipped counts as
lost as well as a packet dropped on the way.

Click to two-way audio: from sending ``answer`` on the agent's socket to both (a) the agent
hearing the caller (the onset of the caller's opening tone, `CALLER_OPENING` frames sent from
the 200 OK on) and (b) the caller receiving the server's first RTP packet.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import gc
import json
import math
import os
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.harness import run_generator

SAMPLE_RATE = 48000
FRAME = 0.02
PERIOD_FRAMES = 15
"""A burst every 300 ms in both directions."""
QUIET_FRAMES = 3
THRESHOLD = 2000
TONE_AMPLITUDE = 8000
CALLER_OPENING = 5
"""The caller starts with 100 ms of tone (what the agent must hear after Answer)."""
OPUS_STEP = 960
PCMU_STEP = 160


# -- pure helpers (tests/benchmarks/test_webrtc_bridge.py) ---------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p99 and max of `values`."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


class OnsetDetector:
    """Finds tone onsets in a stream of frames: a loud frame after `quiet` quiet ones."""

    def __init__(self, quiet: int = QUIET_FRAMES) -> None:
        self.quiet = quiet
        self._quiet_run = quiet

    def feed(self, loud_at: int) -> bool:
        """`loud_at`: index of the first sample above the threshold in the frame, -1 for none.
        True when this frame holds an onset."""
        if loud_at < 0:
            self._quiet_run += 1
            return False
        onset = self._quiet_run >= self.quiet
        self._quiet_run = 0
        return onset


def match_onsets(
    sent: Sequence[float], onsets: Sequence[float], window: tuple[float, float], period: float
) -> tuple[list[float], int, int]:
    """Latencies (s) of the bursts sent in `window` [start, end): each onset goes to the latest
    burst sent before it; returns (latencies, bursts sent in the window, bursts missed)."""
    start, end = window
    hits: dict[int, float] = {}
    for onset in onsets:
        i = bisect.bisect_right(sent, onset) - 1
        if i < 0 or not start <= sent[i] < end:
            continue
        latency = onset - sent[i]
        if latency < period and i not in hits:
            hits[i] = latency
    in_window = sum(1 for s in sent if start <= s < end)
    return [hits[i] for i in sorted(hits)], in_window, in_window - len(hits)


class StreamCounter:
    """Packets of one RTP stream that arrived in a window, and how many its timestamps say were
    sent (RFC 3550 A.1 style extension of the 32-bit timestamp)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.received = 0
        self.duplicates = 0
        self._last: int | None = None
        self._cycles = 0
        self._low: int | None = None
        self._high: int | None = None
        self._seen: set[int] = set()

    def extend(self, timestamp: int) -> int:
        if self._last is not None:
            if timestamp < self._last and self._last - timestamp > 0x80000000:
                self._cycles += 1 << 32
            elif timestamp > self._last and timestamp - self._last > 0x80000000:
                return timestamp + self._cycles - (1 << 32)  # a late packet of the last cycle
        self._last = timestamp
        return timestamp + self._cycles

    def add(self, timestamp: int, counted: bool = True) -> None:
        ext = self.extend(timestamp)
        if not counted:
            return
        slot = ext // self.step
        if slot in self._seen:
            self.duplicates += 1
            return
        self._seen.add(slot)
        self.received += 1
        self._low = slot if self._low is None else min(self._low, slot)
        self._high = slot if self._high is None else max(self._high, slot)

    @property
    def expected(self) -> int:
        if self._low is None or self._high is None:
            return 0
        return self._high - self._low + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


def ulaw_to_linear(byte: int) -> int:
    """G.711 µ-law decode of one byte (ITU-T G.711)."""
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - magnitude) if u & 0x80 else (magnitude - 0x84)


def linear_to_ulaw(sample: int) -> int:
    """G.711 µ-law encode of one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


LOUD_ULAW = bytes(1 if abs(ulaw_to_linear(b)) > THRESHOLD else 0 for b in range(256))
"""µ-law byte -> 1 when the sample is above the threshold (``payload.translate`` then find)."""


def ulaw_loud_at(payload: bytes) -> int:
    """Index of the first sample above the threshold in a PCMU payload, -1 for none."""
    return payload.translate(LOUD_ULAW).find(1)


def pcm_loud_at(pcm: bytes) -> int:
    """Index of the first int16 sample above the threshold, -1 for none."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > THRESHOLD)
    return int(loud[0]) if loud.size else -1


def caller_pattern() -> list[bytes]:
    """`PERIOD_FRAMES` PCMU frames: a 1 kHz burst (starting at its crest) then silence."""
    tone = bytes(
        linear_to_ulaw(int(TONE_AMPLITUDE * math.cos(2 * math.pi * 1000 * i / 8000)))
        for i in range(160)
    )
    silence = bytes([0xFF]) * 160
    return [tone] + [silence] * (PERIOD_FRAMES - 1)


def caller_opening() -> bytes:
    """A PCMU frame of continuous tone (the opening and the burst share the phase)."""
    return caller_pattern()[0]


def agent_pattern(rate: int = SAMPLE_RATE) -> tuple[list[bytes], int, int]:
    """`PERIOD_FRAMES` Opus packets (mono, 32 kbit/s, VOIP, from a `rate` Hz input: the band a
    browser encodes when the answer says ``maxplaybackrate=rate``) of a one-frame 1 kHz burst
    and silence, encoded as a steady loop; and where the burst's onset is once decoded at 48 kHz:
    (packets, packet index, sample offset)."""
    import numpy as np
    import opuslib

    encoder = opuslib.Encoder(rate, 1, opuslib.APPLICATION_VOIP)
    encoder.bitrate = 32000
    samples = rate // 50
    t = np.arange(samples)
    tone = (TONE_AMPLITUDE * np.cos(2 * np.pi * 1000 * t / rate)).astype("<i2").tobytes()
    silence = bytes(2 * samples)
    frames = ([tone] + [silence] * (PERIOD_FRAMES - 1)) * 3
    packets = [bytes(encoder.encode(f, samples)) for f in frames]
    loop = packets[2 * PERIOD_FRAMES :]
    decoder = opuslib.Decoder(SAMPLE_RATE, 1)
    for p in packets[:PERIOD_FRAMES]:
        decoder.decode(p, 960)
    detector = OnsetDetector()
    for _ in range(2):  # the decoder settles on the loop in the first round
        for p in packets[PERIOD_FRAMES : 2 * PERIOD_FRAMES]:
            detector.feed(pcm_loud_at(decoder.decode(p, 960)))
    for index, p in enumerate(loop):
        at = pcm_loud_at(decoder.decode(p, 960))
        if detector.feed(at):
            return loop, index, at
    raise RuntimeError("the agent pattern has no detectable onset")


# -- the generator -------------------------------------------------------------------------------


@dataclass
class Window:
    start: float = math.inf
    end: float = math.inf

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Call:
    """One call: agent k's peer connection and socket, caller k's SIP call and RTP socket."""

    index: int
    name: str
    window: Window
    ws: Any = None
    reader: asyncio.Future[None] | None = None
    pc: Any = None
    call_id: str | None = None
    ringing: asyncio.Event = field(default_factory=asyncio.Event)
    acks: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # agent side
    agent_sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    agent_slot: int = 0
    agent_rx: StreamCounter = field(default_factory=lambda: StreamCounter(OPUS_STEP))
    agent_onsets: list[float] = field(default_factory=list)
    agent_detector: OnsetDetector = field(default_factory=OnsetDetector)
    decoder: Any = None
    fast: Any = None
    clicked_at: float | None = None
    agent_heard_at: float | None = None
    # caller side
    sip_call: Any = None
    established: asyncio.Future[tuple[str, int]] | None = None
    sock: Any = None
    caller_sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    caller_rx: StreamCounter = field(default_factory=lambda: StreamCounter(PCMU_STEP))
    caller_onsets: list[float] = field(default_factory=list)
    caller_detector: OnsetDetector = field(default_factory=OnsetDetector)
    caller_first_at: float | None = None
    caller_dest: tuple[str, int] | None = None
    send_lag_max: float = 0.0
    send_late_2ms: int = 0
    rtp_out: int = 0
    foreign: int = 0
    ended: str = ""


class Generator:
    def __init__(self, spec: dict[str, Any], conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.window = Window()
        self.calls = [Call(k, f"bench{k}", self.window) for k in range(1, spec["calls"] + 1)]
        self.by_index = {c.index: c for c in self.calls}
        self.agent_rate = SAMPLE_RATE
        self.agent_loop, self.agent_onset_packet, agent_offset = agent_pattern()
        self.agent_onset_offset = agent_offset / SAMPLE_RATE
        self.caller_loop = caller_pattern()
        self.caller_onset_offset = ulaw_loud_at(self.caller_loop[0]) / 8000
        self.loop_lag: list[float] = []
        self.phase = "setup"

    # -- helpers

    def report(self, *message: Any) -> None:
        self.conn.send(message)

    async def run(self) -> dict[str, Any]:
        import aiohttp

        spec = self.spec
        loop = asyncio.get_running_loop()
        monitor = asyncio.ensure_future(self._monitor())
        await self._start_sip()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.session = session
            t0 = time.monotonic()
            limit = asyncio.Semaphore(8)

            async def agent_up(call: Call) -> None:
                async with limit:
                    await self._agent_up(call)

            await asyncio.wait_for(
                asyncio.gather(*(agent_up(c) for c in self.calls)), spec["setup_timeout"]
            )
            t_agents = time.monotonic() - t0
            # What set-up allocated stays: keep the cyclic GC from walking it again and again
            # (its full collections stalled the generator's loop for tens of ms at N=40).
            gc.collect()
            gc.freeze()
            self.report(
                "progress", f"{len(self.calls)} agents logged in, ICE up in {t_agents:.1f} s"
            )
            await asyncio.wait_for(
                asyncio.gather(*(self._ring(c) for c in self.calls)), spec["setup_timeout"]
            )
            # Answer one call every `stagger` seconds (agents do not all click at once).
            for call in self.calls:
                await self._answer(call)
                await asyncio.sleep(spec["stagger"])
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if all(c.agent_heard_at and c.caller_first_at for c in self.calls):
                    break
                await asyncio.sleep(0.05)
            self.phase = "warmup"
            await asyncio.sleep(spec["warmup"])
            times = os.times()
            self.window.start = time.monotonic()
            cpu0 = times.user + times.system
            self.phase = "window"
            self.report("window-start", self.window.start)
            await asyncio.sleep(spec["duration"])
            self.window.end = time.monotonic()
            times = os.times()
            cpu1 = times.user + times.system
            self.report("window-end", self.window.end)
            self.phase = "grace"
            await asyncio.sleep(0.5)
            result = self._results(cpu1 - cpu0, t_agents)
            self.phase = "teardown"
            monitor.cancel()
            await self._teardown()
        del loop
        return result

    async def _monitor(self) -> None:
        """Event-loop lag of the generator (oversleep of a 10 ms sleep) during the window."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag = time.monotonic() - before - 0.01
            if self.phase == "window":
                self.loop_lag.append(lag)

    # -- agents

    async def _agent_up(self, call: Call) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from media.codecs import codec_for
        from webrtc.channel import OpusSendTrack, install_aioice_guards
        from webrtc.fastpath import AudioFastPath, audio_parameters
        from webrtc.rtptap import install_audio_tap

        spec = self.spec
        install_aioice_guards()
        call.decoder = codec_for("opus").decoder()
        call.ws = await self.session.ws_connect(
            f"wss://127.0.0.1:{spec['http_port']}/ws", ssl=False, heartbeat=None
        )
        call.reader = asyncio.ensure_future(self._read_ws(call))
        reply = await self._request(call, {"type": "login", "username": call.name,
                                           "password": spec["password"]})  # fmt: skip
        if reply.get("type") != "login-ok":
            raise RuntimeError(f"{call.name}: login refused: {reply}")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        call.pc = pc

        def next_payload() -> bytes:
            slot = call.agent_slot
            call.agent_slot += 1
            index = slot % PERIOD_FRAMES
            if index == self.agent_onset_packet:
                call.agent_sent.append(time.monotonic() + self.agent_onset_offset)
            return self.agent_loop[index]

        def on_packet(packet: Any) -> None:
            self._agent_rtp(call, packet.timestamp, packet.payload)

        def on_audio(sequence: int, timestamp: int, payload: bytes) -> None:
            self._agent_rtp(call, timestamp, payload)

        track = OpusSendTrack(next_payload)
        pc.addTrack(track)
        for transceiver in pc.getTransceivers():
            if install_audio_tap(transceiver.receiver, on_packet) is None:
                raise RuntimeError("aiortc receive tap unavailable")
        await pc.setLocalDescription(await pc.createOffer())
        params = audio_parameters(pc.localDescription.sdp)
        sender = pc.getSenders()[0]
        if params is not None and spec.get("fast_path", True):
            # The agents move their audio the way the server's channels do (webrtc.fastpath),
            # so that one generator core keeps up with more calls than the server is given.
            fast = AudioFastPath(call.name, params, next_payload, on_audio, lambda: False)
            call.fast = fast
            track.defer()
            dtls = sender.transport

            @dtls.on("statechange")
            def on_dtls_state() -> None:
                if dtls.state == "connected" and not fast.activate(dtls, sender):
                    track.resume()
                elif dtls.state in ("closed", "failed"):
                    fast.deactivate()

        reply = await self._request(call, {"type": "offer", "sdp": pc.localDescription.sdp})
        if reply.get("type") != "answer":
            raise RuntimeError(f"{call.name}: offer refused: {reply}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        rate = max_playback_rate(reply["sdp"])
        if rate != self.agent_rate:  # encode as a browser would for that answer
            self.agent_rate = rate
            self.agent_loop, self.agent_onset_packet, agent_offset = agent_pattern(rate)
            self.agent_onset_offset = agent_offset / SAMPLE_RATE
        reply = await self._request(call, {"type": "state", "state": "ready"})
        if reply.get("type") != "ack":
            raise RuntimeError(f"{call.name}: ready refused: {reply}")
        while pc.iceConnectionState not in ("connected", "completed"):
            if pc.iceConnectionState in ("failed", "closed"):
                raise RuntimeError(f"{call.name}: ICE {pc.iceConnectionState}")
            await asyncio.sleep(0.05)

    async def _request(self, call: Call, message: dict[str, Any]) -> dict[str, Any]:
        ident = len(call.acks) + 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        call.acks[ident] = future
        await call.ws.send_str(json.dumps({"v": 1, "id": ident, **message}))
        return await asyncio.wait_for(future, 30)

    async def _read_ws(self, call: Call) -> None:
        import aiohttp

        async for msg in call.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            kind = data.get("type")
            ref = data.get("ref")
            if isinstance(ref, int) and ref in call.acks and not call.acks[ref].done():
                call.acks[ref].set_result(data)
            if kind == "call-incoming":
                call.call_id = data["call"]["call_id"]
                call.ringing.set()
            elif kind == "error":
                call.errors.append(f"{data.get('code')}: {data.get('reason')}")

    def _agent_rtp(self, call: Call, timestamp: int, payload: bytes) -> None:
        now = time.monotonic()
        call.agent_rx.add(timestamp, self.window.holds(now))
        try:
            pcm = call.decoder.decode(bytes(payload))
        except Exception:
            call.foreign += 1
            return
        at = pcm_loud_at(pcm)
        if call.agent_detector.feed(at) and call.clicked_at is not None:
            heard = now + at / SAMPLE_RATE
            if call.agent_heard_at is None:
                call.agent_heard_at = now
            call.agent_onsets.append(heard)

    async def _answer(self, call: Call) -> None:
        assert call.call_id is not None
        ident = len(call.acks) + 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        call.acks[ident] = future
        text = json.dumps({"v": 1, "id": ident, "type": "answer", "call_id": call.call_id})
        call.clicked_at = time.monotonic()
        await call.ws.send_str(text)

    # -- callers

    async def _start_sip(self) -> None:
        from sip.service import SipService
        from sip.transport import SipTransports
        from sip.ua import UserAgent

        self.transports = SipTransports()
        await self.transports.start(host="127.0.0.1", udp_port=0)
        self.ua = UserAgent(
            local_endpoints={"udp": self.transports.local_endpoint("udp")},
            trusted_source=lambda ip: "server",
            user_agent="webrtc_bridge-caller",
        )
        self.sip = SipService(self.ua, self.transports, self._on_sip)

    async def _ring(self, call: Call) -> None:
        from sip.endpoint import Endpoint
        from sip.message import URI, Address

        loop = asyncio.get_running_loop()
        port = self.spec["sip_port"]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _CallerProtocol(self, call), local_addr=("127.0.0.1", 0)
        )
        call.sock = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        rtp_port = transport.get_extra_info("sockname")[1]
        body = _sdp(rtp_port, call.index).encode()
        call.established = loop.create_future()
        target = f"agent-{call.name}"

        def invite(now: float) -> None:
            call.sip_call = self.ua.send_invite(
                destination=Endpoint("udp", "127.0.0.1", port),
                request_uri=URI.parse(f"sip:{target}@127.0.0.1:{port}"),
                from_address=Address.parse(f"<sip:caller{call.index}@127.0.0.1>"),
                to_address=Address.parse(f"<sip:{target}@127.0.0.1:{port}>"),
                body=body,
                now=now,
            )
            call.sip_call.app = call

        self.sip.act(invite)
        await asyncio.wait_for(call.ringing.wait(), 20)

    def _on_sip(self, event: Any) -> None:
        from sip.ua import CallEnded, CallProgress

        call = getattr(getattr(event, "call", None), "app", None)
        if not isinstance(call, Call):
            return
        if isinstance(event, CallProgress) and 200 <= event.response.status < 300:
            if call.caller_dest is None:
                dest = _parse_sdp_address(event.response.body.decode(errors="replace"))
                call.caller_dest = dest
                self._start_rtp(call)
        elif isinstance(event, CallProgress) and event.response.status >= 300:
            call.ended = f"{event.response.status} {event.response.reason}"
        elif isinstance(event, CallEnded):
            call.ended = call.ended or str(event.cause)

    def _start_rtp(self, call: Call) -> None:
        loop = asyncio.get_running_loop()
        ssrc = secrets.randbits(32)
        seq0 = secrets.randbits(16)
        ts0 = secrets.randbits(32)
        start = time.monotonic()
        opening = caller_opening()
        pattern = self.caller_loop
        period = len(pattern)
        sendto = call.sock.sendto
        dest = call.caller_dest
        pack = struct.Struct(">BBHII").pack
        onset = self.caller_onset_offset
        state = {"k": 0}

        def send() -> None:
            if self.phase == "teardown":
                return
            k = state["k"]
            state["k"] = k + 1
            now = time.monotonic()
            due = start + k * FRAME
            lag = now - due
            if self.window.holds(now):
                call.send_lag_max = max(call.send_lag_max, lag)
                if lag > 0.002:
                    call.send_late_2ms += 1
            if k < CALLER_OPENING:
                payload = opening
            else:
                index = (k - CALLER_OPENING) % period
                payload = pattern[index]
                if index == 0:
                    call.caller_sent.append(now + onset)
            marker = 0x80 if k == 0 else 0
            header = pack(
                0x80, marker, (seq0 + k) & 0xFFFF, (ts0 + k * PCMU_STEP) & 0xFFFFFFFF, ssrc
            )
            sendto(header + payload, dest)
            call.rtp_out += 1
            loop.call_later(max(0.0, start + (k + 1) * FRAME - time.monotonic()), send)

        send()

    def _caller_rtp(self, call: Call, data: bytes) -> None:
        now = time.monotonic()
        if len(data) < 12 or data[0] >> 6 != 2 or 72 <= (data[1] & 0x7F) <= 76:
            call.foreign += 1
            return
        if call.caller_first_at is None:
            call.caller_first_at = now
        timestamp = struct.unpack_from(">I", data, 4)[0]
        call.caller_rx.add(timestamp, self.window.holds(now))
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:
            offset += 4 + 4 * struct.unpack_from(">H", data, offset + 2)[0]
        at = ulaw_loud_at(data[offset:])
        if call.caller_detector.feed(at):
            call.caller_onsets.append(now + at / 8000)

    # -- results and teardown

    def _results(self, cpu: float, t_agents: float) -> dict[str, Any]:
        window = (self.window.start, self.window.end)
        period = PERIOD_FRAMES * FRAME
        to_agent: list[float] = []
        to_caller: list[float] = []
        sent = {"to_agent": 0, "to_caller": 0}
        missed = {"to_agent": 0, "to_caller": 0}
        clicks: list[dict[str, float | None]] = []
        for c in self.calls:
            lat, n, miss = match_onsets(c.caller_sent, c.agent_onsets, window, period)
            to_agent += lat
            sent["to_agent"] += n
            missed["to_agent"] += miss
            lat, n, miss = match_onsets(c.agent_sent, c.caller_onsets, window, period)
            to_caller += lat
            sent["to_caller"] += n
            missed["to_caller"] += miss
            clicked = c.clicked_at
            heard = c.agent_heard_at - clicked if c.agent_heard_at and clicked else None
            first = c.caller_first_at - clicked if c.caller_first_at and clicked else None
            clicks.append({"agent_hears_caller": heard, "caller_gets_agent": first})
        two_way = [
            max(a, b)
            for x in clicks
            if (a := x["agent_hears_caller"]) is not None
            and (b := x["caller_gets_agent"]) is not None
        ]
        duration = self.window.end - self.window.start
        ms = 1000.0
        return {
            "calls": len(self.calls),
            "agents_setup_seconds": t_agents,
            "window_seconds": duration,
            "latency_ms": {
                "caller_to_agent": summary([x * ms for x in to_agent]),
                "agent_to_caller": summary([x * ms for x in to_caller]),
            },
            "bursts_sent": sent,
            "bursts_missed": missed,
            "wire": {
                "to_agent": {
                    "expected": sum(c.agent_rx.expected for c in self.calls),
                    "received": sum(c.agent_rx.received for c in self.calls),
                },
                "to_caller": {
                    "expected": sum(c.caller_rx.expected for c in self.calls),
                    "received": sum(c.caller_rx.received for c in self.calls),
                },
            },
            "click_to_two_way_ms": summary([x * ms for x in two_way]),
            "click_agent_hears_caller_ms": summary(
                [x["agent_hears_caller"] * ms for x in clicks if x["agent_hears_caller"]]
            ),
            "click_caller_gets_agent_ms": summary(
                [x["caller_gets_agent"] * ms for x in clicks if x["caller_gets_agent"]]
            ),
            "calls_without_two_way": len(self.calls) - len(two_way),
            "generator_cpu_fraction": cpu / duration if duration > 0 else math.nan,
            "generator_loop_lag_ms": summary([x * ms for x in self.loop_lag]),
            "caller_send_lag_max_ms": max((c.send_lag_max for c in self.calls), default=0) * ms,
            "caller_sends_late_2ms": sum(c.send_late_2ms for c in self.calls),
            "agent_send_slots_skipped": sum(
                getattr(s.track, "skipped", 0)
                for c in self.calls
                if c.pc is not None
                for s in c.pc.getSenders()
                if s.track is not None
            ),
            "foreign_packets": sum(c.foreign for c in self.calls),
            "errors": sorted({e for c in self.calls for e in c.errors})[:10],
            "ended_early": sorted({c.ended for c in self.calls if c.ended})[:10],
        }

    async def _teardown(self) -> None:
        from functools import partial

        for c in self.calls:
            if c.sip_call is not None:
                self.sip.act(partial(self.ua.hangup, c.sip_call))
        await asyncio.sleep(0.3)
        for c in self.calls:
            if c.fast is not None:
                c.fast.deactivate()
            if c.pc is not None:
                try:
                    await asyncio.wait_for(c.pc.close(), 2)
                except (TimeoutError, Exception):
                    pass
            if c.ws is not None:
                await c.ws.close()
            if c.sock is not None:
                c.sock.close()
        self.sip.close()
        await self.transports.close()


class _CallerProtocol(asyncio.DatagramProtocol):
    def __init__(self, generator: Generator, call: Call) -> None:
        self.generator = generator
        self.call = call

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.generator._caller_rtp(self.call, data)

    def error_received(self, exc: Exception) -> None:
        pass


def _sdp(port: int, session: int) -> str:
    lines = [
        "v=0",
        f"o=bench {session} 1 IN IP4 127.0.0.1",
        "s=webrtc_bridge",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n"


def max_playback_rate(sdp: str) -> int:
    """The smallest ``maxplaybackrate`` of the Opus fmtp lines of `sdp` (48000 when none)."""
    rates = [
        int(part.split("=", 1)[1])
        for line in sdp.splitlines()
        if line.startswith("a=fmtp:")
        for part in line.split(" ", 1)[-1].split(";")
        if part.strip().startswith("maxplaybackrate=") and part.split("=", 1)[1].strip().isdigit()
    ]
    return min([r for r in rates if r in (8000, 12000, 16000, 24000)] or [SAMPLE_RATE])


def _parse_sdp_address(text: str) -> tuple[str, int]:
    """(host, port) of the first audio stream of an SDP answer."""
    host, port = "127.0.0.1", 0
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    if not port:
        raise ValueError("no audio stream in the answer")
    return host, port


def generator_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Child process entry: pin to the core, run one step, send the result dict."""
    run_generator(conn, spec.get("core"), lambda: Generator(spec, conn).run())
