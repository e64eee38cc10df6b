"""The wallboard's figures against hand-computed values, its day in the site's time zone, its
snapshot's cut at the last event, and the ``[wallboard]`` configuration's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from omlmedia.cli import main
from omlmedia.config import load_config
from omlmedia.storage import QueueLogRow
from omlmedia.wallboard import (
    LiveAgent,
    Threshold,
    Wallboard,
    day_span,
    parse_wallboard,
    today_figures,
)

DAY = 1_796_515_200.0  # 2026-12-06 00:00 UTC


def row(at: float, event: str, queue: str = "", agent: str = "", **data: Any) -> QueueLogRow:
    return QueueLogRow(DAY + at, event, f"c{int(at)}", queue, agent, data)


# A day of queue `support` (service level 20 s) and two agents; every figure is worked out in
# the comments.
DAY_LOG = [
    row(100, "login", agent="a1"),
    row(200, "enter", "support"),
    row(210, "answer", "support", "a1", wait=10.0),  # within 20 s
    row(300, "complete", "support", "a1", talk=90.0),
    row(400, "enter", "support"),
    row(430, "answer", "support", "a1", wait=30.0),  # after 20 s
    row(500, "transfer", "support", "a1", talk=70.0),
    row(600, "enter", "support"),
    row(605, "abandon", "support", wait=5.0),  # before 20 s: not against the service level
    row(700, "enter", "support"),
    row(740, "abandon", "support", wait=40.0),  # after 20 s: against it
    row(800, "pause", agent="a1", reason="lunch"),
    row(1000, "unpause", agent="a1"),
    row(1100, "logout", agent="a1"),
    # a2 was logged in and paused since before midnight: its first rows are an unpause and a
    # logout.
    row(50, "unpause", agent="a2"),
    row(650, "enter", "support"),
    row(660, "answer", "support", "a2", wait=10.0),
]


def test_today_figures_of_a_queue_match_the_hand_computed_ones() -> None:
    queues, _ = today_figures(
        sorted(DAY_LOG, key=lambda r: r.time),
        {"support": 20.0},
        {"a1": LiveAgent(False, False), "a2": LiveAgent(True, False, talking=40.0)},
        DAY,
        DAY + 1200,
    )
    q = queues["support"]
    assert (q["offered"], q["answered"], q["abandoned"]) == (5, 3, 2)
    # answered within 20 s: 210 (10 s) and 660 (10 s); counted: 3 answered + 2 abandoned
    # - 1 abandoned within = 4
    assert q["service_level"] == 0.5
    assert q["abandon_rate"] == 0.4  # 2 / (3 + 2)
    assert q["asa"] == pytest.approx(16.7)  # (10 + 30 + 10) / 3
    assert q["aht"] == 80.0  # (90 + 70) / 2 ended calls


def test_today_figures_of_agents_count_spans_begun_before_midnight() -> None:
    now = DAY + 1200
    _, agents = today_figures(
        sorted(DAY_LOG, key=lambda r: r.time),
        {"support": 20.0},
        {"a1": LiveAgent(False, False), "a2": LiveAgent(True, False, talking=540.0)},
        DAY,
        now,
    )
    a1 = agents["a1"]
    assert a1["calls"] == 2
    assert a1["talk"] == 160.0  # 90 + 70
    assert a1["logged_in"] == 1000.0  # 100 .. 1100
    assert a1["paused"] == 200.0  # 800 .. 1000
    assert a1["occupancy"] == 0.2  # 160 / (1000 - 200)
    a2 = agents["a2"]
    assert a2["calls"] == 1
    assert a2["logged_in"] == 1200.0  # since midnight (no login today), still logged in
    assert a2["paused"] == 50.0  # midnight .. 50 (the unpause)
    assert a2["talk"] == 540.0  # its current call so far
    assert a2["occupancy"] == round(540 / 1150, 4)


def test_an_agent_without_rows_today_takes_its_live_state_since_midnight() -> None:
    _, agents = today_figures(
        [],
        {},
        {"idle": LiveAgent(True, True), "away": LiveAgent(False, False)},
        DAY,
        DAY + 600,
    )
    assert agents["idle"]["logged_in"] == 600.0 and agents["idle"]["paused"] == 600.0
    assert agents["idle"]["occupancy"] is None  # no time available
    assert agents["away"] == {
        "calls": 0,
        "talk": 0.0,
        "logged_in": 0.0,
        "paused": 0.0,
        "occupancy": None,
    }


def test_the_day_is_the_sites_day() -> None:
    # 2026-12-06 02:00 UTC is still 2026-12-05 in Buenos Aires (UTC-3), from 03:00 UTC.
    start, day = day_span(DAY + 7200, ZoneInfo("America/Argentina/Buenos_Aires"))
    assert day == "2026-12-05" and start == DAY - 86400 + 3 * 3600
    start, day = day_span(DAY + 7200, ZoneInfo("UTC"))
    assert (start, day) == (DAY, "2026-12-06")


class FakeRuntime:
    def __init__(self, now: float) -> None:
        self.clock = now

    def now(self) -> float:
        return self.clock

    def queue_report(self, span: Any = None) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "waiting": 1 if name == "support" else 0,
                "longest_wait": 3.0,
                "members": [{"agent": "a1"}],
                "members_by_state": {"ready": 1},
            }
            for name in ("support", "sales")
        }

    def agent_report(self, span: Any = None) -> dict[str, dict[str, Any]]:
        return {"a1": {"name": "A", "state": "ready", "reason": None, "since": 5.0, "call": None}}


class FakeReader:
    def __init__(self, rows: list[QueueLogRow]) -> None:
        self.rows = rows
        self.asked: tuple[float, float] | None = None

    async def queue_log(self, since: float, until: float) -> list[QueueLogRow]:
        self.asked = (since, until)
        return [r for r in self.rows if since <= r.time < until]


async def test_the_snapshot_cuts_the_log_at_its_own_moment_and_filters_queues() -> None:
    now = DAY + 500
    flushed: list[bool] = []

    async def flush() -> int:
        flushed.append(True)
        return 0

    reader = FakeReader(
        [
            row(100, "enter", "support"),
            row(500, "enter", "support"),  # at the snapshot's moment: counted
            row(501, "enter", "support"),  # written after it: its event comes after last_id
        ]
    )
    board = Wallboard(
        runtime=FakeRuntime(now),
        reader=reader,
        flush=flush,
        last_event_id=lambda: 41,
        calls=lambda: [
            {
                "call_id": "x",
                "queue": "support",
                "campaign": "",
                "entered": now - 3,
                "caller": "555",
                "agent": None,
                "answered": None,
            },
            {
                "call_id": "y",
                "queue": "sales",
                "campaign": "",
                "entered": now - 1,
                "caller": "556",
                "agent": None,
                "answered": None,
            },
        ],
        zone=ZoneInfo("UTC"),
        service_levels=lambda: {"support": 20.0, "sales": 10.0},
        campaigns={"help": "support"},
    )
    snap = await board.snapshot(lambda queue, campaign: queue == "support")
    assert flushed == [True] and reader.asked is not None and reader.asked[0] == DAY
    assert snap["last_event_id"] == 41 and snap["now"] == now and snap["day"] == "2026-12-06"
    assert [q["queue"] for q in snap["queues"]] == ["support"]
    assert snap["queues"][0]["today"]["offered"] == 2
    assert snap["queues"][0]["campaigns"] == ["help"]
    assert [c["call_id"] for c in snap["calls"]] == ["x"]
    assert [a["agent"] for a in snap["agents"]] == ["a1"]


async def test_later_snapshots_read_only_recent_rows_and_give_the_whole_days_figures() -> None:
    """The kept tally: each snapshot reads from a minute before the previous one, never the
    whole day again, and its figures equal those computed from the whole day's log."""
    runtime = FakeRuntime(DAY)
    reader = FakeReader([])
    levels = {"support": 20.0, "sales": 10.0}
    board = Wallboard(
        runtime=runtime,
        reader=reader,
        flush=lambda: None,
        last_event_id=lambda: 0,
        calls=lambda: [],
        zone=ZoneInfo("UTC"),
        service_levels=lambda: levels,
        campaigns={},
    )
    # the day's log: a call a minute into support, its answer, its end; logins and pauses
    for minute in range(0, 300):
        at = minute * 60.0
        reader.rows.append(row(at + 1, "enter", "support"))
        reader.rows.append(row(at + 2 + minute % 30, "answer", "support", "a1", wait=minute % 30))
        reader.rows.append(row(at + 40, "complete", "support", "a1", talk=7.5))
        if minute % 50 == 0:
            reader.rows.append(row(at + 50, "pause", agent="a1", reason="break"))
            reader.rows.append(row(at + 55, "unpause", agent="a1"))
    reader.rows.sort(key=lambda r: r.time)
    live = {"a1": LiveAgent(True, False)}
    for at in (600.0, 601.0, 3000.5, 3005.0, 9000.0, 17999.0):
        runtime.clock = DAY + at
        snap = await board.snapshot(lambda queue, campaign: True)
        queues, agents = today_figures(
            [r for r in reader.rows if r.time <= DAY + at], levels, live, DAY, DAY + at
        )
        assert snap["queues"][0]["today"] == queues["support"], at
        assert snap["agents"][0]["today"] == agents["a1"], at
        assert reader.asked is not None
        if at > 601:  # read from a minute before the previous snapshot, not from midnight
            assert reader.asked[0] >= DAY + 601 - Wallboard.SETTLE
    # a queue's service level changed: the day is folded again with the new threshold
    levels = {"support": 5.0, "sales": 10.0}
    snap = await board.snapshot(lambda queue, campaign: True)
    queues, _ = today_figures(reader.rows, levels, live, DAY, DAY + 17999.0)
    assert snap["queues"][0]["today"] == queues["support"]
    assert reader.asked is not None and reader.asked[0] == DAY


def test_the_wallboard_configuration_is_checked_naming_each_key() -> None:
    config, errors = parse_wallboard(
        {
            "mos_threshold": 3.8,
            "pause_reasons": ["break", "coaching"],
            "thresholds": {
                "support": {"waiting": [3, 6], "service_level": [0.8, 0.6]},
                "*": {"longest_wait": [30, 60]},
            },
        },
        ["support", "sales"],
    )
    assert errors == []
    assert config.mos_threshold == 3.8 and config.pause_reasons == ("break", "coaching")
    assert config.for_queue("support")["waiting"] == Threshold(3, 6)
    assert config.for_queue("sales") == {"longest_wait": Threshold(30, 60)}

    _, errors = parse_wallboard(
        {
            "mos_treshold": 3,
            "quality_interval": 0,
            "pause_reasons": [],
            "thresholds": {
                "nowhere": {"waiting": [1, 2]},
                "support": {
                    "waiting": [6, 3],
                    "service_level": [0.6, 0.8],
                    "abandon_rate": [5, 10],
                    "speed": [1, 2],
                    "asa": "fast",
                },
            },
        },
        ["support"],
    )
    assert sorted(e.split(":")[0] for e in errors) == sorted(
        [
            "wallboard.mos_treshold",
            "wallboard.quality_interval",
            "wallboard.pause_reasons",
            "wallboard.thresholds.nowhere",
            "wallboard.thresholds.support.waiting",
            "wallboard.thresholds.support.service_level",
            "wallboard.thresholds.support.abandon_rate",
            "wallboard.thresholds.support.speed",
            "wallboard.thresholds.support.asa",
        ]
    ), errors


def test_check_config_names_a_bad_wallboard_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "omlmedia.toml"
    path.write_text(
        "[queues.support]\nmembers = []\n"
        "[wallboard]\nmos_threshold = 3.9\n"
        "[wallboard.thresholds.support]\nwaiting = [5, 2]\n"
    )
    assert main(["check-config", str(path)]) == 2
    assert "wallboard.thresholds.support.waiting: red (2.0) must not be below amber (5.0)" in (
        capsys.readouterr().err
    )
    path.write_text(
        "[queues.support]\nmembers = []\n"
        "[wallboard]\nmos_threshold = 3.9\npause_reasons = ['break', 'coaching']\n"
        "[wallboard.thresholds.support]\nwaiting = [2, 5]\n"
    )
    config = load_config(path)
    assert config.wallboard.mos_threshold == 3.9
    assert config.wallboard.pause_reasons == ("break", "coaching")
    assert config.wallboard.for_queue("support") == {"waiting": Threshold(2, 5)}
    assert load_config(tmp_path / "omlmedia.toml").wallboard.quality_interval == 5.0
