"""Trunk routes: a back-to-back user agent (RFC 7092) with an RTP relay between its two calls.

Theory of operation. `B2bua.take(inbound, trunk, number)` owns the caller's call (it needs the
caller's offer: no late offer), binds both relay legs, offers the trunk the codecs it allows
(those the caller has first, so passthrough costs nothing) and dials it. The callee's
provisional and final responses are relayed to the caller; its SDP answer keys and formats relay
leg B and yields our answer to the caller on leg A, preferring the callee's codec. A re-INVITE on
either side changes only that side's leg (address, codec, keys, hold: the other party hears
music while one holds). The end of either call ends the other. `place_call` dials a number
through a trunk for another target (the agent desk's consultations and callbacks), which owns
that call. Transfers of a bridged call (REFER, Replaces) are `omlmedia.transfers_sip`'s.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from media.bridge import TranscoderFactory
from media.kernelpath_nft import KernelPath
from media.leg import RtpLeg, leg_format
from media.ports import PortsExhausted, RtpSocketPool
from media.srtp import offer_crypto
from omlmedia.bridges import (
    Bridge,
    BridgeMedia,
    answer_preferring,
    key_leg,
    offer_codecs,
    rejoin,
    stream_codecs,
)
from omlmedia.config import Config, Route, RouteAction, Trunk
from omlmedia.events import CALL_QUALITY, NO_EVENTS, EventSink
from omlmedia.logs import event
from omlmedia.offer_answer import apply_answer
from omlmedia.targets import Refusal, RouterStats
from omlmedia.transfers_sip import BridgeTransfers
from omlmedia.upkeep import MediaWatch
from sip.message import URI, Address, Request, Response
from sip.sdp import (
    Codec,
    MediaCapabilities,
    MediaDescription,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
)
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

if TYPE_CHECKING:
    from omlmedia.trunks import NextHops

__all__ = ["B2bua", "TrunkOffers"]

logger = logging.getLogger(__name__)

RouteFor = Callable[[str], "tuple[Route, str] | None"]


class TrunkOffers:
    """What we offer a trunk for a caller's audio (`offer_codecs`, as capabilities), None when
    nothing can join the two. The same for every call with the same trunk codecs, caller's
    codecs and ptime (most of a trunk's calls): worked out once, not per call (the codec
    matching and the capabilities' checks were 1.5-2 % of a kernel-path call's py-spy samples;
    6.7 against 0.3 us a call alone)."""

    LIMIT = 256
    """Entries kept (trunks' codec lists times callers' offers: few); all dropped past it."""

    def __init__(self, transcoders: TranscoderFactory | None) -> None:
        self.transcoders = transcoders
        self._known: dict[tuple[object, ...], MediaCapabilities | None] = {}

    def __call__(
        self, trunk: Trunk, offered: tuple[Codec, ...], ptime: int | None
    ) -> MediaCapabilities | None:
        key = (trunk.codecs, offered, ptime)
        known = self._known
        if key in known:
            return known[key]
        codecs = offer_codecs(trunk, offered, self.transcoders)
        found = MediaCapabilities(codecs, ptime=ptime, rtcp_mux=False) if codecs else None
        if len(known) >= self.LIMIT:
            known.clear()
        known[key] = found
        return found


class B2bua(BridgeTransfers):
    """The owner of bridged calls: both sides of every bridge, and transfer targets."""

    def __init__(
        self,
        config: Config,
        service: SipService,
        pool: RtpSocketPool,
        media_host: str,
        stats: RouterStats,
        route_for: RouteFor,
        *,
        hops: NextHops | None = None,
        hold_music: Path | None = None,
        transcoders: TranscoderFactory | None = None,
        trunk_down: Callable[[str], bool] | None = None,
        events: EventSink = NO_EVENTS,
    ) -> None:
        self.config = config
        self.events = events
        """Where each bridged leg's media quality is published (``call.quality``) at its end."""
        self.trunk_down = trunk_down
        """Whether a trunk is down (its qualify failed): its route's calls get 503."""
        self.service = service
        self.pool = pool
        self.media_host = media_host
        """The address written in our SDP (c= and o=)."""
        self.stats = stats
        self.route_for = route_for
        """The router's route for a number (a transfer's or a placed call's trunk)."""
        self.hops = hops
        """Where each trunk's requests go (DNS resolved at start), when known."""
        self.hold_music = hold_music
        """What a bridged party hears while the other holds."""
        self.transcoders = transcoders
        self._trunk_offer = TrunkOffers(transcoders)
        self.bridges: dict[int, Bridge] = {}
        """The bridge of each call (by id) whose events end or change it."""
        self.kernel: KernelPath | None = None
        """The kernel path for passthrough calls (``[media] kernel_forwarding``), when active."""

    # -- a caller for a trunk ------------------------------------------------------------------

    route_actions: tuple[RouteAction, ...] = (RouteAction.TRUNK,)

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        """A route target (`omlmedia.targets.RouteTarget`): dial `user` through the route's
        trunk, unless that trunk is down (503 Trunk Down)."""
        trunk = self.config.trunk(route.trunk or "")
        if trunk is None:
            return Refusal(503, "target-unavailable", "Target Not Available")
        if self.trunk_down is not None and self.trunk_down(trunk.name):
            return Refusal(503, "trunk-down", "Trunk Down")
        self.take(call, trunk, user)
        return None

    def take(
        self,
        inbound: Call,
        trunk: Trunk,
        number: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        on_final: Callable[[int], None] | None = None,
    ) -> None:
        """Own `inbound` and dial `number` through `trunk` with a relay between the two; the
        INVITE carries `headers`, and `on_final` is told the callee's final status (or 487
        when the caller left first, or the status the caller was refused with here)."""
        service = self.service
        inbound.app = self
        try:
            offer = SessionDescription.parse(inbound.remote_sdp) if inbound.remote_sdp else None
        except SDPError as exc:
            service.act(lambda now: service.ua.reject(inbound, 400, now, "Bad SDP"))
            event(logger, "call-rejected", call_id=inbound.call_id, status=400, reason=str(exc))
            if on_final is not None:
                on_final(400)
            return
        audio = None
        if offer is not None:
            audio = next((m for m in offer.media if m.media == "audio" and m.port), None)
        if offer is None or audio is None or not audio.codecs:
            # Bridging needs the caller's offer (no late offer).
            service.act(lambda now: service.ua.reject(inbound, 488, now))
            if on_final is not None:
                on_final(488)
            return
        bridge = Bridge(
            inbound=inbound,
            trunk=trunk,
            number=number,
            offer=offer,
            session_id=secrets.randbelow(2**31),
            headers=headers,
            on_final=on_final,
        )
        self.bridges[id(inbound)] = bridge
        bridge.task = asyncio.get_running_loop().create_task(self._dial_trunk(bridge, audio))

    async def _dial_trunk(self, bridge: Bridge, audio: MediaDescription) -> None:
        service, inbound, trunk = self.service, bridge.inbound, bridge.trunk
        relay = BridgeMedia(self.pool, self.transcoders, self.kernel, self.media_host)
        try:
            await relay.start()
        except (PortsExhausted, OSError):
            self.bridges.pop(id(inbound), None)
            service.act(lambda now: service.ua.reject(inbound, 503, now))
            bridge.settle(503)
            return
        if inbound.state is not CallState.OFFERED:
            relay.stop()
            bridge.settle(487)
            return
        bridge.relay = relay
        assert relay.a is not None and relay.b is not None
        connection = bridge.offer.stream_connection(audio)
        if connection is not None:
            relay.a.set_remote(
                connection.address, audio.port, audio.rtcp.port if audio.rtcp else None
            )
        capabilities = self._trunk_offer(trunk, audio.codecs, audio.ptime)
        if capabilities is None:
            relay.stop()
            bridge.relay = None
            self.bridges.pop(id(inbound), None)
            event(logger, "call-rejected", call_id=inbound.call_id, status=488, reason="codecs")
            service.act(lambda now: service.ua.reject(inbound, 488, now))
            bridge.settle(488)
            return
        bridge.capabilities = capabilities
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
                headers=bridge.headers,
            )
            outbound.app = self
            bridge.outbound = outbound
            bridge.local_sdp[id(outbound)] = body
            self.bridges[id(outbound)] = bridge

        event(logger, "call-bridging", call_id=inbound.call_id, trunk=trunk.name, number=number)
        service.act(dial)

    def place_call(
        self, number: str, trunk_name: str, body: bytes, related: Call | None
    ) -> Call | None:
        """An outbound call to `number` with the SDP offer `body`, through `trunk_name`, the
        trunk of `related` (the call it is for), the route of `number`, or the first trunk. The
        caller of this method owns the call (sets its `app`)."""
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

    # -- the owner's events --------------------------------------------------------------------

    def on_response(self, call: Call, response: Response) -> None:
        """The callee's (or a transfer target's) response: relayed to the caller."""
        bridge = self.bridges.get(id(call))
        if bridge is None:
            return
        if bridge.transfer is not None and bridge.transfer.target is call:
            self._on_transfer_progress(bridge, bridge.transfer, response)
            return
        if bridge.outbound is not call or bridge.inbound.state is not CallState.OFFERED:
            return
        service, inbound = self.service, bridge.inbound
        status = response.status
        if status >= 300:
            mapped = status if 400 <= status < 700 and status not in (401, 407) else 502
            event(logger, "bridge-failed", call_id=inbound.call_id, status=status)
            service.act(lambda now: service.ua.reject(inbound, mapped, now))
            bridge.settle(status)
            return
        body = b""
        if response.body and response.content_type == "application/sdp":
            body = self._bridge_answer(bridge, response.body)
            if not body:
                service.act(lambda now: service.ua.hangup(call, now))
                service.act(lambda now: service.ua.reject(inbound, 488, now))
                bridge.settle(488)
                return
        elif bridge.inbound_answer is not None:
            body = bridge.inbound_answer
        if status >= 200:
            if not body:
                service.act(lambda now: service.ua.hangup(call, now))
                service.act(lambda now: service.ua.reject(inbound, 488, now))
                bridge.settle(488)
                return
            self.stats.answered += 1
            event(
                logger,
                "call-answered",
                call_id=inbound.call_id,
                target=f"trunk:{bridge.trunk.name}",
            )
            service.act(lambda now: service.ua.answer(inbound, body, now))
            bridge.settle(status)
        elif status == 183 and body:
            service.act(lambda now: service.ua.ring(inbound, now, body, 183))
        elif status >= 180:
            service.act(lambda now: service.ua.ring(inbound, now))

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
        bridge.outbound_codecs = stream_codecs(stream)
        if bridge.inbound_answer is not None:
            try:
                relay.join()
            except ValueError:
                return b""
            relay.kernel_at_answer()
            return bridge.inbound_answer
        try:
            ours, capabilities = answer_preferring(
                bridge.offer,
                stream.codec,
                self.media_host,
                relay.a.port,
                bridge.session_id,
                0,
                self.transcoders,
            )
            relay.a.set_format(leg_format(ours.audio, capabilities.codecs), ours.audio.rtcp_mux)
            if not key_leg(relay.a, ours.audio):
                raise OfferAnswerError("unusable SRTP keys")
            relay.join()
            relay.kernel_at_answer()
        except (OfferAnswerError, ValueError) as exc:
            event(logger, "bridge-codecs", call_id=bridge.inbound.call_id, reason=str(exc))
            return b""
        bridge.chosen = stream_codecs(ours.audio)
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

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """A re-INVITE or UPDATE on one leg of a bridge (RFC 3264 §8): the leg follows a new
        address, codec or direction; the other leg's session does not change."""
        service = self.service
        bridge = self.bridges.get(id(call))
        if bridge is None:  # a transferor whose place is taken: its session is over
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
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
            answer, capabilities = answer_preferring(
                offer,
                current,
                self.media_host,
                leg.port,
                bridge.session_id,
                version,
                self.transcoders,
                leg,
            )
        except (SDPError, OfferAnswerError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        stream = answer.audio
        if not rejoin(bridge, call, stream, capabilities.codecs):
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

    def on_ended(self, call: Call, cause: str) -> None:
        """Either side ended: the bridge ends (a transfer target that failed leaves it up)."""
        bridge = self.bridges.pop(id(call), None)
        if bridge is not None:
            self._end_bridge(bridge, call)

    def on_dtmf(self, call: Call, digit: str) -> None:
        """Nothing: a bridge relays RFC 4733 digits with the media."""

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """Nothing: the B2BUA sends no REFER."""

    def _end_bridge(self, bridge: Bridge, ended: Call) -> None:
        service = self.service
        bridge.settle(487 if ended is bridge.inbound else 500)
        transfer = bridge.transfer
        if transfer is not None and ended is transfer.target:
            self._transfer_failed(bridge, transfer, 487, "Request Terminated")
            return
        if transfer is not None and transfer.target is not None:
            target = transfer.target
            self.bridges.pop(id(target), None)
            service.act(lambda now: service.ua.hangup(target, now))
        other = bridge.other(ended)
        if other is not None:
            self.bridges.pop(id(other), None)
            if other.state is not CallState.ENDED:
                service.act(lambda now: service.ua.hangup(other, now))
        if bridge.relay is not None:
            relay = bridge.relay
            self.stats.relayed_packets += relay.packets
            for side, leg in (("caller", relay.a), ("callee", relay.b)):
                if leg is None:
                    continue
                q = leg.quality()
                rtt_ms = None if q.round_trip_ms is None else round(q.round_trip_ms, 1)
                mos = None if q.mos is None else round(q.mos, 2)
                event(
                    logger,
                    "media-quality",
                    call_id=bridge.inbound.call_id,
                    leg=side,
                    codec=leg.format.encoding_name if leg.format else "-",
                    received=q.packets_received,
                    lost=q.packets_lost,
                    jitter_ms=round(q.jitter_ms, 2),
                    rtt_ms=rtt_ms,
                    mos=mos,
                    dropped=leg.counters.dropped,
                )
                self.events.publish(
                    CALL_QUALITY,
                    call_id=bridge.inbound.call_id,
                    data={
                        "leg": side,
                        "codec": leg.format.encoding_name if leg.format else "",
                        "packets": q.packets_received,
                        "lost": q.packets_lost,
                        "jitter_ms": round(q.jitter_ms, 2),
                        "rtt_ms": rtt_ms,
                        "mos": mos,
                        "trunk": bridge.inbound.trunk or "",
                    },
                )
            relay.stop()
            bridge.relay = None

    # -- upkeep --------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Bridges (counted once per call they hold) with a relay."""
        return sum(1 for b in self.bridges.values() if b.relay is not None)

    @property
    def legs(self) -> Iterator[RtpLeg]:
        """The relays' legs (for RTCP reports)."""
        seen: set[int] = set()
        for bridge in self.bridges.values():
            relay = bridge.relay
            if relay is None or id(relay) in seen:
                continue
            seen.add(id(relay))
            yield from relay.legs

    def watched(self) -> Iterator[tuple[Call, MediaWatch, int]]:
        """Connected bridges not on hold and not transferring, for the media-timeout sweep (the
        caller's call is the one to end)."""
        seen: set[int] = set()
        for bridge in list(self.bridges.values()):
            if id(bridge) in seen or bridge.relay is None or bridge.watch.on_hold:
                continue
            seen.add(id(bridge))
            a, b = bridge.inbound, bridge.outbound
            if a.state is not CallState.CONFIRMED or b is None or bridge.transfer is not None:
                continue
            yield a, bridge.watch, bridge.relay.packets
