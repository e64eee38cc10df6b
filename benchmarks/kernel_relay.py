"""Kernel path: passthrough bridges relayed by nftables, against the userspace relay and rtpengine.

The load and the peers are those of benchmarks/media_relay.py (passthrough mode: N bridged PCMU
calls, 50 packets/s per leg and direction, marked payloads, the generator on core 1), run for
three relays in the same run, one after the other at each N:

- ``omlmedia``: `omlmedia serve` on core 0, userspace relay (the default);
- ``omlmedia-kernel``: the same server with ``[media] kernel_forwarding = true`` (it needs
  CAP_NET_ADMIN: run as root); once both legs of a call latched, nftables rules move its RTP;
- ``rtpengine``: userspace, on core 0, driven over ng. In a Kamailio + rtpengine deployment
  Kamailio only handles the SIP of call set-up, before the measurement window: what the window
  costs such a pair is rtpengine's.

Two topologies (``--topology``):

- ``netns`` (the default): three hosts in network namespaces of the benchmark's own
  (benchmarks/netns.py): the generator's caller legs on the caller host (198.18.1.2), its PBX legs
  on the callee host (198.18.2.2), the relay on the server host between them (198.18.1.1, SIP on
  its loopback), joined by veth links. Receive packet steering puts the server host's receive
  work on core 0 and the far ends' on core 1, as a network card's interrupts would: the kernel
  path's rewrite and forwarding then run in core 0's softirq, like on a real server, and a
  userspace relay's receive work does too. A relay's cost is its process's CPU plus core 0's
  softirq time over the window beyond what core 0 spent in softirq over an idle window of the
  same length just before (the other engineers' traffic). On this kernel (tick-sampled, no IRQ
  time accounting) a tick that lands in a softirq while the relay process runs counts in both
  figures, so for a userspace relay that sum is an upper bound and its process CPU alone a
  lower bound: both are printed, and the kernel path's ratio is given against both.
- ``loopback``: everything on 127.0.0.1 (the first measurements). The kernel's rewrite then runs
  inside the sender's ``sendto``, charged to the generator: a relay's cost there is its
  process's CPU plus the generator's CPU beyond the direct run (generator to itself) at the same
  N.

Each step also reports what could lose packets on the way: the generator's CPU and late sends,
the UDP receive-buffer drops of each host (/proc/net/snmp) and the cores' backlog drops
(/proc/net/softnet_stat), and how many packets the rules moved (the server's counters).

    sudo .venv/bin/python benchmarks/kernel_relay.py [--calls 50,100,200,400,800]
        [--duration 10] [--warmup 2] [--json out.json] [--skip-rtpengine]
        [--targets omlmedia,omlmedia-kernel,rtpengine] [--topology netns|loopback]
        [--receive rps|napi [--receive-nice N]]

``--receive napi`` receives the server host's packets in NAPI threads of its own pinned to core 0
(veth with GRO on, TSO off): their CPU is exactly the receive work, where the RPS softirq figure
is tick-sampled; but a veth ring holds 256 packets, so when such a thread waits for a busy core
packets are dropped that a network card's softirq would have taken (seen here for every relay
under load): use it for the CPU figures, RPS for loss.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness, media_relay, netns  # noqa: E402
from benchmarks.harness import fmt  # noqa: E402
from benchmarks.media_relay import (  # noqa: E402
    LOOPBACK,
    Addresses,
    Generator,
    Omlmedia,
    Rtpengine,
    Step,
    measure,
)
from benchmarks.procstat import (  # noqa: E402
    GENERATOR_CORE,
    SERVER_CORE,
    core_softirq_seconds,
    pin_self,
)

NETNS_ADDRESSES = Addresses(server="198.18.1.1", caller="198.18.1.2", pbx="198.18.2.2")
NETNS_RTP_PORTS = "20000-29999"  # the server host is ours alone: room for N = 2,000 and more
NETNS_GENERATOR_PORT = 10000


def enable_kernel_forwarding(text: str) -> str:
    """The benchmark server's configuration with the kernel path on."""
    assert "[media]\n" in text
    return text.replace("[media]\n", "[media]\nkernel_forwarding = true\n", 1)


def on_server_host(address: str) -> Callable[[str], str]:
    """The benchmark server's configuration for the server host of the netns topology: listening
    on every address (SIP and the API stay on its loopback) and advertising `address` in SDP."""

    def edit(text: str) -> str:
        old = 'listen = ["127.0.0.1"]\n'
        assert old in text
        return text.replace(old, f'listen = ["0.0.0.0"]\nadvertise = "{address}"\n', 1)

    return edit


@contextmanager
def edited_server_config(*edits: Callable[[str], str]) -> Iterator[None]:
    """media_relay's `Omlmedia` starts its server through harness.start_server: pass `edits`."""
    original = harness.start_server

    def edit_config(text: str) -> str:
        for edit in edits:
            text = edit(text)
        return text

    def start_server(*args: Any, **kwargs: Any) -> Any:
        return original(*args, edit_config=edit_config, **kwargs)

    setattr(harness, "start_server", start_server)  # noqa: B010 (a function of a module)
    try:
        yield
    finally:
        setattr(harness, "start_server", original)  # noqa: B010


class OmlmediaOn(Omlmedia):
    """`omlmedia serve` on the server host of the topology (`addresses.server`)."""

    def edits(self) -> list[Callable[[str], str]]:
        if self.addresses == LOOPBACK:
            return []
        return [on_server_host(self.addresses.server)]

    async def start(self) -> None:
        if self.addresses != LOOPBACK:
            self.rtp_ports = NETNS_RTP_PORTS
        with edited_server_config(*self.edits()):
            await super().start()


class OmlmediaKernel(OmlmediaOn):
    """`omlmedia serve` with ``[media] kernel_forwarding = true``."""

    name = "omlmedia-kernel"

    def edits(self) -> list[Callable[[str], str]]:
        return [*super().edits(), enable_kernel_forwarding]

    async def start(self) -> None:
        await super().start()
        kernel = self.status()["media"]["kernel"]
        if not kernel.get("active"):
            await self.stop()
            raise RuntimeError(f"the kernel path is not active: {kernel.get('reason')}")


# -- the load generator with its legs on the caller and callee hosts ------------------------------


def netns_generator_main(
    conn: Connection, core: int, namespaces: tuple[str, str], hosts: tuple[str, str]
) -> None:
    """Child process: media_relay's generator, its socket 2i (a caller leg) bound on the caller
    host `hosts[0]` in `namespaces[0]`, 2i+1 (a PBX leg) on the callee host. Each host is the
    benchmark's own, so its ports are free: 10000, 10002, ..."""
    pin_self(core)
    ulaw = media_relay.ulaw_tone_frames()
    opus = media_relay.opus_tone_frames()
    socks: list[socket.socket] = []
    conn.send(("ready", len(opus), sum(map(len, opus)) / len(opus)))
    while True:
        command, arg = conn.recv()
        if command == "bind":
            for s in socks:
                s.close()
            socks = []
            for j in range(arg):
                with netns.enter(namespaces[j % 2]):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((hosts[j % 2], NETNS_GENERATOR_PORT + 2 * (j // 2)))
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
                socks.append(s)
            conn.send([s.getsockname()[1] for s in socks])
        elif command == "run":
            conn.send(media_relay.run_load(socks, arg, ulaw, opus, conn))
        elif command == "close":
            for s in socks:
                s.close()
            socks = []
            conn.send("closed")
        else:
            conn.send("bye")
            return


class NetnsGenerator(Generator):
    """The parent's handle on a generator whose legs live on the caller and callee hosts."""

    def __init__(self, hosts: netns.Hosts, addresses: Addresses, core: int = GENERATOR_CORE):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=netns_generator_main,
            args=(child, core, (hosts.caller, hosts.callee), (addresses.caller, addresses.pbx)),
            name="rtp-load",
            daemon=True,
        )
        self.process.start()
        _, self.opus_frames, self.opus_bytes = self.conn.recv()


# -- what could lose packets ----------------------------------------------------------------------


@dataclass
class Drops:
    """Where packets may have been dropped over a step: UDP receive errors per host, the cores'
    receive backlog (netdev_max_backlog) overflows, conntrack entries on the server host."""

    udp_rcvbuf: dict[str, int] = field(default_factory=dict)
    backlog: list[int] = field(default_factory=list)
    conntrack: int = -1

    @classmethod
    def read(cls, hosts: netns.Hosts | None) -> Drops:
        names: dict[str, str | None] = (
            {"caller": hosts.caller, "server": hosts.server, "callee": hosts.callee}
            if hosts
            else {"loopback": None}
        )
        udp = {}
        for role, name in names.items():
            counters = netns.udp_counters(name)
            udp[role] = counters.get("RcvbufErrors", 0) + counters.get("InErrors", 0)
        conntrack = -1
        if hosts is not None:
            out = netns.in_ns(
                hosts.server, "cat", "/proc/sys/net/netfilter/nf_conntrack_count", check=False
            )
            conntrack = int(out.stdout) if out.returncode == 0 and out.stdout.strip() else -1
        return cls(udp, netns.softnet_dropped(), conntrack)

    def since(self, before: Drops) -> Drops:
        return Drops(
            {k: v - before.udp_rcvbuf.get(k, 0) for k, v in self.udp_rcvbuf.items()},
            [a - b for a, b in zip(self.backlog, before.backlog, strict=False)],
            self.conntrack,
        )

    def text(self) -> str:
        udp = " ".join(f"{k} {v}" for k, v in self.udp_rcvbuf.items())
        return f"drops: UDP {udp or '-'}; backlog {'/'.join(map(str, self.backlog))}" + (
            f"; conntrack entries {self.conntrack}" if self.conntrack >= 0 else ""
        )


@dataclass
class Row:
    """One relay at one N, with what it cost the machine."""

    target: str
    calls: int
    ok: bool
    loss_pct: float
    packets: int
    process_cpu_s: float
    generator_extra_cpu_s: float
    """Loopback: the generator's CPU over the window beyond the direct run's at this N."""
    softirq_s: float
    """Netns: core 0's softirq time over the window beyond an idle window's (0 on loopback)."""
    relay_cpu_s: float
    """Process CPU plus the generator's extra (loopback) or the softirq (netns)."""
    cpu_us_per_call_second: float
    cpu_us_per_packet: float
    process_us_per_call_second: float
    """The process's CPU alone: a lower bound for a userspace relay (see the module's text)."""
    kernel_packets: int
    latency_p50_us: float
    latency_p99_us: float
    added_p50_us: float
    added_p99_us: float
    other_load_on_core: float
    generator_cpu: float
    late_sends: int
    load_average: float
    drops: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    offered_pct: float = math.nan
    """What the generator sent over the window, in % of N calls' packets (100/s per call): below
    99 % it fell behind, and the call-seconds are those of the packets it did send."""
    forwarding_us_per_packet: float = math.nan
    """Netns: core 0's softirq per packet of the direct run (caller host to callee host, routed
    through the server host: forwarding alone, no rules, no relay) at this N."""


def row(
    step: Step,
    base: Step,
    duration: float,
    kernel: int,
    topology: str,
    idle_softirq: float,
    drops: Drops,
) -> Row:
    load = os.getloadavg()[0]
    if not step.ok:  # set-up failed: nothing was measured
        nan = math.nan
        return Row(step.target, step.calls, False, 100.0, 0, nan, nan, nan, nan, nan, nan, nan, 0,
                   nan, nan, nan, nan, 0.0, nan, 0, load, asdict(drops),
                   step.error or "set-up failed")  # fmt: skip
    extra = duration * (
        step.generator.get("generator_cpu_fraction", 0.0)
        - base.generator.get("generator_cpu_fraction", 0.0)
    )
    if topology == "napi":
        softirq = step.receive_cpu_s
    elif topology == "rps":
        softirq = max(0.0, step.softirq_s[0] - idle_softirq)
    else:
        softirq = 0.0
    relay = max(0.0, step.cpu_seconds + (extra if topology == "loopback" else softirq))
    latency = step.latency_us or {}
    offered = step.sent / (100 * duration)  # calls' worth of packets the generator sent
    call_seconds = offered * duration
    forwarding = (
        1e6
        * (base.receive_cpu_s if topology == "napi" else max(0.0, base.softirq_s[0] - idle_softirq))
        / base.packets
        if topology != "loopback" and base.packets
        else math.nan
    )
    return Row(
        step.target,
        step.calls,
        step.ok and step.loss_pct <= 0.1,
        step.loss_pct,
        step.packets,
        step.cpu_seconds,
        extra,
        softirq,
        relay,
        1e6 * relay / call_seconds if call_seconds else math.nan,
        1e6 * relay / step.packets if step.packets else math.nan,
        1e6 * step.cpu_seconds / call_seconds if call_seconds else math.nan,
        kernel,
        latency.get("p50", math.nan),
        latency.get("p99", math.nan),
        step.added_latency_us.get("p50", math.nan),
        step.added_latency_us.get("p99", math.nan),
        step.other_load_on_core,
        step.generator.get("generator_cpu_fraction", math.nan),
        int(step.generator.get("late_sends_over_2ms", 0)),
        load,
        asdict(drops),
        step.error,
        100 * offered / step.calls if step.calls else math.nan,
        forwarding,
    )


def print_row(r: Row, topology: str) -> None:
    added = (
        f"receive {r.softirq_s:6.3f} s"
        if topology != "loopback"
        else f"generator's extra {r.generator_extra_cpu_s:6.3f} s"
    )
    drops = r.drops
    print(
        f"  {r.target:>15} N={r.calls:<4} {'ok ' if r.ok else 'BAD'} loss {r.loss_pct:6.3f} %  "
        f"{r.packets:>7} pkts ({r.kernel_packets} by the kernel)  "
        f"process CPU {r.process_cpu_s:6.3f} s + {added}"
        f" = relay CPU {r.relay_cpu_s:6.3f} s = "
        f"{fmt(r.cpu_us_per_call_second, '.0f')} us/call-s "
        f"(process alone {fmt(r.process_us_per_call_second, '.0f')}), "
        f"{fmt(r.cpu_us_per_packet, '.2f')} us/pkt"
        + (
            f" (forwarding alone {fmt(r.forwarding_us_per_packet, '.2f')} us/pkt)"
            if topology != "loopback"
            else ""
        )
        + f"  offered {fmt(r.offered_pct, '.0f')} % of N  "
        f"added latency p50 {fmt(r.added_p50_us, '.0f')} p99 {fmt(r.added_p99_us, '.0f')} us  "
        f"other load {100 * r.other_load_on_core:.0f} %  "
        f"gen CPU {100 * r.generator_cpu:.0f} % late>2ms {r.late_sends}  "
        f"load avg {r.load_average:.1f}  "
        f"{Drops(drops['udp_rcvbuf'], drops['backlog'], drops['conntrack']).text()}"
        + (f"  {r.error}" if r.error else ""),
        flush=True,
    )


async def idle_softirq(seconds: float) -> float:
    """Core 0's softirq time over `seconds` with no load of ours: the machine's background."""
    before = core_softirq_seconds(SERVER_CORE)
    await asyncio.sleep(seconds)
    return core_softirq_seconds(SERVER_CORE) - before


async def ramp(
    gen: Generator,
    target: Omlmedia | Rtpengine,
    calls: list[int],
    baselines: dict[int, Step],
    args: argparse.Namespace,
    addresses: Addresses,
    hosts: netns.Hosts | None,
    mode: str,
    receive_pids: tuple[int, ...],
) -> list[Row]:
    """`target` over the ramp, stopping after the first N with loss or failures."""
    rows: list[Row] = []
    for n in calls:
        if n not in baselines:
            baselines[n] = await measure(gen, None, "passthrough", n, args, addresses, receive_pids)
            media_relay.print_step(baselines[n])
        base = baselines[n]
        background = await idle_softirq(args.duration) if mode == "rps" else 0.0
        before = _kernel_packets(target)
        drops = Drops.read(hosts)
        step = await measure(gen, target, "passthrough", n, args, addresses, receive_pids)
        drops = Drops.read(hosts).since(drops)
        if step.ok:
            step.added_latency_us = {
                q: step.latency_us[q] - base.latency_us[q] for q in ("p50", "p99")
            }
        r = row(
            step,
            base,
            args.duration,
            _kernel_packets(target) - before,
            mode,
            background,
            drops,
        )
        rows.append(r)
        print_row(r, mode)
        if not r.ok:
            break
    return rows


def _kernel_packets(target: Omlmedia | Rtpengine) -> int:
    if not isinstance(target, Omlmedia):
        return 0
    kernel = target.status().get("media", {}).get("kernel", {})
    return int(kernel.get("packets", 0)) if kernel.get("active") else 0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    calls = [int(n) for n in args.calls.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="kernel_relay-"))
    pin_self(GENERATOR_CORE)
    results: dict[str, list[Row]] = {}
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.skip_rtpengine:
        wanted = [t for t in wanted if t != "rtpengine"]
    mode = args.receive if args.topology == "netns" else "loopback"
    print(f"work dir {workdir}; topology {args.topology}, receive {mode}", flush=True)
    with ExitStack() as stack:
        hosts: netns.Hosts | None = None
        receive_pids: tuple[int, ...] = ()
        addresses = LOOPBACK
        if args.topology == "netns":
            topology = stack.enter_context(
                netns.topology(f"okb{os.getpid() % 10000}", args.receive, args.receive_nice)
            )
            hosts, receive_pids = topology.hosts, topology.receive_pids
            addresses = NETNS_ADDRESSES
            gen: Generator = NetnsGenerator(hosts, addresses)
        else:
            gen = Generator()
        makers: dict[str, Callable[[], Omlmedia | Rtpengine]] = {
            "omlmedia": lambda: OmlmediaOn(workdir / "omlmedia", addresses=addresses),
            "omlmedia-kernel": lambda: OmlmediaKernel(
                workdir / "omlmedia-kernel", addresses=addresses
            ),
            "rtpengine": lambda: Rtpengine(workdir, addresses),
        }
        baselines: dict[int, Step] = {}
        try:
            for name in wanted:
                target = makers[name]()
                if isinstance(target, Rtpengine):
                    target.start()
                else:
                    await target.start()
                print(f"{target.name} (pid {target.pid}):", flush=True)
                try:
                    results[target.name] = await ramp(
                        gen, target, calls, baselines, args, addresses, hosts, mode, receive_pids
                    )
                finally:
                    await target.stop()
        finally:
            gen.close()
    return summarize(results, args)


def summarize(results: dict[str, list[Row]], args: argparse.Namespace) -> dict[str, Any]:
    """The largest N each relay carried with no failure and loss <= 0.1 %, and at each N the
    CPU per call-second of each relay and its ratio to rtpengine's (steps with loss included,
    marked); in the netns topology also the ratio to rtpengine's process CPU alone."""
    print("\nlargest N with 0 failures and loss <= 0.1 %:")
    largest = {
        name: max((r.calls for r in rows if r.ok), default=0) for name, rows in results.items()
    }
    for name, best in largest.items():
        print(f"  {name:>15}: {best}")
    print("CPU per call-second (us) and per relayed packet (us), ratio to rtpengine:")
    ratios: dict[str, dict[int, float]] = {}
    ratios_to_process: dict[str, dict[int, float]] = {}
    for n in sorted({r.calls for rows in results.values() for r in rows}):
        at = {name: next((r for r in rows if r.calls == n), None) for name, rows in results.items()}
        reference = at.get("rtpengine")
        cells = []
        for name, r in at.items():
            if r is None or math.isnan(r.cpu_us_per_call_second):
                continue
            cell = f"{name} {r.cpu_us_per_call_second:.0f} ({r.cpu_us_per_packet:.2f}/pkt)" + (
                "" if r.ok else " [loss]"
            )
            if (
                name != "rtpengine"
                and reference is not None
                and reference.cpu_us_per_call_second > 0
                and not math.isnan(reference.cpu_us_per_call_second)
            ):
                ratio = r.cpu_us_per_call_second / reference.cpu_us_per_call_second
                ratios.setdefault(name, {})[n] = ratio
                cell += f" = {ratio:.2f}x"
                if args.topology == "netns" and reference.process_us_per_call_second > 0:
                    low = r.cpu_us_per_call_second / reference.process_us_per_call_second
                    ratios_to_process.setdefault(name, {})[n] = low
                    cell += f" ({low:.2f}x of rtpengine's process alone)"
            cells.append(cell)
        print(f"  N={n}: " + "; ".join(cells))
    return netns.summary(
        args,
        results,
        largest_n=largest,
        ratio_to_rtpengine=ratios,
        ratio_to_rtpengine_process=ratios_to_process,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    netns.add_arguments(
        parser, calls="50,100,200,400,800", targets="omlmedia,omlmedia-kernel,rtpengine",
        what="relays",
    )  # fmt: skip
    parser.add_argument("--warmup", type=float, default=2.0, help="load before the window (s)")
    parser.add_argument("--skip-rtpengine", action="store_true")
    parser.add_argument(
        "--topology",
        choices=("netns", "loopback"),
        default="netns",
        help="far ends on hosts of their own behind veth (netns) or all on 127.0.0.1",
    )
    args = parser.parse_args()
    netns.unwind_on_sigterm()
    unknown = {t.strip() for t in args.targets.split(",")} - {
        "omlmedia",
        "omlmedia-kernel",
        "rtpengine",
    }
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
