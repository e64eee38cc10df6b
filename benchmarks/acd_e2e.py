"""ACD end to end: from the caller's INVITE to ``call-incoming`` on an agent's socket.

A real `omlmedia serve` (pinned to core 0 with taskset, a fresh server per rate) runs the
server configuration of benchmarks/harness.py plus N agents ``bench1..N`` (scrypt
hashes with n=2**12), a queue ``bench`` with all of them as members (rrmemory, ring timeout
120 s, no wrap-up), a route ``bench`` -> ``queue:bench`` and no SIP rate limit (every INVITE
comes from one address). The load generator (one process on core 1, uvloop) logs in N headless
agents over ``wss://.../ws`` (aiohttp, certificate not verified; the protocol of
docs/webrtc-signaling.md, no WebRTC channel: a queued call is offered to an agent with a
session, only answering needs the channel) and makes them Ready; then the project's own SIP UA
(sip.ua behind sip.service) places calls to ``bench`` with a PCMU offer at a fixed rate.

Per call: the INVITE's send time (monotonic clock, just before the UA builds and sends it), the
200 OK (the queue answers the caller and starts its music, then offers it) and the arrival of the
first ``call-incoming`` carrying the INVITE's Call-ID on any agent socket. Latency =
call-incoming - INVITE; it includes the generator's own receive path (its event-loop lag is
reported). The first `--warmup` seconds of each rate are placed but not counted.

Cycling scheme: agents never answer (that needs a WebRTC channel). When an agent's socket
shows ``call-incoming``, the *caller* hangs up `--ring-hold` seconds later (BYE: the queue ends
the caller and withdraws the offer, ``call-ended`` reaches the agent, who is Ready again with no
wrap-up). So each agent rings for about `--ring-hold` s per call, rate x ring-hold agents ring at
any time, and rrmemory walks through all N agents. A call not rung within `--ring-deadline` s, or
refused or ended before it rang, counts as failed.

Reported per rate: calls placed / rung / failed, INVITE -> ringing p50/p95/p99/max (and INVITE ->
200 OK, 200 OK -> ringing), agents rung (distinct), server CPU over the window (from
/proc/PID/stat), the busy time of both cores not spent by the server / the generator ("other
load": the machine is shared), the generator's CPU, loop lag and INVITE send lateness. Target:
p99 <= 100 ms with 100 agents logged in.

    .venv/bin/python benchmarks/acd_e2e.py [--agents 100] [--rates 5,10,20] [--duration 10]
        [--warmup 1] [--ring-hold 0.5] [--json out.json] [--profile RATE]
    (or .venv/bin/python benchmarks/acd.py --e2e ...)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    RunningServer,
    drive_generator,
    fmt,
    run_generator,
    server_config,
)
from benchmarks.procstat import GENERATOR_CORE, SERVER_CORE, pin_self  # noqa: E402
from benchmarks.webrtc_load import percentile  # noqa: E402

PASSWORD = "bench-secret"
QUEUE = "bench"
TARGET_P99_MS = 100.0
TARGET_AGENTS = 100


# -- pure helpers (tests/benchmarks/test_acd_e2e.py) ---------------------------------------------


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p95, p99 and max of `values` (NaN when empty)."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def gc_pauses_in(
    pauses: Sequence[tuple[float, int, float]], start: float, end: float
) -> dict[str, Any]:
    """Collections of the server's garbage collector that ended in [start, end): count, total
    and longest pause (ms) per generation. `pauses`: (end, generation, seconds); {} for none."""
    out: dict[str, Any] = {}
    if not pauses:
        return out  # no probe, or the server did not exit cleanly
    for generation in (0, 1, 2):
        these = [s for at, g, s in pauses if g == generation and start <= at < end]
        out[f"gen{generation}"] = {
            "count": len(these),
            "total_ms": 1000 * sum(these),
            "max_ms": 1000 * max(these, default=0.0),
        }
    return out


def read_stalls(path: Path) -> list[tuple[float, float, float, float]]:
    """The lines `serve_probed` wrote for its `StallProbe`."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        at, lag, run, wait = (float(v) for v in line.split())
        out.append((at, lag, run, wait))
    return out


def read_gc_log(path: Path) -> list[tuple[float, int, float]]:
    """The lines `serve_probed` wrote: ``end generation seconds``."""
    if not path.exists():
        return []
    pauses = []
    for line in path.read_text().splitlines():
        at, generation, seconds = line.split()
        pauses.append((float(at), int(generation), float(seconds)))
    return pauses


class StallProbe:
    """Event-loop stalls of this process: a callback every `period` s; an oversleep over
    `threshold` is a stall, split with the thread's /proc schedstat into time spent running
    (Python work, GC), waiting for a CPU (the scheduler: other load on the core) and neither
    (blocked: a synchronous syscall, the GIL held by another thread)."""

    def __init__(self, period: float = 0.01, threshold: float = 0.005) -> None:
        self.period = period
        self.threshold = threshold
        self.stalls: list[tuple[float, float, float, float]] = []
        """(end, lag, running, waiting) in seconds, monotonic clock."""
        self._path = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat")
        self._last = (0.0, 0, 0)

    def _schedstat(self) -> tuple[int, int]:
        try:
            fields = self._path.read_text().split()
            return int(fields[0]), int(fields[1])
        except (OSError, IndexError, ValueError):
            return 0, 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last = (time.monotonic(), *self._schedstat())
        loop.call_later(self.period, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        running, waiting = self._schedstat()
        before, run0, wait0 = self._last
        lag = now - before - self.period
        if lag > self.threshold:
            self.stalls.append((now, lag, (running - run0) / 1e9, (waiting - wait0) / 1e9))
        self._last = (now, running, waiting)
        self._loop.call_later(self.period, self._tick)


def stalls_in(
    stalls: Sequence[tuple[float, float, float, float]], start: float, end: float, top: int = 5
) -> dict[str, Any]:
    """The stalls that ended in [start, end): how many, their total, and the longest (ms, with
    the share of the tick spent running and waiting for a CPU)."""
    these = [s for s in stalls if start <= s[0] < end]
    longest = sorted(these, key=lambda s: s[1], reverse=True)[:top]
    return {
        "count": len(these),
        "total_ms": round(1000 * sum(s[1] for s in these), 1),
        "longest": [
            {
                "at_s": round(at - start, 3),
                "lag_ms": round(1000 * lag, 1),
                "running_ms": round(1000 * run, 1),
                "waiting_for_cpu_ms": round(1000 * wait, 1),
            }
            for at, lag, run, wait in longest
        ],
    }


def schedule(rate: float, duration: float, warmup: float) -> list[tuple[float, bool]]:
    """Offsets (s from the start) of the calls at a fixed `rate` over `warmup` + `duration`
    seconds, each with whether it is counted (False for the warm-up's)."""
    if rate <= 0:
        raise ValueError("the rate must be positive")
    total = round((warmup + duration) * rate)
    warm = round(warmup * rate)
    return [(k / rate, k >= warm) for k in range(total)]


def bench_config(text: str, agents: int, digest: str, ring_timeout: float = 120.0) -> str:
    """The interop test configuration `text` plus agents bench1..N (password hash `digest`), a
    queue ``bench`` of all of them (rrmemory, no wrap-up), the route ``bench`` -> ``queue:bench``
    and no SIP rate limit."""
    text, count = re.subn(r"rate_limit_requests = \d+", "rate_limit_requests = 1000000", text)
    if count != 1:
        raise ValueError("the test configuration has no rate_limit_requests to raise")
    names = [f"bench{k}" for k in range(1, agents + 1)]
    members = ", ".join(f'"{n}"' for n in names)
    parts = [
        text.rstrip("\n"),
        f'\n[[routes]]\nuser = "{QUEUE}"\ntarget = "queue:{QUEUE}"\n',
        f'[queues.{QUEUE}]\nstrategy = "rrmemory"\nmembers = [{members}]\n'
        f"ring_timeout = {ring_timeout:g}\nwrapup = 0\n",
    ]
    parts += [f'[[agents]]\nname = "{n}"\npassword_hash = "{digest}"\n' for n in names]
    return "\n".join(parts)


@dataclass
class CallRecord:
    """One caller: when its INVITE left, when the 200 OK came, when an agent's socket rang."""

    index: int
    counted: bool
    invited: float
    due: float
    call_id: str = ""
    answered: float | None = None
    rung: float | None = None
    agent: str = ""
    failure: str = ""
    sip_call: Any = None
    hung_up: bool = False


def step_figures(records: Sequence[CallRecord]) -> dict[str, Any]:
    """Latencies (ms) and counts of the counted calls."""
    counted = [r for r in records if r.counted]
    rung = [r for r in counted if r.rung is not None]
    ms = 1000.0
    to_ring = [(r.rung - r.invited) * ms for r in rung if r.rung is not None]
    to_ok = [(r.answered - r.invited) * ms for r in counted if r.answered is not None]
    ok_to_ring = [
        (r.rung - r.answered) * ms for r in rung if r.rung is not None and r.answered is not None
    ]
    lateness = [(r.invited - r.due) * ms for r in counted]
    failures = Counter(r.failure or "not rung" for r in counted if r.rung is None)
    first = min((r.invited for r in counted), default=0.0)
    worst = sorted(rung, key=lambda r: (r.rung or 0.0) - r.invited, reverse=True)[:5]
    return {
        "placed": len(counted),
        "rung": len(rung),
        "failed": len(counted) - len(rung),
        "failures": dict(failures.most_common()),
        "invite_to_ringing_ms": latency_summary(to_ring),
        "invite_to_200_ms": latency_summary(to_ok),
        "ok_to_ringing_ms": latency_summary(ok_to_ring),
        "invite_send_lateness_ms": latency_summary(lateness),
        "agents_rung": len({r.agent for r in rung}),
        "worst_calls": [
            {
                "at_s": round(r.invited - first, 3),
                "invite_to_ringing_ms": round(((r.rung or 0.0) - r.invited) * ms, 1),
                "invite_to_200_ms": round((r.answered - r.invited) * ms, 1)
                if r.answered is not None
                else None,
                "agent": r.agent,
            }
            for r in worst
        ],
    }


# -- the generator (child process, core 1) -------------------------------------------------------


@dataclass
class Agent:
    name: str
    ws: Any = None
    reader: asyncio.Future[None] | None = None
    acks: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    state: str = ""
    offers: int = 0
    ended: int = 0
    errors: list[str] = field(default_factory=list)


class Generator:
    def __init__(self, spec: dict[str, Any], conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.agents = [Agent(f"bench{k}") for k in range(1, spec["agents"] + 1)]
        self.records: list[CallRecord] = []
        self.by_call_id: dict[str, CallRecord] = {}
        self.by_number: dict[str, CallRecord] = {}
        self.loop_lag: list[float] = []
        self.measuring = False
        self.rtp_in = 0
        self.stray_offers = 0

    def report(self, *message: Any) -> None:
        self.conn.send(message)

    async def run(self) -> dict[str, Any]:
        import aiohttp

        spec = self.spec
        monitor = asyncio.ensure_future(self._monitor())
        self.stall_probe = StallProbe()
        self.stall_probe.start(asyncio.get_running_loop())
        await self._start_sip()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            t0 = time.monotonic()
            limit = asyncio.Semaphore(10)

            async def up(agent: Agent) -> None:
                async with limit:
                    await self._agent_up(session, agent)

            await asyncio.wait_for(asyncio.gather(*(up(a) for a in self.agents)), 120)
            setup = time.monotonic() - t0
            self.report("progress", f"{len(self.agents)} agents logged in, Ready in {setup:.1f} s")
            await asyncio.sleep(0.5)
            plan = schedule(spec["rate"], spec["duration"], spec["warmup"])
            start = time.monotonic() + 0.1
            window_started = False
            times = os.times()
            cpu0 = times.user + times.system
            w0 = time.monotonic()
            for offset, counted in plan:
                due = start + offset
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if counted and not window_started:
                    window_started = True
                    times = os.times()
                    cpu0 = times.user + times.system
                    w0 = time.monotonic()
                    self.measuring = True
                    self.report("window-start", w0)
                self._invite(len(self.records) + 1, counted, due)
            # every call rings (or fails) within the deadline; the last hang-ups go out
            deadline = time.monotonic() + spec["ring_deadline"]
            while time.monotonic() < deadline:
                if all(r.rung is not None or r.failure for r in self.records):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(spec["ring_hold"] + 0.2)
            w1 = time.monotonic()
            times = os.times()
            cpu1 = times.user + times.system
            self.measuring = False
            self.report("window-end", w1)
            for r in self.records:
                if r.rung is None and not r.failure:
                    r.failure = f"not rung within {spec['ring_deadline']:g} s"
                self._hang_up(r)
            await asyncio.sleep(1.0)
            states = Counter(a.state for a in self.agents)
            result = step_figures(self.records) | {
                "agents": len(self.agents),
                "agents_setup_seconds": setup,
                "window_seconds": w1 - w0,
                "generator_cpu_fraction": (cpu1 - cpu0) / (w1 - w0),
                "generator_loop_lag_ms": latency_summary([x * 1000 for x in self.loop_lag]),
                "agent_states_at_end": dict(states.most_common()),
                "offers_per_agent_max": max(a.offers for a in self.agents),
                "stray_offers": self.stray_offers,
                "moh_packets_received": self.rtp_in,
                "agent_errors": sorted({e for a in self.agents for e in a.errors})[:10],
                "generator_stalls": stalls_in(self.stall_probe.stalls, w0, w1),
            }
            monitor.cancel()
            for agent in self.agents:
                if agent.ws is not None:
                    await agent.ws.close()
        self.sip.close()
        await self.transports.close()
        self.rtp.close()
        return result

    async def _monitor(self) -> None:
        """Event-loop lag of the generator (oversleep of a 10 ms sleep) while measuring."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            if self.measuring:
                self.loop_lag.append(time.monotonic() - before - 0.01)

    # -- agents

    async def _agent_up(self, session: Any, agent: Agent) -> None:
        agent.ws = await session.ws_connect(
            f"wss://127.0.0.1:{self.spec['http_port']}/ws", ssl=False, heartbeat=None
        )
        agent.reader = asyncio.ensure_future(self._read_ws(agent))
        login = {"type": "login", "username": agent.name, "password": self.spec["password"]}
        reply = await self._request(agent, login)
        deadline = time.monotonic() + 60
        while reply.get("code") == "busy" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the server's password checks are bounded: try again
            reply = await self._request(agent, login)
        if reply.get("type") != "login-ok":
            raise RuntimeError(f"{agent.name}: login refused: {reply}")
        reply = await self._request(agent, {"type": "state", "state": "ready"})
        if reply.get("type") != "ack":
            raise RuntimeError(f"{agent.name}: ready refused: {reply}")

    async def _request(self, agent: Agent, message: dict[str, Any]) -> dict[str, Any]:
        ident = len(agent.acks) + 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        agent.acks[ident] = future
        await agent.ws.send_str(json.dumps({"v": 1, "id": ident, **message}))
        return await asyncio.wait_for(future, 30)

    async def _read_ws(self, agent: Agent) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        async for msg in agent.ws:
            now = time.monotonic()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "call-incoming":
                agent.offers += 1
                call = data["call"]
                # on another node (--cluster) the agent's leg has its own Call-ID: the caller's
                # number, unique per call, names the caller
                record = self.by_call_id.get(call["call_id"]) or self.by_number.get(
                    call.get("caller_number", "")
                )
                if record is None:
                    self.stray_offers += 1
                elif record.rung is None:
                    record.rung = now
                    record.agent = agent.name
                    loop.call_later(self.spec["ring_hold"], self._hang_up, record)
                continue
            if kind == "call-ended":
                agent.ended += 1
            elif kind == "state":
                agent.state = data.get("state", "")
            elif kind == "error":
                agent.errors.append(f"{data.get('code')}: {data.get('reason')}")
            ref = data.get("ref")
            if isinstance(ref, int) and ref in agent.acks and not agent.acks[ref].done():
                agent.acks[ref].set_result(data)

    # -- callers

    async def _start_sip(self) -> None:
        from sip.service import SipService
        from sip.transport import SipTransports
        from sip.ua import UserAgent

        loop = asyncio.get_running_loop()
        self.transports = SipTransports()
        await self.transports.start(host="127.0.0.1", udp_port=0)
        self.ua = UserAgent(
            local_endpoints={"udp": self.transports.local_endpoint("udp")},
            trusted_source=lambda ip: "server",
            user_agent="acd_e2e-caller",
        )
        self.sip = SipService(self.ua, self.transports, self._on_sip)
        # One RTP socket for every caller: it takes the queue's music and drops it.
        self.rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Sink(self), local_addr=("127.0.0.1", 0)
        )
        self.rtp_port = self.rtp.get_extra_info("sockname")[1]

    def _invite(self, index: int, counted: bool, due: float) -> None:
        from sip.endpoint import Endpoint
        from sip.message import URI, Address

        port = self.spec["sip_port"]
        record = CallRecord(index, counted, invited=0.0, due=due)
        body = _sdp(self.rtp_port, index).encode()

        def invite(now: float) -> None:
            record.invited = time.monotonic()
            call = self.ua.send_invite(
                destination=Endpoint("udp", "127.0.0.1", port),
                request_uri=URI.parse(f"sip:{QUEUE}@127.0.0.1:{port}"),
                from_address=Address.parse(f"<sip:+5411{index:08d}@127.0.0.1>"),
                to_address=Address.parse(f"<sip:{QUEUE}@127.0.0.1:{port}>"),
                body=body,
                now=now,
            )
            call.app = record
            record.sip_call = call
            record.call_id = call.call_id
            self.by_call_id[call.call_id] = record
            self.by_number[f"+5411{index:08d}"] = record

        self.records.append(record)
        self.sip.act(invite)

    def _hang_up(self, record: CallRecord) -> None:
        from functools import partial

        if record.hung_up or record.sip_call is None:
            return
        record.hung_up = True
        self.sip.act(partial(self.ua.hangup, record.sip_call))

    def _on_sip(self, event: Any) -> None:
        from sip.ua import CallEnded, CallProgress

        record = getattr(getattr(event, "call", None), "app", None)
        if not isinstance(record, CallRecord):
            return
        if isinstance(event, CallProgress):
            status = event.response.status
            if 200 <= status < 300 and record.answered is None:
                record.answered = time.monotonic()
            elif status >= 300 and record.rung is None:
                record.failure = f"{status} {event.response.reason}"
        elif isinstance(event, CallEnded) and record.rung is None and not record.hung_up:
            record.failure = record.failure or f"ended: {event.cause}"


class _Sink(asyncio.DatagramProtocol):
    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.generator.rtp_in += 1

    def error_received(self, exc: Exception) -> None:
        pass


def _sdp(port: int, session: int) -> str:
    lines = [
        "v=0",
        f"o=bench {session} 1 IN IP4 127.0.0.1",
        "s=acd_e2e",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n"


def generator_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Child process entry: pin to the core, run one rate, send the result dict."""
    run_generator(conn, spec.get("core"), lambda: Generator(spec, conn).run())


# -- the server ----------------------------------------------------------------------------------


def serve_probed() -> None:
    """`omlmedia serve` (argv as for ``omlmedia``) with probes: a `gc.callbacks` one that writes
    every collection's end time (monotonic, shared by the processes), generation and pause to
    ``$ACD_E2E_GC_LOG`` at exit, and a `StallProbe` on its event loop (``$ACD_E2E_GC_LOG.stalls``).
    Nothing else changes."""
    import atexit
    import gc

    from omlmedia.cli import main

    started = [0.0]
    pauses: list[tuple[float, int, float]] = []

    def probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.monotonic(), info["generation"], time.perf_counter() - started[0]))

    def dump() -> None:
        lines = (f"{at:.6f} {g} {s:.6f}\n" for at, g, s in pauses)
        Path(os.environ["ACD_E2E_GC_LOG"]).write_text("".join(lines))

    stall_probe = StallProbe()
    try:
        import uvloop
    except ImportError:  # omlmedia.cli runs asyncio's default loop: no stall probe
        uvloop = None  # type: ignore[assignment]
    if uvloop is not None:
        factory = uvloop.new_event_loop

        def new_loop() -> asyncio.AbstractEventLoop:
            loop = factory()
            stall_probe.start(loop)
            return loop

        uvloop.new_event_loop = new_loop  # type: ignore[assignment]  # omlmedia.cli._run's

    def dump_stalls() -> None:
        lines = (f"{at:.6f} {lag:.6f} {r:.6f} {w:.6f}\n" for at, lag, r, w in stall_probe.stalls)
        Path(os.environ["ACD_E2E_GC_LOG"] + ".stalls").write_text("".join(lines))

    gc.callbacks.append(probe)
    atexit.register(dump)
    atexit.register(dump_stalls)
    raise SystemExit(main(sys.argv[1:]))


def write_config(path: Path, workdir: Path, ports: dict[str, int], agents: int) -> None:
    """The benchmark's configuration (see `bench_config`) for a server on `ports`."""
    path.write_text(
        edit_config(server_config(workdir / "data", ports, t1=0.5, media_timeout=600), agents)
    )


def edit_config(text: str, agents: int) -> str:
    """`bench_config` with the agents' password hashed."""
    from webrtc.accounts import hash_password

    return bench_config(text, agents, hash_password(PASSWORD, n=2**12))


CLUSTER_SECRET = b"acd-e2e-benchmark-cluster-secret!"


def cluster_section(name: str, sip_ports: dict[str, int], redis_url: str, secret: Path) -> str:
    """The ``[cluster]`` section of node `name` of a shared-ACD cluster on loopback."""
    return (
        f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\nsecret_file = "{secret}"\n'
        'acd = "shared"\n'
        + "".join(f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{p}"\n' for n, p in sip_ports.items())
    )


def start_server(
    workdir: Path,
    agents: int,
    log_level: str,
    gc_probe: bool = True,
    *,
    cluster: str = "",
    sip_port: int | None = None,
    rtp_low: int = 61000,
) -> RunningServer:
    """A fresh server on core 0 for one rate (with the probes of `serve_probed` when `gc_probe`);
    `cluster`: a ``[cluster]`` section to add, the node's SIP on `sip_port`."""
    python_args: tuple[str, ...] = ("-m", "omlmedia")
    if gc_probe:
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from benchmarks.acd_e2e import serve_probed; serve_probed()"
        )
        python_args = ("-c", code)

    def edit(text: str) -> str:
        if sip_port is not None:
            text = re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {sip_port}", text, count=1)
        return edit_config(text, agents) + cluster

    server = harness.start_server(
        workdir,
        t1=0.5,
        media_timeout=600,
        edit_config=edit,
        extra_args=("--log-level", log_level),
        python_args=python_args,
        env={"ACD_E2E_GC_LOG": str(workdir / "gc.log")},
        core=SERVER_CORE,
        rtp_low=rtp_low,
    )
    if sip_port is not None:
        server.ports["sip"] = sip_port
    return server


# -- one rate ------------------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    agents: int
    ok: bool = True
    error: str = ""
    placed: int = 0
    rung: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    invite_to_ringing_ms: dict[str, float] = field(default_factory=dict)
    invite_to_200_ms: dict[str, float] = field(default_factory=dict)
    ok_to_ringing_ms: dict[str, float] = field(default_factory=dict)
    server_cpu_fraction: float = 0.0
    server_cpu_ms_per_call: float = 0.0
    server_rss_kib: int = 0
    server_run_queue_wait_fraction: float = 0.0
    server_gc: dict[str, Any] = field(default_factory=dict)
    server_stalls: dict[str, Any] = field(default_factory=dict)
    other_load_on_server_core: float = 0.0
    other_load_on_generator_core: float = 0.0
    profile: list[str] = field(default_factory=list)
    generator: dict[str, Any] = field(default_factory=dict)

    @property
    def p99(self) -> float:
        return self.invite_to_ringing_ms.get("p99", math.nan)


def measure(rate: float, args: argparse.Namespace, workdir: Path) -> Step:
    """A fresh server (or cluster), a fresh generator process, one rate; then all stop."""
    if not args.cluster:
        return _measure(rate, args, workdir, None)
    from benchmarks import redisserver

    redis_dir = workdir / f"redis-{rate:g}"
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis, port = redisserver.start(redis_dir)
    try:
        return _measure(rate, args, workdir, f"redis://127.0.0.1:{port}/0")
    finally:
        redisserver.stop(redis)


def _measure(rate: float, args: argparse.Namespace, workdir: Path, redis_url: str | None) -> Step:
    step = Step(rate, args.agents)
    agents_node: RunningServer | None = None
    try:
        if redis_url is None:
            server = start_server(
                workdir / f"rate-{rate:g}", args.agents, args.log_level, not args.no_gc_probe
            )
        else:
            # The callers' node a (measured) and the agents' node b, one ACD over Redis:
            # every offer crosses from a to b over the internal leg.
            secret = workdir / "cluster.secret"
            secret.write_bytes(CLUSTER_SECRET)
            ports = {"a": harness.free_port(), "b": harness.free_port()}
            server = start_server(
                workdir / f"rate-{rate:g}-a",
                args.agents,
                args.log_level,
                not args.no_gc_probe,
                cluster=cluster_section("a", ports, redis_url, secret),
                sip_port=ports["a"],
            )
            agents_node = start_server(
                workdir / f"rate-{rate:g}-b",
                args.agents,
                args.log_level,
                False,
                cluster=cluster_section("b", ports, redis_url, secret),
                sip_port=ports["b"],
                rtp_low=59000,
            )
    except RuntimeError as exc:
        step.ok, step.error = False, str(exc)[-800:]
        return step
    try:
        return _drive(step, rate, args, workdir, server, agents_node or server)
    finally:
        if agents_node is not None:
            agents_node.stop()


def _drive(
    step: Step,
    rate: float,
    args: argparse.Namespace,
    workdir: Path,
    server: RunningServer,
    agents_node: RunningServer,
) -> Step:
    spec = {
        "agents": args.agents,
        "rate": rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "ring_hold": args.ring_hold,
        "ring_deadline": args.ring_deadline,
        "http_port": agents_node.ports["http"],
        "sip_port": server.ports["sip"],
        "password": PASSWORD,
        "core": GENERATOR_CORE,
    }
    run = drive_generator(
        server,
        generator_main,
        spec,
        timeout=180 + args.warmup + args.duration + args.ring_deadline,
        label=f"{rate:g} calls/s",
        profile_seconds=args.duration if args.profile == rate else None,
        profile_out=workdir / f"rate-{rate:g}.pyspy.txt",
    )
    step.profile = run.profile
    result, window = run.result, run.window
    if "error" in result:
        step.ok, step.error = False, result["error"]
        return step
    w0, w1, seconds = window.started, window.ended, window.seconds
    step.generator = result
    step.server_gc = gc_pauses_in(read_gc_log(server.workdir / "gc.log"), w0, w1)
    if not args.no_gc_probe:
        step.server_stalls = stalls_in(read_stalls(server.workdir / "gc.log.stalls"), w0, w1)
    for name in ("placed", "rung", "failed", "failures"):
        setattr(step, name, result[name])
    step.invite_to_ringing_ms = result["invite_to_ringing_ms"]
    step.invite_to_200_ms = result["invite_to_200_ms"]
    step.ok_to_ringing_ms = result["ok_to_ringing_ms"]
    cpu = window.cpu_seconds
    step.server_cpu_fraction = cpu / seconds if seconds > 0 else math.nan
    step.server_cpu_ms_per_call = 1000 * cpu / step.placed if step.placed else math.nan
    step.server_rss_kib = window.rss_kib
    if seconds > 0:
        step.server_run_queue_wait_fraction = window.run_queue_wait_seconds / seconds
        step.other_load_on_server_core = window.other_load_on_server_core(seconds)
        step.other_load_on_generator_core = max(
            0.0, window.generator_core_busy(seconds) - result["generator_cpu_fraction"]
        )
    return step


# -- reporting -----------------------------------------------------------------------------------


def print_step(step: Step) -> None:
    if not step.ok:
        print(f"  {step.rate:g} calls/s FAILED: {step.error}", flush=True)
        return
    lat = step.invite_to_ringing_ms
    gen = step.generator
    out = [
        f"  {step.rate:g} calls/s, {step.agents} agents: placed {step.placed} rung {step.rung} "
        f"failed {step.failed}  INVITE->ringing ms p50/p95/p99/max {fmt(lat['p50'])}/"
        f"{fmt(lat['p95'])}/{fmt(lat['p99'])}/{fmt(lat['max'])} (INVITE->200 p99 "
        f"{fmt(step.invite_to_200_ms['p99'])}, 200->ringing p99 "
        f"{fmt(step.ok_to_ringing_ms['p99'])})"
        + (f"  failures {step.failures}" if step.failures else ""),
        f"    server CPU {100 * step.server_cpu_fraction:.1f} % "
        f"({fmt(step.server_cpu_ms_per_call, '.1f')} ms/call), RSS "
        f"{step.server_rss_kib // 1024} MiB, waited for a CPU "
        f"{100 * step.server_run_queue_wait_fraction:.1f} % of the time; other load on core "
        f"{SERVER_CORE}: {100 * step.other_load_on_server_core:.0f} %, on core "
        f"{GENERATOR_CORE}: {100 * step.other_load_on_generator_core:.0f} %; agents rung "
        f"{gen['agents_rung']}; generator CPU {100 * gen['generator_cpu_fraction']:.0f} %, "
        f"loop lag p99 {fmt(gen['generator_loop_lag_ms']['p99'])} ms",
        "    worst calls (s into the window, ms): "
        + ", ".join(f"{c['at_s']:.2f} {c['invite_to_ringing_ms']:.0f}" for c in gen["worst_calls"]),
    ]
    if step.server_gc:
        longest = max(g["max_ms"] for g in step.server_gc.values())
        out.append(
            f"    server GC: gen2 {step.server_gc['gen2']['count']} x (longest "
            f"{step.server_gc['gen2']['max_ms']:.0f} ms), longest of any gen {longest:.0f} ms"
        )
    for who, stalls in (("server", step.server_stalls), ("generator", gen["generator_stalls"])):
        if stalls and not stalls["count"]:
            out.append(f"    {who} loop stalls > 5 ms: none")
        if stalls and stalls["count"]:
            out.append(
                f"    {who} loop stalls > 5 ms: {stalls['count']} ({stalls['total_ms']:.0f} ms); "
                + ", ".join(
                    f"{s['lag_ms']:.0f} ms at {s['at_s']:.2f} s (ran {s['running_ms']:.0f}, "
                    f"waited for CPU {s['waiting_for_cpu_ms']:.0f})"
                    for s in stalls["longest"][:3]
                )
            )
    print("\n".join(out), flush=True)


def summarize(args: argparse.Namespace, steps: list[Step], notes: list[str]) -> dict[str, Any]:
    print("=" * 100)
    print(
        f"{'calls/s':>7} {'agents':>6} | {'placed':>6} {'rung':>5} {'failed':>6} | "
        f"{'INVITE->ringing ms p50/p95/p99/max':>34} | {'->200 p99':>9} | {'CPU %':>5} "
        f"{'ms/call':>7} | {'other % c0/c1':>13}"
    )
    for step in steps:
        if not step.ok:
            print(f"{step.rate:>7g} {step.agents:>6} | FAILED: {step.error[:150]}")
            continue
        lat = step.invite_to_ringing_ms
        figures = "/".join(fmt(lat[k]) for k in ("p50", "p95", "p99", "max"))
        other = (
            f"{100 * step.other_load_on_server_core:.0f}/"
            f"{100 * step.other_load_on_generator_core:.0f}"
        )
        print(
            f"{step.rate:>7g} {step.agents:>6} | {step.placed:>6} {step.rung:>5} "
            f"{step.failed:>6} | {figures:>34} | {fmt(step.invite_to_200_ms['p99']):>9} | "
            f"{100 * step.server_cpu_fraction:5.1f} {fmt(step.server_cpu_ms_per_call):>7} | "
            f"{other:>13}"
        )
    ran = [s for s in steps if s.ok]
    worst = max((s.p99 for s in ran), default=math.nan)
    met = (
        bool(ran)
        and len(ran) == len(steps)
        and all(s.failed == 0 for s in ran)
        and worst <= TARGET_P99_MS
    )
    print(
        f"target: INVITE -> ringing p99 <= {TARGET_P99_MS:.0f} ms with {TARGET_AGENTS} agents "
        f"logged in; worst p99 {fmt(worst)} ms with {args.agents} agents: "
        + ("met" if met and args.agents >= TARGET_AGENTS else "NOT met")
        + ("" if args.agents >= TARGET_AGENTS else f" (only {args.agents} agents)")
    )
    for step in steps:
        if step.profile:
            print(f"profile ({step.rate:g} calls/s, py-spy, server own time, all threads):")
            for line in step.profile:
                print("   ", line)
    for note in notes:
        print("note:", note)
    report = {
        "command": " ".join(sys.argv),
        "target": {"p99_ms_max": TARGET_P99_MS, "agents": TARGET_AGENTS},
        "scheme": "agents never answer; the caller hangs up ring_hold s after call-incoming",
        "settings": {
            "agents": args.agents,
            "rates": args.rates,
            "duration": args.duration,
            "warmup": args.warmup,
            "ring_hold": args.ring_hold,
            "ring_deadline": args.ring_deadline,
            "server_log_level": args.log_level,
        },
        "steps": [asdict(s) for s in steps],
        "worst_p99_ms": worst,
        "target_met": met and args.agents >= TARGET_AGENTS,
        "notes": notes,
    }
    line = json.dumps(report, sort_keys=True, default=str)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    else:
        print(line)
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="acd_e2e-"))
    pin_self(GENERATOR_CORE)
    print(f"work dir {workdir}; load avg {os.getloadavg()[0]:.2f}", flush=True)
    steps: list[Step] = []
    notes: list[str] = []
    for rate in rates:
        step = measure(rate, args, workdir)
        steps.append(step)
        print_step(step)
        if step.ok and step.generator.get("generator_cpu_fraction", 0) >= 0.9:
            notes.append(f"{rate:g} calls/s: the load generator used >= 90 % of its core")
    notes.append(f"load average at the end: {os.getloadavg()}")
    return summarize(args, steps, notes)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--agents", type=int, default=100, help="agents logged in and Ready")
    p.add_argument("--rates", default="5,10,20", help="calls per second, one step each")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of calls per rate")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of calls not counted")
    p.add_argument(
        "--ring-hold", type=float, default=0.5, help="seconds the caller waits after ringing"
    )
    p.add_argument(
        "--ring-deadline", type=float, default=5.0, help="a call not rung by then failed"
    )
    p.add_argument("--log-level", default="warning", help="the server's --log-level")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="two nodes sharing one ACD over Redis: callers on node a, agents on node b",
    )
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--no-gc-probe", action="store_true", help="run `omlmedia serve` without the GC probe"
    )
    p.add_argument(
        "--profile", type=float, default=0.0, metavar="RATE", help="py-spy the server at RATE"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = run(args)
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
