"""Conference rooms: who hears whom (FFT of what each participant is sent), roles, hold, codec
changes, leaving, limits and bad input.

Most tests drive the service with fake port pairs (`fakes.fake_pair`), a fake SIP service and a
fake clock, with the room's pacer stopped and `Room.tick` called by hand, so they run at full
speed and are deterministic; one test runs real UDP sockets and the room's own pacer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest

from media.codecs import CodecSpec, Decoder, Encoder, codec_for
from media.dtmf import DtmfSender
from media.leg import RtpLeg
from media.mixer import Role
from media.player import sound_path
from media.ports import PortAllocator, PortPair, RtpSocketPool
from media.rtp import RtpPacket, rtp_header
from omlmedia.conference import ROOM_RATE, ConferenceError, ConferenceService
from sip.ua import Call, CallState
from tests.media.fakes import CapturingTransport, fake_pair

Samples = npt.NDArray[np.int16]
HOST = "127.0.0.1"
TONES = (440.0, 690.0, 1230.0)

CODECS = {
    # name: (payload type, rtpmap, codec_for arguments)
    "PCMU": (0, "PCMU/8000", ("PCMU", 8000, 1)),
    "PCMA": (8, "PCMA/8000", ("PCMA", 8000, 1)),
    "G722": (9, "G722/8000", ("G722", 8000, 1)),
    "opus": (111, "opus/48000/2", ("opus", 48000, 2)),
}


def offer_sdp(port: int, codec: str = "PCMU", direction: str = "sendrecv") -> bytes:
    payload_type, rtpmap, _ = CODECS[codec]
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_type} 101\r\n"
        f"a=rtpmap:{payload_type} {rtpmap}\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        f"a=ptime:20\r\na={direction}\r\n"
    ).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePool:
    """Hands out fake port pairs whose sends are captured."""

    def __init__(self) -> None:
        self.next_port = 40000
        self.released: list[PortPair] = []

    async def acquire(self) -> PortPair:
        pair, _, _ = fake_pair(self.next_port)
        self.next_port += 2
        return pair

    def release(self, pair: PortPair) -> None:
        self.released.append(pair)


class FakeUA:
    """Records what the service answers; states move the way `sip.ua` moves them."""

    def __init__(self) -> None:
        self.answered: dict[str, bytes] = {}
        self.rejected: dict[str, int] = {}
        self.responses: list[tuple[str, int, bytes]] = []
        self.hung_up: list[str] = []

    def answer(self, call: Call, body: bytes, now: float) -> None:
        self.answered[call.call_id] = body
        call.state = CallState.ANSWERED

    def reject(self, call: Call, status: int, now: float, reason: str | None = None) -> None:
        self.rejected[call.call_id] = status
        call.state = CallState.ENDED

    def respond(
        self,
        call: Call,
        txn: object,
        status: int,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        self.responses.append((call.call_id, status, body))

    def hangup(self, call: Call, now: float) -> None:
        self.hung_up.append(call.call_id)
        call.state = CallState.ENDED


class FakeSip:
    def __init__(self) -> None:
        self.ua = FakeUA()

    def act(self, action: Callable[[float], object]) -> None:
        action(0.0)


def make_call(call_id: str, sdp: bytes) -> Call:
    invite = SimpleNamespace(body=sdp)
    return Call(call_id, "inbound", cast(Any, None), cast(Any, invite), CallState.OFFERED, "tag")


@dataclass
class Peer:
    """The far end of one participant: sends its tone, keeps what it is sent."""

    call: Call
    codec: str
    hz: float
    remote_port: int
    spec: CodecSpec
    encoder: Encoder
    decoder: Decoder
    leg: RtpLeg | None = None
    sent_frames: int = 0
    seq: int = 0
    heard: list[Samples] = field(default_factory=list)

    @property
    def transport(self) -> CapturingTransport:
        assert self.leg is not None
        return cast(CapturingTransport, self.leg.pair.rtp.transport)

    def send(self, packet: bytes | None = None) -> None:
        assert self.leg is not None
        if packet is None:
            rate = self.spec.sample_rate
            size = rate // 50
            t = (np.arange(size) + self.sent_frames * size) / rate
            samples = (6000 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
            payload = self.encoder.encode(samples)
            step = self.spec.timestamps_for(size)
            packet = rtp_header(
                CODECS[self.codec][0], False, self.seq & 0xFFFF, step * self.sent_frames, 0xABC
            )
            packet += payload
            self.sent_frames += 1
        self.seq += 1
        self.leg.pair.rtp.datagram_received(packet, (HOST, self.remote_port))

    def collect(self) -> None:
        """Decode what the room sent since the last call."""
        for data, _ in self.transport.sent:
            packet = RtpPacket.parse(data)
            if packet.payload_type == CODECS[self.codec][0]:
                self.heard.append(self.decoder.decode(packet.payload))
        self.transport.sent.clear()

    def audio(self, skip: int = 15) -> Samples:
        return (
            np.concatenate(self.heard[skip:]) if len(self.heard) > skip else np.zeros(0, np.int16)
        )


def levels(audio: Samples, rate: int, tones: tuple[float, ...] = TONES) -> list[float]:
    """The energy near each tone, relative to the strongest of them (0 when all are silent)."""
    if audio.size < rate // 10:
        return [0.0 for _ in tones]
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
    found = []
    for hz in tones:
        centre = round(hz * audio.size / rate)
        found.append(float(spectrum[max(0, centre - 3) : centre + 4].sum()))
    top = max(found)
    return [f / top if top else 0.0 for f in found]


def hears(peer: Peer, *heard: float) -> None:
    """`peer` hears the tones `heard` and none of the other test tones (its own included)."""
    audio = peer.audio()
    assert audio.size, "nothing was sent to the participant"
    found = dict(zip(TONES, levels(audio, peer.spec.sample_rate), strict=True))
    for hz, level in found.items():
        if hz in heard:
            assert level > 0.2, (peer.hz, found)
        else:
            assert level < 0.01, (peer.hz, found)


class Conference:
    """A service under test with fake pairs, a fake SIP service and a fake clock."""

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.pool = FakePool()
        self.sip = FakeSip()
        options.setdefault("join_sound", None)
        self.service = ConferenceService(
            cast(RtpSocketPool, self.pool), HOST, cast(Any, self.sip), clock=self.clock, **options
        )
        self.peers: list[Peer] = []
        self.digits: list[tuple[str, str, str]] = []
        self.service.on_digit = lambda room, call_id, digit: self.digits.append(
            (room, call_id, digit)
        )
        self._ids = 0

    async def join(
        self,
        codec: str = "PCMU",
        hz: float = 440.0,
        room: str = "sales",
        role: Role = Role.PARTICIPANT,
        target: str | None = None,
        direction: str = "sendrecv",
    ) -> Peer:
        self._ids += 1
        remote_port = 30000 + 2 * self._ids
        call = make_call(f"call-{self._ids}", offer_sdp(remote_port, codec, direction))
        assert self.service.offer(call, room, role, target) is None
        await until(lambda: call.state is not CallState.OFFERED)
        assert call.call_id in self.sip.ua.answered, self.sip.ua.rejected
        spec = codec_for(*CODECS[codec][2])
        peer = Peer(call, codec, hz, remote_port, spec, spec.encoder(20), spec.decoder())
        found = self.service.room(room)
        found.pacer.stop()  # the test ticks by hand
        peer.leg = cast(Any, found.parties[call.call_id]).leg
        self.peers.append(peer)
        return peer

    def run(self, ticks: int, room: str = "sales", senders: list[Peer] | None = None) -> None:
        """`ticks` frames: every peer (or `senders`) sends a packet, the room ticks."""
        found = self.service.room(room)
        for _ in range(ticks):
            self.clock.now += 0.02
            for peer in self.peers if senders is None else senders:
                if peer.call.state is not CallState.ENDED:
                    peer.send()
            found.tick(self.clock.now)
        for peer in self.peers:
            if peer.leg is not None:
                peer.collect()

    def reset(self) -> None:
        for peer in self.peers:
            peer.heard.clear()


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - polling the service's state
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), within)


async def test_three_participants_each_hear_the_two_others_and_not_themselves() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    c = await conf.join(hz=TONES[2])
    conf.run(100)
    hears(a, TONES[1], TONES[2])
    hears(b, TONES[0], TONES[2])
    hears(c, TONES[0], TONES[1])
    assert conf.service.rooms() == ["sales"]
    assert [p.id for p in conf.service.participants("sales")] == ["call-1", "call-2", "call-3"]
    assert {p.codec for p in conf.service.participants("sales")} == {"PCMU"}
    assert len(conf.service.legs) == 3
    stats = conf.service.room("sales").stats
    assert stats.read_errors == stats.write_errors == 0


async def test_the_join_beep_is_played_to_the_room() -> None:
    conf = Conference(join_sound=sound_path("beep"))
    a = await conf.join(hz=TONES[0])
    conf.run(30, senders=[])
    first = a.audio(skip=0)
    assert levels(first[: 8000 // 4], 8000, (1000.0, TONES[0]))[0] == 1.0
    conf.reset()
    conf.run(30, senders=[])
    assert not a.audio(skip=0).any()  # the beep is over; alone, a participant hears nothing
    await conf.join(hz=TONES[1], role=Role.LISTEN)
    conf.reset()
    conf.run(20, senders=[])
    assert not a.audio(skip=0).any()  # a listener joins silently


async def test_a_listener_hears_everyone_and_is_heard_by_nobody() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    c = await conf.join(hz=TONES[2], role=Role.LISTEN)
    conf.run(100)
    hears(a, TONES[1])
    hears(b, TONES[0])
    hears(c, TONES[0], TONES[1])
    assert conf.service.participants("sales")[2].role is Role.LISTEN


async def test_a_whisper_is_heard_only_by_its_target() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    c = await conf.join(hz=TONES[2], role=Role.WHISPER, target=a.call.call_id)
    conf.run(100)
    hears(a, TONES[1], TONES[2])
    hears(b, TONES[0])
    hears(c, TONES[0], TONES[1])
    # Barging in: now everyone hears the supervisor.
    conf.service.set_role("sales", c.call.call_id, Role.BARGE)
    conf.reset()
    conf.run(100)
    hears(b, TONES[0], TONES[2])


async def test_a_whisper_to_nobody_in_the_room_is_refused() -> None:
    conf = Conference()
    await conf.join(hz=TONES[0])
    call = make_call("whisperer", offer_sdp(31000))
    assert conf.service.offer(call, "sales", Role.WHISPER, "nobody") == 404
    with pytest.raises(ConferenceError):
        conf.service.set_role("sales", "call-1", Role.WHISPER, "nobody")


async def test_a_muted_participant_still_hears_and_is_heard_by_nobody() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    c = await conf.join(hz=TONES[2])
    conf.service.mute("sales", c.call.call_id, True)
    conf.run(100)
    hears(a, TONES[1])
    hears(b, TONES[0])
    hears(c, TONES[0], TONES[1])
    assert conf.service.participants("sales")[2].muted
    conf.service.mute("sales", c.call.call_id, False)
    conf.reset()
    conf.run(100)
    hears(a, TONES[1], TONES[2])


async def test_a_participant_leaving_mid_call_leaves_the_mix_and_the_last_closes_the_room() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    c = await conf.join(hz=TONES[2])
    conf.run(50)
    room = conf.service.room("sales")
    c_leg = c.leg
    conf.service.on_ended(c.call, "bye")
    c.call.state = CallState.ENDED
    assert not conf.service.owns(c.call)
    assert c_leg is not None and c_leg.pair in conf.pool.released
    c.send()  # a packet after the BYE: dropped by the released pair
    conf.reset()
    conf.run(100)
    hears(a, TONES[1])
    hears(b, TONES[0])
    conf.service.on_ended(a.call, "bye")
    conf.service.on_ended(b.call, "bye")
    conf.service.on_ended(b.call, "bye")  # twice: nothing happens
    assert conf.service.rooms() == []
    assert room.closed and not room.pacer.running
    assert conf.service.stats.left == 3
    with pytest.raises(ConferenceError):
        conf.service.room("sales")


async def test_a_party_removed_by_a_callback_during_a_tick_does_not_break_it() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])

    def source() -> Samples | None:
        conf.service.on_ended(b.call, "bye")  # b hangs up while the room reads
        return None

    conf.service.add_endpoint("sales", "agent", source, lambda frame: None)
    conf.run(5)
    assert [p.id for p in conf.service.participants("sales")] == ["call-1", "agent"]
    assert conf.service.room("sales").stats.errors == 0
    assert a.heard


async def test_an_opus_participant_is_mixed_with_g711_ones() -> None:
    conf = Conference()
    a = await conf.join("opus", hz=TONES[0])
    b = await conf.join("PCMU", hz=TONES[1])
    c = await conf.join("PCMA", hz=TONES[2])
    conf.run(100)
    hears(a, TONES[1], TONES[2])
    hears(b, TONES[0], TONES[2])
    hears(c, TONES[0], TONES[1])
    codecs = [p.codec for p in conf.service.participants("sales")]
    assert codecs == ["opus", "PCMU", "PCMA"]


async def test_a_g722_participant_is_mixed_with_a_g711_one() -> None:
    conf = Conference()
    a = await conf.join("G722", hz=TONES[0])
    b = await conf.join("PCMU", hz=TONES[1])
    conf.run(100)
    hears(a, TONES[1])
    hears(b, TONES[0])


async def test_failing_endpoint_callbacks_cost_a_frame_not_the_room() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    calls = 0

    def source() -> Samples | None:
        nonlocal calls
        calls += 1
        if calls % 10 == 0:
            raise RuntimeError("browser channel went away")
        if calls % 10 == 5:
            return np.zeros(17, np.int16)  # a frame of the wrong length
        if calls % 10 == 6:
            return cast(Samples, np.zeros(320, np.float64))  # not int16
        t = (np.arange(320) + 320 * calls) / ROOM_RATE
        return (6000 * np.sin(2 * np.pi * TONES[2] * t)).astype(np.int16)

    def sink(frame: Samples) -> None:
        raise RuntimeError("sink is broken")

    conf.service.add_endpoint("sales", "agent", source, sink)
    conf.run(100)
    stats = conf.service.room("sales").stats
    assert stats.read_errors == 30
    assert stats.write_errors == 100
    assert stats.errors == 0
    hears(a, TONES[1], TONES[2])
    hears(b, TONES[0], TONES[2])


async def test_an_endpoint_at_48khz_hears_the_room_and_is_heard() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    heard: list[Samples] = []
    position = 0

    def source() -> Samples:
        nonlocal position
        tt = (np.arange(960) + position) / 48000
        position += 960
        return (6000 * np.sin(2 * np.pi * TONES[1] * tt)).astype(np.int16)

    conf.service.add_endpoint("sales", "browser", source, heard.append, rate=48000)
    conf.run(100)
    hears(a, TONES[1])
    assert heard[0].shape == (960,)
    found = levels(np.concatenate(heard[15:]), 48000)
    assert found[0] > 0.2 and found[1] < 0.01, found
    with pytest.raises(ConferenceError):
        conf.service.add_endpoint("sales", "browser", source, heard.append)
    with pytest.raises(ConferenceError):
        conf.service.add_endpoint("sales", "odd", source, heard.append, rate=44100)
    conf.service.remove_endpoint("sales", "browser")
    assert [p.id for p in conf.service.participants("sales")] == ["call-1"]


async def test_endpoints_alone_open_and_close_a_room() -> None:
    conf = Conference()
    conf.service.add_endpoint("huddle", "one", lambda: None, lambda frame: None)
    conf.service.add_endpoint("huddle", "two", lambda: None, lambda frame: None, Role.LISTEN)
    room = conf.service.room("huddle")
    assert room.pacer.running
    conf.service.kick("huddle", "one")
    conf.service.remove_endpoint("huddle", "two")
    assert conf.service.rooms() == [] and not room.pacer.running


async def test_limits_and_bad_offers_are_refused() -> None:
    conf = Conference(max_participants=2, max_rooms=1)
    await conf.join(hz=TONES[0])
    conf.service.add_endpoint("sales", "agent", lambda: None, lambda frame: None)
    service = conf.service
    assert service.offer(make_call("full", offer_sdp(31000)), "sales") == 486
    with pytest.raises(ConferenceError):
        service.add_endpoint("sales", "another", lambda: None, lambda frame: None)
    assert service.offer(make_call("rooms", offer_sdp(31002)), "support") == 503
    with pytest.raises(ConferenceError):
        service.add_endpoint("support", "agent", lambda: None, lambda frame: None)
    assert service.offer(make_call("name", offer_sdp(31004)), "bad room") == 404
    assert service.offer(make_call("late", b""), "sales") == 488
    assert service.stats.refused == 4
    assert service.rooms() == ["sales"]


async def test_an_offer_without_a_usable_codec_is_refused_with_488() -> None:
    conf = Conference()
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 30000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
    )
    call = make_call("g729", sdp)
    assert conf.service.offer(call, "sales") is None
    await until(lambda: call.state is CallState.ENDED)
    assert conf.sip.ua.rejected == {"g729": 488}
    assert conf.service.rooms() == [] and not conf.service.owns(call)
    assert len(conf.pool.released) == 1


async def test_a_caller_who_hangs_up_while_being_answered_is_not_joined() -> None:
    conf = Conference()
    call = make_call("gone", offer_sdp(30000))
    assert conf.service.offer(call, "sales") is None
    assert conf.service.owns(call)
    conf.service.on_ended(call, "cancel")
    call.state = CallState.ENDED
    await asyncio.sleep(0.05)
    assert conf.service.rooms() == [] and not conf.sip.ua.answered


async def test_garbage_rtp_and_undecodable_payloads_never_crash_the_room() -> None:
    conf = Conference()
    a = await conf.join("opus", hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    rng = random.Random(7)
    room = conf.service.room("sales")
    for i in range(200):
        conf.clock.now += 0.02
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        a.send(garbage)
        a.send(rtp_header(111, False, 5000 + i, 960 * i, 0xABC) + b"\xff\xfe")  # bad Opus
        b.send()
        room.tick(conf.clock.now)
    assert room.stats.errors == room.stats.read_errors == room.stats.write_errors == 0
    assert a.leg is not None and a.leg.counters.dropped > 0
    b.collect()
    assert b.heard  # the room kept sending


async def reinvite(conf: Conference, peer: Peer, sdp: bytes) -> tuple[int, bytes]:
    request = SimpleNamespace(body=sdp, method="INVITE")
    conf.service.on_session_modified(peer.call, cast(Any, object()), cast(Any, request))
    call_id, status, body = conf.sip.ua.responses[-1]
    assert call_id == peer.call.call_id
    return status, body


async def test_a_held_participant_is_out_of_the_mix_and_hears_nothing() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    c = await conf.join(hz=TONES[2])
    status, body = await reinvite(conf, c, offer_sdp(c.remote_port, "PCMU", "sendonly"))
    assert status == 200 and b"a=recvonly" in body
    assert conf.service.participants("sales")[2].held
    conf.run(100)
    hears(a, TONES[1])
    hears(b, TONES[0])
    assert not c.heard  # nothing was sent to the held participant
    status, _ = await reinvite(conf, c, offer_sdp(c.remote_port, "PCMU"))
    assert status == 200
    conf.reset()
    conf.run(100)
    hears(a, TONES[1], TONES[2])
    hears(c, TONES[0], TONES[1])


async def test_a_reinvite_may_change_the_codec() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1])
    conf.run(20)
    status, body = await reinvite(conf, b, offer_sdp(b.remote_port, "PCMA"))
    assert status == 200 and b"PCMA/8000" in body
    spec = codec_for("PCMA")
    b.codec, b.spec, b.encoder, b.decoder = "PCMA", spec, spec.encoder(20), spec.decoder()
    b.transport.sent.clear()
    a.heard.clear()
    b.heard.clear()
    conf.run(100)
    hears(a, TONES[1])
    hears(b, TONES[0])
    assert conf.service.participants("sales")[1].codec == "PCMA"
    bad = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    status, _ = await reinvite(conf, b, bad + b"m=audio 30000 RTP/AVP 18\r\n")
    assert status == 488
    status, body = await reinvite(conf, b, b"")
    assert status == 200 and b"PCMA/8000" in body


async def test_digits_are_reported_from_rfc4733_and_sip_info() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    room = conf.service.room("sales")
    for i, packet in enumerate(DtmfSender(8000).packets("5", 0.1)):
        conf.clock.now += 0.02
        header = rtp_header(101, packet.marker, 100 + i, 8000, 0xABC)
        a.send(header + packet.payload)
        room.tick(conf.clock.now)
    conf.service.on_dtmf(a.call, "#")
    assert conf.digits == [("sales", "call-1", "5"), ("sales", "call-1", "#")]


async def test_kick_hangs_up_and_hangup_all_ends_everything() -> None:
    conf = Conference()
    a = await conf.join(hz=TONES[0])
    b = await conf.join(hz=TONES[1], room="support")
    await conf.join(hz=TONES[2], room="support")
    conf.service.add_endpoint("support", "agent", lambda: None, lambda frame: None)
    conf.service.kick("sales", a.call.call_id)
    assert conf.sip.ua.hung_up == ["call-1"] and conf.service.rooms() == ["support"]
    with pytest.raises(ConferenceError):
        conf.service.kick("support", "nobody")
    conf.service.hangup_all()
    assert conf.sip.ua.hung_up == ["call-1", "call-2", "call-3"]
    assert conf.service.rooms() == [] and conf.service.legs == []
    assert b.leg is not None and b.leg.pair in conf.pool.released
    assert conf.service.stats.kicked == 1


# -- real sockets, the room's own pacer --------------------------------------------------------


class UdpPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


@pytest.fixture
async def pool() -> AsyncIterator[RtpSocketPool]:
    low = random.randrange(41000, 59000, 2)
    pool = RtpSocketPool(PortAllocator(low, low + 200), HOST)
    yield pool
    pool.close()


async def test_three_callers_over_udp_each_hear_the_two_others(pool: RtpSocketPool) -> None:
    loop = asyncio.get_running_loop()
    sip = FakeSip()
    service = ConferenceService(pool, HOST, cast(Any, sip))
    peers: list[tuple[UdpPeer, Call, int]] = []
    for n, _hz in enumerate(TONES):
        _, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=(HOST, 0))
        call = make_call(f"udp-{n}", offer_sdp(peer.port))
        assert service.offer(call, "udp") is None
        await until(lambda call=call: call.state is CallState.ANSWERED)  # type: ignore[misc]
        answer = sip.ua.answered[call.call_id].decode()
        port = int(answer.split("m=audio ")[1].split()[0])
        peers.append((peer, call, port))
    encoder = codec_for("PCMU").encoder()
    start = loop.time()
    for frame in range(60):
        for (peer, _, port), hz in zip(peers, TONES, strict=True):
            t = (np.arange(160) + 160 * frame) / 8000
            payload = encoder.encode((6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16))
            assert peer.transport is not None
            peer.transport.sendto(
                rtp_header(0, frame == 0, frame, 160 * frame, 0x55) + payload, (HOST, port)
            )
        await asyncio.sleep(max(0.0, start + 0.02 * (frame + 1) - loop.time()))
    # The room's clock skips the ticks a pause of a loaded machine made it miss (media.pacer):
    # wait for its count rather than for a time.
    stats = service.room("udp").stats
    await until(lambda: stats.ticks >= 50)
    service.hangup_all()
    decoder = codec_for("PCMU").decoder()
    for (peer, _, _), hz in zip(peers, TONES, strict=True):
        assert peer.transport is not None
        peer.transport.close()
        audio = np.concatenate(
            [decoder.decode(RtpPacket.parse(d).payload) for d in peer.received[15:]]
        )
        found = dict(zip(TONES, levels(audio, 8000), strict=True))
        for other, level in found.items():
            assert (level > 0.2) if other != hz else (level < 0.01), (hz, found)
    assert stats.ticks >= 50 and stats.read_errors == stats.write_errors == stats.errors == 0
    assert service.rooms() == []
