"""The kernel path against a real kernel: a caller, the server and a callee in network
namespaces; the server's legs relay in userspace until the rules are installed, then the kernel
relays and the legs receive nothing, then removal hands the next packet back to the legs."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from media.bridge import MediaBridge
from media.kernelpath import ForwardedPair, Leg
from media.kernelpath_nft import KernelPath
from media.leg import RtpLeg
from media.ports import PortAllocator, RtpSocketPool
from tests.media.fakes import PCMU, rtp
from tests.media.netns import Hosts, enter, in_ns, module_hosts, require_kernel_tools

ROOT = Path(__file__).resolve().parents[2]
CALLER_PORT = 5000
CALLEE_PORT = 4000
DEADLINE = 20.0


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    yield from module_hosts("okp")


@dataclass
class Call:
    """One call through the server: the two end sockets and the server's bridged legs."""

    caller: socket.socket
    callee: socket.socket
    a: RtpLeg
    b: RtpLeg
    a_addr: tuple[str, int]
    b_addr: tuple[str, int]
    kernel: KernelPath

    @property
    def headers(self) -> int:
        """IP and UDP header bytes of a packet."""
        return 48 if ":" in self.a_addr[0] else 28

    @property
    def userspace_received(self) -> int:
        return self.a.counters.received + self.b.counters.received

    def pair(self, key: str = "1") -> ForwardedPair:
        assert self.a.peer is not None and self.b.peer is not None
        return ForwardedPair(key, Leg(self.a_addr, self.a.peer), Leg(self.b_addr, self.b.peer))


def end_socket(ns: str, host: str, port: int) -> socket.socket:
    with enter(ns):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def receive(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), DEADLINE)
    return data, (addr[0], addr[1])


async def exchange(call: Call, count: int, seq: int) -> tuple[list[bytes], list[bytes]]:
    """`count` packets each way, one at a time; checks every packet comes from the server's
    port facing the receiver. Returns what the callee and the caller received."""
    to_callee: list[bytes] = []
    to_caller: list[bytes] = []
    for n in range(count):
        call.caller.sendto(rtp(seq + n, 160 * (seq + n), 0x1111, payload=b"ab%d" % n), call.a_addr)
        data, source = await receive(call.callee)
        assert source == call.b_addr
        to_callee.append(data)
        call.callee.sendto(rtp(seq + n, 160 * (seq + n), 0x2222, payload=b"ba%d" % n), call.b_addr)
        data, source = await receive(call.caller)
        assert source == call.a_addr
        to_caller.append(data)
    return to_callee, to_caller


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
async def call(hosts: Hosts, request: pytest.FixtureRequest) -> AsyncIterator[Call]:
    caller_ip, server_a, server_b, callee_ip = hosts.addresses(request.param)
    wildcard = "0.0.0.0" if request.param == 4 else "::"
    with enter(hosts.server):
        pool = RtpSocketPool(PortAllocator(20000, 20100), wildcard)
        a = RtpLeg(await pool.acquire())
        b = RtpLeg(await pool.acquire())
        kernel = KernelPath()
        kernel.start()
    for leg, peer in ((a, (caller_ip, CALLER_PORT)), (b, (callee_ip, CALLEE_PORT))):
        leg.set_format(PCMU)
        leg.set_remote(*peer)
    bridge = MediaBridge(a, b)
    bridge.start()
    made = Call(
        end_socket(hosts.caller, caller_ip, CALLER_PORT),
        end_socket(hosts.callee, callee_ip, CALLEE_PORT),
        a,
        b,
        (server_a, a.port),
        (server_b, b.port),
        kernel,
    )
    try:
        yield made
    finally:
        bridge.stop()
        kernel.stop()
        made.caller.close()
        made.callee.close()
        for leg in (a, b):
            leg.close()
            pool.release(leg.pair)
        pool.close()


async def test_installed_pair_is_relayed_by_the_kernel_with_the_legs_receiving_nothing(
    call: Call,
) -> None:
    await exchange(call, 2, 1)  # userspace relays and both legs latch
    assert call.a.latched and call.b.latched
    before = call.userspace_received
    call.kernel.install(call.pair())
    to_callee, to_caller = await exchange(call, 20, 100)
    assert call.userspace_received == before
    assert call.kernel.pair_counters("1") == (20, 20)
    # The kernel moves the packets as they are: the payload crosses untouched.
    assert to_callee[5][12:] == b"ab5" and to_caller[7][12:] == b"ba7"
    # Counted in bytes of the network layer: IP and UDP headers with the RTP packet.
    counted = call.kernel.counters()[call.pair().counted("ab")]
    assert counted[1] == sum(len(p) + call.headers for p in to_callee)


async def test_removed_pair_falls_back_to_the_userspace_relay_at_the_next_packet(
    call: Call,
) -> None:
    await exchange(call, 2, 1)
    call.kernel.install(call.pair())
    await exchange(call, 5, 10)
    size = len(rtp(1, 1, payload=b"ab1")) + call.headers
    assert call.kernel.remove("1", "hangup") == (5, 5)
    assert call.kernel.stats.retired_bytes == 10 * size
    before = call.userspace_received
    await exchange(call, 5, 20)
    assert call.userspace_received == before + 10
    assert call.kernel.stats.fallbacks == {"hangup": 1}
    assert call.kernel.counters() == {}


async def test_replacing_a_pair_follows_a_far_end_that_moved(call: Call, hosts: Hosts) -> None:
    await exchange(call, 2, 1)
    call.kernel.install(call.pair())
    await exchange(call, 3, 10)
    # The callee moves to another port: the new pair replaces the old one in one transaction.
    callee_ip = call.b.peer[0] if call.b.peer else ""
    moved = end_socket(hosts.callee, callee_ip, CALLEE_PORT + 2)
    try:
        old = call.pair()
        new = ForwardedPair("1", old.a, Leg(old.b.local, (callee_ip, CALLEE_PORT + 2)))
        call.kernel.install(new)
        before = call.userspace_received
        call.caller.sendto(rtp(50, 8000, 0x1111, payload=b"moved"), call.a_addr)
        data, source = await receive(moved)
        assert source == call.b_addr and data[12:] == b"moved"
        assert call.userspace_received == before
        assert call.kernel.pair_counters("1") == (1, 0)
    finally:
        moved.close()


def udp_flows(namespace: str) -> set[tuple[str, int, str, int]]:
    """The UDP flows conntrack holds in `namespace` (their original direction: source address
    and port, destination address and port), from /proc/net/nf_conntrack."""
    text = in_ns(namespace, "cat", "/proc/net/nf_conntrack").stdout
    flows = set()
    for line in text.splitlines():
        fields = line.split()
        if "udp" not in fields:
            continue
        first: dict[str, str] = {}
        for part in fields:
            name, _, value = part.partition("=")
            first.setdefault(name, value)
        flows.add(
            (
                ipaddress.ip_address(first["src"]).compressed,
                int(first["sport"]),
                ipaddress.ip_address(first["dst"]).compressed,
                int(first["dport"]),
            )
        )
    return flows


@pytest.fixture
def conntrack_on(hosts: Hosts) -> Iterator[None]:
    """Connection tracking active in the server host (a table of another program that looks at
    every new connection, as a firewall would): without it there is nothing to bypass."""
    table = "okpct"
    in_ns(
        hosts.server,
        "nft",
        f"add table inet {table}; "
        f"add chain inet {table} pre {{ type filter hook prerouting priority 0; }}; "
        f"add rule inet {table} pre ct state new counter",
    )
    try:
        yield
    finally:
        in_ns(hosts.server, "nft", f"delete table inet {table}", check=False)


async def test_a_forwarded_call_is_not_tracked_by_conntrack_while_both_directions_flow(
    call: Call, hosts: Hosts, conntrack_on: None
) -> None:
    await exchange(call, 2, 1)  # userspace: each far end talks to one of our sockets
    tracked = udp_flows(hosts.server)
    caller, callee = call.pair().a.remote, call.pair().b.remote
    assert (*caller, *call.a_addr) in tracked  # conntrack is on: it saw the userspace relay's
    call.kernel.install(call.pair())
    await exchange(call, 20, 100)
    assert call.kernel.pair_counters("1") == (20, 20)
    # The rewritten packets (caller -> callee and back, as conntrack would see them after the
    # rewrite) left no entry, and nothing else was added: no conntrack work per packet.
    assert udp_flows(hosts.server) == tracked
    assert not {(*caller, *callee), (*callee, *caller)} & tracked


async def test_peers_on_the_server_host_are_relayed_through_the_output_hook(
    hosts: Hosts,
) -> None:
    with enter(hosts.server):
        pool = RtpSocketPool(PortAllocator(20200, 20300), "127.0.0.1")
        a = RtpLeg(await pool.acquire())
        b = RtpLeg(await pool.acquire())
        kernel = KernelPath()
        kernel.start()
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock, port in ((caller, CALLER_PORT), (callee, CALLEE_PORT)):
        sock.bind(("127.0.0.1", port))
        sock.setblocking(False)
    for leg, port in ((a, CALLER_PORT), (b, CALLEE_PORT)):
        leg.set_format(PCMU)
        leg.set_remote("127.0.0.1", port)
    bridge = MediaBridge(a, b)
    bridge.start()
    local = Call(caller, callee, a, b, ("127.0.0.1", a.port), ("127.0.0.1", b.port), kernel)
    try:
        await exchange(local, 2, 1)
        before = local.userspace_received
        kernel.install(local.pair("7"))
        await exchange(local, 10, 10)
        assert local.userspace_received == before
        assert kernel.pair_counters("7") == (10, 10)
        kernel.remove("7", "hold")
        await exchange(local, 2, 30)
        assert local.userspace_received == before + 4
    finally:
        bridge.stop()
        kernel.stop()
        caller.close()
        callee.close()
        for leg in (a, b):
            leg.close()
            pool.release(leg.pair)
        pool.close()


CRASHING_SERVER = """
import sys, time
from media.kernelpath import ForwardedPair, Leg
from media.kernelpath_nft import KernelPath
kernel = KernelPath()
kernel.start()
kernel.install(ForwardedPair("9", Leg(("198.18.1.1", 20000), ("198.18.1.2", 5000)),
                             Leg(("198.18.2.1", 20002), ("198.18.2.2", 4000))))
print("ready", flush=True)
time.sleep(60)
"""


def test_a_crash_leaves_no_rule_behind_after_the_next_start(hosts: Hosts) -> None:
    process = subprocess.Popen(
        ["ip", "netns", "exec", hosts.server, sys.executable, "-c", CRASHING_SERVER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    left = in_ns(hosts.server, "nft", "list", "table", "inet", "omlmedia").stdout
    assert "198.18.2.2" in left  # the crash left the call's elements in the kernel
    with enter(hosts.server):
        kernel = KernelPath()
        kernel.start()
    try:
        assert kernel.counters() == {}
        listing = in_ns(hosts.server, "nft", "list", "table", "inet", "omlmedia").stdout
        assert "198.18" not in listing
    finally:
        kernel.stop()
    gone = in_ns(hosts.server, "nft", "list", "tables", check=False).stdout
    assert "omlmedia" not in gone


def test_a_server_with_the_option_off_still_deletes_its_own_leftover_table(
    hosts: Hosts,
) -> None:
    with enter(hosts.server):
        crashed = KernelPath(table="omlmedia_5999")
        crashed.start()
        crashed.install(
            ForwardedPair(
                "3",
                Leg(("198.18.1.1", 20000), ("198.18.1.2", 5000)),
                Leg(("198.18.2.1", 20002), ("198.18.2.2", 4000)),
            )
        )
        # No stop(): the run "crashed". Another server's table is none of ours.
        other = KernelPath(table="omlmedia_5062")
        other.start()
        kernel, note = KernelPath.for_server(False, "omlmedia_5999")
    try:
        assert kernel is None and "off" in note
        listed = in_ns(hosts.server, "nft", "list", "tables").stdout
        assert "omlmedia_5999" not in listed and "omlmedia_5062" in listed
    finally:
        with enter(hosts.server):
            other.stop()


def test_a_server_with_the_option_on_says_it_is_active_and_how_far_it_reaches(
    hosts: Hosts,
) -> None:
    with enter(hosts.server):
        kernel, note = KernelPath.for_server(True, "omlmedia_5998")
    assert kernel is not None
    try:
        assert note == (
            "kernel forwarding is active (nftables table inet omlmedia_5998, "
            "far ends anywhere over IPv4 and IPv6)"
        )
        assert kernel.status() == {
            "active": True,
            "calls": 0,
            "packets": 0,
            "bytes": 0,
            "installed": 0,
            "replaced": 0,
            "failures": 0,
            "fallbacks": {},
            "transactions": 0,
            "listings": 0,
        }
        # A server's hang-ups share the next install's transaction.
        assert kernel.removal_delay > 0
    finally:
        kernel.stop()
    assert "omlmedia_5998" not in in_ns(hosts.server, "nft", "list", "tables").stdout


def test_without_cap_net_admin_the_server_says_why_the_kernel_path_is_not_active() -> None:
    require_kernel_tools()
    code = (
        "from media.kernelpath_nft import KernelPath\n"
        "kernel, note = KernelPath.for_server(True, 'omlmedia_5997')\n"
        "print(kernel, note)\n"
    )
    dropped = subprocess.run(
        [
            *("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"),
            *(sys.executable, "-c", code),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert dropped.stdout.strip() == (
        "None kernel forwarding is not active: the process lacks CAP_NET_ADMIN"
    )
