"""Recordings through the API: the search and its filters, playback with HTTP ranges (206,
Content-Range) and download, each listen and download in the audit log, 403 for a supervisor of
another campaign; and the retention job, which deletes exactly the recordings older than their
campaign's retention and audits each deletion."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from media.oggopus import open_writer
from omlmedia.accounts import AccountBook
from omlmedia.api import create_app
from omlmedia.authz import Identity, Role
from omlmedia.config import ApiConfig, Config, SiteConfig, load_demo_config
from omlmedia.recordings import (
    DAY,
    Deleted,
    PlaybackTickets,
    RecordingQuery,
    RetentionJob,
    search,
    sweep,
)
from omlmedia.reports_api import CLOCK_KEY
from omlmedia.storage import CallRecord, Store

TOKEN = "recordings-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_796_000_000.0  # 2026-11-30, 00:53:20 UTC


def tone_file(path: Path, seconds: float = 2.0, rate: int = 8000) -> Path:
    """A stereo Ogg/Opus file as `CallRecorder` writes: a tone left, another right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = open_writer(path, "opus", rate, 2)
    frame = rate // 50
    t = np.arange(int(seconds * rate)) / rate
    left = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    right = (8000 * np.sin(2 * np.pi * 660 * t)).astype(np.int16)
    for i in range(0, len(t) - frame + 1, frame):
        writer.write(np.stack((left[i : i + frame], right[i : i + frame]), axis=1))
    writer.close()
    return path


def record(call_id: str, start: float, path: Path | None, **more: Any) -> CallRecord:
    return CallRecord(
        call_id,
        start,
        more.pop("end", start + 90),
        more.pop("answer", start + 10),
        caller=more.pop("caller", "+5491155550000"),
        campaign=more.pop("campaign", "support"),
        queue=more.pop("queue", more.get("queue", "support")),
        agent=more.pop("agent", "agent1"),
        recording=str(path) if path is not None else "",
        **more,
    )


def fill(database: Path, recordings: Path) -> dict[str, Path]:
    """Five calls: four recorded (one of them in sales), one not recorded."""
    day = recordings / "2026" / "11" / "29"
    files = {
        "r1": tone_file(day / "support-r1.opus"),
        "r2": tone_file(day / "support-r2.opus"),
        "r3": tone_file(day / "sales-r3.opus"),
        "r4": tone_file(day / "support-r4.opus"),
    }
    good = ({"role": "caller", "mos": 4.3},)
    poor = ({"role": "caller", "mos": 2.9},)
    gaps = [{"start": 100.0, "end": 130.5}, {"start": 42, "end": 70}, {"start": "x"}, "bad"]
    paused = (*good, {"role": "recording", "gaps": gaps})
    store = Store(database)
    for item in (
        record("r1", T0, files["r1"], disposition="solved", legs=good, caller="+5491155551111"),
        record("r2", T0 + 600, files["r2"], agent="agent2", disposition="escalated", legs=poor),
        record("r3", T0 + 700, files["r3"], campaign="sales", queue="sales", agent="agent2"),
        record("r4", T0 + 800, files["r4"], end=T0 + 1400, disposition="solved", legs=paused),
        record("n5", T0 + 900, None, disposition="solved"),
        # a record naming a file outside the recordings directory is never served
        record("x6", T0 + 950, database),
    ):
        store.call_ended(item)
    store.flush()
    store.close()
    return files


@dataclasses.dataclass
class Api:
    client: TestClient[Any, Any]
    book: AccountBook
    files: dict[str, Path]
    sales: str
    """A token of a supervisor of the "sales" campaign only."""
    reporting: str
    clock: list[float] = dataclasses.field(default_factory=lambda: [T0 + 3600])
    """The API's clock (the reports' and the playback tickets')."""

    async def get(self, path: str, status: int = 200, token: str = TOKEN, **headers: str) -> Any:
        response = await self.client.get(
            path, headers={"Authorization": f"Bearer {token}", **headers}
        )
        body = await response.json()
        assert response.status == status, body
        return body


def site_config(data_dir: Path) -> Config:
    demo = load_demo_config()
    return dataclasses.replace(
        demo,
        api=ApiConfig(hashlib.sha256(TOKEN.encode()).hexdigest()),
        site=SiteConfig("UTC"),
        server=dataclasses.replace(demo.server, data_dir=data_dir),
    )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    database = tmp_path / "omlmedia.db"
    files = fill(database, tmp_path / "recordings")
    config = site_config(tmp_path)
    book = AccountBook(database, config.api.token_matches)
    admin = Identity("test", Role.ADMIN)
    sales, _ = book.create_token(
        admin, integration="sales-sup", role=Role.SUPERVISOR, scope=frozenset({"sales"})
    )
    reporting, _ = book.create_token(admin, integration="bi", role=Role.REPORTING)
    app = create_app(config, dict, database=database, accounts=book)
    clock = [T0 + 3600]
    for sub in app._subapps:
        sub[CLOCK_KEY] = lambda: clock[0]
    async with TestClient(TestServer(app)) as client:
        yield Api(client, book, files, sales, reporting, clock)
    book.close()


SPAN = f"since={T0 - 10}&until={T0 + 86400}"


# -- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("", ["r1", "r2", "r3", "r4"]),
        ("agent=agent2", ["r2", "r3"]),
        ("campaign=support", ["r1", "r2", "r4"]),
        ("caller=1111", ["r1"]),
        ("disposition=solved", ["r1", "r4"]),
        ("min_duration=100", ["r4"]),
        ("max_duration=80", ["r1", "r2", "r3"]),
        ("min_mos=4", ["r1", "r4"]),
        ("min_mos=2.5&agent=agent2", ["r2"]),
    ],
)
async def test_search_filters(api: Api, query: str, found: list[str]) -> None:
    page = await api.get(f"/api/v1/recordings?{SPAN}&{query}")
    assert [r["call_id"] for r in page["recordings"]] == found
    assert page["total"] == len(found)


async def test_a_search_item_names_its_audio_and_what_it_is(api: Api) -> None:
    page = await api.get(f"/api/v1/recordings?{SPAN}&caller=1111")
    item = page["recordings"][0]
    assert item["audio"] == "/api/v1/recordings/r1/audio"
    assert item["media_type"] == "audio/ogg" and item["size"] == api.files["r1"].stat().st_size
    assert item["duration"] == 80.0 and item["min_mos"] == 4.3
    assert item["start"] == "2026-11-30T00:53:20+00:00"
    assert item["gaps"] == []


async def test_a_search_item_lists_its_recordings_pauses_in_order(api: Api) -> None:
    page = await api.get(f"/api/v1/recordings?{SPAN}&min_duration=500")
    [item] = page["recordings"]
    assert item["call_id"] == "r4"
    assert item["gaps"] == [{"start": 42.0, "end": 70.0}, {"start": 100.0, "end": 130.5}]


async def test_a_supervisor_finds_only_its_campaigns_recordings(api: Api) -> None:
    page = await api.get(f"/api/v1/recordings?{SPAN}", token=api.sales)
    assert [r["call_id"] for r in page["recordings"]] == ["r3"]
    problem = await api.get(f"/api/v1/recordings?{SPAN}&campaign=support", 403, token=api.sales)
    assert problem["missing_scope"] == "support"


async def test_the_reporting_role_may_not_listen(api: Api) -> None:
    problem = await api.get(f"/api/v1/recordings?{SPAN}", 403, token=api.reporting)
    assert problem["missing_permission"] == "recordings:read"
    problem = await api.get("/api/v1/recordings/r1/audio", 403, token=api.reporting)
    assert problem["missing_permission"] == "recordings:read"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("min_mos=9", "min_mos"),
        ("min_duration=-1", "min_duration"),
        ("max_duration=x", "max_duration"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(api: Api, query: str, field: str) -> None:
    problem = await api.get(f"/api/v1/recordings?{SPAN}&{query}", 400)
    assert [e["field"] for e in problem["errors"]] == [field]


# -- playback ----------------------------------------------------------------------------------


async def audit(api: Api, action: str) -> list[dict[str, Any]]:
    page = await api.get(f"/api/v1/audit?action={action}")
    return list(page["entries"])


async def test_playback_answers_ranges_and_the_listen_is_audited_once(api: Api) -> None:
    data = api.files["r1"].read_bytes()
    whole = await api.client.get("/api/v1/recordings/r1/audio", headers=AUTH)
    assert whole.status == 200 and whole.headers["Content-Type"] == "audio/ogg"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert await whole.read() == data
    first = await api.client.get(
        "/api/v1/recordings/r1/audio", headers={**AUTH, "Range": "bytes=0-99"}
    )
    assert first.status == 206 and await first.read() == data[:100]
    assert first.headers["Content-Range"] == f"bytes 0-99/{len(data)}"
    seek = await api.client.get(
        "/api/v1/recordings/r1/audio", headers={**AUTH, "Range": "bytes=500-"}
    )
    assert seek.status == 206 and await seek.read() == data[500:]
    assert seek.headers["Content-Range"] == f"bytes 500-{len(data) - 1}/{len(data)}"
    beyond = await api.client.get(
        "/api/v1/recordings/r1/audio", headers={**AUTH, "Range": f"bytes={len(data) + 10}-"}
    )
    assert beyond.status == 416
    listens = await audit(api, "recording.listen")
    # the whole file and the range from byte 0 began listens; the seek did not
    assert [(e["actor"], e["target"]) for e in listens] == [("bootstrap", "r1")] * 2
    assert listens[0]["after"] == {
        "campaign": "support",
        "queue": "support",
        "file": "support-r1.opus",
    }


async def test_download_is_an_attachment_and_is_audited(api: Api) -> None:
    response = await api.client.get("/api/v1/recordings/r2/audio?download=1", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="support-r2.opus"'
    assert await response.read() == api.files["r2"].read_bytes()
    downloads = await audit(api, "recording.download")
    assert [e["target"] for e in downloads] == ["r2"]
    assert await audit(api, "recording.listen") == []


async def test_another_campaigns_supervisor_gets_403_and_nothing_is_audited(api: Api) -> None:
    problem = await api.get("/api/v1/recordings/r1/audio", 403, token=api.sales)
    assert problem["missing_scope"] == "support"
    assert await audit(api, "recording.") == []
    ok = await api.client.get(
        "/api/v1/recordings/r3/audio", headers={"Authorization": f"Bearer {api.sales}"}
    )
    assert ok.status == 200
    assert [e["actor"] for e in await audit(api, "recording.listen")] == ["integration:sales-sup"]


@pytest.mark.parametrize("call_id", ["n5", "nobody", "x6"])
async def test_no_recording_is_a_404(api: Api, call_id: str) -> None:
    problem = await api.get(f"/api/v1/recordings/{call_id}/audio", 404)
    assert call_id in problem["detail"]


async def test_a_recording_gone_from_disk_is_404_and_not_listed(api: Api) -> None:
    api.files["r4"].unlink()
    await api.get("/api/v1/recordings/r4/audio", 404)
    page = await api.get(f"/api/v1/recordings?{SPAN}")
    assert "r4" not in [r["call_id"] for r in page["recordings"]]


# -- retention ---------------------------------------------------------------------------------


def retention_records(root: Path) -> tuple[list[CallRecord], dict[str, Path]]:
    """Calls that ended 40, 31, 29 and 5 days before T0 in support (30 days kept), one 400 days
    before in sales (kept for ever), and one in support whose file is already gone."""
    files = {}
    records = []
    for call_id, days, campaign in (
        ("old40", 40, "support"),
        ("old31", 31, "support"),
        ("new29", 29, "support"),
        ("new5", 5, "support"),
        ("sales400", 400, "sales"),
        ("gone", 50, "support"),
    ):
        path = root / campaign / f"{call_id}.opus"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"OggS" + call_id.encode())
        files[call_id] = path
        end = T0 - days * DAY
        records.append(record(call_id, end - 60, path, end=end, campaign=campaign))
    files.pop("gone").unlink()
    return records, files


def test_sweep_deletes_exactly_the_recordings_past_their_campaigns_retention(
    tmp_path: Path,
) -> None:
    root = tmp_path / "recordings"
    records, files = retention_records(root)
    deleted = sweep(records, {"support": 30, "sales": 0}, root, T0)
    assert sorted(d.call_id for d in deleted) == ["old31", "old40"]
    assert {name for name, path in files.items() if path.exists()} == {
        "new29",
        "new5",
        "sales400",
    }
    assert sweep(records, {"support": 30}, root, T0) == []  # nothing twice


async def test_the_daily_job_deletes_on_its_clock_and_audits_each_deletion(
    tmp_path: Path,
) -> None:
    root = tmp_path / "recordings"
    records, files = retention_records(root)
    now = [T0]
    audited: list[Deleted] = []
    asked: list[float] = []

    async def reader(before: float) -> list[CallRecord]:
        asked.append(before)
        return [r for r in records if r.start < before]

    async def audit_one(item: Deleted) -> None:
        audited.append(item)

    job = RetentionJob({"support": 30, "sales": 0}, root, reader, audit_one, clock=lambda: now[0])
    first = await job.run_once()
    assert sorted(d.call_id for d in first) == ["old31", "old40"]
    assert asked == [T0 - 30 * DAY]
    now[0] = T0 + 2 * DAY  # two days later new29 is 31 days old
    second = await job.run_once()
    assert [d.call_id for d in second] == ["new29"]
    assert [d.call_id for d in audited] == [d.call_id for d in first + second]
    assert files["new5"].exists() and files["sales400"].exists()
    assert (job.runs, job.deleted) == (2, 3)


def test_search_leaves_out_a_file_outside_the_recordings_directory(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.opus"
    outside.write_bytes(b"OggS")
    inside = tone_file(tmp_path / "recordings" / "a.opus", 0.2)
    records = [record("out", T0, outside), record("in", T0, inside)]
    found = search(records, RecordingQuery(), tmp_path / "recordings")
    assert [r.call_id for r, _ in found] == ["in"]


async def test_the_server_starts_the_job_for_a_campaign_with_a_retention(tmp_path: Path) -> None:
    import asyncio
    import time

    from omlmedia.server import Server

    demo = load_demo_config()
    campaigns = tuple(
        dataclasses.replace(c, recording_retention_days=30) if c.name == "support" else c
        for c in demo.campaigns
    )
    config = dataclasses.replace(
        demo,
        campaigns=campaigns,
        server=dataclasses.replace(demo.server, data_dir=tmp_path),
    )
    root = tmp_path / "recordings"
    old = tone_file(root / "old.opus", 0.2)
    recent = tone_file(root / "recent.opus", 0.2)
    store = Store(tmp_path / "omlmedia.db")
    now = time.time()
    store.call_ended(record("old", now - 40 * DAY, old, end=now - 39 * DAY))
    store.call_ended(record("recent", now - 3 * DAY, recent, end=now - 3 * DAY))
    store.close()
    server = Server(config)
    log = server._open_events()
    server.accounts = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    try:
        server._start_retention()
        assert server.retention is not None
        deadline = time.monotonic() + 10
        for _ in range(100_000):  # polled, with a deadline
            if server.retention.runs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert not old.exists() and recent.exists()
        entries = server.accounts.audit(0.0, float("inf"), action="recording.delete")
        assert [(e.actor, e.target, e.role) for e in entries] == [("retention", "old", "admin")]
    finally:
        if server.retention is not None:
            await server.retention.close()
        if server._retention_reader is not None:
            await server._retention_reader.close()
        server.pool.close()
        await log.close()
        if server.webhooks is not None:
            await server.webhooks.close()
        assert server.store is not None
        await server.store.close()
        server.accounts.close()


async def test_a_call_id_with_url_characters_is_quoted_in_its_audio_route(tmp_path: Path) -> None:
    database = tmp_path / "omlmedia.db"
    path = tone_file(tmp_path / "recordings" / "odd.opus", 0.2)
    store = Store(database)
    store.call_ended(record("a b%c?d#e@pbx", T0, path))
    store.close()
    app = create_app(site_config(tmp_path), dict, database=database)
    async with TestClient(TestServer(app)) as client:
        response = await client.get(f"/api/v1/recordings?{SPAN}", headers=AUTH)
        (item,) = (await response.json())["recordings"]
        assert item["audio"] == "/api/v1/recordings/a%20b%25c%3Fd%23e@pbx/audio"
        audio = await client.get(item["audio"], headers=AUTH)
        assert audio.status == 200 and await audio.read() == path.read_bytes()


# -- playback tickets ----------------------------------------------------------------------------


def test_a_ticket_opens_its_recording_for_its_account_until_it_expires() -> None:
    now = [1000.0]
    tickets: PlaybackTickets[str] = PlaybackTickets(lambda: now[0])
    ticket = tickets.issue("r1", "sue")
    assert len(ticket) >= 22  # 128 random bits
    assert tickets.redeem(ticket, "r1") == "sue"
    assert tickets.redeem(ticket, "r1", "sue") == "sue"
    assert tickets.redeem(ticket, "r2") is None  # another recording
    assert tickets.redeem(ticket, "r1", "bob") is None  # another account
    assert tickets.redeem(ticket + "x", "r1") is None and tickets.redeem("", "r1") is None
    now[0] += PlaybackTickets.TTL - 1
    assert tickets.redeem(ticket, "r1") == "sue"  # a range request within its life...
    now[0] += PlaybackTickets.TTL - 1
    assert tickets.redeem(ticket, "r1") == "sue"  # ...keeps it alive for the next seek
    now[0] += PlaybackTickets.TTL
    assert tickets.redeem(ticket, "r1") is None  # a minute unused: gone
    assert len(tickets) == 0


def test_an_unused_ticket_expires_and_a_used_one_not_past_its_lifetime() -> None:
    now = [0.0]
    tickets: PlaybackTickets[str] = PlaybackTickets(lambda: now[0])
    idle = tickets.issue("r1", "sue")
    busy = tickets.issue("r1", "sue")
    assert idle != busy
    now[0] = PlaybackTickets.TTL
    assert tickets.redeem(idle, "r1") is None
    now[0] = 0.0
    while now[0] < PlaybackTickets.MAX_LIFETIME - PlaybackTickets.TTL:
        now[0] += PlaybackTickets.TTL / 2
        assert tickets.redeem(busy, "r1") == "sue"
    now[0] = PlaybackTickets.MAX_LIFETIME
    assert tickets.redeem(busy, "r1") is None


def test_only_the_tickets_hash_is_kept() -> None:
    tickets: PlaybackTickets[str] = PlaybackTickets(lambda: 0.0)
    ticket = tickets.issue("r1", "sue")
    assert ticket.encode() not in tickets._tickets
    assert hashlib.sha256(ticket.encode()).digest() in tickets._tickets
    assert ticket not in repr(list(tickets._tickets.values()))


async def test_a_ticket_plays_with_ranges_without_the_token_and_the_listen_is_audited_once(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = api.files["r1"].read_bytes()
    issued = await api.client.post("/api/v1/recordings/r1/ticket", headers=AUTH)
    body = await issued.json()
    assert issued.status == 201, body
    ticket = body["ticket"]
    assert body["audio"] == f"/api/v1/recordings/r1/audio?ticket={ticket}"
    assert body["expires_in"] == 60 and body["media_type"] == "audio/ogg"
    whole = await api.client.get(body["audio"])  # no Authorization header: an <audio src>
    assert whole.status == 200 and await whole.read() == data
    first = await api.client.get(body["audio"], headers={"Range": "bytes=0-99"})
    assert first.status == 206 and await first.read() == data[:100]
    api.clock[0] += 50
    seek = await api.client.get(body["audio"], headers={"Range": "bytes=500-"})
    assert seek.status == 206 and await seek.read() == data[500:]
    assert seek.headers["Content-Range"] == f"bytes 500-{len(data) - 1}/{len(data)}"
    listens = await audit(api, "recording.listen")
    assert [(e["actor"], e["target"]) for e in listens] == [("bootstrap", "r1")]
    # another recording, another account's token, a download: refused
    other = await api.client.get(f"/api/v1/recordings/r2/audio?ticket={ticket}")
    assert other.status == 401 and (await other.json())["errors"][0]["field"] == "ticket"
    stranger = await api.client.get(
        f"/api/v1/recordings/r1/audio?ticket={ticket}",
        headers={"Authorization": f"Bearer {api.sales}"},
    )
    assert stranger.status == 401
    download = await api.client.get(body["audio"] + "&download=1")
    assert download.status == 400
    api.clock[0] += 61
    late = await api.client.get(body["audio"], headers={"Range": "bytes=500-"})
    assert late.status == 401
    assert len(await audit(api, "recording.listen")) == 1
    # The test server's own access log prints URLs; the server's has none (below).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert "api-token-invalid" in logged  # the refusals are counted...
    assert ticket not in logged  # ...and the ticket never written


def test_the_api_server_keeps_no_access_log_that_would_print_a_tickets_url() -> None:
    """`start_api` makes its runner with ``access_log=None`` (read from its syntax tree, so a
    change of layout or of the other arguments does not matter)."""
    import ast
    import inspect
    import textwrap

    from omlmedia import api as api_module

    tree = ast.parse(textwrap.dedent(inspect.getsource(api_module.start_api)))
    runners = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("AppRunner")
    ]
    assert len(runners) == 1
    (access_log,) = [k.value for k in runners[0].keywords if k.arg == "access_log"]
    assert isinstance(access_log, ast.Constant) and access_log.value is None


async def test_a_ticket_is_refused_out_of_scope_and_to_the_reporting_role(api: Api) -> None:
    sales = {"Authorization": f"Bearer {api.sales}"}
    refused = await api.client.post("/api/v1/recordings/r1/ticket", headers=sales)
    assert refused.status == 403 and (await refused.json())["missing_scope"] == "support"
    reporting = {"Authorization": f"Bearer {api.reporting}"}
    denied = await api.client.post("/api/v1/recordings/r3/ticket", headers=reporting)
    assert denied.status == 403
    assert (await denied.json())["missing_permission"] == "recordings:read"
    missing = await api.client.post("/api/v1/recordings/n5/ticket", headers=AUTH)
    assert missing.status == 404
    assert await audit(api, "recording.") == []
    anonymous = await api.client.post("/api/v1/recordings/r1/ticket")
    assert anonymous.status == 401
    ok = await api.client.post("/api/v1/recordings/r3/ticket", headers=sales)
    assert ok.status == 201
    ticket = (await ok.json())["ticket"]
    played = await api.client.get(f"/api/v1/recordings/r3/audio?ticket={ticket}")
    assert played.status == 200
    assert [e["actor"] for e in await audit(api, "recording.listen")] == ["integration:sales-sup"]
