"""The cross-node leg encrypted (``[cluster] tls_cert``, ``tls_key``, ``tls_ca``): SIP over
mutual TLS between the nodes' private listeners, SDES-SRTP media, the signature still checked.

Certificates are made here: the cluster's CA and the certificate every node presents, and a
stranger's CA and certificate. Without sockets first (the configuration, check-config's warning
about a clear leg across hosts, the start-up summary, the offers' and the monitor legs' gates);
then the transports' private listener on real sockets (a peer with the cluster's certificate is
served, one with a stranger's or none is refused at the handshake); then two real `omlmedia
serve` nodes on loopback with the shared ACD (as `test_crossnode`): an INVITE over UDP with a
valid signature is refused by node b; node b's private listener refuses a stranger's
certificate; agent1's Chromium page (660 Hz) on node b talks with two baresip callers (440 Hz,
PCMU) on node a, a direct call and a queue call, both tones heard over the encrypted leg, whose
packets, captured on loopback, are SRTP; last, on the same nodes, a supervisor's Chromium page on
node a listens to a call node b carries, through a monitor leg node b admitted over the TLS link
with SRTP (modes, refusals and the clear leg: `tests.cluster.test_monitor_cluster`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.crossnode import sip_port
from media.g711 import PCMU
from omlmedia.cli import main
from omlmedia.config import ConfigError, cluster_warnings, load_config
from omlmedia.crossnode import HEADER, InternalGate, OfferHeader, sign_offer
from omlmedia.server import banner
from sip.endpoint import Endpoint
from sip.message import URI, Request
from sip.tls import mutual_contexts
from sip.transport import Internal, SipTransports
from tests.cluster import redis
from tests.cluster.pki import make_pki, tls_keys
from tests.cluster.test_cluster_queues import _log_in
from tests.cluster.test_crossnode import AGENT_TONE, CALLER_TONE, SECRET, _edit, both_clean
from tests.cluster.test_monitor_cluster import SUPERVISOR_TONE
from tests.cluster.test_wallboard_cluster import SUPERVISOR_PASSWORD, supervisor_token
from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.pages import agent_ready, log_in
from tests.interop.test_monitor import hears, tone_seconds

# -- certificates (`tests.cluster.pki`) ---------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    root = tmp_path_factory.mktemp("pki")
    return {"cluster": make_pki(root / "cluster", "cluster"), "other": make_pki(root / "o", "o")}


# -- the configuration --------------------------------------------------------------------------

BASE = f"""
[api]
token_sha256 = "{hashlib.sha256(b"token").hexdigest()}"
"""


def _config(tmp_path: Path, hosts: tuple[str, str], tls: str) -> Path:
    (tmp_path / "secret").write_bytes(SECRET)
    path = tmp_path / "c.toml"
    path.write_text(
        BASE
        + '[cluster]\nredis_url = "redis://127.0.0.1:6390/0"\nnode = "a"\nsecret_file = "secret"\n'
        + tls
        + f'[cluster.nodes.a]\nsip = "{hosts[0]}:5070"\n'
        + f'[cluster.nodes.b]\nsip = "{hosts[1]}:5070"\n',
        encoding="utf-8",
    )
    return path


def test_the_internal_leg_is_encrypted_exactly_when_the_cluster_has_its_certificates(
    tmp_path: Path, pki: dict[str, tuple[Path, Path, Path]]
) -> None:
    clear = load_config(_config(tmp_path, ("10.0.0.1", "10.0.0.2"), "")).cluster
    assert not clear.tls
    secure = load_config(_config(tmp_path, ("10.0.0.1", "10.0.0.2"), tls_keys(pki["cluster"])))
    ca, cert, key = pki["cluster"]
    assert secure.cluster.tls
    assert (secure.cluster.tls_ca, secure.cluster.tls_cert, secure.cluster.tls_key) == (
        ca,
        cert,
        key,
    )


def test_nodes_on_several_hosts_with_the_leg_in_clear_are_warned_about_and_not_otherwise(
    tmp_path: Path, pki: dict[str, tuple[Path, Path, Path]]
) -> None:
    apart = cluster_warnings(load_config(_config(tmp_path, ("10.0.0.1", "10.0.0.2"), "")))
    assert len(apart) == 1 and apart[0].startswith("cluster.tls_ca: the nodes are on several")
    assert "10.0.0.1, 10.0.0.2" in apart[0]
    one_host = load_config(_config(tmp_path, ("127.0.0.1", "127.0.0.1"), ""))
    assert cluster_warnings(one_host) == []
    secure = load_config(_config(tmp_path, ("10.0.0.1", "10.0.0.2"), tls_keys(pki["cluster"])))
    assert cluster_warnings(secure) == []


def test_check_config_warns_about_the_clear_leg_across_hosts_and_the_banner_names_the_leg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: dict[str, tuple[Path, Path, Path]]
) -> None:
    apart = _config(tmp_path, ("10.0.0.1", "10.0.0.2"), "")
    assert main(["check-config", str(apart)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert "omlmedia: warning: cluster.tls_ca: the nodes are on several hosts" in err, err
    assert (
        "  Internal leg: SIP over UDP at 10.0.0.1:5070, RTP in clear"
        in banner(load_config(apart)).splitlines()
    )
    secure = _config(tmp_path, ("10.0.0.1", "10.0.0.2"), tls_keys(pki["cluster"]))
    assert main(["check-config", str(secure)]) == 0
    assert "cluster.tls_ca" not in capsys.readouterr().err
    assert (
        "  Internal leg: SIP over mutual TLS at 10.0.0.1:5070, SRTP"
        in banner(load_config(secure)).splitlines()
    )


def test_a_partial_or_unusable_set_of_cluster_certificates_is_refused_naming_the_key(
    tmp_path: Path, pki: dict[str, tuple[Path, Path, Path]]
) -> None:
    ca, cert, key = pki["cluster"]
    (tmp_path / "junk.pem").write_text("not a certificate")
    cases = {
        f'tls_cert = "{cert}"\ntls_key = "{key}"\n': "cluster: tls_cert, tls_key and tls_ca go",
        tls_keys((ca, tmp_path / "junk.pem", key)): "cluster.tls_cert: certificate or key",
        tls_keys((tmp_path / "junk.pem", cert, key)): "cluster.tls_ca: CA file cannot be",
        tls_keys((ca, cert, pki["other"][2])): "cluster.tls_cert: certificate or key",
    }
    for tls, error in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(_config(tmp_path, ("10.0.0.1", "10.0.0.2"), tls))
        assert any(error in e for e in info.value.errors), (tls, info.value.errors)


def test_with_the_certificates_a_nodes_address_on_its_own_sip_port_is_refused(
    tmp_path: Path, pki: dict[str, tuple[Path, Path, Path]]
) -> None:
    path = _config(tmp_path, ("10.0.0.1", "10.0.0.2"), tls_keys(pki["cluster"]))
    path.write_text(path.read_text().replace('"10.0.0.1:5070"', '"10.0.0.1:5060"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        "cluster.nodes.a.sip: with tls_ca this is the node's private TLS listener: a port of its "
        "own, not server.sip_port (5060)"
    ]
    clear = _config(tmp_path, ("10.0.0.1", "10.0.0.2"), "")  # in clear it is the SIP port
    clear.write_text(clear.read_text().replace('"10.0.0.1:5070"', '"10.0.0.1:5060"'))
    assert load_config(clear).cluster.nodes[0].port == 5060


# -- the gate with the encrypted leg (no sockets) ---------------------------------------------


def _invite(agent: str, header: str | None) -> Request:
    request = Request("INVITE", URI.parse(f"sip:{agent}@127.0.0.1:5081"))
    request.headers.add("Call-ID", "x@y")
    if header is not None:
        request.headers.add(HEADER, header)
    return request


def test_with_the_encrypted_leg_the_gate_admits_only_the_tls_link_from_the_named_nodes_host() -> (
    None
):
    nodes = {"a": Endpoint("tls", "10.0.0.1", 5071), "b": Endpoint("tls", "10.0.0.2", 5071)}
    linked = {Endpoint("tls", "10.0.0.1", 40001), Endpoint("tls", "10.0.0.3", 40002)}
    gate = InternalGate(SECRET, nodes, "b", clock=lambda: 1000.0, linked=linked.__contains__)
    offer = OfferHeader("c@a", "support", "600", "a")

    def signed() -> str:
        return sign_offer(SECRET, "agent1", offer, 1000.0)

    # a's exact SIP address over UDP, valid signature: refused (the leg must be TLS)
    assert gate(_invite("agent1", signed()), Endpoint("udp", "10.0.0.1", 5071)) is None
    # over a TCP or public TLS connection from a's host: refused too
    assert gate(_invite("agent1", signed()), Endpoint("tls", "10.0.0.1", 40009)) is None
    # over the link but from another host than the node the header names: refused
    assert gate(_invite("agent1", signed()), Endpoint("tls", "10.0.0.3", 40002)) is None
    # over the link from a's host, signature wrong: refused
    assert gate(_invite("agent1", signed()[:-2] + "00"), Endpoint("tls", "10.0.0.1", 40001)) is None
    value = signed()
    assert gate(_invite("agent1", value), Endpoint("tls", "10.0.0.1", 40001)) == "node:a"
    assert gate(_invite("agent1", value), Endpoint("tls", "10.0.0.1", 40001)) is None  # replay
    # an INVITE without the header from elsewhere is not the gate's: not counted
    assert gate(_invite("agent1", None), Endpoint("udp", "192.0.2.9", 5060)) is None
    assert (gate.admitted, gate.refused) == (1, 5)


def test_with_the_encrypted_leg_a_monitor_leg_is_admitted_only_over_the_tls_link() -> None:
    from omlmedia.monitor_remote import HEADER as MONITOR
    from omlmedia.monitor_remote import MonitorGate, MonitorRequest, sign_monitor

    nodes = {"a": Endpoint("tls", "10.0.0.1", 5071), "b": Endpoint("tls", "10.0.0.2", 5071)}
    linked = {Endpoint("tls", "10.0.0.1", 40001), Endpoint("tls", "10.0.0.3", 40002)}
    offers: list[Endpoint] = []

    def offers_gate(request: Request, source: Endpoint) -> str | None:
        offers.append(source)
        return None

    gate = MonitorGate(SECRET, nodes, "b", offers_gate, lambda: 1000.0, linked=linked.__contains__)

    def leg(source: Endpoint, value: str) -> str | None:
        request = _invite("agent1", None)
        request.headers.add(MONITOR, value)
        return gate(request, source)

    def signed() -> str:
        return sign_monitor(SECRET, MonitorRequest("c@b", "listen", "sup", "a"), 1000.0)

    assert leg(Endpoint("udp", "10.0.0.1", 5071), signed()) is None  # a's address, in clear
    assert leg(Endpoint("tls", "10.0.0.3", 40002), signed()) is None  # not a's host
    value = signed()
    assert leg(Endpoint("tls", "10.0.0.1", 40001), value) == "node:a"
    assert leg(Endpoint("tls", "10.0.0.1", 40001), value) is None  # replayed
    assert gate(_invite("agent1", None), Endpoint("tls", "10.0.0.1", 40001)) is None
    assert offers == [Endpoint("tls", "10.0.0.1", 40001)]  # not a monitor leg: handed on
    assert (gate.admitted, gate.refused) == (1, 2)


def test_via_and_contact_name_the_private_listener_to_a_node_reached_over_it() -> None:
    from sip.message import Address, parse_message
    from sip.ua import UserAgent

    public = Endpoint("tls", "10.0.0.2", 5061)
    private = Endpoint("tls", "10.0.0.2", 5071)
    node_a = Endpoint("tls", "10.0.0.1", 5071)
    ua = UserAgent(
        local_endpoints={"udp": Endpoint("udp", "10.0.0.2", 5060), "tls": public},
        trusted_source=lambda ip: None,
    )
    ua.local_for = lambda peer: private if peer == node_a else None

    def sent_to(destination: Endpoint) -> tuple[str, str]:
        ua.send_invite(
            destination=destination,
            request_uri=URI.parse(f"sip:agent1@{destination.host}:{destination.port}"),
            from_address=Address.parse("<sip:600@10.0.0.2>"),
            to_address=Address.parse(f"<sip:agent1@{destination.host}>"),
            body=b"",
            now=0.0,
        )
        data, where = ua.datagrams_to_send()[-1]
        assert where == destination
        message = parse_message(data)
        return message.headers.get("Via") or "", message.headers.get("Contact") or ""

    via, contact = sent_to(node_a)
    assert via.startswith("SIP/2.0/TLS 10.0.0.2:5071;") and "10.0.0.2:5071;transport=tls" in contact
    via, contact = sent_to(Endpoint("tls", "192.0.2.7", 5061))  # a trunk: the public listener
    assert via.startswith("SIP/2.0/TLS 10.0.0.2:5061;") and "10.0.0.2:5061;transport=tls" in contact


# -- the transports' private listener on real sockets ------------------------------------------


async def test_the_private_listener_serves_a_peer_with_the_clusters_certificate_only(
    pki: dict[str, tuple[Path, Path, Path]],
) -> None:
    ca, cert, key = pki["cluster"]
    server_context, client_context = mutual_contexts(cert, key, ca)
    port_a, port_b = harness.free_port(), harness.free_port()
    got: list[tuple[bytes, Endpoint]] = []
    a, b = SipTransports(), SipTransports(on_message=lambda data, src: got.append((data, src)))
    await a.start(
        host="127.0.0.1",
        udp_port=0,
        internal=Internal(
            port_a, server_context, client_context, frozenset({("127.0.0.1", port_b)})
        ),
    )
    await b.start(
        host="127.0.0.1",
        udp_port=0,
        internal=Internal(
            port_b, server_context, client_context, frozenset({("127.0.0.1", port_a)})
        ),
    )
    try:
        assert b.local_endpoint("internal") == Endpoint("tls", "127.0.0.1", port_b)
        assert a.is_internal(Endpoint("tls", "127.0.0.1", port_b))
        assert not a.is_internal(Endpoint("udp", "127.0.0.1", port_b))
        message = b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
        a.send(message, Endpoint("tls", "127.0.0.1", port_b))
        deadline = time.monotonic() + 5
        while not got:
            assert time.monotonic() < deadline, "nothing arrived over the private link"
            await asyncio.sleep(0.02)
        assert got[0][0] == message and b.is_internal(got[0][1])
        assert not b.is_internal(Endpoint("tls", "127.0.0.1", got[0][1].port + 1))

        # A stranger's certificate, or none: the handshake fails, nothing is delivered.
        o_ca, o_cert, o_key = pki["other"]
        strangers = []
        for with_cert in (True, False):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if with_cert:
                context.load_cert_chain(o_cert, o_key)
            strangers.append(context)
        for context in strangers:
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port_b, ssl=context, server_hostname=None
                )
                try:  # TLS 1.3: the refusal of the client's certificate comes after its Finished
                    writer.write(message)
                    await writer.drain()
                    await asyncio.wait_for(reader.readexactly(1), 5)
                finally:
                    writer.close()
        # A node presenting a stranger's CA as its own is not served by b either.
        _, o_client = mutual_contexts(o_cert, o_key, o_ca)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_b, ssl=o_client)
            writer.close()
        assert len(got) == 1
    finally:
        await a.close()
        await b.close()


# -- two real nodes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[redis.Redis]:
    redis.require()
    with redis.redis() as instance:
        yield instance


@pytest.fixture(scope="module")
def tls_nodes(
    shared: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
    pki: dict[str, tuple[Path, Path, Path]],
) -> Iterator[list[harness.RunningServer]]:
    """Nodes a and b with the encrypted leg, shared by the module's tests (the INVITE in clear
    runs first: the counters it reads start at zero)."""
    tmp_path = tmp_path_factory.mktemp("tls_nodes")
    secret = tmp_path / "cluster.secret"
    secret.write_bytes(SECRET)
    ports = {"a": sip_port(), "b": sip_port()}
    internal = {"a": sip_port(), "b": sip_port()}
    started: list[harness.RunningServer] = []

    def edit_for(name: str) -> Callable[[str], str]:
        clear = _edit(name, ports, shared.url, secret)

        def edit(text: str) -> str:
            text = clear(text)
            for n in ("a", "b"):
                text = text.replace(
                    f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{ports[n]}"',
                    f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{internal[n]}"',
                )
            keys = tls_keys(pki["cluster"]) + 'acd = "shared"\n'  # one ACD: queue calls cross too
            return re.sub(r"(?m)^(secret_file = .*\n)", lambda m: m.group(1) + keys, text)

        return edit

    try:
        for name in ("a", "b"):
            started.append(harness.start_server(tmp_path / name, edit_config=edit_for(name)))
            started[-1].ports["sip"] = ports[name]
            started[-1].ports["internal"] = internal[name]
        yield started
    finally:
        for node in started:
            assert node.stop() == 0, node.log()[-3000:]


async def test_a_signed_invite_over_udp_is_refused_when_the_leg_must_be_tls(
    tls_nodes: list[harness.RunningServer], tmp_path: Path
) -> None:
    b = tls_nodes[1]
    offer = OfferHeader("c@a", "", "600", "a")
    invite = (
        f"INVITE sip:agent1@127.0.0.1:{b.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK-clear1;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:600@127.0.0.1>;tag=t1\r\n"
        f"To: <sip:agent1@127.0.0.1:{b.sip_port}>\r\nCall-ID: clear-leg@test\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:600@127.0.0.1:{port}>\r\n"
        f"{HEADER}: {sign_offer(SECRET, 'agent1', offer, time.time())}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        data = invite.replace("{port}", str(sock.getsockname()[1])).encode()
        deadline = time.monotonic() + 10
        final = sent = 0
        while not final:
            assert time.monotonic() < deadline, "node b did not answer the INVITE"
            sock.sendto(data, ("127.0.0.1", b.sip_port))
            sent += 1
            try:
                while True:
                    answer = sock.recv(65535).decode(errors="replace")
                    status = int(answer.split(" ", 2)[1])
                    if status >= 200:
                        final = status
                        break
            except TimeoutError:
                continue
    assert final == 403, answer
    status, view = await asyncio.to_thread(_status, b)
    # Refused statelessly (no transaction): a copy resent because node b, loaded, answered
    # after 0.5 s is refused (and counted) again, and the last one may still be on its way.
    assert 1 <= view["cluster"]["internal_refused"] <= sent, (sent, view["cluster"])
    assert view["cluster"]["internal_admitted"] == 0, view["cluster"]
    assert "reason=not-over-tls" in b.log()


async def test_a_node_does_not_flood_limit_the_other_nodes_host(
    tls_nodes: list[harness.RunningServer],
) -> None:
    """Node b limits untrusted sources to 50 requests a second (the harness's ``[security]``);
    node a's host (loopback here) is the other node's: 150 requests in a burst are all answered,
    none dropped and the host not banned (a busy cluster's internal legs are not a flood)."""
    b = tls_nodes[1]
    total = 150
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        for i in range(total):
            sock.sendto(
                (
                    f"OPTIONS sip:ping@127.0.0.1:{b.sip_port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-burst{i}\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=b1\r\n"
                    f"To: <sip:ping@127.0.0.1>\r\nCall-ID: burst{i}@test\r\n"
                    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", b.sip_port),
            )
        answered: set[str] = set()
        sock.settimeout(0.5)
        deadline = time.monotonic() + 10
        while len(answered) < total and time.monotonic() < deadline:
            try:
                answer = sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            found = re.search(r"(?im)^Call-ID: (burst\d+)@test", answer)
            if found:
                answered.add(found.group(1))
    assert len(answered) == total, f"{len(answered)} of {total} answered"


async def _handshake(port: int, context: ssl.SSLContext) -> bool:
    """Whether a TLS client with `context` is served by the listener at `port`: it sends an
    OPTIONS and reads an answer (TLS 1.3 refuses a client's certificate after the client's
    Finished, so the handshake alone does not tell)."""
    options = (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK-ping1\r\nMax-Forwards: 70\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:ping@127.0.0.1>\r\n"
        "Call-ID: ping@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except (ssl.SSLError, ConnectionError):
        return False
    try:
        writer.write(options)
        await writer.drain()
        async with asyncio.timeout(10):
            return (await reader.readuntil(b"\r\n")).startswith(b"SIP/2.0 ")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()


async def test_a_node_without_the_clusters_certificate_is_refused_at_tls_by_a_real_node(
    tls_nodes: list[harness.RunningServer], pki: dict[str, tuple[Path, Path, Path]]
) -> None:
    port = tls_nodes[1].ports["internal"]
    ca, cert, key = pki["cluster"]
    o_ca, o_cert, o_key = pki["other"]
    assert await _handshake(port, mutual_contexts(cert, key, ca)[1])  # a member is served
    assert not await _handshake(port, mutual_contexts(o_cert, o_key, o_ca)[1])
    assert not await _handshake(port, mutual_contexts(o_cert, o_key, ca)[1])  # trusts b only
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cafile=ca)
    assert not await _handshake(port, anonymous)  # no certificate at all


class Capture:
    """UDP datagrams on loopback (an AF_PACKET socket: root), for what the wire carries."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)

    def flows(self, seconds: float) -> dict[tuple[int, int], list[bytes]]:
        """The RTP payloads of type 0 (PCMU) by (source port, destination port)."""
        found: dict[tuple[int, int], list[bytes]] = {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame, info = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if info[2] == socket.PACKET_OUTGOING:  # loopback shows each packet twice
                continue
            ip = frame[14:]
            if len(ip) < 28 or ip[9] != 17:
                continue
            header = (ip[0] & 0x0F) * 4
            udp = ip[header:]
            rtp = udp[8:]
            if len(rtp) < 12 or rtp[0] >> 6 != 2 or rtp[1] & 0x7F != 0:
                continue
            ports = (int.from_bytes(udp[0:2]), int.from_bytes(udp[2:4]))
            found.setdefault(ports, []).append(rtp[12:])
        return found

    def close(self) -> None:
        self.sock.close()


def tone_level(payloads: list[bytes], frequency: float) -> float:
    """The share of the signal's energy at `frequency`, the payloads decoded as PCMU."""
    samples = np.concatenate([PCMU.decode(p[:160]) for p in payloads]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / 8000)
    near = np.abs(bins - frequency) < 15
    return float(spectrum[near].sum() / max(spectrum.sum(), 1e-9))


def assert_internal_leg_is_srtp(
    flows: dict[tuple[int, int], list[bytes]], a: harness.RunningServer, b: harness.RunningServer
) -> None:
    """The internal leg's two flows (a node's RTP range to the other's, both ways) carry
    payloads with the 10-byte SRTP tag and neither tone, while the caller's leg into node a,
    captured the same way, carries the caller's tone in clear. Other tests may be sending RTP
    on loopback, their callers' ports anywhere: flows that are not between the two nodes'
    ranges are not counted, and the caller's leg is only looked for."""

    def within(server: harness.RunningServer, port: int) -> bool:
        return server.ports["rtp_low"] <= port <= server.ports["rtp_low"] + 998

    busy = {k: p for k, p in flows.items() if len(p) >= 50}
    sizes = {k: sorted({len(p) for p in v}) for k, v in busy.items()}
    internal = [
        k
        for k in busy
        if (within(a, k[0]) and within(b, k[1])) or (within(b, k[0]) and within(a, k[1]))
    ]
    assert len(internal) == 2, sizes
    for flow in internal:
        assert sizes[flow] == [170], (flow, sizes)  # 160 of PCMU and the tag
        assert tone_level(busy[flow], CALLER_TONE) < 0.05, flow
        assert tone_level(busy[flow], AGENT_TONE) < 0.05, flow
    into_a = [
        k
        for k in busy
        if k not in internal and within(a, k[1]) and sizes[k] == [160]
        if tone_level(busy[k], CALLER_TONE) > 0.2
    ]
    assert into_a, sizes  # the capture does hear G.711 in clear


async def _talk(
    page: Any, dialled: str, a: harness.RunningServer, workdir: Path
) -> dict[tuple[int, int], list[bytes]]:
    """A baresip caller (440 Hz) dials `dialled` on node a; agent1 (Ready on node b's `page`)
    answers, hears the caller, and hangs up after a 3 s capture of loopback: the caller heard the
    agent. Node b's BYE reaches node a at the Contact a gave, its private listener. The
    capture's flows."""
    from playwright.async_api import expect

    state = page.locator("#state")
    caller = asyncio.get_running_loop().run_in_executor(
        None,
        lambda: dial(
            workdir,
            f"sip:{dialled}@127.0.0.1:{a.sip_port}",
            # The agent hangs up (baresip is stopped then): 30 s costs nothing, and a loaded
            # machine's ringing, hearing and 3 s capture cannot outlast the caller.
            30,
            tone_hz=CALLER_TONE,
            codecs="PCMU",
        ),
    )
    await expect(state).to_have_text("Ringing", timeout=15000)
    await page.get_by_role("button", name="Answer", exact=True).click()
    await expect(state).to_have_text("On call")
    await hears(page, "remote-audio", (CALLER_TONE,), (), f"agent on node b ({dialled})")
    capture = Capture()
    try:
        flows = await asyncio.to_thread(capture.flows, 3.0)
    finally:
        capture.close()
    await page.get_by_role("button", name="Hang up", exact=True).click()
    run = await caller
    assert run.established, run.output[-3000:]
    assert tone_seconds(run.decoded(), AGENT_TONE) > 2, "the caller did not hear the agent"
    await expect(page.locator("#no-call")).to_be_visible(timeout=15000)
    return flows


async def test_callers_on_node_a_talk_to_an_agent_on_node_b_over_tls_and_srtp(
    tls_nodes: list[harness.RunningServer], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the capture on loopback needs root")
    a, b = tls_nodes
    async with chromium(tmp_path / "browser", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_ready(page, f"https://127.0.0.1:{b.http_port}")
        state = page.locator("#state")

        # 1. A direct call (agent-agent1) on node a: the B2BUA's internal leg.
        flows = await _talk(page, "agent-agent1", a, tmp_path / "direct")
        await both_clean(tls_nodes, "after the direct call")
        assert_internal_leg_is_srtp(flows, a, b)
        assert re.search(r"bridge-media .*callee_srtp=true", a.log()), a.log()[-3000:]
        ended = r"event=call-ended call_id=\S+ cause=bye direction=outbound"
        assert len(re.findall(ended, a.log())) == 1, a.log()[-3000:]  # b's BYE, over the link

        # 2. A caller of the support queue on node a, offered by the cluster's one ACD to the
        # agent on node b: the ACD's own internal leg (`RemoteOffers`), encrypted too.
        await expect(state).to_have_text("Ready", timeout=15000)  # after its wrap-up
        flows = await _talk(page, "support", a, tmp_path / "queue")
        await both_clean(tls_nodes, "after the queue call")
        assert_internal_leg_is_srtp(flows, a, b)
        assert "event=acd-remote-answered" in a.log(), a.log()[-3000:]
        assert len(re.findall(ended, a.log())) == 2, a.log()[-3000:]

    assert f"Internal leg: SIP over mutual TLS at 127.0.0.1:{a.ports['internal']}, SRTP" in a.log()
    _, view = await asyncio.to_thread(_status, b)
    assert view["cluster"]["internal_admitted"] == 2, view["cluster"]


def _status(server: harness.RunningServer) -> tuple[int, dict[str, Any]]:
    from tests.cluster.test_shared_database import api

    return api(server, "GET", "/api/v1/status")


def _agent_state(server: harness.RunningServer, agent: str) -> str:
    from tests.cluster.test_shared_database import api

    status, view = api(server, "GET", f"/api/v1/agents/{agent}")
    assert status == 200, view
    return str(view.get("state"))


# -- monitoring over the encrypted leg (last: the test above counts node b's admitted legs) -----

# The supervisor on node a hears both tones through a monitor leg to node b that went over the
# TLS link (node b admitted it there: with the certificates set, a leg in clear is refused) with
# SRTP offered and answered; the caller hanging up ends the monitoring and leaves no call on
# either node. Modes, refusals and the clear leg: `tests.cluster.test_monitor_cluster`.

MONITORED_CALL_SECONDS = 12
"""The caller's call: it hangs up by itself while the supervisor listens (who heard both tones
2 s after the dial at load average 2; the rest is waited out)."""


async def test_a_supervisor_on_node_a_listens_to_a_call_on_node_b_over_the_tls_link_with_srtp(
    tls_nodes: list[harness.RunningServer],
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    a, b = tls_nodes
    await asyncio.to_thread(supervisor_token, a)
    # agent1's page of the test before is gone: its session lapses after the reconnect grace
    # (5 s in the harness), so the page below logs in anew (Paused) rather than resuming it.
    deadline = time.monotonic() + 20
    while await asyncio.to_thread(_agent_state, b, "agent1") != "logged-out":
        assert time.monotonic() < deadline, "agent1's earlier session never lapsed on node b"
        await asyncio.sleep(0.1)
    async with (
        chromium(tmp_path / "agent", AGENT_TONE) as agent_browser,
        chromium(tmp_path / "supervisor", SUPERVISOR_TONE) as supervisor_browser,
    ):
        agent = await _log_in(agent_browser, b)
        state = agent.locator("#state")
        await agent.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=10000)
        supervisor = await supervisor_browser.new_page()
        await supervisor.goto(f"https://127.0.0.1:{a.http_port}/supervisor/")
        await log_in(supervisor, "sue", SUPERVISOR_PASSWORD)
        panel = supervisor.get_by_role("complementary", name="Monitoring")
        await expect(panel.locator("#monitor-channel")).to_have_text("connected", timeout=15000)
        mode = panel.locator("#monitor-mode")

        target = f"sip:support@127.0.0.1:{a.sip_port}"
        caller = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: dial(
                tmp_path / "caller",
                target,
                MONITORED_CALL_SECONDS,
                tone_hz=CALLER_TONE,
                codecs="PCMU",
            ),
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        await agent.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=10000)

        row = supervisor.locator("#call-rows tr").filter(has_text="agent1")
        await expect(row).to_have_count(1, timeout=10000)
        await row.get_by_role("button").click()
        await panel.get_by_role("button", name="Listen", exact=True).click()
        await expect(mode).to_contain_text("Listening", timeout=10000)
        await hears(
            supervisor, "monitor-audio", (CALLER_TONE, AGENT_TONE), (), "supervisor, over TLS"
        )
        run = await caller
        await expect(mode).to_have_text("Not monitoring", timeout=15000)
        await expect(panel.locator("#monitor-status")).to_contain_text("The call ended")

    assert run.established, run.output[-3000:]
    # Node b answered the leg it admitted over the TLS link with SRTP (SDES keys; an offer in
    # clear would have been refused: 488), and nothing is left on either node.
    assert re.search(r"event=monitor-leg-answered .*srtp=true", b.log()), b.log()[-3000:]
    assert not re.search(r"event=monitor-leg-refused", b.log()), b.log()[-3000:]
    assert "event=monitor-leg-placed" in a.log(), a.log()[-3000:]
    await both_clean(tls_nodes, "after the monitored caller hung up")
