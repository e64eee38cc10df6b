"""The webhook delivery worker: a process of its own (``python -m omlmedia.webhook_worker``),
started, watched and restarted by the server (`omlmedia.webhooks.WorkerProcess`).

Theory of operation. The server only writes: each event's deliveries are ``webhook_outbox``
rows committed with the event (`omlmedia.webhooks.WebhookService.outbox`). This process reads
that table with its own connection and sends the deliveries with its own aiohttp session, so
HTTP clients, TLS handshakes and slow receivers cost the SIP and media event loop nothing.

The server sends one JSON line per command on this process's standard input: the first is the
configuration (the database, possibly a DSN with a password, never on the command line), then
``{"wake": id}`` after each commit of outbox rows, ``{"hooks": 1}`` after a subscription changed
and ``{"replay": hook, "ids": [...]}`` after dead rows were made pending again. The end of the
input (the server stopped) or the server's death stops the worker. On standard output it
answers one JSON line per change of its state: ``ready``, then outcomes and depth.

Each subscription has a cursor (the highest event id read) and reads its pending rows above it,
in event order, a page at a time, at most `memory_limit` in memory; beyond that the rows wait in
the store and are counted there. In memory each receiver has its lanes, one per call: the
deliveries of one call go one after another, each retried with exponential backoff and full
jitter until answered 2xx or dead. A receiver's lanes share its concurrency limit, every
receiver shares an overall one. The outcomes (delivered: the row is deleted; a retry; dead)
go to the server every ~50 ms as lines on standard output, and the server writes them with its
own batches: the database keeps one writer, so the server's commits (and its event loop, which
shares a lock with them) never wait for this process. A worker or server that dies before a
delivery's outcome was committed sends it again (at-least-once: a receiver deduplicates by
``webhook-id``); at start every pending row is read again.

Several nodes on one PostgreSQL database (`node` set). Each node's worker delivers the rows of
its own node's events (``events.node``) while it holds that node's PostgreSQL advisory lock
(`node_lock`, session-level, on its reading connection): it takes it at start, and holds it
while it lives. Every `ADOPT_INTERVAL` it looks for nodes with pending rows and tries their
locks: a lock that stays free for `ADOPT_AFTER` seconds belongs to a node whose worker is gone
(killed with its server: PostgreSQL drops a dead connection's locks at once; the wait spares a
node whose server is ready but whose worker is still starting), so it delivers that node's
rows too, from the first, until none is pending; then it lets the lock go (the node, started
again, takes it back; until then its own worker waits for it). So one worker at a time reads a
node's rows: an event is neither lost with its node nor sent by two live nodes. What a dead
node had sent but not yet written as delivered is sent again by the node that takes over
(at-least-once, as for a restart: receivers deduplicate by ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from omlmedia.storage import StoreError, connect
from omlmedia.storage_pg import is_dsn
from omlmedia.webhooks import _COLUMNS, _OUTBOX, DELAYS, Delivery, Webhook, _hook, sign
from sip.tls import client_context

logger = logging.getLogger("omlmedia.webhook_worker")

WRITE_INTERVAL = 0.05
"""Seconds between the reports of outcomes to the server (which writes them to the outbox)."""
REPORT_WRITES = 1000
"""Outcomes at most in one line to the server."""
POLL_INTERVAL = 1.0
"""Seconds between reads of the outbox without a wake-up from the server."""
PARENT_CHECK = 0.5
"""Seconds between checks that the server is still there."""
PARENT_ENV = "OMLMEDIA_WEBHOOK_WORKER_PARENT"
"""The server's pid, in the worker's environment (its parent, unless a wrapper started it)."""
COUNT_INTERVAL = 0.5
"""Seconds between counts of a spilled receiver's rows left in the store."""
ADOPT_INTERVAL = 1.0
"""Seconds between looks for nodes whose worker is gone and whose rows wait (PostgreSQL)."""
ADOPT_AFTER = 3.0
"""Seconds a node's lock must stay free before its rows are taken over: a node's server is
ready (and publishes) a moment before its worker has started and taken its lock."""
LOCK_CLASS = 0x6F6D6C77
"""The first key of the nodes' advisory locks (``omlw``); the second is `node_lock`'s."""


def node_lock(node: str) -> tuple[int, int]:
    """The two keys of the advisory lock that gives the right to deliver `node`'s rows."""
    digest = hashlib.sha256(node.encode("utf-8", "surrogatepass")).digest()
    return LOCK_CLASS, int.from_bytes(digest[:4], "big", signed=True)


class _Receiver:
    """One subscription's cursor, lanes (one per call) and concurrency limit."""

    def __init__(self, hook_id: str, limit: int) -> None:
        self.hook_id = hook_id
        self.limit = asyncio.Semaphore(limit)
        self.lanes: dict[str, deque[Delivery]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.queued = 0
        """Deliveries in the lanes (in memory)."""
        self.high: dict[str, int] = {}
        """The highest event id read from the store, per node whose rows are read (one, ``""``,
        without PostgreSQL)."""
        self.spilled = False
        """Whether more pending rows above `high` wait in the store (the memory limit)."""
        self.stored = 0
        """How many, when last counted."""
        self.counted = 0.0


class Worker:
    """The delivery engine of the worker process (its own connection, session and loop)."""

    def __init__(
        self,
        location: Path | str,
        *,
        node: str = "",
        delays: Sequence[float] = DELAYS,
        timeout: float = 10.0,
        per_receiver: int = 4,
        overall: int = 64,
        memory_limit: int = 10_000,
        cafile: str | None = None,
        report: Callable[[dict[str, Any]], None] = lambda state: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.location = location
        self.node = node if is_dsn(location) else ""
        self.delays = tuple(delays)
        self.attempts = len(self.delays) + 1
        self.timeout = timeout
        self.per_receiver = per_receiver
        self.memory_limit = memory_limit
        self._closing = False
        self.cafile = cafile
        self.report = report
        self.clock = clock
        self.outcomes: Counter[str] = Counter()
        """Outcomes reported to the server."""
        self._staged_outcomes: Counter[str] = Counter()
        self._staged: list[list[Any]] = []
        """Outcomes for the outbox since the last report: ``["delivered", hook, event id]`` or
        ``["status", status, attempts, error, updated, hook, event id]``."""
        self._overall = asyncio.Semaphore(overall)
        self._receivers: dict[str, _Receiver] = {}
        self.hooks: dict[str, Webhook] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="webhook-worker-read")
        self._db: Any = None
        """The reading connection (WAL: it never waits for a writer)."""

        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._read_once = False
        """Whether the outbox was read: no depth is reported before (a depth of 0 reported by
        a worker just started, while the rows a dead one left wait, was believed)."""
        self._active = asyncio.Event()
        """Set when a subscription or an outcome appears: the writer, idle without any, resumes."""
        self._tasks: list[asyncio.Task[None]] = []
        self._last_report: dict[str, Any] = {}
        self.nodes: set[str] = set() if self.node else {""}
        """The nodes whose rows this worker reads: its own once it holds its lock, and those
        it took over (PostgreSQL); ``{""}``, every row, without."""
        self.adopted: set[str] = set()
        """The nodes of `nodes` whose worker is gone (their rows are delivered here)."""
        self._claimed = -ADOPT_INTERVAL
        self._free_since: dict[str, float] = {}
        """Nodes with pending rows whose lock was found free, since when (the database
        thread's)."""

    # -- the database (on the worker's one database thread) -----------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _read_hooks(self) -> dict[str, Webhook]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM webhooks ORDER BY created").fetchall()
        return {row[0]: _hook(row) for row in rows}

    def _pending(self, hook_id: str, node: str, after: int, limit: int) -> list[tuple[Any, ...]]:
        if self.node:
            # Nodes sharing PostgreSQL: the deliveries of one node's events (`nodes`).
            columns = ", ".join(f"o.{c}" for c in _OUTBOX.split(", "))
            sql = (
                f"SELECT {columns} FROM webhook_outbox o JOIN events e ON e.id = o.event_id "
                "WHERE o.webhook = ? AND o.status = 'pending' AND o.event_id > ? AND e.node = ? "
                "ORDER BY o.event_id LIMIT ?"
            )
            return list(self._db.execute(sql, (hook_id, after, node, limit)).fetchall())
        sql = (
            f"SELECT {_OUTBOX} FROM webhook_outbox WHERE webhook = ? AND status = 'pending' "
            "AND event_id > ? ORDER BY event_id LIMIT ?"
        )
        return list(self._db.execute(sql, (hook_id, after, limit)).fetchall())

    def _count(self, hook_id: str, after: int) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM webhook_outbox WHERE webhook = ? AND status = 'pending' "
            "AND event_id > ?",
            (hook_id, after),
        ).fetchone()
        return int(row[0])

    def _try_lock(self, node: str) -> bool:
        row = self._db.execute("SELECT pg_try_advisory_lock(?, ?)", node_lock(node)).fetchone()
        return bool(row is not None and row[0])

    def _unlock(self, node: str) -> None:
        self._db.execute("SELECT pg_advisory_unlock(?, ?)", node_lock(node))

    def _claim(self, now: float) -> tuple[list[str], list[str]]:
        """Take this node's lock if not held yet, let go of the nodes taken over whose rows are
        all done, take over the nodes with pending rows whose lock was free for `ADOPT_AFTER`
        seconds (their worker is gone): the nodes gained and those let go."""
        gained, released = [], []
        held = {
            int(row[0])
            for row in self._db.execute(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND classid::bigint = ? AND objsubid = 2",
                (LOCK_CLASS,),
            ).fetchall()
        }
        for node in sorted(self.nodes):
            if node_lock(node)[1] % 2**32 in held:
                continue
            # The lock went with the session (the connection was lost and made again): take
            # it again, or stop reading that node's rows (another worker may have them now).
            if node == self.node and self._try_lock(node):
                logger.warning("webhooks: this node's lock was lost and taken again")
                continue
            released.append(node)
        if self.node not in self.nodes and self._try_lock(self.node):
            gained.append(self.node)
        rows = self._db.execute(
            "SELECT DISTINCT e.node FROM webhook_outbox o JOIN events e ON e.id = o.event_id "
            "WHERE o.status = 'pending'"
        ).fetchall()
        waiting = {str(row[0]) for row in rows}
        for node in sorted(self.adopted - waiting - set(released)):
            self._unlock(node)
            released.append(node)
        others = waiting - (self.nodes - set(released)) - {self.node}
        for node in set(self._free_since) - others:
            del self._free_since[node]
        for node in sorted(others):
            if not self._try_lock(node):
                self._free_since.pop(node, None)  # its worker holds it: alive
            elif now - self._free_since.setdefault(node, now) >= ADOPT_AFTER:
                del self._free_since[node]
                gained.append(node)
            else:
                self._unlock(node)  # free, but perhaps only until its worker has started
        return gained, released

    def _replayed(self, hook_id: str, ids: list[int]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for event_id in ids:
            rows += self._db.execute(
                f"SELECT {_OUTBOX} FROM webhook_outbox WHERE webhook = ? AND event_id = ? "
                "AND status = 'pending'",
                (hook_id, event_id),
            ).fetchall()
        return rows

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, read the subscriptions and every pending row, start delivering."""
        self._db = await self._call(connect, self.location)
        ssl_option: Any = client_context(cafile=Path(self.cafile)) if self.cafile else True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=ssl_option),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=False,
        )
        await self.reload_hooks()
        await self._adopt()  # this node's lock at once: no other node takes its rows meanwhile
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reader()), loop.create_task(self._writer())]

    def wake(self) -> None:
        """New rows were committed: read them."""
        self._wake.set()

    async def reload_hooks(self) -> None:
        """Read the subscriptions again: a deleted one's lanes stop, a new one's rows are read."""
        hooks = await self._call(self._read_hooks)
        for hook_id in set(self._receivers) - set(hooks):
            receiver = self._receivers.pop(hook_id)
            for task in receiver.tasks.values():
                task.cancel()
        self.hooks = hooks
        for hook_id in hooks:
            self._receiver(hook_id)
        self.wake()

    async def replay(self, hook_id: str, ids: list[int]) -> None:
        """Queue rows the server made pending again (their ids are below the cursor)."""
        if hook_id not in self.hooks:
            await self.reload_hooks()
        rows = await self._call(self._replayed, hook_id, ids)
        for row in rows:
            self._queue(Delivery(*row))

    def _receiver(self, hook_id: str) -> _Receiver:
        receiver = self._receivers.get(hook_id)
        if receiver is None:
            receiver = self._receivers[hook_id] = _Receiver(hook_id, self.per_receiver)
            self._active.set()
        return receiver

    async def _reader(self) -> None:
        """Read the receivers' new rows whenever woken (or every `POLL_INTERVAL`)."""
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that lands
        # as the wake-up completes, and this loop then never ended (a stop waited 10 s for it)
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._fill()
                self._read_once = True
            except (*StoreError, OSError) as exc:
                logger.warning("reading the webhook outbox failed: %s", exc)
            except Exception as exc:  # asyncpg's client errors too: the reader must go on
                logger.warning("reading the webhook outbox failed: %s: %s", type(exc).__name__, exc)

    def _read(
        self, wanted: list[tuple[str, str, int, int]], counts: list[tuple[str, int]]
    ) -> tuple[dict[tuple[str, str], list[tuple[Any, ...]]], dict[str, int]]:
        """Every receiver's pages (one per node read) and count in one trip to the database
        thread."""
        rows = {
            (hook_id, node): self._pending(hook_id, node, after, room)
            for hook_id, node, after, room in wanted
        }
        return rows, {hook_id: self._count(hook_id, after) for hook_id, after in counts}

    async def _adopt(self) -> None:
        """`_claim` every `ADOPT_INTERVAL` (PostgreSQL only)."""
        now = time.monotonic()
        if not self.node or now - self._claimed < ADOPT_INTERVAL:
            return
        self._claimed = now
        gained, released = await self._call(self._claim, now)
        for node in released:
            self.nodes.discard(node)
            self.adopted.discard(node)
            for receiver in self._receivers.values():
                receiver.high.pop(node, None)
            logger.info("webhooks: the deliveries of node %r are done here", node)
        for node in gained:
            self.nodes.add(node)  # its rows from the first (a cursor of 0)
            if node != self.node:
                self.adopted.add(node)
                logger.warning("webhooks: node %r is gone; delivering its deliveries here", node)

    async def _fill(self) -> None:
        """Queue each receiver's next rows, up to its memory limit."""
        await self._adopt()
        now = time.monotonic()
        receivers = list(self._receivers.values())
        if not receivers:
            return  # no subscription: no trip to the database thread every second
        nodes = sorted(self.nodes)
        rooms = {
            r.hook_id: self.memory_limit - r.queued
            for r in receivers
            if r.queued < self.memory_limit
        }
        wanted = [
            (r.hook_id, node, r.high.get(node, 0), rooms[r.hook_id])
            for r in receivers
            if r.hook_id in rooms
            for node in nodes
        ]
        due = now - COUNT_INTERVAL
        counts = [
            (r.hook_id, min(r.high.values(), default=0))
            for r in receivers
            if r.spilled and r.counted <= due
        ]
        pages, stored = await self._call(self._read, wanted, counts)
        for receiver in receivers:
            if self._receivers.get(receiver.hook_id) is not receiver:
                continue  # deleted meanwhile
            if receiver.hook_id not in rooms:
                receiver.spilled = True
            else:
                full = False
                for node in nodes:
                    rows = pages.get((receiver.hook_id, node), [])
                    for row in rows:
                        self._queue(Delivery(*row))
                        receiver.high[node] = max(receiver.high.get(node, 0), row[1])
                    full = full or len(rows) == rooms[receiver.hook_id]
                receiver.spilled = full
            if not receiver.spilled:
                receiver.stored = 0
            elif receiver.hook_id in stored:
                receiver.counted = now
                receiver.stored = stored[receiver.hook_id]

    def _queue(self, delivery: Delivery) -> None:
        receiver = self._receivers.get(delivery.webhook)
        if receiver is None:
            return
        receiver.queued += 1
        key = delivery.call_id or f"#{delivery.event_id}"
        lane = receiver.lanes.setdefault(key, deque())
        lane.append(delivery)
        if key not in receiver.tasks:
            task = asyncio.get_running_loop().create_task(self._lane(receiver, key))
            receiver.tasks[key] = task

    async def _lane(self, receiver: _Receiver, key: str) -> None:
        lane = receiver.lanes[key]
        try:
            while lane:
                await self._deliver(receiver, lane[0])
                lane.popleft()
                receiver.queued -= 1
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("a webhook delivery lane failed")
        finally:
            receiver.tasks.pop(key, None)
            if not lane:
                receiver.lanes.pop(key, None)
            if receiver.spilled and receiver.queued <= self.memory_limit // 2:
                self.wake()

    def _stage(self, op: list[Any], outcome: str) -> None:
        self._staged.append(op)
        self._staged_outcomes[outcome] += 1
        self._active.set()

    async def _deliver(self, receiver: _Receiver, delivery: Delivery) -> None:
        while True:
            hook = self.hooks.get(delivery.webhook)
            if hook is None:
                return  # the subscription was deleted
            # The receiver's own limit first: a lane waiting for its receiver must not hold
            # one of the slots every receiver shares (that stalled the fast receivers).
            async with receiver.limit, self._overall:
                error = await self._post(hook, delivery)
            delivery.attempts += 1
            delivery.updated = self.clock()
            if not error:
                self._stage(["delivered", delivery.webhook, delivery.event_id], "delivered")
                return
            delivery.last_error = error
            dead = delivery.attempts >= self.attempts
            delivery.status = "dead" if dead else "pending"
            op = [
                "status",
                delivery.status,
                delivery.attempts,
                error,
                delivery.updated,
                delivery.webhook,
                delivery.event_id,
            ]
            self._stage(op, "dead" if dead else "failed")
            if dead:
                logger.warning(
                    "webhook %s: event %d is dead after %d attempts (%s)",
                    hook.id,
                    delivery.event_id,
                    delivery.attempts,
                    error,
                )
                return
            delay = self.delays[min(delivery.attempts, len(self.delays)) - 1]
            await asyncio.sleep(random.uniform(0, delay))

    async def _post(self, hook: Webhook, delivery: Delivery) -> str:
        """One attempt: "" when the receiver answered 2xx, why not otherwise."""
        assert self._session is not None
        msg_id = str(delivery.event_id)
        timestamp = int(self.clock())
        headers = {
            "content-type": "application/json",
            "user-agent": "omlmedia-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(hook.secret, msg_id, timestamp, delivery.body),
        }
        options: dict[str, Any] = {} if hook.verify_tls else {"ssl": False}
        try:
            async with self._session.post(
                hook.url,
                data=delivery.body.encode(),
                headers=headers,
                allow_redirects=False,
                **options,
            ) as response:
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__

    def state(self) -> dict[str, Any]:
        """Outcomes and depth (call right after the writes behind them were taken)."""
        receivers = self._receivers.values()
        memory = sum(r.queued for r in receivers)
        return {
            "outcomes": dict(self.outcomes + self._staged_outcomes),
            "depth": memory + sum(r.stored for r in receivers if r.spilled),
            "memory": memory,
            "spilled": sum(r.spilled for r in receivers),
        }

    async def _writer(self) -> None:
        """Report the staged outcomes every `WRITE_INTERVAL`; without any subscription (nothing
        to deliver, nothing to report) it waits for one rather than waking 20 times a second
        (most of an idle server's CPU, with its process: 3 ms/s)."""
        while not self._closing:
            await asyncio.sleep(WRITE_INTERVAL)
            self.write()
            if not self._receivers and not self._staged:
                self._active.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL):
                        await self._active.wait()

    def write(self) -> None:
        """Report the state and the outcomes staged since the last report: the server writes
        them to the outbox with its own batches (one writer: the server's commits never wait
        for this process, nor its event loop for them). Nothing before the outbox was read
        once: the depth is not known till then (what is staged waits for the next report)."""
        if not self._read_once:
            return
        writes, outcomes = self._staged, self._staged_outcomes
        state = self.state()
        if writes:
            self._staged, self._staged_outcomes = [], Counter()
            self.outcomes += outcomes
            while len(writes) > REPORT_WRITES:  # lines of a bounded size
                self.report({"writes": writes[:REPORT_WRITES]})
                writes = writes[REPORT_WRITES:]
            state["writes"] = writes
        if state != self._last_report:
            self._last_report = {k: v for k, v in state.items() if k != "writes"}
            self.report(state)

    async def close(self) -> None:
        """Stop delivering, report what was staged and close (what is left stays pending)."""
        self._closing = True
        tasks = [*self._tasks, *(t for r in self._receivers.values() for t in r.tasks.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._read_once = True  # what was staged goes to the server, whatever the depth
        self.write()
        if self._db is not None:
            await self._call(self._db.close)
        if self._session is not None:
            await self._session.close()
        self._executor.shutdown(wait=True)


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(config: dict[str, Any], parent: int = 0) -> None:
    """Run a worker with `config` (the server's first line) until standard input ends or the
    server (`parent`) is gone."""
    worker = Worker(
        config["database"],
        node=config.get("node", ""),
        delays=config.get("delays", DELAYS),
        timeout=config.get("timeout", 10.0),
        per_receiver=config.get("per_receiver", 4),
        overall=config.get("overall", 64),
        memory_limit=config.get("memory_limit", 10_000),
        cafile=config.get("cafile"),
        report=_emit,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await worker.start()
    _emit({"ready": os.getpid()})
    watch = loop.create_task(_orphaned(parent or os.getppid()))
    try:
        while line := await _next_line(reader, watch):
            try:
                command = json.loads(line)
            except ValueError:
                logger.warning("ignored a command that is not JSON: %r", line[:100])
                continue
            if "wake" in command:
                worker.wake()
            elif "hooks" in command:
                await worker.reload_hooks()
            elif "replay" in command:
                await worker.replay(str(command["replay"]), [int(i) for i in command["ids"]])
    finally:
        watch.cancel()
        await worker.close()


async def _next_line(reader: asyncio.StreamReader, watch: asyncio.Task[None]) -> bytes:
    """The next command line; b"" at the end of the input or once the server is gone."""
    line = asyncio.ensure_future(reader.readline())
    await asyncio.wait({line, watch}, return_when=asyncio.FIRST_COMPLETED)
    if line.done():
        return line.result()
    line.cancel()
    return b""


def _die_with(parent: int) -> None:
    """End this process when `parent` (the server) ends, however it ends: Linux sends SIGTERM
    at once (``PR_SET_PDEATHSIG``); `_orphaned` is the check everywhere else. The end of the
    input is not enough: a server killed with its children's copies of the pipe open would
    leave the worker running."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)  # it died before the line above


async def _orphaned(parent: int) -> None:
    """Return once the server that started this process is gone."""
    while True:
        await asyncio.sleep(PARENT_CHECK)
        if os.getppid() != parent:
            return


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s webhook-worker %(levelname)s %(message)s"
    )
    parent = int(os.environ.get(PARENT_ENV, "0")) or os.getppid()
    _die_with(parent)
    first = bytearray()
    while not first.endswith(b"\n"):  # byte by byte: what follows is the loop's to read
        byte = os.read(0, 1)
        if not byte:
            break
        first += byte
    if not first.strip():
        return 0  # the server went away before configuring the worker
    config = json.loads(first)
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    run(serve(config, parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
