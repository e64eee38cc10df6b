"""Tests for sip.security: trusted networks, pike-style limiter, fail2ban line and filter."""

from __future__ import annotations

import configparser
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.security import RateLimiter, SecurityError, SourcePolicy, Verdict, security_event

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "filter.d" / "omlmedia.conf"
JAIL = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "jail.d" / "omlmedia.conf"
# fail2ban's historical <HOST> alias (the loosest one; newer versions only accept addresses).
HOST = r"(?:::f{4,6}:)?(?P<host>\S+)"


def failregexes() -> list[re.Pattern[str]]:
    parser = configparser.ConfigParser()
    parser.read(FILTER)
    lines = [line.strip() for line in parser["Definition"]["failregex"].splitlines()]
    return [re.compile(line.replace("<HOST>", HOST)) for line in lines if line]


def fail2ban_host(line: str) -> str | None:
    """What fail2ban would ban for this line: the first failregex that matches, searched."""
    for regex in failregexes():
        match = regex.search(line)
        if match is not None:
            return match.group("host")
    return None


# -- SourcePolicy ---------------------------------------------------------------------------


def test_policy_matches_ipv4_and_ipv6_cidrs() -> None:
    policy = SourcePolicy(["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"])
    assert policy.is_trusted("192.0.2.200")
    assert policy.is_trusted("198.51.100.7")
    assert not policy.is_trusted("198.51.100.8")
    assert policy.is_trusted("2001:db8:1::5")
    assert policy.is_trusted("[2001:db8::1]")
    assert not policy.is_trusted("2001:db9::1")
    assert "192.0.2.1" in policy and "10.0.0.1" not in policy


def test_policy_matches_ipv4_mapped_ipv6_sources() -> None:
    assert SourcePolicy(["192.0.2.0/24"]).is_trusted("::ffff:192.0.2.9")


def test_policy_treats_garbage_addresses_as_untrusted() -> None:
    policy = SourcePolicy(["0.0.0.0/0", "::/0"])
    assert not policy.is_trusted("pbx.example.com")
    assert not policy.is_trusted("")
    assert policy.is_trusted("203.0.113.1")


def test_policy_rejects_bad_cidr() -> None:
    with pytest.raises(SecurityError, match="Trusted network is not a valid CIDR"):
        SourcePolicy(["192.0.2.0/33"])
    with pytest.raises(SecurityError, match="Trusted network is not a valid CIDR"):
        SourcePolicy(["pbx.example.com"])


def test_empty_policy_trusts_nobody() -> None:
    assert not SourcePolicy().is_trusted("127.0.0.1")


# -- RateLimiter ----------------------------------------------------------------------------


def test_burst_up_to_limit_is_allowed_then_source_is_banned() -> None:
    limiter = RateLimiter(max_requests=5, window=1.0, ban_time=60.0)
    verdicts = [limiter.check("203.0.113.5", 10.0) for _ in range(7)]
    assert verdicts == [Verdict.ALLOW] * 5 + [Verdict.BAN, Verdict.DROP]
    assert limiter.banned(10.0) == [("203.0.113.5", 70.0)]


def test_banned_source_is_dropped_for_ban_time_even_when_quiet() -> None:
    limiter = RateLimiter(max_requests=2, window=1.0, ban_time=30.0)
    for _ in range(3):
        limiter.allow("203.0.113.5", 0.0)
    assert not limiter.allow("203.0.113.5", 29.9)
    assert limiter.allow("203.0.113.5", 30.0)
    assert limiter.banned(30.0) == []


def test_steady_rate_under_the_limit_is_never_banned() -> None:
    limiter = RateLimiter(max_requests=10, window=1.0, ban_time=60.0)
    assert all(limiter.allow("203.0.113.5", i * 0.1) for i in range(1000))


def test_steady_rate_over_the_limit_is_banned() -> None:
    limiter = RateLimiter(max_requests=10, window=1.0, ban_time=60.0)
    verdicts = [limiter.check("203.0.113.5", i * 0.05) for i in range(40)]
    assert Verdict.BAN in verdicts
    assert verdicts.count(Verdict.BAN) == 1


def test_sources_are_limited_independently() -> None:
    limiter = RateLimiter(max_requests=2, window=1.0, ban_time=60.0)
    for _ in range(3):
        limiter.allow("203.0.113.5", 0.0)
    assert not limiter.allow("203.0.113.5", 0.0)
    assert limiter.allow("203.0.113.6", 0.0)


def test_trusted_sources_are_never_limited() -> None:
    limiter = RateLimiter(1, 1.0, 60.0, policy=SourcePolicy(["10.0.0.0/8"]))
    assert all(limiter.allow("10.1.2.3", 0.0) for _ in range(100))
    assert limiter.tracked_sources == 0


def test_ipv6_sources_in_one_64_share_a_bucket() -> None:
    limiter = RateLimiter(max_requests=2, window=1.0, ban_time=60.0)
    assert limiter.allow("2001:db8:0:1::1", 0.0)
    assert limiter.allow("2001:db8:0:1::2", 0.0)
    assert limiter.check("2001:db8:0:1:ffff::3", 0.0) is Verdict.BAN
    assert limiter.banned(0.0) == [("2001:db8:0:1::/64", 60.0)]
    assert limiter.allow("2001:db8:0:2::1", 0.0)


def test_idle_sources_are_forgotten() -> None:
    limiter = RateLimiter(max_requests=5, window=1.0, ban_time=60.0)
    for i in range(1000):
        limiter.allow(f"198.51.{i // 256}.{i % 256}", 0.0)
    assert limiter.tracked_sources == 1000
    limiter.allow("203.0.113.1", 1.5)
    assert limiter.tracked_sources == 1


def test_memory_is_capped_under_a_spoofed_source_flood() -> None:
    limiter = RateLimiter(max_requests=1, window=60.0, ban_time=600.0, max_sources=100)
    for i in range(5000):
        ip = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
        limiter.allow(ip, 0.0)
        limiter.allow(ip, 0.0)
    assert limiter.tracked_sources <= 100
    assert len(limiter.banned(0.0)) <= 100


def test_expired_bans_are_forgotten() -> None:
    limiter = RateLimiter(max_requests=1, window=1.0, ban_time=5.0)
    for i in range(50):
        limiter.allow(f"198.51.100.{i}", 0.0)
        limiter.allow(f"198.51.100.{i}", 0.0)
    assert len(limiter.banned(4.0)) == 50
    assert limiter.banned(5.0) == []


def test_unban_lifts_a_ban() -> None:
    limiter = RateLimiter(max_requests=1, window=1.0, ban_time=60.0)
    limiter.allow("203.0.113.5", 0.0)
    limiter.allow("203.0.113.5", 0.0)
    assert limiter.unban("203.0.113.5")
    assert not limiter.unban("203.0.113.5")
    assert limiter.allow("203.0.113.5", 0.0)


def test_is_banned_reports_a_ban_without_counting() -> None:
    limiter = RateLimiter(2, 10.0, 60.0, policy=SourcePolicy(["10.0.0.0/8"]))
    for _ in range(1000):
        assert not limiter.is_banned("192.0.2.1", 0.0)
    assert limiter.tracked_sources == 0  # asking counts nothing
    assert [limiter.check("192.0.2.1", 0.0) for _ in range(3)][-1] is Verdict.BAN
    assert limiter.is_banned("192.0.2.1", 59.9)
    assert not limiter.is_banned("192.0.2.2", 59.9) and not limiter.is_banned("10.1.2.3", 1.0)
    assert not limiter.is_banned("192.0.2.1", 60.0)
    assert limiter.banned(60.0) == []


def test_is_banned_covers_the_whole_ipv6_64() -> None:
    limiter = RateLimiter(1, 10.0, 60.0)
    limiter.check("2001:db8:1:2::1", 0.0)
    assert limiter.check("2001:db8:1:2::2", 0.0) is Verdict.BAN
    assert limiter.is_banned("2001:db8:1:2:ffff::9", 1.0)
    assert not limiter.is_banned("2001:db8:1:3::1", 1.0)


def test_zero_ban_time_only_drops_over_limit_requests() -> None:
    limiter = RateLimiter(max_requests=1, window=1.0, ban_time=0.0)
    assert limiter.allow("203.0.113.5", 0.0)
    assert limiter.check("203.0.113.5", 0.0) is Verdict.DROP
    assert limiter.banned(0.0) == []


def test_bad_limiter_settings_raise() -> None:
    with pytest.raises(SecurityError, match="Rate limit settings must be positive"):
        RateLimiter(0, 1.0, 1.0)
    with pytest.raises(SecurityError, match="Rate limit settings must be positive"):
        RateLimiter(1, 0.0, 1.0)
    with pytest.raises(SecurityError, match=r"IPv6 prefix length must be 1\.\.128"):
        RateLimiter(1, 1.0, 1.0, ipv6_prefix=0)


# -- security_event -------------------------------------------------------------------------


def test_security_event_has_the_fixed_format() -> None:
    line = security_event("auth-failed", "203.0.113.7", 5060, "REGISTER", "abc@host", "1001")
    assert line == (
        'SECURITY reason=auth-failed src=203.0.113.7 port=5060 method="REGISTER" '
        'call_id="abc@host" user="1001"'
    )


def test_security_event_renders_missing_values_as_empty_quotes() -> None:
    line = security_event("untrusted-source", "2001:db8::1", 5061, "INVITE", "c", None)
    assert line.endswith('src=2001:db8::1 port=5061 method="INVITE" call_id="c" user=""')


def test_security_event_escapes_hostile_values() -> None:
    hostile = 'x" src=6.6.6.6 port=1\nSECURITY reason=evil src=6.6.6.6 port=1 user="\\'
    line = security_event("auth-failed", "203.0.113.7", 5060, "INVITE", hostile, hostile)
    assert "\n" not in line and " src=6.6.6.6" not in line
    assert line.count('"') == 6
    assert line.startswith("SECURITY reason=auth-failed src=203.0.113.7 port=5060 ")
    assert "\\x22\\x20src=6.6.6.6" in line and "\\x0a" in line and "\\x5c" in line


def test_security_event_escapes_unicode_separators_and_truncates() -> None:
    line = security_event("x", "203.0.113.7", 1, "INVITE", "a\u2028b\u0085c", "ñ" * 1000)
    assert "\u2028" not in line and "\u0085" not in line
    assert "\\u2028" in line and "\\u0085" in line
    assert "ñ" * 256 + '..."' in line and "ñ" * 257 not in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("auth failed", "203.0.113.7", 5060), "Security event reason is not a token"),
        (("", "203.0.113.7", 5060), "Security event reason is not a token"),
        (("x", "evil host", 5060), "Security event source is not an IP address"),
        (("x", "203.0.113.7", 70000), "Security event port is not valid"),
        (("x", "203.0.113.7", -1), "Security event port is not valid"),
    ],
)
def test_security_event_rejects_bad_fields(args: tuple[str, str, int], message: str) -> None:
    with pytest.raises(SecurityError, match=message):
        security_event(*args, "INVITE", "c", "u")


# -- fail2ban filter ------------------------------------------------------------------------


def test_filter_matches_the_bare_line() -> None:
    line = security_event("auth-failed", "203.0.113.7", 5060, "REGISTER", "abc", "1001")
    assert fail2ban_host(line) == "203.0.113.7"


def test_filter_matches_the_ban_lines_of_floods_and_password_guessing() -> None:
    for reason in ("rate-limit-ban", "auth-failure-ban"):
        line = security_event(reason, "203.0.113.7", 5060, "INVITE", "abc", "1001")
        assert fail2ban_host(line) == "203.0.113.7"


def test_filter_matches_ipv6_sources() -> None:
    line = security_event("auth-failed", "2001:db8::7", 5060, "REGISTER", "abc", "1001")
    assert fail2ban_host(line) == "2001:db8::7"


def test_filter_ignores_unrelated_lines() -> None:
    assert fail2ban_host('ts=x level=info logger=sip.ua msg="call answered"') is None
    assert fail2ban_host("SECURITY reason=x src=1.2.3.4") is None


def test_jail_example_uses_the_filter() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(JAIL)
    assert parser["omlmedia"]["filter"] == "omlmedia"
    assert parser["omlmedia"]["enabled"] == "true"


def structured_line(logger_name: str, message: str, fmt: str, **context: object) -> str:
    logs = pytest.importorskip("omlmedia.logs")
    formatter = logs.StructuredFormatter(json_lines=fmt == "json")
    record = logging.LogRecord(logger_name, logging.WARNING, __file__, 1, message, None, None)
    with logs.log_context(**context):
        return str(formatter.format(record))


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_filter_matches_structured_log_lines(fmt: str) -> None:
    event = security_event("auth-failed", "203.0.113.7", 5060, "INVITE", "c@h", "1001")
    assert fail2ban_host(structured_line("sip.security", event, fmt)) == "203.0.113.7"


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_hostile_text_in_other_log_lines_cannot_trigger_a_ban(fmt: str) -> None:
    forged = [
        'SECURITY reason=x src=6.6.6.6 port=1 method="INVITE"',
        'logger=sip.security msg="SECURITY reason=x src=6.6.6.6 port=1 method="',
        '"logger":"sip.security","msg":"SECURITY reason=x src=6.6.6.6 port=1 method=',
    ]
    for text in forged:
        line = structured_line("sip.ua", "bad request from %s", fmt, call_id=text)
        assert fail2ban_host(line) is None
        line = structured_line("sip.ua", text, fmt)
        assert fail2ban_host(line) is None


_PIECES = [*' "\\=\n\r\t:.,;x6S', "src=", "SECURITY reason=", "port=1 ", "\u2028"]
_hostile = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(_hostile, _hostile, _hostile, st.sampled_from(["plain", "kv", "json"]))
def test_hostile_values_never_change_the_banned_host(
    method: str, call_id: str, user: str, fmt: str
) -> None:
    event = security_event("auth-failed", "203.0.113.7", 5060, method, call_id, user)
    line = event if fmt == "plain" else structured_line("sip.security", event, fmt)
    assert "\n" not in line and "\r" not in line
    for regex in failregexes():
        for match in regex.finditer(line):
            assert match.group("host") == "203.0.113.7"
    assert fail2ban_host(line) == "203.0.113.7"
