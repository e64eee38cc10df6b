"""Campaigns and routes (DIDs) created through the API of a running `omlmedia serve`, no restart.

A queue, a campaign sending callers to it and a DID route to the campaign are created through
the API; a sipp caller dials the DID and waits in the new queue (its campaign on the call record)
until the queue's ``max_wait`` sends it to its overflow. What uses an object keeps it: deleting
the campaign the route reaches, or the queue the campaign sends callers to, is a 409 naming the
user. After a restart the route still routes; once deleted, the DID is unrouted again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.harness import (
    SCENARIOS,
    RunningServer,
    SippResult,
    free_port,
    run_sipp,
    start_server,
)
from tests.interop.pages import call, stopped, until, waiting

pytestmark = pytest.mark.interop

DID = "5553000"


def dial(server: RunningServer, tmp_path: Path, user: str) -> asyncio.Future[SippResult]:
    """A sipp caller (`uac_wait_in_queue.xml`) to `user`, run in a thread."""
    return asyncio.get_running_loop().run_in_executor(
        None,
        lambda: run_sipp(
            [
                f"127.0.0.1:{server.sip_port}",
                "-i",
                "127.0.0.1",
                "-p",
                "0",
                "-sf",
                str(SCENARIOS / "uac_wait_in_queue.xml"),
                "-s",
                user,
                "-mp",
                str(free_port(pair=True)),
                "-m",
                "1",
            ],
            tmp_path,
            timeout=60.0,
        ),
    )


async def test_a_did_route_created_through_the_api_reaches_a_queue_created_through_the_api(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "server")
    try:
        status, queue = call(
            server,
            "POST",
            "/queues",
            {"name": "hotline", "max_wait": 3, "overflow": {"hangup": "goodbye"}},
        )
        assert status == 201, queue
        status, problem = call(server, "POST", "/campaigns", {"name": "promo", "queue": "nope"})
        assert status == 400 and problem["errors"][0]["field"] == "queue", problem
        status, campaign = call(server, "POST", "/campaigns", {"name": "promo", "queue": "hotline"})
        assert status == 201 and campaign["origin"] == "api", campaign
        status, problem = call(
            server, "POST", "/routes", {"name": "promo-did", "user": DID, "target": "campaign:x"}
        )
        assert status == 400 and problem["errors"][0]["field"] == "target", problem
        status, route = call(
            server,
            "POST",
            "/routes",
            {"name": "promo-did", "user": DID, "target": "campaign:promo"},
        )
        assert status == 201 and route["target"] == "campaign:promo", route
        status, listed = call(server, "GET", "/routes")
        assert status == 200 and [r["name"] for r in listed["routes"]] == ["promo-did"]

        caller = dial(server, tmp_path, DID)
        await until(lambda: waiting(server, "hotline") == 1, "the caller to wait in hotline")
        status, problem = call(server, "DELETE", "/campaigns/promo")
        assert status == 409 and "route promo-did" in problem["detail"], problem
        status, problem = call(server, "DELETE", "/queues/hotline")
        assert status == 409 and "campaign promo" in problem["detail"], problem
        result = await caller  # max_wait: the queue's overflow hangs up
        assert result.returncode == 0, result.output + result.errors
        records = await until(  # the record is written by the store's thread
            lambda: call(server, "GET", "/calls/records?queue=hotline")[1]["records"],
            "the caller's record",
        )
        assert [(r["campaign"], r["queue"], r["callee"]) for r in records] == [
            ("promo", "hotline", DID)
        ], records
        status, audit = call(server, "GET", "/audit?target=promo-did")
        assert [e["action"] for e in audit["entries"]] == ["route.create"], audit
    finally:
        stopped(server)

    server = start_server(tmp_path / "server")  # the same data directory and file
    try:
        caller = dial(server, tmp_path, DID)
        await until(lambda: waiting(server, "hotline") == 1, "the caller to wait after a restart")
        result = await caller
        assert result.returncode == 0, result.output + result.errors
        status, _ = call(server, "DELETE", "/routes/promo-did")
        assert status == 204
        status, _ = call(server, "DELETE", "/campaigns/promo")
        assert status == 204
        status, listed = call(server, "GET", "/routes")
        assert status == 200 and listed["routes"] == [], listed
    finally:
        stopped(server)
