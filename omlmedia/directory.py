"""The directory: agents, queues and campaigns, persisted, changed at run time and applied to the
running server at once.

Theory of operation. Agents are accounts of role ``agent`` (`omlmedia.accounts.AccountBook`:
name, display name, scrypt hash, ``disabled``); queues are rows of the ``queues`` table, each
holding its settings as the TOML table of ``[queues.<name>]`` would (`queue_settings`), members
and penalties included, so that one validator (`queueing.config.build_config`, the one
``check-config`` runs) checks the file and the API alike and `export_config` writes back a file
that ``check-config`` accepts. Campaigns are kept the same way (the ``campaigns`` table, their
``[[campaigns]]`` table as settings, validated by ``check-config``'s own code); they are changed,
never created or deleted (the file's routes reach them), and a change reaches the running
server's campaign tables (`campaign_tables`) at once.

The file and the database (`seed`): at every start, each agent of ``[[agents]]``, each queue
of ``[queues]`` and each campaign is compared with what the file declared the last time it was
seeded (a SHA-256 of the declaration, in ``config_seeds``). A declaration never seeded, or changed
in the file since, is written to the database (origin ``config``: created, or replaced with the
file's version); one the file declares as it did before is left as the database has it, with
every change made through the API since. An object the file stops declaring stays in the
database. So the file seeds, the database is the truth afterwards, and an edit of the file wins
over the API for the object edited. ``omlmedia export-config`` writes the database's agents,
queues and campaigns back out.

A change through the API (`Directory.create_agent`, ...) runs under one lock, in this order: it is
validated against the whole directory (every error names its field), applied to the engine
(`queueing.AcdEngine.add_agent`, ``update_queue``...; the runtime's `pump` then makes the offers
it allows), written with its audit entry (before and after) in one transaction on the book's
thread, and published as an ``admin.*`` event. The agent logins (`webrtc.accounts.AccountStore`)
follow at once: a created agent can log in, a disabled or deleted one cannot. A disabled agent
that is on a call is paused (no new offer) and logged out when its calls are over; one that is
not is logged out at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from omlmedia.accounts import AccountBook, AccountRow
from omlmedia.acd import AcdRuntime
from omlmedia.audit import AuditEntry
from omlmedia.authz import Identity, Role, Scopes
from omlmedia.config import _CAMPAIGN_KEYS, _ROUTE_KEYS, Campaign, Route, RouteAction
from omlmedia.events import NO_EVENTS, EventSink
from omlmedia.problems import ApiError, FieldError
from queueing.config import (
    AcdConfig,
    DestinationKind,
    QueueConfig,
    build_config,
)
from queueing.events import AgentState
from queueing.exceptions import AcdUsageError, QueueConfigError
from webrtc.accounts import Account, AccountStore, hash_password

logger = logging.getLogger(__name__)

__all__ = [
    "ADMIN_EVENTS",
    "Directory",
    "QueueRow",
    "dumps_toml",
    "export_config",
    "queue_settings",
]

AGENT_CREATED = "admin.agent.created"
AGENT_UPDATED = "admin.agent.updated"
AGENT_DELETED = "admin.agent.deleted"
QUEUE_CREATED = "admin.queue.created"
QUEUE_UPDATED = "admin.queue.updated"
QUEUE_DELETED = "admin.queue.deleted"
MEMBER_SET = "admin.member.set"
MEMBER_REMOVED = "admin.member.removed"
CAMPAIGN_CREATED = "admin.campaign.created"
CAMPAIGN_UPDATED = "admin.campaign.updated"
CAMPAIGN_DELETED = "admin.campaign.deleted"
ROUTE_CREATED = "admin.route.created"
ROUTE_UPDATED = "admin.route.updated"
ROUTE_DELETED = "admin.route.deleted"
DISPOSITION_SET_CREATED = "admin.disposition_set.created"
DISPOSITION_SET_UPDATED = "admin.disposition_set.updated"
DISPOSITION_SET_DELETED = "admin.disposition_set.deleted"
PAUSE_REASON_CREATED = "admin.pause_reason.created"
PAUSE_REASON_DELETED = "admin.pause_reason.deleted"
ADMIN_EVENTS = (
    AGENT_CREATED,
    AGENT_UPDATED,
    AGENT_DELETED,
    QUEUE_CREATED,
    QUEUE_UPDATED,
    QUEUE_DELETED,
    MEMBER_SET,
    MEMBER_REMOVED,
    CAMPAIGN_CREATED,
    CAMPAIGN_UPDATED,
    CAMPAIGN_DELETED,
    ROUTE_CREATED,
    ROUTE_UPDATED,
    ROUTE_DELETED,
    DISPOSITION_SET_CREATED,
    DISPOSITION_SET_UPDATED,
    DISPOSITION_SET_DELETED,
    PAUSE_REASON_CREATED,
    PAUSE_REASON_DELETED,
)
"""The event types of the directory's changes (data: ``by``, ``before``, ``after``)."""

CONFIG = Identity("config", Role.ADMIN)


def queue_settings(config: QueueConfig) -> dict[str, Any]:
    """A queue as its ``[queues.<name>]`` TOML table, every key written."""
    overflow: dict[str, str] = {config.overflow.kind.value: config.overflow.target}
    if config.overflow.kind is DestinationKind.NUMBER and config.overflow.trunk:
        overflow["trunk"] = config.overflow.trunk
    return {
        "strategy": config.strategy.value,
        "members": [{"agent": m.agent, "penalty": m.penalty} for m in config.members],
        "ring_timeout": config.ring_timeout,
        "retry": config.retry,
        "wrapup": config.wrapup,
        "autopause": config.autopause,
        "max_callers": config.max_callers,
        "max_wait": config.max_wait,
        "join_empty": config.join_empty,
        "leave_when_empty": config.leave_when_empty,
        "overflow": overflow,
        "music_on_hold": config.music_on_hold,
        "announce_frequency": config.announce_frequency,
        "service_level": config.service_level,
        "max_penalty": config.max_penalty,
        "escalation": [{"after": r.after, "max_penalty": r.max_penalty} for r in config.escalation],
    }


CAMPAIGN_KEYS = tuple(key for key in _CAMPAIGN_KEYS if key != "name")
"""What a campaign's settings are (its ``[[campaigns]]`` table but its name)."""


def campaign_settings(campaign: Campaign) -> dict[str, Any]:
    """A campaign as its ``[[campaigns]]`` table, every key but ``name`` written
    (``disposition_set`` only when it names one: the digests of the campaigns seeded before
    sets existed stay the same)."""
    named = {"disposition_set": campaign.disposition_set} if campaign.disposition_set else {}
    return {
        "queue": campaign.queue,
        "recording": campaign.recording,
        "url": campaign.url,
        "dispositions": list(campaign.dispositions),
        "callback": campaign.callback,
        "trunk": campaign.trunk,
        "recording_retention_days": campaign.recording_retention_days,
        "callback_min_digits": campaign.callback_min_digits,
        "callback_max_digits": campaign.callback_max_digits,
        "callback_international": campaign.callback_international,
        "callback_one_per_number": campaign.callback_one_per_number,
        "callback_expiry": campaign.callback_expiry,
        **named,
    }


def _campaign(
    name: str, settings: Mapping[str, Any], sets: Mapping[str, tuple[str, ...]]
) -> Campaign:
    """A stored campaign as it runs: the dispositions of its set (`sets`) when it names one."""
    # Rows stored before the callback rules were settings lack them: the defaults apply.
    d = Campaign(name, settings["queue"])
    named = settings.get("disposition_set", "")
    return Campaign(
        name=name,
        queue=settings["queue"],
        recording=settings["recording"],
        url=settings["url"],
        dispositions=sets.get(named) or tuple(settings["dispositions"]),
        disposition_set=named,
        callback=settings["callback"],
        trunk=settings["trunk"],
        recording_retention_days=settings["recording_retention_days"],
        callback_min_digits=settings.get("callback_min_digits", d.callback_min_digits),
        callback_max_digits=settings.get("callback_max_digits", d.callback_max_digits),
        callback_international=settings.get("callback_international", d.callback_international),
        callback_one_per_number=settings.get("callback_one_per_number", d.callback_one_per_number),
        callback_expiry=settings.get("callback_expiry", d.callback_expiry),
    )


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One stored queue: its `settings` (the TOML table), origin and times."""

    name: str
    settings: Mapping[str, Any]
    origin: str
    created: float
    updated: float

    def view(self) -> dict[str, Any]:
        """The queue's definition as the API serves it."""
        return {
            "name": self.name,
            **json.loads(json.dumps(dict(self.settings))),
            "origin": self.origin,
            "created": self.created,
            "updated": self.updated,
        }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    bare = key and all((c.isalnum() and c.isascii()) or c in "-_" for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """`data` (what `tomllib` reads: tables, arrays, strings, numbers, booleans) as TOML: the
    top level's arrays of tables as ``[[name]]``, tables as ``[name]``, the rest inline."""
    lines: list[str] = []
    _dump_table(lines, [], data)
    return "\n".join(lines).strip() + "\n"


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _dump_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    top = not path
    nested = [k for k, v in table.items() if isinstance(v, dict) or (top and _is_tables(v))]
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key in nested:
        value = table[key]
        name = ".".join(_toml_key(p) for p in [*path, key])
        if isinstance(value, dict):
            lines += ["", f"[{name}]"]
            _dump_table(lines, [*path, key], value)
        else:
            for item in value:
                lines += ["", f"[[{name}]]"]
                _dump_table(lines, [*path, key], item)


def export_config(
    raw: Mapping[str, Any],
    agents: Iterable[AccountRow],
    queues: Iterable[QueueRow],
    campaigns: Iterable[QueueRow] = (),
    routes: Iterable[QueueRow] = (),
    pause_reasons: Iterable[str] = (),
    disposition_sets: Iterable[QueueRow] = (),
) -> str:
    """The configuration file `raw` (as `tomllib` read it) with its ``[[agents]]`` and
    ``[queues]`` replaced by the database's, as TOML that ``check-config`` accepts. Disabled
    agents are left out (a file cannot say disabled), and so are their memberships."""
    agents = list(agents)
    enabled = [a for a in agents if not a.disabled]
    names = {a.name for a in enabled}
    data = {k: v for k, v in raw.items() if k not in ("agents", "queues")}
    if enabled:
        data["agents"] = [
            {"name": a.name, "display_name": a.display_name, "password_hash": a.password_hash}
            for a in enabled
        ]
    tables = {
        q.name: {
            **q.settings,
            "members": [m for m in q.settings["members"] if m["agent"] in names],
        }
        for q in queues
    }
    if tables:
        data["queues"] = tables
    sets = {row.name: dict(row.settings) for row in disposition_sets}
    if sets:
        data["disposition_sets"] = sets
    campaigns = list(campaigns)
    if campaigns:
        data["campaigns"] = [{"name": c.name, **c.settings} for c in campaigns]
    # The API's routes are matched before the file's: written first, they keep that order.
    added = [dict(r.settings) for r in routes]
    if added:
        data["routes"] = added + list(raw.get("routes", []))
    reasons = list(pause_reasons)
    if reasons:
        data["wallboard"] = {**raw.get("wallboard", {}), "pause_reasons": reasons}
    header = ["# Written by omlmedia export-config: agents and queues from the database."]
    disabled = sorted(a.name for a in agents if a.disabled)
    if disabled:
        header.append(f"# Disabled agents, left out: {', '.join(disabled)}.")
    return "\n".join(header) + "\n\n" + dumps_toml(data)


ROUTE_KEYS = _ROUTE_KEYS
"""What a route's settings are (its ``[[routes]]`` table)."""


def _checked(errors: Iterable[str], prefix: str) -> list[FieldError]:
    """``check-config``'s messages about one table (`prefix`, e.g. ``routes[0]``) as fields."""
    fields: list[FieldError] = []
    for error in errors:
        place, sep, why = error.partition(": ")
        place = place.removeprefix(prefix + ".").removeprefix(prefix)
        fields.append((place or "settings", why) if sep else ("settings", error))
    return fields


def _parse_route(
    settings: Mapping[str, Any], trunks: Iterable[str]
) -> tuple[Route | None, list[FieldError]]:
    """A ``[[routes]]`` table checked by ``check-config``'s own code."""
    from omlmedia.config import _Checker, _routes

    check = _Checker({})
    found = _routes(check, [dict(settings)], set(trunks))
    errors = _checked(check.errors, "routes[0]")
    if errors or not found:
        return None, errors or [("settings", "not a route")]
    return found[0], []


def _route_of(settings: Mapping[str, Any]) -> Route | None:
    """A stored route (its trunk, if any, checked when it was created)."""
    target = str(settings.get("target", ""))
    trunks = [target.partition(":")[2]] if target.startswith("trunk:") else []
    return _parse_route(settings, trunks)[0]


def _route_settings(route: Route) -> dict[str, Any]:
    """A route as its ``[[routes]]`` table (only the keys it uses)."""
    table: dict[str, Any] = {}
    if route.user is not None:
        table["user"] = route.user
    if route.pattern is not None:
        table["pattern"] = route.pattern.pattern
    table["target"] = route.target
    if route.strip:
        table["strip"] = route.strip
    if route.prefix:
        table["prefix"] = route.prefix
    return table


class AgentPages:
    """What the directory needs of the agents' pages (`omlmedia.agents.AgentDesk`)."""

    def __init__(
        self,
        busy: Callable[[str], bool],
        log_out: Callable[[str, str], Any],
    ) -> None:
        self.busy = busy
        """Whether the agent has a call (ringing, connected, held) on its page."""
        self.log_out = log_out
        """End the agent's session (awaitable); its page is told the reason."""


def _field_of(place: str, queue: str) -> str:
    prefix = f"queues.{queue}."
    if place.startswith(prefix):
        return place[len(prefix) :]
    return "settings" if place == f"queues.{queue}" else place


class Directory:
    """Agents and queues: kept in the book's database, applied to `acd` and `logins`."""

    def __init__(
        self,
        book: AccountBook,
        *,
        campaigns: Mapping[str, str] | None = None,
        used_by: Mapping[str, str] | None = None,
        trunks: Iterable[str] = (),
        events: EventSink = NO_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.campaigns = dict(campaigns or {})
        """Campaign name -> its queue, for the scopes, until campaigns are seeded."""
        self.used_by = dict(used_by or {})
        """Queue name -> what of the file sends callers to it (a route): such a queue cannot be
        deleted (nor one a campaign sends callers to)."""
        self.trunks = frozenset(trunks)
        """The trunks of the file, which a campaign's callbacks may go out through."""
        self.campaign_tables: list[dict[str, Campaign]] = []
        """The running server's campaigns by name (the ACD's, the call events'): kept up to
        date with every change."""
        self.events = events
        self.clock = clock
        self.acd: AcdRuntime | None = None
        self.logins: AccountStore | None = None
        self.pages: AgentPages | None = None
        self._lock = asyncio.Lock()
        self._leaving: dict[str, Identity] = {}
        """Disabled agents on a call, to log out after it, and who disabled them."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: dict[str, QueueRow] = {}
        for name, settings, origin, created, updated in book.db.execute(
            "SELECT name, settings, origin, created, updated FROM queues ORDER BY created, name"
        ):
            self._queues[name] = QueueRow(name, json.loads(settings), origin, created, updated)
        self._campaigns: dict[str, QueueRow] = {}
        for name, settings, origin, created, updated in book.db.execute(
            "SELECT name, settings, origin, created, updated FROM campaigns ORDER BY created, name"
        ):
            self._campaigns[name] = QueueRow(name, json.loads(settings), origin, created, updated)
        self.file_routes: tuple[Route, ...] = ()
        """The routes of the configuration file (a campaign they reach cannot be deleted)."""
        self.route_tables: list[Any] = []
        """The running server's route tables (`omlmedia.router.RouteTable`): given the API's
        routes (`Directory.routes_now`) after every change."""
        self.reason_listeners: list[Callable[[], None]] = []
        """Told after the pause reasons change (the agent pages get the new list)."""
        self.disposition_listeners: list[Callable[[str, tuple[str, ...]], None]] = []
        """Told ``(campaign, dispositions)`` after a campaign's dispositions change (its own
        list, or its set's): the agent pages' calls of that campaign get the new choices."""
        self._sets: dict[str, QueueRow] = {}
        for name, settings, origin, created, updated in book.db.execute(
            "SELECT name, settings, origin, created, updated FROM disposition_sets "
            "ORDER BY created, name"
        ):
            self._sets[name] = QueueRow(name, json.loads(settings), origin, created, updated)
        self._reasons: list[str] = [
            name
            for (name,) in book.db.execute("SELECT name FROM pause_reasons ORDER BY created, name")
        ]
        self._routes: dict[str, tuple[QueueRow, Route]] = {}
        for name, settings, origin, created, updated in book.db.execute(
            "SELECT name, settings, origin, created, updated FROM routes ORDER BY created, name"
        ):
            row = QueueRow(name, json.loads(settings), origin, created, updated)
            route = _route_of(row.settings)
            if route is None:
                logger.error("route %s of the database is not valid any more; ignored", name)
                continue
            self._routes[name] = (row, route)

    # -- reading ------------------------------------------------------------------------------

    def agents(self) -> list[AccountRow]:
        """Every agent (role ``agent`` accounts), by name."""
        return [a for a in self.book.accounts() if a.role is Role.AGENT]

    def _agent_row(self, name: str) -> AccountRow:
        for row in self.agents():
            if row.name == name:
                return row
        raise ApiError(404, f"unknown agent: {name}")

    def queues(self) -> list[QueueRow]:
        """Every queue, oldest first."""
        return list(self._queues.values())

    def _queue_row(self, name: str) -> QueueRow:
        row = self._queues.get(name)
        if row is None:
            raise ApiError(404, f"unknown queue: {name}")
        return row

    def memberships(self, agent: str) -> list[dict[str, Any]]:
        """The queues `agent` is a member of, with its penalty, in queue order."""
        return [
            {"queue": q.name, "penalty": m["penalty"]}
            for q in self._queues.values()
            for m in q.settings["members"]
            if m["agent"] == agent
        ]

    def agent_view(self, row: AccountRow) -> dict[str, Any]:
        """An agent's definition as the API serves it (no password hash)."""
        return {
            "name": row.name,
            "display_name": row.display_name,
            "disabled": row.disabled,
            "origin": row.origin,
            "queues": self.memberships(row.name),
            "created": row.created,
            "updated": row.updated,
        }

    def acd_config(self) -> AcdConfig:
        """The engine's configuration: every agent and queue of the database."""
        config, errors = self._build(self._queues)
        if errors:
            raise QueueConfigError([f"{place}: {why}" for place, why in errors])
        return config

    def agent_accounts(self) -> list[Account]:
        """The accounts that may log in on the agent page (agents not disabled)."""
        return [
            Account(a.name, a.display_name, a.password_hash)
            for a in self.agents()
            if not a.disabled
        ]

    def scopes(self) -> Scopes:
        """The campaigns' queues and the queues' members now, for the scope checks."""
        return Scopes(
            self._campaign_queues(),
            {
                name: frozenset(m["agent"] for m in row.settings["members"])
                for name, row in self._queues.items()
            },
        )

    def _campaign_queues(self) -> dict[str, str]:
        if not self._campaigns:
            return self.campaigns
        return {name: row.settings["queue"] for name, row in self._campaigns.items()}

    def campaigns_now(self) -> dict[str, Campaign]:
        """Every campaign as the database holds it (with its set's dispositions), by name."""
        sets = self._set_lists()
        return {name: _campaign(name, row.settings, sets) for name, row in self._campaigns.items()}

    def disposition_set_rows(self) -> list[QueueRow]:
        """Every named set of dispositions (settings ``{"dispositions": [...]}``), oldest
        first."""
        return list(self._sets.values())

    def disposition_sets(self) -> list[dict[str, Any]]:
        """Every disposition set as the API serves it (`disposition_set_view`), oldest first."""
        return [self._set_view(row) for row in self._sets.values()]

    def _set_lists(self) -> dict[str, tuple[str, ...]]:
        return {name: tuple(row.settings["dispositions"]) for name, row in self._sets.items()}

    def pause_reasons(self) -> list[str]:
        """The reasons an agent may pause with (the agent page's menu, the supervisors' and the
        API's pause), in the order they were declared."""
        return list(self._reasons)

    def seed_pause_reasons(self, reasons: Iterable[str]) -> bool:
        """The file's pause reasons (``[wallboard] pause_reasons``, or the default list): they
        replace the database's when they differ from what the file declared the last time, as
        the other objects do (see the module's docstring). Returns whether they did."""
        reasons = list(reasons)
        digest = _digest(reasons)
        seen = self.book.db.execute(
            "SELECT digest FROM config_seeds WHERE kind = 'pause_reasons' AND name = '*'"
        ).fetchone()
        if seen is not None and seen[0] == digest:
            return False
        now = self.clock()
        statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM pause_reasons", ())]
        for index, name in enumerate(reasons):
            statements.append(
                (
                    "INSERT INTO pause_reasons (name, origin, created) VALUES (?, 'config', ?)",
                    (name, now + index * 1e-6),
                )
            )
        statements.append(self._seed_statement("pause_reasons", "*", digest))
        entry = self.book.entry(
            CONFIG,
            "pause_reasons.seed",
            "pause_reasons",
            {"reasons": self._reasons},
            {"reasons": reasons},
        )
        self.book.commit([entry], statements, {})
        self._reasons = reasons
        return True

    async def create_pause_reason(self, actor: Identity, name: str) -> list[str]:
        """Add a pause reason (at the end of the list); the agent pages get it at once."""
        async with self._lock:
            if name in self._reasons:
                why = f"the pause reason {name} exists already"
                raise ApiError(409, why, [("name", why)])
            before = list(self._reasons)
            after = [*before, name]
            book = self.book
            entry = book.entry(
                actor, "pause_reason.create", name, {"reasons": before}, {"reasons": after}
            )
            statement = (
                "INSERT INTO pause_reasons (name, origin, created) VALUES (?, 'api', ?)",
                (name, self.clock()),
            )
            await book.call(book.commit, [entry], [statement])
            self._reasons = after
            self._reasons_changed(PAUSE_REASON_CREATED, actor, before, after)
            return after

    async def delete_pause_reason(self, actor: Identity, name: str) -> list[str]:
        """Remove a pause reason: no one can pause with it from now on; an agent paused with
        it stays paused, with it (409 for the last reason: agents could not pause)."""
        async with self._lock:
            if name not in self._reasons:
                raise ApiError(404, f"unknown pause reason: {name}")
            if len(self._reasons) == 1:
                why = f"{name} is the last pause reason: agents could not pause without one"
                raise ApiError(409, why, [("name", why)])
            before = list(self._reasons)
            after = [r for r in before if r != name]
            book = self.book
            entry = book.entry(
                actor, "pause_reason.delete", name, {"reasons": before}, {"reasons": after}
            )
            statement = ("DELETE FROM pause_reasons WHERE name = ?", (name,))
            await book.call(book.commit, [entry], [statement])
            self._reasons = after
            self._reasons_changed(PAUSE_REASON_DELETED, actor, before, after)
            return after

    def _reasons_changed(
        self, type_: str, actor: Identity, before: list[str], after: list[str]
    ) -> None:
        self.events.publish(type_, data={"by": actor.actor, "before": before, "after": after})
        for listener in self.reason_listeners:
            try:
                listener()
            except Exception:
                logger.exception("telling the pages about the pause reasons failed")

    def routes_now(self) -> tuple[Route, ...]:
        """The routes created through the API, oldest first: matched before the file's."""
        return tuple(route for _, route in self._routes.values())

    def route_rows(self) -> list[QueueRow]:
        """Every stored route (a `QueueRow` of ``[[routes]]`` settings), oldest first."""
        return [row for row, _ in self._routes.values()]

    def campaign_rows(self) -> list[QueueRow]:
        """Every stored campaign (a `QueueRow` of campaign settings), oldest first."""
        return list(self._campaigns.values())

    def _build(
        self, queues: Mapping[str, QueueRow], agents: Iterable[AccountRow] | None = None
    ) -> tuple[AcdConfig, list[FieldError]]:
        rows = list(self.agents() if agents is None else agents)
        raw = {
            "agents": {a.name: {"name": a.display_name} for a in rows},
            "queues": {name: dict(row.settings) for name, row in queues.items()},
        }
        try:
            return build_config(raw), []
        except QueueConfigError as exc:
            errors: list[FieldError] = []
            for error in exc.errors:
                place, sep, why = error.partition(": ")
                errors.append((place, why) if sep else ("settings", error))
            return AcdConfig(), errors

    # -- seeding from the file (at start, before the engine exists) --------------------------

    def seed(
        self,
        agents: Iterable[Any],
        queues: Mapping[str, QueueConfig],
        campaigns: Iterable[Campaign] = (),
        disposition_sets: Mapping[str, Iterable[str]] = {},
    ) -> list[str]:
        """Write the file's declarations never seeded or changed since they were (see the
        module's docstring); returns what changed, as ``agent:<name>``, ``queue:<name>``,
        ``campaign:<name>`` and ``disposition_set:<name>``. `agents` are
        `webrtc.config.AgentConfig` (name, display_name, password_hash)."""
        book = self.book
        seen = {
            (kind, name): digest
            for kind, name, digest in book.db.execute("SELECT kind, name, digest FROM config_seeds")
        }
        now = self.clock()
        entries: list[AuditEntry] = []
        statements: list[tuple[str, tuple[Any, ...]]] = []
        accounts: dict[str, AccountRow | None] = {}
        changed: list[str] = []
        existing = {a.name: a for a in book.accounts()}
        for agent in agents:
            digest = _digest([agent.name, agent.display_name, agent.password_hash])
            if seen.get(("agent", agent.name)) == digest:
                continue
            old = existing.get(agent.name)
            if old is not None and old.role is not Role.AGENT:
                logger.error("[[agents]] %s: an account of that name exists; skipped", agent.name)
                continue
            row = AccountRow(
                agent.name,
                Role.AGENT,
                agent.display_name or agent.name,
                agent.password_hash,
                None,
                old.disabled if old is not None else False,
                "config",
                old.created if old is not None else now,
                now,
            )
            accounts[agent.name] = row
            statements.append(self._seed_statement("agent", agent.name, digest))
            before = self.agent_view(old) if old is not None else None
            entries.append(
                book.entry(
                    CONFIG,
                    "agent.create" if old is None else "agent.update",
                    agent.name,
                    before,
                    {**self.agent_view(row), "password": "from the file"},
                )
            )
            changed.append(f"agent:{agent.name}")

        def rows(
            kind: str, table: str, now_rows: dict[str, QueueRow], declared: Mapping[str, Any]
        ) -> None:
            for name, settings in declared.items():
                digest = _digest(settings)
                if seen.get((kind, name)) == digest:
                    continue
                old = now_rows.get(name)
                row = QueueRow(name, settings, "config", old.created if old else now, now)
                now_rows[name] = row
                statements.append(_row_statement(table, row))
                statements.append(self._seed_statement(kind, name, digest))
                before = old.view() if old is not None else None
                action = f"{kind}.create" if old is None else f"{kind}.update"
                entries.append(book.entry(CONFIG, action, name, before, row.view()))
                changed.append(f"{kind}:{name}")

        queues_now = dict(self._queues)
        rows("queue", "queues", queues_now, {n: queue_settings(q) for n, q in queues.items()})
        sets_now = dict(self._sets)
        declared_sets = {n: {"dispositions": list(d)} for n, d in disposition_sets.items()}
        rows("disposition_set", "disposition_sets", sets_now, declared_sets)
        campaigns_now = dict(self._campaigns)
        for name, row_s in sets_now.items():
            if sets_now[name] is not self._sets.get(name):  # seeded now: its campaigns follow
                for campaign, row_c in self._campaigns.items():
                    if row_c.settings.get("disposition_set") == name:
                        settings = {
                            **row_c.settings,
                            "dispositions": row_s.settings["dispositions"],
                        }
                        campaigns_now[campaign] = replace(row_c, settings=settings)
                        statements.append(_row_statement("campaigns", campaigns_now[campaign]))
        rows(
            "campaign",
            "campaigns",
            campaigns_now,
            {c.name: campaign_settings(c) for c in campaigns},
        )
        if not statements:
            return []
        self._campaigns, self._sets = campaigns_now, sets_now
        # Members the database no longer has (an agent deleted through the API) are dropped.
        names = {a.name for a in book.accounts()} | set(accounts)
        for name, row_q in list(queues_now.items()):
            kept = [m for m in row_q.settings["members"] if m["agent"] in names]
            if len(kept) != len(row_q.settings["members"]):
                row_q = replace(row_q, settings={**row_q.settings, "members": kept})
                queues_now[name] = row_q
                statements.append(_row_statement("queues", row_q))
        book.commit(entries, statements, accounts)
        self._queues = queues_now
        return changed

    @staticmethod
    def _seed_statement(kind: str, name: str, digest: str) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO config_seeds (kind, name, digest) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET digest = excluded.digest",
            (kind, name, digest),
        )

    # -- the running server -----------------------------------------------------------------

    def bind(
        self,
        acd: AcdRuntime | None,
        logins: AccountStore | None = None,
        pages: AgentPages | None = None,
    ) -> None:
        """Apply changes from now on to the running `acd`, agent `logins` and `pages`."""
        self.acd, self.logins, self.pages = acd, logins, pages
        if acd is not None:
            acd.after_pump.append(self._after_pump)

    async def close(self) -> None:
        """Stop the logouts under way."""
        self._leaving.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reload(self) -> None:
        """Read the queues, campaigns, routes and pause reasons again (the book has read the
        agents again) and apply what changed to the engine, the agent logins, the route and
        campaign tables and the agent pages' pause menus: another node sharing the database
        changed them (`omlmedia.notify`). An agent removed there while logged in here stays in
        this engine until it logs out."""
        book = self.book

        def read(table: str) -> dict[str, QueueRow]:
            return {
                name: QueueRow(name, json.loads(settings), origin, created, updated)
                for name, settings, origin, created, updated in book.db.execute(
                    f"SELECT name, settings, origin, created, updated FROM {table} "
                    "ORDER BY created, name"
                )
            }

        def read_reasons() -> list[str]:
            return [
                name
                for (name,) in book.db.execute(
                    "SELECT name FROM pause_reasons ORDER BY created, name"
                )
            ]

        async with self._lock:
            queues, campaigns, routes, reasons, sets = await book.call(
                lambda: (
                    read("queues"),
                    read("campaigns"),
                    read("routes"),
                    read_reasons(),
                    read("disposition_sets"),
                )
            )
            if reasons != self._reasons:
                self._reasons = reasons
                for listener in self.reason_listeners:
                    listener()
            self._queues, self._campaigns, self._sets = queues, campaigns, sets
            self._routes = {
                name: (row, route)
                for name, row in routes.items()
                if (route := _route_of(row.settings)) is not None
            }
            acd = self.acd
            if acd is not None:
                config = self.acd_config()
                try:
                    _converge(acd.engine, config, acd.now())
                finally:
                    acd.pump()
            if self.logins is not None:
                self.logins.accounts = {a.name: a for a in self.agent_accounts()}
            running = dict(self.campaign_tables[0]) if self.campaign_tables else {}
            now_campaigns = self.campaigns_now()
            for table in self.campaign_tables:
                table.clear()
                table.update(now_campaigns)
            self._apply_routes()
            for name, campaign in now_campaigns.items():
                was = running.get(name)
                if was is not None and was.dispositions != campaign.dispositions:
                    self._dispositions_changed(name, campaign.dispositions)

    def _engine(self, change: Callable[[float], None]) -> None:
        """Apply `change(now)` to the engine, then act on what it decided."""
        acd = self.acd
        if acd is None:
            return
        try:
            change(acd.now())
        except AcdUsageError as exc:
            raise ApiError(409, str(exc)) from None
        finally:
            acd.pump()

    def _engine_state(self, agent: str) -> AgentState:
        acd = self.acd
        if acd is None or agent not in acd.engine_agents:
            return AgentState.LOGGED_OUT
        return acd.agent_state(agent)

    def _publish(
        self,
        type_: str,
        actor: Identity,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        *,
        queue: str = "",
        agent: str = "",
    ) -> None:
        self.events.publish(
            type_,
            queue=queue,
            agent=agent,
            data={"by": actor.actor, "before": before, "after": after},
        )

    # -- agents -------------------------------------------------------------------------------

    def _check_memberships(self, value: object, errors: list[FieldError]) -> dict[str, int] | None:
        """``queues``: a list of queue names or ``{"queue", "penalty"}`` tables."""
        if not isinstance(value, list):
            errors.append(("queues", 'must be a list of queue names or {"queue", "penalty"}'))
            return None
        wanted: dict[str, int] = {}
        for index, item in enumerate(value):
            where = f"queues[{index}]"
            if isinstance(item, str):
                item = {"queue": item}
            if not isinstance(item, dict) or set(item) - {"queue", "penalty"}:
                errors.append((where, 'must be a queue name or {"queue", "penalty"}'))
                continue
            queue, penalty = item.get("queue"), item.get("penalty", 0)
            if not isinstance(queue, str) or queue not in self._queues:
                errors.append((f"{where}.queue", f"unknown queue {str(queue)[:64]!r}"))
                continue
            if (
                isinstance(penalty, bool)
                or not isinstance(penalty, int)
                or not 0 <= penalty <= 10**6
            ):
                errors.append((f"{where}.penalty", "must be an integer from 0 to 1000000"))
                continue
            if queue in wanted:
                errors.append((f"{where}.queue", f"queue {queue!r} is listed twice"))
                continue
            wanted[queue] = penalty
        return wanted

    def _with_memberships(self, agent: str, wanted: Mapping[str, int]) -> dict[str, QueueRow]:
        """The queues whose members change when `agent` is a member of `wanted` alone."""
        now = self.clock()
        changed: dict[str, QueueRow] = {}
        for name, row in self._queues.items():
            members = [dict(m) for m in row.settings["members"]]
            current = next((m for m in members if m["agent"] == agent), None)
            if name in wanted:
                if current is None:
                    members.append({"agent": agent, "penalty": wanted[name]})
                elif current["penalty"] != wanted[name]:
                    current["penalty"] = wanted[name]
                else:
                    continue
            elif current is not None:
                members.remove(current)
            else:
                continue
            changed[name] = replace(row, settings={**row.settings, "members": members}, updated=now)
        return changed

    def _apply_queues(self, changed: Mapping[str, QueueRow], config: AcdConfig) -> None:
        def apply(now: float) -> None:
            assert self.acd is not None
            for name in changed:
                self.acd.engine.update_queue(config.queues[name], now)

        self._engine(apply)

    async def create_agent(
        self,
        actor: Identity,
        name: str,
        password: str,
        *,
        display_name: str = "",
        queues: object = None,
    ) -> dict[str, Any]:
        """A new agent (origin ``api``) in `queues`; it can log in at once."""
        async with self._lock:
            errors: list[FieldError] = []
            wanted = self._check_memberships(queues, errors) if queues is not None else {}
            if errors:
                raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in errors})), errors)
            try:
                self.book.account(name)
            except KeyError:
                pass
            else:
                why = f"an account or agent called {name} exists already"
                raise ApiError(409, why, [("name", why)])
            now = self.clock()
            password_hash = await self.book.call(hash_password, password)
            row = AccountRow(
                name, Role.AGENT, display_name or name, password_hash, None, False, "api", now, now
            )
            changed = self._with_memberships(name, wanted or {})
            config = self._config_or_400([*self.agents(), row], changed)
            self._engine(
                lambda t: self.acd.engine.add_agent(config.agents[name], t)  # type: ignore[union-attr]
            )
            self._apply_queues(changed, config)
            after = {**self._view_with(row, changed), "password": "set"}
            await self._commit(actor, "agent.create", name, None, after, changed, {name: row})
            if self.logins is not None:
                self.logins.accounts[name] = Account(name, row.display_name, password_hash)
            view = self._view_with(row, {})
            self._publish(AGENT_CREATED, actor, None, view, agent=name)
            return view

    def _config_or_400(
        self, agents: Iterable[AccountRow], changed: Mapping[str, QueueRow]
    ) -> AcdConfig:
        config, errors = self._build({**self._queues, **changed}, agents)
        if errors:
            raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in errors})), errors)
        return config

    def _view_with(self, row: AccountRow, changed: Mapping[str, QueueRow]) -> dict[str, Any]:
        saved = self._queues
        self._queues = {**saved, **changed}
        try:
            return self.agent_view(row)
        finally:
            self._queues = saved

    async def _commit(
        self,
        actor: Identity,
        action: str,
        target: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        queues: Mapping[str, QueueRow | None] = {},
        accounts: Mapping[str, AccountRow | None] = {},
    ) -> None:
        book = self.book
        statements = [
            _row_statement("queues", row)
            if row is not None
            else ("DELETE FROM queues WHERE name = ?", (name,))
            for name, row in queues.items()
        ]
        entry = book.entry(actor, action, target, before, after)
        await book.call(book.commit, [entry], statements, accounts)
        merged = dict(self._queues)
        for name, row in queues.items():
            if row is None:
                merged.pop(name, None)
            else:
                merged[name] = row
        self._queues = merged

    async def update_agent(
        self,
        actor: Identity,
        name: str,
        *,
        display_name: str | None = None,
        password: str | None = None,
        disabled: bool | None = None,
        queues: object = None,
    ) -> dict[str, Any]:
        """Change an agent: display name, password, memberships (the list replaces them),
        disabled (see the module's docstring)."""
        async with self._lock:
            old = self._agent_row(name)
            errors: list[FieldError] = []
            wanted = self._check_memberships(queues, errors) if queues is not None else None
            if errors:
                raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in errors})), errors)
            password_hash = old.password_hash
            if password is not None:
                password_hash = await self.book.call(hash_password, password)
            new = replace(
                old,
                display_name=display_name if display_name is not None else old.display_name,
                password_hash=password_hash,
                disabled=disabled if disabled is not None else old.disabled,
            )
            changed = self._with_memberships(name, wanted) if wanted is not None else {}
            if new == old and not changed:
                return self.agent_view(old)
            new = replace(new, updated=self.clock())
            agents = [new if a.name == name else a for a in self.agents()]
            config = self._config_or_400(agents, changed)
            before = self.agent_view(old)
            if new.display_name != old.display_name:
                self._engine(
                    lambda t: self.acd.engine.update_agent(config.agents[name])  # type: ignore[union-attr]
                )
            self._apply_queues(changed, config)
            after = self._view_with(new, changed)
            audited = {**after, "password": "changed"} if password is not None else after
            await self._commit(actor, "agent.update", name, before, audited, changed, {name: new})
            if self.logins is not None:
                if new.disabled:
                    self.logins.accounts.pop(name, None)
                else:
                    self.logins.accounts[name] = Account(name, new.display_name, new.password_hash)
            if new.disabled and not old.disabled:
                await self._leave(name, actor)
            elif not new.disabled:
                self._leaving.pop(name, None)
            self._publish(AGENT_UPDATED, actor, before, after, agent=name)
            return after

    async def _leave(self, agent: str, actor: Identity) -> None:
        """A disabled agent: logged out now, or paused and logged out after its calls (looked
        at after each of the runtime's pumps: a call's end always pumps)."""
        pages = self.pages
        if pages is not None and pages.busy(agent):
            if self._engine_state(agent) is not AgentState.LOGGED_OUT:
                self._engine(
                    lambda t: self.acd.engine.force_pause(  # type: ignore[union-attr]
                        agent, "disabled", t, supervisor=actor.actor
                    )
                )
            self._leaving[agent] = actor
            return
        await self._log_out(agent, actor)

    def _after_pump(self) -> None:
        """Log out the disabled agents whose calls are over (from `AcdRuntime.pump`)."""
        pages = self.pages
        for agent, actor in list(self._leaving.items()):
            if pages is None or not pages.busy(agent):
                del self._leaving[agent]
                task = asyncio.get_running_loop().create_task(self._log_out_later(agent, actor))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _log_out_later(self, agent: str, actor: Identity) -> None:
        try:
            await self._log_out(agent, actor)
        except Exception:
            logger.exception("logging out the disabled agent %s failed", agent)

    async def _log_out(self, agent: str, actor: Identity) -> None:
        if self._engine_state(agent) is not AgentState.LOGGED_OUT:
            self._engine(
                lambda t: self.acd.engine.force_logout(  # type: ignore[union-attr]
                    agent, t, supervisor=actor.actor
                )
            )
        if self.pages is not None:
            await self.pages.log_out(agent, "account-disabled")

    async def delete_agent(self, actor: Identity, name: str) -> None:
        """Remove an agent and its memberships; 409 while it has a call (disable it first:
        it is logged out after its call) or a route sends callers to it (``agent:<name>``)."""
        async with self._lock:
            old = self._agent_row(name)
            if self.pages is not None and self.pages.busy(name):
                why = f"the agent {name} is on a call: disable it first (logged out after the call)"
                raise ApiError(409, why, [("name", why)])
            user = self._route_users(RouteAction.AGENT, name)
            if user is not None:
                why = f"{user} sends callers to agent {name}"
                raise ApiError(409, why, [("name", why)])
            before = self.agent_view(old)
            if self.logins is not None:
                self.logins.accounts.pop(name, None)
            await self._log_out(name, actor)
            changed = self._with_memberships(name, {})
            self._engine(lambda t: self.acd.engine.remove_agent(name, t))  # type: ignore[union-attr]
            await self._commit(actor, "agent.delete", name, before, None, changed, {name: None})
            self._leaving.pop(name, None)
            self._publish(AGENT_DELETED, actor, before, None, agent=name)

    # -- queues -------------------------------------------------------------------------------

    def _settings_or_400(self, name: str, settings: Mapping[str, Any]) -> QueueConfig:
        queues = {**self._queues, name: QueueRow(name, settings, "api", 0.0, 0.0)}
        config, errors = self._build(queues)
        if errors:
            fields = [(_field_of(place, name), why) for place, why in errors]
            raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in fields})), fields)
        return config.queues[name]

    async def create_queue(
        self, actor: Identity, name: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A new queue (origin ``api``) with `settings` (the keys of ``[queues.<name>]``;
        ``members`` defaults to none)."""
        async with self._lock:
            if name in self._queues:
                why = f"a queue called {name} exists already"
                raise ApiError(409, why, [("name", why)])
            config = self._settings_or_400(name, {"members": [], **settings})
            now = self.clock()
            row = QueueRow(name, queue_settings(config), "api", now, now)
            self._engine(lambda t: self.acd.engine.add_queue(config, t))  # type: ignore[union-attr]
            await self._commit(actor, "queue.create", name, None, row.view(), {name: row})
            self._publish(QUEUE_CREATED, actor, None, row.view(), queue=name)
            return row.view()

    async def update_queue(
        self, actor: Identity, name: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change some settings of a queue (the others are kept); waiting callers stay."""
        async with self._lock:
            old = self._queue_row(name)
            return await self._replace_queue(
                actor, old, {**old.settings, **changes}, "queue.update", QUEUE_UPDATED
            )

    async def _replace_queue(
        self,
        actor: Identity,
        old: QueueRow,
        settings: Mapping[str, Any],
        action: str,
        event_type: str,
        *,
        agent: str = "",
    ) -> dict[str, Any]:
        config = self._settings_or_400(old.name, settings)
        row = replace(old, settings=queue_settings(config), updated=self.clock())
        if row.settings == old.settings:
            return old.view()
        self._engine(lambda t: self.acd.engine.update_queue(config, t))  # type: ignore[union-attr]
        await self._commit(actor, action, old.name, old.view(), row.view(), {old.name: row})
        self._publish(event_type, actor, old.view(), row.view(), queue=old.name, agent=agent)
        return row.view()

    async def delete_queue(self, actor: Identity, name: str) -> None:
        """Remove a queue; 409 while callers wait in it, or when the file's campaigns or
        routes, or another queue's overflow, send callers to it."""
        async with self._lock:
            old = self._queue_row(name)
            if name in self.used_by:
                why = f"{self.used_by[name]} of the configuration file sends callers to {name}"
                raise ApiError(409, why, [("name", why)])
            for campaign, queue in self._campaign_queues().items():
                if queue == name:
                    why = f"campaign {campaign} sends callers to {name}"
                    raise ApiError(409, why, [("name", why)])
            for route_name, (_, route) in self._routes.items():
                if route.action is RouteAction.QUEUE and route.trunk == name:
                    why = f"route {route_name} sends callers to {name}"
                    raise ApiError(409, why, [("name", why)])
            for other in self._queues.values():
                if other.name != name and other.settings["overflow"].get("queue") == name:
                    why = f"queue {other.name} overflows into {name}"
                    raise ApiError(409, why, [("name", why)])
            self._engine(lambda t: self.acd.engine.remove_queue(name, t))  # type: ignore[union-attr]
            await self._commit(actor, "queue.delete", name, old.view(), None, {name: None})
            self._publish(QUEUE_DELETED, actor, old.view(), None, queue=name)

    async def set_member(
        self, actor: Identity, queue: str, agent: str, penalty: int
    ) -> dict[str, Any]:
        """Make `agent` a member of `queue` with `penalty` (or change its penalty)."""
        async with self._lock:
            old = self._queue_row(queue)
            self._agent_row(agent)
            members = [dict(m) for m in old.settings["members"]]
            current = next((m for m in members if m["agent"] == agent), None)
            if current is None:
                members.append({"agent": agent, "penalty": penalty})
            else:
                current["penalty"] = penalty
            settings = {**old.settings, "members": members}
            return await self._replace_queue(
                actor, old, settings, "queue.member.set", MEMBER_SET, agent=agent
            )

    async def remove_member(self, actor: Identity, queue: str, agent: str) -> dict[str, Any]:
        """Take `agent` out of `queue` (404 when it is not a member)."""
        async with self._lock:
            old = self._queue_row(queue)
            members = [m for m in old.settings["members"] if m["agent"] != agent]
            if len(members) == len(old.settings["members"]):
                raise ApiError(404, f"{agent} is not a member of {queue}")
            settings = {**old.settings, "members": members}
            return await self._replace_queue(
                actor, old, settings, "queue.member.remove", MEMBER_REMOVED, agent=agent
            )

    def export(self, raw: Mapping[str, Any]) -> str:
        """The configuration file `raw` with the database's agents, queues and campaigns
        (`export_config`)."""
        return export_config(
            raw,
            self.agents(),
            self.queues(),
            self.campaign_rows(),
            self.route_rows(),
            self.pause_reasons(),
            self.disposition_set_rows(),
        )

    # -- campaigns ----------------------------------------------------------------------------

    def _campaign_or_400(self, name: str, settings: Mapping[str, Any]) -> Campaign:
        """`settings` checked as ``check-config`` checks a ``[[campaigns]]`` table."""
        from omlmedia.config import _campaigns, _Checker

        unknown = [(key, "unknown field") for key in settings if key not in CAMPAIGN_KEYS]
        if unknown:
            raise ApiError(400, "invalid " + ", ".join(k for k, _ in unknown), unknown)
        check = _Checker({})
        found = _campaigns(
            check,
            [{"name": name, **settings}],
            set(self._queues),
            set(self.trunks),
            self._set_lists(),
        )
        errors = _checked(check.errors, "campaigns[0]")
        if errors or not found:
            errors = errors or [("settings", "not a campaign")]
            raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in errors})), errors)
        return found[0]

    async def create_campaign(
        self, actor: Identity, name: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A new campaign (origin ``api``) with `settings` (the keys of a ``[[campaigns]]``
        table; ``queue`` required): a route to ``campaign:<name>`` reaches it at once."""
        async with self._lock:
            if name in self._campaigns:
                why = f"a campaign called {name} exists already"
                raise ApiError(409, why, [("name", why)])
            campaign = self._campaign_or_400(name, settings)
            now = self.clock()
            row = QueueRow(name, campaign_settings(campaign), "api", now, now)
            await self._store(actor, "campaign", "campaigns", name, None, row)
            self._campaigns = {**self._campaigns, name: row}
            self._run_campaign(campaign)
            self._publish_campaign(CAMPAIGN_CREATED, actor, None, row, campaign.queue)
            return row.view()

    async def update_campaign(
        self, actor: Identity, name: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change some settings of a campaign (the others are kept): its queue, recording,
        CRM URL, dispositions, callbacks; calls that arrive from now on get them."""
        async with self._lock:
            old = self._campaigns.get(name)
            if old is None:
                raise ApiError(404, f"unknown campaign: {name}")
            unknown = [(key, "unknown field") for key in changes if key not in CAMPAIGN_KEYS]
            if unknown:
                raise ApiError(400, "invalid " + ", ".join(k for k, _ in unknown), unknown)
            campaign = self._campaign_or_400(name, {**old.settings, **changes})
            row = replace(old, settings=campaign_settings(campaign), updated=self.clock())
            if row.settings == old.settings:
                return old.view()
            await self._store(actor, "campaign", "campaigns", name, old, row)
            self._campaigns = {**self._campaigns, name: row}
            self._run_campaign(campaign)
            self._publish_campaign(CAMPAIGN_UPDATED, actor, old, row, campaign.queue)
            return row.view()

    def _route_users(self, action: RouteAction, name: str) -> str | None:
        """The first route (the file's, then the API's) that sends callers to `name`."""
        for index, route in enumerate(self.file_routes):
            if route.action is action and route.trunk == name:
                match = route.user or (route.pattern.pattern if route.pattern else "")
                return f"route routes[{index}] ({match}) of the configuration file"
        for route_name, (_, route) in self._routes.items():
            if route.action is action and route.trunk == name:
                return f"route {route_name}"
        return None

    async def delete_campaign(self, actor: Identity, name: str) -> None:
        """Remove a campaign; 409 while a route (the file's or the API's) sends callers to it.
        Callers already in its queue keep what they came with."""
        async with self._lock:
            old = self._campaigns.get(name)
            if old is None:
                raise ApiError(404, f"unknown campaign: {name}")
            user = self._route_users(RouteAction.CAMPAIGN, name)
            if user is not None:
                why = f"{user} sends callers to campaign {name}"
                raise ApiError(409, why, [("name", why)])
            await self._store(actor, "campaign", "campaigns", name, old, None)
            self._campaigns = {k: v for k, v in self._campaigns.items() if k != name}
            self.campaigns.pop(name, None)
            for table in self.campaign_tables:
                table.pop(name, None)
            self._publish_campaign(CAMPAIGN_DELETED, actor, old, None, old.settings["queue"])

    def _publish_campaign(
        self,
        type_: str,
        actor: Identity,
        before: QueueRow | None,
        after: QueueRow | None,
        queue: str,
    ) -> None:
        row = after or before
        assert row is not None
        self.events.publish(
            type_,
            campaign=row.name,
            queue=queue,
            data={
                "by": actor.actor,
                "before": before.view() if before is not None else None,
                "after": after.view() if after is not None else None,
            },
        )

    # -- routes -------------------------------------------------------------------------------

    def _route_or_400(self, settings: Mapping[str, Any]) -> Route:
        """`settings` checked as ``check-config`` checks a ``[[routes]]`` table, its target
        against the directory's agents, queues and campaigns."""
        route, errors = _parse_route(settings, self.trunks)
        if route is not None:
            known = {
                RouteAction.AGENT: ("agent", {a.name for a in self.agents()}),
                RouteAction.QUEUE: ("queue", set(self._queues)),
                RouteAction.CAMPAIGN: ("campaign", set(self._campaigns)),
            }.get(route.action)
            if known is not None and route.trunk and route.trunk not in known[1]:
                errors = [("target", f'unknown {known[0]} "{route.trunk}"')]
        if errors or route is None:
            raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in errors})), errors)
        return route

    def route_view(self, row: QueueRow) -> dict[str, Any]:
        """A route as the API serves it."""
        return row.view()

    async def create_route(
        self, actor: Identity, name: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A new route (the keys of a ``[[routes]]`` table): matched at once, before the
        file's routes."""
        async with self._lock:
            if name in self._routes:
                why = f"a route called {name} exists already"
                raise ApiError(409, why, [("name", why)])
            route = self._route_or_400(settings)
            now = self.clock()
            row = QueueRow(name, _route_settings(route), "api", now, now)
            await self._store(actor, "route", "routes", name, None, row)
            self._routes = {**self._routes, name: (row, route)}
            self._apply_routes()
            self._publish(ROUTE_CREATED, actor, None, row.view())
            return row.view()

    async def update_route(
        self, actor: Identity, name: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change some keys of a route (its target, ``strip``, ``prefix``, what it matches),
        checked as `create_route` checks a new one; a key set to null is removed (``{"user":
        null, "pattern": ...}`` makes a DID route a pattern). It stays where it is in the
        order; calls already routed go on as they were."""
        async with self._lock:
            found = self._routes.get(name)
            if found is None:
                raise ApiError(404, f"unknown route: {name}")
            old = found[0]
            merged = {**old.settings, **changes}
            route = self._route_or_400({k: v for k, v in merged.items() if v is not None})
            row = replace(old, settings=_route_settings(route), updated=self.clock())
            if row.settings == old.settings:
                return old.view()
            await self._store(actor, "route", "routes", name, old, row)
            self._routes = {**self._routes, name: (row, route)}
            self._apply_routes()
            self._publish(ROUTE_UPDATED, actor, old.view(), row.view())
            return row.view()

    async def delete_route(self, actor: Identity, name: str) -> None:
        """Remove a route; calls it already routed go on."""
        async with self._lock:
            found = self._routes.get(name)
            if found is None:
                raise ApiError(404, f"unknown route: {name}")
            row = found[0]
            await self._store(actor, "route", "routes", name, row, None)
            self._routes = {k: v for k, v in self._routes.items() if k != name}
            self._apply_routes()
            self._publish(ROUTE_DELETED, actor, row.view(), None)

    def _apply_routes(self) -> None:
        routes = self.routes_now()
        for table in self.route_tables:
            table.set_added(routes)

    # -- storing a row of settings ------------------------------------------------------------

    async def _store(
        self,
        actor: Identity,
        kind: str,
        table: str,
        name: str,
        before: QueueRow | None,
        after: QueueRow | None,
        also: Iterable[tuple[str, tuple[Any, ...]]] = (),
    ) -> None:
        """Write `after` (None: delete the row) to `table` with its audit entry
        (``<kind>.create``, ``.update`` or ``.delete``, before and after), and the statements
        `also`, in one transaction."""
        action = "create" if before is None else "update" if after is not None else "delete"
        book = self.book
        entry = book.entry(
            actor,
            f"{kind}.{action}",
            name,
            before.view() if before is not None else None,
            after.view() if after is not None else None,
        )
        statement = (
            _row_statement(table, after)
            if after is not None
            else (f"DELETE FROM {table} WHERE name = ?", (name,))
        )
        await book.call(book.commit, [entry], [statement, *also])

    def _run_campaign(self, campaign: Campaign) -> None:
        """Give the running server `campaign`; tell the pages when its dispositions changed."""
        was = [table.get(campaign.name) for table in self.campaign_tables]
        for table in self.campaign_tables:
            table[campaign.name] = campaign
        if any(c is not None and c.dispositions != campaign.dispositions for c in was):
            self._dispositions_changed(campaign.name, campaign.dispositions)

    def _dispositions_changed(self, campaign: str, dispositions: tuple[str, ...]) -> None:
        for listener in self.disposition_listeners:
            try:
                listener(campaign, dispositions)
            except Exception:
                logger.exception("telling the pages about the dispositions of %s failed", campaign)

    # -- disposition sets ---------------------------------------------------------------------

    def _set_row(self, name: str) -> QueueRow:
        row = self._sets.get(name)
        if row is None:
            raise ApiError(404, f"unknown disposition set: {name}")
        return row

    def _with_set_list(self, name: str, dispositions: list[str]) -> dict[str, QueueRow]:
        """The stored campaigns that name the set `name`, with its `dispositions` as theirs."""
        now = self.clock()
        return {
            campaign: replace(
                row, settings={**row.settings, "dispositions": dispositions}, updated=now
            )
            for campaign, row in self._campaigns.items()
            if row.settings.get("disposition_set") == name
            and row.settings["dispositions"] != dispositions
        }

    def disposition_set_view(self, name: str) -> dict[str, Any]:
        """A disposition set as the API serves it, with the campaigns that use it."""
        return self._set_view(self._set_row(name))

    def _set_view(self, row: QueueRow) -> dict[str, Any]:
        return {**row.view(), "campaigns": self._set_users(row.name)}

    def _set_users(self, name: str) -> list[str]:
        return [
            c for c, row in self._campaigns.items() if row.settings.get("disposition_set") == name
        ]

    @staticmethod
    def _set_or_400(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """`settings` checked as ``check-config`` checks a ``[disposition_sets.<name>]``
        table."""
        from omlmedia.config import _Checker, parse_disposition_sets

        check = _Checker({})
        found = parse_disposition_sets(check, {name: dict(settings)})
        errors = _checked(check.errors, f"disposition_sets.{name}")
        if errors or name not in found:
            errors = errors or [("dispositions", "required")]
            raise ApiError(400, "invalid " + ", ".join(sorted({f for f, _ in errors})), errors)
        return {"dispositions": list(found[name])}

    async def create_disposition_set(
        self, actor: Identity, name: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A new named set of dispositions (``{"dispositions": [...]}``, at least one), which
        campaigns may name (``disposition_set``)."""
        async with self._lock:
            if name in self._sets:
                why = f"a disposition set called {name} exists already"
                raise ApiError(409, why, [("name", why)])
            now = self.clock()
            row = QueueRow(name, self._set_or_400(name, settings), "api", now, now)
            await self._store(actor, "disposition_set", "disposition_sets", name, None, row)
            self._sets = {**self._sets, name: row}
            self._publish(DISPOSITION_SET_CREATED, actor, None, self._set_view(row))
            return self._set_view(row)

    async def update_disposition_set(
        self, actor: Identity, name: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a set's dispositions: the campaigns that name it take them at once (the
        calls they offer from now on, and the agent pages' calls of theirs)."""
        async with self._lock:
            old = self._set_row(name)
            settings = self._set_or_400(name, {**old.settings, **changes})
            row = replace(old, settings=settings, updated=self.clock())
            if row.settings == old.settings:
                return self._set_view(old)
            # The campaigns that name it keep the set's list as theirs (their view, an export
            # and a later unnaming of the set see what their calls offer).
            users = self._with_set_list(name, settings["dispositions"])
            also = [_row_statement("campaigns", row) for row in users.values()]
            await self._store(actor, "disposition_set", "disposition_sets", name, old, row, also)
            before = self._set_view(old)
            self._sets = {**self._sets, name: row}
            self._campaigns = {**self._campaigns, **users}
            now_campaigns = self.campaigns_now()
            for campaign in users:
                self._run_campaign(now_campaigns[campaign])
            self._publish(DISPOSITION_SET_UPDATED, actor, before, self._set_view(row))
            return self._set_view(row)

    async def delete_disposition_set(self, actor: Identity, name: str) -> None:
        """Remove a set; 409 while a campaign names it."""
        async with self._lock:
            old = self._set_row(name)
            users = self._set_users(name)
            if users:
                why = f"campaign {users[0]} takes its dispositions from {name}"
                raise ApiError(409, why, [("name", why)])
            before = self._set_view(old)
            await self._store(actor, "disposition_set", "disposition_sets", name, old, None)
            self._sets = {k: v for k, v in self._sets.items() if k != name}
            self._publish(DISPOSITION_SET_DELETED, actor, before, None)


def _row_statement(table: str, row: QueueRow) -> tuple[str, tuple[Any, ...]]:
    """Insert or replace `row` (its settings as JSON) in `table` (queues, campaigns, routes,
    disposition_sets)."""
    return (
        f"INSERT INTO {table} (name, settings, origin, created, updated) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET settings = excluded.settings, "
        "origin = excluded.origin, updated = excluded.updated",
        (row.name, json.dumps(dict(row.settings)), row.origin, row.created, row.updated),
    )


def _converge(engine: Any, config: AcdConfig, now: float) -> None:
    """Bring `engine`'s agents and queues to `config` (`Directory.reload`); a change the engine
    refuses now (an agent logged in, a queue with callers) is logged and left for later."""
    known = engine.config
    steps: list[tuple[str, Callable[..., object], tuple[Any, ...]]] = []
    for name, agent in config.agents.items():
        if name not in known.agents:
            steps.append((f"add agent {name}", engine.add_agent, (agent, now)))
        elif known.agents[name] != agent:
            steps.append((f"update agent {name}", engine.update_agent, (agent,)))
    for name, queue in config.queues.items():
        if name not in known.queues:
            steps.append((f"add queue {name}", engine.add_queue, (queue, now)))
        elif known.queues[name] != queue:
            steps.append((f"update queue {name}", engine.update_queue, (queue, now)))
    for name in set(known.queues) - set(config.queues):
        steps.append((f"remove queue {name}", engine.remove_queue, (name, now)))
    for name in set(known.agents) - set(config.agents):
        steps.append((f"remove agent {name}", engine.remove_agent, (name, now)))
    for what, step, args in steps:
        try:
            step(*args)
        except AcdUsageError as exc:
            logger.warning("a change of another node not applied yet (%s): %s", what, exc)


def file_users(campaigns: Iterable[Any], routes: Iterable[Any]) -> dict[str, str]:
    """Queue name -> the first campaign or route of the file that sends callers to it."""
    users: dict[str, str] = {}
    for campaign in campaigns:
        users.setdefault(campaign.queue, f"campaign {campaign.name}")
    for route in routes:
        if route.action.value == "queue" and route.trunk:
            users.setdefault(route.trunk, f"route {route.target}")
    return users
