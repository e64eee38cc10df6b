"""Where a SIP message comes from or goes to: a transport and a host/port pair (RFC 3261 §18)."""

from __future__ import annotations

from typing import NamedTuple

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})


class Endpoint(NamedTuple):
    """A transport address: `transport` is lower-case ``udp``, ``tcp`` or ``tls``."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True for stream transports, where RFC 3261 §17 timers A, E and G do not run."""
        return self.transport in RELIABLE_TRANSPORTS

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"
