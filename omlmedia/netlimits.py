"""Bounds on connections: the process's file descriptor limit, the caps derived from it, and the
HTTPS listener that counts connections before their TLS handshake.

Theory of operation. Every socket is a file descriptor, and a process out of descriptors fails
in every part at once (new calls, RTP ports, the database). `raise_nofile` lifts the soft
``RLIMIT_NOFILE`` to the hard one (up to `WANTED_NOFILE`) at start, and `budget` shares what there
is: the RTP port range first (one socket per port), a margin for files, the database and
outbound connections, then the rest between SIP streams and HTTPS, each capped.

`ConnectionGate` counts connections per source (an IPv4 address, an IPv6 /64, as in
`sip.transport.source_key`) and in total; sources in `trusted` (``security.trusted_networks``:
an office behind one NAT address) are not capped per source. `GatedTlsSite` is an aiohttp site
whose listener is plain TCP: a connection is admitted by the gate at accept time, before any TLS
work, then must finish its handshake within `HANDSHAKE_TIMEOUT` seconds (asyncio's own TLS layer,
installed on the connection) before aiohttp's request handler sees it. A refused connection is
reset at once and costs nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from sip.transport import source_key

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "WANTED_NOFILE",
    "ConnectionBudget",
    "ConnectionGate",
    "GatedTlsSite",
    "budget",
    "raise_nofile",
]

logger = logging.getLogger(__name__)

WANTED_NOFILE = 65536
"""The descriptor limit asked for at start (the systemd unit's ``LimitNOFILE``)."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds an HTTPS connection has to finish its TLS handshake."""
_MARGIN = 256
"""Descriptors kept for files, the database, logs, outbound HTTP and SIP connections."""


def raise_nofile(wanted: int = WANTED_NOFILE) -> int:
    """Lift the soft ``RLIMIT_NOFILE`` towards `wanted` (never beyond the hard limit, never
    lower than it is); the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open files limit to %d: %s", target, exc)
    return soft


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """How many connections each listener may hold, from the descriptor limit."""

    nofile: int
    sip: int
    """SIP TCP/TLS connections, both directions (`sip.transport.TransportLimits`)."""
    sip_reserved: int
    """Of `sip`, kept for trusted peers and outbound connections to trunks."""
    http: int
    """HTTPS connections (`ConnectionGate`)."""
    http_per_source: int
    """HTTPS connections per source outside ``security.trusted_networks``."""


def budget(nofile: int, rtp_ports: int) -> ConnectionBudget:
    """Share `nofile` descriptors: the RTP ports and a margin first, then half of the rest each
    to SIP streams and HTTPS, capped at 4096 each, and at least 16 each."""
    spare = max(0, nofile - rtp_ports - _MARGIN)
    sip = max(16, min(4096, spare // 2))
    http = max(16, min(4096, spare // 2))
    return ConnectionBudget(
        nofile=nofile,
        sip=sip,
        sip_reserved=max(1, sip // 8),
        http=http,
        http_per_source=max(8, min(256, http // 8)),
    )


class ConnectionGate:
    """Counts open connections per source and in total; `admit` says whether one more fits."""

    def __init__(
        self,
        max_connections: int,
        max_per_source: int,
        trusted: Callable[[str], bool] | None = None,
    ) -> None:
        if max_connections < 1 or max_per_source < 1:
            raise ValueError("connection caps must be at least 1")
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.trusted: Callable[[str], bool] = trusted or (lambda host: False)
        self.open = 0
        self.rejected = 0
        """Connections refused at a cap (counted here, reset by nobody)."""
        self._per_source: dict[str, int] = {}

    def admit(self, host: str) -> bool:
        """Count a new connection from `host` and return True, or return False when a cap is
        reached (and count the refusal)."""
        if self.open >= self.max_connections:
            self.rejected += 1
            return False
        key = source_key(host)
        count = self._per_source.get(key, 0)
        if count >= self.max_per_source and not self.trusted(host):
            self.rejected += 1
            return False
        self._per_source[key] = count + 1
        self.open += 1
        return True

    def release(self, host: str) -> None:
        """A connection `admit` counted has closed."""
        key = source_key(host)
        left = self._per_source.get(key, 0) - 1
        if left > 0:
            self._per_source[key] = left
        else:
            self._per_source.pop(key, None)
        self.open = max(0, self.open - 1)

    def sources(self) -> int:
        """Sources with an open connection."""
        return len(self._per_source)


class _GatedConnection(asyncio.Protocol):
    """One accepted TCP connection: admitted by the gate, then wrapped in TLS at once (the
    handshake bounded by the site's deadline) and, once secure, handed to aiohttp's request
    handler; every later event is forwarded to it.

    The TLS layer is asyncio's own (`asyncio.sslproto.SSLProtocol`, what ``create_server(ssl=)``
    and ``start_tls`` use), installed synchronously in `connection_made` so that no byte of the
    ClientHello can slip past it on any event loop (uvloop delivers data early)."""

    def __init__(self, site: GatedTlsSite, factory: Callable[[], asyncio.Protocol]) -> None:
        self._site = site
        self._factory = factory
        self._host: str | None = None
        self._handler: asyncio.Protocol | None = None
        self._securing = False

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        if self._securing:  # the TLS layer's call once the handshake is done
            self._attach(base)
            return
        transport = cast(asyncio.Transport, base)  # uvloop's are not asyncio.Transport subclasses
        site = self._site
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        if not host or not site.gate.admit(host):
            transport.abort()
            return
        self._host = host
        if site.tls is None:
            self._attach(transport)
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        secure = sslproto.SSLProtocol(
            loop,
            self,
            site.tls,
            waiter,
            server_side=True,
            ssl_handshake_timeout=site.handshake_timeout,  # type: ignore[arg-type]  # seconds, any number
        )
        self._securing = True
        site.pending[waiter] = transport
        waiter.add_done_callback(self._handshake_done)
        transport.set_protocol(secure)
        secure.connection_made(transport)

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        site = self._site
        site.pending.pop(waiter, None)
        if self._handler is not None:
            return  # secure: the handler's connection_lost releases the slot
        if waiter.cancelled() or waiter.exception() is not None:
            site.handshakes_failed += 1
        self._release()  # failed, timed out, or lost before the end of the handshake

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        if self._host is None:
            cast(asyncio.Transport, transport).abort()
            return
        handler = self._handler = self._factory()
        handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def _release(self) -> None:
        if self._host is not None:
            self._site.gate.release(self._host)
            self._host = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.connection_lost(exc)


class GatedTlsSite(web.TCPSite):
    """An aiohttp TCP site whose connections pass a `ConnectionGate` before their TLS handshake
    (`tls`; None serves plain HTTP through the same gate, for tests)."""

    __slots__ = ("gate", "handshake_timeout", "handshakes_failed", "pending", "tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        gate: ConnectionGate,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self.tls = tls
        self.gate = gate
        self.handshake_timeout = handshake_timeout
        self.handshakes_failed = 0
        """TLS handshakes that failed or did not finish in time."""
        self.pending: dict[asyncio.Future[None], asyncio.Transport] = {}
        """The handshakes in progress (their end, their connection)."""

    @property
    def name(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        factory = self._runner.server
        assert factory is not None
        self._server = await loop.create_server(
            lambda: _GatedConnection(self, factory),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        pending = list(self.pending.items())
        for _, transport in pending:
            transport.abort()
        if pending:
            await asyncio.wait([waiter for waiter, _ in pending], timeout=1.0)
        await super().stop()
