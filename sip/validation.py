"""UAS request inspection (RFC 3261 §8.2) as one pure function.

:func:`check_request` runs the checks of RFC 3261 §8.2 in the RFC's order, after the syntax checks
that make a request impossible to process at all (RFC 3261 §8.1.1, §20; RFC 4475 §3.1.2, §3.3):

1. required header fields present and well formed, single-value headers single (400);
2. CSeq method equal to the request method (400, RFC 3261 §8.1.1.5);
3. method inspection (§8.2.1): 501 for an unknown method, 405 with Allow for a known one that is
   not allowed;
4. header inspection (§8.2.2): Request-URI scheme (416), Require (420 with Unsupported);
5. content processing (§8.2.3): Content-Type and Content-Encoding (415 with Accept and
   Accept-Encoding), and for INVITE an Accept that excludes ``application/sdp`` (406).

It returns the error response to send, built with :func:`~sip.message.make_response` with a fresh
To tag (RFC 3261 §8.2.6.2), or ``None`` when the request may be processed. It never raises on bad
input. A response to ACK must never be sent (RFC 3261 §17.2.3): for an ACK, a non-``None`` result
means "drop it".
"""

from __future__ import annotations

from typing import Final

from sip import grammar
from sip.exceptions import ParseError
from sip.message import Request, Response, make_response, new_tag

__all__ = [
    "DEFAULT_ACCEPTED_CONTENT_TYPES",
    "KNOWN_METHODS",
    "SUPPORTED_URI_SCHEMES",
    "check_request",
]

#: Methods standardised for SIP (RFC 3261, 3262, 3311, 3428, 3515, 3903, 6086, 6665): a method
#: outside this set is unknown (501), one inside it but not allowed here is refused with 405.
KNOWN_METHODS: Final = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)

#: Request-URI schemes a UAS of ours serves (RFC 3261 §8.2.2.1; tel per RFC 3966).
SUPPORTED_URI_SCHEMES: Final = frozenset({"sip", "sips", "tel"})

#: Bodies a B2BUA of ours understands: SDP offers/answers (RFC 3264), multipart wrappers of SDP
#: (RFC 5621), REFER progress (RFC 3515), DTMF over INFO, and MESSAGE text (RFC 3428).
DEFAULT_ACCEPTED_CONTENT_TYPES: Final = frozenset(
    {
        "application/sdp",
        "multipart/mixed",
        "multipart/alternative",
        "message/sipfrag",
        "application/dtmf-relay",
        "application/dtmf",
        "text/plain",
    }
)

_REQUIRED: Final = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)
_SINGLE: Final = (
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("from", "From"),
    ("to", "To"),
    ("max-forwards", "Max-Forwards"),
    ("content-type", "Content-Type"),
    ("content-length", "Content-Length"),
)
_ADDRESS_LIST_METHODS: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY", "UPDATE"})
_SDP_RANGES: Final = frozenset({"application/sdp", "application/*", "*/*"})


def _reply(
    request: Request,
    status: int,
    reason: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    return make_response(request, status, reason, to_tag=new_tag(), headers=headers or ())


def _bad_request(request: Request, reason: str) -> Response:
    return _reply(request, 400, reason)


def _syntax(request: Request) -> Response | None:
    d = request.headers._d
    for key, name in _REQUIRED:
        if not d.get(key):
            return _bad_request(request, f"Missing {name} header")
    for key, name in _SINGLE:
        values = d.get(key)
        if values is not None and len(values) > 1:
            return _bad_request(request, f"Multiple {name} headers")
    try:
        request.call_id  # noqa: B018
        request.from_  # noqa: B018
        request.to  # noqa: B018
        cseq = request.cseq
        if not request.vias:
            return _bad_request(request, "Missing Via header")
        request.max_forwards  # noqa: B018
        if request.body:
            request.content_type  # noqa: B018
        if request.method in _ADDRESS_LIST_METHODS:
            request.contact  # noqa: B018
            request.record_route  # noqa: B018
        request.route  # noqa: B018
    except ParseError as exc:
        return _bad_request(request, exc.reason)
    if cseq.method != request.method:
        return _bad_request(request, "CSeq method does not match Request method")
    return None


def _media_range(value: str) -> str | None:
    m = grammar.MEDIA_TYPE.match(value)
    if m is None:
        return None
    rest = value[m.end() :].replace(" ", "").lower()
    for param in rest.split(";"):
        if param in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            return None
    return f"{m.group('type')}/{m.group('subtype')}".lower()


def check_request(
    request: Request,
    *,
    allowed_methods: frozenset[str],
    supported_extensions: frozenset[str],
    accepted_content_types: frozenset[str] = DEFAULT_ACCEPTED_CONTENT_TYPES,
) -> Response | None:
    """Inspect a request as a UAS must before processing it (RFC 3261 §8.2, RFC 4475 §3.3).

    Returns the error response to send (400, 405, 406, 415, 416, 420, 501) or ``None``. Extension
    (option-tag) and media-type comparisons are case-insensitive; pass them lower-case.
    """
    try:
        return _check(request, allowed_methods, supported_extensions, accepted_content_types)
    except ParseError as exc:
        return _bad_request(request, exc.reason)


def _check(
    request: Request,
    allowed_methods: frozenset[str],
    supported_extensions: frozenset[str],
    accepted_content_types: frozenset[str],
) -> Response | None:
    error = _syntax(request)
    if error is not None:
        return error
    method = request.method
    headers = request.headers
    d = headers._d

    if method not in allowed_methods:
        if method in KNOWN_METHODS:
            return _reply(request, 405, headers=[("Allow", ", ".join(sorted(allowed_methods)))])
        return _reply(request, 501)

    if request.uri.scheme not in SUPPORTED_URI_SCHEMES:
        return _reply(request, 416)

    if method not in ("ACK", "CANCEL") and "require" in d:
        unsupported = [
            tag for tag in headers.getlist("require") if tag.lower() not in supported_extensions
        ]
        if unsupported:
            return _reply(request, 420, headers=[("Unsupported", ", ".join(unsupported))])

    if request.body:
        content_type = request.content_type
        if content_type is None:
            return _bad_request(request, "Missing Content-Type header")
        if content_type not in accepted_content_types:
            return _reply(
                request, 415, headers=[("Accept", ", ".join(sorted(accepted_content_types)))]
            )
        if "content-encoding" in d and any(
            e.lower() != "identity" for e in headers.getlist("content-encoding")
        ):
            return _reply(
                request,
                415,
                headers=[
                    ("Accept", ", ".join(sorted(accepted_content_types))),
                    ("Accept-Encoding", "identity"),
                ],
            )

    if method == "INVITE" and "accept" in d:
        ranges = {_media_range(value) for value in headers.getlist("accept")}
        if not ranges & _SDP_RANGES:
            return _reply(request, 406, headers=[("Accept", "application/sdp")])
    return None
