"""Digest without ``qop`` (RFC 2069 style: no cnonce, no nonce count, so a captured response
replays while its nonce lives) is refused where `security.allow_digest_without_qop` says so, which
is the default on every listen address beyond loopback (issue 12, low items; RFC 7616 §3.3).

A raw UDP client answers the server's challenge by hand, once without qop and once with
qop=auth, against a running `omlmedia serve` that refuses no-qop answers, and against the
loopback default, which still accepts them (old PBXs on the same host)."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator

import pytest

from benchmarks import harness
from sip.digest import DigestClient
from sip.message import Response, parse_message
from tests.interop.harness import DEMO_PASSWORD, RunningServer
from tests.interop.test_hostile_sip import scan_request, wait_for_answer

CLIENT = "127.0.0.41"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    def edit(text: str) -> str:
        assert "ban_time = 5.0\n" in text
        return text.replace(
            "ban_time = 5.0\n", "ban_time = 5.0\nallow_digest_without_qop = false\n"
        )

    try:
        running = harness.start_server(tmp_path_factory.mktemp("omlmedia"), edit_config=edit)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, running.log()[-3000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def _param(challenge: str, name: str) -> str:
    found = re.search(rf'{name}="([^"]*)"', challenge)
    assert found is not None, challenge
    return found.group(1)


def without_qop(challenge: str, method: str, uri: str, password: str = DEMO_PASSWORD) -> str:
    """An RFC 2069 answer to an MD5 `challenge`: response = MD5(HA1:nonce:HA2), no qop."""
    assert "algorithm=MD5" in challenge, challenge
    nonce, opaque = _param(challenge, "nonce"), _param(challenge, "opaque")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = md5(f"{md5(f'demo:omlmedia:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
    return (
        f'Digest username="demo", realm="omlmedia", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, opaque="{opaque}"'
    )


def options(server: RunningServer, n: int, *, qop: bool) -> Response:
    """OPTIONS as demo with the right password: the answer to the authorized attempt."""
    uri = "sip:demo@127.0.0.1"
    target = ("127.0.0.1", server.sip_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CLIENT, 0))
        host, port = sock.getsockname()
        sock.sendto(scan_request("OPTIONS", "demo", host, port, n), target)
        answer = wait_for_answer(sock, f"scan-OPTIONS-{n}".encode())
        assert answer is not None, server.log()[-3000:]
        challenge = parse_message(answer)
        assert isinstance(challenge, Response) and challenge.status == 401
        offers = challenge.headers.getlist("WWW-Authenticate")
        assert all('qop="auth"' in offer for offer in offers), offers
        if qop:
            authorization = DigestClient("demo", DEMO_PASSWORD).authorize(offers, "OPTIONS", uri)
            assert "qop=auth" in authorization
        else:
            md5 = next(offer for offer in offers if "algorithm=MD5" in offer)
            authorization = without_qop(md5, "OPTIONS", uri)
        extra = f"Authorization: {authorization}\r\n"
        sock.sendto(scan_request("OPTIONS", "demo", host, port, n + 1000, extra), target)
        final = wait_for_answer(sock, f"scan-OPTIONS-{n + 1000}".encode())
    assert final is not None, server.log()[-3000:]
    response = parse_message(final)
    assert isinstance(response, Response)
    return response


def test_a_right_password_without_qop_is_refused_where_the_setting_says_so(
    strict: RunningServer,
) -> None:
    refused = options(strict, 1, qop=False)
    assert refused.status == 403, (refused.status, strict.log()[-3000:])
    assert f"SECURITY reason=auth-failed src={CLIENT}" in strict.log()
    accepted = options(strict, 2, qop=True)
    assert accepted.status == 200, (accepted.status, strict.log()[-3000:])


def test_the_loopback_default_still_accepts_an_old_pbx_without_qop(server: RunningServer) -> None:
    accepted = options(server, 3, qop=False)
    assert accepted.status == 200, (accepted.status, server.log()[-3000:])
