"""The password-guessing ban's numbers come from the configuration (issue 12, low items): a
running server with ``[security] auth_max_failures = 2`` bans a source at its third wrong
digest, then drops everything it sends, while another source is still answered."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from benchmarks import harness
from sip.digest import DigestClient
from sip.message import Response, parse_message
from tests.interop.harness import RunningServer
from tests.interop.test_hostile_sip import scan_request, wait_for_answer

GUESSER = "127.0.0.31"
OTHER = "127.0.0.32"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    def edit(text: str) -> str:
        assert "ban_time = 5.0\n" in text
        return text.replace(
            "ban_time = 5.0\n", "ban_time = 5.0\nauth_max_failures = 2\nauth_ban_time = 60\n", 1
        )

    try:
        running = harness.start_server(tmp_path_factory.mktemp("omlmedia"), edit_config=edit)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, running.log()[-3000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def guess(sock: socket.socket, server: RunningServer, n: int) -> bytes | None:
    """A REGISTER as demo with a wrong password: the answer to the authorized attempt."""
    host, port = sock.getsockname()
    target = ("127.0.0.1", server.sip_port)
    sock.sendto(scan_request("REGISTER", "demo", host, port, n), target)
    challenge = wait_for_answer(sock, f"scan-REGISTER-{n}".encode(), timeout=2.0)
    if challenge is None:
        return None
    message = parse_message(challenge)
    assert isinstance(message, Response) and message.status == 401
    authorization = DigestClient("demo", "not-the-password").authorize(
        message.headers.getlist("WWW-Authenticate"), "REGISTER", "sip:127.0.0.1"
    )
    extra = f"Authorization: {authorization}\r\n"
    sock.sendto(scan_request("REGISTER", "demo", host, port, n + 1000, extra), target)
    return wait_for_answer(sock, f"scan-REGISTER-{n + 1000}".encode(), timeout=2.0)


def status_of(answer: bytes | None) -> int | None:
    if answer is None:
        return None
    message = parse_message(answer)
    assert isinstance(message, Response)
    return message.status


def test_the_configured_failure_count_bans_the_guesser_and_only_it(server: RunningServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((GUESSER, 0))
        answers = [guess(sock, server, n) for n in range(1, 5)]
    statuses = [status_of(answer) for answer in answers]
    # Two failures are forgiven; the third is answered (403) and starts the ban; then silence.
    assert statuses == [403, 403, 403, None], statuses
    assert f"SECURITY reason=auth-failure-ban src={GUESSER}" in server.log()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((OTHER, 0))
        assert guess(sock, server, 50) is not None
