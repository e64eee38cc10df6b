"""The asyncio SIP transports over real sockets on 127.0.0.1 (RFC 3261 §18, RFC 5626 §3.5.1)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from sip.endpoint import Endpoint
from sip.tls import client_context, ensure_self_signed, server_context
from sip.transport import SipTransports, TransportConfigError, TransportLimits

HOST = "127.0.0.1"
WAIT = 20.0


def sip_request(n: int, body: bytes = b"") -> bytes:
    """An OPTIONS request whose Call-ID carries ``n``, framed by Content-Length."""
    return (
        f"OPTIONS sip:bob@{HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {HOST}:5999;branch=z9hG4bK-{n}\r\n"
        f"From: <sip:alice@{HOST}>;tag=a{n}\r\n"
        f"To: <sip:bob@{HOST}>\r\n"
        f"Call-ID: call-{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Inbox:
    """Collects ``on_message`` calls and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, Endpoint]] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes, source: Endpoint) -> None:
        self.messages.append((data, source))
        self._changed.set()

    async def wait_for(self, count: int) -> list[tuple[bytes, Endpoint]]:
        async def enough() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), WAIT)
        return self.messages


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition that another task makes true, bounded by ``WAIT``."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - counters have no event to await
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), WAIT)


def received_at_least(transports: SipTransports, count: int) -> bool:
    return transports.stats.bytes_in >= count


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the peer sends before closing; a reset counts as a close."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


@pytest.fixture
async def make_transports() -> AsyncIterator[Callable[..., SipTransports]]:
    created: list[SipTransports] = []

    def make(**limits: Any) -> SipTransports:
        transports = SipTransports(limits=TransportLimits(**limits))
        created.append(transports)
        return transports

    yield make
    for transports in created:
        await transports.close()


async def start_tcp(transports: SipTransports) -> Endpoint:
    await transports.start(host=HOST, tcp_port=0)
    return transports.local_endpoint("tcp")


async def test_udp_round_trip_reports_source_and_answers_to_it(
    make_transports: Callable[..., SipTransports],
) -> None:
    client, server = make_transports(), make_transports()
    client_inbox, server_inbox = Inbox(), Inbox()
    client.on_message, server.on_message = client_inbox, server_inbox
    await client.start(host=HOST, udp_port=0)
    await server.start(host=HOST, udp_port=0)
    request = sip_request(1)

    client.send(request, server.local_endpoint("udp"))
    [(data, source)] = await server_inbox.wait_for(1)
    server.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", source)
    [(reply, reply_source)] = await client_inbox.wait_for(1)

    assert data == request
    assert source == client.local_endpoint("udp")
    assert reply.startswith(b"SIP/2.0 200 OK")
    assert reply_source == server.local_endpoint("udp")
    assert server.stats.datagrams_in == 1
    assert server.stats.bytes_in == len(request)
    assert client.stats.datagrams_out == 1


async def test_udp_oversize_datagram_dropped_and_counted(
    make_transports: Callable[..., SipTransports],
) -> None:
    client, server = make_transports(), make_transports(max_message_size=1000)
    inbox = Inbox()
    server.on_message = inbox
    await client.start(host=HOST, udp_port=0)
    await server.start(host=HOST, udp_port=0)
    destination = server.local_endpoint("udp")

    client.send(sip_request(1, b"x" * 1200), destination)
    client.send(b"\r\n\r\n", destination)
    client.send(sip_request(2), destination)
    messages = await inbox.wait_for(1)

    assert [data for data, _ in messages] == [sip_request(2)]
    assert server.stats.dropped == 1
    assert server.stats.keepalives == 1
    assert server.stats.datagrams_in == 1


async def test_udp_callback_exception_counted_and_transport_goes_on(
    make_transports: Callable[..., SipTransports], caplog: pytest.LogCaptureFixture
) -> None:
    client, server = make_transports(), make_transports()
    inbox = Inbox()

    def fragile(data: bytes, source: Endpoint) -> None:
        if b"call-1\r\n" in data:
            raise RuntimeError("application bug")
        inbox(data, source)

    server.on_message = fragile
    await client.start(host=HOST, udp_port=0)
    await server.start(host=HOST, udp_port=0)
    with caplog.at_level(logging.ERROR, logger="sip.transport"):
        client.send(sip_request(1), server.local_endpoint("udp"))
        client.send(sip_request(2), server.local_endpoint("udp"))
        messages = await inbox.wait_for(1)

    assert messages[0][0] == sip_request(2)
    assert server.stats.callback_errors == 1
    assert "application bug" in caplog.text


async def test_tcp_two_messages_in_one_segment_delivered_one_per_call(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports()
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    _reader, writer = await asyncio.open_connection(HOST, listen.port)

    writer.write(sip_request(1, b"v=0\r\n") + sip_request(2))
    await writer.drain()
    messages = await inbox.wait_for(2)
    writer.close()

    assert [data for data, _ in messages] == [sip_request(1, b"v=0\r\n"), sip_request(2)]
    local = writer.get_extra_info("sockname")
    assert {source for _, source in messages} == {Endpoint("tcp", local[0], local[1])}
    assert server.stats.stream_messages_in == 2


async def test_tcp_message_split_across_segments_reassembled(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports()
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    _reader, writer = await asyncio.open_connection(HOST, listen.port)
    message = sip_request(1, b"a body of twenty-six bytes")
    cuts = [0, 7, len(message) - 40, len(message) - 3, len(message)]

    for start, end in itertools.pairwise(cuts):
        assert inbox.messages == []
        writer.write(message[start:end])
        await writer.drain()
        await until(functools.partial(received_at_least, server, end))
    messages = await inbox.wait_for(1)
    writer.close()

    assert [data for data, _ in messages] == [message]


async def test_tcp_message_and_head_of_next_in_one_segment_with_ping_between(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports()
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    reader, writer = await asyncio.open_connection(HOST, listen.port)
    first, second = sip_request(1, b"body"), sip_request(2, b"more body")

    writer.write(first + b"\r\n\r\n" + second[:50])
    assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
    assert [data for data, _ in await inbox.wait_for(1)] == [first]
    writer.write(second[50:])
    messages = await inbox.wait_for(2)
    writer.close()

    assert [data for data, _ in messages] == [first, second]
    assert server.stats.keepalives == 1


async def test_crlf_ping_answered_with_pong_and_keeps_connection_alive(
    make_transports: Callable[..., SipTransports],
) -> None:
    # A pause of the whole process as long as the idle timeout between a pong and the next ping
    # closes the connection: 1 s, not less, for a loaded machine; pings for twice as long.
    server = make_transports(idle_timeout=1.0)
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    reader, writer = await asyncio.open_connection(HOST, listen.port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    pings = 0

    while loop.time() - start < 2.0:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
        pings += 1
    last_activity = loop.time()  # the server reads the request after this moment
    writer.write(sip_request(1))
    messages = await inbox.wait_for(1)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""

    assert messages[0][0] == sip_request(1)
    assert server.stats.keepalives == pings
    assert loop.time() - last_activity >= 0.95
    assert server.stats.connections_idle_closed == 1
    writer.close()


async def test_reply_reuses_inbound_tcp_connection(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports()
    server.on_message = lambda data, source: server.send(
        b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", source
    )
    listen = await start_tcp(server)
    reader, writer = await asyncio.open_connection(HOST, listen.port)

    writer.write(sip_request(1))
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    writer.close()

    assert reply == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert server.stats.connections_total == 1
    assert server.stats.stream_messages_out == 1


async def test_outbound_tcp_connection_opened_once_and_reused_both_ways(
    make_transports: Callable[..., SipTransports],
) -> None:
    client, server = make_transports(), make_transports()
    client_inbox, server_inbox = Inbox(), Inbox()
    client.on_message, server.on_message = client_inbox, server_inbox
    await client.start(host=HOST, tcp_port=0)
    listen = await start_tcp(server)

    client.send(sip_request(1), listen)
    client.send(sip_request(2), listen)
    first_two = list(await server_inbox.wait_for(2))
    client.send(sip_request(3), listen)
    messages = await server_inbox.wait_for(3)
    server.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", messages[0][1])
    [(_, reply_source)] = await client_inbox.wait_for(1)

    assert [data for data, _ in first_two] == [sip_request(1), sip_request(2)]
    assert messages[2][0] == sip_request(3)
    assert reply_source == listen
    assert client.stats.connections_total == 1
    assert server.stats.connections_total == 1
    assert client.connection_count == 1


async def test_tcp_connect_failure_reported_through_on_error(
    make_transports: Callable[..., SipTransports],
) -> None:
    probe = make_transports()
    dead = await start_tcp(probe)
    await probe.close()
    client = make_transports()
    failures: list[Endpoint] = []
    client.on_error = failures.append
    await client.start(host=HOST, udp_port=0)

    client.send(sip_request(1), dead)
    client.send(sip_request(1), Endpoint("tls", HOST, dead.port))
    await until(lambda: len(failures) == 2)

    assert failures == [Endpoint("tls", HOST, dead.port), dead]
    assert client.stats.send_errors == 2
    assert client.connection_count == 0


async def test_udp_send_failures_reported_not_raised_nor_counted(
    make_transports: Callable[..., SipTransports],
) -> None:
    unstarted, client = make_transports(), make_transports()
    failures: list[Endpoint] = []
    unstarted.on_error = client.on_error = failures.append
    await client.start(host=HOST, udp_port=0)
    bad = [
        Endpoint("udp", "pbx.example.com", 5060),
        Endpoint("udp", "::1", 5060),
        Endpoint("udp", HOST, 0),
        Endpoint("ws", HOST, 5060),
    ]

    unstarted.send(sip_request(1), Endpoint("udp", HOST, 5060))
    for destination in bad:
        client.send(sip_request(1), destination)

    assert failures == [Endpoint("udp", HOST, 5060), *bad]
    assert client.stats.send_errors == len(bad)
    assert client.stats.datagrams_out == client.stats.bytes_out == 0


async def test_tcp_oversized_header_closes_connection_and_counts(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports(max_message_size=2048)
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    reader, writer = await asyncio.open_connection(HOST, listen.port)

    writer.write(b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nX-Long: " + b"a" * 4096)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()

    assert inbox.messages == []
    assert server.stats.dropped == 1
    assert server.stats.connections_open == 0


async def test_tcp_content_length_beyond_limit_closes_connection(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports(max_message_size=2048)
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    reader, writer = await asyncio.open_connection(HOST, listen.port)

    writer.write(sip_request(1, b"x" * 3000))
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()

    assert inbox.messages == []
    assert server.stats.dropped == 1


async def test_garbage_tcp_client_disconnected_while_others_served(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports(max_message_size=4096)
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    _good_reader, good_writer = await asyncio.open_connection(HOST, listen.port)
    bad_reader, bad_writer = await asyncio.open_connection(HOST, listen.port)

    for _ in range(3):
        bad_writer.write(os.urandom(2048).replace(b"\r", b""))
    await bad_writer.drain()
    assert await read_until_closed(bad_reader) == b""
    good_writer.write(sip_request(1))
    messages = await inbox.wait_for(1)
    good_writer.close()
    bad_writer.close()

    assert messages[0][0] == sip_request(1)
    assert server.stats.dropped == 1
    assert server.stats.connections_open == 1


async def test_tcp_callback_exception_does_not_kill_connection(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports()
    inbox = Inbox()

    def fragile(data: bytes, source: Endpoint) -> None:
        if b"call-1\r\n" in data:
            raise RuntimeError("application bug")
        inbox(data, source)

    server.on_message = fragile
    listen = await start_tcp(server)
    _reader, writer = await asyncio.open_connection(HOST, listen.port)

    writer.write(sip_request(1) + sip_request(2))
    writer.write(sip_request(3))
    messages = await inbox.wait_for(2)
    writer.close()

    assert [data for data, _ in messages] == [sip_request(2), sip_request(3)]
    assert server.stats.callback_errors == 1
    assert server.stats.connections_total == 1


async def test_idle_tcp_connection_closed_after_timeout(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports(idle_timeout=0.2)
    listen = await start_tcp(server)
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection(HOST, listen.port)

    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    await until(lambda: server.connection_count == 0)
    writer.close()

    assert loop.time() - start >= 0.19
    assert server.stats.connections_idle_closed == 1
    assert server.stats.connections_open == 0


async def test_connections_per_ip_capped_and_rejections_counted(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports(max_connections_per_ip=1)
    inbox = Inbox()
    server.on_message = inbox
    listen = await start_tcp(server)
    _first_reader, first_writer = await asyncio.open_connection(HOST, listen.port)
    first_writer.write(sip_request(1))
    await inbox.wait_for(1)

    second_reader, second_writer = await asyncio.open_connection(HOST, listen.port)
    assert await read_until_closed(second_reader) == b""
    first_writer.write(sip_request(2))
    messages = await inbox.wait_for(2)
    first_writer.close()
    second_writer.close()

    assert messages[1][0] == sip_request(2)
    assert server.stats.connections_rejected == 1
    assert server.stats.connections_open == 1


async def test_tls_handshake_and_round_trip_with_generated_certificate(
    make_transports: Callable[..., SipTransports], tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], [HOST])
    client, server = make_transports(), make_transports()
    client_inbox = Inbox()
    client.on_message = client_inbox
    server_inbox = Inbox()

    def answer(data: bytes, source: Endpoint) -> None:
        server_inbox(data, source)
        server.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", source)

    server.on_message = answer
    await server.start(host=HOST, tls_port=0, tls_server_context=server_context(cert, key))
    await client.start(host=HOST, tls_client_context=client_context(cafile=cert))
    listen = server.local_endpoint("tls")

    client.send(sip_request(1), listen)
    [(data, source)] = await server_inbox.wait_for(1)
    [(reply, reply_source)] = await client_inbox.wait_for(1)

    assert data == sip_request(1)
    assert source.transport == "tls"
    assert reply == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert reply_source == listen
    assert server.stats.connections_total == client.stats.connections_total == 1


async def test_tls_untrusted_server_certificate_reported_as_send_error(
    make_transports: Callable[..., SipTransports], tmp_path: Path
) -> None:
    ensure_self_signed(tmp_path / "a.pem", tmp_path / "a.key", ["localhost"], [HOST])
    ensure_self_signed(tmp_path / "b.pem", tmp_path / "b.key", ["localhost"], [HOST])
    client, server = make_transports(), make_transports()
    inbox = Inbox()
    server.on_message = inbox
    failures: list[Endpoint] = []
    client.on_error = failures.append
    await server.start(
        host=HOST,
        tls_port=0,
        tls_server_context=server_context(tmp_path / "a.pem", tmp_path / "a.key"),
    )
    await client.start(host=HOST, tls_client_context=client_context(cafile=tmp_path / "b.pem"))

    client.send(sip_request(1), server.local_endpoint("tls"))
    await until(lambda: bool(failures))

    assert failures == [server.local_endpoint("tls")]
    assert inbox.messages == []


async def test_close_releases_ports_and_connections(
    make_transports: Callable[..., SipTransports],
) -> None:
    server = make_transports()
    await server.start(host=HOST, udp_port=0, tcp_port=0)
    listen = server.local_endpoint("tcp")
    reader, writer = await asyncio.open_connection(HOST, listen.port)
    await until(lambda: server.connection_count == 1)

    await server.close()

    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    assert server.connection_count == 0
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, listen.port)
    writer.close()


async def test_misconfiguration_raises_fixed_value_errors(
    make_transports: Callable[..., SipTransports],
) -> None:
    transports = make_transports()
    with pytest.raises(TransportConfigError, match=r"^a TLS port needs a server context$"):
        await transports.start(host=HOST, tls_port=0)
    with pytest.raises(TransportConfigError, match=r"^transport is not listening$"):
        transports.local_endpoint("udp")
    with pytest.raises(ValueError, match=r"^timeouts must be positive$"):
        TransportLimits(idle_timeout=0)


def test_udp_tcp_and_tls_round_trips_under_uvloop(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], [HOST])

    async def scenario() -> tuple[list[tuple[bytes, Endpoint]], list[bytes], Endpoint]:
        client, server = SipTransports(), SipTransports()
        client_inbox, server_inbox = Inbox(), Inbox()
        client.on_message = client_inbox

        def answer(data: bytes, source: Endpoint) -> None:
            server_inbox(data, source)
            server.send(data.replace(b"OPTIONS", b"ANSWER", 1), source)

        server.on_message = answer
        try:
            await client.start(
                host=HOST, udp_port=0, tls_client_context=client_context(cafile=cert)
            )
            await server.start(
                host=HOST,
                udp_port=0,
                tcp_port=0,
                tls_port=0,
                tls_server_context=server_context(cert, key),
            )
            for n, transport in enumerate(("udp", "tcp", "tls")):
                client.send(sip_request(n), server.local_endpoint(transport))
            await client_inbox.wait_for(3)
            return (
                server_inbox.messages,
                sorted(data for data, _ in client_inbox.messages),
                client.local_endpoint("udp"),
            )
        finally:
            await client.close()
            await server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        received, answers, client_udp = runner.run(scenario())

    assert sorted(data for data, _ in received) == [sip_request(n) for n in range(3)]
    assert {source.transport for _, source in received} == {"udp", "tcp", "tls"}
    assert [source for _, source in received if source.transport == "udp"] == [client_udp]
    assert answers == sorted(sip_request(n).replace(b"OPTIONS", b"ANSWER", 1) for n in range(3))
