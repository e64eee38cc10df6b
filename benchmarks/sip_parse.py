"""CPU per SIP message of the message model alone: parse, serialise, SDP parse and build.

The messages are those of one trunk call as sipp's ``uac_pcap`` scenario exchanges them with a
B2BUA: INVITE with SDP, 200 OK with SDP (Record-Route, Contact, Allow, Supported), ACK, BYE and the
200 for BYE. For each message:

- *parse*: ``parse_message`` and the header values the transaction layer, the dialogs and
  ``check_request`` read (Call-ID, CSeq, tags, top Via and its branch, Contact, Max-Forwards,
  Content-Type; the request's inspection for requests);
- *serialise*: the message built as the stack builds it (``Request`` with ``Headers.add`` of
  ``str`` values for requests, ``make_response`` for responses) and ``bytes()`` of it.

SDP: ``SessionDescription.parse`` of the offer and of the answer, and the answer built
(``negotiate``) and written (``bytes``). As a floor, Python's ``email.parser.HeaderParser`` on the
same header blocks, in the same run: ratios to it count, not the absolute figures (the machine's
speed varies up to 2x between runs). Each figure is ``time.process_time`` over N rounds, repeated
5 times, the median.

    PYTHONPATH=. .venv/bin/python benchmarks/sip_parse.py [--rounds N] [--profile]

To compare two trees in one run, run it from each (``git archive`` the old tree to /tmp).
"""

from __future__ import annotations

import argparse
import cProfile
import email.parser
import itertools
import pstats
import statistics
import time
from collections.abc import Callable

from sip.message import Address, Headers, Request, Response, Via, make_response, parse_message
from sip.sdp import DEFAULT_CAPABILITIES, SessionDescription, negotiate
from sip.validation import check_request

OFFER = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)
ANSWER = (
    b"v=0\r\no=- 1 0 IN IP4 10.0.0.1\r\ns=omlmedia\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
CALL = 17
FROM = f"sipp <sip:sipp@10.0.0.2:5061>;tag={CALL}SIPpTag001"
TO = "sut <sip:service@10.0.0.1:5060>"
TO_TAGGED = TO + ";tag=as58f4201b"
CALL_ID = f"{CALL}-4321@10.0.0.2"
#: Calls parsed in turn: each has its own tags, Call-ID and branches, as on a trunk (the parser's
#: caches of header texts see a new From per call, not one text over and over).
POOL = 1000
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK"
ALLOWED = frozenset(ALLOW.replace(",", "").split())


def _request(
    method: str, cseq: int, branch: str, to: str, sdp: bytes = b"", call: int = CALL
) -> bytes:
    head = (
        f"{method} sip:service@10.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.2:5061;branch=z9hG4bK-{call}-1-{branch}\r\n"
        f"From: sipp <sip:sipp@10.0.0.2:5061>;tag={call}SIPpTag001\r\nTo: {to}\r\n"
        f"Call-ID: {call}-4321@10.0.0.2\r\nCSeq: {cseq} {method}\r\n"
        "Contact: sip:sipp@10.0.0.2:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
        + ("Content-Type: application/sdp\r\n" if sdp else "")
        + f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


def _ok(cseq: str, branch: str, sdp: bytes = b"", call: int = CALL) -> bytes:
    head = (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.2:5061;branch=z9hG4bK-{call}-1-{branch};received=10.0.0.2\r\n"
        "Record-Route: <sip:10.0.0.9;lr>\r\n"
        f"From: sipp <sip:sipp@10.0.0.2:5061>;tag={call}SIPpTag001\r\n"
        f"To: {TO};tag=as{call:08x}\r\nCall-ID: {call}-4321@10.0.0.2\r\nCSeq: {cseq}\r\n"
        + (
            "Contact: <sip:service@10.0.0.1:5060;transport=udp>\r\n"
            f"Allow: {ALLOW}\r\nSupported: replaces, timer\r\nContent-Type: application/sdp\r\n"
            if sdp
            else ""
        )
        + "Server: omlmedia\r\n"
        + f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


def call_messages(call: int) -> dict[str, bytes]:
    """The five messages of call number ``call``."""
    to = f"{TO};tag=as{call:08x}"
    return {
        "INVITE": _request("INVITE", 1, "0", TO, OFFER, call),
        "200 INVITE": _ok("1 INVITE", "0", ANSWER, call),
        "ACK": _request("ACK", 1, "1", to, call=call),
        "BYE": _request("BYE", 2, "2", to, call=call),
        "200 BYE": _ok("2 BYE", "2", call=call),
    }


MESSAGES: dict[str, bytes] = call_messages(CALL)


def read(message: Request | Response) -> None:
    """What the transaction layer and the dialogs read of every message received."""
    message.call_id  # noqa: B018
    message.cseq  # noqa: B018
    message.from_tag  # noqa: B018
    message.to_tag  # noqa: B018
    message.top_via.branch  # noqa: B018
    if isinstance(message, Request):
        check_request(message, allowed_methods=ALLOWED, supported_extensions=frozenset())
        if message.method == "INVITE":
            message.contact  # noqa: B018
    elif message.cseq.method == "INVITE":
        message.contact  # noqa: B018
        message.record_route  # noqa: B018
        message.content_type  # noqa: B018


def parse(data: bytes) -> None:
    read(parse_message(data))


def builder(name: str) -> Callable[[], bytes]:
    """A function building the message ``name`` as the stack does and writing it out."""
    invite = parse_message(MESSAGES["INVITE"])
    bye = parse_message(MESSAGES["BYE"])
    uri = invite.uri
    via = Via("UDP", "10.0.0.2", 5061, (("branch", f"z9hG4bK-{CALL}-1-0"), ("rport", None)))
    from_ = Address.parse(FROM)
    to = Address.parse(TO_TAGGED)
    contact = Address.parse("<sip:sipp@10.0.0.2:5061>")

    def request(method: str, cseq: int, body: bytes = b"") -> bytes:
        headers = Headers()
        add = headers.add
        add("Via", str(via))
        add("Max-Forwards", "70")
        add("From", str(from_))
        add("To", str(to) if method != "INVITE" else TO)
        add("Call-ID", CALL_ID)
        add("CSeq", f"{cseq} {method}")
        if method == "INVITE":
            add("Contact", str(contact))
            add("Allow", ALLOW)
            add("Supported", "replaces, timer")
            add("Content-Type", "application/sdp")
        add("User-Agent", "omlmedia")
        return bytes(Request(method, uri, headers, body))

    if name == "INVITE":
        return lambda: request("INVITE", 1, OFFER)
    if name == "ACK":
        return lambda: request("ACK", 1)
    if name == "BYE":
        return lambda: request("BYE", 2)

    def ok_invite() -> bytes:
        response = make_response(invite, 200, to_tag="as58f4201b", body=ANSWER)
        add = response.headers.add
        add("Contact", "<sip:service@10.0.0.1:5060;transport=udp>")
        add("Allow", ALLOW)
        add("Supported", "replaces, timer")
        add("Content-Type", "application/sdp")
        add("Server", "omlmedia")
        return bytes(response)

    def ok_bye() -> bytes:
        response = make_response(bye, 200)
        response.headers.add("Server", "omlmedia")
        return bytes(response)

    return ok_invite if name == "200 INVITE" else ok_bye


def sdp_build() -> bytes:
    offer = SessionDescription.parse(OFFER)
    answer = negotiate(offer, DEFAULT_CAPABILITIES, "10.0.0.1", 20000, session_id=1, version=0)
    return bytes(answer.description)


def _heads() -> list[str]:
    return [data.split(b"\r\n\r\n", 1)[0].decode() + "\r\n\r\n" for data in MESSAGES.values()]


def cases() -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {}
    calls = [call_messages(call) for call in range(POOL)]
    for name in MESSAGES:
        pool = itertools.cycle([messages[name] for messages in calls])
        out[f"parse {name}"] = lambda pool=pool: parse(next(pool))  # type: ignore[misc]
    for name in MESSAGES:
        out[f"serialise {name}"] = builder(name)
    out["SDP parse offer"] = lambda: SessionDescription.parse(OFFER)
    out["SDP parse answer"] = lambda: SessionDescription.parse(ANSWER)
    parsed_answer = SessionDescription.parse(ANSWER)
    out["SDP write (bytes of a parsed answer)"] = lambda: bytes(parsed_answer)
    out["SDP answer (parse offer, negotiate, bytes)"] = sdp_build
    header_parser = email.parser.HeaderParser()
    heads = _heads()
    for name, head in zip(MESSAGES, heads, strict=True):
        out[f"floor: email HeaderParser {name}"] = lambda h=head: header_parser.parsestr(h)  # type: ignore[misc]
    return out


def measure(fn: Callable[[], object], rounds: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the CPU microseconds one call of ``fn`` costs."""
    for _ in range(min(rounds, 200)):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(rounds):
            fn()
        samples.append(time.process_time() - started)
    return 1e6 * statistics.median(samples) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    results: dict[str, float] = {}
    for name, fn in cases().items():
        results[name] = measure(fn, args.rounds)
        print(f"{name:48s} {results[name]:8.2f} us")
    n = len(MESSAGES)
    parse_mean = sum(results[f"parse {m}"] for m in MESSAGES) / n
    serialise_mean = sum(results[f"serialise {m}"] for m in MESSAGES) / n
    floor_mean = sum(results[f"floor: email HeaderParser {m}"] for m in MESSAGES) / n
    print(f"{'mean per message: parse':48s} {parse_mean:8.2f} us")
    print(f"{'mean per message: serialise':48s} {serialise_mean:8.2f} us")
    print(f"{'mean per message: parse + serialise':48s} {parse_mean + serialise_mean:8.2f} us")
    print(f"{'mean per message: floor (email HeaderParser)':48s} {floor_mean:8.2f} us")
    print(
        f"{'ratio parse + serialise / floor':48s} {(parse_mean + serialise_mean) / floor_mean:8.2f}"
    )
    if args.profile:
        profile = cProfile.Profile()
        all_cases = [fn for name, fn in cases().items() if not name.startswith("floor")]

        def run() -> None:
            for _ in range(args.rounds // 10):
                for fn in all_cases:
                    fn()

        profile.runcall(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
