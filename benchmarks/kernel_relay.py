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

What a relay costs. A userspace relay's cost is its process's CPU, but the kernel path's rewrite
runs in the kernel: on loopback, inside the sending process's ``sendto`` (the output hook, then
the receive softirq that runs on the way out of the system call). With tick-based CPU accounting
and no IRQ time accounting (this machine's kernel), that time is charged to the sender, here the
load generator. So each step's "relay CPU" is the relay process's CPU plus what the generator
spent over the window beyond the direct loopback run at the same N (the generator sending to
itself: the same packets, sent and received, with no relay). For a userspace relay the second
term is about zero (the generator sends and receives as many packets either way); for the kernel
path it is the rules' cost. Both are per-process figures, so other work on the machine disturbs
them far less than the cores' busy time would (that is reported as ``other load``).

    sudo .venv/bin/python benchmarks/kernel_relay.py [--calls 50,100,200,400,800]
        [--duration 10] [--warmup 2] [--json out.json] [--skip-rtpengine]
        [--targets omlmedia,omlmedia-kernel,rtpengine]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness, media_relay  # noqa: E402
from benchmarks.harness import fmt  # noqa: E402
from benchmarks.media_relay import Generator, Omlmedia, Rtpengine, Step, measure  # noqa: E402
from benchmarks.procstat import GENERATOR_CORE, pin_self  # noqa: E402


def enable_kernel_forwarding(text: str) -> str:
    """The benchmark server's configuration with the kernel path on."""
    assert "[media]\n" in text
    return text.replace("[media]\n", "[media]\nkernel_forwarding = true\n", 1)


@contextmanager
def edited_server_config(edit: Callable[[str], str]) -> Iterator[None]:
    """media_relay's `Omlmedia` starts its server through harness.start_server: pass `edit`."""
    original = harness.start_server

    def start_server(*args: Any, **kwargs: Any) -> Any:
        return original(*args, edit_config=edit, **kwargs)

    setattr(harness, "start_server", start_server)  # noqa: B010 (a function of a module)
    try:
        yield
    finally:
        setattr(harness, "start_server", original)  # noqa: B010


class OmlmediaKernel(Omlmedia):
    """`omlmedia serve` with ``[media] kernel_forwarding = true``."""

    name = "omlmedia-kernel"

    async def start(self) -> None:
        with edited_server_config(enable_kernel_forwarding):
            await super().start()
        kernel = self.status()["media"]["kernel"]
        if not kernel.get("active"):
            await self.stop()
            raise RuntimeError(f"the kernel path is not active: {kernel.get('reason')}")


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
    """The generator's CPU over the window beyond the direct loopback run's at this N."""
    relay_cpu_s: float
    """The relay process's CPU plus the generator's extra: what relaying cost."""
    cpu_us_per_call_second: float
    cpu_us_per_packet: float
    kernel_packets: int
    latency_p50_us: float
    latency_p99_us: float
    added_p50_us: float
    added_p99_us: float
    other_load_on_core: float
    error: str = ""


def row(step: Step, base: Step, duration: float, kernel: int) -> Row:
    if not step.ok:  # set-up failed: nothing was measured
        nan = math.nan
        return Row(step.target, step.calls, False, 100.0, 0, nan, nan, nan, nan, nan, 0,
                   nan, nan, nan, nan, 0.0, step.error or "set-up failed")  # fmt: skip
    extra = duration * (
        step.generator.get("generator_cpu_fraction", 0.0)
        - base.generator.get("generator_cpu_fraction", 0.0)
    )
    relay = max(0.0, step.cpu_seconds + extra)
    latency = step.latency_us or {}
    return Row(
        step.target,
        step.calls,
        step.ok and step.loss_pct <= 0.1,
        step.loss_pct,
        step.packets,
        step.cpu_seconds,
        extra,
        relay,
        1e6 * relay / (step.calls * duration) if step.calls else math.nan,
        1e6 * relay / step.packets if step.packets else math.nan,
        kernel,
        latency.get("p50", math.nan),
        latency.get("p99", math.nan),
        step.added_latency_us.get("p50", math.nan),
        step.added_latency_us.get("p99", math.nan),
        step.other_load_on_core,
        step.error,
    )


def print_row(r: Row) -> None:
    print(
        f"  {r.target:>15} N={r.calls:<4} {'ok ' if r.ok else 'BAD'} loss {r.loss_pct:6.3f} %  "
        f"{r.packets:>7} pkts ({r.kernel_packets} by the kernel)  "
        f"process CPU {r.process_cpu_s:6.3f} s + generator's extra {r.generator_extra_cpu_s:6.3f} s"
        f" = relay CPU {r.relay_cpu_s:6.3f} s = "
        f"{fmt(r.cpu_us_per_call_second, '.0f')} us/call-s, "
        f"{fmt(r.cpu_us_per_packet, '.2f')} us/pkt  "
        f"added latency p50 {fmt(r.added_p50_us, '.0f')} p99 {fmt(r.added_p99_us, '.0f')} us  "
        f"other load {100 * r.other_load_on_core:.0f} %" + (f"  {r.error}" if r.error else ""),
        flush=True,
    )


async def ramp(
    gen: Generator,
    target: Omlmedia | Rtpengine,
    calls: list[int],
    baselines: dict[int, Step],
    args: argparse.Namespace,
) -> list[Row]:
    """`target` over the ramp, stopping after the first N with loss or failures."""
    rows: list[Row] = []
    for n in calls:
        if n not in baselines:
            baselines[n] = await measure(gen, None, "passthrough", n, args)
            media_relay.print_step(baselines[n])
        base = baselines[n]
        before = _kernel_packets(target)
        step = await measure(gen, target, "passthrough", n, args)
        if step.ok:
            step.added_latency_us = {
                q: step.latency_us[q] - base.latency_us[q] for q in ("p50", "p99")
            }
        r = row(step, base, args.duration, _kernel_packets(target) - before)
        rows.append(r)
        print_row(r)
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
    gen = Generator()
    baselines: dict[int, Step] = {}
    results: dict[str, list[Row]] = {}
    makers: dict[str, Callable[[], Omlmedia | Rtpengine]] = {
        "omlmedia": lambda: Omlmedia(workdir / "omlmedia"),
        "omlmedia-kernel": lambda: OmlmediaKernel(workdir / "omlmedia-kernel"),
        "rtpengine": lambda: Rtpengine(workdir),
    }
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.skip_rtpengine:
        wanted = [t for t in wanted if t != "rtpengine"]
    targets = [makers[t] for t in wanted]
    print(f"work dir {workdir}", flush=True)
    try:
        for make in targets:
            target = make()
            if isinstance(target, Rtpengine):
                target.start()
            else:
                await target.start()
            print(f"{target.name} (pid {target.pid}):", flush=True)
            try:
                results[target.name] = await ramp(gen, target, calls, baselines, args)
            finally:
                await target.stop()
    finally:
        gen.close()
    return summarize(results, args)


def summarize(results: dict[str, list[Row]], args: argparse.Namespace) -> dict[str, Any]:
    """The largest N each relay carried with no failure and loss <= 0.1 %, and at each N the
    CPU per call-second of each relay and its ratio to rtpengine's (steps with loss included,
    marked)."""
    print("\nlargest N with 0 failures and loss <= 0.1 %:")
    largest = {
        name: max((r.calls for r in rows if r.ok), default=0) for name, rows in results.items()
    }
    for name, best in largest.items():
        print(f"  {name:>15}: {best}")
    print("CPU per call-second (us) and per relayed packet (us), ratio to rtpengine:")
    ratios: dict[str, dict[int, float]] = {}
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
            cells.append(cell)
        print(f"  N={n}: " + "; ".join(cells))
    summary = {
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "rows": {name: [asdict(r) for r in rows] for name, rows in results.items()},
        "largest_n": largest,
        "ratio_to_rtpengine": ratios,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,100,200,400,800", help="the ramp of N")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window (s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="load before the window (s)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-rtpengine", action="store_true")
    parser.add_argument(
        "--targets",
        default="omlmedia,omlmedia-kernel,rtpengine",
        help="which relays to run, in this order",
    )
    args = parser.parse_args()
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
