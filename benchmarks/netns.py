"""Three hosts on one machine: caller, server and callee network namespaces joined by veth links
(the server routes between them), IPv4 and IPv6. The kernel-path tests and benchmarks use them.

    caller 198.18.1.2 / fd00:18:1::2  --  198.18.1.1 / fd00:18:1::1  server
    server 198.18.2.1 / fd00:18:2::1  --  198.18.2.2 / fd00:18:2::2  callee

`enter(name)` switches the calling thread into a namespace (setns(2)) and back: a socket or a
netlink context created inside keeps that namespace for its life, and a process started inside
runs there, so one process plays the three hosts. The namespaces and links are deleted at the
end. `steer_receive` makes a host's packets be received on a chosen core (RPS), as a network
card's interrupt would on a real machine: without it, a veth delivers in the sender's system call.

The kernel-path benchmarks (kernel_relay.py, kernel_sipp.py) share the rest: `topology` (the
three hosts with the server host's receive work on the server's core, this thread inside the
server host), their common command-line options (`add_arguments`), the JSON summary
(`summary`) and `unwind_on_sigterm`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.procstat import GENERATOR_CORE, SERVER_CORE

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the block in network namespace `name` (this thread only)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def in_ns(name: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, *command],
        check=check,
        capture_output=True,
        text=True,
        timeout=20,
    )


@dataclass(frozen=True)
class Hosts:
    caller: str
    server: str
    callee: str
    tag: str = ""

    def addresses(self, version: int) -> tuple[str, str, str, str]:
        """(caller, server towards caller, server towards callee, callee)."""
        if version == 4:
            return "198.18.1.2", "198.18.1.1", "198.18.2.1", "198.18.2.2"
        return "fd00:18:1::2", "fd00:18:1::1", "fd00:18:2::1", "fd00:18:2::2"

    def links(self) -> dict[str, tuple[str, str]]:
        """The veth ends: {"caller": (server's end, caller's end), "callee": (...)}."""
        return {
            "caller": (f"{self.tag}c0", f"{self.tag}c1"),
            "callee": (f"{self.tag}e0", f"{self.tag}e1"),
        }


@contextlib.contextmanager
def three_hosts(tag: str) -> Iterator[Hosts]:
    """Create the caller, server and callee namespaces; delete them afterwards."""
    hosts = Hosts(f"{tag}c", f"{tag}s", f"{tag}e", tag)
    created: list[str] = []
    try:
        for name in (hosts.caller, hosts.server, hosts.callee):
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        for side, peer, net in (("c", hosts.caller, 1), ("e", hosts.callee, 2)):
            outer, inner = f"{tag}{side}0", f"{tag}{side}1"
            ip("link", "add", outer, "netns", hosts.server, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", peer)
            ip("-n", hosts.server, "addr", "add", f"198.18.{net}.1/24", "dev", outer)
            ip("-n", hosts.server, "addr", "add", f"fd00:18:{net}::1/64", "dev", outer, "nodad")
            ip("-n", hosts.server, "link", "set", outer, "up")
            ip("-n", peer, "addr", "add", f"198.18.{net}.2/24", "dev", inner)
            ip("-n", peer, "addr", "add", f"fd00:18:{net}::2/64", "dev", inner, "nodad")
            ip("-n", peer, "link", "set", inner, "up")
            ip("-n", peer, "route", "add", "default", "via", f"198.18.{net}.1")
            ip("-n", peer, "-6", "route", "add", "default", "via", f"fd00:18:{net}::1")
        in_ns(hosts.server, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns(hosts.server, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        yield hosts
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def steer_receive(namespace: str, device: str, core: int) -> None:
    """Receive what arrives on `device` (in `namespace`) on `core`: receive packet steering, so
    the receive softirq (netfilter hooks, routing, forwarding, socket delivery) runs there."""
    in_ns(
        namespace,
        "sh",
        "-c",
        f"echo {1 << core:x} > /sys/class/net/{device}/queues/rx-0/rps_cpus",
    )


def threaded_napi(namespace: str, device: str, core: int, nice: int = 0) -> int:
    """Receive what arrives on `device` in a kernel thread of its own (veth NAPI, enabled by GRO,
    in threaded mode) pinned to `core` at `nice`: the receive work (netfilter hooks, routing,
    forwarding, socket delivery) runs there in batches, as a network card's NAPI poll would, and
    its CPU time is that thread's. Returns the thread's pid."""
    # veth hands a packet to the peer's NAPI only when GRO is on there and TSO off here
    in_ns(namespace, "ethtool", "-K", device, "gro", "on", "tso", "off")
    in_ns(namespace, "sh", "-c", f"echo 1 > /sys/class/net/{device}/threaded")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith(f"napi/{device}-"):
            pid = int(entry)
            os.sched_setaffinity(pid, {core})
            os.setpriority(os.PRIO_PROCESS, pid, nice)
            return pid
    raise RuntimeError(f"no NAPI thread for {device}")


def udp_counters(namespace: str | None) -> dict[str, int]:
    """A namespace's UDP counters (/proc/net/snmp ``Udp:``: InDatagrams, InErrors,
    RcvbufErrors, SndbufErrors, NoPorts...); None: the calling process's own namespace."""
    text = (
        in_ns(namespace, "cat", "/proc/net/snmp").stdout
        if namespace is not None
        else open("/proc/self/net/snmp").read()
    )
    lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


def softnet_dropped() -> list[int]:
    """Packets each core dropped because its receive backlog was full (/proc/net/softnet_stat,
    second column; per core, whatever the namespace)."""
    return [int(line.split()[1], 16) for line in open("/proc/net/softnet_stat").read().splitlines()]


# -- what the kernel-path benchmarks share ------------------------------------------------------


@dataclass
class Topology:
    """The three hosts, and the threads that do the server host's receive work (NAPI mode)."""

    hosts: Hosts
    receive_pids: tuple[int, ...] = ()


@contextlib.contextmanager
def topology(tag: str, receive: str = "rps", nice: int = 0) -> Iterator[Topology]:
    """The three hosts, the server host's receive work on the server's core and the far ends'
    on the generator's core; this thread inside the server host for the block (the servers it
    starts, their SIP peers and API clients live there too). `receive`: ``rps``, receive packet
    steering (the core's softirq, as a network card's interrupt; one inter-processor interrupt
    per packet); ``napi``, each veth end received by a NAPI thread of its own, pinned (at
    `nice`): its CPU is exactly the receive work, but the veth ring holds 256 packets, so a
    thread that waits for a busy core drops packets a network card's softirq would not."""
    with three_hosts(tag) as hosts:
        pids: list[int] = []
        for side, (server_end, far_end) in hosts.links().items():
            far_host = hosts.caller if side == "caller" else hosts.callee
            if receive == "napi":
                pids.append(threaded_napi(hosts.server, server_end, SERVER_CORE, nice))
                threaded_napi(far_host, far_end, GENERATOR_CORE, nice)
            else:
                steer_receive(hosts.server, server_end, SERVER_CORE)
                steer_receive(far_host, far_end, GENERATOR_CORE)
        with enter(hosts.server):
            yield Topology(hosts, tuple(pids))


def add_arguments(parser: argparse.ArgumentParser, *, calls: str, targets: str, what: str) -> None:
    """The options both kernel-path benchmarks take: the ramp of N, the window, the systems
    (`what`: what they are called) in their order, the JSON output, how the server host
    receives."""
    parser.add_argument("--calls", default=calls, help="the ramp of N")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window (s)")
    parser.add_argument("--targets", default=targets, help=f"which {what} to run, in this order")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--receive",
        choices=("rps", "napi"),
        default="rps",
        help="how the server host receives (its own NAPI threads, or steering to its core)",
    )
    parser.add_argument(
        "--receive-nice",
        type=int,
        default=0,
        help=f"napi: the receive threads' nice (as the {what}' when the run is given a priority)",
    )


def summary(args: argparse.Namespace, rows: dict[str, list[Any]], **fields: Any) -> dict[str, Any]:
    """A run's summary: its options, each system's rows (dataclasses) and `fields`, stamped
    with the time; written to ``--json`` when given."""
    out = {
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "rows": {name: [asdict(r) for r in found] for name, found in rows.items()},
        **fields,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def unwind_on_sigterm() -> None:
    """A SIGTERM unwinds the benchmark like ^C: its namespaces and peers go."""
    signal.signal(signal.SIGTERM, _terminated)
