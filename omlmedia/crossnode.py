"""Cross-node calls: a caller on this node offered to an agent whose page is on another node.

Theory of operation. Every node of a cluster (``[cluster] node``, ``[cluster.nodes.<name>]``)
publishes in Redis which agents' pages it holds (`omlmedia.cluster.AgentLocator`). When node A
must ring agent X and X is not logged in to A, A reads X's node, B, and places an internal SIP
leg to B: an INVITE to ``sip:X@<B's address>`` over UDP from A's own SIP port, carrying

    X-Oml-Offer: <call-id>;queue=<q>;caller=<number>;node=A;ts=<unix>;nonce=<hex>;sig=<hex>

where ``sig`` is HMAC-SHA256, keyed with the cluster's shared secret (``[cluster]
secret_file``), over the agent, every field and the node name. A is a B2BUA for that leg
(`omlmedia.b2bua`): the INVITE offers exactly the caller's codecs, so B answers with one of them
and A's relay is a passthrough (no transcoding); B's ringing, answer and refusal are relayed to
the caller, a BYE on either side ends both, re-INVITEs change one side only.

B admits the INVITE only when it comes from a configured node's exact SIP address (host and
port) **and** its signature verifies, fresh (``MAX_SKEW``) and never seen before (a replayed
nonce is refused): `InternalGate`, the UA's ``internal_source``. Anything else goes through the
ordinary checks: an unknown source gets 403. An admitted internal call reaches no route: the
router gives it to `CrossNode.take_internal`, which rings the agent as a direct call
(`omlmedia.desk.Desk.offer`) with the caller's number and the queue of the header; from then on
it is an ordinary call of B's desk (answer, hold, transfer, hang-up). B's answer is the leg's
200, the agent's decline 486, no answer 480 (ring timeout): A maps those to an `Outcome`
(`outcome_of`), the answer the shared ACD needs (offer answered, rejected, timed out).

`CrossNode.offer_remote(call, agent, node)` is the narrow interface: it offers a caller whose
INVITE is still unanswered (a direct route's caller) and returns the outcome. Today the agent
desk's direct ``agent`` route uses it (`take_remote`) when the agent is not logged in here.
A queue's caller (answered already, its leg playing music) is not handled here yet: that needs
the ACD's leg handed over to the relay, which comes with the shared ACD.

The leg in clear or encrypted. Without ``[cluster] tls_ca`` the internal leg is SIP over UDP
from the node's SIP port and RTP in clear: for nodes on one host or a private network nobody
else reads (`omlmedia.config.cluster_warnings` warns when the nodes are on several hosts). With
``tls_cert``, ``tls_key`` and ``tls_ca`` it is SIP over mutual TLS and SDES-SRTP: every node
listens on its ``[cluster.nodes.<name>] sip`` address with a private TLS listener
(`sip.transport.Internal`) that requires a certificate issued by the cluster's CA, and presents
its own to the nodes it connects to; Via and Contact name that listener, so in-dialog requests
come back over the private link. The gate then admits only INVITEs that arrived over that link
(`SipTransports.is_internal`) from the host of the node the signed header names; a node's
INVITE over UDP is refused (counted). The offering node offers SRTP (RTP/SAVP with SDES keys,
RFC 4568: the keys travel inside the TLS) and the receiving node refuses an internal offer
without keys (488). SRTP is applied per leg as for trunks: the relay decrypts and encrypts, and
stays a codec passthrough (no transcoding); the kernel path, which forwards packets unchanged,
does not take a bridge with an SRTP leg (`omlmedia.bridges`).

A queue's offer and the ACD's replica. The shared ACD's offer (`omlmedia.acd_cluster`) carries
``pos``, the position in the ACD's input stream of the input that made it (the offering node had
applied it). B rings its agent only once its own replica of the ACD has applied that input
(`REPLICA_WAIT` at most, else 480): the agent's states that input and those before it produced
(Ready, then Ringing) have reached the page by then, so an older state can never show after the
desk rang (Ringing, Ready, Ringing), and an offer B's replica already saw withdrawn is refused
(480) instead of rung. An agent whose page goes away while such an offer rings declines it at
once, as a local agent does (`omlmedia.desk.Desk.agent_gone`: the engine's offer rejected, then
486 with ``Reason: ...;text="agent-gone"``).

Recording pauses. B records a queue's call of A (the campaign's recording) and names the file in
its 200 OK; each pause or resume of that recording (PCI) sends A an in-dialog UPDATE carrying
``X-Oml-Gaps: <A's call-id>;file=<segment>;gaps=<start-end,...>;ts;nonce;sig`` (signed as the
offers, under its own domain; `recording.format_gaps`), the whole list so far, so a later one
supersedes a lost one. A takes it only on the leg of that call whose 200 named that file, fresh
and unseen, strictly parsed and bounded (`RemoteGaps`); when the leg ends the pauses go to the
caller's record as a local recording's do (``recording`` legs with ``gaps`` and ``file``), a
pause still running then closed at A's time.

Limits: nodes must not be listed as trunk sources of each other (a trunk's address would be
trusted without signature).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from media.leg import RtpLeg
from media.ports import RtpSocketPool
from omlmedia import signed_header
from omlmedia.cluster import AgentLocator
from omlmedia.config import Trunk
from omlmedia.logs import event
from omlmedia.recording import format_gaps, parse_gaps
from omlmedia.targets import Refusal
from queueing.engine import AcdEngine
from queueing.events import AgentState
from sip.endpoint import Endpoint
from sip.message import URI, Address, Request
from sip.sdp import SDPError, SessionDescription
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

if TYPE_CHECKING:
    from omlmedia.acd_cluster import SharedEngine
    from omlmedia.b2bua import B2bua
    from omlmedia.desk import AgentCall, Desk

__all__ = [
    "GAPS_HEADER",
    "HEADER",
    "MAX_SKEW",
    "REPLICA_WAIT",
    "TRUNK_PREFIX",
    "CrossNode",
    "InternalGate",
    "OfferHeader",
    "Outcome",
    "RemoteGaps",
    "outcome_of",
    "place_internal",
    "sign_gaps",
    "sign_offer",
    "verify_gaps",
    "verify_offer",
]

logger = logging.getLogger(__name__)

HEADER: Final = "X-Oml-Offer"
"""The signed header of an internal INVITE."""

TRUNK_PREFIX: Final = "node:"
"""The trunk name of an internal call (followed by the node that placed it)."""

MAX_SKEW: Final = 30.0
"""Seconds an offer's signature stays valid (the nodes' clocks must agree within it)."""

REPLICA_WAIT: Final = 5.0
"""Seconds the agent's node waits for its replica of the ACD to reach a queue offer's input
before it refuses the offer (480): its follower is that far behind or cut off from Redis."""

GAPS_HEADER: Final = "X-Oml-Gaps"
"""The signed header of the agent's node's UPDATE telling the caller's node the pauses of the
segment it records."""

MAX_GAPS_HEADER: Final = 4096
"""The longest `GAPS_HEADER` value taken (100 pauses of 7-digit seconds fit)."""

_POSITION = re.compile(r"\d{1,20}-\d{1,20}")
"""A Redis stream entry id: the ACD input stream's position of a queue offer."""


class Outcome(Enum):
    """What became of an offer to an agent on another node."""

    ANSWERED = "answered"
    REJECTED = "rejected"
    """The agent declined (486, 603, 600)."""
    TIMEOUT = "timeout"
    """Nobody answered (480 from the agent's ring timeout, 408) or the agent is not there."""
    CANCELLED = "cancelled"
    """The caller left before the agent answered (487)."""
    FAILED = "failed"
    """Anything else: the node refused or could not be reached."""


def outcome_of(status: int) -> Outcome:
    """The outcome of an internal leg's final status."""
    if 200 <= status < 300:
        return Outcome.ANSWERED
    if status in (486, 600, 603):
        return Outcome.REJECTED
    if status in (408, 480):
        return Outcome.TIMEOUT
    if status == 487:
        return Outcome.CANCELLED
    return Outcome.FAILED


@dataclass(frozen=True, slots=True)
class OfferHeader:
    """What an internal INVITE says about its caller."""

    call_id: str
    """The caller's call on the offering node."""
    queue: str
    caller: str
    node: str
    """The offering node."""
    campaign: str = ""
    """The campaign the caller came in by (a queue offer of the cluster's ACD): the agent's
    page gets its CRM address and dispositions."""
    position: str = ""
    """The ACD input stream's entry whose decision this offer is (a queue offer of the
    cluster's ACD, ``pos``): the agent's node rings once its replica has applied it."""


_NAMES: Final = ("queue", "caller", "node", "campaign")
_WITH_POSITION: Final = (*_NAMES, "pos")


def sign_offer(secret: bytes, agent: str, offer: OfferHeader, now: float, nonce: str = "") -> str:
    """The `HEADER` value offering `offer` to `agent`, signed at `now` (wall clock); ``pos``
    only with a `position` (an offer without one is what it was before)."""
    fields = list(zip(_NAMES, (offer.queue, offer.caller, offer.node, offer.campaign), strict=True))
    if offer.position:
        fields.append(("pos", offer.position))
    return signed_header.sign(secret, (agent,), offer.call_id, fields, now, nonce)


def verify_offer(
    secret: bytes, agent: str, value: str, now: float
) -> tuple[OfferHeader, str] | None:
    """The offer and its nonce when `value` is a valid, fresh signature for `agent` (and its
    ``pos``, if any, a stream position)."""
    names = _WITH_POSITION if ";pos=" in value else _NAMES
    checked = signed_header.verify(secret, (agent,), value, names, now, MAX_SKEW)
    if checked is None:
        return None
    call_id, params, nonce = checked
    position = params.pop("pos", "")
    if position and _POSITION.fullmatch(position) is None:
        return None
    return OfferHeader(call_id=call_id, position=position, **params), nonce


def _stream_key(position: str) -> tuple[int, int]:
    """A stream entry id's order (``ms-seq``)."""
    ms, _, seq = position.partition("-")
    return int(ms or 0), int(seq or 0)


_GAPS_DOMAIN: Final = ("gaps",)
_GAPS_NAMES: Final = ("file", "gaps")


def sign_gaps(
    secret: bytes,
    call_id: str,
    file: str,
    gaps: list[tuple[float, float | None]],
    now: float,
    nonce: str = "",
) -> str:
    """The `GAPS_HEADER` value: the pauses `gaps` of `file`, the segment recorded for the
    caller's call `call_id` (on its node), signed at `now`."""
    fields = [("file", file), ("gaps", format_gaps(gaps))]
    return signed_header.sign(secret, _GAPS_DOMAIN, call_id, fields, now, nonce)


def verify_gaps(
    secret: bytes, value: str, now: float
) -> tuple[str, str, list[tuple[float, float | None]], str] | None:
    """The call id, the file, the pauses and the nonce when `value` is a valid, fresh
    `GAPS_HEADER` of at most `MAX_GAPS_HEADER` characters with well-formed pauses."""
    if len(value) > MAX_GAPS_HEADER:
        return None
    checked = signed_header.verify(secret, _GAPS_DOMAIN, value, _GAPS_NAMES, now, MAX_SKEW)
    if checked is None:
        return None
    call_id, params, nonce = checked
    gaps = parse_gaps(params["gaps"])
    if gaps is None:
        return None
    return call_id, params["file"], gaps, nonce


@dataclass
class _Gaps:
    gaps: list[tuple[float, float | None]]
    at: float
    """When they arrived (monotonic): a pause still running is closed that long after."""


class RemoteGaps:
    """The caller's node's side of the pauses of segments recorded on other nodes, by internal
    leg (`omlmedia.acd_cluster.RemoteOffers` holds one): `answer` takes a leg's UPDATE,
    `pop` gives its pauses when it ends."""

    MAX_LEGS: Final = 10_000

    def __init__(
        self,
        secret: bytes,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret = secret
        self.clock = clock
        self.monotonic = monotonic
        self._legs: dict[str, _Gaps] = {}
        self._nonces = signed_header.Nonces(2 * MAX_SKEW)
        self.refused = 0

    def take(self, leg: str, call_id: str, file: str, value: str) -> bool:
        """Keep the pauses `value` gives for internal leg `leg`, when it is valid, fresh and
        unseen and names the caller's `call_id` and the segment `file` that leg's 200 named."""
        checked = verify_gaps(self.secret, value, self.clock())
        if (
            checked is None
            or not file
            or checked[:2] != (call_id, file)
            or not self._nonces.fresh(checked[3], self.clock())
        ):
            self.refused += 1
            event(logger, "gaps-refused", level=logging.WARNING, call_id=call_id or None, leg=leg)
            return False
        self._legs[leg] = _Gaps(checked[2], self.monotonic())
        while len(self._legs) > self.MAX_LEGS:
            self._legs.pop(next(iter(self._legs)))
        return True

    def answer(
        self,
        service: SipService,
        call: Call,
        txn: ServerTransaction,
        request: Request,
        call_id: str,
        file: str,
    ) -> bool:
        """Answer `request` on internal leg `call` when it carries `GAPS_HEADER` (200 taken,
        403 refused; `take`) and say so; False: not such a request."""
        value = request.headers.get(GAPS_HEADER)
        if value is None:
            return False
        status = 200 if self.take(call.call_id, call_id, file, value) else 403
        service.act(lambda now: service.ua.respond(call, txn, status, now))
        return True

    def pop(self, leg: str) -> list[dict[str, float]]:
        """The pauses of `leg`, which ended (forgotten here): as a record's ``gaps``, a pause
        still running closed now."""
        kept = self._legs.pop(leg, None)
        if kept is None:
            return []
        elapsed = self.monotonic() - kept.at
        return [
            {"start": start, "end": end if end is not None else round(start + elapsed, 3)}
            for start, end in kept.gaps
        ]


def place_internal(
    service: SipService,
    where: Endpoint,
    user: str,
    from_user: str,
    media_host: str,
    body: bytes,
    header: tuple[str, str],
) -> Call:
    """Send an internal INVITE to ``sip:<user>@`` the node at `where`, from ``<from_user>@``
    `media_host`, offering `body` and carrying the signed `header` (name, value): the call."""
    host = where.host if ":" not in where.host else f"[{where.host}]"
    placed: list[Call] = []

    def dial(now: float) -> None:
        placed.append(
            service.ua.send_invite(
                destination=where,
                request_uri=URI.parse(f"sip:{user}@{host}:{where.port}"),
                from_address=Address.parse(f"<sip:{from_user}@{media_host}>"),
                to_address=Address.parse(f"<sip:{user}@{host}:{where.port}>"),
                body=body,
                now=now,
                headers=(header,),
            )
        )

    service.act(dial)
    return placed[0]


@dataclass(frozen=True)
class ClusterEnd:
    """This node's end of the internal legs, what each side of them is given (`CrossNode`,
    `InternalLegs`): this node's name, the cluster's secret and nodes (their addresses for the
    internal leg), SIP, the clock, and whether the leg is encrypted."""

    node: str
    secret: bytes
    nodes: Mapping[str, Endpoint]
    service: SipService
    clock: Callable[[], float] = time.time
    tls: bool = False
    """The internal leg is encrypted (module docstring): SIP over the nodes' TLS listeners
    (`nodes` are their addresses), SDES-SRTP media both ways."""


class OnTheCluster:
    """A side of the internal legs: what it keeps of its `ClusterEnd`, and the background tasks
    it cancels at close."""

    def __init__(self, end: ClusterEnd) -> None:
        self.node = end.node
        self.tls = end.tls
        """The internal leg is encrypted (`ClusterEnd.tls`)."""
        self.secret = end.secret
        self.nodes = dict(end.nodes)
        self.service = end.service
        self.clock = end.clock
        self._tasks: set[asyncio.Task[object]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class InternalLegs(OnTheCluster):
    """What a node's end of internal calls with media has (the caller's node's offers,
    `omlmedia.acd_cluster.RemoteOffers`; monitor legs, `omlmedia.monitor_remote.MonitorLegs`):
    its `ClusterEnd`, the RTP ports and address to offer."""

    def __init__(self, end: ClusterEnd, *, pool: RtpSocketPool, media_host: str) -> None:
        super().__init__(end)
        self.pool = pool
        self.media_host = media_host

    @property
    def srtp(self) -> bool:
        """The internal leg is encrypted (module docstring): offer SDES-SRTP on it."""
        return self.tls

    def _release(self, leg: RtpLeg) -> None:
        leg.close()
        self.pool.release(leg.pair)


class InternalGate:
    """The UA's ``internal_source``: admits an INVITE from another node (its exact SIP address
    and a fresh, unseen, valid signature), as the trunk ``node:<name>``; None otherwise (the
    request then goes through the ordinary source checks)."""

    def __init__(
        self,
        secret: bytes,
        nodes: Mapping[str, Endpoint],
        own: str,
        clock: Callable[[], float] = time.time,
        *,
        linked: Callable[[Endpoint], bool] | None = None,
    ) -> None:
        self.secret = secret
        self.clock = clock
        self.sources = signed_header.NodeSources(nodes, own, linked)
        """With the encrypted leg (`linked`): whether a source is on the internal TLS link (its
        certificate chained to the cluster's CA); a node's INVITE from anywhere else is refused.
        None: the leg in clear, a node known by its exact UDP address."""
        self._nonces = signed_header.Nonces(2 * MAX_SKEW)
        self.admitted = 0
        self.refused = 0
        """INVITEs from a node's address whose signature was missing, wrong, stale or replayed,
        or, with the encrypted leg, that did not come over the internal TLS link."""

    def __call__(self, request: Request, source: Endpoint) -> str | None:
        if request.method != "INVITE":
            return None
        value = request.headers.get(HEADER)
        sender = self.sources.sender(source)
        if sender is None:
            if self.sources.linked is not None and value is not None:
                if self.sources.is_node_host(source.host):  # a node's INVITE in clear
                    self._refuse(request, source, "", "not-over-tls")
            return None
        now = self.clock()
        checked = None
        if value is not None:
            checked = verify_offer(self.secret, request.uri.user or "", value, now)
        name = self.sources.named(sender, checked[0].node, source) if checked else None
        if checked is None or name is None or not self._nonces.fresh(checked[1], now):
            self._refuse(request, source, name or sender, "signature")
            return None
        self.admitted += 1
        return TRUNK_PREFIX + name

    def _refuse(self, request: Request, source: Endpoint, name: str, why: str) -> None:
        self.refused += 1
        event(
            logger,
            "internal-refused",
            level=logging.WARNING,
            call_id=request.call_id,
            node=name or None,
            source=str(source),
            reason=why,
        )


@dataclass
class CrossNodeStats:
    """What the cross-node side did, for the status."""

    offered: int = 0
    """Internal legs placed to other nodes."""
    received: int = 0
    """Internal calls taken from other nodes."""
    answered: int = 0
    not_answered: int = 0


class CrossNode(OnTheCluster):
    """Both halves of cross-node calls on this node: placing the internal leg for a local caller
    (`offer_remote`), and ringing a local agent for another node's caller (`take_internal`);
    with the publication of where this node's agents are."""

    def __init__(
        self, end: ClusterEnd, *, b2bua: B2bua, desk: Desk, locator: AgentLocator | None
    ) -> None:
        super().__init__(end)
        self.b2bua = b2bua
        self.desk = desk
        self.locator = locator
        self.stats = CrossNodeStats()
        desk.remote = self.take_remote
        desk.on_presence.append(self._presence)
        desk.on_recording.append(self._recording_changed)

    # -- this node's agents ------------------------------------------------------------------

    def _presence(self, agent: str, here: bool) -> None:
        if self.locator is None:
            return
        self._spawn(self.locator.publish([agent]) if here else self.locator.forget(agent))

    async def run(self) -> None:
        """Keep this node's agents published (every third of the TTL) until cancelled."""
        if self.locator is None:
            return
        while True:
            await self.locator.publish(sorted(self.desk.logged_in))
            await asyncio.sleep(self.locator.ttl / 3)

    # -- a caller here, the agent elsewhere --------------------------------------------------

    def take_remote(self, call: Call, agent: str) -> Refusal | None:
        """The desk's hook for a direct call to `agent`, who is not logged in here: find its
        node and offer the call there (480 when no other node has it)."""
        if self.locator is None:
            return Refusal(480, "agent-unavailable", target=f"agent:{agent}")
        self._spawn(self._route_remote(call, agent))
        return None

    async def _route_remote(self, call: Call, agent: str) -> None:
        assert self.locator is not None
        node = await self.locator.node_of(agent)
        service = self.service
        if call.state is not CallState.OFFERED:
            return
        if node is None or node == self.node or node not in self.nodes:
            event(logger, "call-rejected", call_id=call.call_id, status=480, reason="no-agent")
            service.act(lambda now: service.ua.reject(call, 480, now))
            return
        await self.offer_remote(call, agent, node)

    async def offer_remote(self, call: Call, agent: str, node: str, *, queue: str = "") -> Outcome:
        """Offer `call` (an unanswered INVITE with an SDP offer) to `agent` on `node`: an internal
        leg bridged to the caller, passthrough; returns when the agent answered, declined, did
        not answer, or the caller left. The bridge then lives on in the B2BUA."""
        where = self.nodes.get(node)
        if where is None or node == self.node:
            raise ValueError(f"unknown node {node!r}")
        try:
            offer = SessionDescription.parse(call.remote_sdp) if call.remote_sdp else None
        except SDPError:
            offer = None
        audio = (
            None if offer is None else next((m for m in offer.media if m.media == "audio"), None)
        )
        names = tuple(dict.fromkeys(c.encoding_name for c in audio.codecs)) if audio else ()
        trunk = Trunk(
            name=TRUNK_PREFIX + node,
            host=where.host,
            port=where.port,
            transport="tls" if self.tls else "udp",
            codecs=names,  # the caller's own: the internal leg is a passthrough
            srtp=self.tls,  # SDES keys inside the TLS
        )
        caller = call.invite.from_.uri.user or ""
        header = OfferHeader(call_id=call.call_id, queue=queue, caller=caller, node=self.node)
        signed = sign_offer(self.secret, agent, header, self.clock())
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def final(status: int) -> None:
            if not done.done():
                done.set_result(status)

        self.stats.offered += 1
        event(logger, "crossnode-offer", call_id=call.call_id, agent=agent, node=node)
        self.b2bua.take(call, trunk, agent, headers=((HEADER, signed),), on_final=final)
        outcome = outcome_of(await done)
        if outcome is Outcome.ANSWERED:
            self.stats.answered += 1
        else:
            self.stats.not_answered += 1
        event(
            logger,
            "crossnode-outcome",
            call_id=call.call_id,
            agent=agent,
            node=node,
            outcome=outcome.value,
        )
        return outcome

    # -- another node's caller, the agent here -----------------------------------------------

    def take_internal(self, call: Call) -> None:
        """An internal INVITE the gate admitted: ring its agent as a direct call (a queue's
        offer once this node's replica of the ACD has applied it)."""
        service = self.service
        value = call.invite.headers.get(HEADER) or ""
        agent = call.request_user
        checked = verify_offer(self.secret, agent, value, self.clock())
        if checked is None:  # the gate checked it a moment ago: only a clock jump gets here
            service.act(lambda now: service.ua.reject(call, 403, now))
            return
        offer = checked[0]
        if self.tls and b"a=crypto:" not in (call.remote_sdp or b""):
            # the encrypted leg carries SRTP only: an offer in clear is not answered
            event(logger, "call-rejected", call_id=call.call_id, status=488, reason="no-srtp")
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        self.stats.received += 1
        event(
            logger,
            "crossnode-received",
            call_id=call.call_id,
            agent=agent,
            node=offer.node,
            origin_call_id=offer.call_id,
            queue=offer.queue or None,
        )
        engine = self._shared_engine()
        if offer.queue and offer.position and engine is not None:
            if _stream_key(engine.acd.followed) < _stream_key(offer.position):
                self._spawn(self._ring_when_current(call, agent, offer, engine))
                return
            if not self._offer_stands(engine, agent, offer):
                self._refuse(call, "offer-withdrawn")
                return
        self._ring(call, agent, offer)

    def _shared_engine(self) -> SharedEngine | None:
        """The cluster's ACD as this node follows it (None without a shared ACD)."""
        acd = self.desk.acd
        engine = acd.engine if acd is not None else None
        return None if engine is None or isinstance(engine, AcdEngine) else engine

    async def _ring_when_current(
        self, call: Call, agent: str, offer: OfferHeader, engine: SharedEngine
    ) -> None:
        """Ring once this node's replica has applied the offer's input (module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLICA_WAIT
        wanted = _stream_key(offer.position)
        while _stream_key(engine.acd.followed) < wanted:
            if call.state is not CallState.OFFERED:
                return  # the caller's node gave up (CANCEL)
            if loop.time() >= deadline:
                self._refuse(call, "replica-behind")
                return
            await asyncio.sleep(0.005)
        if call.state is not CallState.OFFERED:
            return
        if not self._offer_stands(engine, agent, offer):
            self._refuse(call, "offer-withdrawn")
            return
        self._ring(call, agent, offer)

    @staticmethod
    def _offer_stands(engine: SharedEngine, agent: str, offer: OfferHeader) -> bool:
        """Whether the replica has `agent` ringing with the offer's caller."""
        try:
            status = engine.agent_status(agent)
        except (KeyError, ValueError):
            return False
        return status.state is AgentState.RINGING and status.call_id == offer.call_id

    def _refuse(self, call: Call, reason: str) -> None:
        event(logger, "call-rejected", call_id=call.call_id, status=480, reason=reason)
        service = self.service
        service.act(lambda now: service.ua.reject(call, 480, now))

    def _ring(self, call: Call, agent: str, offer: OfferHeader) -> None:
        # a queue's offer (the cluster's ACD) leaves the agent's states to the ACD
        engine_call = offer.call_id if offer.queue else ""
        status = self.desk.offer(
            call, agent, queue=offer.queue, engine_call=engine_call, campaign=offer.campaign
        )
        if status is not None:
            service = self.service
            service.act(lambda now: service.ua.reject(call, status, now))

    def _recording_changed(self, ac: AgentCall) -> None:
        """The recording of a call here paused or resumed: when it is another node's queue
        caller's segment, that node is told its pauses so far (an UPDATE on the leg)."""
        call, recorder = ac.call, ac.recorder
        if not ac.engine_call or not ac.recording or call is None or recorder is None:
            return
        value = sign_gaps(self.secret, ac.engine_call, ac.recording, recorder.gaps, self.clock())
        service = self.service
        service.act(
            lambda now: service.ua.send_in_dialog(
                call, "UPDATE", now, headers=((GAPS_HEADER, value),)
            )
        )

    async def close(self) -> None:
        """Stop the background tasks and close Redis."""
        self._cancel_tasks()
        if self.locator is not None:
            await self.locator.close()
