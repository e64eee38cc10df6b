"""What the kernel path's bookkeeping costs the server per call: libnftables transactions and
counter listings, measured alone in a network namespace (root).

A steady flow of calls: `--installed` calls stay installed while, `--calls` times, a new call
is installed and the oldest hangs up. Two ways, in turn in each round:

- ``alone``: every change its own transaction (``removal_delay`` 0: two transactions a call);
- ``shared``: a hang-up's removal queued and sent in the next install's transaction (the
  server's way, `media.kernelpath_nft.KernelPath`'s ``removal_delay``: one transaction a call).

CPU is ``time.process_time`` (this process: Python, libnftables and the kernel's netlink work
done in its system calls) per call, install and removal together; the hang-ups read the
counters from one reading made before (the listing is measured apart: one listing of every
call's counters with `--installed` calls, what a hang-up, a media-timeout sweep or a status
poll pays when the last reading is older than half a second).

    sudo .venv/bin/python benchmarks/kernel_transactions.py [--installed 100] [--calls 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.netns import enter  # noqa: E402
from media.kernelpath import ForwardedPair, Leg  # noqa: E402
from media.kernelpath_nft import SERVER_REMOVAL_DELAY, KernelPath  # noqa: E402

TABLE = "omlbenchtx"


def pair(n: int) -> ForwardedPair:
    """Call `n`: our ports and the far ends' distinct for 5,000 calls."""
    return ForwardedPair(
        str(n + 1),
        Leg(("198.18.1.1", 20000 + 2 * (n % 5000)), ("198.18.1.2", 30000 + 2 * (n % 5000))),
        Leg(("198.18.2.1", 40000 + 2 * (n % 5000)), ("198.18.2.2", 50000 + 2 * (n % 5000))),
    )


def flow(namespace: str, installed: int, calls: int, delay: float) -> dict[str, float]:
    """One run of the steady flow; CPU per call (ms), transactions per call, listing (ms)."""

    async def run() -> dict[str, float]:
        with enter(namespace):
            kernel = KernelPath(table=TABLE, max_age=1e9, removal_delay=delay)
            kernel.start()
        try:
            for n in range(installed):
                kernel.install(pair(n))
            kernel.counters()  # the reading the hang-ups use
            transactions = kernel.stats.transactions
            started = time.process_time()
            for n in range(installed, installed + calls):
                kernel.install(pair(n))
                kernel.remove(str(n - installed + 1), "hangup")
            kernel.flush()
            cpu = time.process_time() - started
            transactions = kernel.stats.transactions - transactions
            started = time.process_time()
            for _ in range(20):
                kernel.counters()
            listing = (time.process_time() - started) / 20
        finally:
            kernel.stop()
        return {
            "ms_per_call": 1e3 * cpu / calls,
            "transactions_per_call": transactions / calls,
            "listing_ms": 1e3 * listing,
        }

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installed", type=int, default=100, help="calls kept installed")
    parser.add_argument("--calls", type=int, default=1000, help="calls installed and hung up")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both ways, in turn")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("root is needed for a network namespace and nftables")
    namespace = f"okt{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    results: dict[str, list[dict[str, float]]] = {"alone": [], "shared": []}
    try:
        for _ in range(args.rounds):
            for way, delay in (("alone", 0.0), ("shared", SERVER_REMOVAL_DELAY)):
                found = flow(namespace, args.installed, args.calls, delay)
                results[way].append(found)
                print(
                    f"  {way:>6}: {found['ms_per_call']:.3f} ms per call (install + removal), "
                    f"{found['transactions_per_call']:.2f} transactions per call",
                    flush=True,
                )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    summary: dict[str, Any] = {"installed": args.installed, "calls": args.calls}
    for way, runs in results.items():
        median = statistics.median(r["ms_per_call"] for r in runs)
        summary[way] = {"ms_per_call_median": median, "runs": runs}
        print(f"{way}: median {median:.3f} ms per call over {len(runs)} rounds")
    listing = statistics.median(r["listing_ms"] for runs in results.values() for r in runs)
    summary["listing_ms_median"] = listing
    summary["load_average"] = os.getloadavg()
    print(
        f"a listing of every call's counters with {args.installed} calls installed: "
        f"{listing:.3f} ms (median); load average {summary['load_average'][0]:.1f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
