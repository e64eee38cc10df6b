"""RFC 4475 and RFC 5118 torture messages sent over UDP to a running `omlmedia serve`.

Each message gets the answer its EXPECTED.tsv row allows; responses (which match no transaction)
are dropped silently; the server answers the next request and leaks no transaction afterwards.
Responses always go back to the datagram's source (RFC 3581 applied to every request), so none of
the torture messages' Via hosts is ever sent to.

Several messages of RFC 4475 share a top Via (branch and sent-by) and method: to the server the
second one is a retransmission of the first (RFC 3261 §17.2.3) and gets the first one's answer.
Each message is meant to be judged on its own, so the test lets the earlier transaction end
before sending a message whose transaction key was used before. The module's server runs with
T1 = 20 ms so that such a wait (Timer J, 64*T1) costs 1.3 s rather than the 6.4 s of the suite's
usual T1 = 100 ms.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.interop.harness import RunningServer, start_server
from tests.sip.conformance import load_torture_messages

MESSAGES = load_torture_messages()
_VIA = re.compile(rb"^(?:Via|v)[ \t]*:[^\r\n]*", re.IGNORECASE | re.MULTILINE)
_sent_keys: set[bytes] = set()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The module's own server, with short SIP timers (see the module docstring)."""
    running = start_server(tmp_path_factory.mktemp("omlmedia"), t1=0.02)
    yield running
    assert running.stop() == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def _transaction_key(data: bytes) -> bytes:
    via = _VIA.search(data)
    return data.split(b" ", 1)[0] + b"|" + (via.group(0) if via else b"")


def _final_status(sock: socket.socket, wait: float) -> int | None:
    """The first final (>= 200) status received within `wait` seconds, or None."""
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
        if not data.startswith(b"SIP/2.0 "):
            continue
        status = int(data[8:11])
        if status >= 200:
            return status


def _allowed(expected: str, status: int | None) -> bool:
    if expected == "discard":
        return status is None
    if status is None:
        return False
    if expected == "process":
        return (status != 400 and status < 500) or status in (501, 503)
    if expected == "400-or-liberal":
        return status == 400 or status < 500
    if expected == "process-or-400":
        return status < 500
    if expected == "process-or-483":
        return status < 500
    return status in {int(code) for code in expected.split("-or-")}


@pytest.mark.parametrize(("name", "data", "expected"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_torture_message_gets_the_expected_answer(
    server: RunningServer, name: str, data: bytes, expected: str
) -> None:
    key = _transaction_key(data)
    if key in _sent_keys:
        server.wait_idle(timeout=20)
    _sent_keys.add(key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, ("127.0.0.1", server.sip_port))
        status = _final_status(sock, 0.6 if expected == "discard" else 3.0)
    assert _allowed(expected, status), f"{name}: expected {expected}, got {status}"
    server.assert_alive()


def test_server_answers_options_after_the_torture_and_drains(server: RunningServer) -> None:
    options = (
        b"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-after-torture;rport\r\n"
        b"Max-Forwards: 70\r\nTo: <sip:echo@127.0.0.1>\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n"
        b"Call-ID: after-torture\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(options, ("127.0.0.1", server.sip_port))
        assert _final_status(sock, 3.0) == 200
    status = server.wait_idle(timeout=20)
    assert status["sip"]["transactions"] == 0, status
    assert status["sip"]["dialogs"] == 0
    server.assert_alive()
