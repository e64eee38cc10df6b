"""A running `omlmedia serve` against hostile SIP: broken INVITEs over UDP and TCP, and scans.

Broken INVITEs come from the grammar-based generator of tests/sip/mutants.py (seeded: a failure
names its mutant, and the same seed rebuilds it): every header and SDP field broken in each way
once (overlong, missing, duplicated, wrong type, bad escapes, truncated), then random
combinations, some with broken framing. They are sent in batches from the PBX's address (trusted:
they reach routing, SDP and the media target) and from a stranger (they stop at admission). After
each batch a valid OPTIONS must be answered, the process must be up, and its resident memory must
stay within RSS_BOUND_KIB of what it was after the first batch; at the end nothing may be left
behind and the server log holds no Traceback (checked by the fixture).

Scans do what SIPVicious does (svmap, svwar, svcrack): OPTIONS, REGISTER and INVITE for user names
and extensions that exist and that do not, then guessed passwords, from untrusted loopback
addresses (127.0.0.1 is the PBX, trusted). Each method must get one answer whose status, reason
and headers are the same for every name, values that echo the request aside, so that nothing tells
an existing user from another.

The module's server runs with T1 = 20 ms, so an INVITE that was answered but never acknowledged
ends after 64*T1 = 1.3 s instead of 6.4 s.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip.digest import DigestClient
from sip.message import Response, parse_message
from tests.interop.harness import RunningServer, start_server
from tests.sip.mutants import Mutant, mutants

SEED = 20261206
BATCH = 40
UDP_BATCHES = 60
TCP_BATCHES = 15
RSS_BOUND_KIB = 32 * 1024
"""What the broken INVITEs may add to the server's resident memory once the first batch has run:
allocator caches and the bounded tables (calls end within 64*T1, transactions with their timers,
the RTP port pool fills up to its range), not something per message. Measured here: about 11 MB
after 40 UDP batches (the port pool warming up), then flat."""
SECOND_HALF_BOUND_KIB = 8 * 1024
"""What the second half of the UDP batches may add: the same traffic again must find the server
at its plateau (measured here: under 1 MB)."""
STRANGER = "127.0.0.5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The module's own server, with short SIP timers (see the module docstring)."""
    running = start_server(tmp_path_factory.mktemp("omlmedia"), t1=0.02)
    yield running
    assert running.stop() == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def options(n: int, host: str, port: int, transport: str = "UDP", user: str = "echo") -> bytes:
    return (
        f"OPTIONS sip:{user}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK-probe{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=p{n}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: probe-{n}-{transport}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def wait_for_answer(sock: socket.socket, call_id: bytes, timeout: float = 5.0) -> bytes | None:
    """The first response carrying `call_id`, skipping everything else; None after `timeout`."""
    deadline = time.monotonic() + timeout
    pending = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        if sock.type == socket.SOCK_STREAM:
            if not data:
                return None
            pending += data
            data = pending
        if data.startswith(b"SIP/2.0 ") or b"\r\nSIP/2.0 " in data:
            for message in re.split(rb"(?=SIP/2\.0 \d{3} )", data):
                if call_id in message and message.startswith(b"SIP/2.0 "):
                    return message
    return None


def probe_udp(server: RunningServer, n: int) -> None:
    """A valid OPTIONS from the PBX's address, on a socket of its own (the mutants' socket is busy
    with the answers, retransmitted 2xx and BYEs of the calls they started), resent every 0.5 s
    for 5 s as a UAC does over UDP: a burst of large datagrams may overflow the server's socket
    buffer, and the kernel then drops what comes next, the probe included."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        answer = None
        for _ in range(10):  # like Timer E: a datagram lost in a full receive buffer is resent
            sock.sendto(options(n, host, port), ("127.0.0.1", server.sip_port))
            answer = wait_for_answer(sock, f"probe-{n}-UDP".encode(), timeout=0.5)
            if answer is not None:
                break
    assert answer is not None and answer.startswith(b"SIP/2.0 200 "), (n, answer)


def probe_tcp(server: RunningServer, n: int) -> None:
    with socket.create_connection(("127.0.0.1", server.sip_port), timeout=5) as conn:
        host, port = conn.getsockname()
        conn.sendall(options(n, host, port, "TCP"))
        answer = wait_for_answer(conn, f"probe-{n}-TCP".encode())
    assert answer is not None and answer.startswith(b"SIP/2.0 200 "), (n, answer)


def test_broken_invites_over_udp_never_stop_or_grow_the_server(server: RunningServer) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        pbx.bind(("127.0.0.1", 0))
        stranger.bind((STRANGER, 0))
        host, port = pbx.getsockname()
        generated = list(mutants(SEED, UDP_BATCHES * BATCH, host=host, port=port))
        stranger_port = stranger.getsockname()[1]
        strange = mutants(SEED + 1, UDP_BATCHES * BATCH, host=STRANGER, port=stranger_port)
        target = ("127.0.0.1", server.sip_port)
        baseline = halfway = 0
        for batch in range(UDP_BATCHES):
            sent: list[Mutant] = []
            for n, mutant in enumerate(generated[batch * BATCH : (batch + 1) * BATCH]):
                other = next(strange)
                (stranger if n % 4 == 0 else pbx).sendto(
                    (other if n % 4 == 0 else mutant).data, target
                )
                sent.append(mutant)
            try:
                probe_udp(server, batch)
            except AssertionError:
                server.assert_alive()
                names = ", ".join(m.name for m in sent)
                raise AssertionError(f"batch {batch}: no answer after {names}") from None
            server.assert_alive()
            if batch == 0:
                baseline = rss_kib(server.pid)
            grown = rss_kib(server.pid) - baseline
            assert grown < RSS_BOUND_KIB, (batch, grown)
            if batch == UDP_BATCHES // 2:
                halfway = grown
        assert grown - halfway < SECOND_HALF_BOUND_KIB, (halfway, grown)
    status = server.wait_idle(timeout=20)
    assert status["sip"]["transactions"] == 0 and status["sip"]["calls"] == 0, status["sip"]
    assert status["sip"]["ua"]["parse_errors"] > UDP_BATCHES * BATCH // 10, status["sip"]["ua"]
    assert status["media"]["rtp_ports_in_use"] == 0, status["media"]


def test_broken_invites_over_tcp_never_stop_or_grow_the_server(server: RunningServer) -> None:
    """Each mutant on a connection of its own (one whose framing broke would swallow the next),
    the batch's connections held open until the probe, so that answers have somewhere to go."""
    baseline = 0
    before = server.status()["transport"]["stream_messages_in"]
    generated = list(
        mutants(SEED + 2, TCP_BATCHES * BATCH, host="127.0.0.1", port=9, transport="TCP")
    )
    for batch in range(TCP_BATCHES):
        connections = []
        names = []
        for n, mutant in enumerate(generated[batch * BATCH : (batch + 1) * BATCH]):
            source = STRANGER if n % 4 == 0 else "127.0.0.1"
            conn = socket.create_connection(
                ("127.0.0.1", server.sip_port), timeout=5, source_address=(source, 0)
            )
            connections.append(conn)
            names.append(mutant.name)
            try:
                conn.sendall(mutant.data)
            except OSError:  # the server gave up on the stream already
                pass
        try:
            probe_tcp(server, 1000 + batch)
        except AssertionError:
            server.assert_alive()
            raise AssertionError(f"batch {batch}: no answer after {', '.join(names)}") from None
        finally:
            for conn in connections:
                conn.close()
        server.assert_alive()
        if batch == 0:
            baseline = rss_kib(server.pid)
        grown = rss_kib(server.pid) - baseline
        assert grown < RSS_BOUND_KIB, (batch, grown)
    status = server.wait_idle(timeout=20)
    assert status["sip"]["transactions"] == 0 and status["sip"]["calls"] == 0, status["sip"]
    received = status["transport"]["stream_messages_in"] - before
    assert received > TCP_BATCHES * BATCH // 2, received


# -- scans ------------------------------------------------------------------------------------

EXISTING = ["echo", "support", "agent-agent1", "demo", "9123", "sales"]
MISSING = ["nobody", "1000", "admin", "agent-zz", "x" * 40, "2001"]
_ECHOED = {"via", "from", "to", "call-id", "cseq"}
_NONCE = re.compile(r'nonce="[^"]*"')


def scan_request(method: str, user: str, host: str, port: int, n: int, extra: str = "") -> bytes:
    """What svmap/svwar send: REGISTER names the user in To only, the others in the URI too."""
    uri = "sip:127.0.0.1" if method == "REGISTER" else f"sip:{user}@127.0.0.1"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-scan{method}{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=s{n}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: scan-{method}-{n}\r\n"
        f"CSeq: 1 {method}\r\nContact: <sip:{user}@{host}:{port}>\r\n"
        f"User-Agent: friendly-scanner\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def shape(data: bytes) -> tuple[object, ...]:
    """Status, reason, and every header but those that echo the request, nonces masked."""
    response = parse_message(data)
    assert isinstance(response, Response)
    headers = sorted(
        (name.lower(), _NONCE.sub('nonce="*"', value) if "authenticate" in name.lower() else value)
        for name, value in response.headers.items()
        if name.lower() not in _ECHOED
    )
    return (response.status, response.reason, tuple(headers), response.body)


def scan(server: RunningServer, source: str, method: str, extra: str = "") -> dict[str, bytes]:
    answers = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        host, port = sock.getsockname()
        for n, user in enumerate(EXISTING + MISSING):
            sock.sendto(
                scan_request(method, user, host, port, n, extra), ("127.0.0.1", server.sip_port)
            )
            answer = wait_for_answer(sock, f"scan-{method}-{n}".encode())
            assert answer is not None, (method, user)
            answers[user] = answer
    return answers


@pytest.mark.parametrize(
    ("method", "source"),
    [("OPTIONS", "127.0.0.21"), ("REGISTER", "127.0.0.22"), ("INVITE", "127.0.0.23")],
)
def test_user_and_extension_scans_get_one_answer_that_reveals_nothing(
    server: RunningServer, method: str, source: str
) -> None:
    answers = scan(server, source, method)
    shapes = {user: shape(answer) for user, answer in answers.items()}
    assert len(set(shapes.values())) == 1, shapes
    status = next(iter(shapes.values()))[0]
    assert status == 401  # they learn only that they must authenticate


def test_password_guesses_get_one_answer_whether_or_not_the_user_exists(
    server: RunningServer,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.24", 0))
        host, port = sock.getsockname()
        shapes = {}
        for n, user in enumerate(["demo", "nobody", "echo", "1000"]):  # under the failure ban
            target = ("127.0.0.1", server.sip_port)
            sock.sendto(scan_request("REGISTER", user, host, port, 100 + n), target)
            challenge = wait_for_answer(sock, f"scan-REGISTER-{100 + n}".encode())
            assert challenge is not None
            message = parse_message(challenge)
            assert isinstance(message, Response) and message.status == 401
            authorization = DigestClient(user, "password123").authorize(
                message.headers.getlist("WWW-Authenticate"), "REGISTER", "sip:127.0.0.1"
            )
            extra = f"Authorization: {authorization}\r\n"
            sock.sendto(scan_request("REGISTER", user, host, port, 200 + n, extra), target)
            answer = wait_for_answer(sock, f"scan-REGISTER-{200 + n}".encode())
            assert answer is not None, user
            shapes[user] = shape(answer)
    assert len(set(shapes.values())) == 1, shapes
    assert next(iter(shapes.values()))[:2] == (403, "Forbidden")
    assert "SECURITY reason=auth-failed src=127.0.0.24" in server.log()
