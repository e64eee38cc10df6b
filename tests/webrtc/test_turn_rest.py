"""TURN REST ephemeral credentials (issue 12 item 8): a secret shared with the TURN server instead
of static credentials; every login and web call gets ``username = "<expiry>:<user>"`` and
``credential = base64(HMAC-SHA1(secret, username))``. The last test asks a real coturn (Debian's,
`make test` installs it) for an allocation with them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from benchmarks import harness
from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock, FakeConnection
from webrtc.accounts import Account, AccountStore, hash_password
from webrtc.config import IceServerConfig, parse_ice_servers, turn_rest_credential
from webrtc.exceptions import ConfigError
from webrtc.signaling import AgentHub

SECRET = "north-wind-7f3a"
URL = "turn:turn.example.com:3478?transport=udp"


def test_a_credential_is_the_base64_hmac_sha1_of_the_username() -> None:
    username = "1767225600:web"
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    assert turn_rest_credential(SECRET, username) == expected
    server = IceServerConfig((URL,), secret=SECRET, ttl=600)
    made = server.as_browser(now=1_767_225_000.0, user="web")
    assert made == {
        "urls": [URL],
        "username": "1767225600:web",
        "credential": expected,
    }
    assert SECRET not in repr(server)


def test_the_secret_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "turn-secret"
    path.write_text(SECRET + "\nignored\n")
    [from_file] = parse_ice_servers([{"urls": URL, "secret_file": str(path), "ttl": 120}])
    assert (from_file.secret, from_file.ttl, from_file.username) == (SECRET, 120.0, None)
    monkeypatch.setenv("OML_TURN_SECRET", SECRET)
    [from_env] = parse_ice_servers([{"urls": URL, "secret_env": "OML_TURN_SECRET"}])
    assert from_env.secret == SECRET and from_env.ttl == 86400.0


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"urls": URL}, "a TURN server needs username and credential, or secret_file"),
        ({"urls": URL, "secret_env": "OML_UNSET_TURN"}, ".secret_env: the environment variable"),
        ({"urls": URL, "secret_file": "/nonexistent/x"}, ".secret_file: cannot read"),
        (
            {"urls": URL, "secret_env": "HOME", "username": "u", "credential": "c"},
            "give secret_file/secret_env or username and credential",
        ),
        ({"urls": URL, "secret_env": "HOME", "secret_file": "/x"}, "not both"),
        ({"urls": URL, "secret_env": "HOME", "ttl": 5}, ".ttl: must be between 60"),
    ],
)
def test_bad_turn_rest_settings_name_the_field(entry: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_ice_servers([entry])
    assert str(info.value).startswith("webrtc.ice_servers[0]") and error in str(info.value)


async def test_every_login_gets_credentials_made_for_it() -> None:
    clock = FakeClock()
    accounts = AccountStore([Account("agent1", "Ana", hash_password("pw", n=2**10))], clock=clock)
    server = IceServerConfig((URL,), secret=SECRET, ttl=600)
    made: list[float] = []

    def ice() -> list[dict[str, Any]]:
        now = 1_767_225_000.0 + 10 * len(made)
        made.append(now)
        return [server.as_browser(now=now, user="agent")]

    hub = AgentHub(accounts, FakeCallControl(), FakeChannel, clock=clock, ice_servers=ice)
    usernames = []
    for n in range(2):
        conn = FakeConnection()
        hub.connection_opened(conn)
        login = {"v": 1, "type": "login", "id": n, "username": "agent1", "password": "pw"}
        await hub.handle_text(conn, json.dumps(login))
        reply = conn.sent[0]
        assert reply["type"] == "login-ok", reply
        [entry] = reply["ice_servers"]
        assert entry["credential"] == turn_rest_credential(SECRET, entry["username"])
        usernames.append(entry["username"])
    assert usernames == ["1767225600:agent", "1767225610:agent"]


# -- a real TURN server -----------------------------------------------------------------------


def _answers_stun(port: int) -> bool:
    """Whether a STUN Binding request (RFC 5389 §6) to the port gets an answer within 0.2 s."""
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            return sock.recv(2048)[8:20] == request[8:20]
        except OSError:
            return False


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """coturn on loopback with TURN REST (use-auth-secret) and our secret."""
    binary = shutil.which("turnserver")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("turnserver is not installed: run `make test`, which installs coturn")
        pytest.skip("turnserver (coturn) is not installed; make test installs it")
    port = harness.free_port()
    log = tmp_path / "turnserver.log"
    process = subprocess.Popen(
        [
            binary,
            "-n",
            "--listening-ip=127.0.0.1",
            f"--listening-port={port}",
            "--relay-ip=127.0.0.1",
            "--min-port=49152",
            "--max-port=49300",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=omlmedia",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            f"--log-file={log}",
            "--simple-log",
            f"--pidfile={tmp_path / 'turnserver.pid'}",
            f"--userdb={tmp_path / 'turndb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers_stun(port):
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                pytest.fail("turnserver did not start:\n" + text)
        yield "127.0.0.1", port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _allocate(server: tuple[str, int], username: str, password: str) -> bool:
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(asyncio.DatagramProtocol, server, username, password),
            10,
        )
    except (TransactionFailed, TimeoutError, ConnectionError, OSError) as exc:
        print("allocation refused:", repr(exc))
        return False
    transport.close()
    return True


async def test_a_real_turn_server_allocates_with_the_credentials_and_refuses_forgeries(
    coturn: tuple[str, int],
) -> None:
    url = f"turn:{coturn[0]}:{coturn[1]}?transport=udp"
    server = IceServerConfig((url,), secret=SECRET, ttl=600)
    fresh = server.as_browser(user="web")
    assert await _allocate(coturn, fresh["username"], fresh["credential"])
    assert not await _allocate(coturn, fresh["username"], turn_rest_credential("guess", "x"))
    expired = server.as_browser(now=time.time() - 3600, user="web")  # expired 50 min ago
    assert not await _allocate(coturn, expired["username"], expired["credential"])
