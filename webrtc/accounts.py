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

Lockout (OWASP's "lock the pair, not the account"). Failed logins are counted in a sliding window
of `failure_window` seconds, per source (an IPv4 address, or the /64 of an IPv6 address, since
one host commonly owns a whole /64):
- per (account, source): `max_failures` failures lock that pair for `lockout` seconds, doubled at
  each new lock of the same pair up to `max_lockout` (backoff); the same account from another
  source is not affected, so a guesser cannot lock an agent out;
- per source: `max_address_failures` failures, whatever the names, lock the source (with the same
  backoff), so one address cannot spray many accounts;
- per account: only failures from `account_lock_sources` distinct sources within the window lock
  the account itself, for the short `account_lockout`, and never for the source of its last good
  login.
In a cluster (`lockouts`, Redis: `omlmedia.lockouts`) the per-(account, source), per-source and
per-account counts are also kept for all the nodes together, so spreading guesses over N nodes
gives no more tries than one node; each node's own counts go on as well (the fallback when
Redis is down). A locked login is refused with ``locked-out`` even with the right password.
Every refusal is logged as one line in the fail2ban style of ``sip/security.py``:
``SECURITY reason=login-failed src=192.0.2.7 port=0 user="agent1"``.

Password checks cost ~50 ms of scrypt each: `PasswordChecker` runs them on its own small thread
pool (never the loop's default executor, which DNS and file reads share) and refuses at once with
``busy`` when `max_pending` checks are already waiting or running.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from webrtc.exceptions import LoginError

logger = logging.getLogger(__name__)

__all__ = [
    "Account",
    "AccountStore",
    "LoginResult",
    "PasswordChecker",
    "Session",
    "SharedSessions",
    "check_password",
    "hash_password",
    "parse_password_hash",
    "security_line",
    "source_key",
    "verify_password",
]

Clock = Callable[[], float]
_K = TypeVar("_K", str, tuple[str, str])

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
    __slots__ = ("failures", "level", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0
        self.level = 0

    def prune(self, now: float, window: float) -> None:
        while self.failures and self.failures[0] <= now - window:
            self.failures.popleft()


def source_key(source: str) -> str:
    """What lockout counts a source address as: an IPv4 address itself (also when written
    IPv4-mapped), an IPv6 address its /64 (RFC 4291 §2.5.4: one interface identifier space per
    host or link), anything else as written."""
    try:
        address = ipaddress.ip_address(source.strip("[]"))
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class SharedSessions(Protocol):
    """Agents' sessions shared by the nodes of a cluster (Redis: `omlmedia.cluster`), keyed by
    the token's hash: a page whose node died authenticates on another with its token."""

    async def put(self, token_hash: bytes, agent: str, ttl: float) -> None:
        """Share a new session of `agent` expiring in `ttl` seconds."""

    async def get(self, token_hash: bytes) -> tuple[str, float, str] | None:
        """The agent, the seconds left and the last state noted of a shared session."""

    async def note_state(self, token_hash: bytes, state: str) -> None:
        """Note the agent's state in its shared session."""

    async def drop(self, token_hash: bytes) -> None:
        """Forget a session (logged out)."""


class SharedLockouts(Protocol):
    """Failed-login counts shared by the nodes of a cluster (Redis: `omlmedia.lockouts`), per
    (account, source), per source (`source_key`) and per account (failures from many sources),
    with the limits of the node's store. Each
    method answers as if nothing were shared when the store is unreachable (the node's own
    counts still apply)."""

    async def locked(self, name: str, source: str) -> bool:
        """Whether a login for `name` from `source` is locked out by the shared counts."""

    async def failed(self, name: str, source: str, known: bool) -> None:
        """Count a failed login (the pair's count only for a `known` account)."""

    async def succeeded(self, name: str, source: str) -> None:
        """A good login of `name` from `source`: its pair's count starts again."""


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
        lockout: float = 60.0,
        max_lockout: float = 3600.0,
        account_lock_sources: int = 10,
        account_lockout: float = 60.0,
        max_tracked: int = 10000,
    ) -> None:
        self.accounts: dict[str, Account] = {a.name: a for a in accounts}
        self.clock = clock
        self.session_ttl = session_ttl
        self.max_failures = max_failures
        self.max_address_failures = max_address_failures
        self.failure_window = failure_window
        self.lockout = lockout
        self.max_lockout = max(max_lockout, lockout)
        self.account_lock_sources = account_lock_sources
        self.account_lockout = account_lockout
        self.max_tracked = max_tracked
        self._sessions: dict[bytes, Session] = {}
        self._by_agent: dict[str, Session] = {}
        self._pair_failures: dict[tuple[str, str], _FailureWindow] = {}
        self._address_failures: dict[str, _FailureWindow] = {}
        self._account_sources: dict[str, dict[str, float]] = {}
        self._account_locked_until: dict[str, float] = {}
        self._last_good: dict[str, str] = {}
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self.shared: SharedSessions | None = None
        """The cluster's shared sessions (None: sessions are this node's only)."""
        self.lockouts: SharedLockouts | None = None
        """The cluster's shared failed-login counts, which the caller of `login` consults and
        feeds (None: this node's counts only)."""

    def password_hash_for(self, name: str) -> str:
        """The hash to verify a login against: the account's, or a dummy one (same cost) for an
        unknown name."""
        account = self.accounts.get(name)
        return account.password_hash if account is not None else self._dummy_hash

    def locked(self, name: str, source: str) -> bool:
        """Whether a login for `name` from `source` would be refused as locked out now."""
        now = self.clock()
        key = source_key(source)
        for window in (self._pair_failures.get((name, key)), self._address_failures.get(key)):
            if window is not None and window.locked_until > now:
                return True
        return self._account_locked_until.get(name, 0.0) > now and self._last_good.get(name) != key

    def login(
        self,
        name: str,
        password_ok: bool,
        source: str,
        source_port: int = 0,
        *,
        locked_elsewhere: bool = False,
    ) -> LoginResult:
        """Open a session for `name` after the password was checked (`password_ok`); raises
        `LoginError` (``locked-out`` or ``bad-credentials``) and logs a SECURITY line.
        `locked_elsewhere`: the shared counts (`lockouts`) lock this login out."""
        now = self.clock()
        if locked_elsewhere or self.locked(name, source):
            logger.warning(security_line("login-locked-out", source, source_port, name))
            raise LoginError("locked-out", "too many failed logins: try again later")
        account = self.accounts.get(name)
        if account is None or not password_ok:
            self._record_failure(name, source, source_port, now)
            raise LoginError("bad-credentials", "wrong username or password")
        key = source_key(source)
        self._pair_failures.pop((name, key), None)
        self._last_good[name] = key
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

    def adopt(self, agent: str, token: str, ttl: float, source: str) -> Session | None:
        """A session another node opened for `agent` with `token`, `ttl` seconds left (read
        from `shared`): it now authenticates here too, replacing the agent's session here, if
        any. None for an agent unknown here or a malformed token."""
        if agent not in self.accounts or not _TOKEN_CHARS.fullmatch(token) or ttl <= 0:
            return None
        now = self.clock()
        session = Session(agent, _token_hash(token), now, now + ttl, source)
        replaced = self._by_agent.get(agent)
        if replaced is not None:
            self._revoke(replaced)
        self._sessions[session.token_hash] = session
        self._by_agent[agent] = session
        logger.info("agent %s came back from another node, from %s", agent, source)
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
        key = source_key(source)
        if self._count(self._address_failures, key, self.max_address_failures, now):
            logger.warning(security_line("login-address-locked", source, port, name))
        if name not in self.accounts:  # unknown names are only counted against the source
            return
        if self._count(self._pair_failures, (name, key), self.max_failures, now):
            logger.warning(security_line("login-pair-locked", source, port, name))
        sources = self._account_sources.setdefault(name, {})
        sources.pop(key, None)
        sources[key] = now
        horizon = now - self.failure_window
        for old in [k for k, when in sources.items() if when <= horizon]:
            del sources[old]
        if len(sources) >= self.account_lock_sources:
            sources.clear()
            self._account_locked_until[name] = now + self.account_lockout
            logger.warning(security_line("login-account-locked", source, port, name))

    def _count(self, table: dict[_K, _FailureWindow], key: _K, limit: int, now: float) -> bool:
        """One failure for `key`; True when it locks `key` (for longer at each new lock)."""
        window = table.pop(key, None) or _FailureWindow()
        table[key] = window  # most recently failed last: the first entries are the oldest
        window.prune(now, self.failure_window)
        window.failures.append(now)
        locked = len(window.failures) >= limit
        if locked:
            window.level += 1
            backoff = self.lockout * 2 ** min(window.level - 1, 32)
            window.locked_until = now + min(backoff, self.max_lockout)
            window.failures.clear()
        while len(table) > self.max_tracked:  # bounded whatever the sources: oldest first
            del table[next(iter(table))]
        return locked


class PasswordChecker:
    """Runs `verify_password` on a dedicated thread pool of `workers` threads.

    At most `max_pending` checks wait or run at once; one more is refused at once with
    `LoginError` ``busy`` instead of queueing ~50 ms of scrypt behind the others. A slot is given
    back when the check ends in its thread, not when its caller stops waiting, so cancelled
    logins cannot make the pool's queue grow.
    """

    def __init__(self, workers: int = 2, max_pending: int = 8) -> None:
        if workers < 1 or max_pending < workers:
            raise ValueError("password checker needs workers >= 1 and max_pending >= workers")
        self.workers = workers
        self.max_pending = max_pending
        self._slots = threading.BoundedSemaphore(max_pending)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def __call__(self, password: str, password_hash: str) -> bool:
        """Whether `password` matches `password_hash`; `LoginError` ``busy`` when saturated."""
        if not self._slots.acquire(blocking=False):
            logger.warning("password checks saturated: login refused as busy")
            raise LoginError("busy", "too many logins at once: try again in a moment")
        try:
            future = self._pool().submit(verify_password, password, password_hash)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: Future[bool]) -> None:
        self._slots.release()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="scrypt")
            return self._executor

    def close(self) -> None:
        """Stop the threads; checks still queued are cancelled."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


_default_checker = PasswordChecker()


async def check_password(password: str, password_hash: str) -> bool:
    """`verify_password` on the process's shared `PasswordChecker` (2 threads, 8 at once)."""
    return await _default_checker(password, password_hash)
