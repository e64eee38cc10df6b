"""Behind a trusted reverse proxy, the login lockout counts each client named by
X-Forwarded-For (a real HTTP server, `POST /api/v1/sessions`); from a peer that is not a
trusted proxy the header changes nothing, so it cannot be spoofed to dodge or cause a lockout."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.accounts import AccountBook, config_seeds
from omlmedia.api import create_app
from tests.omlmedia.test_api import FakeSupervision
from tests.omlmedia.test_authz import demo
from webrtc.forwarded import PROXY_TRUST_KEY, ProxyTrust

A, B = "203.0.113.10", "198.51.100.20"


async def _logins(
    tmp_path: Path, trusted: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> tuple[list[int], int, ProxyTrust]:
    """Five wrong passwords for ``admin`` carrying XFF A, then the right one carrying XFF B:
    the statuses of the wrong ones, the right one's status and the server's `ProxyTrust`."""
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    book.seed(config_seeds(config.accounts, config.webrtc.agents))
    app = create_app(config, dict, acd=FakeSupervision(), accounts=book)
    trust = ProxyTrust(tuple(ipaddress.ip_network(n) for n in trusted))
    app[PROXY_TRUST_KEY] = trust
    password = config.generated.demo_password
    caplog.set_level(logging.WARNING, logger="webrtc.accounts")
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            wrong = []
            for _ in range(5):
                response = await client.post(
                    "/api/v1/sessions",
                    json={"name": "admin", "password": "guess"},
                    headers={"X-Forwarded-For": A},
                )
                wrong.append(response.status)
                response.release()
            right = await client.post(
                "/api/v1/sessions",
                json={"name": "admin", "password": password},
                headers={"X-Forwarded-For": f"6.6.6.6, {B}"},
            )
            right.release()
            return wrong, right.status, trust
    finally:
        book.close()


async def test_behind_a_trusted_proxy_failures_from_one_client_do_not_lock_out_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong, right, trust = await _logins(tmp_path, ("127.0.0.0/8",), caplog)
    assert wrong == [401] * 5
    assert right == 201
    # The SECURITY lines fail2ban reads name the client, not the proxy.
    lines = [r.getMessage() for r in caplog.records if r.name == "webrtc.accounts"]
    assert any(line.startswith(f"SECURITY reason=login-failed src={A} port=0 ") for line in lines)
    assert not any("src=127.0.0.1" in line for line in lines), lines
    assert trust.malformed == 0


async def test_from_an_untrusted_peer_a_spoofed_forwarded_for_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong, right, _ = await _logins(tmp_path, ("192.0.2.0/24",), caplog)
    assert wrong == [401] * 5
    assert right == 429  # the same source (the peer) failed: locked out whatever XFF says
    lines = [r.getMessage() for r in caplog.records if r.name == "webrtc.accounts"]
    assert lines and all("src=127.0.0.1" in line for line in lines), lines


async def test_garbage_forwarded_for_from_the_proxy_counts_as_the_proxy(tmp_path: Path) -> None:
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    book.seed(config_seeds(config.accounts, config.webrtc.agents))
    app = create_app(config, dict, acd=FakeSupervision(), accounts=book)
    trust = ProxyTrust((ipaddress.ip_network("127.0.0.1/32"),))
    app[PROXY_TRUST_KEY] = trust
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.post(
                "/api/v1/sessions",
                json={"name": "admin", "password": "guess"},
                headers={"X-Forwarded-For": "not-an-address"},
            )
            assert response.status == 401
            response.release()
    finally:
        book.close()
    assert trust.malformed == 1


async def test_a_wrong_api_token_through_a_trusted_proxy_names_the_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    app = create_app(config, dict, acd=FakeSupervision(), accounts=book)
    app[PROXY_TRUST_KEY] = ProxyTrust((ipaddress.ip_network("127.0.0.1/32"),))
    caplog.set_level(logging.INFO, logger="omlmedia.authz")
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get(
                "/api/v1/status",
                headers={"Authorization": "Bearer guess", "X-Forwarded-For": A},
            )
            assert response.status == 401
            response.release()
    finally:
        book.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "omlmedia.authz"]
    assert lines == [f'SECURITY reason=api-token-invalid src={A} port=0 user="-"'], lines
