"""Errors of the SIP stack (RFC 3261).

As in h11, a *remote* error (the peer broke the protocol) is told apart from a *local* one (our code
misused the API): a remote error carries the SIP status to answer with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sip.message import Request

__all__ = ["ParseError"]


class ParseError(ValueError):
    """The peer sent a malformed message (RFC 3261 §7, §8.2, §21.4.1).

    ``status`` is the SIP status to answer with (400, 413, 416, 505...), ``reason`` a fixed reason
    phrase (also the exception message) and ``request`` the partially parsed
    :class:`~sip.message.Request` when Via, From, To, Call-ID and CSeq were present, so that
    :func:`~sip.message.make_response` can answer it; else ``None``. A malformed *response* is
    never answered: drop it.
    """

    status: int
    reason: str
    request: Request | None

    def __init__(self, status: int, reason: str, request: Request | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.request = request

    def __reduce__(self) -> tuple[type[ParseError], tuple[int, str, None]]:
        return (type(self), (self.status, self.reason, None))
