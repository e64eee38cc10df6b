"""The maximum duration of a call to the ``record`` target (issue 12, low items): the
configuration key, and the end of an overlong recording with BYE and its cause, on an injected
clock."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import time
from pathlib import Path
from typing import cast

import pytest

from omlmedia.acd import AcdRuntime
from omlmedia.config import Config, ConfigError, RouteAction, load_config
from omlmedia.media_targets import MediaTargets
from omlmedia.storage import AsyncStore, Store
from omlmedia.targets import RouterStats
from queueing.config import build_config
from queueing.engine import AcdEngine
from sip.service import SipService
from sip.ua import Call, CallState
from tests.omlmedia.deskfakes import (
    HOST,
    FakeClock,
    FakeService,
    FakeTimers,
    inbound_call,
    local_pool,
)

FIELDS = "omlmedia_fields"  # where omlmedia.logs.event keeps an event's fields
TOKEN = hashlib.sha256(b"t").hexdigest()


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(f'[api]\ntoken_sha256 = "{TOKEN}"\n{text}')
    return load_config(path)


def test_the_record_duration_is_finite_by_default_and_configurable(tmp_path: Path) -> None:
    assert load(tmp_path, "").media.max_record_duration == 600.0
    assert load(tmp_path, "[media]\nmax_record_duration = 90\n").media.max_record_duration == 90


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("max_record_duration = 0", "media.max_record_duration: must be greater than 0"),
        ('max_record_duration = "10m"', "media.max_record_duration: expected a number"),
    ],
)
def test_a_bad_record_duration_names_its_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[media]\n{text}\n")
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def _targets(tmp_path: Path, service: FakeService, timers: FakeTimers) -> MediaTargets:
    config = load(tmp_path, "[media]\nmax_record_duration = 600\n")
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, data_dir=tmp_path / "data")
    )
    return MediaTargets(
        config,
        cast(SipService, service),
        local_pool(),
        HOST,
        RouterStats(),
        clock=timers.clock,
        call_later=timers.call_later,
    )


async def _answered(service: FakeService, call: Call) -> None:
    deadline = time.monotonic() + 20.0
    while ("answer", call.call_id) not in [a[:2] for a in service.ua.actions]:
        assert time.monotonic() < deadline, service.ua.actions
        await asyncio.sleep(0.01)


async def test_a_record_call_is_ended_with_bye_at_its_maximum_duration_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    timers, service = FakeTimers(clock), FakeService(clock)
    targets = _targets(tmp_path, service, timers)
    call = inbound_call("record")
    targets.take(call, RouteAction.RECORD)
    await _answered(service, call)
    timers.advance(599.0)
    assert ("hangup", call.call_id) not in service.ua.actions
    with caplog.at_level(logging.INFO, logger="omlmedia.media_targets"):
        timers.advance(2.0)
    assert ("hangup", call.call_id) in service.ua.actions  # BYE: the call was answered
    assert call.end_cause == "max-duration"
    assert service.ua.ended == [(call, "max-duration")]
    (stopped,) = [r for r in caplog.records if r.getMessage() == "recording-stopped"]
    fields = stopped.__dict__[FIELDS]
    assert (fields["reason"], fields["seconds"], fields["limit"]) == ("max-duration", 600.0, 600)
    targets.on_ended(call, "max-duration")
    assert targets.active == 0
    assert list((tmp_path / "data" / "recordings").rglob("*.wav"))


async def test_a_record_call_that_ends_earlier_leaves_no_timer_and_other_targets_have_none(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    timers, service = FakeTimers(clock), FakeService(clock)
    targets = _targets(tmp_path, service, timers)
    recorded, music = inbound_call("record"), inbound_call("moh")
    targets.take(recorded, RouteAction.RECORD)
    targets.take(music, RouteAction.MOH)
    await _answered(service, recorded)
    await _answered(service, music)
    service.ua.hangup(recorded, clock())
    targets.on_ended(recorded, "hangup")
    timers.advance(3600.0)
    assert music.state is CallState.ANSWERED and music.end_cause is None
    assert service.ua.ended == [(recorded, "hangup")]
    assert [t for t in timers.pending if not t.cancelled] == []
    targets.on_ended(music, "hangup")


async def test_a_voicemail_is_ended_with_bye_at_the_maximum_duration_and_its_record_says_why(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    timers, service, pool = FakeTimers(clock), FakeService(clock), local_pool()
    store = AsyncStore(Store(tmp_path / "omlmedia.db"), flush_interval=0.05)
    engine = AcdEngine(
        build_config(
            {
                "agents": {"agent1": {}},
                "queues": {
                    "support": {
                        "members": ["agent1"],
                        "max_wait": 5,
                        "overflow": {"record": "support-box"},
                    }
                },
            }
        ),
        rng=random.Random(1),
    )
    acd = AcdRuntime(
        engine,
        pool,
        HOST,
        service=cast(SipService, service),
        store=store,
        recordings=tmp_path / "recordings",
        clock=clock,
        call_later=timers.call_later,
        max_record_duration=120.0,
    )
    try:
        call = inbound_call("support")
        acd.enter(call, "support")
        deadline = time.monotonic() + 20.0
        while call.call_id not in acd.callers:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        timers.advance(6.0)  # max_wait: overflow to the mailbox, after the beep
        caller = acd.callers[call.call_id]
        while caller.mailbox is None:
            assert time.monotonic() < deadline + 5.0, "the mailbox never started recording"
            await asyncio.sleep(0.01)
        timers.advance(119.0)
        assert ("hangup", call.call_id) not in service.ua.actions
        timers.advance(2.0)
        assert ("hangup", call.call_id) in service.ua.actions
        for ended, cause in service.ua.ended:
            acd.on_ended(ended, cause)
        record = acd.records[call.call_id]
        assert (record.hangup_by, record.cause) == ("max-duration", "max-duration")
        mailbox = str(tmp_path / "recordings" / "mailboxes" / "support-box")
        assert record.recording.startswith(mailbox) and record.recording.endswith(".wav")
    finally:
        acd.close()
        pool.close()
        await store.close()
