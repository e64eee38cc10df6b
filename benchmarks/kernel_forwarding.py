"""What the server host's kernel spends per forwarded packet, by how it forwards.

One UDP stream from the caller host to the callee host through the server host
(benchmarks/netns.py's three hosts, IPv4), in five set-ups, each on hosts made afresh:

- ``forwarding``: plain routing, the stream addressed to the callee (no rule, no conntrack);
- ``forwarding+conntrack``: the same with connection tracking on in the server host (a table
  that looks at new connections, as a firewall's would);
- ``kernel path``: the stream addressed to our port A, moved by the kernel path's rules
  (`media.kernelpath`: stateless rewrite before conntrack, four map look-ups a packet);
- ``kernel path+conntrack``: the same with connection tracking on (the rules mark the packets
  untracked first);
- ``conntrack NAT``: the stream addressed to our port A, DNAT to the callee and SNAT to our port
  B through conntrack (the issue's first design: the rules see a flow's first packet only).

No receive steering: a veth delivers in its sender's system call, so the sending thread's CPU
(``time.thread_time``) is the whole path's: the caller host's send, the server host's hooks,
routing and forwarding, the callee host's socket. The set-ups differ only in the server host,
so their differences are what its forwarding costs. The callee's socket is read only once the
stream is sent (a full buffer drops a packet at the very end of its path, the same in every
set-up); the packets that reached it are checked, and those the rules counted.

    sudo .venv/bin/python benchmarks/kernel_forwarding.py [--packets 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import netns  # noqa: E402
from benchmarks.procstat import GENERATOR_CORE  # noqa: E402
from media.kernelpath import ForwardedPair, Leg  # noqa: E402
from media.kernelpath_nft import KernelPath  # noqa: E402

SETUPS = (
    "forwarding",
    "forwarding+conntrack",
    "kernel path",
    "kernel path+conntrack",
    "conntrack NAT",
)
OUR_A, OUR_B, CALLER_PORT, CALLEE_PORT = 20000, 20002, 5000, 4000
PAYLOAD = b"\x80" + bytes(171)  # an RTP packet of 20 ms of G.711


def track_connections(namespace: str) -> None:
    """Connection tracking on in `namespace`, as a firewall that looks at new connections puts
    it: what forwarding costs there then includes conntrack, except for packets marked untracked
    (the kernel path's rules mark theirs before conntrack sees them)."""
    netns.in_ns(
        namespace,
        "nft",
        "add table inet okfct; "
        "add chain inet okfct pre { type filter hook prerouting priority 0; }; "
        "add rule inet okfct pre ct state new counter",
    )


def conntrack_nat(hosts: netns.Hosts) -> None:
    """DNAT our port A to the callee, SNAT to our port B: conntrack remembers each flow."""
    _, server_a, server_b, callee = hosts.addresses(4)
    netns.in_ns(
        hosts.server,
        "nft",
        "add table ip okfnat; "
        "add chain ip okfnat pre { type nat hook prerouting priority -100; }; "
        "add chain ip okfnat post { type nat hook postrouting priority 100; }; "
        f"add rule ip okfnat pre ip daddr {server_a} udp dport {OUR_A} "
        f"dnat to {callee}:{CALLEE_PORT}; "
        f"add rule ip okfnat post ip daddr {callee} udp dport {CALLEE_PORT} "
        f"snat to {server_b}:{OUR_B}",
    )


def delivered(hosts: netns.Hosts) -> int:
    counters = netns.udp_counters(hosts.callee)
    return counters.get("InDatagrams", 0) + counters.get("RcvbufErrors", 0)


def counted_by_rules(kernel: KernelPath | None) -> int:
    """Packets the kernel path's rules moved from the caller (0 without them)."""
    found = kernel.pair_counters("1") if kernel is not None else None
    return found[0] if found is not None else 0


def drain(sink: socket.socket) -> int:
    """Read what `sink` holds; how many datagrams."""
    count = 0
    while True:
        try:
            sink.recv(2048)
        except BlockingIOError:
            return count
        count += 1


def warm_up(sink: socket.socket, source: socket.socket, target: tuple[str, int]) -> None:
    """Send until a packet reaches the callee's socket: the neighbours are resolved on both
    hops (packets sent before are dropped while they are) and a NAT flow exists; the socket is
    left empty. Not timed."""
    deadline = time.monotonic() + 10
    arrived = False
    while not arrived:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing reached the callee host through {target}")
        source.sendto(PAYLOAD, target)
        time.sleep(0.005)
        arrived = drain(sink) > 0


def measure(setup: str, packets: int, tag: str) -> tuple[float, int, int]:
    """(µs of CPU per packet, packets the callee host received, packets the rules counted)."""
    with netns.three_hosts(tag) as hosts:
        caller, server_a, server_b, callee = hosts.addresses(4)
        with netns.enter(hosts.callee):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with netns.enter(hosts.caller):
            source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        kernel: KernelPath | None = None
        try:
            sink.bind((callee, CALLEE_PORT))
            sink.setblocking(False)
            source.bind((caller, CALLER_PORT))
            if setup.endswith("+conntrack"):
                track_connections(hosts.server)
            target = (server_a, OUR_A)
            if setup.startswith("kernel path"):
                with netns.enter(hosts.server):
                    kernel = KernelPath()
                    kernel.start()
                kernel.install(
                    ForwardedPair(
                        "1",
                        Leg((server_a, OUR_A), (caller, CALLER_PORT)),
                        Leg((server_b, OUR_B), (callee, CALLEE_PORT)),
                    )
                )
            elif setup == "conntrack NAT":
                conntrack_nat(hosts)
            else:
                target = (callee, CALLEE_PORT)
            warm_up(sink, source, target)
            before = delivered(hosts)
            warmed = counted_by_rules(kernel)
            start = time.thread_time()
            for _ in range(packets):
                source.sendto(PAYLOAD, target)
            cpu = time.thread_time() - start
            drain(sink)  # the kernel counts a datagram received when it is read
            got = delivered(hosts) - before
            counted = counted_by_rules(kernel) - warmed if kernel is not None else -1
            return 1e6 * cpu / packets, got, counted
        finally:
            if kernel is not None:
                kernel.stop()
            source.close()
            sink.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000, help="packets per set-up")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the five set-ups")
    args = parser.parse_args()
    netns.unwind_on_sigterm()
    os.sched_setaffinity(0, {GENERATOR_CORE})
    found: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for setup in SETUPS:
            us, got, counted = measure(setup, args.packets, f"okf{os.getpid() % 10000}")
            found.setdefault(setup, []).append(us)
            print(
                f"  {setup:>21}: {us:6.3f} us/packet, {got}/{args.packets} delivered"
                + (f", {counted} counted by the rules" if counted >= 0 else ""),
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.1f}; median CPU per forwarded packet:")
    plain = sorted(found["forwarding"])[len(found["forwarding"]) // 2]
    for setup, runs in found.items():
        median = sorted(runs)[len(runs) // 2]
        print(f"  {setup:>21}: {median:6.3f} us ({median - plain:+.3f} over plain forwarding)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
