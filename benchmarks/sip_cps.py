"""SIP call rate: sipp `uac` against omlmedia's `echo`, side by side with sipp's own `uas`.

For each rate of the ramp, sipp places `rate x duration` calls (INVITE, 100, 200, ACK, BYE, 200,
with SDP, so `echo` binds an RTP port pair per call) and the step passes when every call succeeded.
The server runs pinned to one core and sipp to the other; the server's CPU time is read from /proc.
The same ramp runs against sipp's built-in `uas` (C++, no transaction state worth the name) as the
peer measured in the same run, so the figures are also reported as ratios that do not drift with the
machine.

    .venv/bin/python benchmarks/sip_cps.py [--rates 250,500,...] [--duration 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import free_port, run_sipp, start_server  # noqa: E402
from benchmarks.procstat import GENERATOR_CORE, SERVER_CORE, cpu_seconds, pinned  # noqa: E402


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    seconds: float
    cpu_seconds: float

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.successful == self.calls

    @property
    def cpu_us_per_call(self) -> float:
        return 1e6 * self.cpu_seconds / max(1, self.successful)


def ramp(target: str, pid: int, rates: list[int], duration: float, workdir: Path) -> list[Step]:
    steps = []
    for rate in rates:
        calls = int(rate * duration)
        before = cpu_seconds(pid)
        started = time.monotonic()
        result = run_sipp(
            [
                "-sn",
                "uac",
                target,
                "-s",
                "echo",
                "-i",
                "127.0.0.1",
                "-p",
                "0",
                "-m",
                str(calls),
                "-r",
                str(rate),
                "-l",
                str(max(100, rate * 2)),
                "-recv_timeout",
                "10000",
            ],
            workdir,
            timeout=duration * 4 + 60,
            name=f"rate{rate}",
            core=GENERATOR_CORE,
        )
        elapsed = time.monotonic() - started
        step = Step(
            rate,
            calls,
            result.count("SuccessfulCall"),
            result.count("FailedCall"),
            result.count("Retransmissions"),
            elapsed,
            cpu_seconds(pid) - before,
        )
        steps.append(step)
        print(
            f"  {rate:>5} cps: {step.successful}/{calls} ok, {step.failed} failed, "
            f"{step.retransmissions} retransmissions, {step.cpu_us_per_call:.0f} us CPU/call",
            flush=True,
        )
        if not step.passed:
            break
        time.sleep(1.0)
    return steps


def best(steps: list[Step]) -> Step | None:
    passed = [s for s in steps if s.passed]
    return passed[-1] if passed else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500,750,1000,1250,1500,1750,2000,2500,3000")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--log-level",
        default="warning",
        help="server log level during the run (info logs two lines per call)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="sip_cps-"))

    print("omlmedia (echo target):", flush=True)
    server = start_server(
        workdir, t1=0.5, extra_args=("--log-level", args.log_level), core=SERVER_CORE
    )
    try:
        ours = ramp(
            f"127.0.0.1:{server.sip_port}", server.process.pid, rates, args.duration, workdir
        )
    finally:
        server.stop()

    print("sipp uas (peer, same machine, same ramp):", flush=True)
    uas_port = free_port()
    sipp = shutil.which("sipp") or "sipp"
    uas_command = [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"]
    uas = subprocess.Popen(
        pinned(uas_command, SERVER_CORE),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        peer = ramp(f"127.0.0.1:{uas_port}", uas.pid, rates, args.duration, workdir)
    finally:
        uas.terminate()
        uas.wait()

    ours_best, peer_best = best(ours), best(peer)
    report: dict[str, object] = {
        "command": " ".join(sys.argv),
        "sipp": "sipp -sn uac 127.0.0.1:PORT -s echo -i 127.0.0.1 -p 0 -m RATE*DURATION -r RATE "
        "-l max(100,2*RATE) (taskset -c 1); server on taskset -c 0",
        "omlmedia": [asdict(s) | {"cpu_us_per_call": s.cpu_us_per_call} for s in ours],
        "sipp_uas": [asdict(s) | {"cpu_us_per_call": s.cpu_us_per_call} for s in peer],
    }
    print()
    if ours_best is not None:
        print(
            f"omlmedia: highest rate with zero failures {ours_best.rate} cps, "
            f"{ours_best.cpu_us_per_call:.0f} us CPU per call "
            f"(=> {1e6 / ours_best.cpu_us_per_call:.0f} calls/s per core at 100% CPU)"
        )
    if peer_best is not None:
        print(
            f"sipp uas: highest rate with zero failures {peer_best.rate} cps, "
            f"{peer_best.cpu_us_per_call:.0f} us CPU per call"
        )
    if ours_best and peer_best:
        ratio = ours_best.cpu_us_per_call / peer_best.cpu_us_per_call
        print(
            f"ratio: omlmedia CPU per call = {ratio:.1f} x sipp uas; "
            f"max rate = {ours_best.rate / peer_best.rate:.2f} x sipp uas"
        )
        report["ratio_cpu_per_call"] = ratio
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
