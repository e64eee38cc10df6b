"""The event stream and /metrics of a real `omlmedia serve`, with real calls from sipp."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.interop.harness import (
    API_TOKEN,
    RunningServer,
    echoing_pbx,
    pbx,
    pcap_caller,
    run_sipp,
    sipp_caller,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CALLS = 3


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _sipp_to_echo(server: RunningServer, workdir: Path) -> None:
    result = run_sipp(
        [
            "-sn",
            "uac",
            f"127.0.0.1:{server.sip_port}",
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            str(CALLS),
            "-r",
            "10",
        ],
        workdir,
    )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == CALLS


async def _read(ws: aiohttp.ClientWebSocketResponse, ended: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while sum(e["type"] == "call.ended" for e in events) < ended:
        msg = await ws.receive(timeout=30)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        events.append(json.loads(msg.data))
    return events


async def test_sipp_calls_appear_on_the_stream_live_and_replayed(
    server: RunningServer, tmp_path: Path
) -> None:
    base = f"https://127.0.0.1:{server.http_port}"
    connector = aiohttp.TCPConnector(ssl=_insecure())
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        live = await session.ws_connect(f"{base}/api/v1/events?type=call.")
        await asyncio.to_thread(_sipp_to_echo, server, tmp_path)
        events = await _read(live, CALLS)
        await live.close()
        by_call: dict[str, list[str]] = {}
        for ev in events:
            by_call.setdefault(ev["call_id"], []).append(ev["type"])
        assert len(by_call) == CALLS
        for types in by_call.values():
            assert types == ["call.started", "call.answered", "call.ended"], types
        started = next(e for e in events if e["type"] == "call.started")
        assert started["data"]["to"] == "echo" and started["data"]["target"] == "echo"
        ids = [e["id"] for e in events]
        assert ids == sorted(ids)

        # A client that comes later with since_id gets the same events from the stored log.
        first = ids[0] - 1
        replay = await session.ws_connect(f"{base}/api/v1/events?type=call.&since_id={first}")
        again = await _read(replay, CALLS)
        await replay.close()
        assert [e["id"] for e in again] == ids

        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    names = {family.name for family in text_string_to_metric_families(text)}
    for name in (
        "omlmedia_sip_transactions",
        "omlmedia_sip_dialogs",
        "omlmedia_sip_calls",
        "omlmedia_calls",
        "omlmedia_leg_mos",
        "omlmedia_leg_jitter_ms",
        "omlmedia_event_stream_clients",
        "omlmedia_events_published",
    ):
        assert name in names, name


async def test_a_trunk_call_reports_each_legs_quality_and_feeds_the_histograms(
    server: RunningServer, tmp_path: Path
) -> None:
    base = f"https://127.0.0.1:{server.http_port}"
    connector = aiohttp.TCPConnector(ssl=_insecure())
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        live = await session.ws_connect(f"{base}/api/v1/events?type=call.")
        await asyncio.to_thread(_sipp_through_the_trunk, server, tmp_path)
        events = await _read(live, 2)  # the caller's call and ours to the PBX
        await live.close()
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
    quality = [e for e in events if e["type"] == "call.quality"]
    assert sorted(e["data"]["leg"] for e in quality) == ["callee", "caller"]
    assert all(e["data"]["packets"] > 0 and e["data"]["codec"] for e in quality), quality
    directions = {e["data"]["direction"] for e in events if e["type"] == "call.started"}
    assert directions == {"inbound", "outbound"}
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["omlmedia_rtp_packets_received_total"] > 0
    assert samples["omlmedia_leg_jitter_ms_count"] >= 2
    assert samples["omlmedia_leg_loss_ratio_count"] >= 2


def _sipp_through_the_trunk(server: RunningServer, workdir: Path) -> None:
    with pbx(server, workdir, echoing_pbx(), 1):
        result = sipp_caller(server, workdir, pcap_caller("91234"))
    assert result.returncode == 0, result.output + result.errors
