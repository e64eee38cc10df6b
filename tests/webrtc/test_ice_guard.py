"""webrtc.channel's source check when the two ends of a peer connection see ICE differently.

aioice nominates aggressively: the controlling end (the page) puts USE-CANDIDATE in every check,
so on a host with two addresses (IPv4 and IPv6: 192.0.2.2 and fd00::2 on the benchmark machine)
both pairs get nominated, and each end keeps as ``_nominated`` the one whose nomination it
completed last: the two ends can keep different pairs, and each sends on its own. An end also
sends as soon as its own check on a pair succeeded, which may be before the other end has
processed the answer to its check on the same pair. The source check used to accept data after
nomination only from the remote address of the local nominated pair (before it: of a succeeded
pair), so an end dropped the other's DTLS: the handshake stalled, or never finished while ICE
said "completed" (benchmarks/webrtc_bridge.py, N=40: 2 of 40 calls without audio either way).

Here the two ends are aioice's own objects (`Connection`, `StunProtocol`, `CandidatePair`, STUN
messages) in the states the benchmark left them in, without sockets: each "sends" on its
nominated pair by handing the datagram to the other end's protocol of that pair, through the
installed guard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aioice import Candidate, Connection, stun
from aioice.ice import CandidatePair, StunProtocol

from webrtc.channel import guard_counters, install_aioice_guards

Address = tuple[str, int]
PAGE = {"v4": ("192.0.2.10", 50000), "v6": ("fd00::10", 50002)}
SERVER = {"v4": ("192.0.2.20", 60000), "v6": ("fd00::20", 60002)}
CLIENT_HELLO = b"\x16\xfe\xfd" + bytes(100)
"""A DTLS record (content type 22): never STUN, goes to aioice's `data_received`."""
SRTP = b"\x80\x6f" + bytes(100)
"""An RTP packet (first byte 128-191): the guard's own short path."""


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sent.append((data, addr))


@dataclass
class End:
    connection: Connection
    protocols: dict[str, StunProtocol]
    pairs: dict[str, CandidatePair]
    transport: _Transport = field(default_factory=_Transport)

    def received(self) -> list[bytes]:
        out = []
        while not self.connection._queue.empty():
            out.append(self.connection._queue.get_nowait()[0])
        return out


def _candidate(address: Address) -> Candidate:
    return Candidate("f" + str(address[1]), 1, "udp", 100, address[0], address[1], "host")


def _end(controlling: bool, local: dict[str, Address], remote: dict[str, Address]) -> End:
    """One end after connect(): a pair per family, both checked and nominated (aggressive
    nomination: every pair the controlling end checked carries USE-CANDIDATE)."""
    connection = Connection(ice_controlling=controlling, components=1)
    connection._early_checks_done = True
    end = End(connection, {}, {})
    for family, address in local.items():
        protocol = StunProtocol(connection)
        protocol.local_candidate = _candidate(address)
        protocol.transport = end.transport  # type: ignore[assignment]
        end.protocols[family] = protocol
        remote_candidate = _candidate(remote[family])
        connection._remote_candidates.append(remote_candidate)
        pair = CandidatePair(protocol, remote_candidate)
        pair.state = CandidatePair.State.SUCCEEDED
        pair.nominated = True
        pair.remote_nominated = not controlling
        end.pairs[family] = pair
        connection._check_list.append(pair)
    return end


def _pair_up(page: End, server: End) -> None:
    page.connection.remote_username = server.connection.local_username
    page.connection.remote_password = server.connection.local_password
    server.connection.remote_username = page.connection.local_username
    server.connection.remote_password = page.connection.local_password


def _check(
    sender: End,
    receiver: End,
    family: str,
    *,
    password: str | None = None,
    source: Address | None = None,
) -> None:
    """`sender`'s connectivity check on its `family` pair reaches `receiver` (aioice answers
    it and takes it in `check_incoming`, both on `receiver`'s protocol of that pair)."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = (
        f"{receiver.connection.local_username}:{sender.connection.local_username}"
    )
    request.attributes["PRIORITY"] = 100
    if sender.connection.ice_controlling:
        request.attributes["ICE-CONTROLLING"] = sender.connection._tie_breaker
        request.attributes["USE-CANDIDATE"] = None
    else:
        request.attributes["ICE-CONTROLLED"] = sender.connection._tie_breaker
    request.add_message_integrity((password or receiver.connection.local_password).encode("utf8"))
    request.add_fingerprint()
    source = source or sender.pairs[family].local_addr
    receiver.protocols[family].datagram_received(bytes(request), source)


def _send(sender: End, receiver: End, data: bytes) -> None:
    """`sender` sends `data` on its nominated pair, as aioice's `Connection.sendto` does."""
    pair = sender.connection._nominated[1]
    family = next(f for f, p in sender.pairs.items() if p is pair)
    receiver.protocols[family].datagram_received(data, pair.local_addr)


async def test_each_end_takes_data_on_the_pair_the_other_end_selected() -> None:
    install_aioice_guards()
    page = _end(True, PAGE, SERVER)
    server = _end(False, SERVER, PAGE)
    # The outcome seen in the benchmark: the page kept the IPv4 pair, the server the IPv6 one.
    page.connection._nominated[1] = page.pairs["v4"]
    server.connection._nominated[1] = server.pairs["v6"]
    before = guard_counters["dropped_foreign_source"]

    _send(server, page, CLIENT_HELLO)  # the server is the DTLS client (setup:active)
    assert page.received() == [CLIENT_HELLO]
    _send(page, server, CLIENT_HELLO)  # the page's flight back, on the page's pair
    assert server.received() == [CLIENT_HELLO]
    _send(page, server, SRTP)
    _send(server, page, SRTP)
    assert server.received() == [SRTP] and page.received() == [SRTP]
    assert guard_counters["dropped_foreign_source"] == before


async def test_data_on_a_pair_the_peer_checked_before_our_own_check_completed() -> None:
    install_aioice_guards()
    page = _end(True, PAGE, SERVER)
    server = _end(False, SERVER, PAGE)
    _pair_up(page, server)
    # The page's check on IPv6 is still in progress (its answer is on the way, or lost and
    # retransmitted); it nominated IPv4. The server answered the page's IPv6 check (with
    # USE-CANDIDATE), its own check on IPv6 succeeded: it selects IPv6 and starts DTLS there.
    page.pairs["v6"].state = CandidatePair.State.IN_PROGRESS
    page.pairs["v6"].nominated = False
    page.connection._nominated[1] = page.pairs["v4"]
    server.connection._nominated[1] = server.pairs["v6"]
    _check(page, server, "v6")
    _check(server, page, "v6")  # the server's check the page answered
    assert [addr for _, addr in page.transport.sent] == [SERVER["v6"]]
    before = guard_counters["dropped_foreign_source"]

    _send(server, page, CLIENT_HELLO)
    assert page.received() == [CLIENT_HELLO]
    _send(page, server, CLIENT_HELLO)
    _send(server, page, SRTP)
    assert server.received() == [CLIENT_HELLO] and page.received() == [SRTP]
    assert guard_counters["dropped_foreign_source"] == before


async def test_strangers_and_unproven_addresses_are_still_dropped() -> None:
    install_aioice_guards()
    page = _end(True, PAGE, SERVER)
    server = _end(False, SERVER, PAGE)
    _pair_up(page, server)
    server.connection._nominated[1] = server.pairs["v6"]
    # A pair from the page's SDP that no check proved yet (ours waits, none came from it).
    unproven = _candidate(("192.0.2.99", 40000))
    server.connection._remote_candidates.append(unproven)
    waiting = CandidatePair(server.protocols["v4"], unproven)
    waiting.state = CandidatePair.State.WAITING
    server.connection._check_list.append(waiting)
    protocol = server.protocols["v4"]
    before = guard_counters["dropped_foreign_source"]

    protocol.datagram_received(CLIENT_HELLO, ("192.0.2.99", 40000))
    protocol.datagram_received(SRTP, ("192.0.2.66", 50000))
    # The page's IPv4 address, but on the socket of another pair.
    server.protocols["v6"].datagram_received(SRTP, PAGE["v4"])
    # A check that does not know our ICE password proves nothing (aioice answers 401).
    _check(page, server, "v4", password="not-the-password", source=("192.0.2.99", 40000))
    protocol.datagram_received(SRTP, ("192.0.2.99", 40000))
    assert server.received() == []
    assert guard_counters["dropped_foreign_source"] == before + 4
