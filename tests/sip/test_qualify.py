"""Tests for sip.qualify: OPTIONS probes, UP on any answer, DOWN after N timeouts, RTT."""

from __future__ import annotations

import pytest

from sip.message import URI, Address, Request, Via, make_response, new_branch, parse_message
from sip.qualify import (
    Qualify,
    QualifyError,
    StateChanged,
    TrunkState,
    build_options,
)

PEER = URI.parse("sip:pbx.example:5070")
LOCAL = Address.parse("<sip:omlmedia@192.0.2.10>")


def via() -> Via:
    return Via("UDP", "192.0.2.10", 5060, (("branch", new_branch()), ("rport", None)))


def qualify() -> Qualify:
    return Qualify(PEER, LOCAL, via=via, interval=30.0, timeout=5.0, down_after=3)


def state(q: Qualify) -> TrunkState:
    """The state, read through a call so that mypy does not narrow it between steps."""
    return q.state


def events(q: Qualify) -> list[StateChanged]:
    out = []
    while (event := q.next_event()) is not None:
        out.append(event)
    return out


def test_build_options_is_a_valid_out_of_dialog_request() -> None:
    route = Address.parse("<sip:proxy.example;lr>")
    request = build_options(PEER, LOCAL, via=via(), call_id="c1", cseq=7, route=[route])
    parsed = parse_message(bytes(request))
    assert isinstance(parsed, Request)
    assert parsed.method == "OPTIONS" and parsed.uri == PEER
    assert parsed.to.uri == PEER and parsed.to.tag is None
    assert parsed.from_.uri == LOCAL.uri and parsed.from_tag is not None
    assert (parsed.call_id, parsed.cseq.seq, parsed.cseq.method) == ("c1", 7, "OPTIONS")
    assert parsed.headers.get("Accept") == "application/sdp"
    assert parsed.route[0].uri == route.uri and parsed.max_forwards == 70


def test_start_sends_a_probe_and_waits_for_the_timeout() -> None:
    q = qualify()
    request = q.start(100.0)
    assert request.method == "OPTIONS" and request.cseq.seq == 1
    assert state(q) is TrunkState.UNKNOWN
    assert q.next_deadline() == 105.0


def test_any_final_response_marks_up_with_rtt() -> None:
    q = qualify()
    request = q.start(100.0)
    q.receive_response(make_response(request, 200), 100.25)
    assert state(q) is TrunkState.UP and q.rtt == pytest.approx(0.25)
    assert events(q) == [StateChanged(TrunkState.UNKNOWN, TrunkState.UP, 100.25, 0.25)]
    assert q.next_deadline() == 130.0


@pytest.mark.parametrize("status", [404, 405, 403, 503])
def test_error_responses_still_prove_the_peer_alive(status: int) -> None:
    q = qualify()
    request = q.start(0.0)
    q.receive_response(make_response(request, status), 0.1)
    assert state(q) is TrunkState.UP


def test_provisional_response_is_not_an_answer() -> None:
    q = qualify()
    request = q.start(0.0)
    q.receive_response(make_response(request, 100), 0.1)
    assert state(q) is TrunkState.UNKNOWN and q.rtt is None


def test_probes_repeat_every_interval_with_growing_cseq() -> None:
    q = qualify()
    request = q.start(0.0)
    q.receive_response(make_response(request, 200), 0.05)
    assert q.handle_timer(29.9) is None
    second = q.handle_timer(30.0)
    assert second is not None and second.cseq.seq == 2 and second.call_id == request.call_id
    assert second.branch != request.branch
    assert q.next_deadline() == 35.0


def test_down_after_three_unanswered_probes_then_up_again() -> None:
    q = qualify()
    request: Request | None = q.start(0.0)
    now = 0.0
    for _ in range(3):
        deadline = q.next_deadline()
        assert deadline is not None
        now = deadline
        assert q.handle_timer(now) is None
        deadline = q.next_deadline()
        assert deadline is not None
        now = deadline
        request = q.handle_timer(now)
    assert state(q) is TrunkState.DOWN and q.consecutive_failures == 3
    assert [(e.previous, e.state, e.at) for e in events(q)] == [
        (TrunkState.UNKNOWN, TrunkState.DOWN, 65.0)
    ]
    assert request is not None
    q.receive_response(make_response(request, 200), now + 0.5)
    assert state(q) is TrunkState.UP and q.consecutive_failures == 0
    assert [e.state for e in events(q)] == [TrunkState.UP]


def test_two_timeouts_do_not_mark_down() -> None:
    q = qualify()
    q.start(0.0)
    q.handle_timer(5.0)
    q.handle_timer(30.0)
    q.handle_timer(35.0)
    assert state(q) is TrunkState.UNKNOWN and q.consecutive_failures == 2
    assert events(q) == []


def test_late_answer_to_an_older_probe_is_ignored() -> None:
    q = qualify()
    first = q.start(0.0)
    q.handle_timer(5.0)
    second = q.handle_timer(30.0)
    assert second is not None
    q.receive_response(make_response(first, 200), 30.01)
    assert q.rtt is None and state(q) is TrunkState.UNKNOWN
    q.receive_response(make_response(second, 200), 30.2)
    assert q.rtt == pytest.approx(0.2)


def test_transaction_timeout_counts_only_for_the_current_probe() -> None:
    q = Qualify(PEER, LOCAL, via=via, interval=30.0, timeout=60.0, down_after=1)
    first = q.start(0.0)
    q.timeout(32.0, cseq=first.cseq.seq + 1)
    assert state(q) is TrunkState.UNKNOWN
    q.timeout(32.0, cseq=first.cseq.seq)
    assert state(q) is TrunkState.DOWN
    assert q.next_deadline() == 30.0


def test_smoothed_rtt_weights_new_samples_one_eighth() -> None:
    q = qualify()
    request = q.start(0.0)
    q.receive_response(make_response(request, 200), 0.1)
    request2 = q.handle_timer(30.0)
    assert request2 is not None
    q.receive_response(make_response(request2, 200), 30.9)
    assert q.rtt == pytest.approx(0.9)
    assert q.srtt == pytest.approx(0.1 + 0.8 / 8)


def test_stop_ends_probing() -> None:
    q = qualify()
    q.start(0.0)
    q.stop()
    assert q.next_deadline() is None
    assert q.handle_timer(1000.0) is None


def test_bad_settings_raise() -> None:
    with pytest.raises(QualifyError, match="Qualify settings must be positive"):
        Qualify(PEER, LOCAL, via=via, interval=0)
    with pytest.raises(QualifyError, match="Qualify settings must be positive"):
        Qualify(PEER, LOCAL, via=via, down_after=0)
