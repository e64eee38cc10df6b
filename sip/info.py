"""DTMF in SIP INFO bodies (RFC 6086 legacy INFO usage, §2 and §4.2).

``application/dtmf-relay`` (Cisco, used by Asterisk, FreeSWITCH and most PBXs) is a small
``key=value`` body: ``Signal=5`` and ``Duration=160`` (milliseconds). ``application/dtmf``
carries the digit alone. Signals are ``0-9 * # A-D``; numeric event codes 10-15 (RFC 4733 §3.2:
10 ``*``, 11 ``#``, 12-15 ``A-D``) are accepted too.
"""

from __future__ import annotations

from sip.dialog import Dialog
from sip.message import Request, Via

__all__ = [
    "DEFAULT_DURATION_MS",
    "DTMF",
    "DTMF_RELAY",
    "DtmfError",
    "build_dtmf_body",
    "build_dtmf_info",
    "parse_dtmf_info",
]

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
DEFAULT_DURATION_MS = 100
"""Duration assumed when a body gives none (Asterisk's default DTMF duration)."""
MAX_DURATION_MS = 60_000
MAX_BODY = 512

_SIGNALS = {c: c for c in "0123456789*#ABCD"}
_SIGNALS.update({c.lower(): c for c in "ABCD"})
_SIGNALS.update({str(code): c for code, c in zip(range(10, 16), "*#ABCD", strict=True)})


class DtmfError(ValueError):
    """An INFO body is not a DTMF body we understand."""


def _signal(text: str) -> str:
    digit = _SIGNALS.get(text.strip())
    if digit is None:
        raise DtmfError("DTMF signal is not valid")
    return digit


def _duration(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 5 or int(text) > MAX_DURATION_MS:
        raise DtmfError("DTMF duration is not valid")
    return int(text) or DEFAULT_DURATION_MS


def parse_dtmf_info(content_type: str | None, body: bytes) -> tuple[str, int]:
    """``(digit, duration_ms)`` of an INFO DTMF body; `content_type` as the message model gives it.

    Raises :class:`DtmfError` for another content type or a malformed body. A missing or zero
    duration reads as :data:`DEFAULT_DURATION_MS`.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != DTMF_RELAY and media_type != DTMF:
        raise DtmfError("content type is not a DTMF type")
    if len(body) > MAX_BODY:
        raise DtmfError("DTMF body is too long")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DtmfError("DTMF body is not ASCII") from None
    if media_type == DTMF:
        return _signal(text), DEFAULT_DURATION_MS
    digit: str | None = None
    duration = DEFAULT_DURATION_MS
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            if line.strip():
                raise DtmfError("DTMF body line is not key=value")
            continue
        name = name.strip().lower()
        if name == "signal":
            digit = _signal(value)
        elif name == "duration":
            duration = _duration(value)
    if digit is None:
        raise DtmfError("DTMF body has no Signal")
    return digit, duration


def build_dtmf_body(
    digit: str, duration_ms: int = DEFAULT_DURATION_MS, content_type: str = DTMF_RELAY
) -> bytes:
    """The INFO body for `digit` as ``application/dtmf-relay`` or ``application/dtmf``."""
    signal = _signal(digit)
    if content_type == DTMF:
        return signal.encode()
    if content_type != DTMF_RELAY:
        raise DtmfError("content type is not a DTMF type")
    if not 0 < duration_ms <= MAX_DURATION_MS:
        raise DtmfError("DTMF duration is not valid")
    return f"Signal={signal}\r\nDuration={duration_ms}\r\n".encode()


def build_dtmf_info(
    dialog: Dialog,
    via: Via,
    digit: str,
    duration_ms: int = DEFAULT_DURATION_MS,
    *,
    content_type: str = DTMF_RELAY,
) -> Request:
    """An INFO in `dialog` carrying one DTMF digit (RFC 6086 §4.2, legacy INFO usage)."""
    body = build_dtmf_body(digit, duration_ms, content_type)
    return dialog.create_request("INFO", via=via, body=body, content_type=content_type)
