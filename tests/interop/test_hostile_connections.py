"""Connection caps of a running `omlmedia serve` (issue 12 item 7): one source opening more
HTTPS or SIP TCP connections than its share is refused beyond it, while other sources (the
status request from 127.0.0.1, an OPTIONS over TCP from another loopback address) still get in,
and the slots come back when the connections close. The caps are the ones the server logs at
start (`connection-limits`, derived from its open files limit)."""

from __future__ import annotations

import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sip.message import Response, parse_message
from sip.transport import TransportLimits
from tests.interop.harness import RunningServer

HOLDER = "127.0.0.7"
OTHER = "127.0.0.8"
WAIT = 10.0


def _limit(server: RunningServer, name: str) -> int:
    found = re.search(rf"event=connection-limits .*\b{name}=(\d+)", server.log())
    assert found is not None, server.log()[-3000:]
    return int(found[1])


def _open(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=WAIT, source_address=(HOLDER, 0)
        )
        held.append(sock)
    return held


def _closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes (or resets) `sock` before `deadline`."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def _options(port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {OTHER}:5999;branch=z9hG4bK-caps{n}\r\n"
        f"From: <sip:probe@{OTHER}>;tag=p{n}\r\nTo: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: caps-{n}@{OTHER}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_https_one_source_gets_its_share_and_others_still_get_in(
    server: RunningServer, held: list[socket.socket]
) -> None:
    share = _limit(server, "https_per_source")
    held.extend(_open(server.ports["http"], share + 5))
    deadline = time.monotonic() + WAIT
    refused = sum(_closed_by_peer(sock, deadline) for sock in held[-5:])
    assert refused == 5
    # The first `share` are still open (their TLS handshake is pending, within its deadline).
    assert not _closed_by_peer(held[0], time.monotonic() + 0.2)
    assert server.status()["sip"] is not None  # 127.0.0.1 is another source: it gets in
    for sock in held:
        sock.close()
    held.clear()
    end = time.monotonic() + WAIT
    while True:  # the slots come back
        probe = _open(server.ports["http"], 1)[0]
        held.append(probe)
        if not _closed_by_peer(probe, time.monotonic() + 0.3):
            break
        assert time.monotonic() < end, "the holder's slots never came back"


def test_sip_tcp_one_source_gets_its_share_and_another_is_answered(
    server: RunningServer, held: list[socket.socket]
) -> None:
    share = TransportLimits().max_connections_per_ip  # the server keeps the default
    before = server.status()["transport"]["connections_rejected"]
    held.extend(_open(server.sip_port, share + 4))
    deadline = time.monotonic() + WAIT
    assert sum(_closed_by_peer(sock, deadline) for sock in held[-4:]) == 4
    with socket.create_connection(
        ("127.0.0.1", server.sip_port), timeout=WAIT, source_address=(OTHER, 0)
    ) as other:
        other.sendall(_options(server.sip_port, 1))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = other.recv(4096)
            assert chunk, "the other source's connection was closed"
            data += chunk
    reply = parse_message(data)
    assert isinstance(reply, Response) and reply.status in (200, 401, 403)
    assert server.status()["transport"]["connections_rejected"] - before >= 4


def test_https_answers_carry_hsts_and_a_server_header_without_versions(
    server: RunningServer,
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    base = f"https://127.0.0.1:{server.ports['http']}"
    for path in ("/agent/", "/api/v1/status", "/nowhere"):
        try:
            with urllib.request.urlopen(base + path, context=context, timeout=WAIT) as reply:
                headers = reply.headers
        except urllib.error.HTTPError as error:  # 401, 404: the headers are there too
            headers = error.headers
        assert headers["Server"] == "omlmedia", (path, headers["Server"])
        assert headers["Strict-Transport-Security"] == "max-age=31536000", path
