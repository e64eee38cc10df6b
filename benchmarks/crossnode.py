"""Cross-node calls: what the internal SIP leg costs, in CPU and one-way latency.

Two scenarios, the same N calls and the same load generator (benchmarks/webrtc_load.py: N
headless aiortc agents ``bench1..N`` and N SIP callers, PCMU, tone bursts both ways):

- ``local``: one node (b); the agents log in to b and the callers dial b (``agent-benchK``);
- ``cross``: two nodes (a and b) sharing a throwaway Redis; the agents log in to b, the callers
  dial a, which finds each agent on b and bridges the caller to b over an internal SIP leg
  (`omlmedia.crossnode`, passthrough PCMU on a, the agent's channel on b).

Measured over a window after the warm-up: each node's CPU (``/proc/PID/stat``, all threads) as
µs per call-second, with the node's idle CPU (measured for `--idle` seconds before the calls)
taken off; the end-to-end one-way latency p50/p99 both ways (sample-accurate, from the tone
bursts; see webrtc_load.py), and, in the cross scenario, the **hop's own latency**: a packet
socket on the loopback interface (root) reads every RTP packet into and out of node a with the
kernel's receive timestamps (``SO_TIMESTAMPNS``), and each packet a sends on (to b, or back to
the caller) is matched by its payload to the packet it came from (the relay is a passthrough:
the payload is unchanged): the time node a held it. That, plus one more loopback traversal, is
what the extra leg adds each way; the end-to-end figures are too noisy on a shared machine to
show a difference of that size. Node b's CPU against the local case is the other cost (the
same work in theory: a SIP leg and the agent's channel). Each scenario runs `--runs` times,
alternating, so that the machine's load weighs on both alike.

With ``--stalls`` each node runs under benchmarks/nodeprobe.py's stall watch and each row has,
per node, its loop's stalls over 3 ms in the window: how many, the longest with the loop
thread's time running and waiting for a CPU, the other threads that ran meanwhile, the
collector's long passes and the code found running (the watch's 1 ms beat costs CPU: such a
run's CPU figures are not comparable).

    .venv/bin/python benchmarks/crossnode.py [--calls 10] [--duration 10] [--warmup 2]
        [--runs 2] [--stalls] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import multiprocessing
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness, redisserver  # noqa: E402
from benchmarks.harness import RunningServer  # noqa: E402
from benchmarks.procstat import Window  # noqa: E402
from benchmarks.webrtc_bridge import edit_config as bench_agents  # noqa: E402

SECRET = b"crossnode-benchmark-secret-32-by"


@contextmanager
def throwaway_redis() -> Iterator[str]:
    """Debian's redis-server on a free loopback port, no persistence; its URL."""
    with redisserver.throwaway() as port:
        yield f"redis://127.0.0.1:{port}/0"


def sip_port() -> int:
    """A free port for a node's SIP, outside the RTP port blocks the harness hands out."""
    while True:
        port = harness.free_port()
        if not 40000 <= port < 61000:
            return port


def start_nodes(
    workdir: Path,
    names: list[str],
    calls: int,
    redis_url: str | None,
    dsn: str | None = None,
    acd: str = "local",
    probes: frozenset[str] = frozenset(),
) -> dict[str, RunningServer]:
    """The nodes `names`, agents bench1..N on each; with `redis_url` each knows all of `names`
    as its cluster (``[cluster]``, its queues' ACD `acd`: ``local`` or ``shared``), without it
    they are standalone; with `dsn` their records are in that PostgreSQL database
    (``[storage]``), without it in SQLite. The same settings otherwise, so that a cluster node
    and a standalone one differ only by what they share. `probes` runs each node under
    benchmarks/nodeprobe.py with those of its probes (``profile``, ``stalls``, ``threads``) on,
    written to `probe_file` in the node's directory when it stops."""
    secret = workdir / "cluster.secret"
    workdir.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(SECRET)
    ports = {name: sip_port() for name in names}
    nodes_toml = "".join(f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{p}"\n' for n, p in ports.items())
    started: dict[str, RunningServer] = {}

    def edit(name: str, text: str) -> str:
        text = re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {ports[name]}", text, count=1)
        text = bench_agents(text, calls, stock=False)
        if redis_url is not None:
            text += (
                f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\nacd = "{acd}"\n'
                f'secret_file = "{secret}"\n{nodes_toml}'
            )
        if dsn is not None:
            text += f'\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
        return text

    def start(name: str, rtp_low: int) -> RunningServer:
        env = {PROBE_ENV[probe]: str(probe_file(workdir / name, probe)) for probe in probes}
        server = harness.start_server(
            workdir / name,
            t1=0.5,
            media_timeout=600,
            edit_config=functools.partial(edit, name),
            extra_args=("--log-level", "warning"),
            rtp_low=rtp_low,
            python_args=("-m", "benchmarks.nodeprobe") if probes else ("-m", "omlmedia"),
            env=env,
        )
        server.ports["sip"] = ports[name]
        return server

    # all at once (a node takes seconds to start on a loaded machine), each with its own RTP
    # block chosen here, before the threads
    with ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(start, name, rtp_block()) for name in names}
    failure: BaseException | None = None
    for name, future in futures.items():
        try:
            started[name] = future.result()
        except BaseException as exc:  # stop the others, then raise the first
            failure = failure or exc
    if failure is not None:
        for server in started.values():
            server.stop()
        raise failure
    return started


PROBE_ENV = {
    "profile": "OMLBENCH_PROFILE",
    "stalls": "OMLBENCH_STALLS",
    "threads": "OMLBENCH_THREADS",
}


def probe_file(node_dir: Path, probe: str) -> Path:
    """Where a node started in `node_dir` writes what `probe` found (benchmarks/nodeprobe.py)."""
    files = {"profile": "node.prof", "stalls": "stalls.json", "threads": "threads.json"}
    return node_dir / files[probe]


_rtp_blocks = itertools.count(10)


def rtp_block() -> int:
    """The first of 1000 RTP ports for a node this process starts: 20 blocks in 40000-59999,
    counted from 10 so as not to meet the harness's own sequence (from 1) for its first nine
    servers; nodes started together never share one."""
    return 40000 + ((os.getpid() + next(_rtp_blocks)) % 20) * 1000


class HopSniffer:
    """Every UDP packet on loopback to or from node a's RTP ports, with its kernel timestamp;
    then, per direction, how long node a held each packet it relayed."""

    ETH_P_ALL = 0x0003
    SO_TIMESTAMPNS = 35

    def __init__(self, a_ports: range, b_ports: range) -> None:
        self.a_ports, self.b_ports = a_ports, b_ports
        self.packets: list[tuple[float, int, int, int, bytes]] = []
        self.recording = False
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self._sock.setsockopt(socket.SOL_SOCKET, self.SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        a = self.a_ports
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, address = self._sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING or not self.recording or len(data) < 42:
                continue  # loopback shows each packet twice: keep the arrival
            if data[12:14] != b"\x08\x00" or data[23] != 17:
                continue
            ihl = (data[14] & 0x0F) * 4
            udp = 14 + ihl
            src, dst = struct.unpack_from("!HH", data, udp)
            if src not in a and dst not in a:
                continue
            rtp = data[udp + 8 :]
            if len(rtp) < 12 or rtp[0] >> 6 != 2 or 72 <= (rtp[1] & 0x7F) <= 79:
                continue  # not RTP (RTCP: payload types 200-207 read as 72-79)
            start = 12 + 4 * (rtp[0] & 0x0F)
            if rtp[0] & 0x10 and len(rtp) >= start + 4:
                start += 4 + 4 * struct.unpack_from("!H", rtp, start + 2)[0]
            stamp = next(
                (
                    struct.unpack("qq", item[2][:16])
                    for item in ancillary
                    if item[0] == socket.SOL_SOCKET and item[1] == self.SO_TIMESTAMPNS
                ),
                None,
            )
            if stamp is not None:
                seq = struct.unpack_from("!H", rtp, 2)[0]
                self.packets.append((stamp[0] + stamp[1] / 1e9, src, dst, seq, rtp[start:]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def held_ms(self) -> dict[str, list[float]]:
        """Per direction, how long node a held each relayed packet (ms). The relay keeps the
        payload and shifts the sequence number by a constant per stream: the tone bursts
        (payloads that are not silence) pair each stream out of a with the stream it came
        from (by a majority of its bursts: the latest identical burst in before each one out)
        and give the shift; then every packet out is matched to the one in by number."""
        a, b = self.a_ports, self.b_ports
        packets = sorted(self.packets)
        ins: dict[tuple[int, int], dict[int, float]] = {}
        recent: dict[bytes, list[tuple[float, tuple[int, int], int]]] = {}
        votes: dict[tuple[int, int], dict[tuple[tuple[int, int], int], int]] = {}
        for at, src, dst, seq, payload in packets:
            if dst in a and src not in a:
                ins.setdefault((src, dst), {})[seq] = at
                if len(set(payload)) > 2:
                    recent.setdefault(payload, []).append((at, (src, dst), seq))
            elif src in a and dst not in a and len(set(payload)) > 2:
                # The latest such burst in before this one left: the calls' identical bursts
                # are staggered, so an earlier one is another call's.
                found = [(sent, f, n) for sent, f, n in recent.get(payload, []) if sent <= at]
                if found and at - found[-1][0] < 0.1:
                    _, flow, in_seq = found[-1]
                    tally = votes.setdefault((src, dst), {})
                    key = (flow, (seq - in_seq) & 0xFFFF)
                    tally[key] = tally.get(key, 0) + 1
        pairing = {flow: max(tally, key=tally.__getitem__) for flow, tally in votes.items()}
        out: dict[str, list[float]] = {"caller_to_agent": [], "agent_to_caller": []}
        for at, src, dst, seq, _payload in packets:
            pair = pairing.get((src, dst))
            if pair is None:
                continue
            came = ins.get(pair[0], {}).get((seq - pair[1]) & 0xFFFF)
            if came is not None and 0 <= at - came < 0.2:
                out["caller_to_agent" if dst in b else "agent_to_caller"].append(1000 * (at - came))
        return out


def run_scenario(
    scenario: str, args: argparse.Namespace, workdir: Path, redis_url: str
) -> dict[str, Any]:
    """One scenario with fresh nodes and a fresh generator; its measurements."""
    from benchmarks.webrtc_bridge import PASSWORD
    from benchmarks.webrtc_load import generator_main

    names = ["b"] if scenario == "local" else ["a", "b"]
    try:
        probes = frozenset({"stalls"} if args.stalls else ())
        nodes = start_nodes(workdir, names, args.calls, redis_url, probes=probes)
    except harness.ServerStartError as exc:
        return {"scenario": scenario, "error": str(exc)[-800:]}
    idle = {name: Window(server.pid) for name, server in nodes.items()}
    for window in idle.values():
        window.start()
    time.sleep(args.idle)
    for window in idle.values():
        window.end()
    sniffer = None
    if scenario == "cross" and args.hop:
        a_low, b_low = nodes["a"].ports["rtp_low"], nodes["b"].ports["rtp_low"]
        try:
            sniffer = HopSniffer(range(a_low, a_low + 999), range(b_low, b_low + 999))
        except PermissionError:
            print("no packet socket (needs CAP_NET_RAW): the hop's own time is not measured")
    caller_node = nodes["a"] if scenario == "cross" else nodes["b"]
    spec = {
        "calls": args.calls,
        "http_port": nodes["b"].http_port,
        "sip_port": caller_node.sip_port,
        "password": PASSWORD,
        "warmup": args.warmup,
        "duration": args.duration,
        "stagger": args.stagger,
        "setup_timeout": 30 + 1.0 * args.calls,
        "core": None,
    }
    windows = {name: Window(server.pid) for name, server in nodes.items()}
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=generator_main, args=(child, spec), daemon=True)
    process.start()
    result: dict[str, Any] = {}
    span = [math.inf, math.inf]
    try:
        deadline = time.monotonic() + spec["setup_timeout"] * 3 + args.duration + 60
        while time.monotonic() < deadline:
            if not parent.poll(1.0):
                if not process.is_alive():
                    raise RuntimeError("the generator died")
                continue
            message = parent.recv()
            if isinstance(message, dict):
                result = message
                break
            if message[0] == "window-start":
                span[0] = time.monotonic()
                for window in windows.values():
                    window.start()
                if sniffer is not None:
                    sniffer.recording = True
            elif message[0] == "window-end":
                span[1] = time.monotonic()
                for window in windows.values():
                    window.end()
                if sniffer is not None:
                    sniffer.recording = False
        else:
            raise RuntimeError("the generator did not finish in time")
    except RuntimeError as exc:
        result = {"error": str(exc)}
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        for server in nodes.values():
            server.stop()
        if sniffer is not None:
            sniffer.close()
    if "error" in result:
        return {"scenario": scenario, "error": result["error"]}
    seconds = result["window_seconds"]
    idle_rate = {name: w.cpu_seconds / w.seconds for name, w in idle.items()}
    row: dict[str, Any] = {
        "scenario": scenario,
        "cpu_us_per_call_second": {
            name: round(1e6 * (w.cpu_seconds / seconds - idle_rate[name]) / args.calls, 1)
            for name, w in windows.items()
        },
        "idle_cpu_pct": {name: round(100 * rate, 2) for name, rate in idle_rate.items()},
        "latency_ms": result["latency_ms"],
        "calls_without_two_way": result["calls_without_two_way"],
        "wire": result["wire"],
    }
    if sniffer is not None:
        from benchmarks.webrtc_load import summary

        row["hop_held_ms"] = {d: summary(v) for d, v in sniffer.held_ms().items()}
    if args.stalls:
        row["stalls"] = {
            name: stall_summary(probe_file(workdir / name, "stalls"), span[0], span[1])
            for name in nodes
        }
    return row


IDLE_FRAMES = (" wait", " _worker", " get", " select", " poll", " recvmsg", " recv")
"""Innermost frames of another thread that is waiting, not running: left out of the stalls'
samples."""


def threads_ran(stalls: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The node's other threads' time on a CPU and in the run queue during its loop's stalls
    (ms), by thread name."""
    out: dict[str, list[float]] = {}
    for stall in stalls:
        for name, (ran, queued) in stall.get("threads_ran_ms", {}).items():
            key = name.split("/")[0]
            total = out.setdefault(key, [0.0, 0.0])
            total[0], total[1] = round(total[0] + ran, 2), round(total[1] + queued, 2)
    return dict(sorted(out.items(), key=lambda kv: -sum(kv[1])))


def stall_summary(path: Path, start: float, end: float, top: int = 8) -> dict[str, Any]:
    """What benchmarks/nodeprobe.py saw of a node's loop between `start` and `end`: its stalls
    (count, total, longest) and the collector's long passes by generation, and the code most
    often found running on the loop's thread (its innermost frames) or on another thread
    during the stalls."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"{path}: {exc}"}
    stalls = [s for s in found["stalls"] if start <= s["at"] <= end]
    passes = [p for p in found["gc_pauses"] if start <= p["at"] <= end]
    where: dict[str, int] = {}
    for stall in stalls:
        for sample in stall["samples"]:
            for thread, stack in sample.items():
                if thread != "loop" and stack and stack[-1].endswith(IDLE_FRAMES):
                    continue  # a thread waiting for work
                key = f"{thread}: " + " < ".join(reversed(stack[-4:]))
                where[key] = where.get(key, 0) + 1
    return {
        "threshold_ms": found["threshold_ms"],
        "stalls": len(stalls),
        "stalled_ms": round(sum(s["ms"] for s in stalls), 1),
        "longest_ms": sorted((s["ms"] for s in stalls), reverse=True)[:10],
        "longest": [
            {k: s.get(k) for k in ("ms", "ran_ms", "queued_ms", "threads_ran_ms")}
            for s in sorted(stalls, key=lambda s: -s["ms"])[:5]
        ],
        "ran_ms": round(sum(s.get("ran_ms", 0.0) for s in stalls), 1),
        "queued_ms": round(sum(s.get("queued_ms", 0.0) for s in stalls), 1),
        "other_threads_ran_ms": threads_ran(stalls),
        "gc_passes": {
            str(g): {
                "count": len(mine),
                "max_ms": max(p["ms"] for p in mine),
            }
            for g in (0, 1, 2)
            if (mine := [p for p in passes if p["generation"] == g])
        },
        "running_during_stalls": dict(sorted(where.items(), key=lambda kv: -kv[1])[:top]),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs of each scenario, and the hop's cost from them."""
    good = [r for r in runs if "error" not in r and not r["calls_without_two_way"]]
    by = {s: [r for r in good if r["scenario"] == s] for s in ("local", "cross")}
    out: dict[str, Any] = {}
    for scenario, rows in by.items():
        if not rows:
            continue
        cpu = {
            node: _median([r["cpu_us_per_call_second"][node] for r in rows])
            for node in rows[0]["cpu_us_per_call_second"]
        }
        latency = {
            direction: {
                q: _median([r["latency_ms"][direction][q] for r in rows]) for q in ("p50", "p99")
            }
            for direction in ("caller_to_agent", "agent_to_caller")
        }
        out[scenario] = {"cpu_us_per_call_second": cpu, "latency_ms": latency, "runs": len(rows)}
        held = [r["hop_held_ms"] for r in rows if "hop_held_ms" in r]
        if held:
            out[scenario]["hop_held_ms"] = {
                direction: {
                    q: _median([h[direction][q] for h in held])
                    for q in ("count", "p50", "p99", "max")
                }
                for direction in ("caller_to_agent", "agent_to_caller")
            }
    if "local" in out and "cross" in out:
        local, cross = out["local"], out["cross"]
        before, after = local["latency_ms"], cross["latency_ms"]
        out["hop"] = {
            "node_a_cpu_us_per_call_second": cross["cpu_us_per_call_second"]["a"],
            "node_b_cpu_change_us_per_call_second": round(
                cross["cpu_us_per_call_second"]["b"] - local["cpu_us_per_call_second"]["b"], 1
            ),
            "node_a_held_ms": cross.get("hop_held_ms"),
            "added_latency_ms": {
                direction: {
                    q: round(after[direction][q] - before[direction][q], 2) for q in ("p50", "p99")
                }
                for direction in ("caller_to_agent", "agent_to_caller")
            },
        }
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (also those of `benchmarks/cluster.py crossnode`)."""
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--stagger", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument(
        "--no-hop", dest="hop", action="store_false", help="no packet capture (needs root)"
    )
    parser.add_argument(
        "--stalls",
        action="store_true",
        help="the nodes' loop stalls and long collections, with what ran (benchmarks/nodeprobe.py;"
        " its 1 ms beat costs CPU: the CPU figures of such a run are not comparable)",
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both scenarios `args.runs` times, alternating; every run's row and the summary."""
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="omlmedia-crossnode-") as tmp,
        throwaway_redis() as redis_url,
    ):
        for index in range(args.runs):
            for scenario in ("local", "cross"):
                row = run_scenario(scenario, args, Path(tmp) / f"{scenario}-{index}", redis_url)
                runs.append(row)
                print(json.dumps(row), flush=True)
    return {"calls": args.calls, "runs": runs, "summary": summarize(runs)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {"command": " ".join(sys.argv), **measure(args)}
    print(json.dumps(report["summary"], indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if "hop" in report["summary"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
