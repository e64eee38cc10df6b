"""SRTP and SRTCP (RFC 3711) keyed by SDES `a=crypto` attributes (RFC 4568), on `pylibsrtp`.

Keying. An offer carries `offer_crypto()`: one fresh `a=crypto` line per suite we support, in our
preference order. An answerer calls `answer_crypto(media.crypto)`: the first offered line (the
offerer's preference, RFC 4568 §7.1.2) whose suite we support and whose parameters we can honour,
paired with a fresh local key of that suite under the offered tag. Lines we cannot honour are
skipped, never fatal: a suite we do not know, session parameters other than `WSH=` (RFC 4568
§6.3.7: `KDR=`, `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`, `FEC_ORDER=`,
`FEC_KEY=` change the packet format or the key schedule, which `pylibsrtp` does not expose),
several keys or an MKI (RFC 4568 §6.1: every packet would then carry an MKI field), a method
other than `inline`, or a key of the wrong length. A lifetime on a single key is accepted: it
binds the sender of that key, who must re-key in time, not us. Keys are read liberally: base64
with its `=` padding left out is accepted. `is_usable(crypto)` is the test on one line.

Sessions. `SrtpSession(local, remote)` holds two libsrtp contexts: an outbound one keyed by our
`local` attribute (SSRC "any outbound") and an inbound one keyed by the peer's `remote` attribute
(SSRC "any inbound", so an SSRC change after a transfer needs nothing). `protect_rtp`,
`protect_rtcp`, `unprotect_rtp` and `unprotect_rtcp` take and return whole datagrams. Every
failure, whatever its cause (authentication, replay, truncation, garbage, an oversized packet, a
repeated outbound index), raises `SrtpError` and nothing else, so a per-packet handler counts it
and drops the packet. `pylibsrtp` works in a 1500-byte buffer: `protect_rtp` takes RTP packets of
up to 1356 bytes (1500 less the largest trailer), ample for audio. A leg keys itself with
`SrtpSession.for_stream(stream, current)` after each offer/answer, and answers with
`session_crypto(current)` (its key first, then fresh ones). A re-INVITE that brings new keys
calls `session.rekey(local, remote)`, which returns a new session: a direction whose key changed
starts a new context (new rollover counter and replay window); a direction whose key did not change
keeps its context, since restarting it under the same key would restart the rollover counter and
could reuse keystream (RFC 3711 §9.1).

Suites. AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2), AEAD_AES_128_GCM
and AEAD_AES_256_GCM (RFC 7714 §12). AES_256_CM_HMAC_SHA1_80 (RFC 6188) is not offered: libsrtp
has it, but `pylibsrtp` 1.0 only exposes the four DTLS-SRTP profiles above.

Measured with `time.perf_counter` (best of 7 runs of 5000 packets) on the 2-core development
machine while other jobs ran (`sum(range(1000))` took 17-18 µs there), for a 172-byte G.711
packet: `protect_rtp` 3.0 µs and `unprotect_rtp` 2.9 µs with AES_CM_128_HMAC_SHA1_80 (bare
`pylibsrtp.Session.protect` measured 3.1 µs in the same conditions: the wrapper adds nothing
measurable), 2.5 µs and 3.0 µs with AEAD_AES_128_GCM; a rejected packet (bad tag) 3.9-4.5 µs,
the raised exception included; `answer_crypto` 4.7 µs; `SrtpSession()` 53 µs (two libsrtp
contexts and their key derivation), once per call and per re-key.

Command: `PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py srtp` (prints these figures).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from typing import NamedTuple

import pylibsrtp

from sip.sdp import CryptoAttribute, NegotiatedStream

__all__ = [
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AES_CM_128_HMAC_SHA1_32",
    "AES_CM_128_HMAC_SHA1_80",
    "DEFAULT_SUITES",
    "SUITES",
    "SrtpError",
    "SrtpKey",
    "SrtpSession",
    "SrtpSuite",
    "UnsupportedCryptoError",
    "answer_crypto",
    "generate_crypto",
    "is_usable",
    "offer_crypto",
    "session_crypto",
]

AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
"""AES-128 counter mode, 80-bit HMAC-SHA1 tag (RFC 4568 §6.2.1); the mandatory suite."""
AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
"""As above with a 32-bit tag on SRTP; SRTCP keeps 80 bits (RFC 4568 §6.2.2)."""
AEAD_AES_128_GCM = "AEAD_AES_128_GCM"
"""AES-128 GCM with a 16-byte tag and a 12-byte master salt (RFC 7714 §12)."""
AEAD_AES_256_GCM = "AEAD_AES_256_GCM"
"""AES-256 GCM with a 16-byte tag and a 12-byte master salt (RFC 7714 §12)."""


class SrtpSuite(NamedTuple):
    """A crypto-suite: its SDES name, its libsrtp profile and the lengths it needs, in bytes."""

    name: str
    profile: int
    key_length: int
    salt_length: int

    @property
    def key_salt_length(self) -> int:
        """The length of the `inline:` value once decoded: master key then master salt."""
        return self.key_length + self.salt_length


SUITES: dict[str, SrtpSuite] = {
    suite.name: suite
    for suite in (
        SrtpSuite(AES_CM_128_HMAC_SHA1_80, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
        SrtpSuite(AES_CM_128_HMAC_SHA1_32, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14),
        SrtpSuite(AEAD_AES_128_GCM, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
        SrtpSuite(AEAD_AES_256_GCM, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
    )
}
"""The suites we can key, by SDES name."""

DEFAULT_SUITES: tuple[str, ...] = (
    AES_CM_128_HMAC_SHA1_80,
    AES_CM_128_HMAC_SHA1_32,
    AEAD_AES_128_GCM,
    AEAD_AES_256_GCM,
)
"""What we offer and accept, in our preference order: the mandatory suite first, since every
SDES peer has it and some mishandle the rest."""

_LIFETIME = re.compile(r"(?:2\^)?[0-9]{1,20}")
_WINDOW_SIZE_HINT = re.compile(r"WSH=([0-9]{1,9})")
_MIN_WINDOW = 64
"""The smallest replay window RFC 3711 §3.3.2 allows; a smaller WSH= hint is raised to it."""
_MAX_WINDOW = 0x7FFF
"""The largest replay window libsrtp accepts."""


class SrtpError(ValueError):
    """A packet that SRTP could not protect or unprotect; the caller counts and drops it."""


class UnsupportedCryptoError(ValueError):
    """An `a=crypto` attribute we cannot key a session with (RFC 4568 §6, §7.1.2)."""


class SrtpKey(NamedTuple):
    """What one `a=crypto` attribute keys: the suite, the master key and salt, and the replay
    window (from the `WSH=` session parameter, RFC 4568 §6.3.7, at least 64)."""

    suite: SrtpSuite
    key_salt: bytes
    window_size: int = 128

    @classmethod
    def from_crypto(cls, crypto: CryptoAttribute) -> SrtpKey:
        """Read the key of an attribute; raises `UnsupportedCryptoError` when we cannot use it."""
        suite = SUITES.get(crypto.suite)
        if suite is None:
            raise UnsupportedCryptoError("unsupported crypto suite")
        window_size = 128
        for param in crypto.session_params:
            match = _WINDOW_SIZE_HINT.fullmatch(param)
            if match is None:
                raise UnsupportedCryptoError("unsupported crypto session parameter")
            window_size = min(max(int(match[1]), _MIN_WINDOW), _MAX_WINDOW)
        if len(crypto.key_params) != 1:
            raise UnsupportedCryptoError("unsupported crypto key parameter")
        method, _, info = crypto.key_params[0].partition(":")
        key, *rest = info.split("|")
        if method != "inline" or len(rest) > 1 or (rest and not _LIFETIME.fullmatch(rest[0])):
            raise UnsupportedCryptoError("unsupported crypto key parameter")
        try:
            key_salt = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise UnsupportedCryptoError("bad crypto key") from None
        if len(key_salt) != suite.key_salt_length:
            raise UnsupportedCryptoError("bad crypto key length")
        return cls(suite, key_salt, window_size)

    def policy(self, ssrc_type: int) -> pylibsrtp.Policy:
        """A libsrtp policy for every SSRC of one direction."""
        policy = pylibsrtp.Policy(self.key_salt, ssrc_type, srtp_profile=self.suite.profile)
        policy.window_size = self.window_size
        return policy


def generate_crypto(tag: int, suite: str = AES_CM_128_HMAC_SHA1_80) -> CryptoAttribute:
    """A fresh `a=crypto` attribute: a random master key and salt (`secrets`) of `suite`."""
    known = SUITES.get(suite)
    if known is None:
        raise UnsupportedCryptoError("unsupported crypto suite")
    return CryptoAttribute.inline(tag, suite, secrets.token_bytes(known.key_salt_length))


def offer_crypto(suites: Sequence[str] = DEFAULT_SUITES) -> tuple[CryptoAttribute, ...]:
    """Fresh attributes for an offer, one per suite, tagged 1, 2, 3... (RFC 4568 §7.1.1)."""
    return tuple(generate_crypto(tag, suite) for tag, suite in enumerate(suites, 1))


def session_crypto(current: object = None) -> tuple[CryptoAttribute, ...]:
    """The SDES keys to answer an offer or re-offer with on a leg whose session is `current`
    (RFC 4568 §7.1.2): its local key first, kept when its suite is offered again (§7.1.4), then a
    fresh key of every suite. A leg without an `SrtpSession` gets fresh keys only."""
    fresh = offer_crypto()
    if isinstance(current, SrtpSession):
        return (current.local, *fresh)
    return fresh


def answer_crypto(
    offered: Sequence[CryptoAttribute], suites: Sequence[str] = DEFAULT_SUITES
) -> tuple[CryptoAttribute, CryptoAttribute] | None:
    """Choose among offered attributes (RFC 4568 §7.1.2): `(local, remote)` or None.

    `remote` is the first offered attribute of one of `suites` that `SrtpKey.from_crypto`
    accepts; `local` a fresh key of its suite under its tag, for our answer. None when no line
    is usable: the stream must then be rejected (or the call answered 488).
    """
    for crypto in offered:
        if is_usable(crypto, suites):
            return generate_crypto(crypto.tag, crypto.suite), crypto
    return None


def is_usable(crypto: CryptoAttribute, suites: Sequence[str] = DEFAULT_SUITES) -> bool:
    """True when `crypto` names one of `suites` and `SrtpKey.from_crypto` accepts it."""
    if crypto.suite not in suites:
        return False
    try:
        SrtpKey.from_crypto(crypto)
    except UnsupportedCryptoError:
        return False
    return True


def _rejected(error: Exception) -> SrtpError:
    reason = str(error)
    if reason == "authentication failure":
        return SrtpError("SRTP authentication failed")
    if reason.startswith("replay check failed") or reason == "packet index is too old to consider":
        return SrtpError("SRTP packet is a replay")
    if reason == "packet is too long":
        return SrtpError("SRTP packet is too long")
    return SrtpError("SRTP packet is malformed")


class SrtpSession:
    """SRTP for one leg: our key protects what we send, the peer's unprotects what we receive.

    `local` is the attribute of our SDP, `remote` the peer's; both must name the same suite
    (RFC 4568 §7.1.2). Raises `UnsupportedCryptoError` for an attribute `SrtpKey` refuses.
    """

    __slots__ = ("_inbound", "_outbound", "local", "remote")

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        local_key = SrtpKey.from_crypto(local)
        remote_key = SrtpKey.from_crypto(remote)
        if local_key.suite != remote_key.suite:
            raise UnsupportedCryptoError("crypto suites differ")
        self.local = local
        """Our attribute: keys `protect_rtp` and `protect_rtcp`."""
        self.remote = remote
        """The peer's attribute: keys `unprotect_rtp` and `unprotect_rtcp`."""
        self._outbound = pylibsrtp.Session(local_key.policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._inbound = pylibsrtp.Session(remote_key.policy(pylibsrtp.Policy.SSRC_ANY_INBOUND))

    @classmethod
    def for_stream(cls, stream: NegotiatedStream, current: object = None) -> SrtpSession | None:
        """The session a negotiated stream keys (RFC 4568), or None when it is plain RTP.

        `current` is the leg's session so far (any object: a leg may carry another context, or
        none): when it is an `SrtpSession`, a direction whose key did not change keeps its
        context (`rekey`, RFC 4568 §7.1.4). Raises `UnsupportedCryptoError` for unusable keys.
        """
        if stream.local_crypto is None or stream.remote_crypto is None:
            return None
        if isinstance(current, SrtpSession):
            return current.rekey(stream.local_crypto, stream.remote_crypto)
        return cls(stream.local_crypto, stream.remote_crypto)

    @property
    def suite(self) -> str:
        """The crypto-suite name."""
        return self.local.suite

    def rekey(self, local: CryptoAttribute, remote: CryptoAttribute) -> SrtpSession:
        """The session after a re-INVITE (RFC 4568 §7.1.4): `self` when neither key changed,
        otherwise a new session that keeps the context of the direction whose key is the same."""
        if _same_key(local, self.local) and _same_key(remote, self.remote):
            return self
        session = SrtpSession(local, remote)
        if _same_key(local, self.local):
            session._outbound = self._outbound
        if _same_key(remote, self.remote):
            session._inbound = self._inbound
        return session

    def protect_rtp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTP packet; raises `SrtpError`."""
        try:
            return self._outbound.protect(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as error:
            raise _rejected(error) from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTCP compound packet; raises `SrtpError`."""
        try:
            return self._outbound.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as error:
            raise _rejected(error) from None

    def unprotect_rtp(self, packet: bytes) -> bytes:
        """Check and decrypt an SRTP packet; raises `SrtpError` when it fails authentication,
        is a replay, or is not SRTP at all."""
        try:
            return self._inbound.unprotect(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as error:
            raise _rejected(error) from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Check and decrypt an SRTCP packet; raises `SrtpError` as `unprotect_rtp` does."""
        try:
            return self._inbound.unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError, TypeError) as error:
            raise _rejected(error) from None


def _same_key(a: CryptoAttribute, b: CryptoAttribute) -> bool:
    return (a.suite, a.key_params, a.session_params) == (b.suite, b.key_params, b.session_params)
