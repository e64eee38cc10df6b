"""omlmedia.netlimits: the descriptor limit raised at start, the caps derived from it, and the
HTTPS listener that counts connections per source and in total before their TLS handshake, over
real sockets on loopback (127.0.0.x addresses play distinct sources)."""

from __future__ import annotations

import asyncio
import resource
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from omlmedia.netlimits import ConnectionGate, GatedTlsSite, budget, raise_nofile
from sip.tls import ensure_self_signed, server_context

HOST = "127.0.0.1"
WAIT = 20.0


def test_the_open_files_limit_is_raised_towards_the_wanted_value_never_past_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        assert raise_nofile(wanted) == wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted
        assert raise_nofile(low) == wanted  # never lowered
        if hard != resource.RLIM_INFINITY:
            assert raise_nofile(hard + 1000) == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_budget_serves_rtp_first_then_shares_the_rest() -> None:
    roomy = budget(65536, 10000)
    assert (roomy.sip, roomy.http) == (4096, 4096)
    assert roomy.sip_reserved == 512 and roomy.http_per_source == 256
    tight = budget(1024, 500)
    assert tight.sip == tight.http == (1024 - 500 - 256) // 2
    assert tight.sip + tight.http + 500 <= 1024
    starved = budget(256, 10000)
    assert starved.sip == starved.http == 16 and starved.http_per_source == 8


def test_the_gate_counts_per_source_and_in_total_and_trusts_listed_sources() -> None:
    gate = ConnectionGate(5, 2, trusted=lambda host: host == "10.0.0.1")
    assert gate.admit("192.0.2.1") and gate.admit("192.0.2.1")
    assert not gate.admit("192.0.2.1")
    assert gate.admit("2001:db8::1") and gate.admit("2001:db8::2")
    assert not gate.admit("2001:db8::3")  # the same /64
    assert gate.admit("10.0.0.1")  # trusted: no per-source cap...
    assert not gate.admit("10.0.0.1")  # ...but the total holds
    assert gate.rejected == 3 and gate.open == 5
    gate.release("192.0.2.1")
    assert gate.admit("198.51.100.1") and gate.open == 5
    for host in ("192.0.2.1", "2001:db8::1", "2001:db8::2", "10.0.0.1", "198.51.100.1"):
        gate.release(host)
    assert gate.open == 0 and gate.sources() == 0
    with pytest.raises(ValueError):
        ConnectionGate(0, 1)


class Listener:
    def __init__(self, site: GatedTlsSite, gate: ConnectionGate, runner: web.AppRunner) -> None:
        self.site, self.gate, self.runner = site, gate, runner

    @property
    def port(self) -> int:
        return self.site.port


Start = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], [HOST])

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def make(
        total: int, per_source: int, handshake_timeout: float = 5.0, tls: bool = True
    ) -> Listener:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        gate = ConnectionGate(total, per_source)
        site = GatedTlsSite(
            runner,
            HOST,
            0,
            tls=server_context(cert, key) if tls else None,
            gate=gate,
            handshake_timeout=handshake_timeout,
        )
        await site.start()
        return Listener(site, gate, runner)

    yield make
    for runner in runners:
        await runner.cleanup()


async def get(port: int, source: str) -> int:
    """The status of GET / over HTTPS from `source`; 0 when the connection is refused."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(source, 0), force_close=True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"https://{HOST}:{port}/", timeout=aiohttp.ClientTimeout(WAIT)) as reply,
        ):
            assert await reply.text() == "hello"
            return reply.status
    except (aiohttp.ClientConnectionError, ConnectionResetError):
        return 0


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - counters have no event to await
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


async def test_https_is_served_through_the_gate_and_releases_its_slots(start: Start) -> None:
    listener = await start(total=8, per_source=2)
    assert [await get(listener.port, "127.0.0.2") for _ in range(5)] == [200] * 5
    await until(lambda: listener.gate.open == 0)
    assert listener.gate.rejected == 0


async def test_one_source_holding_its_cap_does_not_keep_others_out(start: Start) -> None:
    listener = await start(total=16, per_source=3)
    held = [
        await asyncio.open_connection(HOST, listener.port, local_addr=("127.0.0.2", 0))
        for _ in range(6)
    ]
    await until(lambda: listener.gate.open == 3 and listener.gate.rejected == 3)
    assert await get(listener.port, "127.0.0.2") == 0
    assert await get(listener.port, "127.0.0.3") == 200
    for _, writer in held:
        writer.close()
    await until(lambda: listener.gate.open == 0)
    assert await get(listener.port, "127.0.0.2") == 200


async def test_the_total_cap_holds_and_frees_up_when_connections_close(start: Start) -> None:
    listener = await start(total=4, per_source=4)
    held = [
        await asyncio.open_connection(HOST, listener.port, local_addr=(f"127.0.0.{10 + i}", 0))
        for i in range(4)
    ]
    await until(lambda: listener.gate.open == 4)
    assert await get(listener.port, "127.0.0.20") == 0
    held[0][1].close()
    await until(lambda: listener.gate.open == 3)
    assert await get(listener.port, "127.0.0.20") == 200
    for _, writer in held[1:]:
        writer.close()


async def test_a_connection_that_does_not_finish_its_handshake_in_time_is_closed(
    start: Start,
) -> None:
    # The deadline holds for every handshake, the test's good one after too: 1 s, not less, for
    # a loaded machine (the client and the server share this process).
    listener = await start(total=4, per_source=4, handshake_timeout=1.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    reader, writer = await asyncio.open_connection(HOST, listener.port)
    writer.write(b"\x16\x03\x01")  # the start of a ClientHello, never finished
    try:
        data = await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        data = b""
    assert data == b"" and loop.time() - began >= 0.95
    await until(lambda: listener.gate.open == 0 and not listener.site.pending)
    assert listener.site.handshakes_failed == 1
    writer.close()
    assert await get(listener.port, "127.0.0.2") == 200


async def test_stopping_the_site_cancels_the_pending_handshakes(start: Start) -> None:
    listener = await start(total=4, per_source=4)
    held = await asyncio.open_connection(HOST, listener.port)
    await until(lambda: len(listener.site.pending) == 1)
    await listener.runner.cleanup()
    assert not listener.site.pending
    held[1].close()


def test_the_same_holds_under_uvloop_the_loop_the_server_runs_on(tmp_path: Path) -> None:
    """uvloop hands a connection's first bytes over early: the TLS layer must be in place
    before them, or the handshake would hang."""
    import uvloop

    async def scenario() -> None:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        ensure_self_signed(cert, key, ["localhost"], [HOST])
        app = web.Application()

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        gate = ConnectionGate(8, 2)
        site = GatedTlsSite(
            runner, HOST, 0, tls=server_context(cert, key), gate=gate, handshake_timeout=1.0
        )  # 1 s: the good handshakes must finish in it, and the silent ones last until the third
        await site.start()
        try:
            assert [await get(site.port, "127.0.0.2") for _ in range(3)] == [200] * 3
            held = [
                await asyncio.open_connection(HOST, site.port, local_addr=("127.0.0.3", 0))
                for _ in range(3)
            ]
            await until(lambda: gate.rejected == 1)
            assert await get(site.port, "127.0.0.4") == 200
            await until(lambda: gate.open == 0)  # the two silent ones missed the deadline
            assert site.handshakes_failed == 2
            for _, writer in held:
                writer.close()
        finally:
            await runner.cleanup()

    uvloop.run(scenario())
