"""The sans-IO transaction layer (RFC 3261 §17, RFC 6026, RFC 3581), with a hand-driven clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.endpoint import Endpoint
from sip.message import Request, Response, make_response, new_branch, new_tag, parse_message
from sip.transaction import (
    AckReceived,
    AckTimeout,
    ClientTransaction,
    Event,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    Timers,
    TransactionError,
    TransactionLayer,
    TransactionNotFound,
    TransactionState,
    TransactionStateError,
    TransactionTimeout,
    TransportFailed,
)

UAC = Endpoint("udp", "10.0.0.1", 5060)
UAS = Endpoint("udp", "10.0.0.2", 5060)
UAC_TCP = Endpoint("tcp", "10.0.0.1", 40000)
UAS_TCP = Endpoint("tcp", "10.0.0.2", 5060)


def request_text(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-1",
    via: str = "10.0.0.1:5060",
    transport: str = "UDP",
    rport: bool = False,
    uri: str = "sip:bob@10.0.0.2",
    from_tag: str = "ft1",
    to_tag: str | None = None,
    call_id: str = "call-1",
    seq: int = 1,
    cseq_method: str | None = None,
    routes: tuple[str, ...] = (),
) -> bytes:
    params = f";branch={branch}" if branch is not None else ""
    if rport:
        params += ";rport"
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via}{params}",
        *(f"Route: {route}" for route in routes),
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {seq} {cseq_method or method}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def req(method: str = "INVITE", **kwargs: object) -> Request:
    message = parse_message(request_text(method, **kwargs))  # type: ignore[arg-type]
    assert isinstance(message, Request)
    return message


def wire(data: bytes) -> Request | Response:
    return parse_message(data)


def events(layer: TransactionLayer) -> list[Event]:
    out: list[Event] = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def sent(layer: TransactionLayer) -> list[tuple[Request | Response, Endpoint]]:
    return [(wire(data), destination) for data, destination in layer.datagrams_to_send()]


def statuses(layer: TransactionLayer) -> list[int]:
    return [m.status for m, _ in sent(layer) if isinstance(m, Response)]


def run_until(layer: TransactionLayer, end: float) -> list[float]:
    """Fire every timer up to `end`; return the instants at which something was sent."""
    instants: list[float] = []
    while (deadline := layer.get_timer()) is not None and deadline <= end:
        layer.handle_timer(deadline)
        if layer.datagrams_to_send():
            instants.append(deadline)
    return instants


def state(tx: object) -> TransactionState:
    """The state, read through a function so the type checker does not narrow it between steps."""
    value = getattr(tx, "state")  # noqa: B009
    assert isinstance(value, TransactionState)
    return value


def server_with(request: Request, source: Endpoint = UAC, **timers: float) -> TransactionLayer:
    layer = TransactionLayer(Timers(**timers))
    layer.receive(request, source, 0.0)
    return layer


# -- timers -----------------------------------------------------------------------------------


def test_timers_are_derived_from_t1_t2_t4_as_in_rfc3261_table_4() -> None:
    t = Timers()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert (t.timer_a, t.timer_e, t.timer_g) == (0.5, 0.5, 0.5)
    assert (t.timer_b, t.timer_d, t.timer_f, t.timer_h, t.timer_j) == (32.0,) * 5
    assert (t.timer_i, t.timer_k) == (5.0, 5.0)
    assert (t.timer_l, t.timer_m) == (32.0, 32.0)
    fast = Timers(t1=0.1, t2=1.0, t4=2.0)
    assert fast.timer_b == pytest.approx(6.4)
    assert fast.timer_l == pytest.approx(6.4)
    assert fast.timer_i == 2.0


# -- INVITE client transaction ---------------------------------------------------------------


def test_invite_client_retransmits_with_timer_a_doubling_then_times_out_with_timer_b() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(req(), UAS, 0.0)
    first = layer.datagrams_to_send()
    assert [d for _, d in first] == [UAS]
    assert state(tx) is TransactionState.CALLING
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert layer.counters.retransmissions == 6
    assert events(layer) == []
    layer.handle_timer(32.0)
    assert events(layer) == [TransactionTimeout(tx)]
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0
    assert layer.counters.timeouts == 1


def test_invite_client_retransmits_the_bytes_serialized_once() -> None:
    layer = TransactionLayer()
    layer.send_request(req(), UAS, 0.0)
    [(original, _)] = layer.datagrams_to_send()
    layer.handle_timer(0.5)
    [(again, _)] = layer.datagrams_to_send()
    assert again is original


def test_invite_client_on_tcp_never_retransmits_but_times_out() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(req(transport="TCP"), UAS_TCP, 0.0)
    layer.datagrams_to_send()
    assert run_until(layer, 31.9) == []
    layer.handle_timer(32.0)
    assert events(layer) == [TransactionTimeout(tx)]
    assert layer.transaction_count == 0


def test_invite_client_provisional_stops_retransmission_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = req()
    tx = layer.send_request(invite, UAS, 0.0)
    layer.datagrams_to_send()
    ringing = make_response(invite, 180, to_tag="tt")
    layer.receive(ringing, UAS, 0.3)
    assert events(layer) == [ResponseReceived(ringing, tx)]
    assert state(tx) is TransactionState.PROCEEDING
    assert run_until(layer, 100.0) == []
    assert events(layer) == []
    assert layer.transaction_count == 1


def test_invite_client_non_2xx_is_acked_by_the_layer_with_the_same_branch_and_route() -> None:
    layer = TransactionLayer()
    invite = req(routes=("<sip:proxy.example.com;lr>",))
    tx = layer.send_request(invite, UAS, 0.0)
    layer.datagrams_to_send()
    busy = make_response(invite, 486, to_tag="tt")
    layer.receive(busy, UAS, 1.0)
    assert events(layer) == [ResponseReceived(busy, tx)]
    [(ack, destination)] = sent(layer)
    assert isinstance(ack, Request)
    assert destination == UAS
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.branch == invite.branch
    assert len(ack.vias) == 1
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.to_tag == "tt"
    assert ack.from_tag == "ft1"
    assert ack.call_id == invite.call_id
    assert ack.headers.getlist("Route") == ["<sip:proxy.example.com;lr>"]
    assert state(tx) is TransactionState.COMPLETED


def test_invite_client_retransmitted_non_2xx_resends_ack_and_is_not_passed_up() -> None:
    layer = TransactionLayer()
    invite = req()
    layer.send_request(invite, UAS, 0.0)
    busy = make_response(invite, 486, to_tag="tt")
    layer.receive(busy, UAS, 1.0)
    layer.datagrams_to_send()
    events(layer)
    layer.receive(wire(bytes(busy)), UAS, 2.0)
    assert events(layer) == []
    [(ack, _)] = sent(layer)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert layer.counters.absorbed == 1


def test_invite_client_timer_d_is_32s_on_udp() -> None:
    layer = TransactionLayer()
    invite = req()
    tx = layer.send_request(invite, UAS, 0.0)
    layer.receive(make_response(invite, 486, to_tag="tt"), UAS, 1.0)
    layer.handle_timer(32.9)
    assert state(tx) is TransactionState.COMPLETED
    layer.handle_timer(33.0)
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0


def test_invite_client_timer_d_is_zero_on_tcp() -> None:
    layer = TransactionLayer()
    invite = req(transport="TCP")
    tx = layer.send_request(invite, UAS_TCP, 0.0)
    layer.receive(make_response(invite, 603, to_tag="tt"), UAS_TCP, 1.0)
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0
    assert [m.method for m, _ in sent(layer) if isinstance(m, Request)] == ["INVITE", "ACK"]


def test_invite_client_accepted_forwards_2xx_retransmissions_until_timer_m() -> None:
    layer = TransactionLayer()
    invite = req()
    tx = layer.send_request(invite, UAS, 0.0)
    ok = make_response(invite, 200, to_tag="tt")
    layer.receive(ok, UAS, 1.0)
    assert state(tx) is TransactionState.ACCEPTED
    again = wire(bytes(ok))
    layer.receive(again, UAS, 1.5)
    assert events(layer) == [ResponseReceived(ok, tx), ResponseReceived(again, tx)]  # type: ignore[arg-type]
    assert [m.method for m, _ in sent(layer) if isinstance(m, Request)] == ["INVITE"]
    layer.handle_timer(32.9)
    assert state(tx) is TransactionState.ACCEPTED
    layer.handle_timer(33.0)
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0


def test_ack_for_2xx_is_sent_without_a_transaction() -> None:
    layer = TransactionLayer()
    ack = req("ACK", to_tag="tt", branch=new_branch())
    tx = layer.send_request(ack, UAS, 0.0)
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0
    assert layer.datagrams_to_send() == [(bytes(ack), UAS)]
    assert layer.get_timer() is None


# -- non-INVITE client transaction ----------------------------------------------------------


def test_non_invite_client_timer_e_doubles_to_t2_then_timer_f_times_out() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(req("OPTIONS"), UAS, 0.0)
    layer.datagrams_to_send()
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    layer.handle_timer(32.0)
    assert events(layer) == [TransactionTimeout(tx)]
    assert layer.transaction_count == 0


def test_non_invite_client_retransmits_at_t2_in_proceeding() -> None:
    layer = TransactionLayer()
    options = req("OPTIONS")
    layer.send_request(options, UAS, 0.0)
    layer.datagrams_to_send()
    layer.receive(make_response(options, 100), UAS, 0.1)
    assert run_until(layer, 9.0) == [0.5, 4.5, 8.5]


def test_non_invite_client_final_then_timer_k_and_retransmissions_absorbed() -> None:
    layer = TransactionLayer()
    options = req("OPTIONS")
    tx = layer.send_request(options, UAS, 0.0)
    ok = make_response(options, 200, to_tag="tt")
    layer.receive(ok, UAS, 0.2)
    layer.receive(wire(bytes(ok)), UAS, 0.7)
    assert events(layer) == [ResponseReceived(ok, tx)]
    assert layer.counters.absorbed == 1
    layer.handle_timer(5.1)
    assert state(tx) is TransactionState.COMPLETED
    layer.handle_timer(5.2)
    assert state(tx) is TransactionState.TERMINATED


def test_transactions_that_only_absorb_retransmissions_are_settled() -> None:
    layer = TransactionLayer()
    bye = req("BYE", to_tag="tt", branch="z9hG4bK-s1")
    layer.receive(bye, UAC, 0.0)
    options = req("OPTIONS", branch="z9hG4bK-c1", call_id="call-2")
    layer.send_request(options, UAS, 0.0)
    invite = req("INVITE", branch="z9hG4bK-i1", call_id="call-3")
    layer.receive(invite, UAC, 0.0)
    answered = req("INVITE", branch="z9hG4bK-i2", call_id="call-4")
    layer.receive(answered, UAC, 0.0)
    events(layer)
    # The OPTIONS we sent is a ping: a stop never waits for it, answered or not.
    assert layer.transaction_count == 4 and layer.unsettled_count == 3
    layer.send_response(make_response(answered, 200, to_tag="a"), 0.1)  # accepted: 2xx resent
    assert layer.unsettled_count == 3
    ack_2xx = request_text("ACK", branch="z9hG4bK-a2", call_id="call-4", to_tag="a")
    layer.receive(wire(ack_2xx), UAC, 0.1)  # accepted, acknowledged: Timer L
    assert layer.unsettled_count == 2
    layer.send_response(make_response(bye, 200), 0.1)  # completed: Timer J
    layer.receive(make_response(options, 200, to_tag="x"), UAS, 0.1)  # completed: Timer K
    layer.send_response(make_response(invite, 486, to_tag="t"), 0.1)  # completed: awaits ACK
    assert layer.transaction_count == 4 and layer.unsettled_count == 1
    ack = request_text("ACK", branch="z9hG4bK-i1", call_id="call-3", to_tag="t")
    layer.receive(wire(ack), UAC, 0.2)  # confirmed: Timer I
    assert layer.transaction_count == 4 and layer.unsettled_count == 0
    run_until(layer, 40.0)
    assert layer.transaction_count == 0


def test_non_invite_client_timer_k_is_zero_on_tcp() -> None:
    layer = TransactionLayer()
    options = req("OPTIONS", transport="TCP")
    tx = layer.send_request(options, UAS_TCP, 0.0)
    layer.receive(make_response(options, 200, to_tag="tt"), UAS_TCP, 0.2)
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0


def test_stray_response_is_counted_and_reported() -> None:
    layer = TransactionLayer()
    stray = make_response(req("OPTIONS"), 200, to_tag="tt")
    layer.receive(stray, UAS, 0.0)
    assert events(layer) == [StrayResponse(stray)]
    assert layer.counters.strays == 1
    assert layer.datagrams_to_send() == []


def test_response_with_same_branch_but_other_method_is_stray() -> None:
    layer = TransactionLayer()
    invite = req()
    layer.send_request(invite, UAS, 0.0)
    layer.receive(make_response(req("BYE", to_tag="x"), 200), UAS, 0.1)
    assert isinstance(events(layer)[0], StrayResponse)


def test_response_whose_via_line_was_rewritten_by_the_peer_still_matches() -> None:
    layer = TransactionLayer()
    options = req("OPTIONS", rport=True)
    tx = layer.send_request(options, UAS, 0.0)
    response = make_response(options, 200, to_tag="tt")
    response.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport=5060;received=x")
    layer.receive(response, UAS, 0.1)
    assert events(layer) == [ResponseReceived(response, tx)]


def test_send_request_needs_an_rfc3261_branch_and_a_free_key() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError, match="request has no RFC 3261 branch in its top Via"):
        layer.send_request(req(branch="old-style"), UAS, 0.0)
    layer.send_request(req(), UAS, 0.0)
    with pytest.raises(TransactionError, match="already uses this branch and method"):
        layer.send_request(req(), UAS, 0.0)


# -- CANCEL (client side) ----------------------------------------------------------------------


def test_cancel_after_provisional_sends_cancel_with_invite_branch_and_route() -> None:
    layer = TransactionLayer()
    invite = req(routes=("<sip:p1;lr>", "<sip:p2;lr>"))
    tx = layer.send_request(invite, UAS, 0.0)
    layer.receive(make_response(invite, 180, to_tag="tt"), UAS, 0.1)
    layer.datagrams_to_send()
    cancel_tx = layer.cancel(tx, 1.0)
    [(cancel, destination)] = sent(layer)
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert destination == UAS
    assert cancel.branch == invite.branch
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.to_tag is None
    assert cancel.uri == invite.uri
    assert cancel.headers.getlist("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert state(cancel_tx) is TransactionState.TRYING
    assert layer.cancel(tx, 1.1) is cancel_tx
    ok = make_response(cancel, 200, to_tag="tt")
    layer.receive(ok, UAS, 1.2)
    terminated = make_response(invite, 487, to_tag="tt")
    layer.receive(terminated, UAS, 1.3)
    assert events(layer)[-2:] == [ResponseReceived(ok, cancel_tx), ResponseReceived(terminated, tx)]


def test_cancel_before_provisional_is_deferred_until_one_arrives() -> None:
    layer = TransactionLayer()
    invite = req()
    tx = layer.send_request(invite, UAS, 0.0)
    layer.datagrams_to_send()
    cancel_tx = layer.cancel(tx, 0.1)
    assert layer.datagrams_to_send() == []
    layer.handle_timer(0.5)
    assert [m.method for m, _ in sent(layer) if isinstance(m, Request)] == ["INVITE"]
    layer.receive(make_response(invite, 100), UAS, 0.6)
    assert [m.method for m, _ in sent(layer) if isinstance(m, Request)] == ["CANCEL"]
    assert state(cancel_tx) is TransactionState.TRYING


def test_deferred_cancel_is_dropped_when_a_final_response_comes_first() -> None:
    layer = TransactionLayer()
    invite = req()
    tx = layer.send_request(invite, UAS, 0.0)
    cancel_tx = layer.cancel(tx, 0.1)
    layer.receive(make_response(invite, 200, to_tag="tt"), UAS, 0.2)
    assert state(cancel_tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 1
    with pytest.raises(TransactionStateError, match="only a pending INVITE"):
        layer.cancel(tx, 0.3)


def test_cancelled_invite_without_final_response_times_out_after_64_t1() -> None:
    layer = TransactionLayer()
    invite = req()
    tx = layer.send_request(invite, UAS, 0.0)
    layer.receive(make_response(invite, 180, to_tag="tt"), UAS, 0.1)
    layer.cancel(tx, 1.0)
    events(layer)
    layer.handle_timer(32.9)
    assert state(tx) is TransactionState.PROCEEDING
    layer.handle_timer(33.0)
    assert TransactionTimeout(tx) in events(layer)
    assert layer.transaction_count == 0


def test_cancel_refuses_non_invite_transactions() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(req("OPTIONS"), UAS, 0.0)
    with pytest.raises(TransactionStateError):
        layer.cancel(tx, 0.0)


# -- INVITE server transaction ---------------------------------------------------------------


def test_invite_server_sends_100_trying_when_tu_is_silent_for_200ms() -> None:
    invite = req()
    layer = server_with(invite)
    [event] = events(layer)
    assert isinstance(event, RequestReceived) and event.request is invite
    assert isinstance(event.transaction, ServerTransaction)
    assert state(event.transaction) is TransactionState.PROCEEDING
    assert layer.datagrams_to_send() == []
    layer.handle_timer(0.19)
    assert layer.datagrams_to_send() == []
    layer.handle_timer(0.2)
    [(trying, destination)] = sent(layer)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to_tag is None
    assert destination == UAC


def test_invite_server_sends_no_100_when_tu_answers_within_200ms() -> None:
    invite = req()
    layer = server_with(invite)
    layer.send_response(make_response(invite, 180, to_tag="tt"), 0.05)
    assert statuses(layer) == [180]
    layer.handle_timer(0.2)
    assert layer.datagrams_to_send() == []


def test_invite_server_trying_delay_zero_sends_100_on_receipt() -> None:
    layer = server_with(req(), trying_delay=0.0)
    assert statuses(layer) == [100]


def test_retransmitted_invite_gets_100_at_once_then_the_last_provisional() -> None:
    invite = req()
    layer = server_with(invite)
    layer.receive(req(), UAC, 0.1)
    assert statuses(layer) == [100]
    layer.send_response(make_response(invite, 180, to_tag="tt"), 0.3)
    layer.datagrams_to_send()
    layer.receive(req(), UAC, 0.5)
    assert statuses(layer) == [180]
    assert layer.counters.absorbed == 2
    assert [e for e in events(layer) if isinstance(e, RequestReceived)] != []
    assert layer.transaction_count == 1


def test_invite_server_non_2xx_retransmits_with_timer_g_capped_at_t2_then_timer_h() -> None:
    invite = req()
    layer = server_with(invite)
    [event] = events(layer)
    layer.send_response(make_response(invite, 486, to_tag="tt"), 0.0)
    assert statuses(layer) == [486]
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    layer.handle_timer(32.0)
    assert events(layer) == [TransactionTimeout(event.transaction)]  # type: ignore[attr-defined]
    assert layer.transaction_count == 0


def test_ack_for_non_2xx_is_absorbed_and_timer_i_ends_confirmed() -> None:
    invite = req()
    layer = server_with(invite)
    [event] = events(layer)
    tx = event.transaction  # type: ignore[attr-defined]
    layer.send_response(make_response(invite, 486, to_tag="tt"), 0.0)
    layer.datagrams_to_send()
    layer.receive(req("ACK", to_tag="tt"), UAC, 0.7)
    assert events(layer) == []
    assert state(tx) is TransactionState.CONFIRMED
    assert run_until(layer, 5.6) == []
    layer.receive(req("ACK", to_tag="tt"), UAC, 1.0)
    assert layer.counters.absorbed == 2
    layer.handle_timer(5.7)
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0


def test_retransmitted_invite_in_completed_gets_the_final_response_again() -> None:
    invite = req()
    layer = server_with(invite)
    layer.send_response(make_response(invite, 404, to_tag="tt"), 0.0)
    layer.datagrams_to_send()
    layer.receive(req(), UAC, 0.2)
    assert statuses(layer) == [404]


def test_invite_server_on_tcp_sends_final_once_and_timer_i_is_zero() -> None:
    invite = req(transport="TCP")
    layer = server_with(invite, UAC_TCP)
    [event] = events(layer)
    layer.send_response(make_response(invite, 486, to_tag="tt"), 0.0)
    assert [d for _, d in layer.datagrams_to_send()] == [UAC_TCP]
    assert run_until(layer, 31.9) == []
    layer.receive(req("ACK", transport="TCP", to_tag="tt"), UAC_TCP, 1.0)
    assert state(event.transaction) is TransactionState.TERMINATED  # type: ignore[attr-defined]
    assert layer.transaction_count == 0


def test_2xx_is_retransmitted_until_ack_then_ack_received_is_reported() -> None:
    invite = req()
    layer = server_with(invite)
    [event] = events(layer)
    tx = event.transaction  # type: ignore[attr-defined]
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    assert statuses(layer) == [200]
    assert state(tx) is TransactionState.ACCEPTED
    assert run_until(layer, 16.0) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    ack = req("ACK", branch="z9hG4bK-ack", to_tag="tt")
    layer.receive(ack, UAC, 16.0)
    assert events(layer) == [AckReceived(ack, UAC)]
    assert run_until(layer, 31.9) == []
    layer.receive(req("ACK", branch="z9hG4bK-ack", to_tag="tt"), UAC, 17.0)
    layer.receive(req(), UAC, 17.5)
    assert events(layer) == []
    assert layer.datagrams_to_send() == []
    assert state(tx) is TransactionState.ACCEPTED
    layer.handle_timer(32.0)
    assert events(layer) == []
    assert state(tx) is TransactionState.TERMINATED
    assert layer.transaction_count == 0


def test_2xx_never_acked_gives_ack_timeout_after_64_t1() -> None:
    invite = req()
    layer = server_with(invite)
    [event] = events(layer)
    ok = make_response(invite, 200, to_tag="tt")
    layer.send_response(ok, 0.0)
    layer.handle_timer(31.9)
    assert events(layer) == []
    layer.handle_timer(32.0)
    assert events(layer) == [AckTimeout(event.transaction, ok)]  # type: ignore[attr-defined]
    assert layer.transaction_count == 0
    assert layer.counters.timeouts == 1


def test_2xx_on_tcp_is_not_retransmitted_but_ack_timeout_still_runs() -> None:
    invite = req(transport="TCP")
    layer = server_with(invite, UAC_TCP)
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    layer.datagrams_to_send()
    assert run_until(layer, 31.9) == []
    layer.handle_timer(32.0)
    assert any(isinstance(e, AckTimeout) for e in events(layer))


def test_ack_for_unknown_2xx_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    ack = req("ACK", to_tag="tt", call_id="elsewhere")
    layer.receive(ack, UAC, 0.0)
    assert events(layer) == [AckReceived(ack, UAC)]
    assert layer.transaction_count == 0


def test_send_response_needs_a_live_transaction_and_a_legal_state() -> None:
    invite = req()
    layer = TransactionLayer()
    with pytest.raises(TransactionNotFound, match="no server transaction matches the response"):
        layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    layer.receive(invite, UAC, 0.0)
    layer.send_response(make_response(invite, 486, to_tag="tt"), 0.0)
    with pytest.raises(TransactionStateError, match="already sent a final response"):
        layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)


def test_send_response_matches_by_branch_when_the_tu_rebuilt_the_via_line() -> None:
    invite = req("OPTIONS", rport=True)
    layer = server_with(invite)
    response = make_response(invite, 200, to_tag="tt")
    response.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1")
    layer.send_response(response, 0.0)
    assert statuses(layer) == [200]
    assert layer.transaction_count == 1


# -- CANCEL (server side) and merged requests --------------------------------------------------


def test_cancel_of_pending_invite_answers_200_and_487_and_reports_it() -> None:
    invite = req()
    layer = server_with(invite)
    [event] = events(layer)
    tx = event.transaction  # type: ignore[attr-defined]
    layer.send_response(make_response(invite, 180, to_tag="tt"), 0.1)
    layer.datagrams_to_send()
    cancel = req("CANCEL")
    layer.receive(cancel, UAC, 1.0)
    responses = [(m.status, m.cseq.method, m.to_tag) for m, _ in sent(layer)]  # type: ignore[union-attr]
    assert responses == [(200, "CANCEL", "tt"), (487, "INVITE", "tt")]
    assert events(layer) == [InviteCancelled(tx, cancel)]
    assert state(tx) is TransactionState.COMPLETED
    with pytest.raises(TransactionStateError):
        layer.send_response(make_response(invite, 200, to_tag="tt"), 1.1)
    layer.receive(req("CANCEL"), UAC, 1.2)
    assert statuses(layer) == [200]
    layer.receive(req("ACK", to_tag="tt"), UAC, 1.3)
    assert state(tx) is TransactionState.CONFIRMED
    assert events(layer) == []


def test_cancel_before_any_provisional_uses_one_new_to_tag_for_200_and_487() -> None:
    layer = server_with(req())
    layer.receive(req("CANCEL"), UAC, 0.1)
    tags = {m.to_tag for m, _ in sent(layer)}
    assert len(tags) == 1 and None not in tags


def test_cancel_matching_no_transaction_gets_a_stateless_481() -> None:
    layer = TransactionLayer()
    layer.receive(req("CANCEL"), UAC, 0.0)
    assert statuses(layer) == [481]
    assert events(layer) == []
    assert layer.transaction_count == 0 and layer.get_timer() is None


def test_requests_past_the_server_transaction_cap_get_a_stateless_503() -> None:
    layer = TransactionLayer(max_server_transactions=2, retry_after=7)
    for n in range(3):
        layer.receive(req("OPTIONS", branch=f"z9hG4bK-{n}", call_id=f"c{n}"), UAC, 0.0)
    assert len(events(layer)) == 2
    [(busy, destination)] = sent(layer)
    assert isinstance(busy, Response) and busy.status == 503 and destination == UAC
    assert busy.headers.get("Retry-After") == "7"
    assert layer.server_transaction_count == 2 and layer.counters.overloaded == 1
    layer.receive(req("CANCEL", branch="z9hG4bK-0", call_id="c0"), UAC, 0.1)
    assert statuses(layer) == [481]  # a CANCEL for no INVITE never counts against the cap


def test_cancel_of_a_pending_invite_is_served_even_at_the_cap() -> None:
    layer = TransactionLayer(max_server_transactions=1)
    layer.receive(req(), UAC, 0.0)
    events(layer)
    layer.receive(req("CANCEL"), UAC, 0.1)
    assert sorted(statuses(layer)) == [200, 487]


def test_cancel_after_final_response_gets_200_and_nothing_else() -> None:
    invite = req()
    layer = server_with(invite)
    events(layer)
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    layer.datagrams_to_send()
    layer.receive(req("CANCEL"), UAC, 0.1)
    assert statuses(layer) == [200]
    assert events(layer) == []


def test_merged_request_on_another_branch_gets_482_and_is_not_passed_up() -> None:
    layer = server_with(req(branch="z9hG4bK-a"))
    events(layer)
    layer.receive(
        req(branch="z9hG4bK-b", via="10.0.0.9:5060"), Endpoint("udp", "10.0.0.9", 5060), 0.1
    )
    [(response, destination)] = sent(layer)
    assert isinstance(response, Response) and response.status == 482
    assert destination.host == "10.0.0.9"
    assert events(layer) == []
    assert layer.transaction_count == 2


def test_request_with_to_tag_is_never_treated_as_merged() -> None:
    layer = server_with(req("BYE", branch="z9hG4bK-a", to_tag="x"))
    layer.receive(req("BYE", branch="z9hG4bK-b", to_tag="x"), UAC, 0.1)
    assert len([e for e in events(layer) if isinstance(e, RequestReceived)]) == 2


# -- Via received/rport and response destinations --------------------------------------------


def test_rport_is_filled_with_source_port_and_received_and_responses_go_to_the_source() -> None:
    nat = Endpoint("udp", "203.0.113.7", 34567)
    invite = req(via="192.168.1.10:5060", rport=True)
    layer = server_with(invite, nat)
    via = invite.top_via
    assert via.received == "203.0.113.7"
    assert via.rport == 34567
    layer.send_response(make_response(invite, 180, to_tag="tt"), 0.0)
    [(response, destination)] = sent(layer)
    assert destination == nat
    assert isinstance(response, Response) and response.top_via.rport == 34567


def test_rport_forces_received_even_when_host_matches() -> None:
    invite = req(rport=True)
    server_with(invite)
    assert invite.top_via.received == "10.0.0.1"


def rfc3261_server_with(request: Request, source: Endpoint) -> TransactionLayer:
    layer = TransactionLayer(Timers(), symmetric_responses=False)
    layer.receive(request, source, 0.0)
    return layer


def test_responses_go_back_to_the_source_port_by_default_even_without_rport() -> None:
    invite = req("OPTIONS", via="pbx.example.com:5080")
    layer = server_with(invite, Endpoint("udp", "198.51.100.4", 40000))
    assert invite.top_via.received == "198.51.100.4"
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    assert [d for _, d in layer.datagrams_to_send()] == [Endpoint("udp", "198.51.100.4", 40000)]


def test_received_is_added_when_via_host_differs_and_responses_use_via_port() -> None:
    invite = req("OPTIONS", via="pbx.example.com:5080")
    layer = rfc3261_server_with(invite, Endpoint("udp", "198.51.100.4", 40000))
    assert invite.top_via.received == "198.51.100.4"
    assert invite.top_via.rport is None
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    assert [d for _, d in layer.datagrams_to_send()] == [Endpoint("udp", "198.51.100.4", 5080)]


def test_via_without_port_means_5060_and_matching_host_is_left_untouched() -> None:
    invite = req("OPTIONS", via="10.0.0.1")
    raw = invite.headers.get("Via")
    layer = rfc3261_server_with(invite, Endpoint("udp", "10.0.0.1", 41000))
    assert invite.headers.get("Via") == raw
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    assert [d for _, d in layer.datagrams_to_send()] == [Endpoint("udp", "10.0.0.1", 5060)]


def test_responses_on_a_reliable_transport_go_back_on_the_source_connection() -> None:
    invite = req("OPTIONS", transport="TCP", via="10.0.0.1:5060")
    layer = server_with(invite, UAC_TCP)
    layer.send_response(make_response(invite, 200, to_tag="tt"), 0.0)
    assert [d for _, d in layer.datagrams_to_send()] == [UAC_TCP]
    assert layer.transaction_count == 0


# -- RFC 2543 fallback matching ----------------------------------------------------------------


def test_rfc2543_request_without_branch_is_matched_by_dialog_fields() -> None:
    invite = req(branch=None)
    layer = server_with(invite)
    [event] = events(layer)
    tx = event.transaction  # type: ignore[attr-defined]
    layer.receive(req(branch=None), UAC, 0.1)
    assert events(layer) == []
    assert statuses(layer) == [100]
    layer.send_response(make_response(invite, 486, to_tag="tt"), 0.2)
    layer.datagrams_to_send()
    layer.receive(req("ACK", branch=None, to_tag="tt"), UAC, 0.3)
    assert state(tx) is TransactionState.CONFIRMED
    assert events(layer) == []


def test_rfc2543_request_with_other_uri_is_a_merged_request() -> None:
    layer = server_with(req(branch="1"))
    events(layer)
    layer.receive(req(branch="1", uri="sip:carol@10.0.0.2"), UAC, 0.1)
    assert statuses(layer) == [482]
    assert events(layer) == []


def test_rfc2543_cancel_finds_its_invite() -> None:
    layer = server_with(req(branch=None))
    events(layer)
    layer.receive(req("CANCEL", branch=None), UAC, 0.1)
    assert statuses(layer) == [200, 487]
    assert isinstance(events(layer)[0], InviteCancelled)


# -- non-INVITE server transaction -----------------------------------------------------------


def test_non_invite_server_absorbs_retransmissions_and_resends_the_final() -> None:
    bye = req("BYE", to_tag="x")
    layer = server_with(bye)
    [event] = events(layer)
    tx = event.transaction  # type: ignore[attr-defined]
    layer.receive(req("BYE", to_tag="x"), UAC, 0.1)
    assert layer.datagrams_to_send() == []
    layer.send_response(make_response(bye, 200), 0.2)
    layer.datagrams_to_send()
    layer.receive(req("BYE", to_tag="x"), UAC, 0.5)
    assert statuses(layer) == [200]
    assert events(layer) == []
    assert layer.counters.absorbed == 2
    layer.handle_timer(32.1)
    assert state(tx) is TransactionState.COMPLETED
    layer.handle_timer(32.2)
    assert state(tx) is TransactionState.TERMINATED


def test_non_invite_server_resends_last_provisional() -> None:
    message = req("MESSAGE", to_tag="x")
    layer = server_with(message)
    layer.send_response(make_response(message, 100), 0.1)
    layer.datagrams_to_send()
    layer.receive(req("MESSAGE", to_tag="x"), UAC, 0.5)
    assert statuses(layer) == [100]


# -- transport errors ----------------------------------------------------------------------------


def test_transport_error_fails_client_and_server_transactions_towards_that_peer() -> None:
    layer = TransactionLayer()
    client = layer.send_request(req("OPTIONS", branch="z9hG4bK-c"), UAS_TCP, 0.0)
    other = layer.send_request(req("OPTIONS", branch="z9hG4bK-d"), UAS, 0.0)
    layer.receive(req(transport="TCP"), UAC_TCP, 0.0)
    [event] = [e for e in events(layer) if isinstance(e, RequestReceived)]
    layer.transport_error(UAS_TCP, 0.1)
    layer.transport_error(UAC_TCP, 0.1)
    assert events(layer) == [TransportFailed(client), TransportFailed(event.transaction)]  # type: ignore[arg-type]
    assert state(other) is TransactionState.TRYING
    assert layer.transaction_count == 1
    assert layer.counters.transport_failures == 2


# -- whole calls between two layers ----------------------------------------------------------


class Wire:
    """Two layers joined by an in-memory network that can lose everything."""

    def __init__(self) -> None:
        self.uac = TransactionLayer()
        self.uas = TransactionLayer()
        self.up = True

    def pump(self, now: float) -> None:
        moved = True
        while moved:
            moved = False
            for layer, peer, source in ((self.uac, self.uas, UAC), (self.uas, self.uac, UAS)):
                for data, _ in layer.datagrams_to_send():
                    moved = True
                    if self.up:
                        peer.receive(parse_message(data), source, now)


def test_call_storm_leaves_no_transaction_behind() -> None:
    net = Wire()
    now = 0.0
    calls = 1000
    for n in range(calls):
        from_tag = new_tag()
        invite = req(branch=new_branch(), call_id=f"storm-{n}", from_tag=from_tag)
        net.uac.send_request(invite, UAS, now)
        net.pump(now)
        for event in events(net.uas):
            assert isinstance(event, RequestReceived)
            net.uas.send_response(make_response(event.request, 200, to_tag=f"t{n}"), now)
        net.pump(now)
        for event in events(net.uac):
            assert isinstance(event, ResponseReceived) and event.response.status == 200
            ack = req(
                "ACK", branch=new_branch(), call_id=f"storm-{n}", from_tag=from_tag, to_tag=f"t{n}"
            )
            net.uac.send_request(ack, UAS, now)
        net.pump(now)
        assert [type(e) for e in events(net.uas)] == [AckReceived]
        bye = req(
            "BYE",
            branch=new_branch(),
            call_id=f"storm-{n}",
            from_tag=from_tag,
            to_tag=f"t{n}",
            seq=2,
        )
        net.uac.send_request(bye, UAS, now)
        net.pump(now)
        for event in events(net.uas):
            assert isinstance(event, RequestReceived)
            net.uas.send_response(make_response(event.request, 200), now)
        net.pump(now)
        assert [type(e) for e in events(net.uac)] == [ResponseReceived]
        now += 0.001
    assert net.uas.transaction_count > 0
    for layer in (net.uac, net.uas):
        layer.handle_timer(now + 64 * 0.5 + 5.0 + 1)
        assert layer.transaction_count == 0
        assert layer.get_timer() is None
        assert layer.counters.retransmissions == 0
        assert layer.counters.timeouts == 0


# -- randomized interleavings ------------------------------------------------------------------

ACTIONS = (
    ["invite"] * 2
    + ["options", "cancel", "drop", "dup", "reorder", "tick", "transport_error"]
    + ["deliver"] * 8
    + ["respond"] * 3
)


class Peer:
    """A random transaction user driving one layer."""

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.pending: list[ServerTransaction] = []
        self.invites: list[ClientTransaction] = []

    def drain(self, now: float, ack_to: Endpoint) -> None:
        for event in events(self.layer):
            if isinstance(event, RequestReceived) and event.transaction is not None:
                self.pending.append(event.transaction)
            elif isinstance(event, ResponseReceived):
                response = event.response
                if event.transaction.method == "INVITE" and 200 <= response.status < 300:
                    request = event.transaction.request
                    ack = req(
                        "ACK",
                        branch=new_branch(),
                        call_id=request.call_id,
                        from_tag=request.from_tag or "",
                        to_tag=response.to_tag,
                        seq=request.cseq.seq,
                    )
                    self.layer.send_request(ack, ack_to, now)


def legal(tx: ServerTransaction) -> bool:
    return tx.state in (TransactionState.TRYING, TransactionState.PROCEEDING)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=1, max_value=150),
    st.sampled_from(["udp", "tcp"]),
)
def test_random_interleavings_never_raise_and_always_terminate(
    seed: int, steps: int, transport: str
) -> None:
    rng = random.Random(seed)
    uac_end = Endpoint(transport, "10.0.0.1", 5060)
    uas_end = Endpoint(transport, "10.0.0.2", 5060)
    client, server = Peer(TransactionLayer()), Peer(TransactionLayer())
    in_flight: list[tuple[bytes, TransactionLayer, Endpoint]] = []
    now = 0.0
    seq = 0

    def collect() -> None:
        for data, _ in client.layer.datagrams_to_send():
            in_flight.append((data, server.layer, uac_end))
        for data, _ in server.layer.datagrams_to_send():
            in_flight.append((data, client.layer, uas_end))

    for _ in range(steps):
        action = rng.choice(ACTIONS)
        if action in ("invite", "options"):
            seq += 1
            method = action.upper()
            request = req(
                method,
                branch=new_branch(),
                transport=transport.upper(),
                call_id=f"c{rng.randrange(3)}",
                seq=rng.choice((1, seq)),
            )
            tx = client.layer.send_request(request, uas_end, now)
            if method == "INVITE":
                client.invites.append(tx)
        elif action in ("deliver", "drop", "dup", "reorder") and in_flight:
            index = rng.randrange(len(in_flight))
            data, target, source = in_flight.pop(index) if action != "dup" else in_flight[index]
            if action == "reorder":
                in_flight.append((data, target, source))
            elif action != "drop":
                target.receive(parse_message(data), source, now)
        elif action == "respond" and server.pending:
            pending = rng.choice(server.pending)
            if legal(pending):
                status = rng.choice((100, 180, 200, 486, 404))
                response = make_response(pending.request, status, to_tag="tt")
                server.layer.send_response(response, now)
        elif action == "cancel" and client.invites:
            tx = rng.choice(client.invites)
            if tx.state in (TransactionState.CALLING, TransactionState.PROCEEDING):
                client.layer.cancel(tx, now)
        elif action == "tick":
            now += rng.choice((0.1, 0.5, 1.0, 4.0, 20.0))
            client.layer.handle_timer(now)
            server.layer.handle_timer(now)
        elif action == "transport_error":
            rng.choice((client.layer, server.layer)).transport_error(
                rng.choice((uac_end, uas_end)), now
            )
        collect()
        client.drain(now, uas_end)
        server.drain(now, uac_end)
        collect()

    # Nothing pending: the network goes down, every request gets its final answer or a CANCEL.
    in_flight.clear()
    for pending in server.pending:
        if legal(pending):
            server.layer.send_response(make_response(pending.request, 480, to_tag="tt"), now)
    for tx in client.invites:
        if tx.state in (TransactionState.CALLING, TransactionState.PROCEEDING):
            client.layer.cancel(tx, now)
    end = now + 64 * 0.5 + 5.0 + 1
    for layer in (client.layer, server.layer):
        layer.datagrams_to_send()
        while (deadline := layer.get_timer()) is not None and deadline <= end:
            layer.handle_timer(deadline)
            layer.datagrams_to_send()
        events(layer)
        assert layer.transaction_count == 0
        assert layer.get_timer() is None
