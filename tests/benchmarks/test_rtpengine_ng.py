"""bencode and the ng client's framing (benchmarks/rtpengine_ng.py), against a fake rtpengine."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from benchmarks.rtpengine_ng import (
    BencodeError,
    NgClient,
    NgError,
    NgNotReady,
    bdecode,
    bencode,
    frame,
    to_text,
    unframe,
)


def test_bencode_known_encodings() -> None:
    assert bencode(0) == b"i0e"
    assert bencode(-42) == b"i-42e"
    assert bencode(b"spam") == b"4:spam"
    assert bencode("") == b"0:"
    assert bencode("é") == b"2:\xc3\xa9"
    assert bencode([1, "a", [b""]]) == b"li1e1:al0:ee"
    assert bencode({}) == b"de"


def test_dictionary_keys_are_sorted_as_raw_bytes() -> None:
    encoded = bencode({"sdp": "x", "call-id": "c", "command": "offer", b"ICE": "remove"})
    assert encoded == b"d3:ICE6:remove7:call-id1:c7:command5:offer3:sdp1:xe"


def test_round_trip_of_a_nested_ng_message() -> None:
    message = {
        "command": "offer",
        "flags": ["trust-address"],
        "replace": ["origin", "session-connection"],
        "codec": {"transcode": ["opus/48000/2"], "mask": ["PCMU"]},
        "sdp": "v=0\r\nm=audio 4000 RTP/AVP 0\r\n",
        "count": 3,
    }
    assert to_text(bdecode(bencode(message))) == message


def test_decode_keeps_bytes_that_are_not_utf8() -> None:
    assert bdecode(b"2:\xff\xfe") == b"\xff\xfe"
    assert to_text(bdecode(b"d1:k2:\xff\xfee")) == {"k": b"\xff\xfe"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i",
        b"ie",
        b"i-e",
        b"i01e",
        b"i-0e",
        b"5:abc",
        b"l",
        b"d1:a",
        b"x",
        b"i1ei2e",
        b"di1ei2ee",
    ],
)
def test_invalid_bencode_is_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(data)


@pytest.mark.parametrize("value", [True, None, 1.5, {1: 2}, object()])
def test_values_bencode_cannot_carry_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        bencode(value)


def test_frame_and_unframe() -> None:
    datagram = frame(b"5323_1", {"command": "ping"})
    assert datagram == b"5323_1 d7:command4:pinge"
    assert unframe(b"5323_1 d6:result4:ponge") == (b"5323_1", {"result": "pong"})
    with pytest.raises(ValueError):
        frame(b"with space", {})
    with pytest.raises(NgError):
        unframe(b"no-space-at-all")
    with pytest.raises(NgError):
        unframe(b"cookie li1ee")


@contextmanager
def fake_rtpengine(replies: list[Any]) -> Iterator[tuple[tuple[str, int], list[bytes]]]:
    """A UDP server on 127.0.0.1 answering each request with the next entry of `replies`:
    a dict (sent back under the request's cookie), raw bytes (sent as is), or None (dropped).
    It stops at the block's end even with replies left (a test may give more than it needs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    received: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        for reply in replies:
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                    break
                except TimeoutError:
                    if done.is_set():
                        return
                except OSError:
                    return
            received.append(data)
            cookie = data.partition(b" ")[0]
            if isinstance(reply, dict):
                sock.sendto(frame(cookie, reply), addr)
            elif isinstance(reply, bytes):
                sock.sendto(reply, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname(), received
    finally:
        done.set()
        thread.join(5)
        sock.close()


def test_offer_sends_dashed_keys_and_returns_text() -> None:
    with fake_rtpengine([{"result": "ok", "sdp": "v=0\r\n"}]) as (address, received):
        with NgClient(address, timeout=2) as client:
            reply = client.offer("call-1", "tag-1", "v=0\r\n", ICE="remove", replace=["origin"])
    assert reply == {"result": "ok", "sdp": "v=0\r\n"}
    cookie, message = unframe(received[0])
    assert cookie
    assert message == {
        "command": "offer",
        "call-id": "call-1",
        "from-tag": "tag-1",
        "sdp": "v=0\r\n",
        "ICE": "remove",
        "replace": ["origin"],
    }


def test_a_lost_request_is_retransmitted_with_the_same_cookie() -> None:
    # Every retransmission is answered: a loaded machine may delay the fake's answer past the
    # client's 0.2 s, and a third send must not find it out of answers.
    with fake_rtpengine([None, *[{"result": "pong"}] * 3]) as (address, received):
        with NgClient(address, timeout=0.2, retries=2) as client:
            assert client.ping() == {"result": "pong"}
    assert len(received) >= 2 and all(r == received[0] for r in received), received


def test_answers_with_another_cookie_or_garbage_are_skipped() -> None:
    replies: list[Any] = [b"other_1 d6:result2:oke", b"garbage"]

    with fake_rtpengine([{"result": "ok"}]) as (address, _):
        with NgClient(address, timeout=2) as client:
            # A stale answer and a malformed datagram arrive first: both are ignored.
            for stale in replies:
                client.sock.sendto(stale, client.sock.getsockname())
            assert client.query("c")["result"] == "ok"


def test_error_result_raises_with_the_reason() -> None:
    reply = {"result": "error", "error-reason": "Unknown call-id"}
    with fake_rtpengine([reply]) as (address, _):
        with NgClient(address, timeout=2) as client, pytest.raises(NgError, match="Unknown"):
            client.delete("nope", "tag")


def test_no_answer_times_out() -> None:
    with fake_rtpengine([None, None]) as (address, _):
        with NgClient(address, timeout=0.05, retries=1) as client, pytest.raises(TimeoutError):
            client.ping()


def test_cookies_are_unique_per_request() -> None:
    with NgClient(("127.0.0.1", 9)) as client:
        cookies = {client.next_cookie() for _ in range(100)}
    assert len(cookies) == 100


def test_wait_ready_pings_until_a_late_starter_answers() -> None:
    # Two pings go unanswered (rtpengine still loading), the next ones are answered: the third
    # as a rule, a later one when a loaded machine delays the fake past the 0.05 s interval
    # (the client has sent a fresh ping by then and waits for that one's answer).
    with fake_rtpengine([None, None, *[{"result": "pong"}] * 50]) as (address, received):
        with NgClient(address) as client:
            waited = client.wait_ready(10, interval=0.05)
    assert len(received) >= 3 and 0.09 < waited < 10
    # Each ping is a request of its own (a fresh cookie), not a retransmission.
    assert len({unframe(r)[0] for r in received}) == len(received)


def test_wait_ready_names_the_address_when_nothing_answers_before_the_deadline() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        address = silent.getsockname()
        with NgClient(address) as client, pytest.raises(NgNotReady) as caught:
            client.wait_ready(0.3, interval=0.05)
    assert f"127.0.0.1:{address[1]}" in str(caught.value)
    assert "still running" in str(caught.value) and "0.3 s" in str(caught.value)


def test_wait_ready_stops_at_once_when_the_process_exited() -> None:
    with NgClient(("127.0.0.1", 9)) as client, pytest.raises(NgNotReady, match="status 2"):
        client.wait_ready(30, exited=lambda: 2)
