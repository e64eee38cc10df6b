"""webrtc.accounts: scrypt hashes, sessions, takeover, lockout."""

from __future__ import annotations

import logging

import pytest

from webrtc.accounts import (
    Account,
    AccountStore,
    hash_password,
    parse_password_hash,
    security_line,
    verify_password,
)
from webrtc.exceptions import LoginError

FAST = {"n": 2**10, "r": 8, "p": 1}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock, **kwargs: float) -> AccountStore:
    accounts = [
        Account("agent1", "Ana", hash_password("secret-1", **FAST)),
        Account("agent2", "Bea", hash_password("secret-2", **FAST)),
    ]
    return AccountStore(accounts, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_hash_is_salted_and_carries_its_parameters() -> None:
    first, second = hash_password("pw", **FAST), hash_password("pw", **FAST)
    assert first != second
    assert first.startswith("scrypt$n=1024,r=8,p=1$")
    parsed = parse_password_hash(first)
    assert (parsed.n, parsed.r, parsed.p, len(parsed.salt), len(parsed.key)) == (1024, 8, 1, 16, 32)


def test_verify_accepts_the_password_and_nothing_else() -> None:
    stored = hash_password("correct horse", **FAST)
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)
    assert not verify_password("correct horse", "plain-text")
    assert not verify_password("x" * 5000, stored)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "scrypt$n=1000,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "bcrypt$x",
        "scrypt$n=1024",
    ],
)
def test_malformed_hash_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="password hash is not a valid scrypt hash"):
        parse_password_hash(text)


def test_default_parameters_are_the_strong_ones() -> None:
    assert hash_password("pw").startswith("scrypt$n=16384,r=8,p=1$")


def test_login_returns_a_token_kept_only_as_its_hash() -> None:
    clock = Clock()
    accounts = store(clock)
    result = accounts.login_with_password("agent1", "secret-1", "192.0.2.7")
    assert len(result.token) >= 40
    assert result.token.encode() not in repr(accounts.__dict__).encode()
    assert accounts.authenticate(result.token) is result.session
    assert accounts.authenticate(result.token + "x") is None
    assert accounts.authenticate("short") is None


def test_session_expires() -> None:
    clock = Clock()
    accounts = store(clock, session_ttl=60)
    result = accounts.login_with_password("agent1", "secret-1", "192.0.2.7")
    clock.now += 59
    assert accounts.authenticate(result.token) is not None
    clock.now += 2
    assert accounts.authenticate(result.token) is None
    assert accounts.session_of("agent1") is None


def test_logout_revokes_the_token_for_good() -> None:
    clock = Clock()
    accounts = store(clock)
    result = accounts.login_with_password("agent1", "secret-1", "192.0.2.7")
    accounts.logout(result.session)
    assert accounts.authenticate(result.token) is None


def test_second_login_takes_over_the_first_session() -> None:
    clock = Clock()
    accounts = store(clock)
    first = accounts.login_with_password("agent1", "secret-1", "192.0.2.7")
    second = accounts.login_with_password("agent1", "secret-1", "192.0.2.8")
    assert second.replaced is first.session
    assert first.session.revoked
    assert accounts.authenticate(first.token) is None
    assert accounts.authenticate(second.token) is second.session
    other = accounts.login_with_password("agent2", "secret-2", "192.0.2.8")
    assert other.replaced is None


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    clock = Clock()
    accounts = store(clock)
    with pytest.raises(LoginError) as wrong:
        accounts.login_with_password("agent1", "nope", "192.0.2.7")
    with pytest.raises(LoginError) as unknown:
        accounts.login_with_password("nobody", "nope", "192.0.2.7")
    assert (wrong.value.code, str(wrong.value)) == (unknown.value.code, str(unknown.value))
    assert wrong.value.code == "bad-credentials"


def test_account_locks_after_failures_and_unlocks_later(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    accounts = store(clock, max_failures=3, lockout=600, failure_window=300)
    caplog.set_level(logging.WARNING, logger="webrtc.accounts")
    for _ in range(3):
        with pytest.raises(LoginError):
            accounts.login_with_password("agent1", "nope", "192.0.2.7", 5555)
    with pytest.raises(LoginError) as locked:
        accounts.login_with_password("agent1", "secret-1", "192.0.2.9")
    assert locked.value.code == "locked-out"
    assert 'SECURITY reason=login-failed src=192.0.2.7 port=5555 user="agent1"' in caplog.text
    assert "SECURITY reason=login-account-locked src=192.0.2.7" in caplog.text
    assert "SECURITY reason=login-locked-out src=192.0.2.9" in caplog.text
    accounts.login_with_password("agent2", "secret-2", "192.0.2.9")
    clock.now += 601
    assert accounts.login_with_password("agent1", "secret-1", "192.0.2.9").token


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    accounts = store(clock, max_failures=3, failure_window=60)
    for _ in range(5):
        with pytest.raises(LoginError):
            accounts.login_with_password("agent1", "nope", "192.0.2.7")
        clock.now += 31
    assert accounts.login_with_password("agent1", "secret-1", "192.0.2.7").token


def test_address_locks_after_failures_on_many_accounts() -> None:
    clock = Clock()
    accounts = store(clock, max_address_failures=4, max_failures=100)
    for name in ("a", "b", "c", "agent2"):
        with pytest.raises(LoginError):
            accounts.login_with_password(name, "nope", "198.51.100.1")
    with pytest.raises(LoginError) as locked:
        accounts.login_with_password("agent1", "secret-1", "198.51.100.1")
    assert locked.value.code == "locked-out"
    assert accounts.login_with_password("agent1", "secret-1", "198.51.100.2").token


def test_security_line_escapes_the_user_name() -> None:
    line = security_line("login-failed", "192.0.2.1", 1, 'a "b"\n\u2028')
    assert (
        line
        == 'SECURITY reason=login-failed src=192.0.2.1 port=1 user="a\\x20\\x22b\\x22\\x0a\\u2028"'
    )
