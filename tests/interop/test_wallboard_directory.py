"""The wallboard and the reports read queues and campaigns from the directory, not the file.

The server's file declares no queue and no campaign (nor a route to one): the wallboard is still
served. A queue (its own service level threshold), a campaign and a DID route created through the
API appear on it at once; a sipp caller to the DID is counted on the wallboard and in the
reports by queue and by campaign; a campaign deleted through the API leaves the wallboard's
filter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import ServerStartError
from benchmarks.harness import start_server as start
from tests.interop.harness import RunningServer
from tests.interop.pages import call, stopped, until
from tests.interop.test_routes_e2e import dial

pytestmark = pytest.mark.interop

DID = "5554000"


def without_queues(text: str) -> str:
    """The test configuration without its queues, campaigns, the routes to them and the
    wallboard thresholds of its queues."""
    blocks = re.split(r"\n(?=\[)", text)
    kept = [
        block
        for block in blocks
        if not block.startswith(("[queues.", "[[campaigns]]", "[wallboard.thresholds."))
        and not (block.startswith("[[routes]]") and re.search(r'"(queue|campaign):', block))
    ]
    return "\n".join(kept)


def server_without_queues(workdir: Path) -> RunningServer:
    try:
        return start(workdir, t1=0.1, edit_config=without_queues)
    except ServerStartError as exc:
        pytest.fail(str(exc))


def board_queue(server: RunningServer, name: str) -> dict[str, Any] | None:
    status, board = call(server, "GET", "/wallboard")
    assert status == 200, board
    return next((q for q in board["queues"] if q["queue"] == name), None)


async def test_a_queue_and_campaign_created_through_the_api_are_on_the_wallboard_and_in_reports(
    tmp_path: Path,
) -> None:
    server = server_without_queues(tmp_path / "server")
    try:
        assert "[queues." not in (tmp_path / "server" / "omlmedia.toml").read_text()
        status, board = call(server, "GET", "/wallboard")
        assert status == 200 and board["queues"] == [], board  # served without file queues

        status, queue = call(
            server,
            "POST",
            "/queues",
            {
                "name": "hotline",
                "service_level": 45,
                "max_wait": 3,
                "overflow": {"hangup": "goodbye"},
            },
        )
        assert status == 201, queue
        status, campaign = call(server, "POST", "/campaigns", {"name": "promo", "queue": "hotline"})
        assert status == 201, campaign
        status, route = call(
            server,
            "POST",
            "/routes",
            {"name": "promo-did", "user": DID, "target": "campaign:promo"},
        )
        assert status == 201, route
        shown = board_queue(server, "hotline")
        assert shown is not None, "the API's queue is on the wallboard"
        assert shown["service_level_seconds"] == 45 and shown["campaigns"] == ["promo"], shown
        status, board = call(server, "GET", "/wallboard?campaign=promo")
        assert status == 200 and [q["queue"] for q in board["queues"]] == ["hotline"], board

        caller = dial(server, tmp_path, DID)
        await until(
            lambda: (board_queue(server, "hotline") or {}).get("waiting") == 1,
            "the caller to be waiting in hotline on the wallboard",
        )
        result = await caller  # max_wait: the overflow hangs up
        assert result.returncode == 0, result.output + result.errors
        await until(
            lambda: (board_queue(server, "hotline") or {}).get("today", {}).get("offered") == 1,
            "the wallboard to count the caller offered to hotline",
        )

        def offered(by: str, name: str) -> int:
            status, report = call(server, "GET", f"/reports/queues?interval=day&by={by}")
            assert status == 200, report
            return sum(int(r["offered"]) for r in report["rows"] if r[by] == name)

        # Both at once: the queue's count comes from the queue log (its "enter" committed
        # while the caller waited), the campaign's from the call's record, queued when the
        # call ended and committed by a later batch of the store.
        await until(
            lambda: offered("queue", "hotline") == 1 and offered("campaign", "promo") == 1,
            "the queue and the campaign reports to count it",
        )

        status, _ = call(server, "DELETE", "/routes/promo-did")
        assert status == 204
        status, _ = call(server, "DELETE", "/campaigns/promo")
        assert status == 204
        status, problem = call(server, "GET", "/wallboard?campaign=promo")
        assert status == 400 and problem["errors"][0]["field"] == "campaign", problem
        shown = board_queue(server, "hotline")
        assert shown is not None and shown["campaigns"] == [], shown
    finally:
        stopped(server)
