"""Tests of media.services over real UDP sockets on 127.0.0.1, with a test peer socket.

Waits are bounded (`asyncio.wait_for`); nothing sleeps for a fixed time beyond short polls.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest

from media.codecs import codec_for
from media.dtmf import DtmfError, DtmfSender, TelephoneEvent
from media.g711 import PCMA as G711_PCMA
from media.g711 import PCMU as G711_PCMU
from media.pacer import MAX_BURST, Pacer
from media.placer import PacketPlacer
from media.player import load, sound_path
from media.ports import PortAllocator, RtpSocketPool
from media.rtcp import SenderReport, parse_compound
from media.rtp import RtpPacket, rtp_header
from media.srtp import AEAD_AES_128_GCM, SrtpSession, generate_crypto
from media.wav import WavWriter
from omlmedia import services
from omlmedia.services import (
    CAPABILITIES,
    DtmfEcho,
    MediaStats,
    MusicOnHold,
    Recorder,
    UnsupportedStreamError,
)
from sip.sdp import (
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    TELEPHONE_EVENT_48000,
    Codec,
    CryptoAttribute,
    Direction,
    NegotiatedStream,
)

HOST = "127.0.0.1"


class Peer(asyncio.DatagramProtocol):
    """The far end: a UDP socket that keeps what it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.arrived_at: list[float] = []
        """The loop's time at each datagram's arrival, in order (not when a task took it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.arrived_at.append(asyncio.get_running_loop().time())
        self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def packets(self, count: int, within: float = 20.0) -> list[RtpPacket]:
        async def collect() -> list[RtpPacket]:
            return [RtpPacket.parse((await self.queue.get())[0]) for _ in range(count)]

        return await asyncio.wait_for(collect(), within)

    def drain(self) -> list[RtpPacket]:
        drained = []
        while not self.queue.empty():
            drained.append(RtpPacket.parse(self.queue.get_nowait()[0]))
        return drained


async def open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    return peer


@pytest.fixture
async def ports() -> AsyncIterator[RtpSocketPool]:
    low = random.randrange(41000, 59000, 2)
    pool = RtpSocketPool(PortAllocator(low, low + 200), HOST)
    yield pool
    pool.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = await open_peer()
    yield p
    assert p.transport is not None
    p.transport.close()


def stream_for(
    peer: Peer,
    codec: Codec = PCMU,
    telephone_event: Codec | None = TELEPHONE_EVENT,
    direction: Direction = Direction.SENDRECV,
    ptime: int = 20,
    rtcp_port: int | None = None,
    local_crypto: CryptoAttribute | None = None,
    remote_crypto: CryptoAttribute | None = None,
) -> NegotiatedStream:
    return NegotiatedStream(
        0,
        codec,
        telephone_event,
        HOST,
        peer.port,
        HOST,
        rtcp_port or peer.port + 1,
        False,
        direction,
        ptime,
        local_crypto,
        remote_crypto,
    )


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Poll a counter of the service under test (it has no event to wait on) for `within` s."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - polling the service's counters
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), within)


def rtp(
    payload_type: int, sequence_number: int, timestamp: int, payload: bytes, marker: bool = False
) -> bytes:
    return rtp_header(payload_type, marker, sequence_number, timestamp, 0x1234) + payload


def rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(float) ** 2)))


def tone(frequency: float, seconds: float, rate: int, level: float = 8000) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * level).astype(np.int16)


def dominant_frequencies(
    samples: npt.NDArray[np.int16], count: int, rate: int = 8000
) -> list[float]:
    magnitude = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    local = (magnitude[1:-1] > magnitude[:-2]) & (magnitude[1:-1] >= magnitude[2:])
    candidates = np.nonzero(local)[0] + 1
    return sorted(float(freqs[i]) for i in candidates[np.argsort(magnitude[candidates])[-count:]])


# -- common behaviour -------------------------------------------------------------------------


def test_capabilities_offer_g711_first_then_g722_opus_and_telephone_event_at_8_and_48_khz() -> None:
    names = [(c.encoding_name, c.clock_rate) for c in CAPABILITIES.codecs]
    assert names == [
        ("PCMU", 8000),
        ("PCMA", 8000),
        ("G722", 8000),
        ("opus", 48000),
        ("telephone-event", 8000),
        ("telephone-event", 48000),
    ]
    assert CAPABILITIES.rtcp_mux is False


@pytest.mark.parametrize("codec", [Codec(18, "G729", 8000), Codec(96, "PCMU", 16000)])
async def test_unsupported_codec_is_refused_with_488_before_binding(
    ports: RtpSocketPool, peer: Peer, codec: Codec
) -> None:
    service = MusicOnHold(ports, HOST)
    with pytest.raises(UnsupportedStreamError) as info:
        await service.start(stream_for(peer, codec))
    assert info.value.status == 488
    assert str(info.value) == "codec not supported by this service"
    assert ports.in_use == 0


async def test_unusable_srtp_keys_are_refused_with_488_before_binding(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = MusicOnHold(ports, HOST)
    stream = stream_for(
        peer, local_crypto=generate_crypto(1), remote_crypto=generate_crypto(1, AEAD_AES_128_GCM)
    )
    with pytest.raises(UnsupportedStreamError) as info:
        await service.start(stream)
    assert info.value.status == 488
    assert ports.in_use == 0


async def test_bind_then_start_returns_the_same_port_and_stop_is_idempotent(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = DtmfEcho(ports, HOST)
    port = await service.bind()
    assert port % 2 == 0 and ports.in_use == 1
    assert await service.start(stream_for(peer)) == port
    assert service.running
    assert service.legs == (service.leg,)
    service.stop()
    service.stop()
    assert not service.running
    assert service.legs == ()
    assert ports.in_use == 0
    assert service.port == 0


async def test_the_leg_sends_rtcp_reports_when_the_router_asks(
    ports: RtpSocketPool, peer: Peer
) -> None:
    rtcp = await open_peer()
    service = MusicOnHold(ports, HOST)
    await service.start(stream_for(peer, rtcp_port=rtcp.port))
    try:
        await peer.packets(5)
        (leg,) = service.legs
        assert leg.send_report(leg.clock() + 10)
        data, _ = await asyncio.wait_for(rtcp.queue.get(), 3)
    finally:
        service.stop()
        assert rtcp.transport is not None
        rtcp.transport.close()
    report = parse_compound(data)[0]
    assert isinstance(report, SenderReport)
    assert report.ssrc == service.ssrc and report.packet_count >= 5


# -- music on hold ----------------------------------------------------------------------------


async def test_moh_sends_50_packets_a_second_with_continuous_numbering_and_real_music(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = MusicOnHold(ports, HOST)
    port = await service.start(stream_for(peer))
    try:
        first = (await peer.packets(1))[0]
        rest = await peer.packets(25)
    finally:
        service.stop()
    # From the first packet's arrival to the 26th's, not from when this task woke after the
    # first (a loaded machine may wake it late, with several packets already queued).
    elapsed = peer.arrived_at[25] - peer.arrived_at[0]
    packets = [first, *rest]
    assert 25 / elapsed == pytest.approx(50, rel=0.25)
    assert {p.ssrc for p in packets} == {service.ssrc}
    assert {p.payload_type for p in packets} == {0}
    assert [p.marker for p in packets] == [True] + [False] * 25
    assert all(
        (b.sequence_number - a.sequence_number) & 0xFFFF == 1
        for a, b in itertools.pairwise(packets)
    )
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(packets)
    )
    assert all(len(p.payload) == 160 for p in packets)
    music = load(sound_path("moh"), 8000)
    assert packets[0].payload == G711_PCMU.encode(music[:160])
    assert b"".join(p.payload for p in packets) == G711_PCMU.encode(music[: 26 * 160])
    assert port % 2 == 0


async def test_moh_uses_pcma_with_the_peers_payload_type_and_ptime(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = MusicOnHold(ports, HOST)
    await service.start(stream_for(peer, Codec(8, "PCMA", 8000), ptime=30))
    try:
        packets = await peer.packets(3)
    finally:
        service.stop()
    assert {p.payload_type for p in packets} == {8}
    assert [len(p.payload) for p in packets] == [240] * 3
    assert (packets[1].timestamp - packets[0].timestamp) & 0xFFFFFFFF == 240
    assert packets[0].payload == G711_PCMA.encode(load(sound_path("moh"), 8000)[:240])


async def test_an_opus_caller_hears_the_music_at_48_khz(ports: RtpSocketPool, peer: Peer) -> None:
    service = MusicOnHold(ports, HOST)
    await service.start(stream_for(peer, OPUS, TELEPHONE_EVENT_48000))
    try:
        packets = await peer.packets(50)
    finally:
        service.stop()
    assert {p.payload_type for p in packets} == {111}
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF == 960 for a, b in itertools.pairwise(packets)
    )
    decoder = codec_for("opus").decoder()
    audio = np.concatenate([decoder.decode(p.payload) for p in packets])
    assert len(audio) == 50 * 960
    music = load(sound_path("moh"), 48000)[: len(audio)]
    assert rms(audio[4800:]) == pytest.approx(rms(music[4800:]), rel=0.3)
    assert rms(audio[4800:]) > 300


async def test_moh_over_srtp_with_sdes_keys_on_both_ends(ports: RtpSocketPool, peer: Peer) -> None:
    ours, theirs = generate_crypto(1), generate_crypto(1)
    rtcp = await open_peer()
    caller = SrtpSession(theirs, ours)  # the caller's view: its key out, ours in
    service = MusicOnHold(ports, HOST)
    port = await service.start(
        stream_for(peer, rtcp_port=rtcp.port, local_crypto=ours, remote_crypto=theirs)
    )
    try:
        protected = [await asyncio.wait_for(peer.queue.get(), 3) for _ in range(10)]
        packets = [RtpPacket.parse(caller.unprotect_rtp(data)) for data, _ in protected]
        peer.send(rtp(0, 1, 0, b"\xff" * 160), port)  # plain RTP: refused
        peer.send(caller.protect_rtp(rtp(0, 2, 160, b"\xff" * 160)), port)
        await until(lambda: service.stats.received == 1)
        assert service.leg is not None and service.leg.counters.dropped_srtp == 1
        (leg,) = service.legs
        assert leg.send_report(leg.clock() + 10)
        data, _ = await asyncio.wait_for(rtcp.queue.get(), 3)
    finally:
        service.stop()
        assert rtcp.transport is not None
        rtcp.transport.close()
    assert all(data[12:] != p.payload for (data, _), p in zip(protected, packets, strict=True))
    audio = G711_PCMU.decode(b"".join(p.payload for p in packets))
    assert b"".join(p.payload for p in packets) == G711_PCMU.encode(
        load(sound_path("moh"), 8000)[:1600]
    )
    assert len(audio) == 1600
    assert isinstance(parse_compound(caller.unprotect_rtcp(data))[0], SenderReport)
    assert service.srtp is not None and service.crypto()[0] == ours


async def test_moh_latches_to_the_peers_real_address_and_drops_others(
    ports: RtpSocketPool, peer: Peer
) -> None:
    nat = await open_peer()  # where the caller's packets really come from
    intruder = await open_peer()
    service = MusicOnHold(ports, HOST)
    port = await service.start(stream_for(peer))
    try:
        await peer.packets(1)
        nat.send(rtp(0, 1, 0, b"\xff" * 160), port)
        await until(lambda: service.peer is not None)
        assert service.peer == (HOST, nat.port)
        await nat.packets(3)
        intruder.send(rtp(0, 9, 0, b"\xff" * 160), port)
        await until(lambda: service.stats.dropped == 1)
        assert service.peer == (HOST, nat.port)
        await nat.packets(2)
    finally:
        service.stop()
        for p in (nat, intruder):
            assert p.transport is not None
            p.transport.close()
    assert intruder.queue.empty()
    assert service.stats.received == 1


async def test_bad_packets_are_counted_and_dropped_without_stopping_the_service(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = MusicOnHold(ports, HOST)
    port = await service.start(stream_for(peer))
    bad = [
        b"\x80\x00\x01",  # truncated
        b"\x40" + rtp(0, 1, 0, b"\xff")[1:],  # version 1
        rtp(18, 2, 0, b"\x00" * 20),  # G.729: not negotiated
        b"\xa0" + rtp(0, 3, 0, b"")[1:],  # padding bit, no padding
        b"\x80",
        rtp(101, 5, 0, b"\x01"),  # truncated telephone-event
    ]
    try:
        for data in bad:
            peer.send(data, port)
        await until(lambda: service.stats.dropped >= 5)
        peer.send(rtp(101, 4, 0, bytes(TelephoneEvent(1, duration=160)), True), port)
        await until(lambda: service.stats.received >= 3)
        before = service.stats.sent
        await until(lambda: service.stats.sent >= before + 3)
    finally:
        service.stop()
    assert service.stats.dropped == 5  # four by the leg, the bad padding by the service
    assert service.stats.unusable == 1
    assert service.stats.errors == 0


@pytest.mark.parametrize("address", ["peer.example.com", "0.0.0.0"])
async def test_moh_sends_nothing_to_a_host_name_or_hold_address_until_the_peer_sends(
    ports: RtpSocketPool, peer: Peer, address: str
) -> None:
    stream = NegotiatedStream(
        0, PCMU, None, address, peer.port, address, peer.port + 1, False, Direction.SENDRECV
    )
    service = MusicOnHold(ports, HOST)
    port = await service.start(stream)
    try:
        await asyncio.sleep(0.06)
        assert peer.queue.empty() and service.stats.sent == 0
        peer.send(rtp(0, 1, 0, b"\xff" * 160), port)
        packets = await peer.packets(2)
    finally:
        service.stop()
    assert service.peer == (HOST, peer.port)
    assert all(p.ssrc == service.ssrc for p in packets)


async def test_update_to_a_new_address_unlatches_and_follows_it_with_a_new_codec(
    ports: RtpSocketPool, peer: Peer
) -> None:
    other = await open_peer()
    service = MusicOnHold(ports, HOST)
    port = await service.start(stream_for(peer))
    try:
        peer.send(rtp(0, 1, 0, b"\xff" * 160), port)
        await until(lambda: service.peer is not None)
        service.update(stream_for(other, Codec(9, "G722", 8000)))
        assert service.peer is None
        packets = await other.packets(5)
        with pytest.raises(UnsupportedStreamError):
            service.update(stream_for(other, Codec(18, "G729", 8000)))
    finally:
        service.stop()
        assert other.transport is not None
        other.transport.close()
    assert {p.payload_type for p in packets} == {9}
    assert {p.ssrc for p in packets} == {service.ssrc}
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(packets)
    )
    assert [len(p.payload) for p in packets] == [160] * 5  # 20 ms of 16 kHz G.722


async def test_an_unexpected_handler_error_is_counted_and_logged_once(
    ports: RtpSocketPool, peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(services.MediaService):
        def _on_packet(self, packet: RtpPacket, now: float) -> None:
            raise RuntimeError("bug")

    service = Broken(ports, HOST)
    port = await service.start(stream_for(peer))
    try:
        for sequence in range(3):
            peer.send(rtp(0, sequence, 0, b"\xff"), port)
        await until(lambda: service.stats.errors == 3)
    finally:
        service.stop()
    assert service.stats.dropped == 3
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["media service packet handler failed"]


async def test_moh_stops_on_hold_and_resumes_on_the_wall_clock(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = MusicOnHold(ports, HOST)
    stream = stream_for(peer)
    loop = asyncio.get_running_loop()
    started = loop.time()  # `before` is sent after this
    await service.start(stream)
    try:
        before = (await peer.packets(3))[-1]
        service.update(stream_for(peer, direction=Direction.RECVONLY))
        held_at = loop.time()  # `before` was sent before this
        await asyncio.sleep(0.1)
        peer.drain()
        await asyncio.sleep(0.06)
        assert peer.drain() == []
        resumed_at = loop.time()  # `after` is sent after this
        service.update(stream)
        after = (await peer.packets(1))[0]
        received_at = loop.time()  # `after` was sent before this
    finally:
        service.stop()
    assert after.marker
    assert after.ssrc == before.ssrc
    # Bounds from moments on either side of each send, not from when the test's task ran on: a
    # loaded machine delays the receipt of `after`, not its timestamp.
    advanced = ((after.timestamp - before.timestamp) & 0xFFFFFFFF) / 8000
    assert resumed_at - held_at - 0.06 <= advanced <= received_at - started + 0.1


async def test_moh_without_a_playable_sound_answers_and_sends_nothing(
    ports: RtpSocketPool, peer: Peer, tmp_path: Path
) -> None:
    service = MusicOnHold(ports, HOST, tmp_path / "missing.wav")
    await service.start(stream_for(peer))
    try:
        await asyncio.sleep(0.06)
    finally:
        service.stop()
    assert service.feed is None and peer.queue.empty()


async def test_moh_stop_ends_the_stream(ports: RtpSocketPool, peer: Peer) -> None:
    service = MusicOnHold(ports, HOST)
    await service.start(stream_for(peer))
    await peer.packets(2)
    service.stop()
    sent = service.stats.sent
    peer.drain()
    await asyncio.sleep(0.06)
    assert service.stats.sent == sent
    assert peer.drain() == []


class FakeLoop:
    """Just what `Pacer` uses of a loop: a clock we move and `call_at`."""

    def __init__(self) -> None:
        self.now = 100.0
        self.scheduled: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.scheduled.append((when, callback))
        return asyncio.TimerHandle(when, callback, (), asyncio.get_event_loop())

    def run_until(self, now: float) -> None:
        self.now = now
        while self.scheduled and self.scheduled[0][0] <= now:
            _, callback = self.scheduled.pop(0)
            callback()


async def test_pacer_schedules_on_absolute_time_catches_up_and_never_bursts() -> None:
    loop = FakeLoop()
    stats = MediaStats()
    ticks: list[tuple[float, int]] = []

    def tick(index: int) -> bool:
        ticks.append((loop.now, index))
        return True

    pacer = Pacer(loop, 0.02, tick, stats)  # type: ignore[arg-type]
    pacer.start()
    loop.run_until(100.0)
    loop.run_until(100.025)  # timer 5 ms late: one packet, next one still due at 100.04
    assert [i for _, i in ticks] == [0, 1]
    assert loop.scheduled[-1][0] == pytest.approx(100.04)
    loop.run_until(100.0401)
    loop.run_until(100.3)  # a 260 ms stall: at most MAX_BURST packets, the rest skipped
    indices = [i for _, i in ticks]
    assert indices[:3] == [0, 1, 2]
    late = indices[3:]
    assert len(late) == MAX_BURST
    assert late == [13, 14, 15]
    assert stats.skipped == 10
    assert loop.scheduled[-1][0] == pytest.approx(100.32)
    pacer.stop()
    assert not pacer.running


# -- recorder ---------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[Any, npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as reader:
        params = reader.getparams()
        frames = np.frombuffer(reader.readframes(params.nframes), dtype="<i2")
    return params, frames.reshape(-1, params.nchannels)


async def send_paced(
    peer: Peer, port: int, packets: list[bytes], every: int = 10, pause: float = 0.01
) -> None:
    for index, data in enumerate(packets):
        peer.send(data, port)
        if index % every == every - 1:
            await asyncio.sleep(pause)


async def test_recorder_writes_the_callers_tone_left_and_silence_right(
    ports: RtpSocketPool, peer: Peer, tmp_path: Path
) -> None:
    path = tmp_path / "call.wav"
    service = Recorder(ports, HOST, path)
    port = await service.start(stream_for(peer))
    sound = tone(440, 2.0, 8000)
    payloads = [G711_PCMU.encode(sound[i * 160 : (i + 1) * 160]) for i in range(100)]
    base = 0xFFFFFF00  # the timestamp wraps during the call
    order = list(range(100))
    order[0], order[1] = order[1], order[0]  # reordered, the first packet too
    order[20], order[21] = order[21], order[20]
    order.insert(30, 29)  # duplicated
    short = (40, 41, 42)  # 60 ms lost: concealed
    long = tuple(range(60, 70))  # 200 ms lost: silence
    order = [i for i in order if i not in short + long]
    await send_paced(
        peer,
        port,
        [rtp(0, i, (base + i * 160) & 0xFFFFFFFF, payloads[i], i == 0) for i in order],
    )
    await until(lambda: service.stats.received == len(order))
    service.stop()
    service.stop()
    params, frames = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert params.nframes == 100 * 160  # 2 s: the duration the caller sent
    assert service.duration == pytest.approx(2.0)
    left, right = frames[:, 0], frames[:, 1]
    assert not right.any()
    assert dominant_frequencies(left[: 40 * 160], 1) == pytest.approx([440], abs=2)
    concealed = left[40 * 160 : 43 * 160]
    assert rms(concealed[:80]) > 0.5 * rms(sound)  # the first 10 ms at full level, then a fade
    assert dominant_frequencies(concealed[:160], 1) == pytest.approx([440], abs=30)
    assert not left[60 * 160 : 70 * 160].any()
    decoded = G711_PCMU.decode(b"".join(payloads))
    kept = np.ones(100 * 160, dtype=bool)
    for lost in short + long:
        kept[lost * 160 : (lost + 1) * 160] = False
    assert np.array_equal(left[kept], decoded[kept])
    assert service.placer.duplicates + service.placer.late == 1
    assert service.stats.received == len(order)


async def test_recorder_with_no_packets_leaves_a_valid_empty_wav(
    ports: RtpSocketPool, peer: Peer, tmp_path: Path
) -> None:
    path = tmp_path / "empty.wav"
    service = Recorder(ports, HOST, path)
    await service.start(stream_for(peer, PCMA))
    service.stop()
    params, _ = read_wav(path)
    assert params.nframes == 0 and params.nchannels == 2
    assert path.stat().st_size == 44


async def test_a_g722_recording_keeps_the_tone_at_16_khz(
    ports: RtpSocketPool, peer: Peer, tmp_path: Path
) -> None:
    path = tmp_path / "wideband.wav"
    service = Recorder(ports, HOST, path)
    port = await service.start(stream_for(peer, Codec(9, "G722", 8000)))
    sound = tone(5000, 1.0, 16000)  # above what 8 kHz audio can carry
    encoder = codec_for("G722").encoder()
    payloads = [encoder.encode(sound[i * 320 : (i + 1) * 320]) for i in range(50)]
    order = list(range(50))
    order[10], order[11] = order[11], order[10]  # reordered: decoded in timestamp order
    await send_paced(peer, port, [rtp(9, i, 1000 + i * 160, payloads[i]) for i in order])
    await until(lambda: service.stats.received == 50)
    service.stop()
    params, frames = read_wav(path)
    assert (params.nchannels, params.framerate) == (2, 16000)
    assert params.nframes == 50 * 320
    left = frames[:, 0]
    assert dominant_frequencies(left[1600:], 1, 16000) == pytest.approx([5000], abs=3)
    assert rms(left[1600:]) == pytest.approx(rms(sound), rel=0.2)
    assert not frames[:, 1].any()


async def test_an_opus_recording_of_an_opus_caller_with_fec_for_a_lost_packet(
    ports: RtpSocketPool, peer: Peer, tmp_path: Path
) -> None:
    av = pytest.importorskip("av")
    pytest.importorskip("media.oggopus")
    path = tmp_path / "call.opus"
    service = Recorder(ports, HOST, path, format="opus")
    port = await service.start(stream_for(peer, OPUS, TELEPHONE_EVENT_48000))
    sound = tone(1000, 1.0, 48000)
    encoder = codec_for("opus").encoder()
    payloads = [encoder.encode(sound[i * 960 : (i + 1) * 960]) for i in range(50)]
    order = [i for i in range(50) if i != 25]
    await send_paced(peer, port, [rtp(111, i, i * 960, payloads[i]) for i in order])
    await until(lambda: service.stats.received == 49)
    service.stop()
    assert service.duration == pytest.approx(1.0)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name in ("opus", "libopus")
        chunks = [f.to_ndarray() for f in container.decode(stream)]
    audio = np.concatenate([c.reshape(-1, 2) if c.shape[0] == 1 else c.T for c in chunks])
    left = audio[:, 0].astype(np.float64)
    if left.dtype.kind == "f" and np.abs(left).max() <= 1.0:
        left = left * 32767
    rate = stream.codec_context.sample_rate
    middle = left[len(left) // 4 : 3 * len(left) // 4].astype(np.int16)
    assert dominant_frequencies(middle, 1, rate) == pytest.approx([1000], abs=5)


def test_wav_header_is_valid_while_the_file_is_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    writer = WavWriter(path, 8000, 2, update_interval=0.1)
    writer.write(np.zeros((2000, 2), dtype=np.int16))  # 0.25 s
    params, _ = read_wav(path)  # as if the process died here
    assert params.nframes == 2000
    writer.write(np.ones((100, 2), dtype=np.int16))
    writer.close()
    writer.close()
    params, frames = read_wav(path)
    assert params.nframes == 2100
    assert frames[-1].tolist() == [1, 1]
    with pytest.raises(ValueError):
        writer.write(np.zeros((1, 2), dtype=np.int16))


def test_placer_orders_packets_drops_duplicates_and_undoes_reordering() -> None:
    placer: PacketPlacer[int] = PacketPlacer(8000, window=0.04)
    out: list[tuple[int, int]] = []
    for i, now in ((1, 0.02), (0, 0.021), (2, 0.04), (2, 0.041), (5, 0.1), (6, 0.12), (7, 0.14)):
        out += placer.push(7, 1000 + i * 160, i, 160, now)
    out += placer.flush()
    assert out == [(-160, 0), (0, 1), (160, 2), (640, 5), (800, 6), (960, 7)]
    assert placer.duplicates == 1
    assert placer.push(7, 1000, 0, 160, 0.2) == []
    assert placer.late == 1


def test_placer_maps_the_g722_clock_to_16_khz_positions() -> None:
    placer: PacketPlacer[str] = PacketPlacer(16000, window=0.0, clock_rate=8000)
    assert placer.push(1, 500, "a", 320, 0.0) == [(0, "a")]
    assert placer.push(1, 660, "b", 320, 0.02) == [(320, "b")]


def test_placer_resyncs_on_a_timestamp_jump_or_new_ssrc_using_the_wall_clock() -> None:
    placer: PacketPlacer[str] = PacketPlacer(8000, window=0.0)
    placer.push(1, 0, "a", 160, 10.0)
    released = placer.push(1, 3_000_000_000, "b", 160, 10.5)  # a bogus jump of ~4 days
    assert placer.resyncs == 1
    assert released == [(4000, "b")]  # 0.5 s after the first packet's start
    assert placer.written == 4160
    placer.push(2, 77, "c", 160, 10.52)  # new SSRC, 20 ms later
    assert placer.resyncs == 2
    assert placer.written == round(0.52 * 8000) + 160


# -- DTMF echo --------------------------------------------------------------------------------


def send_digit(
    peer: Peer,
    port: int,
    digit: str,
    timestamp: int,
    sequence: int,
    payload_type: int = 101,
    clock_rate: int = 8000,
) -> int:
    for packet in DtmfSender(clock_rate).packets(digit, 0.1):
        peer.send(
            rtp(payload_type, sequence & 0xFFFF, timestamp, packet.payload, packet.marker), port
        )
        sequence += 1
    return sequence


async def test_dtmf_echo_detects_rfc_4733_digits_and_plays_them_back(
    ports: RtpSocketPool, peer: Peer
) -> None:
    heard: list[tuple[str, int]] = []
    service = DtmfEcho(ports, HOST, lambda digit, ms: heard.append((digit, ms)))
    port = await service.start(stream_for(peer))
    sequence = send_digit(peer, port, "1", 8000, 100)
    send_digit(peer, port, "#", 8000 + 2400, sequence)
    try:
        await until(lambda: len(service.digits) == 2)
        # two bursts of 10 audio packets (100 ms tone, 100 ms silence) and 7 events each
        packets = await peer.packets(34)
    finally:
        service.stop()
    assert service.digits == ["1", "#"]
    assert heard == [("1", 100), ("#", 100)]
    audio_bursts = [p for p in packets if p.payload_type == 0]
    assert audio_bursts[0].marker and not any(p.marker for p in audio_bursts[1:])
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(audio_bursts)
    )
    bursts = [(audio_bursts[:10], [p for p in packets if p.payload_type == 101][:7])]
    bursts.append((audio_bursts[10:20], [p for p in packets if p.payload_type == 101][7:14]))
    for (audio, events), digit, pair in zip(
        bursts, ("1", "#"), ([697, 1209], [941, 1477]), strict=True
    ):
        sound = G711_PCMU.decode(b"".join(p.payload for p in audio[:5]))
        assert dominant_frequencies(sound, 2) == pytest.approx(pair, abs=12)
        assert not G711_PCMU.decode(b"".join(p.payload for p in audio[5:])).any()
        parsed = [TelephoneEvent.parse(p.payload) for p in events]
        assert {e.event for e in parsed} == {1 if digit == "1" else 11}
        assert [p.marker for p in events] == [True] + [False] * 6
        assert [e.end for e in parsed] == [False] * 4 + [True] * 3
        assert {p.timestamp for p in events} == {audio[0].timestamp}
    sequences = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))


async def test_dtmf_echo_at_48_khz_telephone_event_with_an_opus_caller(
    ports: RtpSocketPool, peer: Peer
) -> None:
    heard: list[tuple[str, int]] = []
    service = DtmfEcho(ports, HOST, lambda digit, ms: heard.append((digit, ms)))
    port = await service.start(stream_for(peer, OPUS, TELEPHONE_EVENT_48000))
    send_digit(peer, port, "5", 48000, 7, payload_type=110, clock_rate=48000)
    try:
        await until(lambda: heard != [])
        packets = await peer.packets(17)
    finally:
        service.stop()
    assert heard == [("5", 100)]
    audio = [p for p in packets if p.payload_type == 111]
    events = [p for p in packets if p.payload_type == 110]
    assert (len(audio), len(events)) == (10, 7)
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF == 960 for a, b in itertools.pairwise(audio)
    )
    parsed = [TelephoneEvent.parse(p.payload) for p in events]
    assert {e.event for e in parsed} == {5}
    assert [e.duration for e in parsed] == [960, 1920, 2880, 3840, 4800, 4800, 4800]
    assert {p.timestamp for p in events} == {audio[0].timestamp}
    decoder = codec_for("opus").decoder()
    sound = np.concatenate([decoder.decode(p.payload) for p in audio])
    assert dominant_frequencies(sound[480:4800], 2, 48000) == pytest.approx([770, 1336], abs=15)
    assert rms(sound[7200:]) < 0.05 * rms(sound[480:4800])


async def test_dtmf_echo_plays_info_digits_in_band_only_without_telephone_event(
    ports: RtpSocketPool, peer: Peer
) -> None:
    heard: list[tuple[str, int]] = []
    service = DtmfEcho(ports, HOST, lambda digit, ms: heard.append((digit, ms)))
    await service.start(stream_for(peer, PCMA, telephone_event=None))
    with pytest.raises(DtmfError):
        service.add_digit("x")
    service.add_digit("5")
    try:
        packets = await peer.packets(10)
        await asyncio.sleep(0.05)
        extra = peer.drain()
    finally:
        service.stop()
    assert service.digits == ["5"]
    assert heard == []  # the router already logged the INFO digit
    assert {p.payload_type for p in packets} == {8}
    assert extra == []  # the burst ends: nothing is sent between digits
    sound = G711_PCMA.decode(b"".join(p.payload for p in packets[:5]))
    assert dominant_frequencies(sound, 2) == pytest.approx([770, 1336], abs=12)


async def test_dtmf_echo_plays_an_info_digit_as_g722_at_16_khz(
    ports: RtpSocketPool, peer: Peer
) -> None:
    service = DtmfEcho(ports, HOST)
    await service.start(stream_for(peer, Codec(9, "G722", 8000)))
    service.add_digit("D")
    try:
        packets = await peer.packets(10)
    finally:
        service.stop()
    assert {p.payload_type for p in packets} - {101} == {9}
    audio = [p for p in packets if p.payload_type == 9]
    decoder = codec_for("G722").decoder()
    sound = np.concatenate([decoder.decode(p.payload) for p in audio])
    assert dominant_frequencies(sound[160:1600], 2, 16000) == pytest.approx([941, 1633], abs=15)


async def test_dtmf_echo_reports_a_digit_whose_end_packets_were_lost(
    ports: RtpSocketPool, peer: Peer
) -> None:
    heard: list[tuple[str, int]] = []
    service = DtmfEcho(ports, HOST, lambda digit, ms: heard.append((digit, ms)))
    service.receiver.timeout = 0.1
    port = await service.start(stream_for(peer))
    try:
        for i, packet in enumerate(DtmfSender().packets("7", 0.1)[:3]):
            peer.send(rtp(101, 50 + i, 4000, packet.payload, packet.marker), port)
        await until(lambda: heard != [])
    finally:
        service.stop()
    assert heard == [("7", 60)]


async def test_a_failing_on_digit_callback_or_a_bad_event_does_not_break_the_service(
    ports: RtpSocketPool, peer: Peer
) -> None:
    def explode(digit: str, duration_ms: int) -> None:
        raise RuntimeError("boom")

    service = DtmfEcho(ports, HOST, explode)
    port = await service.start(stream_for(peer))
    try:
        peer.send(rtp(101, 0, 0, b"\x01"), port)  # truncated telephone-event
        send_digit(peer, port, "3", 0, 1)
        send_digit(peer, port, "4", 2000, 20)
        await until(lambda: service.digits == ["3", "4"])
        await peer.packets(5)
    finally:
        service.stop()
    assert service.stats.dropped == 1
    assert service.stats.errors == 0
