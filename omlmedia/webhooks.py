"""Signed webhooks: subscriptions, a persistent outbox and its delivery worker.

Theory of operation. A subscription (`Webhook`: a URL, event types by prefix, a scope of
queues and campaigns like a token's, a secret, ``enabled``) is kept in the store's ``webhooks``
table; every change is written with its audit entry in one transaction, on the service's own
thread. `WebhookService.outbox` is the event log's outbox hook (`EventLog.outbox`): for every
event it returns one ``webhook_outbox`` row per enabled subscription that matches, and the
store commits those rows in the same transaction as the event (the batched writer), so an
event that was accepted always has its deliveries.

The server never sends a delivery itself: its event loop carries SIP and media. The rows are
committed within `WebhookService.flush_delay` (10 ms: one transaction for every event of that
time, off the loop on the store's thread), then the delivery worker, a process of its own
(`omlmedia.webhook_worker`, started, watched and restarted by `WorkerProcess`), is woken by a
line on its standard input, reads the committed rows with its own connection and sends them with
its own HTTP client. A row is only ever read once committed, so an id of a run that crashed
before committing (given again) never reaches a receiver.

Delivery follows Standard Webhooks: ``webhook-id`` is the event id (the same on every
attempt), ``webhook-timestamp`` the Unix time of the attempt, ``webhook-signature``
``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``, the body the event's JSON. The
worker keeps lanes per receiver, one per call: the deliveries of one call to one receiver go
one after another, each retried with exponential backoff and full jitter (`DELAYS`) until it is
answered 2xx or runs out of attempts and is marked ``dead`` (kept for `replay`). A receiver's
lanes share its own concurrency limit and every receiver shares an overall one; each attempt has
a timeout. So a receiver that hangs or fails only holds its own lanes, and neither it nor the
HTTP work reaches calls.

The worker reports each outcome (delivered: the row is deleted; a retry; dead) on its standard
output and the server writes them with its own batches (one writer: its commits and its loop
never wait for the worker's), so a worker (or server) that dies may send a delivery again
(at-least-once: a receiver deduplicates by ``webhook-id``). A worker that dies is started again
and reads every ``pending`` row again, in event order; so does the worker of the next run. Its
outcomes and depth reach the status API and ``/metrics`` with its reports.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from omlmedia import audit
from omlmedia.audit import AuditEntry
from omlmedia.authz import Identity, Role, Scopes
from omlmedia.events import Event, EventFilter
from omlmedia.eventstream import in_scope
from omlmedia.notify import WEBHOOKS, notify_statement
from omlmedia.storage import AsyncStore, StoreError

__all__ = [
    "DELAYS",
    "SECRET_PREFIX",
    "Delivery",
    "UnknownDeliveryError",
    "UnknownWebhookError",
    "Webhook",
    "WebhookCollector",
    "WebhookService",
    "WorkerProcess",
    "new_secret",
    "sign",
]

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
DELAYS: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3600.0)
"""The backoff before each retry (each drawn uniformly from 0 to it: full jitter); a delivery
gets ``len(DELAYS) + 1`` attempts (about 2.5 hours) before it is dead."""
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
Write = tuple[str, tuple[Any, ...]]


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of one message (Standard Webhooks, ``v1``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{msg_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


class UnknownWebhookError(KeyError):
    """No subscription has that id."""


class UnknownDeliveryError(KeyError):
    """No dead delivery has that id."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One subscription: where to post (`url`), which events (`types`: prefixes, none: all;
    `scope`: queue and campaign names, None: all), signed with `secret`."""

    id: str
    url: str
    secret: str
    types: tuple[str, ...] = ()
    scope: frozenset[str] | None = None
    enabled: bool = True
    verify_tls: bool = True
    """Whether the receiver's certificate is verified (only an explicit false turns it off)."""
    description: str = ""
    created: float = 0.0
    updated: float = 0.0

    def view(self) -> dict[str, Any]:
        """The subscription as the API serves it (never its secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "types": list(self.types),
            "scope": sorted(self.scope) if self.scope is not None else None,
            "enabled": self.enabled,
            "verify_tls": self.verify_tls,
            "description": self.description,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(slots=True)
class Delivery:
    """One (subscription, event) delivery: its row of ``webhook_outbox``."""

    webhook: str
    event_id: int
    call_id: str
    body: str
    attempts: int = 0
    status: str = "pending"
    last_error: str = ""
    updated: float = 0.0

    def view(self) -> dict[str, Any]:
        """The delivery as the API serves it (`id` is its event's id)."""
        try:
            event: Any = json.loads(self.body)
        except ValueError:
            event = None
        return {
            "id": self.event_id,
            "webhook": self.webhook,
            "call_id": self.call_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "updated": self.updated,
            "event": event,
        }


_COLUMNS = "id, url, secret, types, scope, enabled, verify_tls, description, created, updated"
_OUTBOX = "webhook, event_id, call_id, body, attempts, status, last_error, updated"
_INSERT = (
    f"INSERT INTO webhook_outbox ({_OUTBOX}) VALUES (?, ?, ?, ?, 0, 'pending', '', ?) "
    "ON CONFLICT (webhook, event_id) DO UPDATE SET call_id = excluded.call_id, "
    "body = excluded.body, attempts = 0, status = 'pending', last_error = '', "
    "updated = excluded.updated"
)


def _row(hook: Webhook) -> tuple[Any, ...]:
    return (
        hook.id,
        hook.url,
        hook.secret,
        json.dumps(list(hook.types)),
        json.dumps(sorted(hook.scope)) if hook.scope is not None else None,
        int(hook.enabled),
        int(hook.verify_tls),
        hook.description,
        hook.created,
        hook.updated,
    )


def _hook(row: Sequence[Any]) -> Webhook:
    id_, url, secret, types, scope, enabled, verify_tls, description, created, updated = row
    return Webhook(
        id_,
        url,
        secret,
        tuple(json.loads(types)),
        frozenset(json.loads(scope)) if scope is not None else None,
        bool(enabled),
        bool(verify_tls),
        description,
        created,
        updated,
    )


DELETE = "DELETE FROM webhook_outbox WHERE webhook = ? AND event_id = ?"
UPDATE = (
    "UPDATE webhook_outbox SET status = ?, attempts = ?, last_error = ?, updated = ? "
    "WHERE webhook = ? AND event_id = ?"
)


class WorkerProcess:
    """The delivery worker's process (`omlmedia.webhook_worker`): started, fed its commands,
    watched, and started again when it dies (after a backoff that grows while it keeps dying)."""

    RESTART_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)

    def __init__(self, config: dict[str, Any], on_report: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self.on_report = on_report
        self.process: asyncio.subprocess.Process | None = None
        self.state = "stopped"
        """``starting``, ``running``, ``restarting`` (it died: starts again soon), ``stopped``."""
        self.restarts = 0
        self.last_exit: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.state == "running" else None

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def ready(self, within: float = 30.0) -> None:
        """Return once a worker process said it is ready."""
        await asyncio.wait_for(self._ready.wait(), within)

    async def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            self.state = "starting"
            started = time.monotonic()
            try:
                await self._run_once()
            except (OSError, ValueError) as exc:
                logger.warning("the webhook worker could not run: %s", exc)
            if self._closing:
                break
            self.restarts += 1
            failures = 0 if time.monotonic() - started > 30 else failures + 1
            delay = self.RESTART_DELAYS[min(failures, len(self.RESTART_DELAYS)) - 1]
            self.state = "restarting"
            logger.warning(
                "the webhook worker exited (code %s); starting it again in %.1f s",
                self.last_exit,
                delay,
            )
            await asyncio.sleep(delay)
        self.state = "stopped"

    async def _run_once(self) -> None:
        self._ready.clear()
        process = self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "omlmedia.webhook_worker",
            env={**os.environ, "OMLMEDIA_WEBHOOK_WORKER_PARENT": str(os.getpid())},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(self.config).encode() + b"\n")
            while line := await process.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "ready" in message:
                    self.state = "running"
                    self._ready.set()
                else:
                    self.on_report(message)
        finally:
            if process.returncode is None and not self._closing:
                process.kill()
            self.last_exit = await process.wait()
            self._ready.clear()

    def send(self, command: dict[str, Any]) -> None:
        """Send the worker a command (lost when it is not running: it reads everything
        pending when it starts)."""
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            return
        if process.stdin.is_closing():
            return
        process.stdin.write(json.dumps(command, separators=(",", ":")).encode() + b"\n")

    async def close(self, within: float = 10.0) -> None:
        """Stop the worker: the end of its input makes it commit what it staged and exit."""
        self._closing = True
        process = self.process
        if process is not None and process.returncode is None and process.stdin is not None:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), within)
            except TimeoutError:
                logger.warning("the webhook worker did not stop in %.0f s: killed", within)
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.state = "stopped"


class WebhookService:
    """The subscriptions, the outbox hook of the event log, and the delivery worker's process."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        scopes: Callable[[], Scopes] = Scopes,
        clock: Callable[[], float] = time.time,
        delays: Sequence[float] = DELAYS,
        timeout: float = 10.0,
        per_receiver: int = 4,
        overall: int = 64,
        allow_http_loopback: bool = False,
        cafile: Path | None = None,
        memory_limit: int = 10_000,
        flush_delay: float = 0.01,
    ) -> None:
        self.store = store
        self.scopes = scopes
        self.clock = clock
        self.delays = tuple(delays)
        self.attempts = len(self.delays) + 1
        self.allow_http_loopback = allow_http_loopback
        """Whether ``http://`` URLs on a loopback address are accepted (tests only)."""
        self.flush_delay = flush_delay
        """Seconds from an event with deliveries to the commit that hands them to the worker:
        every event of that time goes in one transaction."""
        self.outcomes: Counter[str] = Counter()
        """Attempts by outcome since start (``delivered``, ``failed`` to be retried, ``dead``:
        the worker's, across its restarts) and events that could not be matched
        (``unmatched``)."""
        self.depth = 0
        """Deliveries pending (in the worker's memory, or in the store beyond its memory limit)."""
        self.memory = 0
        """Of them, those in the worker's memory."""
        self.spilled = 0
        """Receivers whose newest deliveries wait in the store only (the memory limit)."""
        self._base: Counter[str] = Counter()
        """The outcomes of the worker's previous processes."""
        self._last: Counter[str] = Counter()
        """The outcomes the current process reported last."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-webhooks")
        self._db = store.store.connect()
        self.hooks: dict[str, Webhook] = self._read_hooks()
        self._matchers: dict[str, Callable[[Event], bool]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        location = store.store.path
        self.worker = WorkerProcess(
            {
                "database": str(location),
                "node": store.store.node,
                "delays": list(self.delays),
                "timeout": timeout,
                "per_receiver": per_receiver,
                "overall": overall,
                "memory_limit": memory_limit,
                "cafile": str(cafile) if cafile is not None else None,
            },
            self._report,
        )

    # -- matching (on the loop, from `EventLog.publish`) --------------------------------------

    def _matcher(self, hook: Webhook) -> Callable[[Event], bool]:
        match = self._matchers.get(hook.id)
        if match is None:
            scope = None
            if hook.scope is not None:
                # The members and campaigns read again every second (as the stream's): an agent
                # added to a queue in scope is delivered from then on, one taken out no longer.
                scope = in_scope(
                    Identity(f"webhook:{hook.id}", Role.ADMIN, hook.scope), self.scopes
                )
            match = self._matchers[hook.id] = EventFilter(hook.types, scope=scope)
        return match

    def outbox(self, ev: Event) -> list[Write]:
        """The outbox rows of `ev` (one per enabled subscription it matches), committed with
        the event; a commit follows within `flush_delay` and wakes the worker."""
        writes: list[Write] = []
        body = ""
        now = self.clock()
        for hook in self.hooks.values():
            try:
                if not hook.enabled or not self._matcher(hook)(ev):
                    continue
                body = body or ev.to_json()
                writes.append((_INSERT, (hook.id, ev.id, ev.call_id, body, now)))
            except Exception:
                # The publisher (a call, the ACD) must never fail because of a webhook.
                self.outcomes["unmatched"] += 1
                logger.exception("webhook %s: matching event %d failed", hook.id, ev.id)
        if writes and self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return writes  # no loop: the store's periodic flush and the worker's poll
            self._flush = loop.call_later(self.flush_delay, self._flush_now)
        return writes

    def _flush_now(self) -> None:
        self._flush = None
        task = asyncio.get_running_loop().create_task(self._commit_and_wake())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _commit_and_wake(self) -> None:
        try:
            await self.store.flush()
        except StoreError:
            return  # the store logs and retries; the worker polls
        self.worker.send({"wake": self.store.store.committed_event_id})

    # -- the worker ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery worker's process (it reads every pending delivery a previous run
        left)."""
        self.worker.start()

    def _report(self, state: dict[str, Any]) -> None:
        # The worker's outcomes go to the outbox through the store's batches: one writer, so
        # neither the store's commits nor the loop ever wait for the worker's.
        for op in state.get("writes", ()):
            try:
                if op[0] == "delivered":
                    self.store.append_write(DELETE, (str(op[1]), int(op[2])))
                elif op[0] == "status":
                    self.store.append_write(UPDATE, tuple(op[1:7]))
            except (IndexError, TypeError, ValueError):
                logger.warning("ignored a malformed outcome from the webhook worker: %.100r", op)
        if "outcomes" not in state:
            return  # a report's first lines carry its outcomes only
        outcomes: Counter[str] = Counter(state["outcomes"])
        if any(outcomes[k] < self._last[k] for k in self._last):
            self._base += self._last  # a new process counts from zero
        self._last = outcomes
        for key in ("delivered", "failed", "dead"):
            if self._base[key] + outcomes[key]:
                self.outcomes[key] = self._base[key] + outcomes[key]
        self.depth = int(state.get("depth", 0))
        self.memory = int(state.get("memory", 0))
        self.spilled = int(state.get("spilled", 0))

    def status(self) -> dict[str, Any]:
        """What the status API says of the webhooks: the worker's state and the outbox."""
        return {
            "subscriptions": len(self.hooks),
            "worker": self.worker.state,
            "worker_pid": self.worker.pid,
            "worker_restarts": self.worker.restarts,
            "outbox_depth": self.depth,
            "in_memory": self.memory,
            "spilled": self.spilled,
            "outcomes": {k: self.outcomes[k] for k in ("delivered", "failed", "dead", "unmatched")},
        }

    async def close(self) -> None:
        """Stop the worker (what is left stays pending in the store) and close the database."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.worker.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=True)

    # -- subscriptions (on the service's thread) ----------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _write(self, entry: AuditEntry, *statements: Write) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
            audit.append(db, entry)
            notify = notify_statement(db, WEBHOOKS)  # the other nodes reload (omlmedia.notify)
            if notify is not None:
                db.execute(*notify)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _entry(
        self,
        actor: Identity,
        action: str,
        hook_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> AuditEntry:
        return AuditEntry(
            self.clock(), actor.actor, actor.role.value, action, f"webhook:{hook_id}", before, after
        )

    def _read_hooks(self) -> dict[str, Webhook]:
        return {
            row[0]: _hook(row)
            for row in self._db.execute(f"SELECT {_COLUMNS} FROM webhooks ORDER BY created")
        }

    async def reload(self) -> None:
        """Read the subscriptions again: another node sharing the database changed them
        (`omlmedia.notify`); events published from now on match the new ones."""
        loop = asyncio.get_running_loop()
        hooks = await loop.run_in_executor(self._executor, self._read_hooks)
        self.hooks = hooks
        self._matchers.clear()
        self.worker.send({"hooks": 1})

    def get(self, hook_id: str) -> Webhook:
        """One subscription."""
        hook = self.hooks.get(hook_id)
        if hook is None:
            raise UnknownWebhookError(hook_id)
        return hook

    async def create(self, actor: Identity, **fields: Any) -> Webhook:
        """A new subscription with a new secret (audited)."""
        now = self.clock()
        hook = Webhook(
            secrets.token_hex(6), secret=new_secret(), created=now, updated=now, **fields
        )
        put = (
            f"INSERT INTO webhooks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _row(hook),
        )
        entry = self._entry(actor, "webhook.create", hook.id, None, hook.view())
        await self._call(self._write, entry, put)
        self.hooks[hook.id] = hook
        self.worker.send({"hooks": 1})
        return hook

    async def update(self, actor: Identity, hook_id: str, **changes: Any) -> Webhook:
        """Change a subscription (audited, before and after)."""
        old = self.get(hook_id)
        new = replace(old, updated=self.clock(), **changes)
        put = (
            f"INSERT INTO webhooks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[1:]),
            _row(new),
        )
        entry = self._entry(actor, "webhook.update", hook_id, old.view(), new.view())
        await self._call(self._write, entry, put)
        self.hooks[hook_id] = new
        self._matchers.pop(hook_id, None)
        self.worker.send({"hooks": 1})
        return new

    async def delete(self, actor: Identity, hook_id: str) -> Webhook:
        """Remove a subscription and its outbox (audited)."""
        old = self.get(hook_id)
        entry = self._entry(actor, "webhook.delete", hook_id, old.view(), None)
        await self._call(
            self._write,
            entry,
            ("DELETE FROM webhooks WHERE id = ?", (hook_id,)),
            ("DELETE FROM webhook_outbox WHERE webhook = ?", (hook_id,)),
        )
        del self.hooks[hook_id]
        self._matchers.pop(hook_id, None)
        # Its rows in the store's batch (not committed yet) go too.
        self.store.append_write("DELETE FROM webhook_outbox WHERE webhook = ?", (hook_id,))
        self.worker.send({"hooks": 1})
        return old

    def _rows(self, hook_id: str, status: str | None, event_id: int | None) -> list[Delivery]:
        sql = f"SELECT {_OUTBOX} FROM webhook_outbox WHERE webhook = ?"
        args: list[Any] = [hook_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if event_id is not None:
            sql += " AND event_id = ?"
            args.append(event_id)
        return [Delivery(*row) for row in self._db.execute(sql + " ORDER BY event_id", args)]

    async def deliveries(self, hook_id: str, status: str | None = None) -> list[Delivery]:
        """The subscription's stored deliveries (``pending`` or ``dead``), in event order."""
        self.get(hook_id)
        await self.store.flush()
        rows: list[Delivery] = await self._call(self._rows, hook_id, status, None)
        return rows

    async def replay(self, actor: Identity, hook_id: str, event_id: int | None = None) -> int:
        """Queue dead deliveries again (one, or every one of the subscription), audited;
        returns how many."""
        self.get(hook_id)
        await self.store.flush()
        rows: list[Delivery] = await self._call(self._rows, hook_id, "dead", event_id)
        if event_id is not None and not rows:
            raise UnknownDeliveryError(event_id)
        ids = [d.event_id for d in rows]
        pending = (
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0 "
            "WHERE webhook = ? AND event_id = ? AND status = 'dead'"
        )
        statements = [(pending, (hook_id, i)) for i in ids]
        entry = self._entry(actor, "webhook.replay", hook_id, None, {"replayed": ids})
        await self._call(self._write, entry, *statements)
        if ids:
            self.worker.send({"replay": hook_id, "ids": ids})
        return len(rows)


class WebhookCollector(Collector):
    """``/metrics``: the outbox depth, delivery attempts by outcome and the worker's restarts."""

    def __init__(self, service: WebhookService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "omlmedia_webhook_outbox_depth",
            "Webhook deliveries waiting to be sent or retried (read by the delivery worker)",
        )
        depth.add_metric([], self.service.depth)
        yield depth
        outcomes = CounterMetricFamily(
            "omlmedia_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed and retried, dead)",
            labels=["outcome"],
        )
        for outcome in ("delivered", "failed", "dead"):
            outcomes.add_metric([outcome], self.service.outcomes[outcome])
        yield outcomes
        restarts = CounterMetricFamily(
            "omlmedia_webhook_worker_restarts",
            "Times the webhook delivery worker process died and was started again",
        )
        restarts.add_metric([], self.service.worker.restarts)
        yield restarts


def loopback(host: str | None) -> bool:
    """Whether `host` is a loopback address (where tests may receive plain HTTP)."""
    return host in LOOPBACK
