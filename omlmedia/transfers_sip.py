"""Transfers of a bridged call by its SIP peer: REFER (blind, RFC 3515) and INVITE with Replaces
(attended, RFC 3891).

Theory of operation. A party of a connected two-party bridge sends REFER: we accept it (202),
call the Refer-To target on the transferor's side of the relay (through the target's trunk route,
else the transferor's trunk), and report the target's progress to the transferor in NOTIFYs with
a sipfrag (RFC 3515 §2.4.5). When the target answers, it takes the transferor's place: its leg
gets the new address, codec and keys while the other party's media never moves, and the
transferor is hung up. When it does not, the transferor keeps its call (RFC 5589 §6). A REFER
reaches only a trunk the referrer may dial itself (`omlmedia.targets.route_permitted`), else 403;
the Refer-To host never picks the trunk. An INVITE
that Replaces a bridged call takes that call's place the same way and the replaced call is hung
up. `BridgeTransfers` is mixed into `omlmedia.b2bua.B2bua`, whose bridges it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from media.bridge import TranscoderFactory
from media.srtp import offer_crypto
from omlmedia.bridges import Bridge, Transfer, answer_preferring, leg_codecs, rejoin
from omlmedia.config import Config, Route, RouteAction, Trunk
from omlmedia.logs import event
from omlmedia.targets import RouterStats, route_permitted
from sip.message import URI, Address, Request, Response
from sip.refer import ReferTo
from sip.sdp import (
    MediaCapabilities,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
    process_answer,
)
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

if TYPE_CHECKING:
    from omlmedia.trunks import NextHops

__all__ = ["BridgeTransfers"]

logger = logging.getLogger(__name__)


class BridgeTransfers:
    """REFER and Replaces on the bridges of the class it is mixed into."""

    config: Config
    service: SipService
    media_host: str
    stats: RouterStats
    hops: NextHops | None
    transcoders: TranscoderFactory | None
    bridges: dict[int, Bridge]
    route_for: Callable[[str], tuple[Route, str] | None]

    def _end_bridge(self, bridge: Bridge, ended: Call) -> None:
        raise NotImplementedError

    def on_refer(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        """A bridged party transfers the other one: call the Refer-To target on its side."""
        service = self.service
        bridge = self.bridges.get(id(call))
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
        denied = route_permitted(self.config, call, f"trunk:{trunk.name}")
        if denied is not None:
            # The referrer may not dial this trunk itself: a transfer does not let it either.
            self.stats.forbidden += 1
            event(
                logger,
                "transfer-refused",
                level=logging.WARNING,
                call_id=call.call_id,
                status=403,
                reason=denied,
                refer_to=str(refer_to.address),
                target=f"trunk:{trunk.name}",
                trunk=call.trunk,
                auth_user=call.user,
                source=str(call.source),
            )
            service.act(lambda now: service.ua.respond(call, txn, 403, now))
            return
        offer = create_offer(
            MediaCapabilities(leg_codecs(bridge, call, trunk, self.transcoders), rtcp_mux=False),
            bridge.session_id,
            1,
            self.media_host,
            leg.port,
            crypto=offer_crypto() if trunk.srtp else (),
        )
        transfer = Transfer(transferor=call, transaction=txn, offer=offer)
        bridge.transfer = transfer
        self.bridges.pop(id(call), None)  # the transferor's BYE no longer ends the bridge
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
            target.app = self
            transfer.target = target
            self.bridges[id(target)] = bridge

        service.act(dial)

    def _transfer_destination(self, call: Call, uri: URI) -> tuple[Trunk, str] | None:
        """Where a transfer to `uri` goes: its route when that is a trunk, else the trunk of the
        transferor's call, with the user part as given. The host of `uri` never chooses a trunk
        (it is the referrer's to write); the caller checks the referrer may reach the trunk."""
        user = uri.user or ""
        found = self.route_for(user)
        if found is not None and found[0].action is RouteAction.TRUNK:
            trunk = self.config.trunk(found[0].trunk or "")
            if trunk is not None:
                return trunk, found[1]
        trunk = self.config.trunk(call.trunk or "") if call.trunk else None
        return (trunk, user) if trunk is not None and user else None

    def _notify_transfer(self, transferor: Call, status: int, reason: str, final: bool) -> None:
        """NOTIFY the transferor of the target's progress in a sipfrag (RFC 3515 §2.4.5)."""
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
            or not rejoin(bridge, transfer.transferor, stream, tuple(offered))
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
            self.bridges.pop(id(transfer.target), None)
        bridge.transfer = None
        transferor = transfer.transferor
        event(logger, "transfer-failed", call_id=transferor.call_id, status=status)
        if transferor.state is not CallState.ENDED:
            self.bridges[id(transferor)] = bridge
            self._notify_transfer(transferor, status, reason, final=True)
        else:
            self._end_bridge(bridge, transferor)

    def on_replaces(self, call: Call, replaced: Call) -> None:
        """An INVITE with Replaces takes `replaced`'s place in its bridge (attended transfer)."""
        service = self.service
        bridge = self.bridges.get(id(replaced))
        leg = bridge.leg(replaced) if bridge is not None else None
        if bridge is None or leg is None or not bridge.chosen or bridge.transfer is not None:
            service.act(lambda now: service.ua.reject(call, 603, now))
            return
        call.app = self
        local = leg_codecs(bridge, replaced, self.config.trunk(call.trunk or ""), self.transcoders)
        try:
            offer = SessionDescription.parse(call.remote_sdp)
            current = bridge.codecs(replaced)[0]
            answer, capabilities = answer_preferring(
                offer,
                current,
                self.media_host,
                leg.port,
                bridge.session_id,
                2,
                self.transcoders,
                leg,
            )
        except (SDPError, OfferAnswerError):
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        stream = answer.audio
        if not rejoin(bridge, replaced, stream, capabilities.codecs + local):
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        leg.set_remote(
            stream.remote_address, stream.remote_port, stream.remote_rtcp_port, relatch=True
        )
        self.bridges.pop(id(replaced), None)
        bridge.replace(replaced, call)
        body = bytes(answer.description)
        bridge.local_sdp[id(call)] = body
        self.bridges[id(call)] = bridge
        self.stats.transfers += 1
        event(logger, "call-replaced", call_id=replaced.call_id, by_call_id=call.call_id)
        service.act(lambda now: service.ua.answer(call, body, now))
        service.act(lambda now: service.ua.hangup(replaced, now))
