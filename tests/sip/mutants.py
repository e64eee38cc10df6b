"""A grammar-based generator of broken INVITEs, deterministic for a seed.

A valid INVITE is written field by field: the request line's three parts, each header
(RFC 3261 §20) and each SDP line (RFC 8866 §5) with its own value. A mutant breaks one field (or a
few) in one of the ways hostile or broken peers do: overlong, missing, duplicated, wrong type, bad
escapes, truncated; a few mutants break the message's framing instead (cut short, LF-only, lying
Content-Length). :func:`mutants` first walks every (field, mutation) pair once, then draws random
combinations from ``random.Random(seed)``, so a failure names a reproducible case.

Every mutant gets its own Call-ID and branch (unless those are the field it breaks), so that the
server judges each on its own and none is a retransmission of another. Addresses are the sender's
own loopback address and port only: whatever the server answers, or sends later (a BYE, RTP), stays
on this host.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["FRAMINGS", "KINDS", "Mutant", "fields", "mutants", "valid_invite"]

KINDS = ("overlong", "missing", "duplicated", "wrong-type", "bad-escape", "truncated")
FRAMINGS = ("cut", "lf", "short-length", "long-length", "no-length")

_WRONG = [
    "-1",
    "0",
    "4294967296",
    "99999999999999999999",
    "1e9",
    "0x10",
    "abc",
    "",
    " ",
    "<>",
    ";;;",
    "=",
    "sip:",
    "[::1",
    "127.0.0.1:99999",
    "\u00e9\u00e8",
    "NaN",
]
_ESCAPES = ["%", "%z", "%zz", "%00", "%0d%0a", "\\", '"', '\\"', "\x00", "\r", "\x7f", "\udcff"]


@dataclass(frozen=True, slots=True)
class Mutant:
    """One broken INVITE: what was broken (``field:kind`` joined by ``+``) and its bytes."""

    name: str
    data: bytes


@dataclass(slots=True)
class _Message:
    start: list[str]  # method, Request-URI, version
    headers: list[tuple[str, str]]
    sdp: list[tuple[str, str]]
    framing: str = "ok"  # ok, cut, lf, short-length, long-length, no-length

    def render(self, rng: random.Random) -> bytes:
        body = "".join(f"{k}={v}\r\n" for k, v in self.sdp).encode("utf-8", "surrogateescape")
        lines = [" ".join(self.start)]
        for name, value in self.headers:
            if name == "Content-Length" and value == "{length}":
                length = len(body)
                if self.framing == "short-length":
                    length = max(0, length - rng.randint(1, 40))
                elif self.framing == "long-length":
                    length += rng.choice([1, 100, 65536, 10**9])
                elif self.framing == "no-length":
                    continue
                value = str(length)
            lines.append(f"{name}: {value}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        data = head.encode("utf-8", "surrogateescape") + body
        if self.framing == "lf":
            data = data.replace(b"\r\n", b"\n")
        elif self.framing == "cut":
            data = data[: rng.randrange(1, len(data))]
        return data


def valid_invite(
    host: str, port: int, n: int, user: str = "echo", transport: str = "UDP"
) -> _Message:
    """The well-formed INVITE (with an SDP offer) that mutants start from; `n` makes it unique."""
    tag = f"{n:x}"
    sdp = [
        ("v", "0"),
        ("o", f"- {1000 + n} 1 IN IP4 {host}"),
        ("s", "-"),
        ("c", f"IN IP4 {host}"),
        ("t", "0 0"),
        ("m", "audio 9 RTP/AVP 0 8 101"),
        ("a", "rtpmap:0 PCMU/8000"),
        ("a", "rtpmap:8 PCMA/8000"),
        ("a", "rtpmap:101 telephone-event/8000"),
        ("a", "fmtp:101 0-15"),
        ("a", "ptime:20"),
        ("a", "rtcp:10 IN IP4 " + host),
        ("a", "sendrecv"),
    ]
    headers = [
        ("Via", f"SIP/2.0/{transport} {host}:{port};branch=z9hG4bK-mut{tag};rport"),
        ("Max-Forwards", "70"),
        ("From", f'"Mutant {tag}" <sip:mutant@{host}>;tag=f{tag}'),
        ("To", f"<sip:{user}@127.0.0.1>"),
        ("Call-ID", f"mutant-{tag}@{host}"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:mutant@{host}:{port};transport={transport.lower()}>"),
        ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
        ("Supported", "replaces, timer"),
        ("Session-Expires", "1800;refresher=uac"),
        ("Expires", "60"),
        ("User-Agent", "mutants/1.0"),
        ("Accept", "application/sdp"),
        ("Record-Route", f"<sip:{host}:{port};lr>"),
        ("Content-Type", "application/sdp"),
        ("Content-Length", "{length}"),
    ]
    return _Message(["INVITE", f"sip:{user}@127.0.0.1", "SIP/2.0"], headers, sdp)


def fields(message: _Message) -> list[str]:
    """Every field a mutant may break: ``start:0..2``, ``header:Name``, ``sdp:i`` (i-th line)."""
    names = [f"start:{i}" for i in range(3)]
    names += [f"header:{name}" for name, _ in message.headers]
    names += [f"sdp:{i}" for i in range(len(message.sdp))]
    return names


def _overlong(value: str, rng: random.Random) -> str:
    size = rng.choice([300, 1500, 8000, 20000])
    piece = rng.choice([value or "x", "a", ";p=1", ",x", "0", "sip:x@y "])
    return (value + piece * (size // max(1, len(piece))))[:size]


def _wrong_type(value: str, rng: random.Random) -> str:
    return rng.choice(_WRONG)


def _bad_escape(value: str, rng: random.Random) -> str:
    at = rng.randrange(len(value) + 1)
    return value[:at] + rng.choice(_ESCAPES) + value[at:]


def _truncated(value: str, rng: random.Random) -> str:
    return value[: rng.randrange(len(value))] if value else ""


_CHANGE: dict[str, Callable[[str, random.Random], str]] = {
    "overlong": _overlong,
    "wrong-type": _wrong_type,
    "bad-escape": _bad_escape,
    "truncated": _truncated,
}


def _apply(message: _Message, field: str, mutation: str, rng: random.Random) -> None:
    kind, _, key = field.partition(":")
    if kind == "framing":
        message.framing = mutation
        return
    if kind == "start":
        i = int(key)
        if mutation == "missing":
            message.start[i] = ""
        elif mutation == "duplicated":
            message.start.insert(i, message.start[i])
        else:
            message.start[i] = _CHANGE[mutation](message.start[i], rng)
        return
    if kind == "sdp":
        i = int(key)
        name, value = message.sdp[i]
        if mutation == "missing":
            del message.sdp[i]
        elif mutation == "duplicated":
            message.sdp.insert(i, (name, value))
        else:
            message.sdp[i] = (name, _CHANGE[mutation](value, rng))
        return
    index = next(i for i, (n, _) in enumerate(message.headers) if n == key)
    name, value = message.headers[index]
    if value == "{length}":
        value = "0"
    if mutation == "missing":
        del message.headers[index]
    elif mutation == "duplicated":
        other = _CHANGE[rng.choice(list(_CHANGE))](value, rng) if rng.random() < 0.5 else value
        message.headers.insert(index + 1, (name, other))
    else:
        message.headers[index] = (name, _CHANGE[mutation](value, rng))


def mutants(
    seed: int,
    count: int,
    *,
    host: str,
    port: int,
    transport: str = "UDP",
    user: str = "echo",
    first: int = 0,
) -> Iterator[Mutant]:
    """`count` broken INVITEs: every (field, mutation) pair once, then random combinations.

    The same `seed` and arguments give the same bytes. Besides the walk, which breaks the framing
    in each way once, about one random mutant in twelve breaks the framing as well.
    """
    rng = random.Random(seed)
    base = valid_invite(host, port, 0, user, transport)
    plan = [[(f, k)] for f in fields(base) for k in KINDS]
    plan += [[("framing:", framing)] for framing in FRAMINGS]
    for n in range(count):
        message = valid_invite(host, port, first + n, user, transport)
        if n < len(plan):
            chosen = plan[n]
        else:
            names = fields(message)
            chosen = [(rng.choice(names), rng.choice(KINDS)) for _ in range(rng.randint(1, 3))]
            if rng.random() < 1 / 12:
                chosen.append(("framing:", rng.choice(FRAMINGS)))
        applied = []
        for field, mutation in chosen:
            if field == "framing:" or field in fields(message):
                _apply(message, field, mutation, rng)
                applied.append(
                    f"{field}{mutation}" if field == "framing:" else f"{field}:{mutation}"
                )
        yield Mutant("+".join(applied), message.render(rng))
