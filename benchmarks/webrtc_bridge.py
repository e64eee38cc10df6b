"""WebRTC bridge: N transcoded calls between aiortc agents and SIP callers through `omlmedia serve`.

Each call: a SIP caller (PCMU, 50 RTP packets/s) rings ``agent-benchK``; agent ``benchK`` is a
headless aiortc peer connection logged in over the server's WebSocket with its agent channel
open (Opus, DTLS-SRTP, ICE on this host); it answers with the protocol's ``answer`` command and
the server bridges the RTP leg into the channel: G.711 <-> 48 kHz PCM <-> Opus, both ways. The
load generator (benchmarks/webrtc_load.py: every agent and caller, one process, uvloop) runs on
core 1; the server on core 0 (taskset), a fresh server per step, with N agents ``bench1..N``
in its configuration (benchmarks/harness.py's server configuration plus agents).

Two pipelines, same load, same run:

- ``omlmedia``: the server as shipped (``[webrtc] receive_path = "bypass"``): the page's packets
  are tapped before aiortc's jitter buffer into our capped jitter buffer and libopus, and the
  send path hands aiortc pre-encoded Opus (opuslib) packets.
- ``stock-aiortc`` (the baseline): the same server with ``receive_path = "aiortc"`` (aiortc's
  ``JitterBuffer(capacity=16, prefetch=4)`` and decoder thread, decoded frames read from the
  track) and, since the channel's send path always pre-encodes, `webrtc.channel.OpusSendTrack`
  replaced in the server process (`serve_stock`, at start-up, no file changed) by the stock
  kind of track: `recv()` returns 20 ms `av.AudioFrame`s paced like aiortc's
  ``AudioStreamTrack``, and aiortc encodes them itself (its PyAV Opus encoder in the default
  executor, its audio-level computation). SIP, signalling and the RTP leg are the same code.

Measures (per step, over a window after the warm-up; see benchmarks/webrtc_load.py for how):
server CPU from /proc/PID/stat (all threads) as µs per call-second and calls per core
(N / CPU fraction); one-way latency p50/p99 both ways from tone bursts (sample-accurate, the
transcoding's algorithmic delay included, the sender's own encoder not); loss on the wire (RTP
timestamps: a skipped send slot counts) and bursts missed (a frame the bridge concealed);
click-to-two-way-audio; RSS (per call: the slope over N); the busy time of core 0 not spent by
the server ("other load": the machine is shared). The generator's own CPU and event-loop lag
tell whether it kept up. The ramp stops at loss > 0.1 % (wire), a failed step or the generator
saturated, and for ours also at bursts missed > 1 % or a p99 over 60 ms (the stock path's
jitter buffer alone holds 80 ms and it conceals bursts from the first step: its ramp goes on
so that CPU per call is compared at the same N).

    .venv/bin/python benchmarks/webrtc_bridge.py [--calls 5,10,20,40,60] [--duration 10]
        [--warmup 2] [--json out.json] [--skip-baseline] [--profile N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    RunningServer,
    drive_generator,
    fmt,
    slope_kib_per_call,
)
from benchmarks.procstat import GENERATOR_CORE, SERVER_CORE, pin_self  # noqa: E402

PASSWORD = "bench-secret"
TARGETS = {
    "calls_per_core_min": 60,
    "ratio_to_stock_min": 5.0,
    "latency_p99_ms_max": 60.0,
    "click_to_two_way_ms_max": 150.0,
}
PIPELINES = ("omlmedia", "stock-aiortc")


# -- the stock pipeline, inside the server process -----------------------------------------------


def serve_stock() -> None:
    """`omlmedia serve` with the agent channels' send track swapped for the stock kind (a track
    of `av.AudioFrame`s that aiortc encodes itself); argv as for ``omlmedia``."""
    import asyncio
    import fractions

    import av
    import numpy as np
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    import webrtc.channel as channel
    from omlmedia.cli import main

    class StockAudioTrack(MediaStreamTrack):
        """What an aiortc application writes: AudioFrames paced like ``AudioStreamTrack``."""

        kind = "audio"

        def __init__(self, next_payload: Any) -> None:
            super().__init__()
            self._media = next_payload.__self__  # the PeerMedia whose source we read
            self._start: float | None = None
            self._pts = 0
            self.skipped = 0

        async def recv(self) -> av.AudioFrame:
            if self.readyState != "live":
                raise MediaStreamError
            # The channel may run at the SIP leg's rate (8 kHz for G.711); a stock application
            # hands aiortc 48 kHz frames, so narrower frames are widened (sample repetition: the
            # baseline's cost is aiortc's encoder, not our upsampling).
            rate = getattr(self._media, "rate", channel.SAMPLE_RATE)
            factor = max(1, channel.SAMPLE_RATE // rate)
            if self._start is None:
                self._start = time.time()
            else:
                self._pts += channel.FRAME_SAMPLES
                wait = self._start + self._pts / channel.SAMPLE_RATE - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            samples = None
            source = self._media._source
            if source is not None:
                try:
                    data = source()
                except Exception:
                    data = None
                if data is not None and not isinstance(data, bytes | bytearray | memoryview):
                    samples = np.asarray(data, dtype=np.int16).reshape(1, -1)
            if samples is not None and factor > 1:
                samples = np.repeat(samples, factor, axis=1)
            if samples is None or samples.shape[1] != channel.FRAME_SAMPLES:
                samples = np.zeros((1, channel.FRAME_SAMPLES), dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = channel.SAMPLE_RATE
            frame.pts = self._pts
            frame.time_base = fractions.Fraction(1, channel.SAMPLE_RATE)
            return frame

    channel.OpusSendTrack = StockAudioTrack  # type: ignore[misc,assignment]
    raise SystemExit(main(sys.argv[1:]))


# -- the server ----------------------------------------------------------------------------------


def edit_config(text: str, calls: int, stock: bool) -> str:
    """The interop test configuration with agents bench1..N, no SIP rate limit (every INVITE
    comes from one address) and the receive path of the pipeline."""
    from webrtc.accounts import hash_password

    text = re.sub(r"rate_limit_requests = \d+", "rate_limit_requests = 1000000", text)
    path_line = f'receive_path = "{"aiortc" if stock else "bypass"}"\n'
    text = text.replace("[webrtc]\n", "[webrtc]\n" + path_line, 1)
    digest = hash_password(PASSWORD, n=2**12)
    agents = "".join(
        f'\n[[agents]]\nname = "bench{k}"\npassword_hash = "{digest}"\n'
        for k in range(1, calls + 1)
    )
    return text + agents


def start_server(workdir: Path, calls: int, stock: bool) -> RunningServer:
    """A fresh server on core 0 for one step (the stock pipeline through `serve_stock`)."""
    python_args: tuple[str, ...] = ("-m", "omlmedia")
    if stock:
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from benchmarks.webrtc_bridge import serve_stock; serve_stock()"
        )
        python_args = ("-c", code)
    return harness.start_server(
        workdir,
        t1=0.5,
        media_timeout=600,
        edit_config=lambda text: edit_config(text, calls, stock),
        extra_args=("--log-level", "warning"),
        python_args=python_args,
        core=SERVER_CORE,
        rtp_low=61000,
    )


# -- one step ------------------------------------------------------------------------------------


@dataclass
class Step:
    pipeline: str
    calls: int
    ok: bool = True
    error: str = ""
    cpu_fraction: float = 0.0
    cpu_us_per_call_second: float = 0.0
    calls_per_core: float = 0.0
    rss_kib: int = 0
    other_load_on_core: float = 0.0
    other_load_on_generator_core: float = 0.0
    wire_loss_pct: dict[str, float] = field(default_factory=dict)
    bursts_missed_pct: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    click_to_two_way_ms: dict[str, float] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)
    generator: dict[str, Any] = field(default_factory=dict)

    @property
    def loss_pct(self) -> float:
        return max(self.wire_loss_pct.values(), default=math.nan)

    @property
    def missed_pct(self) -> float:
        return max(self.bursts_missed_pct.values(), default=math.nan)

    @property
    def latency_p99(self) -> float:
        return max((v["p99"] for v in self.latency_ms.values()), default=math.nan)


def measure(pipeline: str, calls: int, args: argparse.Namespace, workdir: Path) -> Step:
    """A fresh server, a fresh generator process, `calls` calls, one window; then both stop."""
    from benchmarks.webrtc_load import generator_main

    step = Step(pipeline, calls)
    stock = pipeline == "stock-aiortc"
    try:
        server = start_server(workdir / f"{pipeline}-{calls}", calls, stock)
    except RuntimeError as exc:
        step.ok, step.error = False, str(exc)[-800:]
        return step
    spec = {
        "calls": calls,
        "http_port": server.ports["http"],
        "sip_port": server.ports["sip"],
        "password": PASSWORD,
        "warmup": args.warmup,
        "duration": args.duration,
        "stagger": args.stagger,
        "setup_timeout": 30 + 1.0 * calls,
        "core": GENERATOR_CORE,
    }
    run = drive_generator(
        server,
        generator_main,
        spec,
        timeout=spec["setup_timeout"] * 3 + args.duration + 60,
        label=f"{pipeline} N={calls}",
        profile_seconds=args.duration if args.profile == calls else None,
        profile_out=workdir / f"{pipeline}-{calls}.pyspy.txt",
    )
    step.profile = run.profile
    result, window = run.result, run.window
    if "error" in result:
        step.ok, step.error = False, result["error"]
        return step
    duration = result["window_seconds"]
    step.generator = result
    step.cpu_fraction = window.cpu_seconds / duration
    step.cpu_us_per_call_second = 1e6 * step.cpu_fraction / calls
    step.calls_per_core = calls / step.cpu_fraction if step.cpu_fraction > 0 else math.inf
    step.rss_kib = window.rss_kib
    step.other_load_on_core = window.other_load_on_server_core(duration)
    step.other_load_on_generator_core = max(
        0.0, window.generator_core_busy(duration) - result["generator_cpu_fraction"]
    )
    for direction, counts in result["wire"].items():
        expected = counts["expected"]
        step.wire_loss_pct[direction] = (
            100.0 * (expected - counts["received"]) / expected if expected else 100.0
        )
    for direction, sent in result["bursts_sent"].items():
        missed = result["bursts_missed"][direction]
        step.bursts_missed_pct[direction] = 100.0 * missed / sent if sent else 100.0
    step.latency_ms = result["latency_ms"]
    step.click_to_two_way_ms = result["click_to_two_way_ms"]
    if result["calls_without_two_way"]:
        step.error = f"{result['calls_without_two_way']} calls never had two-way audio"
    return step


# -- reporting -----------------------------------------------------------------------------------


def print_step(step: Step) -> None:
    if not step.ok:
        print(f"  {step.pipeline:>12} N={step.calls:<3} FAILED: {step.error}", flush=True)
        return
    lat = step.latency_ms
    gen = step.generator
    print(
        f"  {step.pipeline:>12} N={step.calls:<3} CPU {100 * step.cpu_fraction:5.1f} % = "
        f"{step.cpu_us_per_call_second:6.0f} us/call-s ({fmt(step.calls_per_core, '.0f')} "
        f"calls/core)  loss {fmt(step.loss_pct, '.3f')} %  missed {fmt(step.missed_pct, '.2f')} %  "
        f"lat p50/p99 ms caller->agent {fmt(lat['caller_to_agent']['p50'])}/"
        f"{fmt(lat['caller_to_agent']['p99'])} agent->caller "
        f"{fmt(lat['agent_to_caller']['p50'])}/{fmt(lat['agent_to_caller']['p99'])}  "
        f"click->2way p50/max {fmt(step.click_to_two_way_ms['p50'], '.0f')}/"
        f"{fmt(step.click_to_two_way_ms['max'], '.0f')} ms  RSS {step.rss_kib // 1024} MiB  "
        f"gen CPU {100 * gen['generator_cpu_fraction']:.0f} % lag p99 "
        f"{fmt(gen['generator_loop_lag_ms']['p99'])} ms; other load on core {SERVER_CORE}: "
        f"{100 * step.other_load_on_core:.0f} %, on core {GENERATOR_CORE}: "
        f"{100 * step.other_load_on_generator_core:.0f} %"
        + (f"  ({step.error})" if step.error else ""),
        flush=True,
    )


def within_limits(step: Step, pipeline: str) -> bool:
    """Whether the ramp goes on after this step."""
    if not step.ok or step.error:
        return False
    if step.loss_pct > 0.1:
        return False
    # The baseline conceals bursts and holds 80 ms in its jitter buffer from the first step:
    # it goes on while the wire holds, so that CPU per call is compared at the same N.
    if pipeline == "omlmedia" and (
        step.missed_pct > 1.0 or step.latency_p99 > TARGETS["latency_p99_ms_max"]
    ):
        return False
    return bool(step.generator.get("generator_cpu_fraction", 0) < 0.9)


def best_step(steps: list[Step]) -> Step | None:
    """The largest N within the limits (loss, missed bursts) that ran cleanly."""
    good = [s for s in steps if s.ok and not s.error and s.loss_pct <= 0.1 and s.missed_pct <= 1]
    return max(good, key=lambda s: s.calls) if good else None


def summarize(args: argparse.Namespace, steps: list[Step], notes: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "targets": TARGETS,
        "steps": [asdict(s) for s in steps],
        "pipelines": {},
        "notes": notes,
    }
    print("=" * 100)
    print(
        f"{'pipeline':>12} {'N':>3} | {'CPU %':>5} {'us/call-s':>9} {'calls/core':>10} | "
        f"{'loss %':>6} {'missed %':>8} | {'c->a p50/p99 ms':>15} {'a->c p50/p99 ms':>15} | "
        f"{'click->2way p50/p99/max ms':>26} | {'RSS MiB':>7} {'other %':>7}"
    )
    for step in steps:
        if not step.ok:
            print(f"{step.pipeline:>12} {step.calls:>3} | FAILED: {step.error[:150]}")
            continue
        lat = step.latency_ms
        c2a = f"{fmt(lat['caller_to_agent']['p50'])}/{fmt(lat['caller_to_agent']['p99'])}"
        a2c = f"{fmt(lat['agent_to_caller']['p50'])}/{fmt(lat['agent_to_caller']['p99'])}"
        click = step.click_to_two_way_ms
        clicks = f"{fmt(click['p50'], '.0f')}/{fmt(click['p99'], '.0f')}/{fmt(click['max'], '.0f')}"
        print(
            f"{step.pipeline:>12} {step.calls:>3} | {100 * step.cpu_fraction:5.1f} "
            f"{step.cpu_us_per_call_second:9.0f} {fmt(step.calls_per_core, '.0f'):>10} | "
            f"{fmt(step.loss_pct, '.3f'):>6} {fmt(step.missed_pct, '.2f'):>8} | {c2a:>15} "
            f"{a2c:>15} | {clicks:>26} | {step.rss_kib / 1024:7.1f} "
            f"{100 * step.other_load_on_core:7.0f}"
        )
    for pipeline in PIPELINES:
        rows = [s for s in steps if s.pipeline == pipeline]
        if not rows:
            continue
        best = best_step(rows)
        ran = [s for s in rows if s.ok]
        slope = slope_kib_per_call([(s.calls, s.rss_kib) for s in ran])
        # CPU = fixed + N * marginal (least squares over the steps that ran)
        marginal = slope_kib_per_call([(s.calls, s.cpu_fraction) for s in ran])
        fixed = None
        if marginal is not None:
            fixed = sum(s.cpu_fraction for s in ran) / len(ran) - marginal * sum(
                s.calls for s in ran
            ) / len(ran)
        report["pipelines"][pipeline] = {
            "marginal_cpu_us_per_call_second": 1e6 * marginal if marginal else None,
            "fixed_cpu_fraction": fixed,
            "calls_per_core_from_fit": (1 - fixed) / marginal
            if marginal and fixed is not None and marginal > 0
            else None,
            "max_calls_within_limits": best.calls if best else None,
            "calls_per_core_at_max": best.calls_per_core if best else None,
            "cpu_us_per_call_second_at_max": best.cpu_us_per_call_second if best else None,
            "rss_kib_per_call": slope,
        }
    ours = report["pipelines"].get("omlmedia", {})
    stock = report["pipelines"].get("stock-aiortc", {})
    ratios = {
        s.calls: b.cpu_us_per_call_second / s.cpu_us_per_call_second
        for s in steps
        if s.pipeline == "omlmedia" and s.ok and s.cpu_us_per_call_second > 0
        for b in steps
        if b.pipeline == "stock-aiortc" and b.ok and b.calls == s.calls
    }
    report["cpu_ratio_stock_over_ours_by_n"] = ratios
    ours_ok = [s for s in steps if s.pipeline == "omlmedia" and s.ok and not s.error]
    worst_p99 = max((s.latency_p99 for s in ours_ok if s.loss_pct <= 0.1), default=None)
    worst_click = max((s.click_to_two_way_ms["max"] for s in ours_ok), default=None)
    print()
    for pipeline, data in report["pipelines"].items():
        print(
            f"{pipeline}: largest N within limits {data['max_calls_within_limits']}, calls per "
            f"core there {fmt(data['calls_per_core_at_max'], '.0f')} "
            f"({fmt(data['cpu_us_per_call_second_at_max'], '.0f')} us CPU per call-second), "
            f"RSS slope {fmt(data['rss_kib_per_call'], '.0f')} KiB/call; fit over the steps: "
            f"fixed {fmt(100 * (data['fixed_cpu_fraction'] or math.nan), '.0f')} % of the core + "
            f"{fmt(data['marginal_cpu_us_per_call_second'], '.0f')} us per call-second -> "
            f"{fmt(data['calls_per_core_from_fit'], '.0f')} calls per core"
        )
    ratio_at_max = None
    if ours.get("cpu_us_per_call_second_at_max") and stock.get("cpu_us_per_call_second_at_max"):
        ratio_at_max = (
            stock["cpu_us_per_call_second_at_max"] / ours["cpu_us_per_call_second_at_max"]
        )
    report["verdict"] = {
        "calls_per_core": ours.get("calls_per_core_at_max"),
        "cpu_ratio_same_n": ratios,
        "cpu_ratio_at_each_max": ratio_at_max,
        "worst_latency_p99_ms": worst_p99,
        "worst_click_to_two_way_ms": worst_click,
    }
    print(
        f"targets: >= {TARGETS['calls_per_core_min']} calls/core (got "
        f"{fmt(ours.get('calls_per_core_at_max'), '.0f')}); >= {TARGETS['ratio_to_stock_min']}x "
        "stock CPU per call (same N: "
        + (", ".join(f"N={n} {r:.1f}x" for n, r in ratios.items()) or "-")
        + f"; each at its max: {fmt(ratio_at_max, '.1f')}x); latency p99 <= "
        f"{TARGETS['latency_p99_ms_max']:.0f} ms (worst {fmt(worst_p99)}); click to two-way "
        f"<= {TARGETS['click_to_two_way_ms_max']:.0f} ms (worst {fmt(worst_click, '.0f')})"
    )
    for step in steps:
        if step.profile:
            print(f"profile ({step.pipeline}, N={step.calls}, py-spy, own time, all threads):")
            for line in step.profile:
                print("   ", line)
    for note in notes:
        print("note:", note)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    ramp = [int(n) for n in args.calls.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="webrtc_bridge-"))
    pin_self(GENERATOR_CORE)
    pipelines = ["omlmedia"] if args.skip_baseline else list(PIPELINES)
    print(f"work dir {workdir}; load avg {os.getloadavg()[0]:.2f}", flush=True)
    steps: list[Step] = []
    notes: list[str] = []
    for pipeline in pipelines:
        print(f"{pipeline}:", flush=True)
        for n in ramp:
            step = measure(pipeline, n, args, workdir)
            steps.append(step)
            print_step(step)
            if not within_limits(step, pipeline):
                if step.ok and step.generator.get("generator_cpu_fraction", 0) >= 0.9:
                    notes.append(f"{pipeline} N={n}: the load generator used >= 90 % of its core")
                break
    notes.append(f"load average at the end: {os.getloadavg()}")
    return summarize(args, steps, notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", default="5,10,20,40,60", help="the ramp of N")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window (s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="calls up before the window")
    parser.add_argument("--stagger", type=float, default=0.04, help="seconds between answers")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="py-spy the server in the N-call steps"
    )
    args = parser.parse_args()
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
