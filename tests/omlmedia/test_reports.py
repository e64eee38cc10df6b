"""Reports over a scripted day: the ACD engine driven on a simulated clock, its queue log and its
agents' states stored as the server stores them (`omlmedia.acd`, `omlmedia.desk`), call records
written, then every report read back through the API and checked against figures computed by
hand; the CSV of each report holds the same cells as its JSON; the scope keeps a supervisor to
its campaigns."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import random
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from omlmedia.accounts import AccountBook
from omlmedia.api import create_app
from omlmedia.authz import Identity, Role
from omlmedia.config import ApiConfig, Config, SiteConfig, load_demo_config
from omlmedia.events import AGENT_STATE, Event
from omlmedia.reports import (
    StateChange,
    agent_activity,
    csv_cell,
    day_span,
    intervals,
    queue_intervals,
)
from omlmedia.reports_api import CLOCK_KEY
from omlmedia.storage import CallRecord, QueueLogRow, Store
from queueing.config import build_config
from queueing.engine import AcdEngine
from queueing.events import AgentStateChanged, QueueLogEntry

TOKEN = "reports-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONE = "America/Argentina/Buenos_Aires"
DAY = date(2026, 12, 7)
DAY_START, DAY_END = day_span(DAY, ZoneInfo(ZONE))
T0 = DAY_START + 9 * 3600  # 09:00 at the site


class Day:
    """The engine on a simulated clock, writing what the server writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = AcdEngine(
            build_config(
                {
                    "agents": {"agent1": {}, "agent2": {}},
                    "queues": {
                        "support": {
                            "members": ["agent1", "agent2"],
                            "strategy": "linear",
                            "ring_timeout": 60,
                            "wrapup": 10,
                            "service_level": 20,
                            "join_empty": True,
                        }
                    },
                }
            ),
            rng=random.Random(1),
        )
        self.next_id = 0
        self.now = 0.0

    def at(self, t: float) -> AcdEngine:
        """Fire the timers due by `t`, then let the caller act at `t`."""
        while (due := self.engine.get_timer()) is not None and due <= t:
            self.engine.handle_timer(due)
            self.drain()
        self.now = t
        return self.engine

    def drain(self) -> None:
        for ev in self.engine.events():
            if isinstance(ev, QueueLogEntry):  # as omlmedia.acd.AcdRuntime._on_event
                self.store.append(
                    QueueLogRow(
                        ev.time, ev.event.value, ev.call_id, ev.queue, ev.agent, dict(ev.data)
                    )
                )
            elif isinstance(ev, AgentStateChanged):  # as omlmedia.desk.Desk.engine_state
                self.next_id += 1
                data = {"state": ev.state.value, "reason": ev.reason or None}
                row = Event(self.next_id, ev.since, AGENT_STATE, agent=ev.agent, data=data)
                self.store.append_event(row.row())


def cdr(call_id: str, enter: float, end: float, answer: float | None, **more: Any) -> CallRecord:
    return CallRecord(
        call_id,
        enter,
        end,
        answer,
        caller=more.pop("caller", "+5491155550000"),
        campaign=more.pop("campaign", "support"),
        queue=more.pop("queue", "support"),
        **more,
    )


def script(store: Store) -> None:
    """The day (times after 09:00 at the site):

    agent1 logs in ready at 0; agent2 logs in paused for "training".
    c1 enters at 100, rings agent1, answered at 104 (wait 4), ends at 204 (talk 100), wrap-up 10.
    agent1 pauses for "lunch" at 300; agent2 unpauses at 600.
    c2 enters at 700, rings agent2, answered at 730 (wait 30), ends at 830 (talk 100).
    c3 enters at 760, nobody free, abandons at 790 (wait 30, after the 20 s threshold).
    -- an hour later (10:00 interval) --
    agent1 back from lunch at 4500.
    c4 enters at 4550, agent1 answers at 4555 (wait 5), ends at 4655 (talk 100).
    c5 enters at 4600, agent2 answers at 4610 (wait 10), ends at 4670 (talk 60).
    c6 enters at 4615, nobody free, abandons at 4620 (wait 5, within the threshold).
    Both log out at 4800. And c0 entered the day before (23:59:30) and abandoned at 00:00:10:
    not a caller of this day.
    """
    day = Day(store)
    e = day.at(DAY_START - 30)
    e.caller_enter("c0", "support", DAY_START - 30)
    day.drain()
    day.at(DAY_START + 10).caller_abandon("c0", DAY_START + 10)
    day.drain()
    steps: list[tuple[float, Any]] = [
        (0, lambda e, t: e.agent_login("agent1", t)),
        (0, lambda e, t: e.agent_login("agent2", t, paused_reason="training")),
        (100, lambda e, t: e.caller_enter("c1", "support", t, caller_number="+5491155550001")),
        (104, lambda e, t: e.offer_answered("c1", "agent1", t)),
        (204, lambda e, t: e.call_completed("c1", "agent1", t)),
        (300, lambda e, t: e.agent_pause("agent1", "lunch", t)),
        (600, lambda e, t: e.agent_unpause("agent2", t)),
        (700, lambda e, t: e.caller_enter("c2", "support", t)),
        (730, lambda e, t: e.offer_answered("c2", "agent2", t)),
        (760, lambda e, t: e.caller_enter("c3", "support", t)),
        (790, lambda e, t: e.caller_abandon("c3", t)),
        (830, lambda e, t: e.call_completed("c2", "agent2", t)),
        (4500, lambda e, t: e.agent_unpause("agent1", t)),
        (4550, lambda e, t: e.caller_enter("c4", "support", t)),
        (4555, lambda e, t: e.offer_answered("c4", "agent1", t)),
        (4600, lambda e, t: e.caller_enter("c5", "support", t)),
        (4610, lambda e, t: e.offer_answered("c5", "agent2", t)),
        (4615, lambda e, t: e.caller_enter("c6", "support", t)),
        (4620, lambda e, t: e.caller_abandon("c6", t)),
        (4655, lambda e, t: e.call_completed("c4", "agent1", t)),
        (4670, lambda e, t: e.call_completed("c5", "agent2", t)),
        (4800, lambda e, t: e.agent_logout("agent1", t)),
        (4800, lambda e, t: e.agent_logout("agent2", t)),
    ]
    for offset, act in steps:
        t = T0 + offset
        assert act(day.at(t), t) is not False, offset
        day.drain()
    day.at(T0 + 10_000)
    quality = (
        {"role": "caller", "codec": "PCMU", "packets": 990, "lost": 10, "jitter_ms": 3.5,
         "rtt_ms": 40.0, "mos": 4.2},
        {"role": "agent", "codec": "opus", "packets": 1000, "lost": 0, "jitter_ms": 1.0,
         "rtt_ms": 20.0, "mos": 4.4},
    )  # fmt: skip
    records = [
        cdr("c0", DAY_START - 30, DAY_START + 10, None),
        cdr("c1", T0 + 100, T0 + 204, T0 + 104, agent="agent1", disposition="solved",
            legs=quality, caller="+5491155550001"),
        cdr("c2", T0 + 700, T0 + 830, T0 + 730, agent="agent2", disposition="escalated"),
        cdr("c3", T0 + 760, T0 + 790, None),
        cdr("c4", T0 + 4550, T0 + 4655, T0 + 4555, agent="agent1", disposition="solved"),
        cdr("c5", T0 + 4600, T0 + 4670, T0 + 4610, agent="agent2"),
        cdr("c6", T0 + 4615, T0 + 4620, None),
        # another campaign's call, out of a "support" supervisor's scope
        cdr("s1", T0 + 200, T0 + 260, T0 + 210, agent="agent2", campaign="sales",
            queue="sales", disposition="sale"),
    ]  # fmt: skip
    for record in records:
        store.call_ended(record)
    store.flush()


def site_config(data_dir: Path) -> Config:
    demo = load_demo_config()
    return dataclasses.replace(
        demo,
        api=ApiConfig(hashlib.sha256(TOKEN.encode()).hexdigest()),
        site=SiteConfig(ZONE),
        server=dataclasses.replace(demo.server, data_dir=data_dir),
    )


@dataclasses.dataclass
class Api:
    client: TestClient[Any, Any]
    book: AccountBook
    supervisor: str
    """A token of a supervisor of the "support" campaign only."""

    async def get(self, path: str, status: int = 200, token: str = TOKEN, **headers: str) -> Any:
        response = await self.client.get(
            path, headers={"Authorization": f"Bearer {token}", **headers}
        )
        if response.content_type == "text/csv":
            body: Any = await response.text()
        else:
            body = await response.json()
        assert response.status == status, body
        return body


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    database = tmp_path / "omlmedia.db"
    store = Store(database)
    script(store)
    store.close()
    config = site_config(tmp_path)
    book = AccountBook(database, config.api.token_matches)
    token, _ = book.create_token(
        Identity("test", Role.ADMIN),
        integration="support-supervisor",
        role=Role.SUPERVISOR,
        scope=frozenset({"support"}),
    )
    app = create_app(config, dict, database=database, accounts=book)
    for sub in app._subapps:
        sub[CLOCK_KEY] = lambda: T0 + 20_000
    async with TestClient(TestServer(app)) as client:
        yield Api(client, book, token)
    book.close()


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


# -- the figures ---------------------------------------------------------------------------------


async def test_agent_activity_of_the_day_is_what_the_script_did(api: Api) -> None:
    report = await api.get(f"/api/v1/reports/agents?day={DAY}")
    assert report["timezone"] == ZONE
    assert (report["since"], report["until"]) == (DAY_START, DAY_END)
    assert report["from"] == "2026-12-07T00:00:00-03:00"
    assert report["columns"] == [
        "agent", "logged_in", "ready", "ringing", "talk", "wrapup", "paused",
        "paused:lunch", "paused:training", "occupancy", "calls", "aht",
    ]  # fmt: skip
    rows = by(report["rows"], "agent")
    # agent1: ready 0-100, 214-300, 4500-4550, 4665-4800 = 371; ringing 4 + 5; talk 100 + 100;
    # wrap-up 10 + 10; lunch 300-4500 = 4200; occupancy (200 + 20 + 9) / (371 + 9 + 220).
    assert rows["agent1"] == {
        "agent": "agent1",
        "logged_in": 4800.0,
        "ready": 371.0,
        "ringing": 9.0,
        "talk": 200.0,
        "wrapup": 20.0,
        "paused": 4200.0,
        "paused:lunch": 4200.0,
        "paused:training": 0.0,
        "occupancy": round(229 / 600, 4),
        "calls": 2,
        "aht": 110.0,
    }
    # agent2: training 0-600; ready 600-700, 840-4600, 4680-4800 = 3980; ringing 30 + 10;
    # talk 100 + 60; wrap-up 10 + 10; occupancy (160 + 20 + 40) / (3980 + 40 + 180).
    assert rows["agent2"] == {
        "agent": "agent2",
        "logged_in": 4800.0,
        "ready": 3980.0,
        "ringing": 40.0,
        "talk": 160.0,
        "wrapup": 20.0,
        "paused": 600.0,
        "paused:lunch": 0.0,
        "paused:training": 600.0,
        "occupancy": round(220 / 4200, 4),
        "calls": 2,
        "aht": 90.0,
    }
    assert rows["agent3"]["logged_in"] == 0.0 and rows["agent3"]["calls"] == 0


async def test_a_span_cutting_a_state_counts_only_its_part(api: Api) -> None:
    # 09:05 to 10:00: agent1 is on lunch from 300 s and stays paused past the end.
    report = await api.get(f"/api/v1/reports/agents?since={T0 + 300}&until={T0 + 3600}")
    row = by(report["rows"], "agent")["agent1"]
    assert row["paused:lunch"] == 3300.0 and row["logged_in"] == 3300.0 and row["calls"] == 0


async def test_queue_by_hour_of_the_site(api: Api) -> None:
    report = await api.get(f"/api/v1/reports/queues?day={DAY}&interval=60")
    assert report["interval"] == "60"
    support = [r for r in report["rows"] if r["queue"] == "support"]
    assert len(support) == 24 and support[0]["start"] == "2026-12-07T00:00:00-03:00"
    nine, ten = support[9], support[10]
    assert nine["start"] == "2026-12-07T09:00:00-03:00"
    assert nine["end"] == "2026-12-07T10:00:00-03:00"
    # 09:00: c1 (wait 4), c2 (wait 30) answered, c3 abandoned after 30 s. SL 1 / (2 + 1);
    # ASA (4 + 30) / 2; AHT: talk + wrap-up, (110 + 110) / 2; longest wait 30.
    assert {k: nine[k] for k in report["columns"][3:]} == {
        "offered": 3,
        "answered": 2,
        "abandoned": 1,
        "service_level": 0.3333,
        "asa": 17.0,
        "aht": 110.0,
        "longest_wait": 30.0,
    }
    # 10:00: c4 (wait 5), c5 (wait 10) answered, c6 abandoned within 5 s: SL 2 / 2;
    # AHT (100 + 10 + 60 + 10) / 2.
    assert {k: ten[k] for k in report["columns"][3:]} == {
        "offered": 3,
        "answered": 2,
        "abandoned": 1,
        "service_level": 1.0,
        "asa": 7.5,
        "aht": 90.0,
        "longest_wait": 10.0,
    }
    quiet = support[0]  # c0 entered the day before: not in this day's 00:00 interval
    assert quiet["offered"] == 0 and quiet["service_level"] is None and quiet["asa"] is None


async def test_queue_by_day_and_by_quarter_hour(api: Api) -> None:
    day = await api.get(f"/api/v1/reports/queues?day={DAY}&interval=day&queue=support")
    assert len(day["rows"]) == 1
    assert {k: day["rows"][0][k] for k in day["columns"][3:]} == {
        "offered": 6,
        "answered": 4,
        "abandoned": 2,
        "service_level": 0.6,  # 3 within 20 s / (4 answered + 1 abandoned after 20 s)
        "asa": 12.25,  # (4 + 30 + 5 + 10) / 4
        "aht": 100.0,  # (110 + 110 + 110 + 70) / 4
        "longest_wait": 30.0,
    }
    quarters = await api.get(f"/api/v1/reports/queues?day={DAY}&interval=15&queue=support")
    assert len(quarters["rows"]) == 96
    offered = {r["start"][11:16]: r["offered"] for r in quarters["rows"] if r["offered"]}
    assert offered == {"09:00": 3, "10:15": 3}


async def test_campaign_rows_come_from_the_call_records(api: Api) -> None:
    report = await api.get(f"/api/v1/reports/queues?day={DAY}&interval=day&by=campaign")
    rows = by(report["rows"], "campaign")
    assert report["columns"][2] == "campaign"
    assert rows["support"]["offered"] == 6 and rows["support"]["answered"] == 4
    assert rows["sales"]["offered"] == 0  # its call never went through the queue log


async def test_dispositions_per_campaign(api: Api) -> None:
    report = await api.get(f"/api/v1/reports/dispositions?day={DAY}")
    assert report["rows"] == [
        {"campaign": "sales", "disposition": "sale", "calls": 1, "share": 1.0},
        {"campaign": "support", "disposition": "solved", "calls": 2, "share": 0.5},
        {"campaign": "support", "disposition": "", "calls": 1, "share": 0.25},
        {"campaign": "support", "disposition": "escalated", "calls": 1, "share": 0.25},
    ]


async def test_call_detail_has_the_legs_quality_and_the_wait(api: Api) -> None:
    report = await api.get(f"/api/v1/reports/calls?day={DAY}&campaign=support")
    rows = by(report["rows"], "call_id")
    assert list(rows) == ["c1", "c2", "c3", "c4", "c5", "c6"]
    c1 = rows["c1"]
    assert c1["start"] == "2026-12-07T09:01:40-03:00"
    assert (c1["wait"], c1["talk"], c1["duration"]) == (4.0, 100.0, 104.0)
    assert (c1["caller_codec"], c1["caller_loss_percent"], c1["caller_mos"]) == ("PCMU", 1.0, 4.2)
    assert (c1["agent_codec"], c1["agent_jitter_ms"], c1["agent_mos"]) == ("opus", 1.0, 4.4)
    assert c1["min_mos"] == 4.2 and c1["recording"] is False
    assert rows["c3"]["wait"] == 30.0 and rows["c3"]["talk"] is None


# -- CSV -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "agents",
        "queues?interval=30",
        "queues?interval=day&by=campaign",
        "dispositions",
        "calls",
    ],
)
async def test_the_csv_holds_the_same_cells_as_the_json(api: Api, path: str) -> None:
    sep = "&" if "?" in path else "?"
    url = f"/api/v1/reports/{path}{sep}day={DAY}"
    report = await api.get(url)
    for text in (
        await api.get(url + "&format=csv"),
        await api.get(url, Accept="text/csv"),
    ):
        table = list(csv.reader(io.StringIO(text, newline="")))
        assert table[0] == report["columns"]
        assert table[1:] == [
            [csv_cell(row[c]) for c in report["columns"]] for row in report["rows"]
        ]
        assert len(table) == len(report["rows"]) + 1 > 1


async def test_csv_is_served_as_an_attachment(api: Api) -> None:
    response = await api.client.get(f"/api/v1/reports/agents?day={DAY}&format=csv", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    disposition = response.headers["Content-Disposition"]
    assert disposition == 'attachment; filename="agents-2026-12-07.csv"'


def test_a_cell_a_spreadsheet_would_run_is_defused_but_a_phone_number_is_not() -> None:
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("+5491155550001") == "+5491155550001"
    assert csv_cell("-cmd") == "'-cmd"
    assert (csv_cell(None), csv_cell(1.5), csv_cell(True), csv_cell(3)) == ("", "1.5", "true", "3")


# -- scope and bad input ---------------------------------------------------------------------


async def test_a_supervisor_sees_only_its_campaigns(api: Api) -> None:
    token = api.supervisor
    dispositions = await api.get(f"/api/v1/reports/dispositions?day={DAY}", token=token)
    assert {r["campaign"] for r in dispositions["rows"]} == {"support"}
    calls = await api.get(f"/api/v1/reports/calls?day={DAY}", token=token)
    assert "s1" not in {r["call_id"] for r in calls["rows"]} and len(calls["rows"]) == 6
    queues = await api.get(f"/api/v1/reports/queues?day={DAY}&interval=day", token=token)
    assert {r["queue"] for r in queues["rows"]} == {"support"}
    agents = await api.get(f"/api/v1/reports/agents?day={DAY}", token=token)
    assert {r["agent"] for r in agents["rows"]} == {"agent1", "agent2", "agent3"}
    for path in ("dispositions?campaign=sales", "queues?queue=sales", "calls?campaign=sales"):
        problem = await api.get(f"/api/v1/reports/{path}&day={DAY}", 403, token=token)
        assert problem["missing_scope"] == "sales"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("day=2026-13-01", "day"),
        ("day=yesterday", "day"),
        ("day=2026-12-07&days=0", "days"),
        ("day=2026-12-07&days=93", "days"),
        ("days=2", "days"),
        ("day=2026-12-07&since=1", "day"),
        ("since=10", "until"),
        ("since=10&until=5", "until"),
        ("since=0&until=8000000000", "until"),
        ("since=abc&until=5", "since"),
        ("day=2026-12-07&interval=45", "interval"),
        ("day=2026-12-07&by=agent", "by"),
        ("day=2026-12-07&format=xml", "format"),
        ("day=9999-12-31", "day"),
        ("day=9999-12-30", "day"),
        ("day=0001-01-01", "day"),
        ("since=100000000000000000&until=100000000000000010", "until"),
    ],
)
async def test_a_bad_parameter_is_a_400_naming_it(api: Api, query: str, field: str) -> None:
    problem = await api.get(f"/api/v1/reports/queues?{query}", 400)
    assert [e["field"] for e in problem["errors"]] == [field], problem


async def test_without_a_day_the_report_is_of_the_sites_today(api: Api) -> None:
    report = await api.get("/api/v1/reports/dispositions")
    assert (report["since"], report["until"]) == (DAY_START, DAY_END)


def test_site_intervals_follow_its_clock_and_its_short_and_long_days() -> None:
    madrid = ZoneInfo("Europe/Madrid")
    start, end = day_span(date(2026, 3, 29), madrid)  # clocks go forward: 23 hours
    assert end - start == 23 * 3600
    assert len(intervals(start, end, 3600, madrid)) == 23
    start, end = day_span(date(2026, 10, 25), madrid)  # clocks go back: 25 hours
    assert len(intervals(start, end, 3600, madrid)) == 25
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: hours still start at :00 at the site
    start, end = day_span(date(2026, 12, 7), kolkata)
    spans = intervals(start + 100, end, 3600, kolkata)
    assert spans[0] == (start + 100, start + 3600) and len(spans) == 24


async def test_a_call_that_started_the_day_before_counts_in_its_campaign_the_day_it_queued(
    tmp_path: Path,
) -> None:
    database = tmp_path / "omlmedia.db"
    store = Store(database)
    store.append(QueueLogRow(DAY_START + 5, "enter", "late", "support"))
    store.append(QueueLogRow(DAY_START + 8, "abandon", "late", "support", data={"wait": 3.0}))
    store.call_ended(cdr("late", DAY_START - 20, DAY_START + 8, None))  # IVR before midnight
    store.close()
    app = create_app(site_config(tmp_path), dict, database=database)
    async with TestClient(TestServer(app)) as client:
        response = await client.get(
            f"/api/v1/reports/queues?day={DAY}&interval=day&by=campaign", headers=AUTH
        )
        rows = by((await response.json())["rows"], "campaign")
    assert (rows["support"]["offered"], rows["support"]["abandoned"]) == (1, 1)


# -- properties --------------------------------------------------------------------------------

STATES = ["ready", "ringing", "on-call", "wrapup", "paused", "logged-out"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 10_000), st.sampled_from(STATES), st.sampled_from(["", "x", "y"])),
        max_size=30,
    ),
    st.floats(0, 10_000),
    st.floats(0, 10_000),
)
def test_an_agents_states_add_up_to_its_logged_in_time(
    steps: list[tuple[float, str, str]], a: float, b: float
) -> None:
    since, until = min(a, b), max(a, b)
    changes = [StateChange(t, "ag", state, reason) for t, state, reason in sorted(steps)]
    (row,) = agent_activity(changes, since, until, agents=["ag"]).rows
    states = row["ready"] + row["ringing"] + row["talk"] + row["wrapup"] + row["paused"]
    assert abs(states - row["logged_in"]) < 0.01
    assert 0 <= row["logged_in"] <= until - since + 0.001
    reasons = sum(v for k, v in row.items() if k.startswith("paused:"))
    assert abs(reasons - row["paused"]) < 0.01
    assert row["occupancy"] is None or 0 <= row["occupancy"] <= 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 86_399), st.floats(0, 600), st.sampled_from(["answer", "abandon", ""])
        ),
        max_size=40,
    )
)
def test_the_intervals_of_a_day_add_up_to_the_day(calls: list[tuple[float, float, str]]) -> None:
    zone = ZoneInfo(ZONE)
    log = []
    for i, (offset, wait, outcome) in enumerate(calls):
        enter = DAY_START + offset
        log.append(QueueLogRow(enter, "enter", f"c{i}", "q"))
        if outcome:
            log.append(QueueLogRow(enter + wait, outcome, f"c{i}", "q", data={"wait": wait}))
    log.sort(key=lambda row: row.time)
    day = queue_intervals(log, DAY_START, DAY_END, "day", zone, names=["q"]).rows
    for interval in ("15", "30", "60"):
        rows = queue_intervals(log, DAY_START, DAY_END, interval, zone, names=["q"]).rows
        for key in ("offered", "answered", "abandoned"):
            assert sum(r[key] for r in rows) == day[0][key]
        longest = [r["longest_wait"] for r in rows if r["longest_wait"] is not None]
        assert max(longest, default=None) == day[0]["longest_wait"]
    assert day[0]["offered"] == len(calls)


async def test_a_restart_ends_the_states_the_last_run_left_open_when_it_was_last_heard_of(
    tmp_path: Path,
) -> None:
    from omlmedia.server import Server

    store = Store(tmp_path / "omlmedia.db")
    for ident, (t, agent, state) in enumerate(
        [(100.0, "agent1", "ready"), (120.0, "agent2", "ready"), (150.0, "agent2", "logged-out")],
        start=1,
    ):
        row = Event(ident, t, AGENT_STATE, agent=agent, data={"state": state, "reason": None})
        store.append_event(row.row())
    store.append_event(Event(4, 200.0, "queue.entered", queue="support").row())
    store.close()
    demo = load_demo_config()
    server = Server(
        dataclasses.replace(demo, server=dataclasses.replace(demo.server, data_dir=tmp_path))
    )
    log = server._open_events()
    try:
        (ended,) = [ev for ev in log.recent if ev.type == AGENT_STATE]
        assert (ended.agent, ended.time) == ("agent1", 200.0)
        assert ended.data == {"state": "logged-out", "reason": "server-restart"}
        assert server.store is not None
        await server.store.flush()
    finally:
        server.pool.close()
        await log.close()
        if server.webhooks is not None:
            await server.webhooks.close()
        assert server.store is not None
        await server.store.close()
    reader = Store(tmp_path / "omlmedia.db")
    from omlmedia.reports_api import state_changes

    (row,) = [
        r
        for r in agent_activity(state_changes(reader, 0, 1000), 0, 1000).rows
        if r["agent"] == "agent1"
    ]
    reader.close()
    assert row["logged_in"] == 100.0  # 100 to 200, not to the end of the span


def test_an_agents_state_before_a_span_is_its_latest_by_time_not_by_id(tmp_path: Path) -> None:
    # Nodes sharing a database draw event ids in blocks: a later state may carry a lower id.
    from omlmedia.reports_api import last_states

    store = Store(tmp_path / "omlmedia.db")
    for ident, t, state in [(5001, 100.0, "ready"), (12, 160.0, "paused"), (5002, 130.0, "ready")]:
        row = Event(ident, t, AGENT_STATE, agent="agent1", data={"state": state, "reason": None})
        store.append_event(row.row())
    store.close()
    store = Store(tmp_path / "omlmedia.db")
    try:
        (change,) = last_states(store, 1000.0)
        assert (change.time, change.state) == (160.0, "paused")
        (earlier,) = last_states(store, 150.0)
        assert (earlier.time, earlier.state) == (130.0, "ready")
    finally:
        store.close()
