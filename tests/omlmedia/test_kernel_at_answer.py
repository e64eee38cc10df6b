"""A B2BUA bridge's kernel rules go in at the answer, before the first RTP packet, against a real
kernel (caller, server and callee network namespaces): a call whose ends send from the addresses
their SDP gave never has a packet through Python, and an end that sends from another port still
gets through (its leg latches it and the rules are replaced in one transaction)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from media.kernelpath_nft import KernelPath
from media.leg import RtpLeg
from media.ports import PortAllocator, RtpSocketPool
from omlmedia.bridges import BridgeMedia
from tests.media.fakes import PCMU, rtp
from tests.media.netns import Hosts, enter, in_ns, module_hosts

CALLER_PORT = 5100
CALLEE_PORT = 4100
DEADLINE = 20.0


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    yield from module_hosts("oka")


@dataclass
class Answered:
    """A bridge the callee answered: the server's relay, the ends' sockets, where they send."""

    relay: BridgeMedia
    kernel: KernelPath
    hosts: Hosts
    caller_ip: str
    callee_ip: str
    host: str

    @property
    def a(self) -> RtpLeg:
        assert self.relay.a is not None
        return self.relay.a

    @property
    def b(self) -> RtpLeg:
        assert self.relay.b is not None
        return self.relay.b

    @property
    def userspace_received(self) -> int:
        return self.a.counters.received + self.b.counters.received

    def end(self, ns: str, host: str, port: int) -> socket.socket:
        with enter(ns):
            sock = socket.socket(
                socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
            )
        sock.bind((host, port))
        sock.setblocking(False)
        return sock


async def receive(sock: socket.socket) -> tuple[bytes, int]:
    """A datagram and the port it came from."""
    loop = asyncio.get_running_loop()
    data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), DEADLINE)
    return data, addr[1]


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
async def answered(hosts: Hosts, request: pytest.FixtureRequest) -> AsyncIterator[Answered]:
    caller_ip, server_a, _, callee_ip = hosts.addresses(request.param)
    wildcard = "0.0.0.0" if request.param == 4 else "::"
    with enter(hosts.server):
        pool = RtpSocketPool(PortAllocator(20400, 20500), wildcard)
        kernel = KernelPath()
        kernel.start()
        relay = BridgeMedia(pool, None, kernel, server_a)
        await relay.start()
    assert relay.a is not None and relay.b is not None
    # What the B2BUA does with the caller's offer and the callee's answer, then at the answer.
    relay.a.set_remote(caller_ip, CALLER_PORT)
    relay.b.set_remote(callee_ip, CALLEE_PORT)
    relay.a.set_format(PCMU)
    relay.b.set_format(PCMU)
    relay.join()
    relay.kernel_at_answer()
    try:
        yield Answered(relay, kernel, hosts, caller_ip, callee_ip, server_a)
    finally:
        relay.stop()
        kernel.stop()
        pool.close()


def listed(call: Answered) -> str:
    version = 6 if ":" in call.host else 4
    return in_ns(
        call.hosts.server, "nft", "list", "map", "inet", call.kernel.table, f"pre_port{version}"
    ).stdout


async def test_rules_are_in_at_the_answer_and_no_packet_of_the_call_reaches_python(
    answered: Answered,
) -> None:
    call = answered
    assert call.relay.on_kernel
    assert f"{CALLER_PORT} . " in listed(call) and f"{CALLEE_PORT} . " in listed(call)
    caller = call.end(call.hosts.caller, call.caller_ip, CALLER_PORT)
    callee = call.end(call.hosts.callee, call.callee_ip, CALLEE_PORT)
    try:
        for n in range(20):
            caller.sendto(rtp(n, 160 * n, 0x1111, payload=b"ab%d" % n), (call.host, call.a.port))
            data, port = await receive(callee)
            assert port == call.b.port and data[12:] == b"ab%d" % n
            callee.sendto(rtp(n, 160 * n, 0x2222, payload=b"ba%d" % n), (call.host, call.b.port))
            data, port = await receive(caller)
            assert port == call.a.port and data[12:] == b"ba%d" % n
    finally:
        caller.close()
        callee.close()
    assert call.userspace_received == 0
    assert not call.a.latched and not call.b.latched
    assert call.kernel.pair_counters(call.relay.kernel_key) == (20, 20)
    assert call.relay.packets == 40
    assert call.kernel.stats.installed == 1 and call.kernel.stats.replaced == 0


async def test_a_caller_sending_from_another_port_is_latched_and_its_rules_replaced(
    answered: Answered,
) -> None:
    call = answered
    # Behind a NAT that changed its port: the SDP said CALLER_PORT, it sends from + 2.
    caller = call.end(call.hosts.caller, call.caller_ip, CALLER_PORT + 2)
    callee = call.end(call.hosts.callee, call.callee_ip, CALLEE_PORT)
    try:
        caller.sendto(rtp(1, 160, 0x1111, payload=b"first"), (call.host, call.a.port))
        data, port = await receive(callee)
        assert port == call.b.port and data[12:] == b"first"
        # The rules did not match it: the leg took it, latched, and the rules were replaced.
        assert call.a.counters.received == 1 and call.a.peer == (call.caller_ip, CALLER_PORT + 2)
        assert call.kernel.stats.replaced == 1 and call.relay.on_kernel
        assert f"{CALLER_PORT + 2} . " in listed(call)
        for n in range(2, 12):
            caller.sendto(rtp(n, 160 * n, 0x1111, payload=b"ab%d" % n), (call.host, call.a.port))
            data, port = await receive(callee)
            assert port == call.b.port and data[12:] == b"ab%d" % n
            callee.sendto(rtp(n, 160 * n, 0x2222, payload=b"ba%d" % n), (call.host, call.b.port))
            data, port = await receive(caller)  # to the port it sends from, not its SDP's
            assert port == call.a.port and data[12:] == b"ba%d" % n
    finally:
        caller.close()
        callee.close()
    assert call.userspace_received == 1
    assert call.kernel.pair_counters(call.relay.kernel_key) == (10, 10)
    assert call.kernel.stats.installed == 1 and call.kernel.stats.failures == 0


async def test_a_packet_from_an_address_the_sdp_did_not_name_is_dropped_not_latched(
    answered: Answered,
) -> None:
    call = answered
    stranger_ip = call.callee_ip  # another host than the caller's, sending to leg A's port
    stranger = call.end(call.hosts.callee, stranger_ip, CALLEE_PORT + 4)
    try:
        stranger.sendto(rtp(1, 160, 0x3333, payload=b"spoof"), (call.host, call.a.port))
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while call.a.counters.dropped_source == 0:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        stranger.close()
    assert call.a.counters.received == 0 and not call.a.latched
    assert call.kernel.stats.replaced == 0
