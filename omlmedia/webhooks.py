"""Signed webhooks: subscriptions, a persistent outbox and its delivery worker.

Theory of operation. A subscription (`Webhook`: a URL, event types by prefix, a scope of
queues and campaigns like a token's, a secret, ``enabled``) is kept in the store's ``webhooks``
table; every change is written with its audit entry in one transaction, on the service's own
thread. `WebhookService.outbox` is the event log's outbox hook (`EventLog.outbox`): for every
event it returns one ``webhook_outbox`` row per enabled subscription that matches, and the
store commits those rows in the same transaction as the event (the batched writer), so an
event that was accepted always has its deliveries.

Delivery follows Standard Webhooks: ``webhook-id`` is the event id (the same on every
attempt), ``webhook-timestamp`` the Unix time of the attempt, ``webhook-signature``
``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``, the body the event's JSON. A
delivery is sent only once its event is committed (an id of a run that crashed before
committing is given again, so it must never reach a receiver). Each receiver has its own
lanes, one per call: the deliveries of one call to one receiver go one after another, each
retried with exponential backoff and full jitter (`DELAYS`) until it is answered 2xx or runs out
of attempts and is marked ``dead`` (kept for `replay`). A receiver's lanes share its own
concurrency limit and every receiver shares an overall one; each attempt has a timeout. So a
receiver that hangs or fails only holds its own lanes: calls and other receivers never wait.

Delivered rows are deleted; status changes go through the batched writer, so a crash may send
a delivery again (at-least-once: a receiver deduplicates by ``webhook-id``). At start every
``pending`` row is queued again, in event order.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
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


class _Receiver:
    """One subscription's lanes (one per call), its concurrency limit, and what it left in the
    store only (`spilled`: its deliveries beyond the memory limit, read back in event order
    once the lanes drained)."""

    def __init__(self, hook_id: str, limit: int) -> None:
        self.hook_id = hook_id
        self.limit = asyncio.Semaphore(limit)
        self.lanes: dict[str, deque[Delivery]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.queued = 0
        """Deliveries in the lanes."""
        self.high = 0
        """The highest event id queued in the lanes."""
        self.spilled = False
        """Whether deliveries of events above `high` are in the store only."""
        self.last_spilled = 0
        """The last event id left in the store only."""
        self.reloading: asyncio.Task[None] | None = None


class WebhookService:
    """The subscriptions, the outbox hook of the event log and the delivery worker."""

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
        ssl_context: ssl.SSLContext | None = None,
        memory_limit: int = 10_000,
    ) -> None:
        self.store = store
        self.scopes = scopes
        self.clock = clock
        self.delays = tuple(delays)
        self.attempts = len(self.delays) + 1
        self.timeout = timeout
        self.per_receiver = per_receiver
        self.allow_http_loopback = allow_http_loopback
        """Whether ``http://`` URLs on a loopback address are accepted (tests only)."""
        self.ssl_context = ssl_context
        self.memory_limit = memory_limit
        """Deliveries of one receiver kept in memory; beyond it, new ones stay in the store
        only until the receiver caught up (a receiver that hangs costs disk, not memory)."""
        """The CAs receivers' certificates are verified against (None: the system's)."""
        self.outcomes: Counter[str] = Counter()
        """Attempts by outcome since start: ``delivered``, ``failed`` (to be retried), ``dead``."""
        self._overall = asyncio.Semaphore(overall)
        self._receivers: dict[str, _Receiver] = {}
        self._session: aiohttp.ClientSession | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-webhooks")
        self._db = store.store.connect()
        self.hooks: dict[str, Webhook] = self._read_hooks()
        self._matchers: dict[str, Callable[[Event], bool]] = {}
        self._flushing: asyncio.Task[int] | None = None

    # -- matching (on the loop, from `EventLog.publish`) --------------------------------------

    def _matcher(self, hook: Webhook) -> Callable[[Event], bool]:
        match = self._matchers.get(hook.id)
        if match is None:
            scope = None
            if hook.scope is not None:
                scope = in_scope(
                    Identity(f"webhook:{hook.id}", Role.ADMIN, hook.scope), self.scopes()
                )
            match = self._matchers[hook.id] = EventFilter(hook.types, scope=scope)
        return match

    def outbox(self, ev: Event) -> list[Write]:
        """The outbox rows of `ev` (one per enabled subscription it matches), queued for
        delivery once the store committed them with the event."""
        writes: list[Write] = []
        body = ""
        now = self.clock()
        for hook in self.hooks.values():
            try:
                if not hook.enabled or not self._matcher(hook)(ev):
                    continue
                body = body or ev.to_json()
                delivery = Delivery(hook.id, ev.id, ev.call_id, body, updated=now)
                writes.append(
                    (
                        f"INSERT INTO webhook_outbox ({_OUTBOX}) "
                        "VALUES (?, ?, ?, ?, 0, 'pending', '', ?) "
                        "ON CONFLICT (webhook, event_id) DO UPDATE SET call_id = excluded.call_id, "
                        "body = excluded.body, attempts = 0, status = 'pending', "
                        "last_error = '', updated = excluded.updated",
                        (hook.id, ev.id, ev.call_id, body, now),
                    )
                )
                self._queue(delivery)
            except Exception:
                # The publisher (a call, the ACD) must never fail because of a webhook.
                self.outcomes["unmatched"] += 1
                logger.exception("webhook %s: matching event %d failed", hook.id, ev.id)
        return writes

    # -- delivering ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the HTTP client and queue every pending delivery a previous run left."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ssl=self.ssl_context or True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=False,
            )
        # Everything pending is read back from the store, in event order, a page at a time
        # (what was queued before the start is pending there too, or in the store's batch).
        rows = self._db.execute(
            "SELECT webhook, MAX(event_id) FROM webhook_outbox WHERE status = 'pending' "
            "GROUP BY webhook"
        ).fetchall()
        last = dict(rows)
        for hook_id in self.hooks:
            receiver = self._receiver(hook_id)
            last_id = max(last.get(hook_id, 0), receiver.high)
            receiver.lanes.clear()
            receiver.queued = receiver.high = 0
            if last_id:
                self._spill(receiver, last_id)
                self._reload(receiver)

    def _receiver(self, hook_id: str) -> _Receiver:
        receiver = self._receivers.get(hook_id)
        if receiver is None:
            receiver = self._receivers[hook_id] = _Receiver(hook_id, self.per_receiver)
        return receiver

    @staticmethod
    def _spill(receiver: _Receiver, event_id: int) -> None:
        receiver.spilled = True
        receiver.last_spilled = max(receiver.last_spilled, event_id)

    def _reload(self, receiver: _Receiver) -> None:
        if receiver.reloading is None and self._session is not None:
            task = asyncio.get_running_loop().create_task(self._read_back(receiver))
            receiver.reloading = task

    def _pending(self, hook_id: str, after: int, limit: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._db.execute(
            f"SELECT {_OUTBOX} FROM webhook_outbox WHERE webhook = ? AND status = 'pending' "
            "AND event_id > ? ORDER BY event_id LIMIT ?",
            (hook_id, after, limit),
        ).fetchall()
        return rows

    async def _read_back(self, receiver: _Receiver) -> None:
        """Queue the next page of what `receiver` left in the store (its lanes are empty)."""
        hook_id = receiver.hook_id
        try:
            await self._committed(receiver.last_spilled)
            rows = await self._call(self._pending, hook_id, receiver.high, self.memory_limit)
            if self._receivers.get(hook_id) is not receiver:
                return  # deleted meanwhile
            for row in rows:
                self._queue(Delivery(*row), fresh=False)
            if not rows or receiver.high >= receiver.last_spilled:
                receiver.spilled = False
        except Exception:
            logger.exception("webhook %s: reading its outbox back failed", hook_id)
        finally:
            receiver.reloading = None

    @property
    def depth(self) -> int:
        """Deliveries waiting in memory to be sent or retried (more wait in the store when a
        receiver spilled: `spilled`)."""
        return sum(r.queued for r in self._receivers.values())

    @property
    def spilled(self) -> int:
        """Receivers whose newest deliveries wait in the store only."""
        return sum(r.spilled for r in self._receivers.values())

    def _queue(self, delivery: Delivery, *, fresh: bool = True) -> None:
        """Queue `delivery` in its lane; a `fresh` one (of an event just published) stays in
        the store only while its receiver is over the memory limit or has spilled already."""
        receiver = self._receiver(delivery.webhook)
        if fresh and (receiver.spilled or receiver.queued >= self.memory_limit):
            self._spill(receiver, delivery.event_id)
            return
        receiver.high = max(receiver.high, delivery.event_id)
        receiver.queued += 1
        key = delivery.call_id or f"#{delivery.event_id}"
        lane = receiver.lanes.setdefault(key, deque())
        lane.append(delivery)
        if key not in receiver.tasks and self._session is not None:
            receiver.tasks[key] = asyncio.get_running_loop().create_task(self._lane(receiver, key))

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
            if not receiver.lanes and receiver.spilled:
                self._reload(receiver)

    async def _committed(self, event_id: int) -> None:
        """Return once the event (and so its outbox row) is committed: flush the store now
        rather than wait for its next periodic flush, one flush shared by every lane."""
        while self.store.store.committed_event_id < event_id:
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self.store.flush())
            try:
                await asyncio.shield(self._flushing)
            except StoreError:
                await asyncio.sleep(self.store.flush_interval)  # the store logs and retries

    async def _deliver(self, receiver: _Receiver, delivery: Delivery) -> None:
        await self._committed(delivery.event_id)
        while True:
            hook = self.hooks.get(delivery.webhook)
            if hook is None:
                return  # the subscription was deleted
            async with self._overall, receiver.limit:
                error = await self._post(hook, delivery)
            delivery.attempts += 1
            delivery.updated = self.clock()
            if not error:
                self.outcomes["delivered"] += 1
                self.store.append_write(
                    "DELETE FROM webhook_outbox WHERE webhook = ? AND event_id = ?",
                    (delivery.webhook, delivery.event_id),
                )
                return
            delivery.last_error = error
            dead = delivery.attempts >= self.attempts
            delivery.status = "dead" if dead else "pending"
            self.outcomes["dead" if dead else "failed"] += 1
            self.store.append_write(
                "UPDATE webhook_outbox SET status = ?, attempts = ?, last_error = ?, updated = ? "
                "WHERE webhook = ? AND event_id = ?",
                (
                    delivery.status,
                    delivery.attempts,
                    error,
                    delivery.updated,
                    delivery.webhook,
                    delivery.event_id,
                ),
            )
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

    async def close(self) -> None:
        """Stop delivering (what is left stays pending in the store) and close the database."""
        tasks = [t for r in self._receivers.values() for t in r.tasks.values()]
        tasks += [r.reloading for r in self._receivers.values() if r.reloading is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
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
        receiver = self._receivers.pop(hook_id, None)
        if receiver is not None:
            for task in receiver.tasks.values():
                task.cancel()
            if receiver.reloading is not None:
                receiver.reloading.cancel()
        self.store.append_write("DELETE FROM webhook_outbox WHERE webhook = ?", (hook_id,))
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
        after = {"replayed": [d.event_id for d in rows]}
        await self._call(self._write, self._entry(actor, "webhook.replay", hook_id, None, after))
        for delivery in rows:
            delivery.status, delivery.attempts = "pending", 0
            self.store.append_write(
                "UPDATE webhook_outbox SET status = 'pending', attempts = 0 "
                "WHERE webhook = ? AND event_id = ?",
                (hook_id, delivery.event_id),
            )
            self._queue(delivery, fresh=False)
        return len(rows)


class WebhookCollector(Collector):
    """``/metrics``: the outbox depth and delivery attempts by outcome."""

    def __init__(self, service: WebhookService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "omlmedia_webhook_outbox_depth",
            "Webhook deliveries waiting in memory to be sent or retried",
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


def loopback(host: str | None) -> bool:
    """Whether `host` is a loopback address (where tests may receive plain HTTP)."""
    return host in LOOPBACK
