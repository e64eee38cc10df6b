"""Issue 13's outage failures, with real calls: two real `omlmedia serve` nodes on one throwaway
PostgreSQL database (``[storage] dsn``) and one throwaway Redis (``[cluster] redis_url``), sipp
and SIP callers of the test's own into a queue and the hold music, agents' page sockets logged in.

- PostgreSQL stopped (``pg_ctl stop -m immediate``) for 10 s: the calls in progress go on (their
  RTP keeps coming), new calls are set up, ``/api/v1/status`` shows the writes buffered; when it
  is back they are all committed, every call record, queue log row and event exactly once, and
  the status shows 0 buffered.
- Redis frozen (SIGSTOP: "unreachable but alive") and then killed and restarted from its
  append-only file, 10 s each: calls go on, agents stay logged in on their node, the pages'
  sessions are still in Redis with the agent's current state, failed logins are counted per node
  while it is away and by all the nodes again after; status answers throughout, no traceback.

``pytest -s tests/cluster/test_outages.py`` prints what it measured: how long the writes were
buffered and how many, how long the flush after the return took, call set-up times before and
during the outage.
"""

from __future__ import annotations

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

import pytest

from benchmarks import harness, redisserver
from omlmedia.storage import Store
from omlmedia.storage_pg import PgConnection, PgError
from tests.cluster import postgres, redis
from tests.cluster.test_shared_database import api
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


def crashes(log: str) -> list[str]:
    """The lines of a node's log that report an error, but the one a PostgreSQL outage is
    expected to log (the first failed flush of the store, with its traceback): a crash."""
    return [
        line[:2000]
        for line in log.splitlines()
        if ("level=error" in line or "Traceback" in line)
        and "storing the queue log and call records failed" not in line
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


def test_postgresql_down_for_10_s_calls_go_on_and_every_record_lands_exactly_once_after(
    cluster: Cluster, pg: postgres.Postgres
) -> None:
    a, b = cluster.nodes
    workdir = cluster.workdir / "pg"
    workdir.mkdir()
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
    try:
        wait_rtp(longs)
        watch = StatusWatch((a, b))
        down = time.monotonic()
        pg.pg_ctl("stop", "-m", "immediate")
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
        pg.pg_ctl("start")
        up = time.monotonic()
        flushed = until(
            lambda: all(n.status()["storage"]["pending_writes"] == 0 for n in (a, b)),
            "the buffered writes were not all committed 30 s after PostgreSQL came back",
        )
        finish(longs)
        watch.stop()
    finally:
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
    ends = [(n.status()["storage"]) for n in (a, b)]
    assert all(s["pending_writes"] == 0 and s["failing_for"] == 0 for s in ends), ends
    assert all(s["failed_flushes"] > 0 for s in ends), ends
    most = max(max(watch.pending(node, down, up) or [0]) for node in (0, 1))
    buffered_for = max(float(s["storage"]["failing_for"]) for _, _, s in watch.answers)
    print(
        f"\nPostgreSQL away {up - stopped:.1f} s: writes buffered up to {buffered_for:.1f} s, "
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

            records = {row[0] for row in rows("SELECT call_id FROM cdr WHERE queue = 'support'")}
            assert len(records) == expected, (len(records), expected)
            assert set(made) <= records, set(made) - records
            assert rows("SELECT call_id FROM open_calls") == []
            log = rows(
                "SELECT call_id, event, COUNT(*) FROM queue_log WHERE queue = 'support' "
                "GROUP BY call_id, event"
            )
            assert {(c, e) for c, e, _ in log} >= {(c, e) for c in records for e in ("enter",)}
            assert [row for row in log if row[2] != 1] == [], "queue log rows written twice"
            abandoned = {c for c, e, _ in log if e == "abandon"}
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
    # The other connections came back too: an agent made on a after the outage is known on b.
    status, body = api(a, "POST", "/api/v1/agents", {"name": "after1", "password": "p" * 8})
    assert status == 201, body
    until(
        lambda: api(b, "GET", "/api/v1/agents/after1")[0] == 200,
        "an agent made on a after the outage never reached b",
        timeout=10,
    )


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
