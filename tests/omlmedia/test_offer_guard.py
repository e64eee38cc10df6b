"""The router's offer checks (issue 12): an untrusted peer's SDP that names a media address the
server must not send to (loopback, its own host, link-local and the metadata address, internal
networks behind a public server) gets 488 before any target binds a port, on a new call and on a
re-INVITE; SDES keys from a trunk over a non-TLS transport get 488 unless the trunk opts in
(`allow_sdes_over_udp`). No sockets: the SIP core is a recorder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

from omlmedia.config import Config, RouteAction, load_config
from omlmedia.router import CallRouter, RouteTable
from omlmedia.targets import RouterStats
from sip.endpoint import Endpoint
from sip.message import Request, parse_message
from sip.service import SipService
from sip.ua import IncomingCall, SessionModified
from tests.omlmedia.deskfakes import FakeClock, FakeService, inbound_call
from tests.omlmedia.test_router import TXN, Recorder, Taker

TOKEN = hashlib.sha256(b"t").hexdigest()
KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


def config_text(listen: str) -> str:
    return f"""
[server]
listen = ["{listen}"]

[security]
trusted_networks = ["192.0.2.128/25"]

[api]
token_sha256 = "{TOKEN}"

[[trunks]]
name = "pbx"
host = "10.0.0.9"

[[trunks]]
name = "lab"
host = "10.0.0.10"
allow_sdes_over_udp = true

[[trunks]]
name = "secure"
host = "10.0.0.11"
transport = "tls"

[[users]]
name = "alice"
ha1_md5 = "{"0" * 32}"

[[routes]]
user = "600"
target = "echo"
"""


def sdp(address: str, *extra: str, profile: str = "RTP/AVP") -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio 40000 {profile} 0",
        "a=rtpmap:0 PCMU/8000",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


SDES = sdp("192.0.2.50", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}", profile="RTP/SAVP")


class World:
    def __init__(self, tmp_path: Path, listen: str = "10.0.0.5") -> None:
        path = tmp_path / "omlmedia.toml"
        path.write_text(config_text(listen))
        self.config: Config = load_config(path)
        self.service = FakeService(FakeClock())
        self.media = Taker(RouteAction.ECHO)
        self.stats = RouterStats()
        self.router = CallRouter(
            self.config,
            cast(SipService, self.service),
            RouteTable(self.config),
            self.stats,
            [self.media],
        )

    def offer(
        self,
        body: bytes,
        *,
        trunk: str | None = None,
        user: str | None = "alice",
        host: str = "198.51.100.7",
        transport: str = "udp",
    ) -> int | None:
        """Offer a call to echo; the status it was refused with, None when echo took it."""
        call = inbound_call("600", sdp=body)
        call.trunk, call.user = trunk, None if trunk else user
        call.source = Endpoint(transport, host, 5060)
        self.router.on_event(IncomingCall(call))
        rejects = [a[2] for a in self.service.ua.of(call) if a[0] == "reject"]
        if rejects:
            assert call.app is None
            return int(rejects[0])
        assert call.app is self.media
        return None


def reinvite(call_id: str, body: bytes) -> Request:
    text = (
        "INVITE sip:server@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-2\r\n"
        "From: <sip:a@10.0.0.5>;tag=a\r\nTo: <sip:b@10.0.0.5>;tag=b\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 2 INVITE\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(text)
    assert isinstance(message, Request)
    return message


def test_a_user_naming_loopback_our_host_or_the_metadata_address_gets_488(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert world.offer(sdp("127.0.0.1")) == 488
    assert world.offer(sdp("10.0.0.5")) == 488
    assert world.offer(sdp("169.254.169.254")) == 488
    assert world.offer(sdp("192.0.2.50", "a=rtcp:40001 IN IP4 127.0.0.1")) == 488
    assert world.stats.media_refused == 4
    assert world.media.events == []
    # A routable address, another internal host of a private server, and the legacy hold pass.
    assert world.offer(sdp("192.0.2.50")) is None
    assert world.offer(sdp("10.0.0.77")) is None
    assert world.offer(sdp("0.0.0.0")) is None
    assert world.stats.media_refused == 4


def test_a_public_server_refuses_internal_addresses_from_users(tmp_path: Path) -> None:
    world = World(tmp_path, listen="8.8.4.4")
    assert world.offer(sdp("10.0.0.77")) == 488
    assert world.offer(sdp("192.168.1.1")) == 488
    assert world.offer(sdp("8.8.8.8")) is None


def test_trunks_and_trusted_networks_are_believed(tmp_path: Path) -> None:
    world = World(tmp_path, listen="8.8.4.4")
    assert world.offer(sdp("10.0.0.9"), trunk="pbx", host="10.0.0.9") is None
    assert world.offer(sdp("127.0.0.1"), host="192.0.2.200") is None
    assert world.stats.media_refused == 0


def test_a_reinvite_moving_media_to_loopback_gets_488_and_never_reaches_the_owner(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    call = inbound_call("600", sdp=sdp("192.0.2.50"))
    call.user, call.source = "alice", Endpoint("udp", "198.51.100.7", 5060)
    owner = Recorder()
    call.app = owner
    world.router.on_event(SessionModified(call, reinvite(call.call_id, sdp("127.0.0.1")), TXN))
    assert [a[2] for a in world.service.ua.of(call) if a[0] == "respond"] == [488]
    assert owner.events == [] and world.stats.media_refused == 1
    world.router.on_event(SessionModified(call, reinvite(call.call_id, sdp("192.0.2.51")), TXN))
    assert owner.events == [("session-modified", call.call_id)]


def test_sdes_from_a_trunk_over_udp_or_tcp_gets_488_unless_it_opts_in(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert world.offer(SDES, trunk="pbx", host="10.0.0.9") == 488
    assert world.offer(SDES, trunk="pbx", host="10.0.0.9", transport="tcp") == 488
    assert world.stats.media_refused == 2
    assert world.offer(SDES, trunk="pbx", host="10.0.0.9", transport="tls") is None
    assert world.offer(SDES, trunk="lab", host="10.0.0.10") is None
    assert world.offer(SDES, trunk="secure", host="10.0.0.11", transport="tls") is None
    # Digest users' phones are not restricted; a trunk's plain RTP offer is never refused.
    assert world.offer(SDES) is None
    assert world.offer(sdp("192.0.2.50"), trunk="pbx", host="10.0.0.9") is None
    assert world.stats.media_refused == 2


def test_an_sdp_that_does_not_parse_is_left_to_the_target(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert world.offer(b"v=0\r\nthis is not sdp\r\n") is None
    assert world.stats.media_refused == 0
