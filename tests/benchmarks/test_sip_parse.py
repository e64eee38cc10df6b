"""benchmarks/sip_parse.py: its messages are a valid trunk call and what it times works."""

from __future__ import annotations

import pytest

from benchmarks import sip_parse
from sip.message import Request, parse_message
from sip.sdp import SessionDescription


def test_the_benchmark_messages_are_one_well_formed_call_each() -> None:
    for call in (0, 17, 999):
        messages = {
            name: parse_message(data) for name, data in sip_parse.call_messages(call).items()
        }
        call_ids = {message.call_id for message in messages.values()}
        from_tags = {message.from_tag for message in messages.values()}
        assert call_ids == {f"{call}-4321@10.0.0.2"} and from_tags == {f"{call}SIPpTag001"}
        assert [m.cseq.method for m in messages.values()] == [
            "INVITE",
            "INVITE",
            "ACK",
            "BYE",
            "BYE",
        ]
        assert messages["INVITE"].to_tag is None
        assert messages["BYE"].to_tag == f"as{call:08x}"
        for message in messages.values():
            if isinstance(message, Request):
                assert (
                    sip_parse.check_request(
                        message, allowed_methods=sip_parse.ALLOWED, supported_extensions=frozenset()
                    )
                    is None
                )
        assert SessionDescription.parse(messages["200 INVITE"].body).media[0].port == 20000


@pytest.mark.parametrize("name", list(sip_parse.MESSAGES))
def test_each_built_message_parses_back_as_the_same_call(name: str) -> None:
    wire = parse_message(sip_parse.MESSAGES[name])
    built = parse_message(sip_parse.builder(name)())
    assert (built.call_id, built.cseq, built.from_tag) == (wire.call_id, wire.cseq, wire.from_tag)
    assert built.body == wire.body


def test_every_case_runs_and_is_timed_in_microseconds() -> None:
    cases = sip_parse.cases()
    assert {f"parse {name}" for name in sip_parse.MESSAGES} <= set(cases)
    assert {f"serialise {name}" for name in sip_parse.MESSAGES} <= set(cases)
    figures = {name: sip_parse.measure(fn, rounds=20, repeats=3) for name, fn in cases.items()}
    assert all(0 < us < 100_000 for us in figures.values()), figures
    assert bytes(sip_parse.sdp_build()).startswith(b"v=0\r\n")
