"""webrtc.accounts: scrypt hashes, sessions, takeover, lockout."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import webrtc.accounts as accounts_module
from webrtc.accounts import (
    Account,
    AccountStore,
    PasswordChecker,
    hash_password,
    parse_password_hash,
    security_line,
    source_key,
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


def test_failures_for_agent1_from_one_address_do_not_lock_it_for_another_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    accounts = store(clock, max_failures=3)
    caplog.set_level(logging.WARNING, logger="webrtc.accounts")
    for _ in range(10):
        with pytest.raises(LoginError):
            accounts.login_with_password("agent1", "nope", "192.0.2.7", 5555)
    assert accounts.login_with_password("agent1", "secret-1", "192.0.2.9").token
    assert 'SECURITY reason=login-failed src=192.0.2.7 port=5555 user="agent1"' in caplog.text
    assert "SECURITY reason=login-pair-locked src=192.0.2.7" in caplog.text
    assert "SECURITY reason=login-locked-out src=192.0.2.7" in caplog.text


def test_the_failing_pair_is_locked_even_with_the_right_password_and_longer_each_time() -> None:
    clock = Clock()
    accounts = store(clock, max_failures=3, lockout=60, max_lockout=200)
    for expected in (60, 120, 200, 200):
        for _ in range(3):
            with pytest.raises(LoginError):
                accounts.login_with_password("agent1", "nope", "192.0.2.7")
        with pytest.raises(LoginError) as locked:
            accounts.login_with_password("agent1", "secret-1", "192.0.2.7")
        assert locked.value.code == "locked-out"
        clock.now += expected - 1
        assert accounts.locked("agent1", "192.0.2.7")
        clock.now += 2
        assert not accounts.locked("agent1", "192.0.2.7")
    assert accounts.login_with_password("agent1", "secret-1", "192.0.2.7").token


def test_only_failures_from_many_sources_lock_the_account_and_briefly() -> None:
    clock = Clock()
    accounts = store(clock, max_failures=100, account_lock_sources=5, account_lockout=60)
    accounts.login_with_password("agent1", "secret-1", "192.0.2.1")  # its usual desk
    for n in range(4):
        with pytest.raises(LoginError):
            accounts.login_with_password("agent1", "nope", f"198.51.100.{n}")
    assert not accounts.locked("agent1", "203.0.113.1")
    with pytest.raises(LoginError):
        accounts.login_with_password("agent1", "nope", "198.51.100.4")
    with pytest.raises(LoginError) as locked:
        accounts.login_with_password("agent1", "secret-1", "203.0.113.1")
    assert locked.value.code == "locked-out"
    assert accounts.login_with_password("agent1", "secret-1", "192.0.2.1").token
    clock.now += 61
    assert accounts.login_with_password("agent1", "secret-1", "203.0.113.1").token


def test_ipv6_sources_are_counted_per_64() -> None:
    clock = Clock()
    accounts = store(clock, max_failures=3)
    for host in ("2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::c"):
        with pytest.raises(LoginError):
            accounts.login_with_password("agent1", "nope", host)
    assert accounts.locked("agent1", "2001:db8:1:2::1234")
    assert not accounts.locked("agent1", "2001:db8:1:3::a")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("[2001:db8::1]") == "2001:db8::/64"


def test_failure_tables_stay_bounded_under_many_sources() -> None:
    clock = Clock()
    accounts = store(clock, max_tracked=100)
    for n in range(1000):
        with pytest.raises(LoginError):
            accounts.login("nobody", False, f"10.0.{n >> 8}.{n & 255}")
        with pytest.raises(LoginError):
            accounts.login("agent1", False, f"10.1.{n >> 8}.{n & 255}")
    assert len(accounts._address_failures) <= 100 and len(accounts._pair_failures) <= 100


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


async def test_password_checks_run_on_their_own_threads_and_excess_is_refused_as_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, release = threading.Event(), threading.Event()
    threads: list[str] = []

    def slow_verify(password: str, password_hash: str) -> bool:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(5)
        return password == password_hash

    monkeypatch.setattr(accounts_module, "verify_password", slow_verify)
    checker = PasswordChecker(workers=1, max_pending=2)
    try:
        first = asyncio.ensure_future(checker("pw", "pw"))
        second = asyncio.ensure_future(checker("pw", "other"))
        await asyncio.sleep(0)
        with pytest.raises(LoginError) as busy:
            await checker("pw", "pw")
        assert busy.value.code == "busy"
        release.set()
        assert (await first, await second) == (True, False)
        assert threads and all(name.startswith("scrypt") for name in threads)
        assert await checker("pw", "pw")  # the slots came back
    finally:
        release.set()
        checker.close()
