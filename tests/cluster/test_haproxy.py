"""HAProxy (Debian's, `contrib/haproxy/haproxy.cfg` as shipped) in front of two real nodes that
share the agents' sessions in a throwaway Redis: a Chromium agent page logged in and Ready
through HAProxy; its node killed with SIGKILL; the page reconnects through HAProxy to the other
node and is Ready there again without logging in, within 10 s, and opens its media channel
afresh with that node at once, its audio back within 3 s (measured); a drop of the socket alone
(same node) keeps the channel. With HAProxy in the nodes' ``trusted_proxies``, pages from two
addresses are two sources on the nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.harness import API_TOKEN
from sip.tls import ensure_self_signed
from tests.cluster import redis
from tests.cluster.test_shared_database import api
from tests.interop.browser import chromium
from tests.interop.pages import agent_ready
from tests.interop.test_stop_with_pages import RECORD_CLOSES

CONFIG = Path(__file__).resolve().parents[2] / "contrib" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def require_haproxy() -> None:
    if os.path.exists(HAPROXY):
        return
    message = "haproxy is not installed: run make setup-test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def start_haproxy(
    workdir: Path, nodes: list[harness.RunningServer]
) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy with the shipped configuration on a free port, in front of `nodes`."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    pem = workdir / "front.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    port = harness.free_port()
    env = {
        **os.environ,
        "OML_BIND": f"127.0.0.1:{port}",
        "OML_CERT": str(pem),
        "OML_NODE1": f"127.0.0.1:{nodes[0].http_port}",
        "OML_NODE2": f"127.0.0.1:{nodes[1].http_port}",
        "OML_HEALTH_TOKEN": API_TOKEN,
    }
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONFIG)], env=env, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(workdir / "haproxy.log", "wb")
    process = subprocess.Popen([HAPROXY, "-f", str(CONFIG), "-db"], env=env, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert process.poll() is None, (workdir / "haproxy.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.05)
    return process, port


@contextlib.contextmanager
def nodes_behind_haproxy(
    tmp_path: Path, edits: Sequence[Callable[[str], str]]
) -> Iterator[tuple[list[harness.RunningServer], int]]:
    """Nodes n1, n2 (each config passed through its edit) behind HAProxy with the shipped
    configuration: the nodes and the balancer's port. At the end HAProxy is stopped and every node
    still running must stop cleanly."""
    require_haproxy()
    nodes: list[harness.RunningServer] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for i, edit in enumerate(edits):
            nodes.append(harness.start_server(tmp_path / f"n{i + 1}", edit_config=edit))
        proxy, port = start_haproxy(tmp_path / "haproxy", nodes)
        yield nodes, port
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for node in nodes:
            if node.process.poll() is None:
                assert node.stop() == 0, node.log()[-3000:]


def state_on(server: harness.RunningServer, agent: str) -> str | None:
    """The agent's state on `server` (None when the node does not answer)."""
    try:
        status, view = api(server, "GET", f"/api/v1/agents/{agent}")
    except OSError:
        return None
    return str(view.get("state")) if status == 200 else None


async def test_an_agent_page_behind_haproxy_is_ready_on_the_other_node_when_its_node_dies(
    shared: redis.Redis, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    cluster = f'\n[cluster]\nredis_url = "{shared.url}"\n'
    with nodes_behind_haproxy(tmp_path, [lambda t: t + cluster] * 2) as (nodes, port):
        async with chromium(tmp_path / "browser", 660.0) as browser:
            page = await browser.new_page()
            await agent_ready(page, f"https://127.0.0.1:{port}")
            state = page.locator("#state")
            # Every auth-ok the page gets, counted after the page's own handler ran.
            await page.evaluate(
                """() => { window.authOks = 0; omlAgent.signaling.addEventListener("message",
                (e) => { if (e.detail.type === "auth-ok") window.authOks += 1; }); }"""
            )
            # A dropped socket that comes back to the same node (HAProxy's stickiness) finds
            # its channel there: the page keeps its peer connection, no new offer.
            await page.evaluate(
                "() => { window.pcBefore = omlAgent.pc; omlAgent.signaling.drop(); }"
            )
            await page.wait_for_function("() => window.authOks === 1", polling=50, timeout=15000)
            kept = await page.evaluate(
                "() => omlAgent.pc === window.pcBefore && omlAgent.negotiating === null"
            )
            assert kept, "a reconnect to the same node renegotiated the media channel"
            await expect(page.locator("#ice-state")).to_have_text("connected")
            states = [state_on(node, "agent1") for node in nodes]
            assert sorted(map(str, states)) == ["logged-out", "ready"], states
            first = nodes[states.index("ready")]
            other = nodes[1 - states.index("ready")]

            first.process.kill()  # kill -9 of the page's node
            killed = time.monotonic()
            first.process.wait()
            deadline = killed + 10
            while await asyncio.to_thread(state_on, other, "agent1") != "ready":
                assert time.monotonic() < deadline, "the agent is not Ready on the other node"
                await asyncio.sleep(0.05)
            ready_after = time.monotonic() - killed
            # The page says Ready, and never asked to log in again (the form stayed hidden).
            await expect(state).to_have_text("Ready")
            assert not await page.get_by_label("Password").is_visible()
            assert ready_after <= 10.0
            # The page's audio: auth-ok names another channel than the one its peer connection
            # was negotiated with, so the page opens a new one with this node at once (its old
            # one would still read "connected" until ICE consent freshness gave up, ~5 s, and
            # audio came back 8.8-11.3 s after the kill). 4.5 s: the page's first reconnect
            # (0.5 s +-20 %), auth on the new node, an offer whose ICE gathering, answer and
            # checks take ~0.3 s on loopback, and room for this loaded machine; still short of
            # the ~5 s the old page waited for ICE consent to give up.
            await page.wait_for_function(
                """() => omlAgent.pc !== window.pcBefore && omlAgent.pcChannel !== null
                && ["connected", "completed"].includes(omlAgent.pc.iceConnectionState)""",
                polling=20,
                timeout=20000,
            )
            audio_after = time.monotonic() - killed
            await expect(page.locator("#ice-state")).to_have_text("connected")
            print(
                f"\nkill -9 -> the agent Ready on the other node after {ready_after:.2f} s, "
                f"the page's audio connected to it after {audio_after:.2f} s"
            )
            assert audio_after <= 4.5


async def _failed_login_from(source: str, port: int) -> dict[str, object]:
    """One wrong agent login on /ws through HAProxy, the page's TCP connection from `source`."""
    import json
    import ssl

    import aiohttp

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await session.ws_connect(f"https://127.0.0.1:{port}/ws")
        try:
            message = {"v": 1, "type": "login", "username": "agent1", "password": "x", "id": 1}
            await ws.send_str(json.dumps(message))
            while True:
                reply: dict[str, object] = await ws.receive_json(timeout=20)
                if reply.get("ref") == 1:
                    return reply
        finally:
            await ws.close()


async def test_two_pages_behind_haproxy_are_two_sources_when_it_is_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    trust = 'trusted_proxies = ["127.0.0.1/32"]\n'

    def trusting(text: str) -> str:
        return text.replace("[security]\n", "[security]\n" + trust, 1)

    with nodes_behind_haproxy(tmp_path, [trusting] * 2) as (nodes, port):
        for source in ("127.0.0.2", "127.0.0.3"):
            reply = await _failed_login_from(source, port)
            assert reply.get("code") == "bad-credentials", reply
        # HAProxy's X-Forwarded-For names each page; the nodes never count HAProxy itself.
        wanted = [
            f"SECURITY reason=login-failed src={s} port=0 " for s in ("127.0.0.2", "127.0.0.3")
        ]
        deadline = time.monotonic() + 10
        while not all(w in (logs := "".join(n.log() for n in nodes)) for w in wanted):
            assert time.monotonic() < deadline, logs[-3000:]
            await asyncio.sleep(0.05)
        assert "SECURITY reason=login-failed src=127.0.0.1" not in logs


async def test_an_agent_page_behind_haproxy_is_ready_on_the_other_node_at_once_when_its_node_stops(
    shared: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM of the page's node (a planned stop, not a crash): the node closes the page's
    socket with 1001 ("going away") and exits within 3 s; the page comes back through HAProxy
    to the other node at once and is Ready there without logging in (the session is shared)."""
    from playwright.async_api import expect

    cluster = f'\n[cluster]\nredis_url = "{shared.url}"\n'
    with nodes_behind_haproxy(tmp_path, [lambda t: t + cluster] * 2) as (nodes, port):
        async with chromium(tmp_path / "browser", 660.0) as browser:
            await browser.add_init_script(RECORD_CLOSES)
            page = await browser.new_page()
            await agent_ready(page, f"https://127.0.0.1:{port}")
            states = [state_on(node, "agent1") for node in nodes]
            assert sorted(map(str, states)) == ["logged-out", "ready"], states
            first = nodes[states.index("ready")]
            other = nodes[1 - states.index("ready")]

            first.process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            stopped = None
            while stopped is None or await asyncio.to_thread(state_on, other, "agent1") != "ready":
                if stopped is None and first.process.poll() is not None:
                    stopped = time.monotonic() - began
                assert time.monotonic() - began < 10, "the agent is not Ready on the other node"
                await asyncio.sleep(0.02)
            ready_after = time.monotonic() - began
            assert first.process.returncode == 0, first.log()[-3000:]
            await expect(page.locator("#state")).to_have_text("Ready")
            assert not await page.get_by_label("Password").is_visible()
            codes = await page.evaluate("() => window.__closes")
            assert codes and codes[0] == 1001, codes
            print(
                f"\nSIGTERM -> the node stopped after {stopped:.2f} s, the agent Ready on the "
                f"other node after {ready_after:.2f} s"
            )
            # 4.5 s: measured 0.1-0.3 s; what these catch takes 5 s or more (a page socket held
            # until aiohttp's shutdown timeout, the 5 s grace of a request still running).
            assert stopped < 4.5, first.log()[-3000:]
            assert ready_after < 4.5
