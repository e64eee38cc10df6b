"""Tests of omlmedia.logs: line formats, quoting, context fields, cost when disabled."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omlmedia.logs import (
    LogConfigError,
    configure_logging,
    current_context,
    event,
    kv_value,
    log_context,
)

PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s|$)')
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def parse_kv(line: str) -> dict[str, str]:
    """A strict logfmt reader: the whole line must be key=value pairs."""
    pairs = PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
    root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ("sip:alice@example.com:5060", "sip:alice@example.com:5060"),
        ("sip:a@b;tag=1", '"sip:a@b;tag=1"'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("tab\there", '"tab\\there"'),
        ("", '""'),
        ("café", "café"),
        (3, "3"),
        (0.5, "0.5"),
        (True, "true"),
        (None, "null"),
    ],
)
def test_kv_values_are_quoted_and_escaped_only_when_needed(value: object, text: str) -> None:
    assert kv_value(value) == text


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.text())
def test_any_kv_value_reads_back_exactly(value: str) -> None:
    fields = parse_kv(f"k={kv_value(value)}")
    assert fields == {"k": value}


def test_kv_line_has_time_level_logger_event_context_and_fields(stream: io.StringIO) -> None:
    configure_logging("info", "kv", stream)
    logger = logging.getLogger("omlmedia.test")
    with log_context(call_id="a84b4c76e66710@pc33", leg="a"):
        event(logger, "call_answered", status=200, reason="OK here", to='"Bob" <sip:bob@x>')
    (line,) = lines(stream)
    fields = parse_kv(line)
    assert TIMESTAMP.fullmatch(fields.pop("ts"))
    assert fields == {
        "level": "info",
        "logger": "omlmedia.test",
        "event": "call_answered",
        "call_id": "a84b4c76e66710@pc33",
        "leg": "a",
        "status": "200",
        "reason": "OK here",
        "to": '"Bob" <sip:bob@x>',
    }
    assert list(fields)[:3] == ["level", "logger", "event"]


def test_plain_logger_calls_become_msg_with_context(stream: io.StringIO) -> None:
    configure_logging("debug", "kv", stream)
    with log_context(call_id="c1"):
        logging.getLogger("omlmedia.x").debug("retransmitting %s to %s", "INVITE", "10.0.0.1:5060")
    fields = parse_kv(lines(stream)[0])
    assert fields["msg"] == "retransmitting INVITE to 10.0.0.1:5060"
    assert fields["call_id"] == "c1" and fields["level"] == "debug"


def test_json_lines_are_valid_json_with_native_types(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    logger = logging.getLogger("omlmedia.test")
    with log_context(call_id="x\ny", leg="b"):
        event(logger, "rtp_stats", lost=3, jitter=0.25, codecs=["PCMU"], ok=True, peer=None)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("handler failed")
    first, second = lines(stream)
    record = json.loads(first)
    assert TIMESTAMP.fullmatch(record.pop("ts"))
    assert record == {
        "level": "info",
        "logger": "omlmedia.test",
        "event": "rtp_stats",
        "call_id": "x\ny",
        "leg": "b",
        "lost": 3,
        "jitter": 0.25,
        "codecs": ["PCMU"],
        "ok": True,
        "peer": None,
    }
    failure = json.loads(second)
    assert failure["level"] == "error" and failure["msg"] == "handler failed"
    assert "RuntimeError: boom" in failure["exc"] and "Traceback" in failure["exc"]


def test_tracebacks_stay_on_one_kv_line(stream: io.StringIO) -> None:
    configure_logging("info", "kv", stream)
    table: dict[str, int] = {}
    try:
        table["missing"]
    except KeyError:
        logging.getLogger("omlmedia.test").exception("lookup failed")
    (line,) = lines(stream)
    assert "KeyError: 'missing'" in parse_kv(line)["exc"]


def test_a_peers_bad_http_request_is_one_warning_without_a_traceback(
    stream: io.StringIO,
) -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    configure_logging("info", "kv", stream)
    try:
        raise BadHttpMessage("Invalid header value char")
    except BadHttpMessage:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    line = stream.getvalue()
    assert line.count("\n") == 1 and "Traceback" not in line
    assert "level=warning" in line and "event=http-bad-request" in line
    assert "status=400" in line and "Invalid header value char" in line


def test_reserved_names_in_fields_do_not_overwrite_line_keys(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream)
    with log_context(level="ctx"):
        event(logging.getLogger("omlmedia.test"), "e", msg="m", ts=1, logger="l")
    record = json.loads(lines(stream)[0])
    assert record["level"] == "info" and record["logger"] == "omlmedia.test"
    assert (record["level_"], record["msg_"], record["ts_"], record["logger_"]) == (
        "ctx",
        "m",
        1,
        "l",
    )


def test_log_context_nests_and_is_restored_on_exit() -> None:
    assert current_context() == {}
    with log_context(call_id="c1", leg="a"):
        with log_context(leg="b", dialog="d"):
            assert current_context() == {"call_id": "c1", "leg": "b", "dialog": "d"}
        assert current_context() == {"call_id": "c1", "leg": "a"}
        with pytest.raises(ZeroDivisionError), log_context(leg="z"):
            1 / 0  # noqa: B018
        assert current_context() == {"call_id": "c1", "leg": "a"}
    assert current_context() == {}


async def test_log_context_is_inherited_by_tasks_and_isolated_between_them(
    stream: io.StringIO,
) -> None:
    configure_logging("info", "kv", stream)
    logger = logging.getLogger("omlmedia.test")
    gate = asyncio.Event()

    async def call(call_id: str) -> None:
        with log_context(call_id=call_id):
            await gate.wait()
            child = asyncio.ensure_future(asyncio.sleep(0, result=current_context()))
            event(logger, "tick", seen=(await child)["call_id"])

    tasks = [asyncio.create_task(call(f"c{i}")) for i in range(3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    fields = [parse_kv(line) for line in lines(stream)]
    assert sorted((f["call_id"], f["seen"]) for f in fields) == [
        ("c0", "c0"),
        ("c1", "c1"),
        ("c2", "c2"),
    ]


def test_disabled_event_formats_nothing(stream: io.StringIO) -> None:
    configure_logging("warning", "kv", stream)

    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("formatted although the level is off")

    event(logging.getLogger("omlmedia.test"), "noisy", level=logging.DEBUG, value=Exploding())
    event(logging.getLogger("omlmedia.test"), "quiet_info", value=Exploding())
    assert stream.getvalue() == ""


def test_configure_logging_twice_keeps_one_handler(stream: io.StringIO) -> None:
    other = io.StringIO()
    configure_logging("info", "kv", other)
    configure_logging("info", "json", stream)
    logging.getLogger("omlmedia.test").warning("once")
    assert other.getvalue() == ""
    assert json.loads(stream.getvalue())["msg"] == "once"


@pytest.mark.parametrize(("level", "fmt"), [("loud", "kv"), ("info", "xml"), ("", "kv")])
def test_configure_logging_rejects_unknown_level_or_format(
    stream: io.StringIO, level: str, fmt: str
) -> None:
    with pytest.raises(LogConfigError) as info:
        configure_logging(level, fmt, stream)
    assert isinstance(info.value, ValueError)
    assert str(info.value) in ("unknown log level", "unknown log format")
