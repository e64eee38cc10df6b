"""RTP port-pair allocation from the configured range (RFC 3550 §11: RTP on even, RTCP on odd
ports)."""

from __future__ import annotations

from collections import deque


class PortsExhausted(RuntimeError):
    """Every port pair of the range is in use."""


class PortAllocator:
    """Hands out even RTP ports of ``[low, high]``, least recently released first.

    Reusing the port released longest ago keeps late packets of an ended call from landing in the
    next one.
    """

    def __init__(self, low: int, high: int) -> None:
        if low % 2:
            low += 1
        if low >= high:
            raise ValueError("RTP port range is empty")
        self._free: deque[int] = deque(range(low, high, 2))
        self._used: set[int] = set()

    def allocate(self) -> int:
        """Take the next free even port."""
        if not self._free:
            raise PortsExhausted("no free RTP port")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; releasing twice or a foreign port does nothing."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        """How many ports are allocated."""
        return len(self._used)
