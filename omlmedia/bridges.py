"""The values of a B2BUA bridge and the codec choices made for its legs.

Theory of operation. A `Bridge` is two calls whose media cross through a relay (`BridgeMedia`:
two `RtpLeg`s on port pairs of the pool, joined by a `MediaBridge`, passthrough when both legs
share a codec, transcoding otherwise). Side A is first the caller, side B the trunk's callee; a
transfer (`Transfer`, RFC 3515) or a Replaces INVITE (RFC 3891) puts a new call on one side while
the other side's media never moves. The functions below choose codecs: what to offer a trunk
(`offer_codecs`), how to answer a new party on a leg preferring the codec the other leg already
uses (`answer_preferring`), and how to give a leg new formats and join again (`rejoin`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from media.bridge import MediaBridge, TranscoderFactory, codec_transcoder
from media.feed import LegFeed
from media.kernelpath import ForwardedPair, Leg
from media.kernelpath_nft import KernelPath, KernelPathError
from media.leg import RtpLeg, leg_format
from media.ports import RtpSocketPool
from media.srtp import SrtpSession
from omlmedia.config import Trunk
from omlmedia.logs import event
from omlmedia.offer_answer import answer_offer
from omlmedia.upkeep import MediaWatch
from sip.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    TELEPHONE_EVENT_48000,
    Answer,
    Codec,
    Direction,
    MediaCapabilities,
    NegotiatedStream,
    OfferAnswerError,
    SessionDescription,
)
from sip.transaction import ServerTransaction
from sip.ua import Call

__all__ = [
    "CODEC_BY_NAME",
    "TELEPHONE_EVENTS",
    "Bridge",
    "BridgeMedia",
    "Transfer",
    "answer_preferring",
    "caller_codecs",
    "leg_codecs",
    "offer_codecs",
    "rejoin",
    "stream_codecs",
    "transcoder_factory",
]

logger = logging.getLogger(__name__)

CODEC_BY_NAME: dict[str, Codec] = {
    "pcmu": PCMU,
    "pcma": PCMA,
    "g722": G722,
    "opus": OPUS,
}
"""The SDP description we offer for each codec name of the configuration."""

TELEPHONE_EVENTS = (TELEPHONE_EVENT, TELEPHONE_EVENT_48000)


def transcoder_factory() -> TranscoderFactory | None:
    """The media engine's transcoders, when the codec libraries load (libopus is a system
    library: without it the server still bridges calls that share a codec)."""
    try:
        import media.codecs
        import media.transcode  # noqa: F401
    except (ImportError, OSError) as exc:  # pragma: no cover - the codecs are dependencies
        logger.warning("transcoding is unavailable: %s", exc)
        return None
    return codec_transcoder


def stream_codecs(stream: NegotiatedStream) -> tuple[Codec, ...]:
    """The codec and telephone-event a stream settled on."""
    event = stream.telephone_event
    return (stream.codec,) + ((event,) if event is not None else ())


@dataclass(eq=False)
class Transfer:
    """A transfer in progress on one side of a bridge (RFC 3515 REFER, RFC 5589)."""

    transferor: Call
    transaction: ServerTransaction
    offer: SessionDescription
    target: Call | None = None


_kernel_keys = itertools.count(1)


class BridgeMedia:
    """The media of a bridge: two legs on port pairs of the pool, joined by a `MediaBridge`.

    With a `kernel` path, a call whose legs need no rewriting (same codec and payload types,
    no SRTP) is relayed transparently and the kernel takes it over (`media.kernelpath`): our
    addresses are `host` and the legs' ports, the far ends' those they send from (latched) or,
    before they sent anything, those their SDP gave. A B2BUA call's rules go in when the
    callee answers (`kernel_at_answer`), so a call whose ends send from their SDP's addresses
    never has a packet through Python; a packet that still reaches a leg (a far end sending
    from another port, which the rules do not match) latches it and the rules are replaced in
    one transaction, once per change of addresses. Any renegotiation, hold or hang-up hands
    the call back to the legs first (counted by reason); a renegotiation that keeps it
    eligible lets the kernel take it again at its next packet."""

    def __init__(
        self,
        pool: RtpSocketPool,
        transcoders: TranscoderFactory | None,
        kernel: KernelPath | None = None,
        host: str | None = None,
    ) -> None:
        self._pool = pool
        self.transcoders = transcoders
        self.kernel = kernel if kernel is not None and kernel.active else None
        self.host = host
        self.kernel_key = str(next(_kernel_keys))
        self.kernel_packets = 0
        """Packets the kernel moved for this call under rules since removed or replaced."""
        self._kernel_tried: tuple[tuple[str, int] | None, tuple[str, int] | None] | None = None
        """The far ends' addresses the rules were last tried with: not again for each packet."""
        self.a: RtpLeg | None = None
        self.b: RtpLeg | None = None
        self.bridge: MediaBridge | None = None
        self.holders: set[int] = set()
        """The legs whose party holds the call (by id)."""
        self.music: dict[int, LegFeed] = {}
        """Music on hold playing into a leg (by id) while the other party holds."""

    async def start(self) -> tuple[int, int]:
        """Take both legs' port pairs; returns (port of leg A, port of leg B)."""
        self.a = RtpLeg(await self._pool.acquire())
        try:
            self.b = RtpLeg(await self._pool.acquire())
        except OSError:
            self.stop()
            raise
        return self.a.port, self.b.port

    def join(self, reason: str = "reinvite") -> None:
        """Join the legs once both have a format (again after one changed); ValueError when
        their codecs differ and cannot be transcoded. A call the kernel relays comes back to
        the legs first (`reason` counted)."""
        assert self.a is not None and self.b is not None
        if self.bridge is None:
            self.bridge = MediaBridge(self.a, self.b, self.transcoders)
            if self.kernel is not None:
                self.bridge.on_latched = self._to_kernel
        self.leave_kernel(reason)
        self.bridge.start(transparent=self._kernel_eligible())

    @property
    def on_kernel(self) -> bool:
        """True while the kernel relays this call's RTP."""
        return self.kernel is not None and self.kernel_key in self.kernel.pairs

    def _kernel_eligible(self) -> bool:
        a, b = self.a, self.b
        if self.kernel is None or a is None or b is None or self.host is None:
            return False
        if a.format is None or b.format is None or a.srtp is not None or b.srtp is not None:
            return False
        return (a.format.key, a.format.send_type, a.format.event_send_type) == (
            b.format.key,
            b.format.send_type,
            b.format.event_send_type,
        )

    def kernel_at_answer(self) -> None:
        """The callee answered and the legs are joined: when the bridge is transparent, install
        the call's rules at once, towards the far ends' SDP addresses (or where a leg already
        latched), before the first packet (the caller has not even had our answer)."""
        if self.bridge is not None and self.bridge.transparent and self.kernel is not None:
            self._to_kernel()

    def _to_kernel(self) -> None:
        """Install the call's rules towards the far ends as known now, or replace them when a
        leg latched elsewhere (called for each packet the transparent relay moves: a packet of
        an installed call reaching a leg means the rules did not match its source)."""
        kernel, a, b, host = self.kernel, self.a, self.b, self.host
        if kernel is None or a is None or b is None or host is None or self.holders:
            return
        peers = (a.peer, b.peer)
        if peers == self._kernel_tried:
            return
        if peers[0] is None or peers[1] is None or a.srtp is not None or b.srtp is not None:
            return
        self._kernel_tried = peers
        try:
            pair = ForwardedPair(
                self.kernel_key, Leg((host, a.port), peers[0]), Leg((host, b.port), peers[1])
            )
        except ValueError as exc:
            logger.debug("no kernel path on port %d: %s", a.port, exc)
            return
        if not kernel.reachable(pair):
            return
        try:
            a_to_b, b_to_a = kernel.install(pair)
        except KernelPathError as exc:
            logger.warning("kernel path refused on port %d: %s", a.port, exc)
            return
        self.kernel_packets += a_to_b + b_to_a

    def leave_kernel(self, reason: str) -> None:
        """Hand the call back to the legs if the kernel relays it (`reason` counted)."""
        self._kernel_tried = None
        kernel = self.kernel
        if kernel is None or self.kernel_key not in kernel.pairs:
            return
        try:
            a_to_b, b_to_a = kernel.remove(self.kernel_key, reason)
        except KernelPathError as exc:
            logger.warning("kernel path removal failed on port %d: %s", self._port, exc)
            a_to_b = b_to_a = 0
        self.kernel_packets += a_to_b + b_to_a
        if self.bridge is not None:
            self.bridge.kernel_removed(a_to_b, b_to_a)

    @property
    def _port(self) -> int:
        return self.a.port if self.a is not None else 0

    @property
    def legs(self) -> tuple[RtpLeg, ...]:
        """The legs still held."""
        return tuple(leg for leg in (self.a, self.b) if leg is not None)

    @property
    def packets(self) -> int:
        """RTP packets received on both legs or moved by the kernel for them."""
        total = sum(leg.counters.received for leg in self.legs) + self.kernel_packets
        if self.kernel is not None:
            moved = self.kernel.pair_counters(self.kernel_key, fresh=False)
            if moved is not None:
                total += moved[0] + moved[1]
        return total

    def set_hold(self, leg: RtpLeg, on_hold: bool, music: Path | None) -> None:
        """`leg`'s party holds (or resumes): the legs stop exchanging media and the party still
        listening hears `music`, like a PBX's hold (RFC 3264 §8.4 only says who sends)."""
        if on_hold:
            self.holders.add(id(leg))
            self.leave_kernel("hold")
        else:
            self.holders.discard(id(leg))
        if self.bridge is not None:
            self.bridge.hold(leg, bool(self.holders))
        for other in self.legs:
            playing = self.music.get(id(other))
            wanted = bool(self.holders) and id(other) not in self.holders and music is not None
            if wanted and playing is None and music is not None:
                if self.bridge is not None:
                    # Our music shares the stream the far end sees: the kernel and the
                    # transparent relay could not continue it after the hold.
                    self.bridge.leave_transparent()
                try:
                    feed = LegFeed(other, music, loop=True)
                    feed.start()
                except (ValueError, OSError) as exc:
                    logger.warning("no music on hold on port %d: %s", other.port, exc)
                    continue
                self.music[id(other)] = feed
            elif not wanted and playing is not None:
                playing.stop()
                del self.music[id(other)]

    def stop(self) -> None:
        """Unjoin the legs and give both port pairs back to the pool; safe to call twice."""
        for feed in self.music.values():
            feed.stop()
        self.music.clear()
        self.leave_kernel("hangup")
        if self.bridge is not None:
            self.bridge.stop()
        for leg in self.legs:
            leg.close()
            self._pool.release(leg.pair)
        self.a = self.b = None


@dataclass(eq=False)
class Bridge:
    """Two calls whose media cross through a relay: side A (`inbound`, first the caller) on relay
    leg A, side B (`outbound`, first the trunk's callee) on relay leg B. A transfer or a Replaces
    INVITE puts a new call on one side; the other side's media never moves."""

    inbound: Call
    trunk: Trunk
    number: str
    offer: SessionDescription
    session_id: int
    outbound: Call | None = None
    relay: BridgeMedia | None = None
    capabilities: MediaCapabilities | None = None
    outbound_offer: SessionDescription | None = None
    inbound_answer: bytes | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    chosen: tuple[Codec, ...] = ()
    """The codecs of the caller's leg (codec and telephone-event), once answered."""
    outbound_codecs: tuple[Codec, ...] = ()
    """The codecs of the callee's leg, once answered."""
    local_sdp: dict[int, bytes] = field(default_factory=dict)
    transfer: Transfer | None = None
    watch: MediaWatch = field(default_factory=MediaWatch)
    versions: dict[int, int] = field(default_factory=dict)
    """The o= session version of our last description to each call (RFC 3264 §8)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers of the INVITE to the callee (a cross-node offer's signed header)."""
    on_final: Callable[[int], None] | None = field(default=None, repr=False)
    """Told the callee's final status once (487 when the caller left first): the outcome of a
    cross-node offer (`omlmedia.crossnode`)."""

    def settle(self, status: int) -> None:
        """Tell `on_final` the callee's final status (once)."""
        told, self.on_final = self.on_final, None
        if told is not None:
            told(status)

    def other(self, call: Call) -> Call | None:
        """The call on the other side."""
        return self.outbound if call is self.inbound else self.inbound

    def leg(self, call: Call) -> RtpLeg | None:
        """The relay leg facing `call`."""
        if self.relay is None:
            return None
        return self.relay.a if call is self.inbound else self.relay.b

    def codecs(self, call: Call) -> tuple[Codec, ...]:
        """The codecs the leg facing `call` settled on."""
        return self.chosen if call is self.inbound else self.outbound_codecs

    def set_codecs(self, call: Call, codecs: tuple[Codec, ...]) -> None:
        """Record the codecs the leg facing `call` now uses."""
        if call is self.inbound:
            self.chosen = codecs
        else:
            self.outbound_codecs = codecs

    def replace(self, old: Call, new: Call) -> None:
        """Put `new` on `old`'s side."""
        if old is self.inbound:
            self.inbound = new
        else:
            self.outbound = new
        self.local_sdp[id(new)] = self.local_sdp.pop(id(old), b"")


def offer_codecs(
    trunk: Trunk, offered: tuple[Codec, ...], transcoders: TranscoderFactory | None
) -> tuple[Codec, ...]:
    """What we offer a trunk for a caller who offered `offered`: the trunk's codecs, those the
    caller has first (passthrough costs nothing), then those we would transcode to; with
    telephone-event when the trunk allows it. Empty when nothing can join the two."""
    allowed = [
        CODEC_BY_NAME[name.lower()] for name in trunk.codecs if name.lower() in CODEC_BY_NAME
    ]
    shared = [c for c in allowed if any(c.matches(o) for o in offered)]
    transcodable = transcoders is not None and any(
        any(c.matches(o) for o in offered) for c in CODEC_BY_NAME.values()
    )
    rest = [c for c in allowed if c not in shared] if transcodable else []
    audio = shared + rest
    if not audio:
        return ()
    events: tuple[Codec, ...] = ()
    if any(name.lower() == "telephone-event" for name in trunk.codecs):
        events = TELEPHONE_EVENTS
    return tuple(audio) + events


def caller_codecs(first: Codec, transcoders: TranscoderFactory | None) -> tuple[Codec, ...]:
    """What we accept from a caller whose other leg settled on `first`: that codec (for
    passthrough), then every codec we can transcode from, and telephone-event."""
    rest = tuple(c for c in CODEC_BY_NAME.values() if not c.matches(first))
    if transcoders is None:
        rest = ()
    return (first, *rest, *TELEPHONE_EVENTS)


def answer_preferring(
    offer: SessionDescription,
    codec: Codec,
    host: str,
    port: int,
    session_id: int,
    version: int,
    transcoders: TranscoderFactory | None,
    leg: RtpLeg | None = None,
) -> tuple[Answer, MediaCapabilities]:
    """Answer `offer` with `codec` when it is offered (passthrough to the other leg), else with
    the offer's first codec we can transcode; OfferAnswerError when there is none. An SRTP
    offer is answered with SDES keys: the leg's current key when its suite is offered."""
    current = leg.srtp if leg is not None else None
    capabilities = MediaCapabilities((codec, *TELEPHONE_EVENTS), rtcp_mux=False)
    for attempt in range(2):
        try:
            answer = answer_offer(
                offer,
                capabilities,
                host,
                port,
                session_id=session_id,
                version=version,
                current=current,
            )
            return answer, capabilities
        except OfferAnswerError:
            if attempt or transcoders is None:
                raise
            capabilities = MediaCapabilities(caller_codecs(codec, transcoders), rtcp_mux=False)
    raise AssertionError("unreachable")


def leg_codecs(
    bridge: Bridge, call: Call, trunk: Trunk | None, transcoders: TranscoderFactory | None
) -> tuple[Codec, ...]:
    """What a new party on `call`'s leg may use: the leg's codec first (passthrough goes on),
    then what the trunk allows and we can transcode, then telephone-event."""
    current = tuple(c for c in bridge.codecs(call) if c.encoding_name != "telephone-event")
    others: tuple[Codec, ...] = ()
    if transcoders is not None:
        names = trunk.codecs if trunk is not None else tuple(CODEC_BY_NAME)
        others = tuple(
            CODEC_BY_NAME[n.lower()]
            for n in names
            if n.lower() in CODEC_BY_NAME
            and not any(CODEC_BY_NAME[n.lower()].matches(c) for c in current)
        )
    audio = current + others
    used = {c.payload_type for c in audio}
    return audio + tuple(e for e in TELEPHONE_EVENTS if e.payload_type not in used)


def key_leg(leg: RtpLeg, stream: NegotiatedStream) -> bool:
    """Key the leg for SRTP as the stream says (`SrtpSession.for_stream`); plain RTP clears it.
    False, leaving the leg as it was, when the keys are unusable."""
    try:
        leg.srtp = SrtpSession.for_stream(stream, leg.srtp)
    except ValueError as exc:
        logger.info("unusable SRTP keys on port %d: %s", leg.port, exc)
        return False
    return True


def rejoin(bridge: Bridge, call: Call, stream: NegotiatedStream, local: tuple[Codec, ...]) -> bool:
    """Give `call`'s leg the keys and formats of `stream` and join the legs again; False when
    the keys are unusable or the codecs cannot be joined."""
    relay = bridge.relay
    leg = bridge.leg(call)
    if relay is None or leg is None:
        return False
    previous = leg.format
    if not key_leg(leg, stream):
        return False
    leg.set_format(leg_format(stream, local), stream.rtcp_mux)
    reason = "reinvite" if stream.direction is Direction.SENDRECV else "hold"
    try:
        relay.join(reason)
    except ValueError as exc:
        event(logger, "bridge-codecs", call_id=call.call_id, reason=str(exc))
        if previous is not None:
            leg.set_format(previous, leg.rtcp_mux)
            relay.join(reason)
        return False
    bridge.set_codecs(call, stream_codecs(stream))
    return True
