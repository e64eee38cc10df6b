"""Cluster benchmarks (issue 13), one section per command; each prints a JSON report
(``--json FILE`` writes it too) with the command, the figures and the load average around runs.

Section ``acd``: one ACD across nodes over Redis (`omlmedia.acd_shared`). A throwaway
``redis-server`` on loopback (AOF on, ``appendfsync everysec``, as production should run it).
Two node processes: the *agents* node (a child process, started first so it owns the ACD: it
applies the stream and publishes) with ``--agents`` agents that answer every offer at once and
hang up ``--talk`` seconds later, and the *callers* node (this process), where ``--rate``
callers per second enter one queue for ``--duration`` seconds. Measured:

- decision latency at the caller's node: from `SharedAcd.submit(CallerEnter)` to the node
  receiving its ``joined`` decision and its first ``offer`` decision (input appended to
  ``acd:in``, read by the owner, applied, published to ``acd:out``, read back: four Redis
  round trips plus the two event loops), p50 / p99 / max;
- Redis commands per call: ``INFO commandstats`` before and after, all clients together (the
  lease renewals and the idle ``XREAD BLOCK`` polls included), divided by the calls;
- rebuild time (what a new owner does on takeover) for ``--rebuild`` stream sizes: a synthetic
  stream of logins, enters, answers, completions and ticks written to ``acd:in``, then
  ``XRANGE`` of all of it, parsing and replay (`SharedAcd._rebuild`), and the replay alone.

Section ``cpu``: CPU per call of a two-node cluster against one standalone node. The same sipp
load (``tests/cluster/scenarios/uac_rr.xml`` with RTP: PCMA, sipp's ``g711a.pcap`` played, ACK
and BYE along Record-Route) goes straight to one standalone node (records in SQLite, nothing
shared) and through Kamailio (``contrib/kamailio/kamailio.cfg``) to nodes a and b sharing a
throwaway Redis and PostgreSQL; both systems are up throughout and the runs alternate (order
swapped each run) so that the machine's load weighs on both alike. Per run: user + system CPU
(``/proc/PID/stat``) of each node, Kamailio's processes, Redis and PostgreSQL's processes, per
call and per call-second, raw and with each group's idle rate (measured before the runs) taken
off; the ratios to the standalone node: the nodes alone, with Redis and PostgreSQL, with
Kamailio too. ``--services echo,sales`` adds queue calls (``sales``: no agent logged in, the
caller waits with music and hangs up after 3 s).

With ``--profile DIR`` each node runs under benchmarks/nodeprobe.py's cProfile over the runs
(its loop's thread, from each run's first counters to its last): the report lists, per system,
the functions with the most CPU of their own in ms per call, and DIR keeps each node's profile
(``python -m pstats DIR/node_a.prof``); the CPU figures of such a run are cProfile's, not the
nodes'.

By default both systems get the same calls at the same rate, so each cluster node carries half
the standalone node's load, and a node's per-call CPU grows as its rate falls (its flushes,
wake-ups and batches are shared by fewer calls; session 9 measured +2.4 ms a call for a
standalone node at half the rate). With ``--per-node-load`` the cluster gets ``--calls`` and
``--rate`` times its number of nodes: each node carries what the standalone node carries, the
way a cluster is sized (a node's worth of calls per node), and the ratio reads what being in a
cluster adds per call.

The idle window (``--idle`` seconds, before the runs) is what each system spends with no call;
``--runs 0 --idle 60 --threads`` measures only that, long enough to be precise: per node thread,
CPU from the kernel's nanosecond schedstat and wake-ups a second (``threads_per_second``), and
Redis commands a second by command with the ACD's owner (``redis_by_command_per_second``,
``acd_owner``): what a cluster node spends whatever the load, cause by cause.

With ``--threads`` each node runs under benchmarks/nodeprobe.py, which gives every thread its
Python name as its kernel name; each run (and the idle window) then reads every node thread's CPU
from ``/proc/PID/task`` with the other counters, and the report's ``threads`` gives, per system
and service, each thread's CPU in ms per call (the nodes of a system summed), raw and
idle-excluded: the loop, the store's writer (``omlmedia-store``), PostgreSQL's connection threads
(``omlmedia-pg``)... The CPU figures of such a run are the nodes' own (naming costs nothing).

Section ``ops``: on the cluster only, the same calls to ``echo`` and to the ``sales`` queue;
per call, Redis commands (``INFO commandstats`` deltas, by command) and PostgreSQL's
``pg_stat_database`` deltas (commits, rows inserted, updated, deleted), raw and idle-excluded.

Section ``crossnode``: benchmarks/crossnode.py (same options), its hop figures against the
issue's target (p99 of the time node a holds a packet <= 2 ms) and the CPU of a cross-node call
over a local one.

Section ``failover``: times measured here, ``--runs`` times: Kamailio's detection of a node
killed with SIGKILL (kill -> "node down" in its log), and the ACD's takeover: three
`SharedAcd` nodes (the owner without agents, the agents' node, the callers' node), the owner
killed with SIGKILL while a caller enters: kill -> a new owner holds the lease, and kill -> that
caller's offer is published by it.

    .venv/bin/python benchmarks/cluster.py acd [--agents 50] [--rate 20] [--duration 10]
        [--talk 1.0] [--rebuild 10000,100000] [--json out.json]
    .venv/bin/python benchmarks/cluster.py cpu|ops [--calls 40] [--rate 4] [--call-seconds 8]
        [--runs 3] [--idle 5] [--services echo,sales] [--profile DIR] [--threads]
        [--per-node-load] [--json out.json]
    .venv/bin/python benchmarks/cluster.py crossnode [crossnode.py's options] [--json out.json]
    .venv/bin/python benchmarks/cluster.py failover [--runs 3] [--agents 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from benchmarks import crossnode, harness, kernel_sipp, pgserver, redisserver  # noqa: E402
from benchmarks import kamailio as kam  # noqa: E402
from benchmarks.procstat import cpu_seconds  # noqa: E402
from omlmedia.acd_shared import SharedAcd  # noqa: E402
from queueing.config import AcdConfig, build_config  # noqa: E402
from queueing.events import Joined, LogEvent, OfferCall, QueueLogEntry  # noqa: E402
from queueing.replica import (  # noqa: E402
    AgentLogin,
    CallCompleted,
    CallerEnter,
    Decision,
    Input,
    OfferAnswered,
    ReplicatedAcd,
    Tick,
)


def acd_config(agents: int) -> AcdConfig:
    names = [f"a{i}" for i in range(agents)]
    return build_config(
        {
            "agents": {name: {} for name in names},
            "queues": {"q": {"strategy": "leastrecent", "members": names, "ring_timeout": 15}},
        }
    )


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    return redisserver.start(directory, appendfsync="everysec")


def command_count(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_ping")
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def out_now(url: str) -> str:
    """The id of the last decision in ``acd:out`` ("0" when none): a node started with it as
    `out_from` reads every decision published after this point, even those published before
    its first blocking read (``$`` would miss them)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        last = client.xrevrange("acd:out", count=1)
    finally:
        client.close()
    return str(last[0][0]) if last else "0"


# -- the agents node (a child process) --------------------------------------------------------


async def agents_node(
    url: str, agents: int, talk: float, *, node: str = "agents", login: bool = True
) -> None:
    """A node whose agents answer every offer at once and hang up `talk` seconds later; with
    `login` false it logs no agent in (a node that only competes for the lease)."""
    loop = asyncio.get_running_loop()
    acd: SharedAcd

    def on_decision(decision: Decision) -> None:
        out = decision.output
        if isinstance(out, OfferCall):
            acd.submit(OfferAnswered(out.call_id, out.agent, time.time()))
        elif isinstance(out, QueueLogEntry) and out.event is LogEvent.ANSWER:
            call, agent = out.call_id, out.agent
            loop.call_later(talk, lambda: acd.submit(CallCompleted(call, agent, time.time())))

    acd = SharedAcd(url, node, acd_config(agents), on_decision)
    await acd.start(out_from=out_now(url))
    for i in range(agents if login else 0):
        acd.submit(AgentLogin(f"a{i}", time.time()))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await acd.close()


# -- the callers node (this process) ----------------------------------------------------------


async def measure_latency(url: str, args: argparse.Namespace) -> dict[str, Any]:
    submitted: dict[str, float] = {}
    joined: dict[str, float] = {}
    offered: dict[str, float] = {}
    everyone_offered = asyncio.Event()
    calls = int(args.rate * args.duration)

    def on_decision(decision: Decision) -> None:
        now = time.perf_counter()
        out = decision.output
        if isinstance(out, Joined):
            joined.setdefault(out.call_id, now)
        elif isinstance(out, OfferCall):
            offered.setdefault(out.call_id, now)
            if len(offered) >= calls:
                everyone_offered.set()

    client = redis.Redis.from_url(url)
    # every accepted decision, not only those about this node's callers: the offer is about
    # the agent's node's agent
    acd = SharedAcd(
        url,
        "callers",
        acd_config(args.agents),
        lambda decision: None,
        on_any=lambda decision, accepted: on_decision(decision) if accepted else None,
    )
    await acd.start()
    await asyncio.sleep(1.0)  # let the lease, logins and polls settle before counting
    ops_before = command_count(client)
    started = time.perf_counter()
    for n in range(calls):
        target = started + n / args.rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        call = f"c{n}"
        submitted[call] = time.perf_counter()
        acd.submit(CallerEnter(call, "q", time.time()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(everyone_offered.wait(), 30)
    elapsed = time.perf_counter() - started
    ops = command_count(client) - ops_before
    await acd.close()
    client.close()
    to_join = [(joined[c] - t) * 1000 for c, t in submitted.items() if c in joined]
    to_offer = [(offered[c] - t) * 1000 for c, t in submitted.items() if c in offered]
    return {
        "calls": calls,
        "offered": len(offered),
        "joined_ms": summary(to_join),
        "offer_ms": summary(to_offer),
        "redis_commands": ops,
        "redis_commands_per_call": ops / calls,
        "seconds": elapsed,
        "redis_commands_per_second_idle_included": ops / elapsed,
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def synthetic_stream(size: int, agents: int) -> list[tuple[str, Input, tuple[str, int]]]:
    """A stream of `size` inputs like a busy day's (a caller every 0.5 s, 20 s calls, so about
    40 agents busy, no backlog): logins, then callers entering, answered and completed, with
    ticks; built by running an engine so that every input is plausible."""
    acd = ReplicatedAcd(acd_config(agents), seed=1)
    entries: list[tuple[str, Input, tuple[str, int]]] = []
    pending: list[Input] = [AgentLogin(f"a{i}", 0.0) for i in range(agents)]
    now, calls, ms = 0.0, 0, 1_000_000
    talking: list[tuple[float, str, str]] = []
    while len(entries) < size:
        if not pending:
            now += 0.5
            if talking and talking[0][0] <= now:
                _, call, agent = talking.pop(0)
                pending.append(CallCompleted(call, agent, now))
            elif calls % 20 == 19:
                pending.append(Tick(now))
                calls += 1
            else:
                calls += 1
                pending.append(CallerEnter(f"c{calls}", "q", now))
        item = pending.pop(0)
        ms += 1
        entry = (f"{ms}-0", item, ("bench", len(entries) + 1))
        entries.append(entry)
        for decision in acd.apply(*entry):
            out = decision.output
            if isinstance(out, OfferCall):
                pending.append(OfferAnswered(out.call_id, out.agent, now))
            elif isinstance(out, QueueLogEntry) and out.event is LogEvent.ANSWER:
                talking.append((now + 20.0, out.call_id, out.agent))
    return entries


async def measure_rebuild(port: int, sizes: list[int], agents: int) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        prefix = f"rebuild{size}:"
        entries = synthetic_stream(size, agents)
        client: Any = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=30)
        for first in range(0, len(entries), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for _, item, source in entries[first : first + 1000]:
                    fields = {"s": source[0], "n": source[1], "i": json.dumps(item.to_dict())}
                    pipe.xadd(prefix + "in", fields)
                await pipe.execute()
        await client.aclose()
        print(f"{size} entries written", file=sys.stderr, flush=True)
        acd = SharedAcd(
            f"redis://127.0.0.1:{port}/0", "bench", acd_config(agents), print, prefix=prefix
        )
        started = time.perf_counter()
        await acd._rebuild(1)
        total = time.perf_counter() - started
        await acd._redis.aclose()
        replica = ReplicatedAcd(acd_config(agents), seed=1)
        started = time.perf_counter()
        replica.rebuild(entries, None)
        replay = time.perf_counter() - started
        results.append(
            {
                "entries": size,
                "rebuild_seconds": round(total, 3),
                "replay_seconds": round(replay, 3),
            }
        )
    return results


def run_acd(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-bench-redis-"))
    server, port = start_redis(directory)
    url = f"redis://127.0.0.1:{port}/0"
    argv = [sys.executable, __file__, "acd-agents", "--redis", url]
    argv += ["--agents", str(args.agents), "--talk", str(args.talk)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        if child.stdout.readline() != b"ready\n":
            raise RuntimeError("the agents node did not start")
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while not client.get("acd:owner"):
            if time.monotonic() > deadline:
                raise RuntimeError("the agents node did not take the lease")
            time.sleep(0.05)
        client.close()
        latency = asyncio.run(measure_latency(url, args))
        sizes = [int(s) for s in args.rebuild.split(",") if s]
        rebuild = asyncio.run(measure_rebuild(port, sizes, args.agents))
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "section": "acd",
        "agents": args.agents,
        "rate": args.rate,
        "duration": args.duration,
        "cpus": os.cpu_count(),
        "latency": latency,
        "rebuild": rebuild,
    }


# -- cpu and ops: the same sipp calls on one standalone node and on a two-node cluster --------


def rtp_scenario(directory: Path) -> Path:
    """tests/cluster/scenarios/uac_rr.xml (a PBX's caller: ACK and BYE follow Record-Route)
    with media: PCMA offered, and sipp's ``g711a.pcap`` (8 s, 50 packets a second) played from
    the ACK on; the call lasts the pause (``-d``). Written into `directory` (sipp's cwd, where
    `harness.run_sipp` links ``pcap``)."""
    text = kam.UAC_RR.read_text()
    swaps = [
        ("RTP/AVP 0\n", "RTP/AVP 8\n"),
        ("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"),
        (
            "<pause/>",
            '<nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>\n  <pause/>',
        ),
    ]
    for old, new in swaps:
        if text.count(old) != 1:
            raise RuntimeError(f"{kam.UAC_RR} changed: {old!r} is not there once")
        text = text.replace(old, new)
    path = directory / "uac_rr_pcap.xml"
    path.write_text(text)
    return path


def pids_of_tree(pid: int) -> list[int]:
    return kernel_sipp.process_tree(pid)


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = cpu_seconds(pid)
    return out


@dataclass
class Group:
    """Processes whose CPU is counted together (a node; Kamailio's tree; Redis; PostgreSQL's
    tree). `pids` is read at each measurement (PostgreSQL forks a backend per connection)."""

    name: str
    pids: Callable[[], list[int]]

    def read(self) -> dict[int, float]:
        return cpu_by_pid(self.pids())


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two reads by the processes alive at the second (a process that
    appeared in between counts from zero)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


@dataclass
class Testbed:
    """A system under test: where sipp sends its calls and which processes do the work."""

    name: str
    target: str
    groups: list[Group]
    redis_port: int | None = None
    dsn: str | None = None
    idle_cpu_per_second: dict[str, float] = field(default_factory=dict)
    idle_ops_per_second: dict[str, float] = field(default_factory=dict)
    """Redis commands (``redis``) and each PostgreSQL counter per second with no call."""
    profiled: list[int] = field(default_factory=list)
    """The nodes' pids (profiled over each run with ``--profile``)."""
    threads: dict[str, int] = field(default_factory=dict)
    """With ``--threads``: group name -> the node's pid, whose threads' CPU is read (by name,
    benchmarks/nodeprobe.py) with every group's."""
    idle_thread_cpu_per_second: dict[str, float] = field(default_factory=dict)


def postmaster_pid(instance: pgserver.Postgres) -> int:
    return int((instance.directory / "data" / "postmaster.pid").read_text().split()[0])


@contextmanager
def standalone_node(
    workdir: Path, calls: int, probes: frozenset[str] = frozenset()
) -> Iterator[Testbed]:
    """One node, records in SQLite, nothing shared; sipp calls it directly."""
    nodes = crossnode.start_nodes(workdir / "standalone", ["s"], calls, None, probes=probes)
    try:
        node = nodes["s"]
        yield Testbed(
            "standalone",
            f"127.0.0.1:{node.sip_port}",
            [Group("node", lambda: [node.pid])],
            profiled=[node.pid],
            threads={"node": node.pid} if "threads" in probes else {},
        )
    finally:
        for node in nodes.values():
            node.stop()


@contextmanager
def two_node_cluster(
    workdir: Path, calls: int, probes: frozenset[str] = frozenset()
) -> Iterator[Testbed]:
    """Nodes a and b sharing a throwaway Redis (AOF, everysec), PostgreSQL and their queues'
    ACD (``[cluster] acd = "shared"``), behind Kamailio (contrib/kamailio/kamailio.cfg, as
    tests/cluster/test_kamailio.py runs it)."""
    with contextlib.ExitStack() as stack:
        redis_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omlbench-r-")))
        redis_process, redis_port = redisserver.start(redis_dir, appendfsync="everysec")
        stack.callback(redisserver.stop, redis_process)
        instance = stack.enter_context(pgserver.postgres())
        dsn = instance.create_database("omlmedia")
        url = f"redis://127.0.0.1:{redis_port}/0"
        nodes = crossnode.start_nodes(
            workdir / "cluster", ["a", "b"], calls, url, dsn, "shared", probes=probes
        )
        for node in nodes.values():
            stack.callback(node.stop)
        a, b = nodes["a"], nodes["b"]
        front = stack.enter_context(kam.kamailio(workdir / "kam", [a.sip_port, b.sip_port]))
        kam.wait_probed([a, b])
        redis_pid = redis_process.pid
        postmaster = postmaster_pid(instance)
        yield Testbed(
            "cluster",
            f"127.0.0.1:{front.port}",
            [
                Group("node_a", lambda: [a.pid]),
                Group("node_b", lambda: [b.pid]),
                Group("kamailio", lambda: pids_of_tree(front.process.pid)),
                Group("redis", lambda: [redis_pid]),
                Group("postgresql", lambda: pids_of_tree(postmaster)),
            ],
            redis_port=redis_port,
            dsn=dsn,
            profiled=[a.pid, b.pid],
            threads={"node_a": a.pid, "node_b": b.pid} if "threads" in probes else {},
        )


def redis_commands(port: int) -> dict[str, int]:
    """`INFO commandstats`: calls per command (the benchmark's own INFO left out)."""
    client = redis.Redis(port=port)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def acd_owner(port: int) -> str | None:
    """The shared ACD's lease holder now (``node/pid/nonce``), None without one."""
    client = redis.Redis(port=port)
    try:
        owner = client.get("acd:owner")
    finally:
        client.close()
    return owner.decode() if isinstance(owner, bytes) else None


PG_COUNTERS = ("write_transactions", "wal_bytes", "rows")
"""What PostgreSQL did, read so that no statistics delay applies (``pg_stat_database`` is
reported by each backend up to 10 s late): transactions that wrote (the next transaction id:
only a writing transaction takes one, and the read takes none), bytes of write-ahead log, and
the rows of every table of the schema, counted (inserted minus deleted)."""


def pg_counters(dsn: str) -> dict[str, Any]:
    """`PG_COUNTERS` now, and the rows per table (``tables``)."""

    async def read() -> dict[str, Any]:
        connection = await asyncpg.connect(dsn)
        try:
            xid = await connection.fetchval(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
            )
            wal = await connection.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            names = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            tables = {}
            for row in names:
                name = row["tablename"]
                tables[name] = int(await connection.fetchval(f'SELECT count(*) FROM "{name}"'))
        finally:
            await connection.close()
        return {
            "write_transactions": int(xid),
            "wal_bytes": int(wal),
            "rows": sum(tables.values()),
            "tables": tables,
        }

    return asyncio.run(read())


@dataclass
class Counters:
    at: float
    cpu: dict[str, dict[int, float]]
    redis: dict[str, int]
    pg: dict[str, Any]
    threads: dict[str, dict[int, float]] = field(default_factory=dict)


def read_counters(bed: Testbed) -> Counters:
    return Counters(
        time.monotonic(),
        {group.name: group.read() for group in bed.groups},
        redis_commands(bed.redis_port) if bed.redis_port else {},
        pg_counters(bed.dsn) if bed.dsn else {},
        thread_times(bed.threads),
    )


PG_FLUSH = 0.5
"""The nodes write their records every 0.2 s: the counters are read once PostgreSQL's rows have
not moved for this long after the calls ended, and so opens the idle window (`settle`)."""


def settle(bed: Testbed, timeout: float = 30.0) -> None:
    """Wait until the bed's PostgreSQL rows have not moved for `PG_FLUSH` (the nodes' last
    records written), polling; `timeout` at most."""
    if not bed.dsn:
        return
    deadline = time.monotonic() + timeout
    before, steady = pg_counters(bed.dsn)["rows"], time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(PG_FLUSH / 4)
        now = pg_counters(bed.dsn)["rows"]
        if now != before:
            before, steady = now, time.monotonic()
        elif time.monotonic() - steady >= PG_FLUSH:
            return


def deltas(bed: Testbed, first: Counters, last: Counters) -> dict[str, Any]:
    """CPU per group, Redis commands (total and by command) and PostgreSQL counters between two
    reads, and the same with the idle rate over the interval taken off."""
    seconds = last.at - first.at
    cpu = {name: cpu_delta(first.cpu[name], last.cpu[name]) for name in first.cpu}
    out: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu}
    out["cpu_seconds_idle_excluded"] = {
        name: value - bed.idle_cpu_per_second.get(name, 0.0) * seconds
        for name, value in cpu.items()
    }
    if bed.threads:
        threads = {
            name: cpu_delta(first.threads.get(name, {}), tids)
            for name, tids in last.threads.items()
        }
        out["thread_cpu_seconds"] = threads
        out["thread_cpu_seconds_idle_excluded"] = {
            name: value - bed.idle_thread_cpu_per_second.get(name, 0.0) * seconds
            for name, value in threads.items()
        }
    if bed.redis_port:
        by = {k: v - first.redis.get(k, 0) for k, v in last.redis.items()}
        out["redis_commands"] = sum(by.values())
        out["redis_by_command"] = {k: v for k, v in sorted(by.items()) if v}
    if bed.dsn:
        out["pg"] = {k: last.pg[k] - first.pg[k] for k in PG_COUNTERS}
        before = first.pg["tables"]
        out["pg_rows_by_table"] = {
            name: count - before.get(name, 0)
            for name, count in sorted(last.pg["tables"].items())
            if count != before.get(name, 0)
        }
    if bed.idle_ops_per_second:
        idle = bed.idle_ops_per_second
        out["redis_commands_idle_excluded"] = out["redis_commands"] - idle["redis"] * seconds
        out["pg_idle_excluded"] = {k: v - idle[k] * seconds for k, v in out["pg"].items()}
    return out


def measure_idle(bed: Testbed, seconds: float) -> dict[str, Any]:
    """What the system spends with no call for `seconds` (heartbeats, probes, lease renewals);
    kept in `bed` to take off the runs'. The nodes write for a while after they said they were
    ready: the window opens once PostgreSQL's rows have stopped moving (`settle`)."""
    settle(bed)
    first = read_counters(bed)
    sched = thread_schedstats(bed.threads)
    time.sleep(seconds)
    sched_last = thread_schedstats(bed.threads)
    last = read_counters(bed)
    idle = deltas(bed, first, last)
    if bed.threads:
        # with --threads: each thread's CPU (ns-precise) and wake-ups a second, by kind
        idle["threads_per_second"] = thread_rates(sched, sched_last, last.at - first.at)
    if bed.redis_port:
        idle["redis_by_command_per_second"] = {
            name: round(count / idle["seconds"], 2)
            for name, count in idle["redis_by_command"].items()
        }
        idle["acd_owner"] = acd_owner(bed.redis_port)
    bed.idle_cpu_per_second = {
        name: value / idle["seconds"] for name, value in idle["cpu_seconds"].items()
    }
    bed.idle_thread_cpu_per_second = {
        name: value / idle["seconds"] for name, value in idle.get("thread_cpu_seconds", {}).items()
    }
    if bed.redis_port and bed.dsn:
        bed.idle_ops_per_second = {
            "redis": idle["redis_commands"] / idle["seconds"],
            **{k: v / idle["seconds"] for k, v in idle["pg"].items()},
        }
    idle["cpu_percent"] = {k: round(100 * v, 2) for k, v in bed.idle_cpu_per_second.items()}
    return idle


def place_calls(
    bed: Testbed,
    scenario: Path,
    workdir: Path,
    args: argparse.Namespace,
    *,
    service: str = "echo",
    call_seconds: float,
    name: str,
) -> dict[str, Any]:
    """One sipp run of `args.calls` calls of `call_seconds` at `args.rate` a second to
    `service` through the bed's address (times the cluster's nodes for the cluster with
    ``--per-node-load``); the counters over it (read before the first call and once the records
    of the last have been written: `settle`), per call and per call-second."""
    scale = len(NODES) if args.per_node_load and bed.name == "cluster" else 1
    argv = kam.sipp_uac(
        bed.target,
        calls=args.calls * scale,
        rate=args.rate * scale,
        pause_ms=int(1000 * call_seconds),
    )
    argv[argv.index(str(kam.UAC_RR))] = str(scenario)
    argv[argv.index("echo")] = service
    argv += ["-mp", str(harness.free_port(pair=True))]
    first = read_counters(bed)
    profiled = bed.profiled if args.profile else []
    for pid in profiled:  # benchmarks/nodeprobe.py: profile from here
        os.kill(pid, signal.SIGUSR1)
    timeout = args.calls / args.rate + call_seconds + 120
    result = harness.run_sipp(argv, workdir, timeout=timeout, name=name)
    settle(bed)
    for pid in profiled:
        os.kill(pid, signal.SIGUSR2)
    last = read_counters(bed)
    row = deltas(bed, first, last)
    calls = result.count("SuccessfulCall")
    row |= {"system": bed.name, "service": service, "calls": calls, "call_seconds": call_seconds}
    row["failed"] = result.count("FailedCall")
    if calls:
        for key in ("cpu_seconds", "cpu_seconds_idle_excluded"):
            per = key.replace("cpu_seconds", "cpu_ms_per_call")
            row[per] = {k: round(1000 * v / calls, 3) for k, v in row[key].items()}
            per = key.replace("cpu_seconds", "cpu_ms_per_call_second")
            row[per] = {k: round(1000 * v / (calls * call_seconds), 3) for k, v in row[key].items()}
        if "redis_commands" in row:
            row["redis_commands_per_call"] = round(row["redis_commands"] / calls, 2)
            row["redis_commands_per_call_idle_excluded"] = round(
                row["redis_commands_idle_excluded"] / calls, 2
            )
        if "pg" in row:
            row["pg_per_call"] = {k: round(v / calls, 2) for k, v in row["pg"].items()}
            row["pg_per_call_idle_excluded"] = {
                k: round(v / calls, 2) for k, v in row["pg_idle_excluded"].items()
            }
    print(json.dumps({k: row[k] for k in ("system", "service", "calls", "failed")}), flush=True)
    return row


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else math.nan


NODES = ("node_a", "node_b")


def cpu_ratios(rows: list[dict[str, Any]], key: str = "cpu_ms_per_call") -> dict[str, Any]:
    """Medians over the runs of CPU per call: the standalone node's; the cluster's nodes, with
    Redis and PostgreSQL, with Kamailio too; and each of those over the standalone node."""
    good = [r for r in rows if r["calls"] and not r["failed"]]
    alone = [r[key]["node"] for r in good if r["system"] == "standalone"]
    cluster = [r[key] for r in good if r["system"] == "cluster"]
    nodes = [sum(c[n] for n in NODES) for c in cluster]
    stores = [sum(c[n] for n in (*NODES, "redis", "postgresql")) for c in cluster]
    everything = [sum(c.values()) for c in cluster]
    out: dict[str, Any] = {
        "standalone": median(alone),
        "cluster_nodes": median(nodes),
        "cluster_nodes_redis_postgresql": median(stores),
        "cluster_all_with_kamailio": median(everything),
        "redis": median([c["redis"] for c in cluster]),
        "postgresql": median([c["postgresql"] for c in cluster]),
        "kamailio": median([c["kamailio"] for c in cluster]),
    }
    if alone and cluster:
        base = out["standalone"]
        out["ratio_nodes"] = round(out["cluster_nodes"] / base, 3)
        out["ratio_with_redis_postgresql"] = round(out["cluster_nodes_redis_postgresql"] / base, 3)
        out["ratio_with_kamailio_too"] = round(out["cluster_all_with_kamailio"] / base, 3)
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


QUEUE_SERVICE = "sales"
"""A queue of the test configuration (`harness.server_config`: ``sales``, ringall, agent2,
``max_wait`` 4 s): with no agent logged in its callers wait with music on hold and hang up
(abandon) after `QUEUE_CALL_SECONDS`, before the overflow."""
QUEUE_CALL_SECONDS = 3.0


def ops_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per service, medians over the cluster's runs of Redis commands and PostgreSQL counters
    per call."""
    out: dict[str, Any] = {}
    for service in sorted({r["service"] for r in rows}):
        mine = [r for r in rows if r["service"] == service and r["calls"] and "pg" in r]
        if mine:
            out[service] = {
                "runs": len(mine),
                "redis_commands_per_call": median([r["redis_commands_per_call"] for r in mine]),
                "redis_commands_per_call_idle_excluded": median(
                    [r["redis_commands_per_call_idle_excluded"] for r in mine]
                ),
                "pg_per_call": {
                    k: median([r["pg_per_call"][k] for r in mine]) for k in PG_COUNTERS
                },
                "pg_per_call_idle_excluded": {
                    k: median([r["pg_per_call_idle_excluded"][k] for r in mine])
                    for k in PG_COUNTERS
                },
            }
    return out


def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    """`cpu`: the same sipp load on one standalone node and on the cluster, runs interleaved
    (the order swapped every run); `ops`: on the cluster only. Each run places `args.calls`
    calls to each service of `args.services`."""
    rows: list[dict[str, Any]] = []
    load = [load_average()]
    services = [s for s in args.services.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="omlbench-calls-") as tmp:
        workdir = Path(tmp)
        scenario = rtp_scenario(workdir)
        with contextlib.ExitStack() as stack:
            beds = []
            # the two systems start together (a node takes seconds to start when loaded)
            probes = frozenset(
                {*(["profile"] if args.profile else []), *(["threads"] if args.threads else [])}
            )
            with ThreadPoolExecutor(1) as pool:
                cluster_bed = pool.submit(stack.enter_context, two_node_cluster(workdir, 2, probes))
                if args.section == "cpu":
                    beds.append(stack.enter_context(standalone_node(workdir, 2, probes)))
            beds.append(cluster_bed.result())
            idle = {bed.name: measure_idle(bed, args.idle) for bed in beds}
            for index in range(args.runs):
                for bed in beds if index % 2 == 0 else beds[::-1]:
                    for service in services:
                        seconds = args.call_seconds
                        if service == QUEUE_SERVICE:
                            seconds = min(seconds, QUEUE_CALL_SECONDS)
                        row = place_calls(
                            bed,
                            scenario,
                            workdir,
                            args,
                            service=service,
                            call_seconds=seconds,
                            name=f"{bed.name}{index}",
                        )
                        rows.append(row)
                        load.append(load_average())
        if args.profile:  # the nodes have stopped and written their profiles
            profiles = save_profiles(workdir, args.profile, rows)
    result: dict[str, Any] = {
        "section": args.section,
        "calls_per_run": args.calls,
        "rate": args.rate,
        "per_node_load": args.per_node_load,
        "call_seconds": args.call_seconds,
        "services": services,
        "cpus": os.cpu_count(),
        "load_average_1_5_15": load,
        "idle": idle,
        "runs": rows,
    }
    if args.section == "cpu":
        for service in services:
            mine = [r for r in rows if r["service"] == service]
            result[service] = {
                "cpu_per_call_ms": cpu_ratios(mine),
                "cpu_per_call_ms_idle_excluded": cpu_ratios(mine, "cpu_ms_per_call_idle_excluded"),
                "cpu_per_call_second_ms": cpu_ratios(mine, "cpu_ms_per_call_second"),
            }
    result["ops_per_call"] = ops_summary(rows)
    if args.profile:
        result["profiles"] = profiles
    if args.threads:
        result["threads"] = thread_cpu(rows)
    return result


def thread_cpu(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``--threads``: per system and service, the medians over the runs of each node thread's
    CPU in ms per call (every node of the system summed, threads by name: the loop, the
    store's writer, PostgreSQL's connection thread...), raw and idle-excluded."""
    out: dict[str, Any] = {}
    for row in rows:
        if not row["calls"] or "thread_cpu_seconds" not in row:
            continue
        mine = out.setdefault(row["system"], {}).setdefault(row["service"], [])
        mine.append(row)
    for services in out.values():
        for service, runs in services.items():
            figures: dict[str, Any] = {}
            for key in ("thread_cpu_seconds", "thread_cpu_seconds_idle_excluded"):
                summed: list[dict[str, float]] = []
                for row in runs:
                    by: dict[str, float] = {}
                    for name, value in row[key].items():
                        thread = name.split(":", 1)[1]
                        by[thread] = by.get(thread, 0.0) + 1000 * value / row["calls"]
                    summed.append(by)
                names = sorted({n for by in summed for n in by})
                figures[key.replace("thread_cpu_seconds", "ms_per_call")] = {
                    n: median([by.get(n, 0.0) for by in summed]) for n in names
                }
            services[service] = figures
    return out


def thread_kind(name: str) -> str:
    """A thread's kernel name without a pool's number (``omlmedia-store_0``, cut to 15 bytes:
    ``omlmedia-store_`` -> ``omlmedia-store``)."""
    return name.rstrip("0123456789").rstrip("_") or name


def thread_times(groups: dict[str, int]) -> dict[str, dict[int, float]]:
    """Each thread's CPU seconds so far, as ``group:thread-kind`` -> tid -> seconds, for the
    nodes `groups` (name -> pid) whose threads benchmarks/nodeprobe.py named: from the
    kernel's nanosecond schedstat (`thread_schedstats`), not /proc's 10 ms ticks, in which a
    short run's few ms of a thread read as nothing."""
    return {
        kind: {tid: ran for tid, (ran, _runs) in tids.items()}
        for kind, tids in thread_schedstats(groups).items()
    }


def thread_schedstats(groups: dict[str, int]) -> dict[str, dict[int, tuple[float, int]]]:
    """Each named thread's time on a CPU (seconds, from the kernel's nanosecond schedstat, not
    10 ms ticks) and how many times it was put on a CPU (its wake-ups, near enough), as
    ``group:thread-kind`` -> tid -> (seconds, runs), for the nodes `groups` (name -> pid)."""
    out: dict[str, dict[int, tuple[float, int]]] = {}
    for group, pid in groups.items():
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                        head = stat.read().rpartition(")")[0]
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as sched:
                        ran_ns, _waited, runs = sched.read().split()
                    name = thread_kind(head.split("(", 1)[1])
                    out.setdefault(f"{group}:{name}", {})[int(tid)] = (int(ran_ns) / 1e9, int(runs))
    return out


def thread_rates(
    before: dict[str, dict[int, tuple[float, int]]],
    after: dict[str, dict[int, tuple[float, int]]],
    seconds: float,
) -> dict[str, dict[str, float]]:
    """Per ``group:thread-kind``, between two `thread_schedstats`: CPU in ms a second and
    wake-ups (times put on a CPU) a second, threads of a kind summed."""
    out = {}
    for name, tids in sorted(after.items()):
        ran = runs = 0.0
        for tid, (seconds_now, runs_now) in tids.items():
            was = before.get(name, {}).get(tid, (0.0, 0))
            ran, runs = ran + seconds_now - was[0], runs + runs_now - was[1]
        out[name] = {
            "cpu_ms_per_second": round(1000 * ran / seconds, 3),
            "wakeups_per_second": round(runs / seconds, 2),
        }
    return out


PROBED_NODES = {"node": "standalone/s", "node_a": "cluster/a", "node_b": "cluster/b"}


def save_profiles(workdir: Path, into: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``--profile``: each node's cProfile (its loop's thread over the runs, from the first call
    to the counters' last read) copied to `into` as GROUP.prof, and per system the functions
    with the most CPU of their own, in ms per call of the runs (every node of the system
    together)."""
    into.mkdir(parents=True, exist_ok=True)
    calls: dict[str, int] = {}
    for row in rows:
        calls[row["system"]] = calls.get(row["system"], 0) + row["calls"]
    by_system: dict[str, dict[str, float]] = {}
    for group, where in PROBED_NODES.items():
        source = crossnode.probe_file(workdir / where, "profile")
        if not source.exists():
            continue
        shutil.copy(source, into / f"{group}.prof")
        system = "standalone" if group == "node" else "cluster"
        own = by_system.setdefault(system, {})
        stats: Any = pstats.Stats(str(source))
        for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
            key = f"{Path(filename).name}:{line} {name}"
            own[key] = own.get(key, 0.0) + tottime
    return {
        system: {
            "calls": calls.get(system, 0),
            "total_ms_per_call": round(1000 * sum(own.values()) / max(1, calls.get(system, 0)), 3),
            "top_own_ms_per_call": {
                key: round(1000 * value / max(1, calls.get(system, 0)), 3)
                for key, value in sorted(own.items(), key=lambda kv: -kv[1])[:40]
            },
        }
        for system, own in by_system.items()
    }


# -- crossnode: benchmarks/crossnode.py's hop, against the target ----------------------


HOP_P99_TARGET_MS = 2.0


def hop_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """From crossnode's summary: the latency a cross-node call adds over a local one, end to
    end, each way (p50, p99) and whether its p99 meets the issue's target (the *extra latency of
    a cross-node bridge*); the time node a holds a packet (p50/p99 each way, and whether that
    p99 is within the target too: a stricter reading, which counts the machine's scheduling
    stalls a local call also suffers); the CPU of a cross-node call (a's relay plus b) over a
    local one."""
    out: dict[str, Any] = {"target_p99_ms": HOP_P99_TARGET_MS}
    hop = summary.get("hop")
    if hop is None:
        return out | {"error": "a scenario had no good run"}
    directions = ("caller_to_agent", "agent_to_caller")
    added = hop.get("added_latency_ms") or {}
    if added:
        out["p99_within_target"] = all(added[d]["p99"] <= HOP_P99_TARGET_MS for d in directions)
    held = hop.get("node_a_held_ms") or {}
    out["held_ms"] = {
        direction: {q: held[direction][q] for q in ("p50", "p99")} for direction in held
    }
    if held:
        out["held_p99_within_target"] = all(held[d]["p99"] <= HOP_P99_TARGET_MS for d in directions)
    local = summary["local"]["cpu_us_per_call_second"]["b"]
    cross = summary["cross"]["cpu_us_per_call_second"]
    out["cpu_us_per_call_second"] = {"local": local, "cross_a": cross["a"], "cross_b": cross["b"]}
    if local > 0:
        out["cpu_ratio_cross_over_local"] = round((cross["a"] + cross["b"]) / local, 3)
    out["added_end_to_end_latency_ms"] = hop["added_latency_ms"]
    return out


def run_crossnode(args: argparse.Namespace) -> dict[str, Any]:
    load = load_average()
    report = crossnode.measure(args)
    return {
        "section": "crossnode",
        "load_average_1_5_15": [load, load_average()],
        "hop": hop_figures(report["summary"]),
        "crossnode": report,
    }


# -- failover: Kamailio's detection, the ACD's takeover ---------------------------------------


def kamailio_detection(workdir: Path) -> float:
    """Two nodes behind Kamailio; `kill -9` of one; seconds until Kamailio logs it down."""
    nodes = crossnode.start_nodes(workdir, ["a", "b"], 2, None)
    a, b = nodes["a"], nodes["b"]
    try:
        with kam.kamailio(workdir / "kam", [a.sip_port, b.sip_port]) as front:
            kam.wait_probed([a, b])
            killed = time.monotonic()
            a.process.kill()
            a.process.wait()
            down = front.wait_for("node down", 30)
            return down - killed
    finally:
        a.stop()
        b.stop()


def spawn_node(
    url: str, args: argparse.Namespace, node: str, login: bool
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, __file__, "acd-agents", "--redis", url, "--node", node]
    argv += ["--agents", str(args.agents), "--talk", "1.0"]
    argv += [] if login else ["--no-login"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert child.stdout is not None
    if child.stdout.readline() != b"ready\n":
        child.kill()
        child.wait()
        raise RuntimeError(f"the {node} node did not start")
    return child


def wait_until(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.005)
    return value


async def acd_takeover(url: str, args: argparse.Namespace) -> dict[str, float]:
    """Three nodes on one ACD: `standby` (owner, no agent), `agents` (the agents) and this one
    (callers). `kill -9` of the owner, a caller entering at once: seconds until a new owner holds
    the lease, and until that caller's offer reaches this node (the takeover's rebuild
    included)."""
    owner = redis.Redis.from_url(url, decode_responses=True)
    standby = spawn_node(url, args, "standby", login=False)
    agents: subprocess.Popen[bytes] | None = None
    offered = {"before": asyncio.Event(), "after": asyncio.Event()}

    def on_any(decision: Decision, accepted: bool) -> None:
        out = decision.output
        if accepted and isinstance(out, OfferCall) and out.call_id in offered:
            offered[out.call_id].set()

    try:
        wait_until(lambda: str(owner.get("acd:owner") or "").startswith("standby/"), 10, "no owner")
        agents = spawn_node(url, args, "agents", login=True)
        callers = SharedAcd(
            url,
            "callers",
            acd_config(args.agents),
            lambda decision: None,
            on_any=lambda decision, accepted: on_any(decision, accepted),
        )
        await callers.start(out_from=out_now(url))
        try:
            # the agents are in (a first caller is offered) before the owner dies
            callers.submit(CallerEnter("before", "q", time.time()))
            await asyncio.wait_for(offered["before"].wait(), 15)
            killed = time.monotonic()
            standby.kill()
            callers.submit(CallerEnter("after", "q", time.time()))
            loop = asyncio.get_running_loop()
            new_owner = await loop.run_in_executor(
                None,
                lambda: wait_until(
                    lambda: not str(owner.get("acd:owner") or "standby/").startswith("standby/"),
                    30,
                    "no new owner",
                ),
            )
            assert new_owner
            owned = time.monotonic()
            await asyncio.wait_for(offered["after"].wait(), 30)
            decided = time.monotonic()
        finally:
            await callers.close()
    finally:
        for child in (standby, agents):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        owner.close()
    return {
        "new_owner_s": round(owned - killed, 3),
        "first_offer_after_kill_s": round(decided - killed, 3),
    }


LEASE_TTL: float = inspect.signature(SharedAcd).parameters["lease_ttl"].default
"""The lease's time to live the nodes run with (`SharedAcd`'s default)."""


def run_failover(args: argparse.Namespace) -> dict[str, Any]:
    load = [load_average()]
    detection: list[float] = []
    takeover: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="omlbench-fo-") as tmp:
        for index in range(args.runs):
            detection.append(round(kamailio_detection(Path(tmp) / f"k{index}"), 3))
            load.append(load_average())
            with redisserver.throwaway(appendfsync="everysec") as port:
                takeover.append(asyncio.run(acd_takeover(f"redis://127.0.0.1:{port}/0", args)))
            load.append(load_average())
    return {
        "section": "failover",
        "runs": args.runs,
        "load_average_1_5_15": load,
        "kamailio": {
            "settings": {
                "ping_interval_s": kam.PING_INTERVAL,
                "probe_threshold": kam.PROBE_THRESHOLD,
                "invite_timeout_ms": kam.INVITE_TIMEOUT_MS,
            },
            "kill_to_out_of_rotation_s": detection,
        },
        "acd": {"lease_ttl_s": LEASE_TTL, "agents": args.agents, "takeover": takeover},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sections = parser.add_subparsers(dest="section", required=True)
    acd = sections.add_parser("acd", help="one ACD across nodes over Redis")
    acd.add_argument("--agents", type=int, default=50)
    acd.add_argument("--rate", type=float, default=20.0, help="callers per second")
    acd.add_argument("--duration", type=float, default=10.0)
    acd.add_argument("--talk", type=float, default=1.0)
    acd.add_argument("--rebuild", default="10000,100000", help="stream sizes to rebuild")
    for name, text in (
        ("cpu", "CPU per call: a two-node cluster against one standalone node"),
        ("ops", "Redis and PostgreSQL operations per call on the cluster"),
    ):
        section = sections.add_parser(name, help=text)
        section.add_argument("--calls", type=int, default=40, help="calls per run")
        section.add_argument("--rate", type=float, default=4.0, help="calls per second")
        section.add_argument("--call-seconds", type=float, default=8.0 if name == "cpu" else 2.0)
        section.add_argument("--runs", type=int, default=3)
        section.add_argument("--idle", type=float, default=5.0, help="idle window, seconds")
        section.add_argument(
            "--profile",
            type=Path,
            metavar="DIR",
            help="run the nodes under cProfile (slower: for where their time goes, not for their"
            " CPU); each node's profile goes to DIR, the report lists the top functions",
        )
        section.add_argument(
            "--threads",
            action="store_true",
            help="read each node thread's CPU over the idle window and each run"
            " (benchmarks/nodeprobe.py; costs nothing during the runs)",
        )
        section.add_argument(
            "--per-node-load",
            action="store_true",
            help="the cluster gets --calls and --rate times its nodes: each node carries the"
            " standalone node's load (default: the same calls for both systems)",
        )
        section.add_argument(
            "--services",
            default="echo" if name == "cpu" else f"echo,{QUEUE_SERVICE}",
            help=f"targets called, comma-separated (echo; {QUEUE_SERVICE}: a queue)",
        )
    hop = sections.add_parser("crossnode", help="the cross-node hop (benchmarks/crossnode.py)")
    crossnode.add_arguments(hop)
    failover = sections.add_parser("failover", help="Kamailio's detection, the ACD's takeover")
    failover.add_argument("--runs", type=int, default=3)
    failover.add_argument("--agents", type=int, default=10)
    for section in (acd, *sections.choices.values()):
        if not any(a.dest == "json" for a in section._actions):
            section.add_argument("--json", type=Path)
    child = sections.add_parser("acd-agents", help="(internal) a node of `acd` and `failover`")
    child.add_argument("--redis", required=True)
    child.add_argument("--node", default="agents")
    child.add_argument("--agents", type=int, required=True)
    child.add_argument("--talk", type=float, required=True)
    child.add_argument("--no-login", dest="login", action="store_false")
    args = parser.parse_args()
    if args.section == "acd-agents":
        asyncio.run(
            agents_node(args.redis, args.agents, args.talk, node=args.node, login=args.login)
        )
        return 0
    run = {
        "acd": run_acd,
        "cpu": run_calls,
        "ops": run_calls,
        "crossnode": run_crossnode,
        "failover": run_failover,
    }[args.section]
    result = {"command": " ".join(sys.argv), **run(args)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
