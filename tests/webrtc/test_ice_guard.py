"""webrtc.channel's source check when the two ends of a peer connection select different pairs.

aioice nominates aggressively: the controlling end (the page) puts USE-CANDIDATE in every check,
so on a host with two addresses (IPv4 and IPv6: 192.0.2.2 and fd00::2 on the benchmark machine)
both pairs get nominated, and each end keeps as ``_nominated`` the one whose nomination it
completed last: the two ends can keep different pairs. Each then sends on its own. The source
check used to accept data after nomination only from the remote address of the local nominated
pair, so both ends dropped each other's DTLS: the handshake never finished while ICE said
"completed" (benchmarks/webrtc_bridge.py, N=40: 2 of 40 calls without audio either way).

Here the two ends are aioice's own objects (`Connection`, `StunProtocol`, `CandidatePair`) in the
state the benchmark left them in, without sockets: each "sends" on its nominated pair by handing
the datagram to the other end's protocol of that pair, through the installed guard.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioice import Candidate, Connection
from aioice.ice import CandidatePair, StunProtocol

from webrtc.channel import guard_counters, install_aioice_guards

PAGE = {"v4": ("192.0.2.10", 50000), "v6": ("fd00::10", 50002)}
SERVER = {"v4": ("192.0.2.20", 60000), "v6": ("fd00::20", 60002)}
CLIENT_HELLO = b"\x16\xfe\xfd" + bytes(100)
"""A DTLS record (content type 22): never STUN, goes to aioice's `data_received`."""
SRTP = b"\x80\x6f" + bytes(100)
"""An RTP packet (first byte 128-191): the guard's own short path."""


@dataclass
class End:
    connection: Connection
    protocols: dict[str, StunProtocol]
    pairs: dict[str, CandidatePair]

    def received(self) -> list[bytes]:
        out = []
        while not self.connection._queue.empty():
            out.append(self.connection._queue.get_nowait()[0])
        return out


def _candidate(host: str, port: int) -> Candidate:
    return Candidate("f" + str(port), 1, "udp", 100, host, port, "host")


def _end(
    controlling: bool, local: dict[str, tuple[str, int]], remote: dict[str, tuple[str, int]]
) -> End:
    connection = Connection(ice_controlling=controlling, components=1)
    protocols: dict[str, StunProtocol] = {}
    pairs: dict[str, CandidatePair] = {}
    for family, (host, port) in local.items():
        protocol = StunProtocol(connection)
        protocol.local_candidate = _candidate(host, port)
        protocols[family] = protocol
        pair = CandidatePair(protocol, _candidate(*remote[family]))
        pair.state = CandidatePair.State.SUCCEEDED
        pair.nominated = True  # aggressive nomination: every succeeded pair was nominated
        pair.remote_nominated = not controlling
        pairs[family] = pair
        connection._check_list.append(pair)
    return End(connection, protocols, pairs)


def _send(sender: End, receiver: End, data: bytes) -> None:
    """`sender` sends `data` on its nominated pair, as aioice's `Connection.sendto` does."""
    pair = sender.connection._nominated[1]
    family = next(f for f, p in sender.pairs.items() if p is pair)
    receiver.protocols[family].datagram_received(data, pair.local_addr)


async def test_each_end_takes_data_on_the_pair_the_other_end_selected() -> None:
    install_aioice_guards()
    page = _end(True, PAGE, SERVER)
    server = _end(False, SERVER, PAGE)
    # The race's outcome: the page completed its IPv6 nomination first and kept the IPv4 pair,
    # the server saw USE-CANDIDATE on IPv4 first and kept the IPv6 pair.
    page.connection._nominated[1] = page.pairs["v4"]
    server.connection._nominated[1] = server.pairs["v6"]
    before = guard_counters["dropped_foreign_source"]

    _send(server, page, CLIENT_HELLO)  # the server is the DTLS client (setup:active)
    assert page.received() == [CLIENT_HELLO]
    _send(page, server, CLIENT_HELLO)  # the page's ServerHello flight, on the page's pair
    assert server.received() == [CLIENT_HELLO]
    _send(page, server, SRTP)
    _send(server, page, SRTP)
    assert server.received() == [SRTP] and page.received() == [SRTP]
    assert guard_counters["dropped_foreign_source"] == before


async def test_strangers_and_unproven_addresses_are_still_dropped() -> None:
    install_aioice_guards()
    server = _end(False, SERVER, PAGE)
    server.connection._nominated[1] = server.pairs["v6"]
    # A pair from the page's SDP that no check proved (still waiting) is no source either.
    unproven = CandidatePair(server.protocols["v4"], _candidate("192.0.2.99", 40000))
    unproven.state = CandidatePair.State.WAITING
    server.connection._check_list.append(unproven)
    before = guard_counters["dropped_foreign_source"]

    protocol = server.protocols["v4"]
    protocol.datagram_received(CLIENT_HELLO, ("192.0.2.99", 40000))
    protocol.datagram_received(SRTP, ("192.0.2.66", 50000))
    # The page's own address, but on the other socket than the pair it proved.
    server.protocols["v6"].datagram_received(SRTP, PAGE["v4"])
    assert server.received() == []
    assert guard_counters["dropped_foreign_source"] == before + 3

    # A pair the page proved by an authenticated check carrying USE-CANDIDATE is a source
    # even before the server's own check on it succeeded.
    unproven.remote_nominated = True
    protocol.datagram_received(SRTP, ("192.0.2.99", 40000))
    assert server.received() == [SRTP]
