"""Trunk upkeep: OPTIONS qualify (a trunk is up or down) and outbound registration.

For each configured trunk with ``qualify_interval > 0`` a :class:`sip.qualify.Qualify` pings the
peer; for each trunk with ``register = true`` a :class:`sip.registration.Registration` keeps our
binding alive at the peer. Both are sans-IO; this module drives them from one loop timer and sends
their requests through the SIP service. State changes are logged and exposed through the API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from functools import partial
from typing import Any

from omlmedia.config import Config, Trunk
from omlmedia.logs import event
from sip.endpoint import Endpoint
from sip.message import URI, Address, Request
from sip.qualify import Qualify, TrunkState
from sip.registration import Registration
from sip.service import SipService
from sip.ua import RequestOutcome

logger = logging.getLogger(__name__)


class NextHops:
    """Where requests to each trunk go, with UDP host names resolved to addresses.

    The UDP transport sends only to IP literals (a name would block the loop on DNS), so names are
    resolved here with the loop's resolver (A/AAAA records; RFC 3263 NAPTR/SRV selection is not
    done). TCP and TLS keep the name: the transport resolves it off-thread and TLS verifies the
    certificate against it. A name that does not resolve is kept and logged; sends to it fail
    and are reported as transport errors.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._resolved: dict[str, Endpoint] = {}
        # Our UDP socket has one address family: look up addresses of that family.
        listen = config.server.listen[0]
        self._family = socket.AF_INET6 if ":" in listen else socket.AF_INET

    async def resolve(self) -> None:
        """Resolve every UDP trunk whose next hop is a name."""
        loop = asyncio.get_running_loop()
        for trunk in self._config.trunks:
            hop = trunk.endpoint
            if hop.transport != "udp" or _is_ip(hop.host):
                continue
            try:
                infos = await loop.getaddrinfo(
                    hop.host, hop.port, family=self._family, type=socket.SOCK_DGRAM
                )
            except OSError as exc:
                logger.warning("trunk %s: cannot resolve %s: %s", trunk.name, hop.host, exc)
                continue
            address = str(infos[0][4][0])
            self._resolved[trunk.name] = Endpoint(hop.transport, address, hop.port)
            event(logger, "trunk-resolved", trunk=trunk.name, host=hop.host, address=address)

    def endpoint(self, trunk: Trunk) -> Endpoint:
        """The next hop for `trunk`."""
        return self._resolved.get(trunk.name) or trunk.endpoint


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(eq=False)
class TrunkUpkeep:
    """What runs for one trunk."""

    trunk: Trunk
    qualify: Qualify | None = None
    registration: Registration | None = None


class TrunkManager:
    """Runs qualify and registration for every trunk that asks for them."""

    def __init__(self, config: Config, service: SipService, hops: NextHops) -> None:
        self.service = service
        self.hops = hops
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._pending: dict[int, tuple[TrunkUpkeep, str]] = {}
        self.upkeep: dict[str, TrunkUpkeep] = {}
        ua = service.ua
        for trunk in config.trunks:
            if trunk.qualify_interval <= 0 and not trunk.register:
                continue
            destination = hops.endpoint(trunk)
            host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
            target = URI.parse(f"sip:{host}:{trunk.port}")
            local = ua.local_endpoint(destination.transport)
            ours = Address(None, URI.parse(f"sip:omlmedia@{local.host}:{local.port}"))
            upkeep = TrunkUpkeep(trunk)
            if trunk.qualify_interval > 0:
                upkeep.qualify = Qualify(
                    target,
                    ours,
                    via=partial(ua.via_for, destination),
                    interval=trunk.qualify_interval,
                    user_agent=config.server.user_agent,
                )
            if trunk.register and trunk.username and trunk.password:
                aor = URI.parse(f"sip:{trunk.username}@{host}")
                upkeep.registration = Registration(
                    aor,
                    target,
                    ua.contact_for(destination.transport),
                    trunk.username,
                    trunk.password,
                    trunk.register_expires,
                    via=partial(ua.via_for, destination),
                    user_agent=config.server.user_agent,
                )
            self.upkeep[trunk.name] = upkeep

    def start(self) -> None:
        """Send the first OPTIONS and REGISTER of every trunk."""
        now = self._loop.time()
        for upkeep in self.upkeep.values():
            if upkeep.qualify is not None:
                self._send(upkeep, "qualify", upkeep.qualify.start(now))
            if upkeep.registration is not None:
                self._send(upkeep, "register", upkeep.registration.start(now))
        self._arm()

    def stop(self) -> None:
        """Unregister (Expires: 0) and stop pinging."""
        now = self._loop.time()
        for upkeep in self.upkeep.values():
            if upkeep.qualify is not None:
                upkeep.qualify.stop()
            if upkeep.registration is not None:
                self._send(upkeep, "register", upkeep.registration.stop(now))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_outcome(self, outcome: RequestOutcome) -> bool:
        """Take the outcome of one of our requests; False when it is not ours."""
        pending = self._pending.pop(id(outcome.transaction), None)
        if pending is None:
            return False
        upkeep, kind = pending
        now = self._loop.time()
        if kind == "qualify" and upkeep.qualify is not None:
            if outcome.response is not None:
                upkeep.qualify.receive_response(outcome.response, now)
            else:
                upkeep.qualify.timeout(now, outcome.transaction.request.cseq.seq)
            self._report(upkeep)
        elif kind == "register" and upkeep.registration is not None:
            registration = upkeep.registration
            before = registration.state
            if outcome.response is not None:
                follow_up = registration.receive_response(outcome.response, now)
                if follow_up is not None:
                    self._send(upkeep, "register", follow_up)
            else:
                registration.timeout(now)
            if registration.state is not before:
                event(
                    logger,
                    "trunk-registration",
                    trunk=upkeep.trunk.name,
                    state=registration.state.value,
                    status=registration.last_status,
                )
        self._arm()
        return True

    def status(self) -> dict[str, Any]:
        """Per-trunk state for the API."""
        out: dict[str, Any] = {}
        for name, upkeep in self.upkeep.items():
            entry: dict[str, Any] = {}
            if upkeep.qualify is not None:
                entry["state"] = upkeep.qualify.state.value
                entry["rtt_ms"] = (
                    round(upkeep.qualify.rtt * 1000, 1) if upkeep.qualify.rtt is not None else None
                )
            if upkeep.registration is not None:
                entry["registration"] = upkeep.registration.state.value
            out[name] = entry
        return out

    def is_down(self, name: str) -> bool:
        """True when qualify says the trunk is down (unknown and up count as usable)."""
        upkeep = self.upkeep.get(name)
        return (
            upkeep is not None
            and upkeep.qualify is not None
            and upkeep.qualify.state is TrunkState.DOWN
        )

    def _report(self, upkeep: TrunkUpkeep) -> None:
        assert upkeep.qualify is not None
        while (change := upkeep.qualify.next_event()) is not None:
            event(
                logger,
                "trunk-state",
                trunk=upkeep.trunk.name,
                state=change.state.value,
                previous=change.previous.value,
                rtt_ms=round(change.rtt * 1000, 1) if change.rtt is not None else None,
                level=logging.WARNING if change.state is TrunkState.DOWN else logging.INFO,
            )

    def _send(self, upkeep: TrunkUpkeep, kind: str, request: Request) -> None:
        def send(now: float) -> None:
            txn = self.service.ua.send_request(request, self.hops.endpoint(upkeep.trunk), now)
            self._pending[id(txn)] = (upkeep, kind)

        self.service.act(send)

    def _arm(self) -> None:
        deadlines = [
            d
            for upkeep in self.upkeep.values()
            for machine in (upkeep.qualify, upkeep.registration)
            if machine is not None and (d := machine.next_deadline()) is not None
        ]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            self._timer = self._loop.call_at(min(deadlines), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        for upkeep in self.upkeep.values():
            if upkeep.qualify is not None:
                request = upkeep.qualify.handle_timer(now)
                self._report(upkeep)
                if request is not None:
                    self._send(upkeep, "qualify", request)
            if upkeep.registration is not None:
                request = upkeep.registration.handle_timer(now)
                if request is not None:
                    self._send(upkeep, "register", request)
        self._arm()
