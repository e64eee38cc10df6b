"""A requeued call's recordings are never overwritten: the caller answered by one agent whose page
goes away mid-call, requeued and answered by another, leaves two Ogg/Opus files (the second
``-2``), both in the call's record in order, and both play through the recordings API, each with
its own playback ticket. A recorder never opens an existing file (`reserve_segment`)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.accounts import AccountBook
from omlmedia.api import create_app
from omlmedia.config import Campaign
from omlmedia.recordings import recording_file, reserve_segment, segments, sweep
from omlmedia.reports_api import CLOCK_KEY
from omlmedia.storage import CallRecord, Store

from .deskfakes import inbound_call, until
from .test_desk import World
from .test_recordings import AUTH, site_config

CAMPAIGN = Campaign("support", "sales", recording=True)


def decoded_samples(path: Path) -> int:
    """How many stereo samples the Ogg/Opus file decodes to."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus" and stream.codec_context.channels == 2
        return sum(frame.samples for frame in container.decode(stream))


def talk(world: World, agent: str, frames: int, frequency: float) -> None:
    """`frames` 20 ms frames of a tone from the caller (and silence from the agent) through the
    agent's attached call: what the recorder is given on the call's own path."""
    ac = world.desk._attached[agent]
    assert ac.port is not None and ac.port.on_frame is not None and ac.audio is not None
    size = ac.port.rate // 50
    for index in range(frames):
        t = (np.arange(size) + index * size) / ac.port.rate
        ac.audio.sink(np.zeros(size, dtype=np.int16))
        ac.port.on_frame((8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16))


@dataclasses.dataclass
class Requeued:
    record: CallRecord
    agents: tuple[str, str]
    root: Path
    database: Path


@pytest.fixture
async def requeued(tmp_path: Path) -> AsyncIterator[Requeued]:
    """One call through the desk and the ACD (fakes for SIP and the pages, real recorder and
    SQLite store): answered, its agent's page closed mid-call, requeued, answered by the other
    agent, then the caller hangs up."""
    database = tmp_path / "omlmedia.db"
    root = tmp_path / "recordings"
    world = World()
    store = Store(database)
    world.acd.store = store  # type: ignore[assignment]
    world.desk.recordings = root
    try:
        await world.ready("agent1", "agent2")
        call = inbound_call("support")
        world.acd.enter(call, "sales", CAMPAIGN)
        await until(lambda: call.call_id in world.acd.callers)
        first = next(a for a in ("agent1", "agent2") if world.hub.call_state(a, call.call_id))
        other = "agent2" if first == "agent1" else "agent1"
        await world.desk.answer(first, call.call_id)
        talk(world, first, 50, 440.0)
        await world.hub.logout(first, "closed")  # the page went away: requeued
        assert call.call_id in world.acd.callers
        assert world.hub.call_state(other, call.call_id) == "ringing"
        await world.desk.answer(other, call.call_id)
        recorder = world.desk._attached[other].recorder
        assert recorder is not None
        talk(world, other, 25, 660.0)
        recorder.pause()  # PCI: 0.5 s into the second segment, for 0.5 s
        talk(world, other, 25, 660.0)
        recorder.resume()
        talk(world, other, 25, 660.0)
        world.caller_hangs_up(call)
        world.timers.advance(0)  # the pauses go to the record once it is written
        store.flush()
        record = world.acd.records[call.call_id]
        yield Requeued(record, (first, other), root, database)
    finally:
        world.close()
        store.close()


async def test_a_requeued_call_keeps_both_agents_recordings_in_its_record(
    requeued: Requeued,
) -> None:
    record = requeued.record
    files = segments(record)
    assert len(files) == 2
    one, two = (Path(f) for f in files)
    assert two.name == one.name.removesuffix(".opus") + "-2.opus"
    assert record.recording == str(one)  # the first, as before
    agents = [leg["agent"] for leg in record.legs if leg.get("role") == "segment"]
    assert agents == list(requeued.agents)
    # Both are whole Ogg/Opus files with their own conversation (1 s and 1.5 s).
    assert 0.9 * 48000 <= decoded_samples(one) <= 1.1 * 48000
    assert 1.4 * 48000 <= decoded_samples(two) <= 1.6 * 48000
    assert recording_file(record, requeued.root, 2) == two.resolve()
    # The stored record (what the API reads) lists them too, in order.
    store = Store(requeued.database)
    try:
        stored = store.call_record(record.call_id)
    finally:
        store.close()
    assert stored is not None and segments(stored) == files


async def test_each_segment_plays_through_the_api_with_its_own_ticket(
    requeued: Requeued, tmp_path: Path
) -> None:
    record = requeued.record
    config = site_config(tmp_path)
    book = AccountBook(requeued.database, config.api.token_matches)
    app = create_app(config, dict, database=requeued.database, accounts=book)
    for sub in app._subapps:
        sub[CLOCK_KEY] = lambda: record.start + 60
    call = record.call_id
    try:
        async with TestClient(TestServer(app)) as client:
            span = f"since={record.start - 10}&until={record.start + 3600}"
            found = await client.get(f"/api/v1/recordings?{span}", headers=AUTH)
            body: Any = await found.json()
            assert found.status == 200, body
            (item,) = body["recordings"]
            assert [(s["segment"], s["agent"], s["gaps"]) for s in item["segments"]] == [
                (1, requeued.agents[0], []),
                (2, requeued.agents[1], [{"start": 0.5, "end": 1.0}]),  # its own pause
            ]
            assert item["gaps"] == []  # the call's (first) recording was not paused
            files = {name: Path(name).read_bytes() for name in segments(record)}  # noqa: ASYNC240
            played = []
            for view, name in zip(item["segments"], segments(record), strict=True):
                issued = await client.post(
                    f"/api/v1/recordings/{call}/ticket?segment={view['segment']}", headers=AUTH
                )
                ticket = await issued.json()
                assert issued.status == 201, ticket
                audio = await client.get(ticket["audio"])  # no token: an <audio src>
                data = await audio.read()
                assert audio.status == 200 and data == files[name]
                played.append((view["segment"], ticket["ticket"]))
            # A segment's ticket opens that segment only.
            (_, first), _ = played
            other = await client.get(f"/api/v1/recordings/{call}/audio?ticket={first}&segment=2")
            assert other.status == 401
            # With the token, each segment downloads and each listen is audited with its file.
            whole = await client.get(f"/api/v1/recordings/{call}/audio?segment=2", headers=AUTH)
            assert await whole.read() == files[segments(record)[1]]
            missing = await client.get(f"/api/v1/recordings/{call}/audio?segment=3", headers=AUTH)
            assert missing.status == 404
            for wrong in ("x", "0", "%C2%B2", "9" * 5000, ""):
                bad = await client.get(
                    f"/api/v1/recordings/{call}/audio?segment={wrong}", headers=AUTH
                )
                problem = await bad.json()
                assert bad.status == 400 and problem["errors"][0]["field"] == "segment", wrong
            log = await client.get("/api/v1/audit?action=recording.listen", headers=AUTH)
            entries = (await log.json())["entries"]
            one, two = (Path(f).name for f in segments(record))
            listens = sorted((e["after"]["file"], e["after"]["segment"]) for e in entries)
            assert listens == sorted([(one, "1"), (two, "2"), (two, "2")])  # 2 tickets, 1 GET
    finally:
        book.close()


def test_a_recorder_never_opens_an_existing_file(tmp_path: Path) -> None:
    taken = [reserve_segment(tmp_path, "2026/12/06/support-call") for _ in range(3)]
    assert taken == [
        "2026/12/06/support-call.opus",
        "2026/12/06/support-call-2.opus",
        "2026/12/06/support-call-3.opus",
    ]
    (tmp_path / "x-2.opus").write_bytes(b"kept")  # another node took -2 first
    (tmp_path / "x.opus").write_bytes(b"kept")
    assert reserve_segment(tmp_path, "x") == "x-3.opus"
    assert (tmp_path / "x-2.opus").read_bytes() == b"kept"


def test_retention_deletes_every_segment_of_a_call(tmp_path: Path) -> None:
    files = [tmp_path / reserve_segment(tmp_path, "support-c") for _ in range(2)]
    legs = tuple({"role": "segment", "file": str(f), "agent": "agent1"} for f in files)
    old = CallRecord("c", 0.0, 10.0, 1.0, campaign="support", recording=str(files[0]), legs=legs)
    deleted = sweep([old], {"support": 1}, tmp_path, now=10 * 86400.0)
    assert [d.path for d in deleted] == [f.resolve() for f in files]
    assert not any(f.exists() for f in files)
