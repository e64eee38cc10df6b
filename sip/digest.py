"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760, RFC 2617, RFC 2069).

Theory of operation. :class:`DigestServer` issues stateless nonces: eight bytes of issue time
(microseconds), eight random bytes, a truncated HMAC-SHA-256 of both under the server secret and a
second one that binds the nonce to what it was issued for (a UAS passes the Request-URI, RFC 3261
§22.4), in URL-safe base64. Verifying a nonce needs no table; only the highest nonce-count seen per
nonce is kept (once a valid response proves the sender knows the password), and entries are
forgotten when their nonce expires, so memory stays bounded. Stored secrets are
HA1 = H(username ":" realm ":" password) for each hash function (MD5, SHA-256); the -sess variants
are derived from them per request.

:class:`DigestClient` answers a ``WWW-Authenticate`` / ``Proxy-Authenticate`` challenge with the
value of an ``Authorization`` / ``Proxy-Authorization`` header.

Malformed header values raise :class:`DigestError` (a ``ValueError``) from the parsers and the
client; :meth:`DigestServer.verify` never raises on bad input and reports it as
:attr:`AuthReason.MALFORMED`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import os
import re
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

__all__ = [
    "ALGORITHMS",
    "AuthReason",
    "AuthResult",
    "Challenge",
    "DigestClient",
    "DigestError",
    "DigestServer",
    "ha1",
    "parse_auth_params",
    "parse_challenge",
]


class DigestError(ValueError):
    """A malformed or unusable ``WWW-Authenticate`` / ``Authorization`` value (RFC 7616 §3.3)."""


_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")
"""Hash algorithms supported, by preference (RFC 8760 §2.4: SHA-256 first, MD5 for older peers)."""

_MAX_HEADER = 4096
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]+|\Z)")
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_AUTH_PARAM = rf'[ \t]*{_TOKEN}[ \t]*=[ \t]*(?:{_QUOTED}|[^\s,"]+)[ \t]*'
_PARAM_LIST = re.compile(rf"(?:{_AUTH_PARAM},)*{_AUTH_PARAM}")
_PARAM = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]+))')
_QUOTED_PAIR = re.compile(r"\\(.)")
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_MAC_BYTES = 16
_BIND_BYTES = 10
_NONCE_BYTES = 16 + _MAC_BYTES + _BIND_BYTES
_NONCE_CHARS = 56


def _hash(algorithm: str, data: str) -> str:
    return _HASHES[algorithm](data.encode("utf-8", "surrogatepass")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "SHA-256") -> str:
    """Return HA1 = H(username ":" realm ":" password) in lower-case hex (RFC 7616 §3.4.2).

    ``algorithm`` is ``MD5`` or ``SHA-256`` (case-insensitive); anything else raises
    :class:`DigestError`. This is the value to store instead of a password.
    """
    return _hash(_base_algorithm(algorithm), f"{username}:{realm}:{password}")


def _base_algorithm(algorithm: str) -> str:
    name = algorithm.upper()
    if name not in _HASHES:
        raise DigestError("Digest algorithm is not supported")
    return name


def _split_algorithm(algorithm: str) -> tuple[str, bool]:
    name = algorithm.upper()
    sess = name.endswith("-SESS")
    if sess:
        name = name[:-5]
    if name not in _HASHES:
        raise DigestError("Digest algorithm is not supported")
    return name, sess


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest k=v, k="v"`` into the scheme and its parameters (RFC 7616 §3.3, §3.4).

    Parameter names are lower-cased; quoted values are unescaped. Raises :class:`DigestError` on
    anything that does not follow the ``auth-param`` grammar or repeats a parameter.
    """
    if len(value) > _MAX_HEADER:
        raise DigestError("Authentication header is too long")
    match = _SCHEME.match(value)
    if match is None:
        raise DigestError("Authentication header is not valid")
    scheme = match.group(1)
    rest = value[match.end() :]
    params: dict[str, str] = {}
    if not rest.strip(" \t"):
        return scheme, params
    if _PARAM_LIST.fullmatch(rest) is None:
        raise DigestError("Authentication header is not valid")
    found = _PARAM.findall(rest)
    for name, quoted, token in found:
        if token:
            params[name.lower()] = token
        elif "\\" in quoted:
            params[name.lower()] = _QUOTED_PAIR.sub(r"\1", quoted)
        else:
            params[name.lower()] = quoted
    if len(params) != len(found):
        raise DigestError("Authentication parameter is repeated")
    return scheme, params


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed Digest challenge (RFC 7616 §3.3): ``WWW-Authenticate`` or ``Proxy-Authenticate``."""

    realm: str
    nonce: str
    algorithm: str
    """Upper-case algorithm name as sent, ``MD5`` when absent (RFC 7616 §3.3)."""
    qop: tuple[str, ...]
    """Quality-of-protection options offered, lower-case; empty for RFC 2069 servers."""
    opaque: str | None
    stale: bool

    @property
    def supported(self) -> bool:
        """True when :class:`DigestClient` can answer it (MD5, SHA-256 and their -sess variants)."""
        try:
            _split_algorithm(self.algorithm)
        except DigestError:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop


def parse_challenge(value: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 7616 §3.3).

    Raises :class:`DigestError` when it is not a Digest challenge with a realm and a nonce.
    """
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise DigestError("Authentication scheme is not Digest")
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None or nonce is None:
        raise DigestError("Digest challenge lacks realm or nonce")
    qop = params.get("qop")
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=tuple(q.strip().lower() for q in qop.split(",") if q.strip()) if qop else (),
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def _quote(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise DigestError("Digest value contains a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    ha2_hex: str,
) -> str:
    if qop is None:
        return _hash(algorithm, f"{ha1_hex}:{nonce}:{ha2_hex}")
    return _hash(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2_hex}")


class AuthReason(StrEnum):
    """Why :meth:`DigestServer.verify` accepted or refused credentials."""

    OK = "ok"
    INVALID = "invalid"
    """Unknown user or wrong password: deliberately the same answer for both."""
    STALE = "stale"
    """Correct credentials for an expired nonce: re-challenge with ``stale=true``."""
    REPLAY = "replay"
    """A nonce-count already used (or not increasing) for this nonce."""
    NONCE = "nonce"
    """A nonce this server did not issue (tampered, or another secret)."""
    REALM = "realm"
    ALGORITHM = "algorithm"
    QOP = "qop"
    OPAQUE = "opaque"
    URI = "uri"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of :meth:`DigestServer.verify` (RFC 7616 §3.5).

    ``username`` is the claimed user name whenever one could be read, whether or not it exists.
    When ``stale`` is true, answer 401/407 with ``DigestServer.challenge(now, stale=True)``.
    """

    ok: bool
    username: str | None
    stale: bool
    reason: AuthReason


class DigestServer:
    """The challenging side of RFC 7616 Digest for SIP (RFC 3261 §22.1, §22.4; RFC 8760).

    ``secret`` keys the nonce HMAC (32 random bytes are plenty; several processes sharing one
    secret accept each other's nonces). Nonces older than ``nonce_ttl`` seconds are stale.
    ``algorithms`` are challenged in the order given (RFC 8760 §2.4 wants the preferred first;
    clients that read only the first challenge and know only MD5 need MD5 first).
    ``max_nonces`` bounds the nonce-count table: when full, the oldest nonce is forgotten and every
    nonce issued up to it is treated as stale from then on, so a forgotten nonce cannot be replayed.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ALGORITHMS,
        *,
        allow_no_qop: bool = True,
        max_nonces: int = 262144,
    ) -> None:
        if not secret:
            raise DigestError("Digest secret is empty")
        if nonce_ttl <= 0 or max_nonces <= 0:
            raise DigestError("Digest limits must be positive")
        names = [_base_algorithm(a) for a in algorithms]
        if not names:
            raise DigestError("Digest algorithm is not supported")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms: tuple[str, ...] = tuple(dict.fromkeys(names))
        self.allow_no_qop = allow_no_qop
        self.max_nonces = max_nonces
        key = hmac.new(secret, b"omlmedia-digest-nonce", hashlib.sha256).digest()
        self._mac_base = hmac.new(key, digestmod=hashlib.sha256)
        self.opaque = base64.urlsafe_b64encode(
            hmac.new(secret, b"omlmedia-digest-opaque:" + realm.encode(), hashlib.sha256).digest()[
                :12
            ]
        ).decode()
        self._ttl_us = int(nonce_ttl * 1_000_000)
        self._seen: dict[bytes, int] = {}
        self._expiry: list[tuple[int, bytes]] = []
        self._forgotten_until = -1
        self._dummy_ha1 = {name: _hash(name, secrets.token_hex(16)) for name in _HASHES}
        realm_q = _quote(realm)
        self._challenge_prefix = f"Digest realm={realm_q}, nonce="
        self._challenge_suffix = {
            name: f', opaque="{self.opaque}", algorithm={name}, qop="auth"'
            for name in self.algorithms
        }

    def _mac(self, head: bytes) -> bytes:
        mac = self._mac_base.copy()
        mac.update(head)
        return mac.digest()[:_MAC_BYTES]

    def _binding(self, head: bytes, bound_to: str) -> bytes:
        mac = self._mac_base.copy()
        mac.update(head + b"\x00bound-to\x00" + bound_to.encode("utf-8", "surrogatepass"))
        return mac.digest()[:_BIND_BYTES]

    @property
    def tracked_nonces(self) -> int:
        """How many nonces currently have a remembered nonce-count."""
        return len(self._seen)

    def new_nonce(self, now: float, bound_to: str = "") -> str:
        """Return a fresh nonce: issue time, salt, HMAC and binding tag, base64url (RFC 7616 §3.3
        ``nonce``).

        The binding tag is a second HMAC over ``bound_to`` (a SIP UAS passes the Request-URI it
        challenges, as Kamailio's ``auth_checks`` do): credentials made with this nonce are
        accepted only for a request with that same value, see :meth:`verify`.
        """
        head = struct.pack(">Q", max(0, int(now * 1_000_000))) + os.urandom(8)
        raw = head + self._mac(head) + self._binding(head, bound_to)
        return base64.urlsafe_b64encode(raw).decode()

    def challenge(self, now: float, stale: bool = False, *, bound_to: str = "") -> list[str]:
        """Header values for a 401 ``WWW-Authenticate`` (or 407 ``Proxy-Authenticate``).

        One value per configured algorithm, SHA-256 first (RFC 8760 §2.4), all sharing one nonce,
        issued for ``bound_to`` (see :meth:`new_nonce`).
        """
        nonce = f'"{self.new_nonce(now, bound_to)}"'
        tail = ", stale=true" if stale else ""
        prefix = self._challenge_prefix + nonce
        return [prefix + self._challenge_suffix[name] + tail for name in self.algorithms]

    def _nonce_issued(self, nonce: str) -> tuple[bytes, bytes, bytes] | None:
        """(issue time and salt, HMAC, binding tag) of a nonce this server issued, else None."""
        if len(nonce) != _NONCE_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        mac = raw[16 : 16 + _MAC_BYTES]
        if not hmac.compare_digest(self._mac(raw[:16]), mac):
            return None
        return raw[:16], mac, raw[16 + _MAC_BYTES :]

    def _forget_expired(self, now_us: int) -> None:
        expiry = self._expiry
        seen = self._seen
        limit = now_us - self._ttl_us
        while expiry and expiry[0][0] < limit:
            _, key = heapq.heappop(expiry)
            seen.pop(key, None)

    def _count(self, key: bytes, issued: int, nc: int, now_us: int) -> AuthReason:
        seen = self._seen
        last = seen.get(key)
        if last is not None:
            if nc <= last:
                return AuthReason.REPLAY
            seen[key] = nc
            return AuthReason.OK
        if issued <= self._forgotten_until:
            return AuthReason.STALE
        if len(seen) >= self.max_nonces:
            self._forget_expired(now_us)
            while len(seen) >= self.max_nonces:
                oldest, old_key = heapq.heappop(self._expiry)
                seen.pop(old_key, None)
                self._forgotten_until = max(self._forgotten_until, oldest)
            if issued <= self._forgotten_until:
                return AuthReason.STALE
        seen[key] = nc
        heapq.heappush(self._expiry, (issued, key))
        return AuthReason.OK

    def verify(
        self,
        method: str,
        authorization: str,
        lookup: Callable[[str, str, str], str | None],
        now: float,
        *,
        uri: str | None = None,
        bound_to: str = "",
    ) -> AuthResult:
        """Check an ``Authorization`` or ``Proxy-Authorization`` value (RFC 7616 §3.4, §3.5).

        ``lookup(username, realm, algorithm)`` returns the stored HA1 hex for the hash function
        (``MD5`` or ``SHA-256``, also for the -sess variants) or None. When ``uri`` (the
        Request-URI as received) is given, the ``uri`` parameter must equal it. ``bound_to`` must
        be what the nonce was issued for (see :meth:`new_nonce`): right credentials made with a
        nonce issued for another value give :attr:`AuthReason.URI` with ``stale`` set, so the
        request is challenged afresh (a UAC re-using a nonce for its next request, RFC 3261
        §22.3, retries; a replay elsewhere gets nothing). Never raises on bad input; unknown users
        and wrong passwords both give :attr:`AuthReason.INVALID`.
        """
        try:
            scheme, params = parse_auth_params(authorization)
        except DigestError:
            return AuthResult(False, None, False, AuthReason.MALFORMED)
        username = params.get("username")
        if username is None and "username*" in params:
            username = _decode_ext_value(params["username*"])
        if scheme.lower() != "digest" or username is None:
            return AuthResult(False, username, False, AuthReason.MALFORMED)
        realm = params.get("realm")
        nonce = params.get("nonce")
        digest_uri = params.get("uri")
        response = params.get("response")
        if realm is None or nonce is None or digest_uri is None or response is None:
            return AuthResult(False, username, False, AuthReason.MALFORMED)
        qop_text = params.get("qop")
        qop = qop_text.lower() if qop_text is not None else None
        cnonce = params.get("cnonce")
        nc_text = params.get("nc")
        nc = 0
        if qop is not None:
            if cnonce is None or nc_text is None or not _NC.fullmatch(nc_text):
                return AuthResult(False, username, False, AuthReason.MALFORMED)
            nc = int(nc_text, 16)
        try:
            algorithm, sess = _split_algorithm(params.get("algorithm", "MD5"))
        except DigestError:
            return AuthResult(False, username, False, AuthReason.ALGORITHM)
        if sess and cnonce is None:
            return AuthResult(False, username, False, AuthReason.MALFORMED)
        if algorithm not in self.algorithms:
            return AuthResult(False, username, False, AuthReason.ALGORITHM)
        if realm != self.realm:
            return AuthResult(False, username, False, AuthReason.REALM)
        if (qop is None and not self.allow_no_qop) or qop not in (None, "auth"):
            return AuthResult(False, username, False, AuthReason.QOP)
        opaque = params.get("opaque")
        if opaque is not None and not hmac.compare_digest(
            opaque.encode("utf-8", "surrogatepass"), self.opaque.encode()
        ):
            return AuthResult(False, username, False, AuthReason.OPAQUE)
        if uri is not None and digest_uri != uri:
            return AuthResult(False, username, False, AuthReason.URI)
        issued = self._nonce_issued(nonce)
        if issued is None:
            return AuthResult(False, username, False, AuthReason.NONCE)

        stored = lookup(username, realm, algorithm)
        known = stored is not None
        secret_hex = stored.lower() if stored is not None else self._dummy_ha1[algorithm]
        if sess:
            secret_hex = _hash(algorithm, f"{secret_hex}:{nonce}:{cnonce}")
        ha2 = _hash(algorithm, f"{method}:{digest_uri}")
        expected = _response(algorithm, secret_hex, nonce, nc_text, cnonce, qop_text, ha2)
        matches = hmac.compare_digest(
            expected.encode(), response.lower().encode("utf-8", "surrogatepass")
        )
        if not (matches and known):
            return AuthResult(False, username, False, AuthReason.INVALID)

        head, key, binding = issued
        issued_at = struct.unpack(">Q", head[:8])[0]
        if not hmac.compare_digest(self._binding(head, bound_to), binding):
            return AuthResult(False, username, True, AuthReason.URI)
        now_us = int(now * 1_000_000)
        if now_us - issued_at > self._ttl_us or issued_at - now_us > self._ttl_us:
            return AuthResult(False, username, True, AuthReason.STALE)
        self._forget_expired(now_us)
        if qop is None:
            verdict = self._count(key, issued_at, 1, now_us)
            if verdict is AuthReason.REPLAY:
                return AuthResult(False, username, True, AuthReason.REPLAY)
        else:
            verdict = self._count(key, issued_at, nc, now_us)
        if verdict is AuthReason.OK:
            return AuthResult(True, username, False, AuthReason.OK)
        return AuthResult(False, username, verdict is AuthReason.STALE, verdict)


def _decode_ext_value(value: str) -> str | None:
    charset, _, rest = value.partition("'")
    _, _, encoded = rest.partition("'")
    if charset.lower() != "utf-8" or not encoded:
        return None
    try:
        return unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return None


class DigestClient:
    """The answering side of Digest for SIP UACs (RFC 3261 §22.2-§22.3, RFC 7616 §3.4).

    Counts ``nc`` per nonce, so re-using the last challenge for later requests (pre-emptive
    credentials, RFC 3261 §22.3) works until the server declares the nonce stale.
    """

    def __init__(self, username: str, password: str) -> None:
        if any(c in username + password for c in "\r\n"):
            raise DigestError("Digest credentials contain a line break")
        self.username = username
        self.password = password
        self._ha1: dict[tuple[str, str], str] = {}
        self._nonce: str | None = None
        self._nc = 0

    @staticmethod
    def select(challenges: str | Sequence[str]) -> Challenge:
        """Pick the strongest supported challenge: SHA-256 over MD5 (RFC 8760 §2.4).

        Unparsable or unsupported values are skipped; raises :class:`DigestError` when none is left.
        """
        if isinstance(challenges, str):
            challenges = (challenges,)
        best: Challenge | None = None
        best_rank = len(ALGORITHMS)
        for value in challenges:
            try:
                parsed = parse_challenge(value)
            except DigestError:
                continue
            if not parsed.supported:
                continue
            rank = ALGORITHMS.index(_split_algorithm(parsed.algorithm)[0])
            if best is None or rank < best_rank:
                best, best_rank = parsed, rank
        if best is None:
            raise DigestError("No supported Digest challenge")
        return best

    def authorize(
        self,
        challenge: str | Sequence[str] | Challenge,
        method: str,
        uri: str,
        body: bytes = b"",
        *,
        cnonce: str | None = None,
    ) -> str:
        """Return the ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

        ``challenge`` is one header value, all of them (the strongest is chosen) or a parsed
        :class:`Challenge`. Uses qop=auth when offered (auth-int with ``body`` when only that is),
        RFC 2069 style when no qop is offered. ``cnonce`` is random unless given (for tests).
        """
        chosen = challenge if isinstance(challenge, Challenge) else self.select(challenge)
        if not chosen.supported:
            raise DigestError("Digest algorithm is not supported")
        if "\r" in uri or "\n" in uri or "\r" in method or "\n" in method:
            raise DigestError("Digest value contains a line break")
        algorithm, sess = _split_algorithm(chosen.algorithm)
        if chosen.nonce != self._nonce:
            self._nonce = chosen.nonce
            self._nc = 0
        self._nc += 1
        if cnonce is None:
            cnonce = secrets.token_urlsafe(12)
        key = (algorithm, chosen.realm)
        secret_hex = self._ha1.get(key)
        if secret_hex is None:
            secret_hex = ha1(self.username, chosen.realm, self.password, algorithm)
            self._ha1[key] = secret_hex
        if sess:
            secret_hex = _hash(algorithm, f"{secret_hex}:{chosen.nonce}:{cnonce}")
        if not chosen.qop:
            qop = None
        elif "auth" in chosen.qop:
            qop = "auth"
        else:
            qop = "auth-int"
        if qop == "auth-int":
            body_hash = _HASHES[algorithm](body).hexdigest()
            ha2 = _hash(algorithm, f"{method}:{uri}:{body_hash}")
        else:
            ha2 = _hash(algorithm, f"{method}:{uri}")
        nc = f"{self._nc:08x}"
        response = _response(
            algorithm, secret_hex, chosen.nonce, nc, cnonce if qop else None, qop, ha2
        )
        parts = [
            f"Digest username={_quote(self.username)}",
            f"realm={_quote(chosen.realm)}",
            f"nonce={_quote(chosen.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={chosen.algorithm}",
        ]
        if qop is not None:
            parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc}"]
        elif sess:
            parts.append(f"cnonce={_quote(cnonce)}")
        if chosen.opaque is not None:
            parts.append(f"opaque={_quote(chosen.opaque)}")
        return ", ".join(parts)
