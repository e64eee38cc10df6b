"""Monitoring a call held by another node of the cluster: listen, whisper, barge across nodes.

Theory of operation. In a cluster (``[cluster] acd = "shared"``) a supervisor's page lands on any
node, S, and the call it picks may be carried by another one. The call's audio, decoded, exists
in one place: the node whose desk carries it to the agent's channel, the **agent's node** N (for
a call whose caller is on node A and agent on node B, B's desk carries the internal leg from A as
its caller; A only relays RTP, passthrough, and never decodes it). So the monitor goes there: S
places a signed internal SIP leg to N, N puts that leg into the call's mixing room as the
supervisor's party (`omlmedia.monitor.MonitoredCall`, the same room, roles and matrix as on one
node), and S relays the leg to the supervisor's WebRTC channel. The caller's and the agent's
audio never leave N for this; S gets one mixed stream (G.711, 8 kHz) and sends one back.

The leg is an INVITE from S's SIP address to N's, ``sip:monitor@N``, carrying

    X-Oml-Monitor: <call-id>;mode=<listen|whisper|barge>;supervisor=<actor>;node=S;ts;nonce;sig

``sig``: HMAC-SHA256 with the cluster's secret over a domain tag (``monitor``, so an offer's
signature can never pass for a monitor's nor the reverse), every field, the time and the nonce.
N admits it only from a configured node's exact SIP address, fresh (`MAX_SKEW`), signed by that
very node and with an unseen nonce (`MonitorGate`, which hands every other request to the
cross-node `omlmedia.crossnode.InternalGate`); the router gives it to `MonitorLegs.take` instead
of a route (`internal`). N answers 404 when it carries no such call (ended, or never here), 486
when another supervisor monitors it, 503 without a free media port.

A mode change is an in-dialog **UPDATE** (RFC 3311) with a new signed header: it needs no SDP and
no ACK, and unlike INFO (which the user agent consumes for DTMF) it reaches the call's owner with
its headers; N checks the signature and the nonce again, and the mode changes between two ticks
of the room. A supervisor who stops (or picks another call, or whose page closes) sends a BYE.
The call ending on N (or being held, transferred: the desk detaches it) ends the room and N sends
the BYE: S tells the page (``call-ended``). When N does not answer within `ANSWER_WITHIN`
seconds (a node down), S cancels the leg and refuses with ``node-unreachable`` naming the node.

Authorization stays where the supervisor is: S checks the account's role and its scope against
the call's queue as the shared ACD's replica knows it, writes the audit entries (the call's node
in them) and publishes the ``call.monitored`` events; N trusts the signature and tells its agent's
page when ``show_monitoring`` is on. The supervisor's leg in the call's record is written by N
when N also holds the caller (a call across nodes has its record on the caller's node).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from media.leg import RtpLeg
from media.pcmport import PcmPort, port_rate
from media.ports import PortsExhausted, RtpSocketPool
from media.srtp import offer_crypto
from omlmedia import signed_header
from omlmedia.crossnode import TRUNK_PREFIX, ClusterEnd, InternalLegs, place_internal
from omlmedia.logs import event
from omlmedia.offer_answer import answer_on_leg, apply_answer
from omlmedia.services import CAPABILITIES
from sip.endpoint import Endpoint
from sip.message import Request, Response
from sip.sdp import (
    MediaCapabilities,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
)
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState
from webrtc.exceptions import CommandError

if TYPE_CHECKING:
    from omlmedia.monitor import MonitorMode, MonitorService
    from webrtc.channel import PeerMedia

__all__ = [
    "ANSWER_WITHIN",
    "HEADER",
    "MAX_SKEW",
    "USER",
    "LegPeer",
    "MonitorGate",
    "MonitorLegs",
    "MonitorRequest",
    "RemoteMonitoring",
    "internal_calls",
    "sign_monitor",
    "verify_monitor",
]

logger = logging.getLogger(__name__)

Samples = npt.NDArray[np.int16]

HEADER: Final = "X-Oml-Monitor"
"""The signed header of a monitor leg's INVITE and of its mode changes (UPDATE)."""
USER: Final = "monitor"
"""The Request-URI user of a monitor leg."""
MAX_SKEW: Final = 30.0
"""Seconds a signature stays valid (the nodes' clocks must agree within it)."""
ANSWER_WITHIN: Final = 5.0
"""Seconds S waits for the call's node to answer a monitor leg before refusing."""
_CODECS: Final = ("pcmu", "pcma", "telephone-event")
"""What a monitor leg offers: G.711 (no Opus transcoding on either node for the leg)."""
_REFUSALS: Final = {
    404: ("unknown-call", "node {node} carries no such call (not answered yet, or ended)"),
    486: ("monitored", "another supervisor is monitoring this call"),
    403: ("forbidden", "node {node} refused the monitor leg"),
}


@dataclass(frozen=True, slots=True)
class MonitorRequest:
    """What a monitor leg asks of the call's node."""

    call_id: str
    """The call as the cluster's ACD knows it (the caller's call id on its node)."""
    mode: str
    supervisor: str
    node: str
    """The supervisor's node (the leg's sender)."""


_NAMES: Final = ("mode", "supervisor", "node")
_DOMAIN: Final = ("monitor",)
"""The signature's domain tag: an offer's signature (`omlmedia.crossnode`) never passes for a
monitor's, nor the reverse."""


def sign_monitor(secret: bytes, req: MonitorRequest, now: float, nonce: str = "") -> str:
    """The `HEADER` value asking for `req`, signed at `now` (wall clock)."""
    fields = list(zip(_NAMES, (req.mode, req.supervisor, req.node), strict=True))
    return signed_header.sign(secret, _DOMAIN, req.call_id, fields, now, nonce)


def verify_monitor(secret: bytes, value: str, now: float) -> tuple[MonitorRequest, str] | None:
    """The request and its nonce when `value` is a valid, fresh signature; None otherwise."""
    checked = signed_header.verify(secret, _DOMAIN, value, _NAMES, now, MAX_SKEW)
    if checked is None:
        return None
    call_id, params, nonce = checked
    req = MonitorRequest(call_id=call_id, **params)
    if req.mode not in ("listen", "whisper", "barge") or not req.call_id:
        return None
    return req, nonce


def _signed_at(value: str) -> int:
    """When a (verified) `HEADER` value was signed: its ``ts``, whole seconds; 0 without."""
    for part in value.split(";")[1:]:
        key, _, item = part.partition("=")
        if key.strip() == "ts" and item.strip().isdigit():
            return int(item.strip())
    return 0


class MonitorGate:
    """The UA's ``internal_source``: a monitor leg's INVITE from a node's exact SIP address,
    signed by that node, fresh and unseen, is admitted as the trunk ``node:<name>``; every other
    request goes to `fallback` (the cross-node offers' `omlmedia.crossnode.InternalGate`)."""

    def __init__(
        self,
        secret: bytes,
        nodes: Mapping[str, Endpoint],
        own: str,
        fallback: Callable[[Request, Endpoint], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        linked: Callable[[Endpoint], bool] | None = None,
    ) -> None:
        self.secret = secret
        self.fallback = fallback
        self.clock = clock
        self.sources = signed_header.NodeSources(nodes, own, linked)
        """With the encrypted internal leg (`omlmedia.crossnode`, `linked`): a leg is admitted
        only over the nodes' private TLS link, from the host of the node its header names."""
        self._nonces = signed_header.Nonces(2 * MAX_SKEW)
        self.admitted = 0
        self.refused = 0

    def __call__(self, request: Request, source: Endpoint) -> str | None:
        value = request.headers.get(HEADER) if request.method == "INVITE" else None
        if value is None:
            return self.fallback(request, source) if self.fallback is not None else None
        sender = self.sources.sender(source)
        if sender is None:
            return None
        now = self.clock()
        checked = verify_monitor(self.secret, value, now)
        name = self.sources.named(sender, checked[0].node, source) if checked else None
        if checked is None or name is None or not self._nonces.fresh(checked[1], now):
            self.refused += 1
            event(
                logger,
                "monitor-leg-refused",
                level=logging.WARNING,
                call_id=request.call_id,
                node=name or sender or None,
                source=str(source),
            )
            return None
        self.admitted += 1
        return TRUNK_PREFIX + name


class LegPeer:
    """A monitor leg's side of a `MonitoredCall` on the call's node, in place of a supervisor's
    WebRTC channel: the leg's frames (the supervisor's voice, as they arrive) go into the room,
    and each mix the room pushes (`kick`) is sent on the leg at once."""

    def __init__(self, port: PcmPort) -> None:
        self.port = port
        self._source: Callable[[], Samples | None] | None = None
        self._sink: Callable[[Samples], None] | None = None
        port.on_frame = self._frame

    def _frame(self, frame: Samples) -> None:
        sink = self._sink
        if sink is not None:
            sink(frame)

    def attach(
        self,
        source: Callable[[], Samples | None],
        sink: Callable[[Samples], None],
        *,
        rate: int,
        relay: bool = True,
    ) -> None:
        if rate != self.port.rate:
            raise ValueError(f"the monitor leg runs at {self.port.rate} Hz, not {rate}")
        self._source, self._sink = source, sink

    def kick(self) -> None:
        source = self._source
        frame = source() if source is not None else None
        if frame is not None:
            self.port.write(frame)

    def detach(self) -> None:
        self._source = self._sink = None


@dataclass(eq=False)
class RemoteMonitoring:
    """S's side of one monitor leg: the supervisor's channel relayed to the call's node. It has
    what `omlmedia.monitor` needs of a monitor (`call_id`, `agent`, `mode`, `set_mode`,
    `stop`)."""

    legs: MonitorLegs
    call_id: str
    agent: str
    node: str
    queue: str
    supervisor: str
    mode: MonitorMode
    channel: PeerMedia
    on_end: Callable[[], None]
    """Called once when the call's node ends the leg (the call ended there)."""
    leg: RtpLeg | None = None
    offer: bytes = b""
    call: Call | None = None
    port: PcmPort | None = None
    answer: asyncio.Future[Response] | None = None
    ended: bool = False
    arrived: deque[Samples] = field(default_factory=lambda: deque(maxlen=3))

    def set_mode(self, mode: MonitorMode) -> None:
        """Ask the call's node for `mode` (a signed UPDATE on the leg)."""
        self.mode = mode
        self.legs.update(self)

    def stop(self, *, restore: bool = True) -> None:
        """Detach the supervisor's channel and end the leg (BYE)."""
        self.legs.finish(self, hang_up=True)


@dataclass(eq=False)
class _Inbound:
    """N's side of one monitor leg: the leg and the call it monitors."""

    call: Call
    leg: RtpLeg
    port: PcmPort
    call_id: str
    """The monitored call's id in this node's desk."""
    sdp: bytes
    ended: bool = False


class MonitorLegs(InternalLegs):
    """Both sides of monitor legs on this node (module docstring): `open` places one for a
    supervisor here (S), `take` answers one for a call carried here (N). It owns those SIP calls
    (the router gives it their events)."""

    def __init__(
        self,
        end: ClusterEnd,
        *,
        pool: RtpSocketPool,
        media_host: str,
        monitor: MonitorService,
        answer_within: float = ANSWER_WITHIN,
    ) -> None:
        super().__init__(end, pool=pool, media_host=media_host)
        self.monitor = monitor
        self.answer_within = answer_within
        self._out: dict[str, RemoteMonitoring] = {}
        """S: the legs placed, by their SIP call id."""
        self._in: dict[str, _Inbound] = {}
        """N: the legs answered, by their SIP call id."""
        self._nonces = signed_header.Nonces(2 * MAX_SKEW)
        monitor.remote = self

    # -- S: a supervisor here, the call on another node ----------------------------------------

    async def open(
        self,
        *,
        call_id: str,
        agent: str,
        node: str,
        queue: str,
        supervisor: str,
        mode: MonitorMode,
        channel: PeerMedia,
        on_end: Callable[[], None],
    ) -> RemoteMonitoring:
        """Place a monitor leg to `node` for `call_id` and relay it to `channel` once answered.
        Raises `CommandError` naming the node when the leg is refused or not answered."""
        where = self.nodes.get(node)
        if where is None or node == self.node:
            raise CommandError(
                "node-unreachable",
                f"node {node} is not a node of this cluster",
                details={"node": node},
            )
        try:
            leg = RtpLeg(await self.pool.acquire())
        except (PortsExhausted, OSError):
            raise CommandError("no-ports", "no media port is free") from None
        codecs = tuple(c for c in CAPABILITIES.codecs if c.encoding_name.lower() in _CODECS)
        offer = bytes(
            create_offer(
                MediaCapabilities(codecs, rtcp_mux=False),
                secrets.randbelow(2**31) + 1,
                0,
                self.media_host,
                leg.port,
                crypto=offer_crypto() if self.srtp else (),
            )
        )
        mon = RemoteMonitoring(
            self, call_id, agent, node, queue, supervisor, mode, channel, on_end, leg, offer
        )
        mon.answer = asyncio.get_running_loop().create_future()
        signed = sign_monitor(self.secret, self._request(mon), self.clock())
        mon.call = place_internal(
            self.service, where, USER, USER, self.media_host, offer, (HEADER, signed)
        )
        mon.call.app = self
        self._out[mon.call.call_id] = mon
        event(logger, "monitor-leg-placed", call_id=call_id, node=node, supervisor=supervisor)
        details = {"node": node, "agent": agent}
        try:
            async with asyncio.timeout(self.answer_within):
                response = await mon.answer
        except TimeoutError:
            self.finish(mon, hang_up=True)
            raise CommandError(
                "node-unreachable",
                f"node {node}, which carries the call, did not answer",
                details=details,
            ) from None
        if response.status >= 300:
            self.finish(mon, hang_up=False)
            code, reason = _REFUSALS.get(
                response.status, ("cannot-monitor", "node {node} could not monitor the call")
            )
            raise CommandError(code, reason.format(node=node), details=details)
        try:
            apply_answer(leg, offer, response.body, CAPABILITIES.codecs)
            port = mon.port = PcmPort(leg, port_rate(leg))
        except (SDPError, OfferAnswerError, ValueError) as exc:
            self.finish(mon, hang_up=True)
            raise CommandError("cannot-monitor", f"bad answer from node {node}: {exc}") from None
        arrived = mon.arrived

        def on_frame(frame: Samples) -> None:
            arrived.append(frame)
            channel.kick()

        port.on_frame = on_frame
        channel.attach(
            lambda: arrived.popleft() if arrived else None, port.write, rate=port.rate, relay=True
        )
        return mon

    def _request(self, mon: RemoteMonitoring) -> MonitorRequest:
        return MonitorRequest(mon.call_id, mon.mode.value, mon.supervisor, self.node)

    def update(self, mon: RemoteMonitoring) -> None:
        """Send `mon`'s mode to its node (UPDATE with a new signed header)."""
        call = mon.call
        if call is None or mon.ended:
            return
        signed = sign_monitor(self.secret, self._request(mon), self.clock())
        service = self.service
        service.act(
            lambda now: service.ua.send_in_dialog(call, "UPDATE", now, headers=((HEADER, signed),))
        )

    def finish(self, mon: RemoteMonitoring, *, hang_up: bool) -> None:
        """End `mon`: the channel detached, the leg hung up (when `hang_up`) and released."""
        if mon.ended:
            return
        mon.ended = True
        if mon.answer is not None and not mon.answer.done():
            mon.answer.cancel()
        if mon.port is not None:
            mon.port.on_frame = None
            mon.port.close()
            mon.channel.detach()
        call = mon.call
        if call is not None:
            self._out.pop(call.call_id, None)
            if hang_up and call.state is not CallState.ENDED:
                service = self.service
                service.act(lambda now: service.ua.hangup(call, now))
        if mon.leg is not None:
            self._release(mon.leg)
            mon.leg = None

    # -- N: the call here, the supervisor on another node --------------------------------------

    def take(self, call: Call) -> None:
        """A monitor leg the gate admitted: answer it into the call's room (or refuse)."""
        checked = verify_monitor(self.secret, call.invite.headers.get(HEADER) or "", self.clock())
        if checked is None:  # the gate checked it a moment ago: only a clock jump gets here
            self._reject(call, 403)
            return
        call.app = self
        self._spawn(self._take(call, checked[0]))

    async def _take(self, call: Call, req: MonitorRequest) -> None:
        from omlmedia.monitor import MonitorMode

        monitor = self.monitor
        found = monitor.carried(req.call_id)
        if found is None:
            self._reject(call, 404)
            return
        signed_at = _signed_at(call.invite.headers.get(HEADER) or "")
        if monitor.is_monitored(found.call_id, by=(req.supervisor, req.node, signed_at)):
            self._reject(call, 486)
            return
        if self.srtp and b"a=crypto:" not in (call.remote_sdp or b""):
            self._reject(call, 488)  # the encrypted internal leg: SRTP or nothing
            return
        try:
            offer = SessionDescription.parse(call.remote_sdp)
            leg = RtpLeg(await self.pool.acquire())
        except SDPError:
            self._reject(call, 488)
            return
        except (PortsExhausted, OSError):
            self._reject(call, 503)
            return
        audio = found.audio
        if call.state is not CallState.OFFERED or audio is None:
            self._release(leg)
            self._reject(call, 404)
            return
        try:
            answer = answer_on_leg(
                leg,
                offer,
                self.media_host,
                session_id=secrets.randbelow(2**31) + 1,
                capabilities=MediaCapabilities(
                    tuple(c for c in CAPABILITIES.codecs if c.encoding_name.lower() in _CODECS),
                    rtcp_mux=False,
                ),
            )
            port = PcmPort(leg, audio.rate)
        except (OfferAnswerError, ValueError):
            self._release(leg)
            self._reject(call, 488)
            return
        inbound = _Inbound(call, leg, port, found.call_id, bytes(answer.description))
        try:
            monitor.attach_inbound(
                found,
                LegPeer(port),
                MonitorMode(req.mode),
                supervisor=req.supervisor,
                node=req.node,
                end=lambda: self._end_inbound(inbound, hang_up=True),
                signed_at=signed_at,
            )
        except CommandError as exc:
            self._release(leg)
            self._reject(call, 486 if exc.code == "monitored" else 404)
            return
        self._in[call.call_id] = inbound
        body = inbound.sdp
        service = self.service
        service.act(lambda now: service.ua.answer(call, body, now))
        event(
            logger,
            "monitor-leg-answered",
            call_id=found.call_id,
            supervisor=req.supervisor,
            node=req.node,
            mode=req.mode,
            srtp=leg.srtp is not None,
        )

    def _end_inbound(self, inbound: _Inbound, *, hang_up: bool) -> None:
        if inbound.ended:
            return
        inbound.ended = True
        self._in.pop(inbound.call.call_id, None)
        inbound.port.on_frame = None
        inbound.port.close()
        self._release(inbound.leg)
        call = inbound.call
        if hang_up and call.state is not CallState.ENDED:
            service = self.service
            service.act(lambda now: service.ua.hangup(call, now))

    def _reject(self, call: Call, status: int) -> None:
        service = self.service
        event(logger, "monitor-leg-rejected", call_id=call.call_id, status=status)
        service.act(lambda now: service.ua.reject(call, status, now))

    # -- the legs' SIP events (their owner) ------------------------------------------------------

    def on_response(self, call: Call, response: Response) -> None:
        mon = self._out.get(call.call_id)
        if mon is None or response.status < 200 or mon.answer is None or mon.answer.done():
            return
        mon.answer.set_result(response)

    def on_ended(self, call: Call, cause: str) -> None:
        mon = self._out.get(call.call_id)
        if mon is not None:  # S: the call's node ended the leg (the call ended there)
            answered = mon.answer is not None and mon.answer.done() and not mon.answer.cancelled()
            self.finish(mon, hang_up=False)
            if answered:
                mon.on_end()
            return
        inbound = self._in.get(call.call_id)
        if inbound is not None:  # N: the supervisor stopped or went away
            self.monitor.stop_inbound(inbound.call_id, "stopped")
            self._end_inbound(inbound, hang_up=False)

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """N: a mode change (UPDATE, or a re-INVITE, with a new signed header)."""
        from omlmedia.monitor import MonitorMode

        service = self.service
        inbound = self._in.get(call.call_id)
        value = request.headers.get(HEADER)
        now = self.clock()
        checked = verify_monitor(self.secret, value, now) if value is not None else None
        if inbound is None:
            service.act(lambda t: service.ua.respond(call, txn, 481, t))
            return
        if checked is not None and checked[1] and self._nonces.fresh(checked[1], now):
            if self.monitor.set_inbound_mode(inbound.call_id, MonitorMode(checked[0].mode)):
                body = inbound.sdp if request.body else b""
                kind = "application/sdp" if body else None
                service.act(lambda t: service.ua.respond(call, txn, 200, t, body, kind))
                return
        service.act(lambda t: service.ua.respond(call, txn, 403, t))

    def on_dtmf(self, call: Call, digit: str) -> None:
        """Digits on a monitor leg mean nothing."""

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """No REFER is sent on a monitor leg."""

    # -- both --------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                logger.exception("a monitor leg failed")

        super()._spawn(run())

    async def close(self) -> None:
        """End every leg (shutdown)."""
        self._cancel_tasks()
        for mon in list(self._out.values()):
            self.finish(mon, hang_up=True)
        for inbound in list(self._in.values()):
            self.monitor.stop_inbound(inbound.call_id, "shutdown")
            self._end_inbound(inbound, hang_up=True)


def internal_calls(legs: MonitorLegs, fallback: Callable[[Call], None]) -> Callable[[Call], None]:
    """The router's ``internal`` hook: a monitor leg to `legs`, any other internal call (another
    node's offer) to `fallback` (`omlmedia.crossnode.CrossNode.take_internal`)."""

    def take(call: Call) -> None:
        if HEADER in call.invite.headers:
            legs.take(call)
        else:
            fallback(call)

    return take
