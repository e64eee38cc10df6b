"""The SIP stream connection caps and deadlines over real sockets on loopback (issue 12 item 7):
per source (IPv4 address, IPv6 /64), in total with room reserved for trusted peers and outbound
connections, and the deadline for a first message. Distinct loopback addresses (127.0.0.x) play
distinct sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sip.transport import SipTransports, TransportConfigError, TransportLimits, source_key
from tests.sip.test_transport import HOST, Inbox, read_until_closed, sip_request, until

PBX = "127.0.0.9"


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., SipTransports]]:
    created: list[SipTransports] = []

    def build(trusted: Callable[[str], bool] | None = None, **limits: Any) -> SipTransports:
        transports = SipTransports(limits=TransportLimits(**limits), trusted=trusted)
        created.append(transports)
        return transports

    yield build
    for transports in created:
        await transports.close()


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, source: str) -> Conn:
    return await asyncio.open_connection(HOST, port, local_addr=(source, 0))


async def admitted(server: SipTransports, inbox: Inbox, conn: Conn, n: int) -> bool:
    """Whether `conn` was admitted: a request over it reaches `on_message`, or it is closed."""
    reader, writer = conn
    before = len(inbox.messages)
    writer.write(sip_request(n))
    reached = asyncio.ensure_future(inbox.wait_for(before + 1))
    closed = asyncio.ensure_future(read_until_closed(reader))
    done, _ = await asyncio.wait([reached, closed], return_when=asyncio.FIRST_COMPLETED)
    if reached in done and reached.exception() is None:
        closed.cancel()
        return True
    reached.cancel()
    return False


def test_sources_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("not-an-address") == "not-an-address"


def test_the_reserve_must_leave_room_for_strangers() -> None:
    with pytest.raises(TransportConfigError, match="reserved_connections"):
        TransportLimits(max_connections=4, reserved_connections=4)
    with pytest.raises(TransportConfigError, match="timeouts must be positive"):
        TransportLimits(first_message_timeout=0)


async def test_one_source_at_its_cap_does_not_keep_another_out(
    make: Callable[..., SipTransports],
) -> None:
    server = make(max_connections_per_ip=3)
    inbox = Inbox()
    server.on_message = inbox
    await server.start(host=HOST, tcp_port=0)
    port = server.local_endpoint("tcp").port
    flood = [await connect(port, "127.0.0.2") for _ in range(3)]
    for n, conn in enumerate(flood):
        assert await admitted(server, inbox, conn, n)
    extra = [await connect(port, "127.0.0.2") for _ in range(5)]
    for n, conn in enumerate(extra):
        assert not await admitted(server, inbox, conn, 10 + n)
    legit = await connect(port, "127.0.0.3")
    assert await admitted(server, inbox, legit, 20)
    assert server.stats.connections_rejected == 5
    assert server.connection_count == 4
    for _, writer in [*flood, *extra, legit]:
        writer.close()


async def test_strangers_fill_only_up_to_the_reserve_trusted_peers_and_outbound_still_connect(
    make: Callable[..., SipTransports],
) -> None:
    server = make(
        trusted=lambda ip: ip == PBX,
        max_connections=6,
        reserved_connections=2,
        max_connections_per_ip=1,
    )
    inbox = Inbox()
    server.on_message = inbox
    await server.start(host=HOST, tcp_port=0)
    port = server.local_endpoint("tcp").port
    strangers = [await connect(port, f"127.0.0.{20 + i}") for i in range(6)]
    results = [await admitted(server, inbox, conn, i) for i, conn in enumerate(strangers)]
    assert results == [True] * 4 + [False] * 2  # 6 - 2 reserved
    # The PBX gets in through the reserve, twice (no per-source cap for a trusted peer).
    pbx_conns = [await connect(port, PBX) for _ in range(2)]
    assert [await admitted(server, inbox, c, 30 + i) for i, c in enumerate(pbx_conns)] == [
        True,
        True,
    ]
    assert server.connection_count == 6
    # At the full total, nothing more: not even the PBX.
    assert not await admitted(server, inbox, await connect(port, PBX), 40)

    # Outbound room: with strangers at their share, a call to a trunk still connects.
    client = make(max_connections=4, reserved_connections=1, max_connections_per_ip=8)
    await client.start(host=HOST, tcp_port=0)
    client_port = client.local_endpoint("tcp").port
    trunk = make()
    trunk_inbox = Inbox()
    trunk.on_message = trunk_inbox
    await trunk.start(host="127.0.0.10", tcp_port=0)
    held = [await connect(client_port, "127.0.0.30") for _ in range(4)]
    await until(lambda: client.stats.connections_rejected == 1)
    assert client.connection_count == 3
    client.send(sip_request(50), trunk.local_endpoint("tcp"))
    [(data, _)] = await trunk_inbox.wait_for(1)
    assert data == sip_request(50) and client.connection_count == 4
    for _, writer in [*strangers, *pbx_conns, *held]:
        writer.close()


async def test_a_connection_that_sends_no_message_in_time_is_closed(
    make: Callable[..., SipTransports],
) -> None:
    server = make(first_message_timeout=0.3)
    inbox = Inbox()
    server.on_message = inbox
    await server.start(host=HOST, tcp_port=0)
    port = server.local_endpoint("tcp").port
    loop = asyncio.get_running_loop()
    start = loop.time()  # before the server accepts them: their deadlines run from later
    silent_reader, silent_writer = await connect(port, "127.0.0.2")
    pinging_reader, pinging_writer = await connect(port, "127.0.0.3")
    pinging_writer.write(b"\r\n\r\n")  # a keep-alive is not a message
    talker = await connect(port, "127.0.0.4")
    assert await admitted(server, inbox, talker, 1)
    assert await read_until_closed(silent_reader) == b""
    assert await read_until_closed(pinging_reader) == b"\r\n"
    assert loop.time() - start >= 0.29
    await until(lambda: server.stats.connections_silent_closed == 2)
    # The connection that spoke stays open and keeps working.
    assert await admitted(server, inbox, talker, 2)
    assert server.connection_count == 1
    for writer in (silent_writer, pinging_writer, talker[1]):
        writer.close()
