"""Issue 13's outage failures, with real calls: two real `omlmedia serve` nodes on one throwaway
PostgreSQL database (``[storage] dsn``) and one throwaway Redis (``[cluster] redis_url``), sipp
and SIP callers of the test's own into a queue and the hold music, agents' page sockets logged in.

- PostgreSQL stopped (``pg_ctl stop -m immediate``) or frozen (SIGSTOP of its processes) for
  10 s: the calls in progress go on (their RTP keeps coming), new calls are set up,
  ``/api/v1/status`` shows the writes buffered; when it is back they are all committed, every
  call record, queue log row and event exactly once, and the status shows 0 buffered.
- A node stopped (SIGTERM) during a PostgreSQL outage writes what it buffered at its next start.
- Redis frozen (SIGSTOP: "unreachable but alive") and then killed and restarted from its
  append-only file, 10 s each: calls go on, agents stay logged in on their node, the pages'
  sessions are still in Redis with the agent's current state, failed logins are counted per node
  while it is away and by all the nodes again after; a caller waiting in a queue through it keeps
  its own record; status answers throughout, no unhandled error in the logs.

``pytest -s tests/cluster/test_outages.py`` prints what it measured: how long the writes were
buffered and how many, how long the flush after the return took, call set-up times before and
during the outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks import harness, redisserver
from benchmarks.harness import DEMO_PASSWORD
from omlmedia.cluster import RedisSessions
from omlmedia.storage import AsyncStore, CallRecord, Store
from omlmedia.storage_pg import PgConnection, PgError
from tests.cluster import postgres, redis
from tests.cluster.test_sessions import Page
from tests.cluster.test_shared_database import _TLS, api
from tests.interop.harness import require_tool, start_sipp

LISTEN_FOR = Path(__file__).resolve().parent / "scenarios" / "uac_listen_for.xml"
OUTAGE = 10.0
"""Seconds each service stays away."""


# -- the throwaway services and the two nodes ----------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    postgres.require()
    with postgres.postgres() as instance:
        yield instance


@dataclass
class SharedRedis:
    """A throwaway redis-server with its append-only file (``appendfsync always``), which the
    tests freeze, kill and start again on the same port."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        self.process, _ = redisserver.start(self.directory, port=self.port, appendfsync="always")


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedRedis]:
    redis.require()
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-redis-"))
    process, port = redisserver.start(directory, appendfsync="always")
    instance = SharedRedis(directory, port, process)
    try:
        yield instance
    finally:
        if instance.process.poll() is None:
            os.kill(instance.process.pid, signal.SIGCONT)
        redisserver.stop(instance.process)
        subprocess.run(["rm", "-rf", str(directory)], check=False)


@dataclass
class Cluster:
    a: harness.RunningServer
    b: harness.RunningServer
    dsn: str
    workdir: Path

    @property
    def nodes(self) -> tuple[harness.RunningServer, harness.RunningServer]:
        return self.a, self.b


@pytest.fixture(scope="module")
def cluster(
    pg: postgres.Postgres, shared: SharedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    require_tool("sipp")
    dsn = postgres.fresh_database(pg)
    workdir = tmp_path_factory.mktemp("outages")
    started: list[harness.RunningServer] = []
    try:
        for name in ("a", "b"):
            extra = (
                f'\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
                f'\n[cluster]\nredis_url = "{shared.url}"\n'
            )
            started.append(
                harness.start_server(workdir / name, edit_config=lambda t, e=extra: t + e)
            )
        yield Cluster(started[0], started[1], dsn, workdir)
    finally:
        codes = [server.stop() for server in started]
        logs = "".join(server.log()[-3000:] for server in started)
        assert codes == [0] * len(started), logs
        for server in started:  # nothing crashed, whatever was away
            assert crashes(server.log()) == []


EXPECTED_ERRORS = (
    # The store's first failed flush of an outage, with its traceback (once per outage).
    "storing the queue log and call records failed",
    # A reload of the change listener (omlmedia/notify.py) that ran as the database went away
    # again or was not yet back: logged, and (a known gap, not this test's) not retried until
    # the next change or reconnection.
    'logger=omlmedia.notify msg="reloading',
)


def crashes(log: str) -> list[str]:
    """The lines of a node's log that report an error, but those an outage is expected to
    log (`EXPECTED_ERRORS`): a crash, or a failure nobody handled."""
    return [
        line[:2000]
        for line in log.splitlines()
        if ("level=error" in line or "Traceback" in line)
        and not any(expected in line for expected in EXPECTED_ERRORS)
    ]


# -- peers: RTP listeners, long sipp calls, short calls with their set-up time -------------------


class RtpListener:
    """A UDP port the test reads: the arrival time of every packet sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", harness.free_port(pair=True)))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.arrivals.append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def within(self, start: float, end: float) -> list[float]:
        return [t for t in self.arrivals if start <= t <= end]

    def largest_gap(self, start: float, end: float) -> float:
        """The longest time without a packet between `start` and `end` (their edges included)."""
        times = [start, *self.within(start, end), end]
        return max(b - a for a, b in itertools.pairwise(times))


@dataclass
class LongCall:
    """A sipp caller listening on the test's `rtp` port for `duration` seconds."""

    process: subprocess.Popen[bytes]
    rtp: RtpListener
    name: str
    workdir: Path

    def output(self) -> str:
        return (self.workdir / f"{self.name}.out").read_text(errors="replace")[-3000:]


def long_call(
    node: harness.RunningServer, service: str, duration: float, workdir: Path, name: str
) -> LongCall:
    rtp = RtpListener()
    args = [
        *("-sf", str(LISTEN_FOR), f"127.0.0.1:{node.sip_port}", "-s", service),
        *("-i", "127.0.0.1", "-p", "0", "-m", "1", "-d", str(int(duration * 1000))),
        *("-key", "rtp_port", str(rtp.port), "-recv_timeout", "120000"),
    ]
    return LongCall(start_sipp(args, workdir, name), rtp, name, workdir)


def wait_rtp(calls: Sequence[LongCall], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for call in calls:
        while not call.rtp.arrivals:
            assert call.process.poll() is None, call.output()
            assert time.monotonic() < deadline, f"no RTP on {call.name}: {call.output()}"
            time.sleep(0.05)


def finish(calls: Sequence[LongCall], timeout: float = 120.0) -> None:
    """Wait for each long call's own BYE to be answered; close their listeners."""
    for call in calls:
        try:
            code = call.process.wait(timeout)
        finally:
            if call.process.poll() is None:
                call.process.kill()
                call.process.wait()
            call.rtp.close()
        assert code == 0, f"{call.name} failed: {call.output()}"


def _header(message: str, name: str) -> str:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


_calls = iter(range(1, 1_000_000))


def short_call(node: harness.RunningServer, service: str) -> tuple[str, float]:
    """One call to `service` on `node` that hangs up as soon as it is answered: INVITE,
    200 OK, ACK, BYE and its 200 OK. Its Call-ID and its set-up time (INVITE → 200 OK, ms)."""
    n = next(_calls)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(15)
        host, port = sock.getsockname()
        call_id = f"outage-{n}-{time.time_ns()}@127.0.0.1"
        common = (
            f"From: <sip:caller{n}@{host}:{port}>;tag=t{n}\r\nCall-ID: {call_id}\r\n"
            f"Contact: <sip:caller{n}@{host}:{port}>\r\nMax-Forwards: 70\r\n"
        )
        # The hold music goes to the discard port: this caller hangs up at once anyway.
        sdp = f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        sdp += "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        uri = f"sip:{service}@127.0.0.1:{node.sip_port}"
        target = ("127.0.0.1", node.sip_port)
        invite = (
            f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bKi{n}x\r\n"
            f"To: <{uri}>\r\n{common}CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        started = time.perf_counter()
        sock.sendto(invite.encode(), target)
        while True:
            answer = sock.recv(65535).decode(errors="replace")
            if call_id in answer and int(answer.split(" ", 2)[1]) >= 200:
                break
        took = (time.perf_counter() - started) * 1000
        assert answer.startswith("SIP/2.0 200"), answer
        to = _header(answer, "to")
        contact = _header(answer, "contact").strip("<>").split(">")[0]
        for cseq, method in ((1, "ACK"), (2, "BYE")):
            request = (
                f"{method} {contact} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{method}{n}x\r\n"
                f"To: {to}\r\n{common}CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            )
            sock.sendto(request.encode(), target)
        while True:
            reply = sock.recv(65535).decode(errors="replace")
            if "CSeq: 2 BYE" in reply and reply.startswith("SIP/2.0 200"):
                return call_id, took


RATE = 20.0
"""New calls a second the test makes (both nodes together): a busy contact center's rate. A
node reserves 5,000 event ids ahead and cannot give more while PostgreSQL is away: at this rate
(about 8 events a call, half the calls on each node) that lasts about a minute; hundreds of
calls a second would exhaust it within the outage."""


class Pacer:
    """Paces a loop at `rate` iterations a second (no fixed sleep: each waits for its slot)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    def wait(self) -> None:
        delay = self.next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next = max(self.next + self.interval, time.monotonic() - self.interval)


def summary(times: Sequence[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{len(ordered)} calls, median {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"


# -- watching the nodes' status -------------------------------------------------------------------


@dataclass
class StatusWatch:
    """Polls both nodes' ``/api/v1/status`` in a thread: every answer (time, node, storage
    section) and the slowest answer; a failed request fails the test."""

    nodes: Sequence[harness.RunningServer]
    answers: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for index, node in enumerate(self.nodes):
                start = time.monotonic()
                try:
                    status = node.status()
                except Exception as exc:
                    self.failures.append(f"node {index}: {exc!r}")
                    continue
                took = time.monotonic() - start
                self.slowest = max(self.slowest, took)
                self.answers.append((start, index, status))
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self.failures, self.failures

    def pending(self, node: int, start: float, end: float) -> list[int]:
        return [
            int(s["storage"]["pending_writes"])
            for t, i, s in self.answers
            if i == node and start <= t <= end
        ]


def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, what
        time.sleep(0.05)
    return time.monotonic() - start


# -- PostgreSQL away for 10 s ----------------------------------------------------------------------


def instance_pids(pg: postgres.Postgres) -> list[int]:
    """The throwaway PostgreSQL's processes: its postmaster (first line of postmaster.pid)
    and every process it started."""
    main = int((pg.directory / "data" / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == main:
                children.append(int(entry.name))
    return [main, *children]


def freeze(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_postgresql_down_for_10_s_calls_go_on_and_every_record_lands_exactly_once_after(
    cluster: Cluster, pg: postgres.Postgres
) -> None:
    # pg_ctl stop -m immediate: connections refused at once, as after a crash.
    pg_outage(
        cluster,
        lambda: pg.pg_ctl("stop", "-m", "immediate"),
        lambda: pg.pg_ctl("start"),
        "down",
    )


def test_postgresql_frozen_for_10_s_calls_go_on_and_every_record_lands_exactly_once_after(
    cluster: Cluster, pg: postgres.Postgres
) -> None:
    # SIGSTOP of every process of the instance: unreachable but alive, its connections open
    # and silent, as behind a network partition.
    pids: list[int] = []

    def away() -> None:
        pids[:] = instance_pids(pg)
        freeze(pids, signal.SIGSTOP)

    pg_outage(cluster, away, lambda: freeze(pids, signal.SIGCONT), "frozen")


def pg_outage(
    cluster: Cluster, away: Callable[[], None], back: Callable[[], None], label: str
) -> None:
    """Long calls on both nodes and new ones at `RATE` a second; PostgreSQL `away` for 10 s,
    then `back`: checks what the module docstring says."""
    a, b = cluster.nodes
    workdir = Path(tempfile.mkdtemp(prefix=f"pg-{label}-", dir=cluster.workdir))
    before_ids = set(cluster_call_ids(cluster.dsn))
    made: list[str] = []  # the Call-IDs of the test's own short calls
    before: list[float] = []
    paced = Pacer(RATE)
    for i in range(40):  # set-up times with the database up
        paced.wait()
        call_id, took = short_call((a, b)[i % 2], "support")
        made.append(call_id)
        before.append(took)
    # Two long calls on each node, waiting in the queue with its hold music.
    longs = [
        long_call(node, "support", 14.0, workdir, f"long-{name}{i}")
        for name, node in (("a", a), ("b", b))
        for i in range(2)
    ]
    sipp_calls = 10
    gone = returned = False  # a failure during the outage must still bring the database back
    try:
        wait_rtp(longs)
        watch = StatusWatch((a, b))
        down = time.monotonic()
        gone = True
        away()
        stopped = time.monotonic()
        # sipp callers on b during the outage, beside the test's own on both nodes.
        bulk = start_sipp(
            [
                *("-sn", "uac", f"127.0.0.1:{b.sip_port}", "-s", "support"),
                *("-i", "127.0.0.1", "-p", "0", "-m", str(sipp_calls), "-r", "2", "-d", "300"),
            ],
            workdir,
            "bulk",
        )
        during: list[float] = []
        i = 0
        paced = Pacer(RATE)
        while time.monotonic() < stopped + OUTAGE - 1.0:
            paced.wait()
            call_id, took = short_call((a, b)[i % 2], "support")
            made.append(call_id)
            during.append(took)
            i += 1
        assert bulk.wait(60) == 0, (workdir / "bulk.out").read_text(errors="replace")[-3000:]
        while time.monotonic() < stopped + OUTAGE:
            time.sleep(0.05)
        returned = True
        back()
        up = time.monotonic()
        flushed = until(
            lambda: all(n.status()["storage"]["pending_writes"] == 0 for n in (a, b)),
            "the buffered writes were not all committed 30 s after PostgreSQL came back",
        )
        finish(longs)
        watch.stop()
    finally:
        if gone and not returned:
            back()
        for call in longs:
            if call.process.poll() is None:
                call.process.kill()
                call.process.wait()
    # The calls in progress went on: their hold music kept coming throughout the outage.
    for call in longs:
        gap = call.rtp.largest_gap(down, up)
        assert gap < 2.0, f"{call.name}: no RTP for {gap:.2f} s during the outage"
        assert len(call.rtp.within(stopped, up)) > 25 * OUTAGE, call.name  # 50 a second
    # New calls were set up during it, on both nodes.
    assert len(during) >= 10, during
    # The status showed the writes buffered during the outage, on both nodes, and 0 after.
    for node in (0, 1):
        buffered = watch.pending(node, stopped + 1.0, up)
        assert buffered and max(buffered) > 0, (node, buffered)
    most = max(max(watch.pending(node, down, up) or [0]) for node in (0, 1))
    buffered_for = max(float(s["storage"]["oldest_pending_age"]) for _, _, s in watch.answers)
    assert buffered_for > OUTAGE - 2.0, buffered_for  # the status saw the writes wait
    print(
        f"\nPostgreSQL {label} {up - stopped:.1f} s: writes buffered up to {buffered_for:.1f} s, "
        f"at most {most} on a node; all committed {flushed * 1000:.0f} ms after it was back; "
        f"status answered within {watch.slowest * 1000:.0f} ms throughout"
    )
    print(f"set-up before the outage: {summary(before)}")
    print(f"set-up during the outage: {summary(during)}")
    expected = len(made) + sipp_calls + len(longs)

    # Every call of the period exactly once: its record, its queue log, its events.
    store = Store(cluster.dsn)
    try:
        db = store.connect()
        try:

            def rows(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in db.execute(sql).fetchall()]

            records: set[str] = set()

            def recorded() -> bool:
                records.clear()
                records.update(
                    {row[0] for row in rows("SELECT call_id FROM cdr WHERE queue = 'support'")}
                    - before_ids  # this test's calls
                )
                return len(records) >= expected

            # The long calls ended after the flush waited for above: their records, queued at
            # their BYE, come with a later flush (0.2 s), which sipp's exit may come before.
            until(recorded, f"call records missing (of {expected}) after the calls ended")
            assert len(records) == expected, (len(records), expected)
            assert set(made) <= records, set(made) - records
            assert rows("SELECT call_id FROM open_calls") == []
            log = rows(
                "SELECT call_id, event, COUNT(*) FROM queue_log WHERE queue = 'support' "
                "GROUP BY call_id, event"
            )
            assert {(c, e) for c, e, _ in log} >= {(c, e) for c in records for e in ("enter",)}
            assert [row for row in log if row[2] != 1] == [], "queue log rows written twice"
            abandoned = {c for c, e, _ in log if e == "abandon"} - before_ids
            assert abandoned == records, records - abandoned
            events = rows(
                "SELECT call_id, type, COUNT(*) FROM events WHERE call_id != '' "
                "GROUP BY call_id, type"
            )
            assert [row for row in events if row[2] != 1] == [], "events written twice"
            for kind in ("call.started", "call.ended", "queue.entered", "queue.abandoned"):
                have = {c for c, t, _ in events if t == kind}
                assert have >= records, (kind, len(records - have))
            ids = rows("SELECT COUNT(*), COUNT(DISTINCT id) FROM events")
            assert ids[0][0] == ids[0][1]
        finally:
            db.close()
    finally:
        store.close()
    # The status shows 0 buffered after (its flush's rows are visible a moment before it stops
    # counting them: polled, not read once).
    ends: list[dict[str, Any]] = []

    def settled() -> bool:
        ends[:] = [n.status()["storage"] for n in (a, b)]
        return all(s["pending_writes"] == 0 for s in ends)

    until(settled, "writes still buffered once every call was recorded")
    assert all(s["failing_for"] == 0 for s in ends), ends
    if label == "down":  # refused: flushes fail and are retried; frozen: the flush waits
        assert all(s["failed_flushes"] > 0 for s in ends), ends
    # The webhook delivery worker (a child process, restarted when it dies) runs again.
    until(
        lambda: all(n.status()["webhooks"]["worker"] == "running" for n in (a, b)),
        "the webhook worker is not running again after the outage",
    )
    # The other connections came back too: an agent made on a after the outage is known on b.
    name = f"after-{label}"
    status, body = api(a, "POST", "/api/v1/agents", {"name": name, "password": "p" * 8})
    assert status == 201, body
    until(
        lambda: api(b, "GET", f"/api/v1/agents/{name}")[0] == 200,
        "an agent made on a after the outage never reached b",
        timeout=10,
    )


def test_a_node_stopped_while_postgresql_is_down_writes_what_it_buffered_when_it_starts_again(
    cluster: Cluster, pg: postgres.Postgres
) -> None:
    extra = f'\n[storage]\ndsn = "{cluster.dsn}"\nnode = "c"\n'
    workdir = cluster.workdir / "c"
    node = harness.start_server(workdir, edit_config=lambda t: t + extra)
    spill = workdir / "data" / "unflushed.json"
    try:
        flushed = [short_call(node, "support")[0] for _ in range(10)]
        until(lambda: node.status()["storage"]["pending_writes"] == 0, "c never flushed")
        pg.pg_ctl("stop", "-m", "immediate")
        try:
            buffered = [short_call(node, "support")[0] for _ in range(10)]
            assert node.status()["storage"]["pending_writes"] > 0
            assert node.stop() == 0, node.log()[-3000:]  # SIGTERM: a graceful stop
            assert spill.exists(), node.log()[-3000:]
            assert "written at the next start" in node.log()
            # (Not asserted here: the webhook worker, a child process restarted when it dies,
            # logs a traceback at each restart that finds the database away.)
            # The database is still away: the node refuses to start, and says why.
            with pytest.raises(harness.ServerStartError) as refused:
                harness.start_server(workdir, edit_config=lambda t: t + extra, timeout=30)
            assert "exited at start (status 2)" in str(refused.value), str(refused.value)
        finally:
            pg.pg_ctl("start")
        node = harness.start_server(workdir, edit_config=lambda t: t + extra)
        assert not spill.exists()
        assert "wrote the " in node.log()
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert crashes(node.log()) == []
    store = Store(cluster.dsn)
    try:
        db = store.connect()
        try:
            for call_id in flushed + buffered:  # each call once: record, queue log, events
                assert (
                    db.execute("SELECT COUNT(*) FROM cdr WHERE call_id = ?", (call_id,)).fetchone()[
                        0
                    ]
                    == 1
                ), call_id
                log = db.execute(
                    "SELECT event FROM queue_log WHERE call_id = ? ORDER BY time, id", (call_id,)
                ).fetchall()
                assert [row[0] for row in log] == ["enter", "abandon"], (call_id, log)
                ended = db.execute(
                    "SELECT COUNT(*) FROM events WHERE call_id = ? AND type = 'call.ended'",
                    (call_id,),
                ).fetchone()[0]
                assert ended == 1, call_id
        finally:
            db.close()
    finally:
        store.close()


def cluster_call_ids(dsn: str) -> list[str]:
    """The call records already in the database."""
    store = Store(dsn)
    try:
        return [record.call_id for record in store.call_records()]
    finally:
        store.close()


def test_a_postgresql_connection_lost_between_statements_works_again_once_it_is_back(
    pg: postgres.Postgres,
) -> None:
    # The accounts, the webhooks and the readers each hold one connection: after an outage
    # their next statement reconnects instead of failing for good ("connection is closed").
    db = PgConnection(pg.dsn)
    try:
        assert db.execute("SELECT 1").fetchall() == [(1,)]
        pg.pg_ctl("stop", "-m", "immediate")
        try:
            with pytest.raises(PgError):
                db.execute("SELECT 1")  # the database is away: this one fails
        finally:
            pg.pg_ctl("start")
        assert db.execute("SELECT 2").fetchall() == [(2,)]
        # A transaction cut by the outage is lost (and says so), and the next one works.
        db.execute("BEGIN")
        pg.pg_ctl("stop", "-m", "immediate")
        pg.pg_ctl("start")
        with pytest.raises(PgError):
            db.execute("SELECT 3")
        db.execute("ROLLBACK")
        db.execute("BEGIN")
        assert db.execute("SELECT 4").fetchall() == [(4,)]
        db.execute("COMMIT")
    finally:
        db.close()


# -- Redis away for 10 s ---------------------------------------------------------------------------


def session_state(shared: SharedRedis, token: str) -> str | None:
    """The agent state noted in the shared session of `token` (None: no such session)."""
    import redis as redis_client

    client = redis_client.Redis(port=shared.port, socket_timeout=2)
    try:
        key = "omlmedia:session:" + hashlib.sha256(token.encode()).hexdigest()
        value = client.hget(key, "state")
    finally:
        client.close()
    return value.decode() if isinstance(value, bytes) else None


def agent_state(node: harness.RunningServer, agent: str) -> str:
    status, view = api(node, "GET", f"/api/v1/agents/{agent}")
    assert status == 200, view
    return str(view.get("state"))


async def try_login(node: harness.RunningServer, name: str, password: str) -> str:
    """One password login on a fresh page socket: ``login-ok`` or the error's code."""
    async with Page(node) as page:
        reply = await page.request("login", username=name, password=password)
    return str(reply.get("code", reply["type"]))


class LivePage:
    """An agent page's socket that reads all the time, as the page does: it answers the node's
    WebSocket pings (a page silent for 15 s is dropped) while the test looks elsewhere."""

    def __init__(self, node: harness.RunningServer) -> None:
        self.node = node
        self.ids = itertools.count(1)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> LivePage:
        port = self.node.http_port
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(
            f"wss://127.0.0.1:{port}/ws", ssl=_TLS, origin=f"https://127.0.0.1:{port}"
        )
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.put_nowait(message.json())

    async def __aexit__(self, *_: object) -> None:
        await self.ws.close()
        self.reader.cancel()
        await self.session.close()

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one message; the answer to it (or an error)."""
        ident = next(self.ids)
        await self.ws.send_json({"v": 1, "type": kind, "id": ident, **fields})
        while True:
            message = await asyncio.wait_for(self.messages.get(), 15)
            if message.get("ref") == ident or message.get("type") == "error":
                return message


def redis_outage(
    cluster: Cluster,
    shared: SharedRedis,
    away: Callable[[], None],
    back: Callable[[], None],
    *,
    lockouts: bool,
) -> None:
    """Agents logged in on both nodes and a call on each; Redis `away` for 10 s, then `back`.
    Checks what must hold throughout and after (see the module's docstring)."""
    a, b = cluster.nodes
    workdir = Path(tempfile.mkdtemp(prefix="redis-outage-", dir=cluster.workdir))
    if lockouts:
        for name in ("lockout-local", "lockout-shared"):
            status, body = api(a, "POST", "/api/v1/agents", {"name": name, "password": "p" * 12})
            assert status == 201, body
            until(lambda n=name: api(b, "GET", f"/api/v1/agents/{n}")[0] == 200, "not on b")

    async def run() -> None:
        async with LivePage(a) as one, LivePage(b) as two:
            first = await one.request("login", username="agent1", password=DEMO_PASSWORD)
            second = await two.request("login", username="agent2", password=DEMO_PASSWORD)
            assert first["type"] == second["type"] == "login-ok", (first, second)
            # agent1 Ready on a; agent2 stays paused on b, so that a caller waits in b's queue.
            assert (await one.request("state", state="ready"))["type"] == "ack"
            tokens = str(first["token"]), str(second["token"])
            await asyncio.to_thread(
                until,
                lambda: [session_state(shared, t) for t in tokens] == ["ready", "paused"],
                "the nodes never noted the agents' states in Redis",
            )
            # Long enough to end well after Redis is back and the nodes sweep for lost calls.
            longs = [
                long_call(node, service, OUTAGE + 14.0, workdir, f"{service}-{name}")
                for name, node, service in (("a", a, "moh"), ("b", b, "moh"), ("b", b, "support"))
            ]
            queued = await asyncio.to_thread(set, cluster_call_ids(cluster.dsn))
            gone = returned = False  # a failure during the outage must still bring Redis back
            try:
                await asyncio.to_thread(wait_rtp, longs)
                before: list[float] = []
                paced = Pacer(10.0)
                for i in range(40):  # set-up times with Redis up, the same calls
                    await asyncio.to_thread(paced.wait)
                    before.append((await asyncio.to_thread(short_call, (a, b)[i % 2], "echo"))[1])
                watch = StatusWatch((a, b))
                down = time.monotonic()
                gone = True
                await asyncio.to_thread(away)
                # Agents stay logged in on their node, and a state change is acknowledged.
                paused = await one.request("state", state="paused")
                assert paused["type"] == "ack", paused
                if lockouts:  # each node counts the failures it sees on its own
                    codes = [await try_login(a, "lockout-local", "wrong") for _ in range(5)]
                    assert codes == ["bad-credentials"] * 5, codes
                    assert await try_login(a, "lockout-local", "p" * 12) == "locked-out"
                    assert await try_login(b, "lockout-local", "p" * 12) == "login-ok"
                # New calls are set up meanwhile.
                setups: list[float] = []
                paced = Pacer(10.0)
                i = 0
                while time.monotonic() < down + OUTAGE - 1.0:
                    await asyncio.to_thread(paced.wait)
                    _, took = await asyncio.to_thread(short_call, (a, b)[i % 2], "echo")
                    setups.append(took)
                    i += 1
                assert len(setups) >= 10, setups
                assert await asyncio.to_thread(agent_state, a, "agent1") == "paused"
                assert await asyncio.to_thread(agent_state, b, "agent2") == "paused"
                await asyncio.sleep(max(0.0, down + OUTAGE - time.monotonic()))  # its end
                returned = True
                await asyncio.to_thread(back)
                up = time.monotonic()
                # The change made while Redis was away reaches it: the sessions converge.
                took = await asyncio.to_thread(
                    until,
                    lambda: [session_state(shared, t) for t in tokens] == ["paused", "paused"],
                    "the shared sessions never caught up with the agents' states",
                )
                print(
                    f"\nRedis away {up - down:.1f} s: set-up before {summary(before)}, "
                    f"during it {summary(setups)}; "
                    f"sessions caught up {took * 1000:.0f} ms after it was back; "
                    f"status answered within {watch.slowest * 1000:.0f} ms throughout"
                )
                # A page whose socket drops comes back on its node with its token.
                await one.ws.close()
                async with LivePage(a) as again:
                    back_in = await again.request("auth", token=tokens[0])
                    assert back_in["type"] == "auth-ok" and back_in.get("state") == "paused"
                    bye = await again.request("logout")
                    assert bye["type"] in ("ack", "session-ended"), bye
                if lockouts:  # counted by both nodes again: three on a, two on b lock the pair
                    codes = [
                        await try_login(node, "lockout-shared", "wrong") for node in (a, b, a, b, a)
                    ]
                    assert codes == ["bad-credentials"] * 5, codes
                    assert await try_login(b, "lockout-shared", "p" * 12) == "locked-out"
                await asyncio.to_thread(finish, longs)
                for call in longs:
                    gap = call.rtp.largest_gap(down, up)
                    assert gap < 2.0, f"{call.name}: no RTP for {gap:.2f} s during the outage"
                watch.stop()
                assert watch.slowest < 5.0, watch.slowest
            finally:
                if gone and not returned:
                    await asyncio.to_thread(back)
                for call in longs:
                    if call.process.poll() is None:
                        call.process.kill()
                        call.process.wait()
            bye = await two.request("logout")
            assert bye["type"] in ("ack", "session-ended"), bye
            # The caller who waited in b's queue through the outage: one record, its own (b was
            # never taken for dead by a, though its heartbeat in Redis lapsed meanwhile).
            store = Store(cluster.dsn)
            try:
                waited: list[CallRecord] = []

                def recorded() -> bool:
                    waited[:] = [
                        r
                        for r in store.call_records()
                        if r.call_id not in queued and r.queue == "support"
                    ]
                    return bool(waited)

                await asyncio.to_thread(until, recorded, "the waiting caller was never recorded")
                assert len(waited) == 1 and waited[0].end - waited[0].start > OUTAGE, waited
                assert waited[0].cause != "node-lost", waited[0]
                events = [row.event for row in store.queue_log(call_id=waited[0].call_id)]
                assert events == ["enter", "abandon"], events
            finally:
                store.close()

    asyncio.run(run())


def test_redis_frozen_for_10_s_calls_and_agents_go_on_and_the_sessions_catch_up_after(
    cluster: Cluster, shared: SharedRedis
) -> None:
    # SIGSTOP: Redis unreachable but alive, its connections open and silent (1 s timeouts).
    redis_outage(
        cluster,
        shared,
        lambda: os.kill(shared.process.pid, signal.SIGSTOP),
        lambda: os.kill(shared.process.pid, signal.SIGCONT),
        lockouts=False,
    )


def test_redis_killed_for_10_s_and_restarted_from_its_file_lockouts_count_locally_meanwhile(
    cluster: Cluster, shared: SharedRedis
) -> None:
    def kill() -> None:
        shared.process.kill()
        shared.process.wait()

    redis_outage(cluster, shared, kill, shared.restart, lockouts=True)


async def test_session_changes_made_while_redis_is_down_reach_it_once_it_is_back(
    tmp_path: Path,
) -> None:
    redis.require()
    process, port = redisserver.start(tmp_path, appendfsync="always")
    sessions = RedisSessions(f"redis://127.0.0.1:{port}/0")
    try:
        paused, gone = hashlib.sha256(b"one").digest(), hashlib.sha256(b"two").digest()
        await sessions.put(paused, "agent1", 3600)
        await sessions.note_state(paused, "ready")
        await sessions.put(gone, "agent2", 3600)
        process.kill()
        process.wait()
        # Redis is down: the agent pauses, the other logs out, a third logs in.
        late = hashlib.sha256(b"three").digest()
        await sessions.note_state(paused, "paused")
        await sessions.drop(gone)
        await sessions.put(late, "agent3", 3600)
        await sessions.note_state(late, "ready")
        assert sessions.pending == 3
        process, _ = redisserver.start(tmp_path, port=port, appendfsync="always")
        deadline = time.monotonic() + 10
        while sessions.pending:
            assert time.monotonic() < deadline, "the changes never reached Redis"
            await asyncio.sleep(0.05)
        assert (await sessions.get(paused) or ("", 0, ""))[2] == "paused"
        assert await sessions.get(gone) is None  # logged out: no node may adopt it
        agent, left, state = await sessions.get(late) or ("", 0, "")
        assert (agent, state) == ("agent3", "ready") and 3500 < left <= 3600
    finally:
        await sessions.close()
        redisserver.stop(process)


def test_a_batch_sent_again_after_its_commit_does_not_fail_on_its_events(tmp_path: Path) -> None:
    # The database stopped between its commit and its answer: the store sends the batch again.
    # Its events are there already; the flush must not fail on them (every later flush of the
    # node would fail the same way, for good).
    store = Store(tmp_path / "omlmedia.db", writer=True)
    try:
        event = (store.next_event_id(), time.time(), "call.ended", "c1", "q", "", "", "{}")
        store.append_event(event)
        assert store.flush() == 1
        store.append_event(event)  # the same event again, as a resent batch holds it
        assert store.flush() == 1
        assert [row[0] for row in store.all_events(0, 10)] == [event[0]]
    finally:
        store.close()


class FewIds(Store):
    IDS_AHEAD = 10  # a reserve the test can use up


async def test_with_no_event_id_left_and_postgresql_frozen_the_loop_is_refused_at_once(
    pg: postgres.Postgres,
) -> None:
    # Past its reserve, a node's next event id needs the database: frozen, it would stop the
    # event loop (and every call of the node) until it answers. It is refused at once instead.
    store = AsyncStore(FewIds(postgres.fresh_database(pg), writer=True), flush_interval=0.05)
    store.start()
    pids = instance_pids(pg)
    freeze(pids, signal.SIGSTOP)
    try:
        for _ in range(10):
            event = (store.next_event_id(), time.time(), "x.y", "", "", "", "", "{}")
            store.append_event(event)
        deadline = time.monotonic() + 10
        while store.status()["oldest_pending_age"] < 2.0:  # its flush waits on the database
            assert time.monotonic() < deadline, store.status()
            await asyncio.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(ConnectionError):
            store.next_event_id()
        assert time.monotonic() - start < 0.5
    finally:
        freeze(pids, signal.SIGCONT)
    await store.close()
    check = Store(store.store.path)
    try:
        assert len(check.all_events(0, 100)) == 10  # all written once it answered
    finally:
        check.close()
