"""The supervisor page's Reports and Recordings sections in Chromium against a real `omlmedia
serve`: a queue report of a stored day shows its table and its uPlot chart, its CSV export holds
the same cells, and a recording found by the search plays in the page (its <audio> reaches
``readyState >= 2``) with the listen in the audit log."""

from __future__ import annotations

import asyncio
import csv
import io
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from omlmedia.storage import CallRecord, QueueLogRow, Store
from tests.interop.browser import chromium
from tests.interop.harness import API_TOKEN, RunningServer
from tests.interop.pages import call, log_in, make_account
from tests.omlmedia.test_recordings import tone_file

pytestmark = pytest.mark.interop

SUPERVISOR_PASSWORD = "report-well-1"


DAY = "2026-12-01"
T0 = 1_796_119_200.0  # 2026-12-01 10:00 UTC (the test server's site is UTC)


def store_a_day(server: RunningServer) -> Path:
    """Two callers of the support queue at 10:00 (one answered and recorded, one abandoned),
    written into the running server's store as it writes them."""
    data = server.workdir / "data"
    recording = tone_file(data / "recordings" / "2026" / "12" / "01" / "support-web1.opus", 3.0)
    store = Store(data / "omlmedia.db")
    for row in (
        QueueLogRow(T0, "enter", "web1", "support", data={"position": 1}),
        QueueLogRow(T0 + 6, "answer", "web1", "support", "agent1", {"wait": 6.0, "ring": 2.0}),
        QueueLogRow(T0 + 66, "complete", "web1", "support", "agent1", {"wait": 6.0, "talk": 60.0}),
        QueueLogRow(T0 + 120, "enter", "web2", "support", data={"position": 1}),
        QueueLogRow(T0 + 150, "abandon", "web2", "support", data={"wait": 30.0}),
    ):
        store.append(row)
    legs = ({"role": "caller", "codec": "PCMU", "packets": 3000, "lost": 0, "mos": 4.3},)
    store.call_ended(
        CallRecord("web1", T0, T0 + 66, T0 + 6, caller="+5491155550001", campaign="support",
                   queue="support", agent="agent1", disposition="solved", recording=str(recording),
                   legs=legs)
    )  # fmt: skip
    store.call_ended(
        CallRecord("web2", T0 + 120, T0 + 150, None, caller="+5491155550002", campaign="support",
                   queue="support", hangup_by="caller")
    )  # fmt: skip
    store.flush()
    store.close()
    return recording


def page_error(message: Any) -> bool:
    """A console error of the page (Chromium's own favicon request, which no page names, is
    not one)."""
    url = str(message.location.get("url", ""))
    return bool(message.type == "error" and not url.endswith("/favicon.ico"))


async def test_reports_show_a_table_and_a_chart_and_a_recording_plays(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    make_account(server, "rita", "supervisor", SUPERVISOR_PASSWORD)
    store_a_day(server)
    base = f"https://127.0.0.1:{server.http_port}"
    async with chromium(tmp_path / "browser", 440.0) as browser:
        page = await browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if page_error(m) else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        await page.goto(f"{base}/supervisor/")
        await log_in(page, "rita", SUPERVISOR_PASSWORD)
        await page.get_by_role("button", name="Reports", exact=True).click()
        reports = page.locator("#reports")
        await reports.get_by_label("Report", exact=True).select_option("queues")
        await reports.get_by_label("Day", exact=True).fill(DAY)
        await reports.get_by_label("Interval", exact=True).select_option("60")
        await reports.get_by_role("button", name="Show report").click()
        table = reports.get_by_role("table")
        await expect(table.locator("caption")).to_contain_text("2026-12-01 00:00")
        ten = (
            table.locator("tbody tr")
            .filter(has=page.locator("th", has_text="2026-12-01 10:00"))
            .filter(has=page.get_by_role("cell", name="support", exact=True))
        )
        await expect(ten).to_have_count(1)
        cells = await ten.locator("td").all_inner_texts()
        # end, queue, offered, answered, abandoned, SL (1 of 1 + 1 late abandon), ASA, AHT, longest
        assert cells == ["2026-12-01 11:00", "support", "2", "1", "1", "50.0 %", "0:06",
                         "1:00", "0:30"]  # fmt: skip
        await expect(reports.locator("#report-chart canvas")).to_have_count(1)
        box = await reports.locator("#report-chart .uplot").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 200
        # Export CSV: the download holds the same cells as the API's JSON
        async with page.expect_download() as info:
            await reports.get_by_role("button", name="Export CSV").click()
        download = await info.value
        text = await asyncio.to_thread(Path(await download.path()).read_text)
        rows = list(csv.reader(io.StringIO(text, newline="")))
        status, report = call(server, "GET", f"/reports/queues?day={DAY}&interval=60")
        assert status == 200 and rows[0] == report["columns"]
        assert len(rows) == len(report["rows"]) + 1

        # the agent report: a row per configured agent, the chart redrawn
        await reports.get_by_label("Report", exact=True).select_option("agents")
        await expect(table.locator("caption")).to_contain_text("Agent activity")
        await expect(table.get_by_role("columnheader", name="Occupancy")).to_have_count(1)
        await expect(table.get_by_role("rowheader", name="agent1")).to_have_count(1)
        await expect(reports.locator("#report-chart canvas")).to_have_count(1)

        await page.get_by_role("button", name="Recordings", exact=True).click()
        recordings = page.locator("#recordings")
        await recordings.get_by_label("Day", exact=True).fill(DAY)
        await recordings.get_by_label("Caller number").fill("0001")
        await recordings.get_by_role("button", name="Search", exact=True).click()
        await expect(recordings.locator("#recording-rows tr")).to_have_count(1)
        await recordings.get_by_role("button", name="Play the recording of web1").click()
        ready = await page.wait_for_function(
            "() => document.getElementById('recording-player').readyState >= 2", timeout=10000
        )
        assert await ready.json_value() is True
        seconds = await page.evaluate("document.getElementById('recording-player').duration")
        assert 2.5 < seconds < 3.5, seconds
        assert not problems, problems

    status, audit = call(server, "GET", "/audit?action=recording.listen&target=web1")
    assert status == 200
    assert [(e["actor"], e["target"]) for e in audit["entries"]] == [("rita", "web1")]


def test_the_recording_route_answers_ranges_over_https(server: RunningServer) -> None:
    recording = store_a_day_once(server)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}/api/v1/recordings/web1/audio",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Range": "bytes=100-199"},
    )
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        body: Any = response.read()
        assert response.status == 206
        size = recording.stat().st_size
        assert response.headers["Content-Range"] == f"bytes 100-199/{size}"
    assert body == recording.read_bytes()[100:200]
    query = urllib.parse.urlencode({"since": T0 - 1, "until": T0 + 3600})
    status, page = call(server, "GET", f"/recordings?{query}")
    assert status == 200 and [r["call_id"] for r in page["recordings"]] == ["web1"]


def store_a_day_once(server: RunningServer) -> Path:
    """The recording of `store_a_day`, storing the day if no test of the module did yet."""
    path = server.workdir / "data" / "recordings" / "2026" / "12" / "01" / "support-web1.opus"
    return path if path.exists() else store_a_day(server)
