"""Trunk upkeep against a carrier stand-in: OPTIONS qualify marks it up, REGISTER authenticates."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sip.digest import DigestServer, ha1
from sip.message import Request, make_response, parse_message
from tests.interop.harness import RunningServer, start_server


class Carrier(threading.Thread):
    """A UDP peer that answers OPTIONS 200 and challenges REGISTER with digest (RFC 7616)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.digest = DigestServer("carrier", b"carrier-nonce-key", algorithms=("MD5",))
        self.registered_with: str | None = None
        self.options = 0
        self.running = True

    def run(self) -> None:
        lookup = {("omlmedia", "carrier"): ha1("omlmedia", "carrier", "carrier-secret", "MD5")}
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            message = parse_message(data)
            if not isinstance(message, Request):
                continue
            if message.method == "OPTIONS":
                self.options += 1
                response = make_response(message, 200, to_tag="carrier")
            elif message.method == "REGISTER":
                authorization = message.headers.get("Authorization")
                result = (
                    self.digest.verify(
                        "REGISTER",
                        authorization,
                        lambda u, r, a: lookup.get((u, r)),
                        time.monotonic(),
                    )
                    if authorization
                    else None
                )
                if result is not None and result.ok:
                    self.registered_with = result.username
                    response = make_response(message, 200, to_tag="carrier")
                    contact = message.headers.get("Contact") or ""
                    response.headers.add("Contact", f"{contact};expires=60")
                else:
                    response = make_response(message, 401, to_tag="carrier")
                    for challenge in self.digest.challenge(time.monotonic()):
                        response.headers.add("WWW-Authenticate", challenge)
            else:
                response = make_response(message, 405, to_tag="carrier")
            self.sock.sendto(bytes(response), addr)

    def stop(self) -> None:
        self.running = False
        self.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose configuration has the `carrier` trunk (qualify every second, register)."""
    running = start_server(tmp_path_factory.mktemp("omlmedia"), carrier=True)
    yield running
    assert running.stop() == 0, running.log()[-4000:]


@pytest.fixture
def carrier(server: RunningServer) -> Iterator[Carrier]:
    peer = Carrier(server.carrier_port)
    peer.start()
    yield peer
    peer.stop()


def test_qualified_trunk_goes_up_and_registration_authenticates(
    server: RunningServer, carrier: Carrier
) -> None:
    deadline = time.monotonic() + 20
    trunk: dict[str, object] = {}
    while time.monotonic() < deadline:
        trunk = server.status()["trunks"].get("carrier", {})
        if trunk.get("state") == "up" and trunk.get("registration") == "registered":
            break
        time.sleep(0.25)
    assert trunk.get("state") == "up", trunk
    assert trunk.get("registration") == "registered", trunk
    assert carrier.options >= 1
    assert carrier.registered_with == "omlmedia"
    assert "event=trunk-state trunk=carrier state=up" in server.log()
