"""Outbound registration of a trunk with its registrar (RFC 3261 §10.2), sans-IO.

Theory of operation. :class:`Registration` builds REGISTER requests and reads their final
responses; the caller sends each request through the transaction layer and reports back the final
response (:meth:`Registration.receive_response`) or the transaction's timeout / transport failure
(:meth:`Registration.timeout`), and wakes it at :meth:`Registration.next_deadline`.

Via: every request gets a fresh top Via from the ``via`` callback given to the constructor, which
the caller writes (it knows the transport and local address), typically
``lambda: Via("UDP", host, port, (("branch", new_branch()), ("rport", None)))``.
The branch must be new for every call (RFC 3261 §8.1.1.7).

One Call-ID and From tag serve the whole boot cycle, CSeq grows by one per request (§10.2).
A 401/407 is answered with credentials (RFC 3261 §22.2); the challenge is kept and its nonce reused,
with a growing nonce-count, for later refreshes (§22.3), so a refresh normally costs one round
trip. A second challenge to credentials computed for a challenge of the same attempt fails the
attempt, unless it says ``stale=true``. 423 retries at once with the registrar's Min-Expires
(§10.2.8). 2xx reads the granted expiry from our Contact (or Expires) and schedules the refresh at
``min(expires * 0.85, expires - 30)`` (never earlier than half of it). Any other failure, or a
timeout, retries after 30 s, doubling up to 10 min, or after the registrar's Retry-After.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from enum import Enum

from sip.digest import Challenge, DigestClient, DigestError
from sip.message import URI, Address, Headers, Request, Response, Via, new_tag

__all__ = ["Registration", "RegistrationError", "RegistrationState", "refresh_interval"]

MIN_BACKOFF = 30.0
MAX_BACKOFF = 600.0
_MAX_AUTH_ROUNDS = 4
_MAX_INTERVAL_RETRIES = 2
_AUTH_HEADERS = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


class RegistrationError(ValueError):
    """A bad registration setting (expires not positive)."""


class RegistrationState(Enum):
    """Where an outbound registration stands."""

    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


def refresh_interval(expires: float) -> float:
    """Seconds after a 2xx to refresh a binding granted for ``expires`` s (RFC 3261 §10.2.1)."""
    return max(min(expires * 0.85, expires - 30.0), expires * 0.5)


def _int_header(message: Response, name: str) -> int | None:
    value = message.headers.get(name)
    if value is None:
        return None
    value = value.split(";", 1)[0].split("(", 1)[0].strip()
    if not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _same_uri(a: URI, b: URI) -> bool:
    return (
        a.scheme == b.scheme
        and a.user == b.user
        and a.host.lower() == b.host.lower()
        and (a.port or 0) == (b.port or 0)
    )


class Registration:
    """One binding of ``contact`` for ``aor`` at ``registrar`` kept alive (RFC 3261 §10.2).

    ``registrar`` is the Request-URI (``sip:provider.example``), ``aor`` goes in To and From.
    ``via`` returns the top Via for each new request (see the module docstring). ``route`` adds
    Route headers (a loose-routing outbound proxy, RFC 3261 §8.1.2).
    """

    def __init__(
        self,
        aor: URI,
        registrar: URI,
        contact: Address,
        username: str,
        password: str,
        expires: int = 3600,
        *,
        via: Callable[[], Via],
        route: Iterable[Address] = (),
        user_agent: str | None = None,
        call_id: str | None = None,
    ) -> None:
        if expires <= 0:
            raise RegistrationError("Registration expires must be positive")
        self.aor = aor
        self.registrar = registrar
        self.contact = contact
        self.expires = expires
        self.call_id = call_id if call_id is not None else secrets.token_hex(16)
        self.state = RegistrationState.UNREGISTERED
        self.granted: int | None = None
        """Expiry the registrar granted in its last 2xx, seconds."""
        self.expires_at: float | None = None
        """When the current binding lapses unless refreshed."""
        self.last_status: int | None = None
        """Status of the last final response, None after a timeout."""
        self.failures = 0
        """Consecutive failed attempts (drives the backoff)."""
        self._username = username
        self._password = password
        self._via = via
        self._route = tuple(str(r) for r in route)
        self._user_agent = user_agent
        self._from = str(Address(None, aor).with_tag(new_tag()))
        self._to = str(Address(None, aor))
        self._registrar_text = str(registrar)
        self._cseq = 0
        self._deadline: float | None = None
        self._in_flight = False
        self._stopping = False
        self._challenges: dict[str, Challenge] = {}
        self._clients: dict[str, DigestClient] = {}
        self._answered: set[str] = set()
        self._auth_rounds = 0
        self._interval_retries = 0

    def _request(self, expires: int) -> Request:
        self._cseq += 1
        self._in_flight = True
        headers = Headers()
        headers.add("Via", str(self._via()))
        headers.add("Max-Forwards", "70")
        for route in self._route:
            headers.add("Route", route)
        headers.add("From", self._from)
        headers.add("To", self._to)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        headers.add("Contact", str(self.contact))
        headers.add("Expires", str(expires))
        for header, challenge in self._challenges.items():
            client = self._clients.get(header)
            if client is None:
                client = self._clients[header] = DigestClient(self._username, self._password)
            headers.add(header, client.authorize(challenge, "REGISTER", self._registrar_text))
        if self._user_agent is not None:
            headers.add("User-Agent", self._user_agent)
        return Request("REGISTER", self.registrar, headers)

    def _attempt(self) -> Request:
        self._answered.clear()
        self._auth_rounds = 0
        self._interval_retries = 0
        self._deadline = None
        if not self._stopping:
            self.state = RegistrationState.REGISTERING
        return self._request(0 if self._stopping else self.expires)

    def start(self, now: float) -> Request:
        """Begin registering: the first REGISTER to send (RFC 3261 §10.2)."""
        self._stopping = False
        return self._attempt()

    def stop(self, now: float) -> Request:
        """Remove our binding: a REGISTER with Expires 0 for our Contact (RFC 3261 §10.2.2)."""
        self._stopping = True
        self.state = RegistrationState.UNREGISTERED
        self.expires_at = None
        return self._attempt()

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has work: the refresh or the retry; None when idle."""
        return self._deadline

    def handle_timer(self, now: float) -> Request | None:
        """Return the refresh or retry REGISTER when its time has come, else None."""
        if self._deadline is None or now < self._deadline or self._in_flight:
            return None
        return self._attempt()

    def timeout(self, now: float) -> None:
        """The REGISTER transaction timed out or its transport failed (RFC 3261 §17.1.2.2)."""
        if not self._in_flight:
            return
        self._in_flight = False
        self.last_status = None
        self._fail(now, None)

    def _fail(self, now: float, retry_after: int | None) -> None:
        if self._stopping:
            self._deadline = None
            return
        self.state = RegistrationState.FAILED
        self.failures += 1
        delay = min(MIN_BACKOFF * 2 ** (self.failures - 1), MAX_BACKOFF)
        if retry_after is not None:
            delay = min(max(float(retry_after), 1.0), MAX_BACKOFF)
        self._deadline = now + delay

    def receive_response(self, response: Response, now: float) -> Request | None:
        """Consume a response to our REGISTER; returns the next request to send at once, if any.

        Responses to earlier requests (another CSeq or Call-ID) and provisionals are ignored.
        """
        try:
            cseq = response.cseq
            if response.call_id != self.call_id:
                return None
        except ValueError:
            return None
        if cseq.method != "REGISTER" or cseq.seq != self._cseq or not self._in_flight:
            return None
        status = response.status
        if status < 200:
            return None
        self._in_flight = False
        self.last_status = status
        if 200 <= status < 300:
            self._registered(response, now)
            return None
        if status in _AUTH_HEADERS:
            return self._authenticate(response, now)
        if status == 423 and not self._stopping:
            minimum = _int_header(response, "Min-Expires")
            if (
                minimum is not None
                and minimum > self.expires
                and self._interval_retries < _MAX_INTERVAL_RETRIES
            ):
                self._interval_retries += 1
                self.expires = minimum
                self._answered.clear()
                return self._request(self.expires)
        self._fail(now, _int_header(response, "Retry-After") if status >= 500 else None)
        return None

    def _authenticate(self, response: Response, now: float) -> Request | None:
        challenge_header, credentials_header = _AUTH_HEADERS[response.status]
        try:
            chosen = DigestClient.select(response.headers.getlist(challenge_header))
        except DigestError:
            self._fail(now, None)
            return None
        self._auth_rounds += 1
        if (
            credentials_header in self._answered and not chosen.stale
        ) or self._auth_rounds > _MAX_AUTH_ROUNDS:
            self._challenges.pop(credentials_header, None)
            self._fail(now, None)
            return None
        self._answered.add(credentials_header)
        self._challenges[credentials_header] = chosen
        return self._request(0 if self._stopping else self.expires)

    def _registered(self, response: Response, now: float) -> None:
        if self._stopping:
            self._deadline = None
            return
        granted: int | None = None
        try:
            contacts = response.contact
        except ValueError:
            contacts = []
        for contact in contacts:
            if _same_uri(contact.uri, self.contact.uri):
                value = contact.param("expires")
                if value is not None and value.isascii() and value.isdigit():
                    granted = int(value)
                break
        if granted is None:
            granted = _int_header(response, "Expires")
        if granted is None:
            granted = self.expires
        if granted <= 0:
            self._fail(now, None)
            return
        self.state = RegistrationState.REGISTERED
        self.failures = 0
        self.granted = granted
        self.expires_at = now + granted
        self._deadline = now + refresh_interval(granted)
