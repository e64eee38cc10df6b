"""Agent accounts: scrypt password hashes, session tokens, one session per agent, login lockout.

Theory of operation. Passwords are kept only as scrypt hashes (RFC 7914) in a self-describing
string ``scrypt$n=16384,r=8,p=1$<salt>$<key>`` (salt and key in unpadded URL-safe base64), so
the cost can be raised later without breaking stored hashes; `verify_password` compares in
constant time. `AccountStore` is sans-IO: it reads the time from the injected `clock` and does
no I/O. A login is two steps so that the ~50 ms of scrypt can run off the event loop:
`password_hash_for(name)` gives the hash to check (a dummy one for an unknown name, so the time
taken does not tell whether the account exists), the caller runs `verify_password`, then
`login(name, password_ok, source)` decides. `login_with_password` does both inline.

Sessions. A token is 32 random bytes (``secrets.token_urlsafe``); the store keeps only its
SHA-256, so a leaked store reveals no usable token. A session expires `session_ttl` seconds after
login; `logout` revokes it, and a revoked or expired token never authenticates again. An agent
has at most one session: a second login revokes the first and returns it as `replaced`, so the
caller can tell the first page (``session-ended``, reason ``taken-over``).

Lockout. Failed logins are counted per account and per source address in a sliding window of
`failure_window` seconds; `max_failures` failures for one account (or `max_address_failures` from
one address) lock it for `lockout` seconds, during which even the right password is refused with
``locked-out``. Every refusal is logged as one line in the fail2ban style of
``sip/security.py``: ``SECURITY reason=login-failed src=192.0.2.7 port=0 user="agent1"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from webrtc.exceptions import LoginError

logger = logging.getLogger(__name__)

__all__ = [
    "Account",
    "AccountStore",
    "LoginResult",
    "Session",
    "hash_password",
    "parse_password_hash",
    "security_line",
    "verify_password",
]

Clock = Callable[[], float]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD_BYTES = 1024

_HASH = re.compile(
    r"scrypt\$n=(?P<n>[0-9]{1,10}),r=(?P<r>[0-9]{1,3}),p=(?P<p>[0-9]{1,3})"
    r"\$(?P<salt>[A-Za-z0-9_-]{16,128})\$(?P<key>[A-Za-z0-9_-]{16,128})"
)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{20,128}")
_UNSAFE = re.compile(r"[^\x21\x23-\x5b\x5d-\x7e]")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def parse_password_hash(text: str) -> _ScryptHash:
    """Parse ``scrypt$n=..,r=..,p=..$salt$key``; ValueError("password hash is not a valid scrypt
    hash") when it is not one (n a power of two from 2 to 2**20, r and p 1..64)."""
    match = _HASH.fullmatch(text)
    if match is None:
        raise ValueError("password hash is not a valid scrypt hash")
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2 or n > 2**20 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 64:
        raise ValueError("password hash is not a valid scrypt hash")
    return _ScryptHash(n, r, p, _b64decode(match["salt"]), _b64decode(match["key"]))


def _derive(password: str, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=128 * r * (n + p + 2) + 1024 * 1024,
        dklen=length,
    )


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash of `password`, with its parameters, for the configuration."""
    if not password:
        raise ValueError("password is empty")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError("password is too long")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, n, r, p, salt, KEY_BYTES)
    text = f"scrypt$n={n},r={r},p={p}${_b64encode(salt)}${_b64encode(key)}"
    parse_password_hash(text)
    return text


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches `password_hash` (constant-time compare); False for a malformed
    hash or an over-long password, never an exception."""
    try:
        parsed = parse_password_hash(password_hash)
    except ValueError:
        return False
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    key = _derive(password, parsed.n, parsed.r, parsed.p, parsed.salt, len(parsed.key))
    return hmac.compare_digest(key, parsed.key)


def security_line(reason: str, source_ip: str, source_port: int, user: str | None) -> str:
    """One fail2ban line: ``SECURITY reason=<token> src=<ip> port=<p> user="..."``; the user
    name comes from the wire, so anything but printable ASCII (and quote, backslash, space) is
    escaped as ``\\xNN``/``\\uNNNN`` and it is cut to 64 characters."""
    escaped = "-" if user is None else _escape(user[:64])
    return f'SECURITY reason={reason} src={source_ip} port={source_port} user="{escaped}"'


def _escape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(one, text)


@dataclass(frozen=True, slots=True)
class Account:
    """One agent: `name` (the login and the ACD member name), `display_name` and the scrypt
    `password_hash`."""

    name: str
    display_name: str
    password_hash: str


@dataclass(slots=True)
class Session:
    """A logged-in agent. Only `token_hash` (SHA-256 of the token) is kept."""

    agent: str
    token_hash: bytes
    created: float
    expires: float
    source: str
    revoked: bool = False

    def valid(self, now: float) -> bool:
        """Not revoked and not expired."""
        return not self.revoked and now < self.expires


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login: the `token` to give the page (shown once), its `session`, and the
    session it `replaced` (revoked now: tell its page ``taken-over``)."""

    token: str
    session: Session
    replaced: Session | None


class _FailureWindow:
    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0

    def prune(self, now: float, window: float) -> None:
        while self.failures and self.failures[0] <= now - window:
            self.failures.popleft()


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class AccountStore:
    """Accounts, sessions and login lockout; sans-IO, time from `clock` (seconds)."""

    def __init__(
        self,
        accounts: Iterable[Account],
        *,
        clock: Clock,
        session_ttl: float = 12 * 3600.0,
        max_failures: int = 5,
        max_address_failures: int = 20,
        failure_window: float = 300.0,
        lockout: float = 900.0,
    ) -> None:
        self.accounts: dict[str, Account] = {a.name: a for a in accounts}
        self.clock = clock
        self.session_ttl = session_ttl
        self.max_failures = max_failures
        self.max_address_failures = max_address_failures
        self.failure_window = failure_window
        self.lockout = lockout
        self._sessions: dict[bytes, Session] = {}
        self._by_agent: dict[str, Session] = {}
        self._account_failures: dict[str, _FailureWindow] = {}
        self._address_failures: dict[str, _FailureWindow] = {}
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))

    def password_hash_for(self, name: str) -> str:
        """The hash to verify a login against: the account's, or a dummy one (same cost) for an
        unknown name."""
        account = self.accounts.get(name)
        return account.password_hash if account is not None else self._dummy_hash

    def locked(self, name: str, source: str) -> bool:
        """Whether a login for `name` from `source` would be refused as locked out now."""
        now = self.clock()
        for table, key in ((self._account_failures, name), (self._address_failures, source)):
            window = table.get(key)
            if window is not None and window.locked_until > now:
                return True
        return False

    def login(self, name: str, password_ok: bool, source: str, source_port: int = 0) -> LoginResult:
        """Open a session for `name` after the password was checked (`password_ok`); raises
        `LoginError` (``locked-out`` or ``bad-credentials``) and logs a SECURITY line."""
        now = self.clock()
        if self.locked(name, source):
            logger.warning(security_line("login-locked-out", source, source_port, name))
            raise LoginError("locked-out", "too many failed logins: try again later")
        account = self.accounts.get(name)
        if account is None or not password_ok:
            self._record_failure(name, source, source_port, now)
            raise LoginError("bad-credentials", "wrong username or password")
        self._account_failures.pop(name, None)
        token = secrets.token_urlsafe(32)
        session = Session(name, _token_hash(token), now, now + self.session_ttl, source)
        replaced = self._by_agent.get(name)
        if replaced is not None:
            self._revoke(replaced)
        self._sessions[session.token_hash] = session
        self._by_agent[name] = session
        logger.info("agent %s logged in from %s", name, source)
        return LoginResult(token, session, replaced)

    def login_with_password(
        self, name: str, password: str, source: str, source_port: int = 0
    ) -> LoginResult:
        """`login` with the scrypt check done inline (blocks for its duration)."""
        if self.locked(name, source):
            return self.login(name, False, source, source_port)
        ok = verify_password(password, self.password_hash_for(name))
        return self.login(name, ok, source, source_port)

    def authenticate(self, token: str) -> Session | None:
        """The live session of `token`, or None (unknown, revoked, expired or malformed)."""
        if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
            return None
        session = self._sessions.get(_token_hash(token))
        if session is None:
            return None
        if not session.valid(self.clock()):
            self._revoke(session)
            return None
        return session

    def session_of(self, agent: str) -> Session | None:
        """The agent's live session, if any."""
        session = self._by_agent.get(agent)
        if session is None or not session.valid(self.clock()):
            return None
        return session

    def logout(self, session: Session) -> None:
        """Revoke `session`: its token never authenticates again."""
        self._revoke(session)

    def _revoke(self, session: Session) -> None:
        session.revoked = True
        self._sessions.pop(session.token_hash, None)
        if self._by_agent.get(session.agent) is session:
            del self._by_agent[session.agent]

    def _record_failure(self, name: str, source: str, port: int, now: float) -> None:
        logger.warning(security_line("login-failed", source, port, name))
        limits = (
            (self._account_failures, name, self.max_failures, "login-account-locked"),
            (self._address_failures, source, self.max_address_failures, "login-address-locked"),
        )
        for table, key, limit, reason in limits:
            if table is self._account_failures and name not in self.accounts:
                continue
            window = table.setdefault(key, _FailureWindow())
            window.prune(now, self.failure_window)
            window.failures.append(now)
            if len(window.failures) >= limit:
                window.locked_until = now + self.lockout
                window.failures.clear()
                logger.warning(security_line(reason, source, port, name))
        if len(self._address_failures) > 10000:
            self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        for table in (self._account_failures, self._address_failures):
            for key in [k for k, w in table.items() if w.locked_until <= now]:
                table[key].prune(now, self.failure_window)
                if not table[key].failures:
                    del table[key]
