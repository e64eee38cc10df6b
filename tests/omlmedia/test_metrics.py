"""``/metrics``: the token, the Prometheus text format, live figures read from their owners at
scrape time, and quality histograms fed by ``call.quality`` events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from omlmedia.api import create_app
from omlmedia.events import EventLog
from omlmedia.metrics import Metrics
from tests.omlmedia.test_api import AUTH, config

STATUS: dict[str, Any] = {
    "sip": {
        "transactions": 3,
        "dialogs": 2,
        "calls": 2,
        "ua": {"invites": 7},
        "transaction_layer": {"created": 11, "timeouts": 1},
    },
    "transport": {"datagrams_in": 40, "datagrams_out": 38},
    "media": {
        "active": 1,
        "rtp_ports_in_use": 2,
        "rtp_ports_pooled": 0,
        "rtp_ports_held_elsewhere": 6,
        "rtp_port_failures": 1,
    },
    "calls": {"offered": 7, "answered": 5, "ended": 5, "rejected": 1},
    "queues": {
        "support": {
            "waiting": 2,
            "ringing": 1,
            "callbacks": 0,
            "longest_wait": 42.5,
            "members_logged_in": 3,
            "members_ready": 1,
            "members_busy": 2,
        }
    },
}


@pytest.fixture
async def scraped() -> AsyncIterator[tuple[TestClient[Any, Any], EventLog]]:
    log = EventLog()
    metrics = Metrics(
        lambda: STATUS,
        calls=lambda: {("confirmed", "inbound"): 2, ("offered", "inbound"): 1},
        agents=lambda: ["ready", "on-call", "on-call", "paused"],
        events=log,
    )
    app = create_app(config(), lambda: STATUS, events=log, metrics=metrics)
    async with TestClient(TestServer(app)) as client:
        yield client, log
    await log.close()


def sample(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    for s in families[name]:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name} {labels}")


async def scrape(client: TestClient[Any, Any]) -> dict[str, list[Sample]]:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    return samples


async def test_metrics_need_the_token(
    scraped: tuple[TestClient[Any, Any], EventLog],
) -> None:
    client, _ = scraped
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await client.get("/metrics", headers=headers)
        assert response.status == 401


async def test_metrics_parse_and_carry_the_live_families(
    scraped: tuple[TestClient[Any, Any], EventLog],
) -> None:
    client, _ = scraped
    ws = await client.ws_connect("/api/v1/events", headers=AUTH)
    m = await scrape(client)
    assert sample(m, "omlmedia_sip_transactions") == 3
    assert sample(m, "omlmedia_sip_dialogs") == 2
    assert sample(m, "omlmedia_sip_calls", state="confirmed", direction="inbound") == 2
    assert sample(m, "omlmedia_sip_transaction_events_total", event="created") == 11
    assert sample(m, "omlmedia_sip_transport_events_total", event="datagrams_in") == 40
    assert sample(m, "omlmedia_calls_total", outcome="offered") == 7
    assert sample(m, "omlmedia_media_calls") == 1
    assert sample(m, "omlmedia_rtp_ports_held_elsewhere_total") == 6
    assert sample(m, "omlmedia_rtp_port_failures_total") == 1
    assert sample(m, "omlmedia_queue_waiting", queue="support") == 2
    assert sample(m, "omlmedia_queue_longest_wait_seconds", queue="support") == 42.5
    assert sample(m, "omlmedia_agents", state="on-call") == 2
    assert sample(m, "omlmedia_event_stream_clients") == 1
    STATUS["queues"]["support"]["waiting"] = 5  # read at scrape time: nothing to drift
    assert sample(await scrape(client), "omlmedia_queue_waiting", queue="support") == 5
    await ws.close()


async def test_quality_histograms_come_from_call_quality_events(
    scraped: tuple[TestClient[Any, Any], EventLog],
) -> None:
    client, log = scraped
    log.publish(
        "call.quality",
        call_id="c1",
        data={"leg": "caller", "packets": 990, "lost": 10, "jitter_ms": 3.2, "mos": 4.3},
    )
    log.publish(
        "call.quality",
        call_id="c2",
        data={"leg": "caller", "packets": 0, "lost": 0, "jitter_ms": 0.0, "mos": None},
    )
    log.publish("call.ended", call_id="c1", data={"mos": 1.0})  # not a quality event
    m = await scrape(client)
    assert sample(m, "omlmedia_leg_mos_count") == 1
    assert sample(m, "omlmedia_leg_mos_bucket", le="4.4") == 1
    assert sample(m, "omlmedia_leg_mos_bucket", le="4.2") == 0
    assert sample(m, "omlmedia_leg_jitter_ms_count") == 2
    assert sample(m, "omlmedia_leg_loss_ratio_count") == 1
    assert sample(m, "omlmedia_leg_loss_ratio_sum") == pytest.approx(0.01)
    assert sample(m, "omlmedia_rtp_packets_received_total") == 990
    assert sample(m, "omlmedia_rtp_packets_lost_total") == 10
    assert sample(m, "omlmedia_events_published_total") == 3


async def test_metrics_listen_serves_metrics_alone_without_a_token() -> None:
    import aiohttp

    from benchmarks.harness import free_port
    from omlmedia.metrics import serve_metrics

    port = free_port()
    runner = await serve_metrics(Metrics(lambda: STATUS), "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                names = {f.name for f in text_string_to_metric_families(await response.text())}
            async with session.get(f"http://127.0.0.1:{port}/api/v1/status") as response:
                assert response.status == 404  # nothing else is served there
        assert "omlmedia_queue_waiting" in names
    finally:
        await runner.cleanup()


class _Filler:
    """A collector making the exposition larger than the loopback socket buffers (~6 MB)."""

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("omlmedia_test_filler", "filler", labels=["n"])
        for i in range(2000):
            family.add_metric([f"{i:06d}" + "x" * 3000], i)
        yield family


async def test_a_scrape_still_sending_at_the_stop_is_cut_after_the_apis_grace_not_60_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import socket
    import time

    from benchmarks.harness import free_port
    from omlmedia import api
    from omlmedia.metrics import serve_metrics

    monkeypatch.setattr(api, "HTTP_STOP_GRACE", 0.3)  # the API's grace, shortened for the test
    metrics = Metrics(lambda: STATUS)
    metrics.registry.register(_Filler())
    port = free_port()
    runner = await serve_metrics(metrics, "127.0.0.1", port)
    loop = asyncio.get_running_loop()
    scraper = socket.socket()  # a scraper that asks and then reads nothing
    try:
        scraper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        scraper.setblocking(False)
        await loop.sock_connect(scraper, ("127.0.0.1", port))
        await loop.sock_sendall(scraper, b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n\r\n")
        server = runner.server
        assert server is not None
        deadline = time.monotonic() + 10
        while not any(c._request_in_progress for c in server.connections):
            assert time.monotonic() < deadline, "the scrape never started"
            await asyncio.sleep(0.02)
        # Seen from this task, the handler is parked at an await: writing to the scraper.
        started = time.monotonic()
        await runner.cleanup()
        took = time.monotonic() - started
    finally:
        scraper.close()
    # Twice the grace at most (aiohttp waits it for the handler, then for its cancellation).
    assert took < 2.0, took
