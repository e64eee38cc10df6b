"""Tests for sip.registration: REGISTER building, digest answers, 423, refresh and backoff."""

from __future__ import annotations

import pytest

from sip.digest import AuthReason, DigestServer, ha1, parse_auth_params
from sip.message import (
    URI,
    Address,
    Request,
    Response,
    Via,
    make_response,
    new_branch,
    parse_message,
)
from sip.registration import (
    Registration,
    RegistrationError,
    RegistrationState,
    refresh_interval,
)

AOR = URI.parse("sip:1001@provider.example")
REGISTRAR = URI.parse("sip:provider.example")
CONTACT = Address.parse("<sip:1001@192.0.2.10:5060;transport=udp>")
PASSWORD = "s3cret"


def via() -> Via:
    return Via("UDP", "192.0.2.10", 5060, (("branch", new_branch()), ("rport", None)))


def state(reg: Registration) -> RegistrationState:
    """The state, read through a call so that mypy does not narrow it between steps."""
    return reg.state


def registration(password: str = PASSWORD, expires: int = 3600) -> Registration:
    return Registration(
        AOR, REGISTRAR, CONTACT, "1001", password, expires, via=via, user_agent="omlmedia"
    )


class Registrar:
    """A registrar that challenges with digest and grants what it is asked (or a cap)."""

    def __init__(self, realm: str = "provider.example", max_expires: int = 3600) -> None:
        self.digest = DigestServer(realm, b"k" * 32)
        self.realm = realm
        self.max_expires = max_expires
        self.results: list[AuthReason] = []

    def lookup(self, username: str, realm: str, algorithm: str) -> str | None:
        return ha1("1001", realm, PASSWORD, algorithm) if username == "1001" else None

    def handle(self, request: Request, now: float) -> Response:
        wire = parse_message(bytes(request))
        assert isinstance(wire, Request)
        authorization = wire.headers.get("Authorization")
        if authorization is None:
            return self.challenge(wire, now)
        result = self.digest.verify("REGISTER", authorization, self.lookup, now)
        self.results.append(result.reason)
        if result.stale:
            return self.challenge(wire, now, stale=True)
        if not result.ok:
            return self.challenge(wire, now)
        expires = min(int(wire.headers.get("Expires") or "0"), self.max_expires)
        contact = f"{wire.contact[0]};expires={expires}"
        return make_response(wire, 200, to_tag="r1", headers=[("Contact", contact)])

    def challenge(self, request: Request, now: float, stale: bool = False) -> Response:
        response = make_response(request, 401, to_tag="r1")
        for value in self.digest.challenge(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response


def register(reg: Registration, registrar: Registrar, now: float) -> int:
    """Run one attempt to its end; return how many requests it took."""
    request: Request | None = (
        reg.start(now) if reg.state is RegistrationState.UNREGISTERED else (reg.handle_timer(now))
    )
    sent = 0
    while request is not None:
        sent += 1
        request = reg.receive_response(registrar.handle(request, now), now)
    return sent


def test_first_register_has_the_rfc3261_headers() -> None:
    reg = registration()
    request = reg.start(0.0)
    parsed = parse_message(bytes(request))
    assert isinstance(parsed, Request)
    assert parsed.method == "REGISTER" and str(parsed.uri) == "sip:provider.example"
    assert parsed.to.uri == AOR and parsed.to.tag is None
    assert parsed.from_.uri == AOR and parsed.from_tag is not None
    assert parsed.call_id == reg.call_id
    assert (parsed.cseq.seq, parsed.cseq.method) == (1, "REGISTER")
    assert parsed.contact[0].uri == CONTACT.uri
    assert parsed.headers.get("Expires") == "3600"
    assert parsed.max_forwards == 70
    assert parsed.branch is not None and parsed.branch.startswith("z9hG4bK")
    assert parsed.headers.get("User-Agent") == "omlmedia"
    assert "Authorization" not in parsed.headers
    assert state(reg) is RegistrationState.REGISTERING
    assert reg.next_deadline() is None


def test_challenge_is_answered_and_200_registers() -> None:
    reg, registrar = registration(), Registrar()
    first = reg.start(0.0)
    second = reg.receive_response(registrar.handle(first, 0.0), 0.1)
    assert second is not None
    assert second.cseq.seq == 2 and second.call_id == first.call_id
    assert second.from_tag == first.from_tag and second.branch != first.branch
    params = parse_auth_params(second.headers.get("Authorization") or "")[1]
    assert params["algorithm"] == "SHA-256" and params["uri"] == "sip:provider.example"
    assert reg.receive_response(registrar.handle(second, 0.2), 0.2) is None
    assert registrar.results == [AuthReason.OK]
    assert state(reg) is RegistrationState.REGISTERED
    assert reg.granted == 3600 and reg.expires_at == pytest.approx(3600.2)
    assert reg.next_deadline() == pytest.approx(0.2 + 3060.0)


def test_wrong_password_fails_after_one_answer() -> None:
    reg, registrar = registration(password="wrong"), Registrar()
    assert register(reg, registrar, 0.0) == 2
    assert registrar.results == [AuthReason.INVALID]
    assert state(reg) is RegistrationState.FAILED and reg.last_status == 401
    assert reg.next_deadline() == 30.0


def test_stale_challenge_after_credentials_is_answered_again() -> None:
    reg, registrar = registration(), Registrar()
    first = reg.start(0.0)
    second = reg.receive_response(registrar.handle(first, 0.0), 0.0)
    assert second is not None
    stale = registrar.challenge(second, 400.0, stale=True)
    third = reg.receive_response(stale, 400.0)
    assert third is not None and third.cseq.seq == 3
    reg.receive_response(registrar.handle(third, 400.0), 400.0)
    assert state(reg) is RegistrationState.REGISTERED


def test_refresh_reuses_the_nonce_without_a_new_challenge() -> None:
    reg, registrar = registration(), Registrar()
    assert register(reg, registrar, 0.0) == 2
    deadline = reg.next_deadline()
    assert deadline is not None
    assert reg.handle_timer(deadline - 1.0) is None
    refresh = reg.handle_timer(deadline)
    assert refresh is not None and refresh.cseq.seq == 3
    assert parse_auth_params(refresh.headers.get("Authorization") or "")[1]["nc"] == "00000002"
    assert state(reg) is RegistrationState.REGISTERING
    fresh = DigestServer("provider.example", b"k" * 32, nonce_ttl=1e9)
    registrar.digest = fresh
    assert reg.receive_response(registrar.handle(refresh, deadline), deadline) is None
    assert state(reg) is RegistrationState.REGISTERED
    assert registrar.results[-1] is AuthReason.OK


def test_refresh_with_expired_nonce_gets_stale_and_recovers() -> None:
    reg, registrar = registration(), Registrar()
    register(reg, registrar, 0.0)
    assert register(reg, registrar, 3060.0) == 2
    assert registrar.results[-2:] == [AuthReason.STALE, AuthReason.OK]
    assert state(reg) is RegistrationState.REGISTERED


def test_proxy_challenge_is_answered_with_proxy_authorization() -> None:
    reg = registration()
    first = reg.start(0.0)
    proxy = DigestServer("proxy.example", b"p" * 32)
    response = make_response(first, 407)
    response.headers.add("Proxy-Authenticate", proxy.challenge(0.0)[1])
    second = reg.receive_response(response, 0.0)
    assert second is not None and "Authorization" not in second.headers
    value = second.headers.get("Proxy-Authorization") or ""

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        return ha1(username, realm, PASSWORD, algorithm)

    assert proxy.verify("REGISTER", value, lookup, 0.0).ok


def test_interval_too_brief_retries_with_min_expires() -> None:
    reg = registration(expires=60)
    first = reg.start(0.0)
    second = reg.receive_response(make_response(first, 423, headers=[("Min-Expires", "600")]), 0)
    assert second is not None and second.headers.get("Expires") == "600"
    assert reg.expires == 600 and second.cseq.seq == 2


def test_interval_too_brief_without_min_expires_fails() -> None:
    reg = registration(expires=60)
    first = reg.start(0.0)
    assert reg.receive_response(make_response(first, 423), 0.0) is None
    assert state(reg) is RegistrationState.FAILED


def test_failures_back_off_from_30s_doubling_to_10_minutes() -> None:
    reg = registration()
    request: Request | None = reg.start(0.0)
    now = 0.0
    delays = []
    for _ in range(7):
        assert request is not None
        reg.receive_response(make_response(request, 403), now)
        deadline = reg.next_deadline()
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
        request = reg.handle_timer(now)
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert reg.failures == 7


def test_success_resets_the_backoff() -> None:
    reg, registrar = registration(), Registrar()
    first = reg.start(0.0)
    reg.timeout(32.0)
    assert state(reg) is RegistrationState.FAILED and reg.last_status is None
    assert reg.next_deadline() == 62.0
    assert register(reg, registrar, 62.0) == 2
    assert reg.failures == 0 and state(reg) is RegistrationState.REGISTERED
    assert first.cseq.seq == 1


def test_timeout_when_nothing_is_in_flight_is_ignored() -> None:
    reg, registrar = registration(), Registrar()
    register(reg, registrar, 0.0)
    reg.timeout(1.0)
    assert state(reg) is RegistrationState.REGISTERED


def test_retry_after_of_a_503_is_honoured() -> None:
    reg = registration()
    first = reg.start(0.0)
    reg.receive_response(make_response(first, 503, headers=[("Retry-After", "120 (busy)")]), 1.0)
    assert reg.next_deadline() == 121.0


def test_granted_expiry_read_from_our_contact_then_expires_header() -> None:
    reg = registration()
    request = reg.start(0.0)
    other = "<sip:9999@198.51.100.1>;expires=10"
    ours = "<sip:1001@192.0.2.10:5060;transport=udp>;expires=1800"
    reg.receive_response(make_response(request, 200, headers=[("Contact", f"{other}, {ours}")]), 0)
    assert reg.granted == 1800
    assert reg.next_deadline() == pytest.approx(1530.0)
    request2 = reg.handle_timer(1530.0)
    assert request2 is not None
    reg.receive_response(make_response(request2, 200, headers=[("Expires", "120")]), 1530.0)
    assert reg.granted == 120 and reg.next_deadline() == pytest.approx(1620.0)


def test_zero_granted_expiry_is_a_failure() -> None:
    reg = registration()
    request = reg.start(0.0)
    reg.receive_response(make_response(request, 200, headers=[("Expires", "0")]), 0.0)
    assert state(reg) is RegistrationState.FAILED


def test_responses_to_other_requests_are_ignored() -> None:
    reg = registration()
    first = reg.start(0.0)
    second = reg.receive_response(Registrar().handle(first, 0.0), 0.0)
    assert second is not None
    assert reg.receive_response(make_response(first, 200), 0.0) is None
    assert state(reg) is RegistrationState.REGISTERING
    assert reg.receive_response(make_response(second, 100), 0.0) is None
    assert state(reg) is RegistrationState.REGISTERING
    foreign = make_response(second, 200)
    foreign.headers.set("Call-ID", "someone-else")
    assert reg.receive_response(foreign, 0.0) is None
    assert state(reg) is RegistrationState.REGISTERING


def test_unsupported_challenge_fails() -> None:
    reg = registration()
    first = reg.start(0.0)
    response = make_response(first, 401, headers=[("WWW-Authenticate", 'Basic realm="x"')])
    assert reg.receive_response(response, 0.0) is None
    assert state(reg) is RegistrationState.FAILED


def test_stop_unregisters_with_expires_zero_and_answers_a_challenge() -> None:
    reg, registrar = registration(), Registrar()
    register(reg, registrar, 0.0)
    bye = reg.stop(100.0)
    assert bye.headers.get("Expires") == "0" and bye.contact[0].uri == CONTACT.uri
    assert state(reg) is RegistrationState.UNREGISTERED and reg.next_deadline() is None
    challenge = registrar.challenge(bye, 100.0)
    again = reg.receive_response(challenge, 100.0)
    assert again is not None and again.headers.get("Expires") == "0"
    assert "Authorization" in again.headers
    assert reg.receive_response(make_response(again, 200), 100.0) is None
    assert state(reg) is RegistrationState.UNREGISTERED and reg.next_deadline() is None


def test_refresh_interval_is_the_earlier_of_85_percent_and_30s_before() -> None:
    assert refresh_interval(3600) == 3060.0
    assert refresh_interval(120) == 90.0
    assert refresh_interval(60) == 30.0
    assert refresh_interval(20) == 10.0


def test_expires_must_be_positive() -> None:
    with pytest.raises(RegistrationError, match="Registration expires must be positive"):
        registration(expires=0)
