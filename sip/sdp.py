"""SDP (RFC 8866, formerly RFC 4566) and the offer/answer model (RFC 3264).

A `SessionDescription` is a frozen value: `SessionDescription.parse(data)` reads what peers send
(liberal: LF or CRLF line endings, trailing whitespace, unknown lines and attributes kept) and
`str()`/`bytes()` write it back strictly (CRLF, the field order of RFC 8866 §5). Attributes are
kept verbatim and in order, so a description round-trips byte for byte; what the media engine needs
(codecs, direction, ptime, rtcp-mux, rtcp, SDES crypto) is derived from them once, when the value
is built, and exposed as read-only fields.

Offer/answer is pure functions over these values: `create_offer()`, `negotiate()` (answer an
offer) and `process_answer()` (read the answer to our offer). `SDPSession` keeps what a dialog
needs across re-INVITEs: the o= session id and version and our previous description, so hold and
resume re-offers carry the same codecs and payload types (RFC 3264 §8).

Measured with `time.process_time` (best of 7) on the 2-core development machine while other jobs
ran (`sum(range(1000))` took 17 µs there): parsing a 19-line Asterisk-style SDP (5 codecs, rtcp,
rtcp-mux) takes about 32 µs when its media shape (proto, formats, attributes) was seen before,
since derived values are cached by shape, and about 44 µs for a new shape; sipp's 7-line SDP
18 µs; a 56-line Chrome offer 81 µs; `bytes()` 12 µs; `negotiate()` 34 µs; parse + negotiate +
`bytes(answer)` 84 µs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import NamedTuple

__all__ = [
    "CN",
    "DEFAULT_CAPABILITIES",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "TELEPHONE_EVENT_48000",
    "Answer",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "CryptoAttribute",
    "Direction",
    "MediaCapabilities",
    "MediaDescription",
    "NegotiatedStream",
    "OfferAnswerError",
    "Origin",
    "RtcpAttribute",
    "SDPError",
    "SDPSession",
    "SessionDescription",
    "Timing",
    "answer_direction",
    "create_offer",
    "negotiate",
    "process_answer",
]


class SDPError(ValueError):
    """A session description that does not follow the RFC 8866 §9 grammar."""


class OfferAnswerError(ValueError):
    """An offer we cannot accept or an answer that does not fit our offer (RFC 3264 §6, §7).

    The UAS answers an offer that raised it with `status` (488 Not Acceptable Here).
    """

    status = 488


class Direction(Enum):
    """Stream direction attributes (RFC 8866 §6.7, RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """True when the side that wrote this direction sends media."""
        return self is Direction.SENDRECV or self is Direction.SENDONLY

    @property
    def receives(self) -> bool:
        """True when the side that wrote this direction receives media."""
        return self is Direction.SENDRECV or self is Direction.RECVONLY

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        """The direction that sends and/or receives."""
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE


_DIRECTIONS = {d.value: d for d in Direction}


def answer_direction(offered: Direction, local: Direction = Direction.SENDRECV) -> Direction:
    """The direction to answer for an offered one (RFC 3264 §6.1).

    `local` is what we would like to do (sendonly while we hold the call). We send only if the
    offerer receives, and receive only if it sends: sendonly→recvonly, recvonly→sendonly,
    inactive→inactive, sendrecv→`local`.
    """
    return Direction.from_flags(local.sends and offered.receives, local.receives and offered.sends)


def _digits(value: str, message: str) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > 40:
        raise SDPError(message)
    return int(value)


class Attribute(NamedTuple):
    """An `a=` line (RFC 8866 §5.13): a property attribute has `value` None."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


class Origin(NamedTuple):
    """The `o=` line (RFC 8866 §5.2): originator and session identifier."""

    username: str
    session_id: int
    session_version: int
    address: str
    address_type: str = "IP4"
    network_type: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an `o=` line."""
        parts = value.split()
        if len(parts) != 6:
            raise SDPError("bad o= line")
        return _new(
            cls,
            (
                parts[0],
                _digits(parts[1], "bad o= line"),
                _digits(parts[2], "bad o= line"),
                parts[5],
                parts[4],
                parts[3],
            ),
        )

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.network_type} {self.address_type} {self.address}"
        )


class Connection(NamedTuple):
    """A `c=` line (RFC 8866 §5.7).

    `address` is kept verbatim, including any multicast `/ttl/count` suffix.
    """

    address: str
    address_type: str = "IP4"
    network_type: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the value of a `c=` line (`IN IP4 192.0.2.1`, `IN IP6 ::1`)."""
        parts = value.split()
        if len(parts) != 3:
            raise SDPError("bad c= line")
        return _new(cls, (parts[2], parts[1], parts[0]))

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """An `IN IP4` or `IN IP6` connection for a literal address (IPv6 when it has a colon)."""
        return cls(address, "IP6" if ":" in address else "IP4")

    @property
    def is_unspecified(self) -> bool:
        """True for `0.0.0.0` (and `::`): the legacy hold of RFC 2543 (RFC 3264 §8.4)."""
        return self.address == "0.0.0.0" or self.address == "::"

    def __str__(self) -> str:
        return f"{self.network_type} {self.address_type} {self.address}"


class Bandwidth(NamedTuple):
    """A `b=` line (RFC 8866 §5.8): `AS:64`, `TIAS:64000`."""

    bwtype: str
    bandwidth: int

    @classmethod
    def parse(cls, value: str) -> Bandwidth:
        """Parse the value of a `b=` line."""
        bwtype, sep, bandwidth = value.partition(":")
        if not sep or not bwtype:
            raise SDPError("bad b= line")
        return cls(bwtype, _digits(bandwidth, "bad b= line"))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


class Timing(NamedTuple):
    """A time description (RFC 8866 §5.9, §5.10): `t=` and its `r=` lines, kept verbatim."""

    start_time: int = 0
    stop_time: int = 0
    repeats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Timing:
        """Parse the value of a `t=` line."""
        if value == "0 0" and cls is Timing:
            return _UNBOUNDED
        parts = value.split()
        if len(parts) != 2:
            raise SDPError("bad t= line")
        return cls(_digits(parts[0], "bad t= line"), _digits(parts[1], "bad t= line"))


#: ``t=0 0``, what nearly every peer sends (RFC 8866 §5.9): one value for all (it is immutable).
_UNBOUNDED = Timing()


class Codec(NamedTuple):
    """An RTP payload format (RFC 8866 §6.6 `a=rtpmap`, §6.15 `a=fmtp`; RFC 3551 static types).

    `clock_rate` is the RTP clock rate: G.722 samples at 16 kHz but its clock is 8000
    (RFC 3551 §4.5.2), see `sample_rate`.
    """

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def sample_rate(self) -> int:
        """The audio sample rate (16000 for G.722, the clock rate otherwise)."""
        if self.clock_rate == 8000 and self.encoding_name.upper() == "G722":
            return 16000
        return self.clock_rate

    @property
    def parameters(self) -> dict[str, str]:
        """The `fmtp` parameters as a dict (`useinbandfec=1;stereo=0`); bare items map to ""."""
        result: dict[str, str] = {}
        if self.fmtp:
            for item in self.fmtp.split(";"):
                key, _, value = item.strip().partition("=")
                if key:
                    result[key.strip()] = value.strip()
        return result

    @property
    def rtpmap(self) -> str:
        """The value of the `a=rtpmap` attribute for this codec."""
        text = f"{self.payload_type} {self.encoding_name}/{self.clock_rate}"
        return text if self.channels == 1 else f"{text}/{self.channels}"

    def matches(self, other: Codec) -> bool:
        """Same encoding (case-insensitive), clock rate and channels; payload types may differ."""
        return (
            self.clock_rate == other.clock_rate
            and self.channels == other.channels
            and self.encoding_name.lower() == other.encoding_name.lower()
        )


STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}
"""Static payload types of RFC 3551 §6: payload type → (encoding name, clock rate, channels)."""

PCMU = Codec(0, "PCMU", 8000)
PCMA = Codec(8, "PCMA", 8000)
G722 = Codec(9, "G722", 8000)
CN = Codec(13, "CN", 8000)
OPUS = Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")
TELEPHONE_EVENT = Codec(101, "telephone-event", 8000, 1, "0-16")
TELEPHONE_EVENT_48000 = Codec(110, "telephone-event", 48000, 1, "0-16")

_AUXILIARY = frozenset({"telephone-event", "cn"})
_PLAIN_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})
_SRTP_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})


def _is_auxiliary(codec: Codec) -> bool:
    return codec.encoding_name.lower() in _AUXILIARY


class RtcpAttribute(NamedTuple):
    """The `a=rtcp` attribute (RFC 3605): the RTCP port, and address when it differs."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute:
        """Parse `53020` or `53020 IN IP4 126.16.64.4`."""
        parts = value.split()
        if len(parts) not in (1, 4):
            raise SDPError("bad rtcp attribute")
        port = _digits(parts[0], "bad rtcp attribute")
        if port > 65535:
            raise SDPError("bad rtcp attribute")
        if len(parts) == 1:
            return cls(port)
        return cls(port, Connection(parts[3], parts[2], parts[1]))

    def __str__(self) -> str:
        return str(self.port) if self.connection is None else f"{self.port} {self.connection}"


class CryptoAttribute(NamedTuple):
    """An SDES `a=crypto` attribute (RFC 4568 §9.1): tag, crypto-suite, key and session params.

    `key_params` are the `;`-separated `inline:<key||salt>[|lifetime][|MKI:length]` items.
    """

    tag: int
    suite: str
    key_params: tuple[str, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an `a=crypto` attribute."""
        parts = value.split()
        if len(parts) < 3:
            raise SDPError("bad crypto attribute")
        tag = _digits(parts[0], "bad crypto attribute")
        key_params = tuple(parts[2].split(";"))
        for key_param in key_params:
            method, sep, info = key_param.partition(":")
            if not sep or not method or not info:
                raise SDPError("bad crypto attribute")
        return cls(tag, parts[1], key_params, tuple(parts[3:]))

    @classmethod
    def inline(cls, tag: int, suite: str, key_salt: bytes) -> CryptoAttribute:
        """A crypto attribute carrying one `inline:` master key and salt (RFC 4568 §6.1)."""
        return cls(tag, suite, ("inline:" + base64.b64encode(key_salt).decode("ascii"),))

    def key_salt(self) -> bytes:
        """The master key and salt of the first `inline:` key parameter, decoded."""
        for key_param in self.key_params:
            method, _, info = key_param.partition(":")
            if method == "inline":
                try:
                    return base64.b64decode(info.split("|", 1)[0], validate=True)
                except (binascii.Error, ValueError):
                    raise SDPError("bad crypto key") from None
        raise SDPError("bad crypto key")

    def __str__(self) -> str:
        return " ".join(
            (str(self.tag), self.suite, ";".join(self.key_params), *self.session_params)
        )


@dataclass(frozen=True, slots=True, init=False)
class MediaDescription:
    """A media description (RFC 8866 §5.14): the `m=` line and its `i=`, `c=`, `b=`, `k=`, `a=`.

    `attributes` are the source of truth and keep peer order; `codecs`, `direction`, `ptime`,
    `rtcp_mux`, `rtcp` and `crypto` are derived from them (and the static payload types of
    RFC 3551) when the value is built, and cached by (proto, formats, attributes) since peers
    repeat them call after call. Only RTP profiles have codecs. `extra_lines` keeps lines of
    unknown type, as (type letter, value).
    """

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    extra_lines: tuple[tuple[str, str], ...] = ()
    codecs: tuple[Codec, ...] = field(init=False, repr=False, compare=False)
    """Formats of the m= line that have a mapping (rtpmap or static), in m= line order."""
    direction: Direction | None = field(init=False, repr=False, compare=False)
    """The media-level direction attribute, if any (see `SessionDescription.stream_direction`)."""
    ptime: int | None = field(init=False, repr=False, compare=False)
    """`a=ptime` in milliseconds (RFC 8866 §6.4)."""
    rtcp_mux: bool = field(init=False, repr=False, compare=False)
    """`a=rtcp-mux` (RFC 5761 §5.1.1)."""
    rtcp: RtcpAttribute | None = field(init=False, repr=False, compare=False)
    """`a=rtcp` (RFC 3605)."""
    crypto: tuple[CryptoAttribute, ...] = field(init=False, repr=False, compare=False)
    """SDES `a=crypto` attributes (RFC 4568), in preference order."""

    def __init__(
        self,
        media: str,
        port: int,
        proto: str,
        formats: tuple[str, ...],
        port_count: int | None = None,
        information: str | None = None,
        connection: Connection | None = None,
        bandwidths: tuple[Bandwidth, ...] = (),
        key: str | None = None,
        attributes: tuple[Attribute, ...] = (),
        extra_lines: tuple[tuple[str, str], ...] = (),
    ) -> None:
        # The fields through their slots' setters: half the cost of the generated __init__'s
        # object.__setattr__ per field (a call's SDP builds several of these).
        setters = _MEDIA_SETTERS
        setters[0](self, media)
        setters[1](self, port)
        setters[2](self, proto)
        setters[3](self, formats)
        setters[4](self, port_count)
        setters[5](self, information)
        setters[6](self, connection)
        setters[7](self, bandwidths)
        setters[8](self, key)
        setters[9](self, attributes)
        setters[10](self, extra_lines)
        derived_key = (proto, formats, attributes)
        derived = _DERIVED.get(derived_key)
        if derived is None:
            derived = _derive(proto, formats, attributes)
            if len(_DERIVED) >= 256:
                _DERIVED.clear()
            _DERIVED[derived_key] = derived
        setters[11](self, derived[0])
        setters[12](self, derived[1])
        setters[13](self, derived[2])
        setters[14](self, derived[3])
        setters[15](self, derived[4])
        setters[16](self, derived[5])

    @staticmethod
    def parse_media_line(value: str) -> tuple[str, int, int | None, str, tuple[str, ...]]:
        """Split the value of an `m=` line into media, port, port count, proto and formats."""
        parts = value.split()
        if len(parts) < 3:
            raise SDPError("bad m= line")
        port_text, _, count_text = parts[1].partition("/")
        port = _digits(port_text, "bad port")
        if port > 65535:
            raise SDPError("bad port")
        port_count = _digits(count_text, "bad port") if count_text else None
        return parts[0], port, port_count, parts[2], tuple(parts[3:])

    def attribute(self, name: str) -> str | None:
        """The value of the first attribute called `name` ("" for a property attribute)."""
        for attribute in self.attributes:
            if attribute.name == name:
                return "" if attribute.value is None else attribute.value
        return None

    def codec(self, payload_type: int) -> Codec | None:
        """The codec of a payload type of this stream."""
        for codec in self.codecs:
            if codec.payload_type == payload_type:
                return codec
        return None

    def lines(self) -> list[str]:
        """The lines of this media description, in RFC 8866 §5 order, without line ends."""
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [" ".join((f"m={self.media}", str(port), self.proto, *self.formats))]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        if self.bandwidths:
            lines.extend([f"b={bandwidth}" for bandwidth in self.bandwidths])
        if self.key is not None:
            lines.append(f"k={self.key}")
        if self.extra_lines:
            lines.extend([f"{letter}={value}" for letter, value in self.extra_lines])
        lines.extend(_attribute_lines(self.attributes))
        return lines

    def __str__(self) -> str:
        return "\r\n".join(self.lines()) + "\r\n"


def _slot_setters(cls: type, names: str) -> tuple[Callable[[object, object], None], ...]:
    return tuple(cls.__dict__[name].__set__ for name in names.split())


_MEDIA_SETTERS = _slot_setters(
    MediaDescription,
    "media port proto formats port_count information connection bandwidths key attributes "
    "extra_lines codecs direction ptime rtcp_mux rtcp crypto",
)

_new = tuple.__new__


def _attribute_lines(attributes: tuple[Attribute, ...]) -> list[str]:
    """The ``a=`` lines of ``attributes`` (what ``str(Attribute)`` writes, without a call each)."""
    return [f"a={name}" if value is None else f"a={name}:{value}" for name, value in attributes]


_PAYLOAD_TYPES = {str(payload_type): payload_type for payload_type in range(128)}
_CLOCK_RATES = {str(rate): rate for rate in (8000, 16000, 24000, 32000, 44100, 48000, 90000)}
_CHANNELS = {"1": 1, "2": 2}


def _payload_type(fmt: str) -> int:
    payload_type = _PAYLOAD_TYPES.get(fmt)
    if payload_type is None:
        raise SDPError("bad payload type")
    return payload_type


_RTPMAPS: dict[str, tuple[int, tuple[str, int, int]]] = {}


def _parse_rtpmap(value: str) -> tuple[int, tuple[str, int, int]]:
    rtpmap = _RTPMAPS.get(value)
    if rtpmap is None:
        rtpmap = _parse_rtpmap_value(value)
        if len(_RTPMAPS) >= 1024:
            _RTPMAPS.clear()
        _RTPMAPS[value] = rtpmap
    return rtpmap


def _parse_rtpmap_value(value: str) -> tuple[int, tuple[str, int, int]]:
    fmt, _, encoding = value.partition(" ")
    payload_type = _PAYLOAD_TYPES.get(fmt)
    if payload_type is None:
        payload_type = _payload_type(fmt.strip())
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        raise SDPError("bad rtpmap attribute")
    clock_rate = _CLOCK_RATES.get(parts[1]) or _digits(parts[1], "bad rtpmap attribute")
    if len(parts) == 2:
        return payload_type, (parts[0], clock_rate, 1)
    channels = _CHANNELS.get(parts[2]) or _digits(parts[2], "bad rtpmap attribute")
    return payload_type, (parts[0], clock_rate, channels)


_Derived = tuple[
    tuple[Codec, ...],
    Direction | None,
    int | None,
    bool,
    RtcpAttribute | None,
    tuple[CryptoAttribute, ...],
]
_DERIVED: dict[tuple[str, tuple[str, ...], tuple[Attribute, ...]], _Derived] = {}


def _derive(proto: str, formats: tuple[str, ...], attributes: tuple[Attribute, ...]) -> _Derived:
    direction: Direction | None = None
    ptime: int | None = None
    rtcp_mux = False
    rtcp: RtcpAttribute | None = None
    crypto: list[CryptoAttribute] = []
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, str] = {}
    is_rtp = "RTP/" in proto
    for name, value in attributes:
        if name == "rtpmap":
            if is_rtp:
                payload_type, rtpmap = _RTPMAPS.get(value or "") or _parse_rtpmap(value or "")
                if payload_type not in rtpmaps:
                    rtpmaps[payload_type] = rtpmap
        elif name == "fmtp":
            if is_rtp:
                fmt, _, params = (value or "").partition(" ")
                payload_type = _payload_type(fmt)
                if payload_type not in fmtps:
                    fmtps[payload_type] = params.strip()
        elif name in _DIRECTIONS:
            if direction is None:
                direction = _DIRECTIONS[name]
        elif name == "ptime":
            ptime = _parse_ptime(value)
        elif name == "rtcp-mux":
            rtcp_mux = True
        elif name == "rtcp":
            rtcp = RtcpAttribute.parse(value or "")
        elif name == "crypto":
            crypto.append(CryptoAttribute.parse(value or ""))
    codecs: list[Codec] = []
    if is_rtp:
        for fmt in formats:
            payload_type = _PAYLOAD_TYPES.get(fmt, -1)
            if payload_type < 0:
                raise SDPError("bad payload type")
            mapping = rtpmaps.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)
            if mapping is not None:
                codecs.append(
                    _new(Codec, (payload_type, *mapping, fmtps.get(payload_type) or None))
                )
    return tuple(codecs), direction, ptime, rtcp_mux, rtcp, tuple(crypto)


def _parse_ptime(value: str | None) -> int:
    try:
        ptime = float(value or "")
    except ValueError:
        raise SDPError("bad ptime attribute") from None
    if not 0 < ptime < 10000:
        raise SDPError("bad ptime attribute")
    return round(ptime)


_SESSION_LETTERS = frozenset("vosiuepcbtrzka")


@dataclass(frozen=True, slots=True, init=False)
class SessionDescription:
    """A session description (RFC 8866 §5).

    `parse()` accepts LF or CRLF line ends, trailing whitespace, a missing `t=` and lines of
    unknown type (kept in `extra_lines`); it raises `SDPError` for anything it cannot read.
    `str()` writes CRLF lines in RFC 8866 §5 order (`t=0 0` when there is no time description).
    """

    origin: Origin
    session_name: str = "-"
    media: tuple[MediaDescription, ...] = ()
    connection: Connection | None = None
    timings: tuple[Timing, ...] = (Timing(),)
    attributes: tuple[Attribute, ...] = ()
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    zone_adjustments: str | None = None
    key: str | None = None
    extra_lines: tuple[tuple[str, str], ...] = ()
    direction: Direction | None = field(init=False, repr=False, compare=False)
    """The session-level direction attribute, if any (RFC 3264 §5.1)."""

    def __init__(
        self,
        origin: Origin,
        session_name: str = "-",
        media: tuple[MediaDescription, ...] = (),
        connection: Connection | None = None,
        timings: tuple[Timing, ...] = (Timing(),),
        attributes: tuple[Attribute, ...] = (),
        information: str | None = None,
        uri: str | None = None,
        emails: tuple[str, ...] = (),
        phones: tuple[str, ...] = (),
        bandwidths: tuple[Bandwidth, ...] = (),
        zone_adjustments: str | None = None,
        key: str | None = None,
        extra_lines: tuple[tuple[str, str], ...] = (),
    ) -> None:
        # Through the slots' setters, as MediaDescription.
        setters = _SESSION_SETTERS
        setters[0](self, origin)
        setters[1](self, session_name)
        setters[2](self, media)
        setters[3](self, connection)
        setters[4](self, timings)
        setters[5](self, attributes)
        setters[6](self, information)
        setters[7](self, uri)
        setters[8](self, emails)
        setters[9](self, phones)
        setters[10](self, bandwidths)
        setters[11](self, zone_adjustments)
        setters[12](self, key)
        setters[13](self, extra_lines)
        direction: Direction | None = None
        for attribute in attributes:
            direction = _DIRECTIONS.get(attribute.name)
            if direction is not None:
                break
        setters[14](self, direction)

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        """Parse a session description (RFC 8866 §9); raise `SDPError` when malformed."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
        elif isinstance(data, str):
            text = data
        else:
            raise SDPError("SDP must be str or bytes")
        lines = [line for line in map(str.rstrip, text.split("\n")) if line]
        if not lines or not lines[0].startswith("v="):
            raise SDPError("missing v= line")
        if lines[0] != "v=0":
            raise SDPError("bad v= line")
        origin: Origin | None = None
        session_name: str | None = None
        connection: Connection | None = None
        information: str | None = None
        uri: str | None = None
        zone_adjustments: str | None = None
        key: str | None = None
        emails: list[str] = []
        phones: list[str] = []
        bandwidths: list[Bandwidth] = []
        timings: list[Timing] = []
        attributes: list[Attribute] = []
        extra: list[tuple[str, str]] = []
        media: list[MediaDescription] = []
        index = 1
        count = len(lines)
        while index < count:
            line = lines[index]
            if len(line) < 2 or line[1] != "=":
                raise SDPError("bad SDP line")
            letter = line[0]
            value = line[2:]
            if letter == "a":
                attributes.append(_parse_attribute(value))
            elif letter == "m":
                break
            elif letter == "o":
                if origin is not None:
                    raise SDPError("duplicate o= line")
                origin = Origin.parse(value)
            elif letter == "s":
                if session_name is not None:
                    raise SDPError("duplicate s= line")
                session_name = value
            elif letter == "c":
                if connection is not None:
                    raise SDPError("duplicate c= line")
                connection = Connection.parse(value)
            elif letter == "t":
                timings.append(Timing.parse(value))
            elif letter == "r":
                if not timings:
                    raise SDPError("bad r= line")
                last = timings[-1]
                timings[-1] = Timing(last.start_time, last.stop_time, (*last.repeats, value))
            elif letter == "b":
                bandwidths.append(Bandwidth.parse(value))
            elif letter == "e":
                emails.append(value)
            elif letter == "p":
                phones.append(value)
            elif letter == "v":
                raise SDPError("duplicate v= line")
            elif letter == "i":
                information = value
            elif letter == "u":
                uri = value
            elif letter == "z":
                zone_adjustments = value
            elif letter == "k":
                key = value
            else:
                extra.append((letter, value))
            index += 1
        if origin is None:
            raise SDPError("missing o= line")
        if session_name is None:
            raise SDPError("missing s= line")
        while index < count:
            index = _parse_media(lines, index, media)
        return cls(
            origin,
            session_name,
            tuple(media),
            connection,
            tuple(timings) if timings else (Timing(),),
            tuple(attributes),
            information,
            uri,
            tuple(emails),
            tuple(phones),
            tuple(bandwidths),
            zone_adjustments,
            key,
            tuple(extra),
        )

    def attribute(self, name: str) -> str | None:
        """The value of the first session-level attribute `name` ("" for a property attribute)."""
        for attribute in self.attributes:
            if attribute.name == name:
                return "" if attribute.value is None else attribute.value
        return None

    def stream_connection(self, media: MediaDescription) -> Connection | None:
        """The connection of a stream: its own `c=`, else the session's (RFC 8866 §5.7)."""
        return media.connection if media.connection is not None else self.connection

    def stream_direction(self, media: MediaDescription) -> Direction:
        """The direction of a stream: media level, else session level, else sendrecv (RFC 3264
        §5.1)."""
        if media.direction is not None:
            return media.direction
        return self.direction if self.direction is not None else Direction.SENDRECV

    def is_hold(self, media: MediaDescription | None = None) -> bool:
        """True when the writer holds a stream (RFC 3264 §8.4): sendonly or inactive, or the
        legacy `c=IN IP4 0.0.0.0`. Without `media`: every active stream is held."""
        if media is not None:
            connection = self.stream_connection(media)
            if connection is not None and connection.is_unspecified:
                return True
            return not self.stream_direction(media).receives
        active = [m for m in self.media if m.port != 0]
        return bool(active) and all(self.is_hold(m) for m in active)

    def lines(self) -> list[str]:
        """The lines of this description, in RFC 8866 §5 order, without line ends."""
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name or ' '}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        if self.emails:
            lines.extend([f"e={email}" for email in self.emails])
        if self.phones:
            lines.extend([f"p={phone}" for phone in self.phones])
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        if self.bandwidths:
            lines.extend([f"b={bandwidth}" for bandwidth in self.bandwidths])
        for timing in self.timings or (Timing(),):
            lines.append(f"t={timing.start_time} {timing.stop_time}")
            if timing.repeats:
                lines.extend([f"r={repeat}" for repeat in timing.repeats])
        if self.zone_adjustments is not None:
            lines.append(f"z={self.zone_adjustments}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        if self.extra_lines:
            lines.extend([f"{letter}={value}" for letter, value in self.extra_lines])
        if self.attributes:
            lines.extend(_attribute_lines(self.attributes))
        for media in self.media:
            lines.extend(media.lines())
        return lines

    def __str__(self) -> str:
        return "\r\n".join(self.lines()) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


_SESSION_SETTERS = _slot_setters(
    SessionDescription,
    "origin session_name media connection timings attributes information uri emails phones "
    "bandwidths zone_adjustments key extra_lines direction",
)


def _parse_attribute(value: str) -> Attribute:
    name, sep, attribute_value = value.partition(":")
    if not name:
        raise SDPError("bad a= line")
    return _new(Attribute, (name, attribute_value if sep else None))


def _parse_media(lines: list[str], index: int, out: list[MediaDescription]) -> int:
    media, port, port_count, proto, formats = MediaDescription.parse_media_line(lines[index][2:])
    information: str | None = None
    connection: Connection | None = None
    key: str | None = None
    bandwidths: list[Bandwidth] = []
    attributes: list[Attribute] = []
    extra: list[tuple[str, str]] = []
    index += 1
    count = len(lines)
    while index < count:
        line = lines[index]
        if line[1:2] != "=":
            raise SDPError("bad SDP line")
        letter = line[0]
        value = line[2:]
        if letter == "a":
            name, sep, attribute_value = value.partition(":")
            if not name:
                raise SDPError("bad a= line")
            attributes.append(_new(Attribute, (name, attribute_value if sep else None)))
        elif letter == "m":
            break
        elif letter == "c":
            if connection is not None:
                raise SDPError("duplicate c= line")
            connection = Connection.parse(value)
        elif letter == "b":
            bandwidths.append(Bandwidth.parse(value))
        elif letter == "i":
            information = value
        elif letter == "k":
            key = value
        elif letter in _SESSION_LETTERS:
            raise SDPError(f"misplaced {letter}= line")
        else:
            extra.append((letter, value))
        index += 1
    out.append(
        MediaDescription(
            media,
            port,
            proto,
            formats,
            port_count,
            information,
            connection,
            tuple(bandwidths),
            key,
            tuple(attributes),
            tuple(extra),
        )
    )
    return index


# Offer/answer (RFC 3264)


@dataclass(frozen=True, slots=True)
class MediaCapabilities:
    """What we can do for audio: codecs in our preference order, with the payload types we offer.

    Entries named telephone-event (RFC 4733) or CN (RFC 3389) are auxiliary: they are answered
    only at the clock rate of the chosen codec. `ptime` is the packet time we ask to receive;
    `rtcp_mux` says we offer RTP/RTCP multiplexing and accept it when offered (RFC 5761).
    """

    codecs: tuple[Codec, ...]
    ptime: int | None = 20
    rtcp_mux: bool = True

    def __post_init__(self) -> None:
        payload_types = [codec.payload_type for codec in self.codecs]
        if len(set(payload_types)) != len(payload_types):
            raise SDPError("duplicate payload type")
        if not any(not _is_auxiliary(codec) for codec in self.codecs):
            raise SDPError("no audio codec")


DEFAULT_CAPABILITIES = MediaCapabilities(
    (OPUS, PCMU, PCMA, G722, TELEPHONE_EVENT, TELEPHONE_EVENT_48000)
)
"""Opus, G.711 µ-law and A-law, G.722, and telephone-event at 8 and 48 kHz."""


@dataclass(frozen=True, slots=True)
class NegotiatedStream:
    """The outcome of offer/answer for one accepted audio stream (RFC 3264 §6, §7).

    `codec` and `telephone_event` are as the peer described them: the payload type to send and
    the fmtp the peer asked to receive. `direction` is ours (what we do), `ptime` the packet time
    to send. `local_crypto` and `remote_crypto` are the SDES keys for SRTP (RFC 4568), if any.
    """

    index: int
    codec: Codec
    telephone_event: Codec | None
    remote_address: str
    remote_port: int
    remote_rtcp_address: str
    remote_rtcp_port: int
    rtcp_mux: bool
    direction: Direction
    ptime: int = 20
    local_crypto: CryptoAttribute | None = None
    remote_crypto: CryptoAttribute | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """Our answer to an offer: the description to send and one stream per offered m= line
    (None where we rejected it with port 0, RFC 3264 §6)."""

    description: SessionDescription
    streams: tuple[NegotiatedStream | None, ...]

    @property
    def audio(self) -> NegotiatedStream:
        """The accepted audio stream (`negotiate` raises when there is none)."""
        for stream in self.streams:
            if stream is not None:
                return stream
        raise OfferAnswerError("no acceptable audio stream")


def _media_attributes(
    codecs: Sequence[Codec],
    ptime: int | None,
    direction: Direction,
    rtcp_mux: bool,
    crypto: CryptoAttribute | Sequence[CryptoAttribute] | None,
) -> tuple[Attribute, ...]:
    attributes = [Attribute("rtpmap", codec.rtpmap) for codec in codecs]
    attributes.extend(
        Attribute("fmtp", f"{codec.payload_type} {codec.fmtp}") for codec in codecs if codec.fmtp
    )
    if ptime is not None:
        attributes.append(Attribute("ptime", str(ptime)))
    attributes.append(Attribute(direction.value))
    if rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    if isinstance(crypto, CryptoAttribute):
        attributes.append(Attribute("crypto", str(crypto)))
    elif crypto:
        attributes.extend(Attribute("crypto", str(item)) for item in crypto)
    return tuple(attributes)


def create_offer(
    local: MediaCapabilities,
    session_id: int,
    version: int,
    address: str,
    port: int,
    *,
    direction: Direction = Direction.SENDRECV,
    crypto: Sequence[CryptoAttribute] = (),
    username: str = "-",
    session_name: str = "omlmedia",
) -> SessionDescription:
    """An offer with one audio stream of all our codecs (RFC 3264 §5).

    With `crypto` (SDES, RFC 4568) the stream is RTP/SAVP, otherwise RTP/AVP.
    """
    connection = Connection.for_address(address)
    media = MediaDescription(
        "audio",
        port,
        "RTP/SAVP" if crypto else "RTP/AVP",
        tuple(str(codec.payload_type) for codec in local.codecs),
        attributes=_media_attributes(local.codecs, local.ptime, direction, local.rtcp_mux, crypto),
    )
    return SessionDescription(
        Origin(username, session_id, version, address, connection.address_type),
        session_name,
        (media,),
        connection,
    )


def _offered_direction(offer: SessionDescription, media: MediaDescription) -> Direction:
    direction = offer.stream_direction(media)
    connection = offer.stream_connection(media)
    if connection is not None and connection.is_unspecified:
        return Direction.from_flags(direction.sends, False)
    return direction


def _rejected(media: MediaDescription) -> MediaDescription:
    return MediaDescription(media.media, 0, media.proto, media.formats or ("0",))


def _pick_auxiliary(
    offered: Sequence[Codec], local: Sequence[Codec], clock_rate: int
) -> list[tuple[Codec, Codec]]:
    picked: list[tuple[Codec, Codec]] = []
    names: set[str] = set()
    for remote in offered:
        name = remote.encoding_name.lower()
        if name not in _AUXILIARY or name in names or remote.clock_rate != clock_rate:
            continue
        for mine in local:
            if mine.matches(remote):
                picked.append((remote, mine))
                names.add(name)
                break
    return picked


def negotiate(
    offer: SessionDescription,
    local: MediaCapabilities,
    address: str,
    port: int,
    *,
    session_id: int,
    version: int,
    direction: Direction = Direction.SENDRECV,
    crypto: Sequence[CryptoAttribute] = (),
    accept_crypto: Callable[[CryptoAttribute], bool] | None = None,
    username: str = "-",
    session_name: str = "omlmedia",
) -> Answer:
    """Answer an offer (RFC 3264 §6): accept the first audio stream we can do, reject the rest.

    The codec is the first one of the offer (the offerer's preference) that we support, with the
    offerer's payload type; telephone-event and CN are added when offered at its clock rate. We
    answer our `ptime`, rtcp-mux only when offered, and the direction of RFC 3264 §6.1 given our
    wish `direction`. RTP/SAVP streams need an SDES suite of `crypto` (our keys; the answer
    carries the offer's tag); `accept_crypto` skips offered lines our SRTP cannot honour (an
    MKI, session parameters), RFC 4568 §7.1.2. Other streams get port 0, keeping the m= lines
    and their order. Raises `OfferAnswerError` (answer 488) when no audio stream is acceptable.
    """
    answered: list[MediaDescription] = []
    srtp_unmatched = False
    streams: list[NegotiatedStream | None] = []
    audio_offered = False
    accepted = False
    for index, media in enumerate(offer.media):
        result: tuple[MediaDescription, NegotiatedStream] | None = None
        connection = offer.stream_connection(media)
        srtp = media.proto in _SRTP_PROTOS
        if (
            not accepted
            and media.media == "audio"
            and media.port != 0
            and connection is not None
            and (media.proto in _PLAIN_PROTOS or srtp)
        ):
            audio_offered = True
            result = _answer_stream(
                offer,
                index,
                media,
                connection,
                local,
                port,
                direction,
                crypto if srtp else None,
                accept_crypto,
            )
            if result is None and srtp and _common_codec(media, local):
                srtp_unmatched = True
        if result is None:
            answered.append(_rejected(media))
            streams.append(None)
        else:
            answered.append(result[0])
            streams.append(result[1])
            accepted = True
    if not accepted:
        if srtp_unmatched:
            raise OfferAnswerError("no usable SRTP crypto suite")
        if audio_offered:
            raise OfferAnswerError("no common audio codec")
        raise OfferAnswerError("no acceptable audio stream")
    connection = Connection.for_address(address)
    sdp = SessionDescription(
        Origin(username, session_id, version, address, connection.address_type),
        session_name,
        tuple(answered),
        connection,
    )
    return Answer(sdp, tuple(streams))


def _common_codec(media: MediaDescription, local: MediaCapabilities) -> tuple[Codec, Codec] | None:
    """The first offered codec we support, with ours: (theirs, mine)."""
    for remote in media.codecs:
        if _is_auxiliary(remote):
            continue
        for mine in local.codecs:
            if not _is_auxiliary(mine) and mine.matches(remote):
                return remote, mine
    return None


def _answer_stream(
    offer: SessionDescription,
    index: int,
    media: MediaDescription,
    connection: Connection,
    local: MediaCapabilities,
    port: int,
    direction: Direction,
    crypto: Sequence[CryptoAttribute] | None,
    accept_crypto: Callable[[CryptoAttribute], bool] | None = None,
) -> tuple[MediaDescription, NegotiatedStream] | None:
    chosen = _common_codec(media, local)
    if chosen is None:
        return None
    local_crypto: CryptoAttribute | None = None
    remote_crypto: CryptoAttribute | None = None
    if crypto is not None:
        for offered in media.crypto:
            if accept_crypto is not None and not accept_crypto(offered):
                continue
            key = next((c for c in crypto if c.suite == offered.suite), None)
            if key is not None:
                local_crypto = key._replace(tag=offered.tag)
                remote_crypto = offered
                break
        if local_crypto is None:
            return None
    pairs = [chosen, *_pick_auxiliary(media.codecs, local.codecs, chosen[0].clock_rate)]
    codecs = [remote._replace(fmtp=mine.fmtp or remote.fmtp) for remote, mine in pairs]
    ours = answer_direction(_offered_direction(offer, media), direction)
    rtcp_mux = media.rtcp_mux and local.rtcp_mux
    description = MediaDescription(
        media.media,
        port,
        media.proto,
        tuple(str(codec.payload_type) for codec in codecs),
        attributes=_media_attributes(
            codecs, local.ptime or media.ptime, ours, rtcp_mux, local_crypto
        ),
    )
    telephone_event = next(
        (r for r, _ in pairs[1:] if r.encoding_name.lower() == "telephone-event"), None
    )
    stream = _stream(
        index,
        media,
        connection,
        chosen[0],
        telephone_event,
        ours,
        rtcp_mux,
        local_crypto,
        remote_crypto,
    )
    return description, stream


def _stream(
    index: int,
    remote: MediaDescription,
    connection: Connection,
    codec: Codec,
    telephone_event: Codec | None,
    direction: Direction,
    rtcp_mux: bool,
    local_crypto: CryptoAttribute | None,
    remote_crypto: CryptoAttribute | None,
) -> NegotiatedStream:
    rtcp_address = connection.address
    if rtcp_mux:
        rtcp_port = remote.port
    elif remote.rtcp is not None:
        rtcp_port = remote.rtcp.port
        if remote.rtcp.connection is not None:
            rtcp_address = remote.rtcp.connection.address
    else:
        rtcp_port = remote.port + 1
    return NegotiatedStream(
        index,
        codec,
        telephone_event,
        connection.address,
        remote.port,
        rtcp_address,
        rtcp_port,
        rtcp_mux,
        direction,
        remote.ptime or 20,
        local_crypto,
        remote_crypto,
    )


def process_answer(
    offer: SessionDescription, answer: SessionDescription
) -> tuple[NegotiatedStream | None, ...]:
    """Read the answer to our offer (RFC 3264 §7): one stream per m= line, None if rejected.

    The codec is the first of the answer that we offered (with the answerer's payload type), the
    direction is ours as the answer allows it, rtcp-mux holds when both sides have it. Raises
    `OfferAnswerError` when the answer does not fit the offer (m= lines, codecs, crypto tags).
    """
    if len(answer.media) != len(offer.media):
        raise OfferAnswerError("answer does not match offer")
    streams: list[NegotiatedStream | None] = []
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        if theirs.media != ours.media:
            raise OfferAnswerError("answer does not match offer")
        connection = answer.stream_connection(theirs)
        if ours.port == 0 or theirs.port == 0 or not ours.codecs:
            streams.append(None)
            continue
        if connection is None:
            raise OfferAnswerError("answer has no connection address")
        codec = next(
            (
                c
                for c in theirs.codecs
                if not _is_auxiliary(c) and any(c.matches(o) for o in ours.codecs)
            ),
            None,
        )
        if codec is None:
            raise OfferAnswerError("answer codec was not offered")
        telephone_event = next(
            (
                c
                for c in theirs.codecs
                if c.encoding_name.lower() == "telephone-event"
                and c.clock_rate == codec.clock_rate
                and any(c.matches(o) for o in ours.codecs)
            ),
            None,
        )
        local_crypto: CryptoAttribute | None = None
        remote_crypto: CryptoAttribute | None = None
        if ours.crypto:
            remote_crypto = theirs.crypto[0] if theirs.crypto else None
            if remote_crypto is not None:
                local_crypto = next(
                    (
                        c
                        for c in ours.crypto
                        if c.tag == remote_crypto.tag and c.suite == remote_crypto.suite
                    ),
                    None,
                )
            if local_crypto is None:
                raise OfferAnswerError("answer crypto was not offered")
        theirs_direction = _offered_direction(answer, theirs)
        direction = answer_direction(theirs_direction, offer.stream_direction(ours))
        stream = _stream(
            index,
            theirs,
            connection,
            codec,
            telephone_event,
            direction,
            ours.rtcp_mux and theirs.rtcp_mux,
            local_crypto,
            remote_crypto,
        )
        streams.append(stream)
    return tuple(streams)


def _with_direction(media: MediaDescription, direction: Direction) -> MediaDescription:
    if media.port == 0:
        return media
    attributes = [a for a in media.attributes if a.name not in _DIRECTIONS]
    position = next(
        (i for i, a in enumerate(media.attributes) if a.name in _DIRECTIONS), len(attributes)
    )
    attributes.insert(position, Attribute(direction.value))
    return replace(media, attributes=tuple(attributes))


class SDPSession:
    """The SDP side of one dialog across re-INVITEs (RFC 3264 §8).

    Keeps the o= session id and version, our last description (`local`) and the peer's
    (`remote`). A new description gets version + 1 when it differs from the previous one and
    reuses the previous version when it is identical (RFC 3264 §8: "If the version in the origin
    line does not increment, the SDP MUST be identical"). Re-offers (hold, resume) are our
    previous description with a new direction, so codecs and payload types stay the same.
    """

    def __init__(
        self,
        capabilities: MediaCapabilities,
        address: str,
        port: int,
        *,
        session_id: int,
        version: int = 1,
        crypto: Sequence[CryptoAttribute] = (),
        username: str = "-",
    ) -> None:
        self.capabilities = capabilities
        self.address = address
        self.port = port
        self.session_id = session_id
        self.version = version
        self.crypto = tuple(crypto)
        self.username = username
        self.direction = Direction.SENDRECV
        self.local: SessionDescription | None = None
        self.remote: SessionDescription | None = None
        self.offer: SessionDescription | None = None

    def _commit(self, description: SessionDescription) -> SessionDescription:
        if self.local is not None:
            previous = self.local.origin.session_version
            same = replace(
                description, origin=description.origin._replace(session_version=previous)
            )
            if same == self.local:
                return self.local
            self.version = previous + 1
            description = replace(
                description, origin=description.origin._replace(session_version=self.version)
            )
        self.local = description
        return description

    def create_offer(self, direction: Direction = Direction.SENDRECV) -> SessionDescription:
        """Our offer: all our codecs at first, then our previous description with `direction`."""
        self.direction = direction
        if self.local is None:
            offer = create_offer(
                self.capabilities,
                self.session_id,
                self.version,
                self.address,
                self.port,
                direction=direction,
                crypto=self.crypto,
                username=self.username,
            )
        else:
            media = tuple(_with_direction(m, direction) for m in self.local.media)
            attributes = tuple(a for a in self.local.attributes if a.name not in _DIRECTIONS)
            offer = replace(self.local, media=media, attributes=attributes)
        self.offer = self._commit(offer)
        return self.offer

    def hold_offer(self) -> SessionDescription:
        """A re-offer that puts the peer on hold (RFC 3264 §8.4): sendonly, or inactive when our
        previous description was recvonly (the peer holds us too)."""
        sends = True
        if self.local is not None:
            active = [m for m in self.local.media if m.port != 0]
            sends = not active or self.local.stream_direction(active[0]).sends
        offer = self.create_offer(Direction.SENDONLY if sends else Direction.INACTIVE)
        self.direction = Direction.SENDONLY
        return offer

    def resume_offer(self) -> SessionDescription:
        """A re-offer that takes the call off hold: sendrecv (RFC 3264 §8.4)."""
        return self.create_offer(Direction.SENDRECV)

    def process_answer(self, answer: SessionDescription) -> tuple[NegotiatedStream | None, ...]:
        """Read the answer to our pending offer (RFC 3264 §7)."""
        if self.offer is None:
            raise OfferAnswerError("no offer pending")
        streams = process_answer(self.offer, answer)
        self.remote = answer
        self.offer = None
        return streams

    def negotiate(self, offer: SessionDescription, direction: Direction | None = None) -> Answer:
        """Answer an offer or re-offer (RFC 3264 §6, §8); we keep holding if we were holding."""
        if direction is not None:
            self.direction = direction
        answer = negotiate(
            offer,
            self.capabilities,
            self.address,
            self.port,
            session_id=self.session_id,
            version=self.version if self.local is None else self.local.origin.session_version,
            direction=self.direction,
            crypto=self.crypto,
            username=self.username,
        )
        description = self._commit(answer.description)
        self.remote = offer
        return Answer(description, answer.streams)
