"""Call routing: what happens to each call the SIP core accepts.

The router is the application above :class:`sip.ua.UserAgent`. It matches the Request-URI user
against the configured routes (first match wins) and runs the target: built-in services (``echo``,
``moh``, ``record``, ``dtmf``, ``busy``, ``reject``), a trunk (B2BUA with an RTP relay), and in
later stages queues and agents. Media set-up is asynchronous
(binding RTP sockets); every action on the SIP core goes through :meth:`sip.service.SipService.act`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.bridge import MediaBridge, TranscoderFactory, codec_transcoder
from media.echo import RtpEcho
from media.feed import LegFeed
from media.leg import RtpLeg, leg_format
from media.player import MediaFileError, sound_path
from media.ports import PortAllocator, PortsExhausted, RtpSocketPool
from media.srtp import SrtpSession, is_usable, offer_crypto
from omlmedia.conference import ConferenceService
from omlmedia.config import Config, Route, RouteAction, Trunk
from omlmedia.logs import event
from omlmedia.offer_answer import answer_offer, apply_answer
from omlmedia.services import CAPABILITIES as SERVICE_CAPABILITIES
from omlmedia.services import DtmfEcho, MediaService, MusicOnHold, Recorder
from sip.message import URI, Address, Request, Response
from sip.refer import ReferTo
from sip.sdp import (
    DEFAULT_CAPABILITIES,
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    TELEPHONE_EVENT_48000,
    Answer,
    Codec,
    MediaCapabilities,
    MediaDescription,
    NegotiatedStream,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
    negotiate,
    process_answer,
)
from sip.service import SipService
from sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from omlmedia.acd import AcdRuntime
    from omlmedia.agents import AgentDesk
    from omlmedia.trunks import NextHops, TrunkManager
from sip.ua import (
    Call,
    CallConfirmed,
    CallEnded,
    CallProgress,
    CallState,
    DtmfReceived,
    IncomingCall,
    InDialogRequest,
    RequestOutcome,
    SessionModified,
    TransferProgress,
    UAEvent,
)

logger = logging.getLogger(__name__)

SIP_CAPABILITIES = MediaCapabilities(
    tuple(c for c in DEFAULT_CAPABILITIES.codecs if c.encoding_name.lower() != "opus")
    + tuple(c for c in DEFAULT_CAPABILITIES.codecs if c.encoding_name.lower() == "opus"),
    rtcp_mux=False,
)
"""G.711 first for trunks (what PBXs expect), then G.722 and Opus; RTCP on its own port."""

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

REJECT_STATUS = {RouteAction.BUSY: 486, RouteAction.REJECT: 603}

CODEC_BY_NAME: dict[str, Codec] = {
    "pcmu": PCMU,
    "pcma": PCMA,
    "g722": G722,
    "opus": OPUS,
}
"""The SDP description we offer for each codec name of the configuration."""

TELEPHONE_EVENTS = (TELEPHONE_EVENT, TELEPHONE_EVENT_48000)


def _transcoder_factory() -> TranscoderFactory | None:
    """The media engine's transcoders, when the codec libraries load (libopus is a system
    library: without it the server still bridges calls that share a codec)."""
    try:
        import media.codecs
        import media.transcode  # noqa: F401
    except (ImportError, OSError) as exc:  # pragma: no cover - the codecs are dependencies
        logger.warning("transcoding is unavailable: %s", exc)
        return None
    return codec_transcoder


def _default_music() -> Path | None:
    """The default music on hold of the sound set, if it is installed."""
    try:
        return sound_path("moh")
    except MediaFileError:
        logger.warning("the default music on hold is missing: held calls hear silence")
        return None


def _apply_srtp(leg: RtpLeg, stream: NegotiatedStream) -> bool:
    """Key the leg for SRTP as the stream says (RFC 4568), keeping the contexts whose key did not
    change (RFC 4568 §7.1.4); plain RTP clears it. False when the keys are unusable."""
    try:
        leg.srtp = SrtpSession.for_stream(stream, leg.srtp)
    except ValueError as exc:
        logger.info("unusable SRTP keys on port %d: %s", leg.port, exc)
        return False
    return True


def _stream_codecs(stream: NegotiatedStream) -> tuple[Codec, ...]:
    """The codec and telephone-event a stream settled on."""
    event = stream.telephone_event
    return (stream.codec,) + ((event,) if event is not None else ())


@dataclass(eq=False)
class CallMedia:
    """What the router keeps per call: the negotiated session and the media that runs it."""

    session_id: int
    version: int = 0
    echo: RtpEcho | None = None
    service: MediaService | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    watch: MediaWatch = field(default_factory=lambda: MediaWatch())

    @property
    def packets(self) -> int:
        """RTP packets received from the caller so far."""
        if self.echo is not None:
            return self.echo.packets
        if self.service is not None:
            return self.service.stats.received
        return 0


@dataclass
class MediaWatch:
    """Media-timeout bookkeeping: the packet count at the last sweep, since when it stood still."""

    packets: int = -1
    idle_since: float | None = None
    on_hold: bool = False

    def set_hold(self, on_hold: bool) -> None:
        """Hold suspends the check; the silence before a resume does not count against it."""
        if on_hold != self.on_hold:
            self.on_hold = on_hold
            self.packets = -1
            self.idle_since = None

    def idle_for(self, packets: int, now: float) -> float:
        """Seconds the count has not moved, given the count and time of this sweep."""
        if packets != self.packets:
            self.packets = packets
            self.idle_since = now
            return 0.0
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since


@dataclass(eq=False)
class Transfer:
    """A transfer in progress on one side of a bridge (RFC 3515 REFER, RFC 5589)."""

    transferor: Call
    transaction: ServerTransaction
    offer: SessionDescription
    target: Call | None = None


class BridgeMedia:
    """The media of a bridge: two legs on port pairs of the pool, joined by a `MediaBridge`."""

    def __init__(self, pool: RtpSocketPool, transcoders: TranscoderFactory | None) -> None:
        self._pool = pool
        self.transcoders = transcoders
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

    def join(self) -> None:
        """Join the legs once both have a format (again after one changed); ValueError when
        their codecs differ and cannot be transcoded."""
        assert self.a is not None and self.b is not None
        if self.bridge is None:
            self.bridge = MediaBridge(self.a, self.b, self.transcoders)
        self.bridge.start()

    @property
    def legs(self) -> tuple[RtpLeg, ...]:
        """The legs still held."""
        return tuple(leg for leg in (self.a, self.b) if leg is not None)

    @property
    def packets(self) -> int:
        """RTP packets received on both legs."""
        return sum(leg.counters.received for leg in self.legs)

    def set_hold(self, leg: RtpLeg, on_hold: bool, music: Path | None) -> None:
        """`leg`'s party holds (or resumes): the legs stop exchanging media and the party still
        listening hears `music`, like a PBX's hold (RFC 3264 §8.4 only says who sends)."""
        if on_hold:
            self.holders.add(id(leg))
        else:
            self.holders.discard(id(leg))
        if self.bridge is not None:
            self.bridge.hold(leg, bool(self.holders))
        for other in self.legs:
            playing = self.music.get(id(other))
            wanted = bool(self.holders) and id(other) not in self.holders and music is not None
            if wanted and playing is None and music is not None:
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


@dataclass
class RouterStats:
    """Counters exposed through the API."""

    offered: int = 0
    answered: int = 0
    rejected: int = 0
    not_found: int = 0
    ended: int = 0
    dtmf: int = 0
    echo_packets: int = 0
    relayed_packets: int = 0
    service_packets: int = 0
    transfers: int = 0
    media_timeouts: int = 0


class CallRouter:
    """Routes inbound calls to their targets and owns their media."""

    def __init__(self, config: Config, media_host: str, bind_host: str | None = None) -> None:
        self.config = config
        self.media_host = media_host
        """The address written in our SDP (c= and o=)."""
        low, high = config.server.rtp_port_range
        self.pool = RtpSocketPool(PortAllocator(low, high), bind_host or media_host)
        self.transcoders = _transcoder_factory()
        self.hold_music: Path | None = _default_music()
        """What a bridged party hears while the other holds."""
        self.desk: AgentDesk | None = None
        """Browser agents (`agent` routes), when the server runs the agent page."""
        self.acd: AcdRuntime | None = None
        """Queues and campaigns, when configured."""
        self.conference: ConferenceService | None = None
        """Conference rooms (`conference` routes)."""
        self.stats = RouterStats()
        self.service: SipService | None = None
        self.trunks: TrunkManager | None = None
        self.hops: NextHops | None = None
        self._media: dict[int, CallMedia] = {}
        self._bridges: dict[int, Bridge] = {}
        self._routes: dict[str, tuple[Route, str] | None] = {}
        self._calls: dict[int, Call] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._rtcp_ticker: asyncio.TimerHandle | None = None

    def bind(self, service: SipService) -> None:
        """Attach the SIP service the router acts through; start the media-timeout sweep."""
        self.service = service
        self.conference = ConferenceService(self.pool, self.media_host, service)
        if self.config.media.timeout > 0:
            interval = min(5.0, max(0.25, self.config.media.timeout / 4))
            self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep, interval)
        self._rtcp_ticker = asyncio.get_running_loop().call_later(1.0, self._rtcp_tick)

    def _rtcp_tick(self) -> None:
        """Send the RTCP reports that are due on every bridged leg (RFC 3550 §6.2): one timer for
        all legs, each with its own randomised schedule."""
        self._rtcp_ticker = asyncio.get_running_loop().call_later(1.0, self._rtcp_tick)
        seen: set[int] = set()
        for bridge in self._bridges.values():
            relay = bridge.relay
            if relay is None or id(relay) in seen:
                continue
            seen.add(id(relay))
            for leg in relay.legs:
                self._report(leg)
        for media in self._media.values():
            if media.service is not None:
                for leg in media.service.legs:
                    self._report(leg)
        if self.desk is not None:
            for leg in self.desk.legs:
                self._report(leg)
        if self.acd is not None:
            for leg in self.acd.legs:
                self._report(leg)
        if self.conference is not None:
            for leg in self.conference.legs:
                self._report(leg)

    @staticmethod
    def _report(leg: RtpLeg) -> None:
        try:
            leg.send_report(leg.clock())
        except Exception:
            logger.exception("RTCP report failed on port %d", leg.port)

    def close(self) -> None:
        """Stop the media-timeout sweep (at shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._rtcp_ticker is not None:
            self._rtcp_ticker.cancel()
            self._rtcp_ticker = None

    def _sweep(self, interval: float) -> None:
        """End calls whose media stood still for longer than media.timeout (RFC 3550 gives no
        keep-alive: a peer that stopped sending is gone, unless the call is on hold)."""
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(interval, self._sweep, interval)
        if self.service is None:
            return
        now = loop.time()
        limit = self.config.media.timeout
        dead: list[Call] = []
        for key, media in list(self._media.items()):
            call = self._calls.get(key)
            if call is None or call.state is not CallState.CONFIRMED or media.watch.on_hold:
                continue
            if media.watch.idle_for(media.packets, now) > limit:
                dead.append(call)
        seen: set[int] = set()
        for bridge in list(self._bridges.values()):
            if id(bridge) in seen or bridge.relay is None or bridge.watch.on_hold:
                continue
            seen.add(id(bridge))
            a, b = bridge.inbound, bridge.outbound
            if a.state is not CallState.CONFIRMED or b is None or bridge.transfer is not None:
                continue
            if bridge.watch.idle_for(bridge.relay.packets, now) > limit:
                dead.append(a)
        service = self.service
        for call in dead:
            self.stats.media_timeouts += 1
            event(logger, "media-timeout", call_id=call.call_id, seconds=limit)
            call.end_cause = "media-timeout"
            service.act(partial(service.ua.hangup, call))

    @property
    def active_media(self) -> int:
        """Calls holding media resources."""
        return len(self._media) + sum(1 for b in self._bridges.values() if b.relay is not None)

    def route_for(self, user: str) -> tuple[Route, str] | None:
        """The first route matching `user`, with the user part rewritten by it (cached: a trunk
        sends the same few numbers all day)."""
        cache = self._routes
        if user in cache:
            return cache[user]
        found = self.config.route(user)
        if len(cache) >= 4096:
            cache.clear()
        cache[user] = found
        return found

    def on_event(self, ev: UAEvent) -> None:
        """Entry point for the SIP core's events."""
        if isinstance(ev, IncomingCall):
            self._on_incoming(ev.call)
        elif isinstance(ev, CallEnded):
            self._on_ended(ev.call, ev.cause)
        elif isinstance(ev, CallProgress):
            self._on_progress(ev)
        elif isinstance(ev, CallConfirmed):
            event(logger, "call-confirmed", level=logging.DEBUG, call_id=ev.call.call_id)
        elif isinstance(ev, SessionModified):
            self._on_session_modified(ev)
        elif isinstance(ev, DtmfReceived):
            self.stats.dtmf += 1
            if self.desk is not None:
                self.desk.on_dtmf(ev.call, ev.digit)
            if self.acd is not None:
                self.acd.on_dtmf(ev.call, ev.digit)
            if self.conference is not None:
                self.conference.on_dtmf(ev.call, ev.digit)
            media = self._media.get(id(ev.call))
            if media is not None and isinstance(media.service, DtmfEcho):
                media.service.add_digit(ev.digit)
            event(
                logger,
                "dtmf",
                call_id=ev.call.call_id,
                digit=ev.digit,
                via="info",
                duration_ms=ev.duration_ms,
            )
        elif isinstance(ev, TransferProgress):
            if self.desk is not None and ev.final:
                self.desk.on_transfer_outcome(ev.call, ev.status)
            event(
                logger,
                "transfer-progress",
                call_id=ev.call.call_id,
                status=ev.status,
                final=ev.final,
            )
        elif isinstance(ev, RequestOutcome):
            if self.trunks is not None:
                self.trunks.on_outcome(ev)
        elif isinstance(ev, InDialogRequest):
            assert self.service is not None
            service, call, txn = self.service, ev.call, ev.transaction
            if ev.request.method == "REFER":
                self._on_refer(call, ev.request, txn)
            elif ev.request.method == "NOTIFY":
                service.act(lambda now: service.ua.respond(call, txn, 200, now))
            else:
                service.act(lambda now: service.ua.respond(call, txn, 501, now))

    def hangup_all(self) -> None:
        """End every call (graceful shutdown): BYE for answered ones, 480/CANCEL for the others."""
        assert self.service is not None
        ua = self.service.ua
        if self.desk is not None:
            self.desk.hangup_all()
        if self.conference is not None:
            self.conference.hangup_all()
        for call in list(ua.calls.values()):
            self.service.act(partial(ua.hangup, call))

    # -- targets ------------------------------------------------------------------------------

    def _on_incoming(self, call: Call) -> None:
        assert self.service is not None
        service = self.service
        self.stats.offered += 1
        if call.replaces is not None:
            self._replace_call(call, call.replaces)
            return
        found = self.route_for(call.request_user)
        if found is None:
            self.stats.not_found += 1
            self._refuse(call, 404, "no-route", user=call.request_user)
            return
        route, _user = found
        event(
            logger,
            "call-offered",
            call_id=call.call_id,
            user=call.request_user,
            target=route.target,
            trunk=call.trunk,
            auth_user=call.user,
            source=str(call.source),
        )
        status = REJECT_STATUS.get(route.action)
        if status is not None:
            self.stats.rejected += 1
            service.act(lambda now: service.ua.reject(call, status, now))
            return
        if route.action is RouteAction.ECHO:
            media = CallMedia(session_id=secrets.randbelow(2**31))
            call.app = media
            self._media[id(call)] = media
            self._calls[id(call)] = call
            self._start_echo(call, media)
            return
        if route.action is RouteAction.TRUNK:
            trunk = self.config.trunk(route.trunk or "")
            if trunk is not None and self.trunks is not None and self.trunks.is_down(trunk.name):
                self.stats.rejected += 1
                self._refuse(call, 503, "trunk-down", "Trunk Down", target=route.target)
                return
            if trunk is not None:
                self._start_bridge(call, trunk, _user)
                return
        if route.action in (RouteAction.QUEUE, RouteAction.CAMPAIGN) and self.acd is not None:
            campaign = None
            queue = route.trunk or ""
            if route.action is RouteAction.CAMPAIGN:
                campaign = next(c for c in self.config.campaigns if c.name == route.trunk)
                queue = campaign.queue
            self.acd.enter(call, queue, campaign)
            return
        if route.action is RouteAction.CONFERENCE and self.conference is not None:
            refusal = self.conference.offer(call, _user)
            if refusal is not None:
                self.stats.rejected += 1
                self._refuse(call, refusal, "conference-unavailable", target=f"conference:{_user}")
            return
        if route.action is RouteAction.AGENT and self.desk is not None:
            agent = route.trunk or _user
            refusal = self.desk.offer(call, agent)
            if refusal is not None:
                self.stats.rejected += 1
                self._refuse(call, refusal, "agent-unavailable", target=f"agent:{agent}")
            return
        if route.action in (RouteAction.MOH, RouteAction.RECORD, RouteAction.DTMF):
            media = CallMedia(session_id=secrets.randbelow(2**31))
            call.app = media
            self._media[id(call)] = media
            self._calls[id(call)] = call
            media.task = asyncio.get_running_loop().create_task(
                self._answer_service(call, media, self._make_service(call, route.action))
            )
            return
        self.stats.rejected += 1
        self._refuse(call, 503, "target-unavailable", "Target Not Available", target=route.target)

    def _refuse(
        self,
        call: Call,
        status: int,
        why: str,
        phrase: str | None = None,
        **fields: Any,
    ) -> None:
        """Answer an offered call with a final failure and log why (one `call-rejected` line)."""
        assert self.service is not None
        service = self.service
        details: dict[str, Any] = {"call_id": call.call_id, "status": status, "reason": why}
        details.update(fields)
        event(logger, "call-rejected", **details)
        service.act(lambda now: service.ua.reject(call, status, now, phrase))

    def _start_echo(self, call: Call, media: CallMedia) -> None:
        """Answer `echo`: at once with a pooled port pair, or after binding a new one."""
        assert self.service is not None
        try:
            offer = SessionDescription.parse(call.remote_sdp) if call.remote_sdp else None
        except SDPError as exc:
            self._refuse(call, 400, str(exc), "Bad SDP")
            return
        expected = None
        if offer is not None:
            audio = next((m for m in offer.media if m.media == "audio"), None)
            connection = offer.stream_connection(audio) if audio is not None else None
            if connection is not None and not connection.is_unspecified:
                expected = connection.address
        echo = media.echo = RtpEcho(self.pool, expected)
        port = echo.start_now()
        if port is not None:
            self._answer_echo(call, media, offer, port)
        else:
            media.task = asyncio.get_running_loop().create_task(self._bind_echo(call, media, offer))

    async def _bind_echo(
        self, call: Call, media: CallMedia, offer: SessionDescription | None
    ) -> None:
        assert self.service is not None and media.echo is not None
        try:
            port = await media.echo.start()
        except (PortsExhausted, OSError) as exc:
            media.echo = None
            self._refuse(call, 503, str(exc))
            return
        if call.state is not CallState.OFFERED:  # cancelled while the sockets were bound
            self._release(call)
            return
        self._answer_echo(call, media, offer, port)

    def _answer_echo(
        self, call: Call, media: CallMedia, offer: SessionDescription | None, port: int
    ) -> None:
        assert self.service is not None
        service = self.service
        try:
            if offer is not None:
                answer = negotiate(
                    offer,
                    SIP_CAPABILITIES,
                    self.media_host,
                    port,
                    session_id=media.session_id,
                    version=media.version,
                )
                body = bytes(answer.description)
            else:
                body = bytes(
                    create_offer(
                        SIP_CAPABILITIES, media.session_id, media.version, self.media_host, port
                    )
                )
        except OfferAnswerError:
            self._release(call)
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        event(
            logger,
            "call-answered",
            level=logging.DEBUG,
            call_id=call.call_id,
            target="echo",
            rtp_port=port,
        )
        self.stats.answered += 1
        service.act(lambda now: service.ua.answer(call, body, now))

    def _make_service(self, call: Call, action: RouteAction) -> MediaService:
        if action is RouteAction.MOH:
            return MusicOnHold(self.pool, self.media_host)
        if action is RouteAction.RECORD:
            path = self.recording_path(call)
            event(logger, "recording-started", call_id=call.call_id, path=str(path))
            return Recorder(
                self.pool, self.media_host, path, format=self.config.media.recording_format
            )

        def on_digit(digit: str, duration_ms: int) -> None:
            self.stats.dtmf += 1
            event(
                logger,
                "dtmf",
                call_id=call.call_id,
                digit=digit,
                via="rfc4733",
                duration_ms=duration_ms,
            )

        return DtmfEcho(self.pool, self.media_host, on_digit)

    def recording_path(self, call: Call) -> Path:
        """Where a call's recording goes: data_dir/recordings/YYYY/MM/DD/<time>-<call-id>.wav
        (or .opus, per media.recording_format)."""
        stamp = time.gmtime()
        safe_id = _UNSAFE_FILENAME.sub("_", call.call_id)[:80]
        directory = self.config.server.data_dir / "recordings" / time.strftime("%Y/%m/%d", stamp)
        directory.mkdir(parents=True, exist_ok=True)
        suffix = ".opus" if self.config.media.recording_format == "opus" else ".wav"
        return directory / f"{time.strftime('%H%M%S', stamp)}-{safe_id}{suffix}"

    async def _answer_service(self, call: Call, media: CallMedia, svc: MediaService) -> None:
        """Answer with a media service (moh, record, dtmf): bind, negotiate, start, 200 OK."""
        assert self.service is not None
        service = self.service
        try:
            offer = SessionDescription.parse(call.remote_sdp) if call.remote_sdp else None
        except SDPError as exc:
            self._refuse(call, 400, str(exc), "Bad SDP")
            return
        if offer is None:  # these services need the caller's offer (no late offer yet)
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        try:
            port = await svc.bind()
        except (PortsExhausted, OSError) as exc:
            self._refuse(call, 503, str(exc))
            return
        if call.state is not CallState.OFFERED:
            svc.stop()
            return
        media.service = svc
        try:
            answer = answer_offer(
                offer,
                SERVICE_CAPABILITIES,
                self.media_host,
                port,
                session_id=media.session_id,
                version=media.version,
                current=svc.srtp,
            )
            await svc.start(answer.audio)
        except OfferAnswerError:
            self._release(call)
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        if call.state is not CallState.OFFERED:
            self._release(call)
            return
        self.stats.answered += 1
        body = bytes(answer.description)
        service.act(lambda now: service.ua.answer(call, body, now))

    def _on_session_modified(self, ev: SessionModified) -> None:
        """Answer a re-INVITE or UPDATE (hold, resume, codec change) for a call we carry."""
        assert self.service is not None
        service, call, txn, request = self.service, ev.call, ev.transaction, ev.request
        bridge = self._bridges.get(id(call))
        if bridge is not None:
            self._modify_bridged(bridge, call, txn, request)
            return
        if self.acd is not None and self.acd.owns(call):
            qc = self.acd.callers[call.call_id]
            if not qc.agent:
                self.acd.on_session_modified(call, txn, request)
                return
        if self.desk is not None and (
            self.desk.owns(call) or (self.acd is not None and self.acd.owns(call))
        ):
            self.desk.on_session_modified(call, txn, request)
            return
        if self.conference is not None and self.conference.owns(call):
            self.conference.on_session_modified(call, txn, request)
            return
        media = self._media.get(id(call))
        if media is None or (media.echo is None and media.service is None):
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        if not request.body:
            service.act(lambda now: service.ua.respond(call, txn, 200, now))
            return
        try:
            offer = SessionDescription.parse(request.body)
            media.version += 1
            svc = media.service
            answer = negotiate(
                offer,
                SERVICE_CAPABILITIES if svc is not None else SIP_CAPABILITIES,
                self.media_host,
                svc.port if svc is not None else media.echo.port if media.echo else 0,
                session_id=media.session_id,
                version=media.version,
                crypto=svc.crypto() if svc is not None else (),
                accept_crypto=is_usable,
            )
            if svc is not None:
                svc.update(answer.audio)
        except (SDPError, OfferAnswerError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        media.watch.set_hold(offer.is_hold())
        direction = answer.audio.direction.value
        event(
            logger,
            "session-modified",
            call_id=call.call_id,
            method=request.method,
            direction=direction,
            hold=offer.is_hold(),
        )
        body = bytes(answer.description)
        service.act(lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp"))

    def _modify_bridged(
        self, bridge: Bridge, call: Call, txn: ServerTransaction, request: Request
    ) -> None:
        """A re-INVITE or UPDATE on one leg of a bridge (RFC 3264 §8): the leg follows a new
        address, codec or direction; the other leg's session does not change."""
        assert self.service is not None
        service = self.service
        leg = bridge.leg(call)
        body = bridge.local_sdp.get(id(call), b"")
        if not request.body or leg is None or not bridge.codecs(call):
            service.act(
                lambda now: service.ua.respond(
                    call, txn, 200, now, body or b"", "application/sdp" if body else None
                )
            )
            return
        try:
            offer = SessionDescription.parse(request.body)
            version = bridge.versions.get(id(call), 0) + 1
            current = bridge.codecs(call)[0]
            answer, capabilities = self._answer_preferring(
                offer, current, leg.port, bridge.session_id, version, leg
            )
        except (SDPError, OfferAnswerError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        stream = answer.audio
        if not self._rejoin(bridge, call, stream, capabilities.codecs):
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        moved = leg.peer is None or stream.remote_address != leg.peer[0]
        leg.set_remote(
            stream.remote_address, stream.remote_port, stream.remote_rtcp_port, relatch=moved
        )
        bridge.versions[id(call)] = version
        hold = offer.is_hold()
        bridge.watch.set_hold(hold)
        if bridge.relay is not None:
            bridge.relay.set_hold(leg, hold, self.hold_music)
        event(
            logger,
            "session-modified",
            call_id=call.call_id,
            method=request.method,
            direction=stream.direction.value,
            hold=hold,
            codec=stream.codec.encoding_name,
        )
        body = bytes(answer.description)
        bridge.local_sdp[id(call)] = body
        service.act(lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp"))

    def _on_ended(self, call: Call, cause: str) -> None:
        self.stats.ended += 1
        event(logger, "call-ended", call_id=call.call_id, cause=cause, direction=call.direction)
        if self.acd is not None and self.acd.owns(call):
            self.acd.on_ended(call, cause)
            return
        if self.desk is not None and self.desk.owns(call):
            self.desk.on_ended(call, cause)
            return
        if self.conference is not None and self.conference.owns(call):
            self.conference.on_ended(call, cause)
            return
        bridge = self._bridges.pop(id(call), None)
        if bridge is not None:
            self._end_bridge(bridge, call)
            return
        self._release(call)

    # -- trunk routing: a B2BUA with a passthrough RTP relay ----------------------------------

    def _start_bridge(self, inbound: Call, trunk: Trunk, number: str) -> None:
        assert self.service is not None
        service = self.service
        try:
            offer = SessionDescription.parse(inbound.remote_sdp) if inbound.remote_sdp else None
        except SDPError as exc:
            service.act(lambda now: service.ua.reject(inbound, 400, now, "Bad SDP"))
            event(logger, "call-rejected", call_id=inbound.call_id, status=400, reason=str(exc))
            return
        audio = None
        if offer is not None:
            audio = next((m for m in offer.media if m.media == "audio" and m.port), None)
        if offer is None or audio is None or not audio.codecs:
            # Bridging needs the caller's offer (no late offer).
            service.act(lambda now: service.ua.reject(inbound, 488, now))
            return
        bridge = Bridge(
            inbound=inbound,
            trunk=trunk,
            number=number,
            offer=offer,
            session_id=secrets.randbelow(2**31),
        )
        self._bridges[id(inbound)] = bridge
        bridge.task = asyncio.get_running_loop().create_task(self._dial_trunk(bridge, audio))

    async def _dial_trunk(self, bridge: Bridge, audio: MediaDescription) -> None:
        assert self.service is not None
        service, inbound, trunk = self.service, bridge.inbound, bridge.trunk
        relay = BridgeMedia(self.pool, self.transcoders)
        try:
            await relay.start()
        except (PortsExhausted, OSError):
            self._bridges.pop(id(inbound), None)
            service.act(lambda now: service.ua.reject(inbound, 503, now))
            return
        if inbound.state is not CallState.OFFERED:
            relay.stop()
            return
        bridge.relay = relay
        assert relay.a is not None and relay.b is not None
        connection = bridge.offer.stream_connection(audio)
        if connection is not None:
            relay.a.set_remote(
                connection.address, audio.port, audio.rtcp.port if audio.rtcp else None
            )
        codecs = self._offer_codecs(trunk, audio.codecs)
        if not codecs:
            relay.stop()
            bridge.relay = None
            self._bridges.pop(id(inbound), None)
            event(logger, "call-rejected", call_id=inbound.call_id, status=488, reason="codecs")
            service.act(lambda now: service.ua.reject(inbound, 488, now))
            return
        bridge.capabilities = MediaCapabilities(codecs, ptime=audio.ptime, rtcp_mux=False)
        bridge.outbound_offer = create_offer(
            bridge.capabilities,
            bridge.session_id,
            0,
            self.media_host,
            relay.b.port,
            crypto=offer_crypto() if trunk.srtp else (),
        )
        number = bridge.number
        caller = inbound.invite.from_
        host = trunk.host if ":" not in trunk.host else f"[{trunk.host}]"
        request_uri = URI.parse(f"sip:{number}@{host}:{trunk.port}")
        to_address = Address.parse(f"<sip:{number}@{host}:{trunk.port}>")
        from_address = Address(
            caller.display_name,
            URI.parse(f"sip:{caller.uri.user or 'anonymous'}@{self.media_host}"),
            (),
        )
        credentials = (
            (trunk.username, trunk.password) if trunk.username and trunk.password else None
        )
        body = bytes(bridge.outbound_offer)

        def dial(now: float) -> None:
            outbound = service.ua.send_invite(
                destination=self.hops.endpoint(trunk) if self.hops else trunk.endpoint,
                request_uri=request_uri,
                from_address=from_address,
                to_address=to_address,
                body=body,
                now=now,
                credentials=credentials,
                trunk=trunk.name,
            )
            bridge.outbound = outbound
            bridge.local_sdp[id(outbound)] = body
            self._bridges[id(outbound)] = bridge

        event(logger, "call-bridging", call_id=inbound.call_id, trunk=trunk.name, number=number)
        service.act(dial)

    def place_call(
        self, number: str, trunk_name: str, body: bytes, related: Call | None
    ) -> Call | None:
        """An outbound call to `number` with the SDP offer `body`, through `trunk_name`, the
        trunk of `related` (the call it is for), the route of `number`, or the first trunk."""
        assert self.service is not None
        service = self.service
        trunk = self.config.trunk(trunk_name) if trunk_name else None
        if trunk is None and related is not None and related.trunk:
            trunk = self.config.trunk(related.trunk)
        if trunk is None:
            found = self.route_for(number)
            if found is not None and found[0].action is RouteAction.TRUNK:
                trunk = self.config.trunk(found[0].trunk or "")
                number = found[1]
        if trunk is None and self.config.trunks:
            trunk = self.config.trunks[0]
        if trunk is None:
            return None
        chosen = trunk
        host = chosen.host if ":" not in chosen.host else f"[{chosen.host}]"
        credentials = (
            (chosen.username, chosen.password) if chosen.username and chosen.password else None
        )
        placed: list[Call] = []

        def dial(now: float) -> None:
            placed.append(
                service.ua.send_invite(
                    destination=self.hops.endpoint(chosen) if self.hops else chosen.endpoint,
                    request_uri=URI.parse(f"sip:{number}@{host}:{chosen.port}"),
                    from_address=Address.parse(f"<sip:omlmedia@{self.media_host}>"),
                    to_address=Address.parse(f"<sip:{number}@{host}:{chosen.port}>"),
                    body=body,
                    now=now,
                    credentials=credentials,
                    trunk=chosen.name,
                )
            )

        service.act(dial)
        event(logger, "call-placed", call_id=placed[0].call_id, trunk=chosen.name, number=number)
        return placed[0]

    def _on_progress(self, ev: CallProgress) -> None:
        if self.desk is not None and self.desk.owns(ev.call):
            body = ev.response.body if ev.response.content_type == "application/sdp" else b""
            self.desk.on_progress(ev.call, ev.response.status, body or b"")
            return
        bridge = self._bridges.get(id(ev.call))
        if bridge is None or self.service is None:
            return
        if bridge.transfer is not None and bridge.transfer.target is ev.call:
            self._on_transfer_progress(bridge, bridge.transfer, ev.response)
            return
        if bridge.outbound is not ev.call or bridge.inbound.state is not CallState.OFFERED:
            return
        service, inbound, response = self.service, bridge.inbound, ev.response
        status = response.status
        if status >= 300:
            mapped = status if 400 <= status < 700 and status not in (401, 407) else 502
            event(logger, "bridge-failed", call_id=inbound.call_id, status=status)
            service.act(lambda now: service.ua.reject(inbound, mapped, now))
            return
        body = b""
        if response.body and response.content_type == "application/sdp":
            body = self._bridge_answer(bridge, response.body)
            if not body:
                service.act(lambda now: service.ua.hangup(ev.call, now))
                service.act(lambda now: service.ua.reject(inbound, 488, now))
                return
        elif bridge.inbound_answer is not None:
            body = bridge.inbound_answer
        if status >= 200:
            if not body:
                service.act(lambda now: service.ua.hangup(ev.call, now))
                service.act(lambda now: service.ua.reject(inbound, 488, now))
                return
            self.stats.answered += 1
            event(
                logger,
                "call-answered",
                call_id=inbound.call_id,
                target=f"trunk:{bridge.trunk.name}",
            )
            service.act(lambda now: service.ua.answer(inbound, body, now))
        elif status == 183 and body:
            service.act(lambda now: service.ua.ring(inbound, now, body, 183))
        elif status >= 180:
            service.act(lambda now: service.ua.ring(inbound, now))

    def _offer_codecs(self, trunk: Trunk, offered: tuple[Codec, ...]) -> tuple[Codec, ...]:
        """What we offer a trunk for a caller who offered `offered`: the trunk's codecs, those the
        caller has first (passthrough costs nothing), then those we would transcode to; with
        telephone-event when the trunk allows it. Empty when nothing can join the two."""
        allowed = [
            CODEC_BY_NAME[name.lower()] for name in trunk.codecs if name.lower() in CODEC_BY_NAME
        ]
        shared = [c for c in allowed if any(c.matches(o) for o in offered)]
        transcodable = self.transcoders is not None and any(
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

    def _caller_codecs(self, first: Codec) -> tuple[Codec, ...]:
        """What we accept from a caller whose other leg settled on `first`: that codec (for
        passthrough), then every codec we can transcode from, and telephone-event."""
        rest = tuple(c for c in CODEC_BY_NAME.values() if not c.matches(first))
        if self.transcoders is None:
            rest = ()
        return (first, *rest, *TELEPHONE_EVENTS)

    def _answer_preferring(
        self,
        offer: SessionDescription,
        codec: Codec,
        port: int,
        session_id: int,
        version: int,
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
                    self.media_host,
                    port,
                    session_id=session_id,
                    version=version,
                    current=current,
                )
                return answer, capabilities
            except OfferAnswerError:
                if attempt or self.transcoders is None:
                    raise
                capabilities = MediaCapabilities(self._caller_codecs(codec), rtcp_mux=False)
        raise AssertionError("unreachable")

    def _bridge_answer(self, bridge: Bridge, sdp: bytes) -> bytes:
        """Our answer to the caller, from the trunk's answer to our offer; b"" when unusable."""
        relay = bridge.relay
        if bridge.outbound_offer is None or relay is None or relay.a is None or relay.b is None:
            return b""
        codecs = bridge.capabilities.codecs if bridge.capabilities else ()
        try:
            stream = apply_answer(relay.b, bridge.outbound_offer, sdp, codecs)
        except ValueError as exc:
            logger.info("unusable answer on port %d: %s", relay.b.port, exc)
            return b""
        bridge.outbound_codecs = _stream_codecs(stream)
        if bridge.inbound_answer is not None:
            try:
                relay.join()
            except ValueError:
                return b""
            return bridge.inbound_answer
        try:
            ours, capabilities = self._answer_preferring(
                bridge.offer, stream.codec, relay.a.port, bridge.session_id, 0
            )
            relay.a.set_format(leg_format(ours.audio, capabilities.codecs), ours.audio.rtcp_mux)
            if not _apply_srtp(relay.a, ours.audio):
                raise OfferAnswerError("unusable SRTP keys")
            relay.join()
        except (OfferAnswerError, ValueError) as exc:
            event(logger, "bridge-codecs", call_id=bridge.inbound.call_id, reason=str(exc))
            return b""
        bridge.chosen = _stream_codecs(ours.audio)
        event(
            logger,
            "bridge-media",
            call_id=bridge.inbound.call_id,
            caller_codec=ours.audio.codec.encoding_name,
            callee_codec=stream.codec.encoding_name,
            mode="passthrough" if relay.bridge and relay.bridge.passthrough else "transcode",
            caller_srtp=relay.a.srtp is not None,
            callee_srtp=relay.b.srtp is not None,
        )
        bridge.inbound_answer = bytes(ours.description)
        bridge.local_sdp[id(bridge.inbound)] = bridge.inbound_answer
        return bridge.inbound_answer

    # -- transfers: REFER (blind, RFC 3515) and INVITE with Replaces (attended, RFC 3891) ---------

    def _on_refer(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        """A bridged party transfers the other one: call the Refer-To target on its side."""
        assert self.service is not None
        service = self.service
        bridge = self._bridges.get(id(call))
        try:
            refer_to = ReferTo.parse(request.headers.get("Refer-To") or "")
        except ValueError:
            service.act(lambda now: service.ua.respond(call, txn, 400, now))
            return
        leg = bridge.leg(call) if bridge is not None else None
        if (
            bridge is None
            or leg is None
            or bridge.transfer is not None
            or not bridge.chosen
            or bridge.other(call) is None
        ):
            # Only a connected two-party bridge can be transferred at this stage.
            service.act(lambda now: service.ua.respond(call, txn, 603, now))
            return
        if refer_to.replaces is not None:
            service.act(lambda now: service.ua.respond(call, txn, 501, now))
            return
        destination = self._transfer_destination(call, refer_to.address.uri)
        if destination is None:
            service.act(lambda now: service.ua.respond(call, txn, 404, now))
            return
        trunk, number = destination
        offer = create_offer(
            MediaCapabilities(self._leg_codecs(bridge, call, trunk), rtcp_mux=False),
            bridge.session_id,
            1,
            self.media_host,
            leg.port,
            crypto=offer_crypto() if trunk.srtp else (),
        )
        transfer = Transfer(transferor=call, transaction=txn, offer=offer)
        bridge.transfer = transfer
        self._bridges.pop(id(call), None)  # the transferor's BYE no longer ends the bridge
        event(
            logger,
            "transfer-requested",
            call_id=call.call_id,
            refer_to=str(refer_to.address),
            trunk=trunk.name,
        )
        service.act(lambda now: service.ua.respond(call, txn, 202, now))
        self._notify_transfer(call, 100, "Trying", final=False)
        host = trunk.host if ":" not in trunk.host else f"[{trunk.host}]"
        body = bytes(offer)
        credentials = (
            (trunk.username, trunk.password) if trunk.username and trunk.password else None
        )

        def dial(now: float) -> None:
            target = service.ua.send_invite(
                destination=self.hops.endpoint(trunk) if self.hops else trunk.endpoint,
                request_uri=URI.parse(f"sip:{number}@{host}:{trunk.port}"),
                from_address=Address.parse(f"<sip:omlmedia@{self.media_host}>"),
                to_address=Address.parse(f"<sip:{number}@{host}:{trunk.port}>"),
                body=body,
                now=now,
                credentials=credentials,
                trunk=trunk.name,
            )
            transfer.target = target
            self._bridges[id(target)] = bridge

        service.act(dial)

    def _leg_codecs(self, bridge: Bridge, call: Call, trunk: Trunk | None) -> tuple[Codec, ...]:
        """What a new party on `call`'s leg may use: the leg's codec first (passthrough goes on),
        then what the trunk allows and we can transcode, then telephone-event."""
        current = tuple(c for c in bridge.codecs(call) if c.encoding_name != "telephone-event")
        others: tuple[Codec, ...] = ()
        if self.transcoders is not None:
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

    def _rejoin(
        self, bridge: Bridge, call: Call, stream: NegotiatedStream, local: tuple[Codec, ...]
    ) -> bool:
        """Give `call`'s leg the formats of `stream` and join the legs again; False when the
        codecs cannot be joined."""
        relay = bridge.relay
        leg = bridge.leg(call)
        if relay is None or leg is None:
            return False
        previous = leg.format
        if not _apply_srtp(leg, stream):
            return False
        leg.set_format(leg_format(stream, local), stream.rtcp_mux)
        try:
            relay.join()
        except ValueError as exc:
            event(logger, "bridge-codecs", call_id=call.call_id, reason=str(exc))
            if previous is not None:
                leg.set_format(previous, leg.rtcp_mux)
                relay.join()
            return False
        bridge.set_codecs(call, _stream_codecs(stream))
        return True

    def _transfer_destination(self, call: Call, uri: URI) -> tuple[Trunk, str] | None:
        """Where a transfer to `uri` goes: its route when that is a trunk, else the trunk of the
        transferor's call, with the user part as given."""
        user = uri.user or ""
        found = self.route_for(user)
        if found is not None and found[0].action is RouteAction.TRUNK:
            trunk = self.config.trunk(found[0].trunk or "")
            if trunk is not None:
                return trunk, found[1]
        trunk = self.config.trunk(call.trunk or "") if call.trunk else None
        if trunk is None and self.config.trunks:
            trunk = self.config.trunk_for_source(uri.host) or None
        return (trunk, user) if trunk is not None and user else None

    def _notify_transfer(self, transferor: Call, status: int, reason: str, final: bool) -> None:
        """NOTIFY the transferor of the target's progress in a sipfrag (RFC 3515 §2.4.5)."""
        assert self.service is not None
        service = self.service
        state = "terminated;reason=noresource" if final else "active;expires=60"
        headers = (("Event", "refer"), ("Subscription-State", state))
        body = f"SIP/2.0 {status} {reason}\r\n".encode()

        def notify(now: float) -> None:
            service.ua.send_in_dialog(
                transferor, "NOTIFY", now, body, "message/sipfrag;version=2.0", headers
            )

        if transferor.state is not CallState.ENDED:
            service.act(notify)

    def _on_transfer_progress(self, bridge: Bridge, transfer: Transfer, response: Response) -> None:
        assert self.service is not None
        service = self.service
        target = transfer.target
        status = response.status
        if target is None:
            return
        if status < 200:
            if status >= 180:
                self._notify_transfer(transfer.transferor, status, response.reason, final=False)
            return
        if status >= 300:
            self._transfer_failed(bridge, transfer, status, response.reason)
            return
        leg = bridge.leg(transfer.transferor)
        stream = None
        try:
            answer = SessionDescription.parse(response.body)
            stream = next(s for s in process_answer(transfer.offer, answer) if s is not None)
        except (SDPError, OfferAnswerError, StopIteration):
            stream = None
        offered = transfer.offer.media[0].codecs if transfer.offer.media else ()
        if (
            leg is None
            or stream is None
            or not self._rejoin(bridge, transfer.transferor, stream, tuple(offered))
        ):
            service.act(lambda now: service.ua.hangup(target, now))
            self._transfer_failed(bridge, transfer, 488, "Not Acceptable Here")
            return
        leg.set_remote(
            stream.remote_address, stream.remote_port, stream.remote_rtcp_port, relatch=True
        )
        bridge.replace(transfer.transferor, target)
        bridge.local_sdp[id(target)] = bytes(transfer.offer)
        bridge.transfer = None
        transferor = transfer.transferor
        event(
            logger, "transfer-completed", call_id=transferor.call_id, target_call_id=target.call_id
        )
        self.stats.transfers += 1
        self._notify_transfer(transferor, 200, "OK", final=True)
        service.act(lambda now: service.ua.hangup(transferor, now))

    def _transfer_failed(
        self, bridge: Bridge, transfer: Transfer, status: int, reason: str
    ) -> None:
        """The target did not answer: the transferor keeps its call (RFC 5589 §6)."""
        if transfer.target is not None:
            self._bridges.pop(id(transfer.target), None)
        bridge.transfer = None
        transferor = transfer.transferor
        event(logger, "transfer-failed", call_id=transferor.call_id, status=status)
        if transferor.state is not CallState.ENDED:
            self._bridges[id(transferor)] = bridge
            self._notify_transfer(transferor, status, reason, final=True)
        else:
            self._end_bridge(bridge, transferor)

    def _replace_call(self, call: Call, replaced: Call) -> None:
        """An INVITE with Replaces takes `replaced`'s place in its bridge (attended transfer)."""
        assert self.service is not None
        service = self.service
        bridge = self._bridges.get(id(replaced))
        leg = bridge.leg(replaced) if bridge is not None else None
        if bridge is None or leg is None or not bridge.chosen or bridge.transfer is not None:
            service.act(lambda now: service.ua.reject(call, 603, now))
            return
        local = self._leg_codecs(bridge, replaced, self.config.trunk(call.trunk or ""))
        try:
            offer = SessionDescription.parse(call.remote_sdp)
            current = bridge.codecs(replaced)[0]
            answer, capabilities = self._answer_preferring(
                offer, current, leg.port, bridge.session_id, 2, leg
            )
        except (SDPError, OfferAnswerError):
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        stream = answer.audio
        if not self._rejoin(bridge, replaced, stream, capabilities.codecs + local):
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        leg.set_remote(
            stream.remote_address, stream.remote_port, stream.remote_rtcp_port, relatch=True
        )
        self._bridges.pop(id(replaced), None)
        bridge.replace(replaced, call)
        body = bytes(answer.description)
        bridge.local_sdp[id(call)] = body
        self._bridges[id(call)] = bridge
        self.stats.transfers += 1
        event(logger, "call-replaced", call_id=replaced.call_id, by_call_id=call.call_id)
        service.act(lambda now: service.ua.answer(call, body, now))
        service.act(lambda now: service.ua.hangup(replaced, now))

    def _end_bridge(self, bridge: Bridge, ended: Call) -> None:
        assert self.service is not None
        service = self.service
        transfer = bridge.transfer
        if transfer is not None and ended is transfer.target:
            self._transfer_failed(bridge, transfer, 487, "Request Terminated")
            return
        if transfer is not None and transfer.target is not None:
            target = transfer.target
            self._bridges.pop(id(target), None)
            service.act(lambda now: service.ua.hangup(target, now))
        other = bridge.other(ended)
        if other is not None:
            self._bridges.pop(id(other), None)
            if other.state is not CallState.ENDED:
                service.act(lambda now: service.ua.hangup(other, now))
        if bridge.relay is not None:
            relay = bridge.relay
            self.stats.relayed_packets += relay.packets
            for side, leg in (("caller", relay.a), ("callee", relay.b)):
                if leg is None:
                    continue
                q = leg.quality()
                event(
                    logger,
                    "media-quality",
                    call_id=bridge.inbound.call_id,
                    leg=side,
                    codec=leg.format.encoding_name if leg.format else "-",
                    received=q.packets_received,
                    lost=q.packets_lost,
                    jitter_ms=round(q.jitter_ms, 2),
                    rtt_ms=None if q.round_trip_ms is None else round(q.round_trip_ms, 1),
                    mos=None if q.mos is None else round(q.mos, 2),
                    dropped=leg.counters.dropped,
                )
            relay.stop()
            bridge.relay = None

    def _release(self, call: Call) -> None:
        self._calls.pop(id(call), None)
        media = self._media.pop(id(call), None)
        if media is None:
            return
        if media.echo is not None:
            self.stats.echo_packets += media.echo.packets
            media.echo.stop()
            media.echo = None
        if media.service is not None:
            self.stats.service_packets += media.service.packets
            media.service.stop()
            media.service = None
