"""The RFC 4475 and RFC 5118 torture messages, framed as they would arrive in one UDP datagram.

Not a test module: ``from conformance import load_torture_messages`` from any test in ``tests/sip``.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The public test vectors, carried by the repository (provenance in their README).
TORTURE = Path(__file__).resolve().parent / "fixtures" / "torture"
RFC4475 = TORTURE / "rfc4475"
RFC5118 = TORTURE / "rfc5118"

_CONTENT_LENGTH = re.compile(rb"^(Content-Length|l)[ \t]*:[ \t]*[0-9]+[ \t]*$", re.I | re.M)


def fix_framing(raw: bytes) -> bytes:
    """RFC 5118 files: CRLF line endings, a blank line after the headers, a true Content-Length."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data.rstrip(b"\r\n") + b"\r\n\r\n"
    head, body = data[: end + 2], data[end + 4 :]
    head = _CONTENT_LENGTH.sub(lambda m: m.group(1) + b": " + str(len(body)).encode(), head)
    return head + b"\r\n" + body


def _table(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def load_torture_messages() -> list[tuple[str, bytes, str]]:
    """(name, datagram bytes, expected outcome) for the 49 RFC 4475 and 12 RFC 5118 messages.

    RFC 4475 messages are returned byte-exact (their .dat files are already CRLF-framed; dblreq's
    trailing INVITE stays in the datagram and must be ignored). RFC 5118 messages get their framing
    fixed by :func:`fix_framing`. ``expected`` is the EXPECTED.tsv column: ``process``, ``discard``,
    ``400``, ``400-or-liberal``, ``505``, ``416``, ``416-or-404``, ``420``, ``415``, ``406``,
    ``501-or-400``, ``process-or-400`` or ``process-or-483``.
    """
    messages: list[tuple[str, bytes, str]] = []
    for row in _table(RFC4475 / "EXPECTED.tsv"):
        name, expected = row[0], row[3]
        messages.append((name.removesuffix(".dat"), (RFC4475 / name).read_bytes(), expected))
    for row in _table(RFC5118 / "EXPECTED.tsv"):
        name, expected = row[0], row[2]
        messages.append((name, fix_framing((RFC5118 / name).read_bytes()), expected))
    return messages
