"""contrib/fail2ban against the web side (issue 12, low items): failed agent and API logins and
API requests with a bearer token that is not valid write one SECURITY line each, the filter
bans their source (never a value from the request), in every log format, and the real
``fail2ban-regex`` (Debian's fail2ban, `make test` installs it) agrees."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from omlmedia.authz import Identity, Role, Scopes, authorize
from sip.security import security_event
from tests.sip.test_security import FILTER, JAIL, fail2ban_host, failregexes, structured_line
from webrtc.accounts import security_line

SOURCE = "203.0.113.7"


@pytest.mark.parametrize("fmt", ["plain", "kv", "json"])
@pytest.mark.parametrize(
    ("logger_name", "reason"),
    [
        ("webrtc.accounts", "login-failed"),
        ("webrtc.accounts", "login-pair-locked"),
        ("omlmedia.authz", "api-token-invalid"),
    ],
)
def test_web_and_api_failures_ban_their_source(logger_name: str, reason: str, fmt: str) -> None:
    line = security_line(reason, SOURCE, 443, "agent1")
    if fmt != "plain":
        line = structured_line(logger_name, line, fmt)
    assert fail2ban_host(line) == SOURCE
    v6 = security_line(reason, "2001:db8::7", 0, None)
    assert fail2ban_host(v6 if fmt == "plain" else structured_line(logger_name, v6, fmt)) == (
        "2001:db8::7"
    )


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_a_security_line_from_another_logger_or_inside_a_value_bans_nobody(fmt: str) -> None:
    line = security_line("login-failed", "6.6.6.6", 1, "x")
    assert fail2ban_host(structured_line("webrtc.app", line, fmt)) is None
    forged = f'logger=webrtc.accounts msg="{line}'
    assert fail2ban_host(structured_line("omlmedia.api", "bad %s", fmt, user=forged)) is None
    assert fail2ban_host(structured_line("omlmedia.api", forged, fmt)) is None


_PIECES = [*' "\\=\n\r\t:.,;x6S', "src=", "SECURITY reason=", "port=1 ", 'user="', "\u2028"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=30).map("".join),
    st.sampled_from(["plain", "kv", "json"]),
)
def test_hostile_user_names_never_change_the_banned_host(user: str, fmt: str) -> None:
    line = security_line("login-failed", SOURCE, 5, user)
    if fmt != "plain":
        line = structured_line("webrtc.accounts", line, fmt)
    assert "\n" not in line and "\r" not in line
    for regex in failregexes():
        for match in regex.finditer(line):
            assert match.group("host") == SOURCE
    assert fail2ban_host(line) == SOURCE


def test_the_example_jail_covers_https() -> None:
    text = JAIL.read_text()
    assert "port      = 5060,5061,8443" in text


class Tokens:
    def authenticate(self, token: str) -> Identity | None:
        return Identity("ops", Role.ADMIN) if token == "good" else None


async def test_a_wrong_api_token_is_one_security_line_and_no_token_is_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def status(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[authorize(Tokens(), lambda: Scopes())])
    app.router.add_get("/api/v1/status", status)
    caplog.set_level(logging.INFO, logger="omlmedia.authz")
    async with TestClient(TestServer(app)) as client:
        for headers in (
            {},
            {"Authorization": "Bearer guess-123"},
            {"Authorization": "Bearer good"},
        ):
            response = await client.get("/api/v1/status", headers=headers)
            assert response.status == (
                200 if headers.get("Authorization") == "Bearer good" else 401
            )
            response.release()
    lines = [r.getMessage() for r in caplog.records if r.name == "omlmedia.authz"]
    assert len(lines) == 1 and lines[0].startswith(
        "SECURITY reason=api-token-invalid src=127.0.0.1"
    )
    assert "guess-123" not in lines[0]
    assert fail2ban_host(lines[0]) == "127.0.0.1"


def _fail2ban_regex() -> str | None:
    path = shutil.which("fail2ban-regex")
    if path is None and os.environ.get("CI"):
        pytest.fail("fail2ban-regex is not installed: run `make test`, which installs fail2ban")
    return path


def test_the_real_fail2ban_regex_counts_every_failure_and_nothing_else(tmp_path: Path) -> None:
    tool = _fail2ban_regex()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("fail2ban-regex is not installed: run `make test`, which installs fail2ban")
        pytest.skip("fail2ban-regex is not installed (make test installs it)")
    entries: list[tuple[str, str]] = [
        ("sip.security", security_event("auth-failed", "198.51.100.1", 5060, "INVITE", "c", "u")),
        ("webrtc.accounts", security_line("login-failed", "198.51.100.2", 0, "agent1")),
        ("webrtc.accounts", security_line("login-address-locked", "198.51.100.2", 0, 'a"b')),
        ("omlmedia.authz", security_line("api-token-invalid", "2001:db8::9", 44321, None)),
        ("webrtc.app", security_line("login-failed", "6.6.6.6", 0, "forged")),
        ("omlmedia.api", "a request from 6.6.6.6"),
    ]
    lines = [
        structured_line(logger_name, message, fmt)
        for fmt in ("kv", "json")
        for logger_name, message in entries
    ]
    log = tmp_path / "omlmedia.log"
    log.write_text("\n".join(lines) + "\n")

    def run(*options: str) -> str:
        result = subprocess.run(
            [tool, *options, str(log), str(FILTER)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "Lines: 12 lines, 0 ignored, 8 matched, 4 missed" in run(), run()
    banned = run("--out", "ip").split()
    assert banned == ["198.51.100.1", "198.51.100.2", "198.51.100.2", "2001:db8::9"] * 2
