"""Real cluster nodes for the tests: `started` runs two (or more) `omlmedia serve` of this tree,
each with a ``[cluster]`` section (a shared Redis) and/or a ``[storage]`` section (a shared
PostgreSQL, the node's own name), and stops on exit every node the test left running, failing
the test if one did not stop cleanly (a node the test killed is left alone). `Page` is an agent
page's socket (the page's protocol, without its media), optionally from another loopback source
address (every 127.0.0.0/8 address is the machine's own: a test plays many sources)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import harness

TLS = ssl.create_default_context()
"""The nodes' self-signed certificates, unchecked (loopback only)."""
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def sections(
    name: str, *, redis_url: str | None = None, dsn: str | None = None, extra: str = ""
) -> str:
    """The configuration a node `name` adds to the harness's: the shared Redis, the shared
    PostgreSQL database under the node's own name, and `extra` (TOML)."""
    text = ""
    if redis_url is not None:
        text += f'\n[cluster]\nredis_url = "{redis_url}"\n'
    if dsn is not None:
        text += f'\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
    return text + extra


@contextmanager
def started(
    tmp_path: Path,
    *,
    redis_url: str | None = None,
    dsn: str | None = None,
    extra: str = "",
    names: Sequence[str] = ("a", "b"),
) -> Iterator[list[harness.RunningServer]]:
    """Start one node per name (in ``tmp_path / name``), one after the other; stop them all on
    exit (those the test did not kill), each required to exit with status 0."""
    running: list[harness.RunningServer] = []
    try:
        for name in names:
            added = sections(name, redis_url=redis_url, dsn=dsn, extra=extra)

            def edit(text: str, added: str = added) -> str:
                return text + added

            running.append(harness.start_server(tmp_path / name, edit_config=edit))
        yield running
    finally:
        failed = []
        for server in running:
            if server.process.poll() is None and server.stop() != 0:
                failed.append(server.log()[-3000:])
        assert not failed, "\n".join(failed)


class Page:
    """An agent page's socket on `server` (from the loopback address `source`, if given)."""

    def __init__(self, server: harness.RunningServer, source: str | None = None) -> None:
        self.server = server
        self.source = source
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> Page:
        connector = aiohttp.TCPConnector(
            local_addr=(self.source, 0) if self.source is not None else None
        )
        self.session = aiohttp.ClientSession(connector=connector)
        port = self.server.http_port
        self.ws = await self.session.ws_connect(
            f"wss://127.0.0.1:{port}/ws", ssl=TLS, origin=f"https://127.0.0.1:{port}"
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.session is not None
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one message; the first answer of a kind that ends it."""
        assert self.ws is not None
        await self.ws.send_json({"v": 1, "type": kind, "id": 1, **fields})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), 10)
            if message.get("ref") == 1 or message.get("type") == "error":
                return dict(message)


async def api_login(
    server: harness.RunningServer, name: str, password: str, source: str | None = None
) -> int:
    """``POST /api/v1/sessions`` on `server` from `source`: the status of the answer."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source is not None else None)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"https://127.0.0.1:{server.http_port}/api/v1/sessions",
            json={"name": name, "password": password},
            ssl=TLS,
        ) as response,
    ):
        await response.read()
        return response.status
