"""ACD configuration: plain dicts (as parsed from TOML) validated into frozen dataclasses.

`build_config(data)` checks everything in one pass and raises one `QueueConfigError` listing
every problem with its place (``queues.support.strategy: unknown strategy "foo" (expected one of
ringall, leastrecent, ...)``). `validate(data)` returns the list of problems without raising.

The expected TOML shape (every key but ``members`` is optional; the values shown are the
defaults unless marked as an example)::

    [agents.agent1]            # one table per agent; the table may be empty
    name = "Ana"               # display name (example)
    wrapup = 5                 # seconds; overrides the wrap-up of every queue for this agent

    [queues.support]
    strategy = "ringall"       # ringall leastrecent fewestcalls random rrmemory rrordered
                               # linear wrandom longest-idle
    members = [{agent = "agent1", penalty = 0}, "agent2"]   # a bare name means penalty 0
    ring_timeout = 15          # seconds an offer rings before it counts as no-answer
    retry = 5                  # seconds before a member who missed a caller is offered it again
                               # (the other members are offered that caller at once)
    wrapup = 0                 # seconds of wrap-up after each call
    autopause = 0              # pause an agent after this many unanswered offers in a row (0: off)
    max_callers = 0            # callers allowed in the queue at once (0: unlimited)
    max_wait = 0               # seconds a caller may wait before overflow (0: unlimited)
    join_empty = true          # may a caller join when no member is logged in and unpaused?
    leave_when_empty = false   # do waiting callers leave when the last such member goes?
    overflow = {hangup = ""}   # where callers go when a limit is reached: {queue = "sales"},
                               # {agent = "agent1"}, {number = "5551234", trunk = "pbx"},
                               # {record = "support-mailbox"}, {hangup = "prompt-name"}
    music_on_hold = "default"  # carried through to the media side
    announce_frequency = 0     # seconds between position/estimated-wait announcements (0: off)
    service_level = 20         # seconds: an answer within this counts toward the service level
    max_penalty = -1           # highest member penalty offered at first (-1: no limit)
    escalation = [{after = 30, max_penalty = 2}]   # example: after 30 s also offer penalty <= 2

Penalty works as in Asterisk's app_queue: among the members a caller may be offered to, the
lowest penalty present wins and the strategy picks within it (``wrandom`` instead weighs every
eligible member by penalty).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from queueing.exceptions import QueueConfigError


class Strategy(Enum):
    """How a queue picks the member to offer a caller to (app_queue / mod_callcenter names)."""

    RINGALL = "ringall"
    """Every eligible ready member of the lowest penalty rings; the first to answer wins."""
    LEASTRECENT = "leastrecent"
    """The member whose last call from this queue ended longest ago."""
    FEWESTCALLS = "fewestcalls"
    """The member who completed the fewest calls from this queue."""
    RANDOM = "random"
    """A uniformly random member (the engine's RNG is injected and seedable)."""
    RRMEMORY = "rrmemory"
    """Round robin over the member list, resuming after the member offered last."""
    RRORDERED = "rrordered"
    """Round robin that keeps the configured member order. Our member order is always the
    configured one, so it behaves as `RRMEMORY`; the name is kept for app_queue configs."""
    LINEAR = "linear"
    """The first ready member in the configured order, every time."""
    WRANDOM = "wrandom"
    """Random weighted by penalty: ``random() * (penalty + 1)``, lowest wins (app_queue)."""
    LONGEST_IDLE = "longest-idle"
    """The member idle longest across all its queues (mod_callcenter longest-idle-agent)."""


class DestinationKind(Enum):
    """Kinds of overflow destination."""

    QUEUE = "queue"
    """Another queue of this engine; the engine moves the caller there itself."""
    AGENT = "agent"
    """One agent, rung directly by the call layer."""
    NUMBER = "number"
    """A number dialled through a trunk."""
    RECORD = "record"
    """A voicemail-style recording into the named mailbox."""
    HANGUP = "hangup"
    """Play the named prompt (none when empty) and hang up."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a caller goes when a queue limit is reached."""

    kind: DestinationKind
    target: str = ""
    """Queue name, agent name, number, mailbox or prompt, depending on `kind`."""
    trunk: str = ""
    """For `DestinationKind.NUMBER`: the trunk to dial through (empty: the default route)."""

    def __str__(self) -> str:
        if self.kind is DestinationKind.NUMBER and self.trunk:
            return f"number:{self.target}@{self.trunk}"
        return f"{self.kind.value}:{self.target}"


HANGUP: Final = Destination(DestinationKind.HANGUP)


@dataclass(frozen=True, slots=True)
class EscalationRule:
    """Once a caller has waited `after` seconds, members up to `max_penalty` may be offered."""

    after: float
    max_penalty: int


@dataclass(frozen=True, slots=True)
class MemberConfig:
    """An agent's membership of one queue."""

    agent: str
    penalty: int = 0
    """Skill level: lower is offered first; 0 is the best."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """An agent known to the ACD."""

    agent: str
    name: str = ""
    wrapup: float | None = None
    """Wrap-up seconds overriding every queue's `QueueConfig.wrapup` (None: the queue's)."""


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue; see the module docstring for the TOML keys and their defaults."""

    name: str
    strategy: Strategy = Strategy.RINGALL
    members: tuple[MemberConfig, ...] = ()
    ring_timeout: float = 15.0
    retry: float = 5.0
    wrapup: float = 0.0
    autopause: int = 0
    max_callers: int = 0
    max_wait: float = 0.0
    join_empty: bool = True
    leave_when_empty: bool = False
    overflow: Destination = HANGUP
    music_on_hold: str = "default"
    announce_frequency: float = 0.0
    service_level: float = 20.0
    max_penalty: int = -1
    escalation: tuple[EscalationRule, ...] = ()

    def member(self, agent: str) -> MemberConfig | None:
        """The membership of `agent`, or None."""
        for member in self.members:
            if member.agent == agent:
                return member
        return None


@dataclass(frozen=True, slots=True)
class AcdConfig:
    """Every agent and queue of one engine."""

    agents: Mapping[str, AgentConfig] = field(default_factory=dict)
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)


STRATEGIES: Final = tuple(s.value for s in Strategy)
_QUEUE_KEYS: Final = (
    "strategy",
    "members",
    "ring_timeout",
    "retry",
    "wrapup",
    "autopause",
    "max_callers",
    "max_wait",
    "join_empty",
    "leave_when_empty",
    "overflow",
    "music_on_hold",
    "announce_frequency",
    "service_level",
    "max_penalty",
    "escalation",
)
_AGENT_KEYS: Final = ("name", "wrapup")
_MAX_SECONDS: Final = 7 * 24 * 3600.0
_MAX_COUNT: Final = 1_000_000


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _Checker:
    """Collects errors with their place while reading typed values."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, place: str, message: str) -> None:
        self.errors.append(f"{place}: {message}")

    def table(self, place: str, value: object, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(place, f"expected a table, got {_type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.error(f"{place}.{key}", f"unknown key{hint}")
        return value

    def seconds(self, table: dict[str, Any], place: str, key: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(f"{place}.{key}", f"expected a number of seconds, got {_type_name(value)}")
            return default
        if not 0 <= value <= _MAX_SECONDS:
            self.error(f"{place}.{key}", f"must be from 0 to {_MAX_SECONDS:g} seconds, got {value}")
            return default
        return float(value)

    def count(self, table: dict[str, Any], place: str, key: str, default: int, low: int = 0) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(f"{place}.{key}", f"expected an integer, got {_type_name(value)}")
            return default
        if not low <= value <= _MAX_COUNT:
            self.error(f"{place}.{key}", f"must be an integer from {low} to {_MAX_COUNT}")
            return default
        return value

    def boolean(self, table: dict[str, Any], place: str, key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.error(f"{place}.{key}", f"expected true or false, got {_type_name(value)}")
            return default
        return value

    def string(self, table: dict[str, Any], place: str, key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            self.error(f"{place}.{key}", f"expected a string, got {_type_name(value)}")
            return default
        return value


def _destination(check: _Checker, place: str, value: object) -> Destination:
    kinds = tuple(k.value for k in DestinationKind)
    if not isinstance(value, dict):
        check.error(place, f'expected a table such as {{queue = "sales"}}, got {_type_name(value)}')
        return HANGUP
    found = [k for k in value if k in kinds]
    if len(found) != 1:
        check.error(place, f"expected exactly one of {', '.join(kinds)}")
        return HANGUP
    kind = DestinationKind(found[0])
    allowed = (kind.value, "trunk") if kind is DestinationKind.NUMBER else (kind.value,)
    check.table(place, value, allowed)
    target = check.string(value, place, kind.value, "")
    trunk = check.string(value, place, "trunk", "")
    if not target and kind is not DestinationKind.HANGUP:
        check.error(f"{place}.{kind.value}", "must not be empty")
    return Destination(kind, target, trunk)


def _members(
    check: _Checker, place: str, value: object, agents: Mapping[str, object]
) -> tuple[MemberConfig, ...]:
    if not isinstance(value, list):
        check.error(place, f"expected an array of members, got {_type_name(value)}")
        return ()
    members: list[MemberConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        where = f"{place}[{index}]"
        if isinstance(item, str):
            item = {"agent": item}
        table = check.table(where, item, ("agent", "penalty"))
        if not table:
            continue
        agent = check.string(table, where, "agent", "")
        penalty = check.count(table, where, "penalty", 0)
        if not agent:
            check.error(f"{where}.agent", "required")
            continue
        if agent not in agents:
            close = difflib.get_close_matches(agent, list(agents), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            check.error(f"{where}.agent", f'unknown agent "{agent}"{hint}')
            continue
        if agent in seen:
            check.error(f"{where}.agent", f'agent "{agent}" is listed twice')
            continue
        seen.add(agent)
        members.append(MemberConfig(agent, penalty))
    return tuple(members)


def _escalation(check: _Checker, place: str, value: object) -> tuple[EscalationRule, ...]:
    if not isinstance(value, list):
        check.error(place, f"expected an array of rules, got {_type_name(value)}")
        return ()
    rules: list[EscalationRule] = []
    for index, item in enumerate(value):
        where = f"{place}[{index}]"
        table = check.table(where, item, ("after", "max_penalty"))
        if not table:
            continue
        if "after" not in table or "max_penalty" not in table:
            check.error(where, "needs both after and max_penalty")
            continue
        after = check.seconds(table, where, "after", 0.0)
        max_penalty = check.count(table, where, "max_penalty", 0)
        if rules and after <= rules[-1].after:
            check.error(f"{where}.after", "must be greater than the previous rule's")
            continue
        rules.append(EscalationRule(after, max_penalty))
    return tuple(rules)


def _queue(check: _Checker, name: str, value: object, agents: Mapping[str, object]) -> QueueConfig:
    place = f"queues.{name}"
    table = check.table(place, value, _QUEUE_KEYS)
    strategy = Strategy.RINGALL
    raw_strategy = table.get("strategy", "ringall")
    if not isinstance(raw_strategy, str) or raw_strategy not in STRATEGIES:
        shown = f'"{raw_strategy}"' if isinstance(raw_strategy, str) else _type_name(raw_strategy)
        check.error(
            f"{place}.strategy",
            f"unknown strategy {shown} (expected one of {', '.join(STRATEGIES)})",
        )
    else:
        strategy = Strategy(raw_strategy)
    if "members" not in table and isinstance(value, dict):
        check.error(f"{place}.members", "required (an array, may be empty)")
    members = _members(check, f"{place}.members", table.get("members", []), agents)
    overflow = HANGUP
    if "overflow" in table:
        overflow = _destination(check, f"{place}.overflow", table["overflow"])
        if overflow.kind is DestinationKind.AGENT and overflow.target not in agents:
            check.error(f"{place}.overflow.agent", f'unknown agent "{overflow.target}"')
    max_penalty = check.count(table, place, "max_penalty", -1, low=-1)
    return QueueConfig(
        name=name,
        strategy=strategy,
        members=members,
        ring_timeout=check.seconds(table, place, "ring_timeout", 15.0),
        retry=check.seconds(table, place, "retry", 5.0),
        wrapup=check.seconds(table, place, "wrapup", 0.0),
        autopause=check.count(table, place, "autopause", 0),
        max_callers=check.count(table, place, "max_callers", 0),
        max_wait=check.seconds(table, place, "max_wait", 0.0),
        join_empty=check.boolean(table, place, "join_empty", True),
        leave_when_empty=check.boolean(table, place, "leave_when_empty", False),
        overflow=overflow,
        music_on_hold=check.string(table, place, "music_on_hold", "default"),
        announce_frequency=check.seconds(table, place, "announce_frequency", 0.0),
        service_level=check.seconds(table, place, "service_level", 20.0),
        max_penalty=max_penalty,
        escalation=_escalation(check, f"{place}.escalation", table.get("escalation", [])),
    )


def _check_overflow_loops(check: _Checker, queues: Mapping[str, QueueConfig]) -> None:
    for name, queue in queues.items():
        if queue.overflow.kind is not DestinationKind.QUEUE:
            continue
        if queue.overflow.target not in queues:
            check.error(f"queues.{name}.overflow.queue", f'unknown queue "{queue.overflow.target}"')
    reported: set[str] = set()
    for start in queues:
        path = [start]
        current = queues[start]
        while current.overflow.kind is DestinationKind.QUEUE and current.overflow.target in queues:
            following = current.overflow.target
            if following in path:
                loop = [*path[path.index(following) :], following]
                if not reported.intersection(loop):
                    check.error(
                        f"queues.{following}.overflow",
                        f"overflow loop between queues: {' -> '.join(loop)}",
                    )
                    reported.update(loop)
                break
            path.append(following)
            current = queues[following]


def validate(data: Mapping[str, Any]) -> list[str]:
    """Every problem of the raw configuration, each ``place: message``; empty when valid."""
    check = _Checker()
    _build(check, data)
    return check.errors


def build_config(data: Mapping[str, Any]) -> AcdConfig:
    """Validate the raw ``{"agents": {...}, "queues": {...}}`` tables into an `AcdConfig`.

    Raises `QueueConfigError` naming every invalid place.
    """
    check = _Checker()
    config = _build(check, data)
    if check.errors:
        raise QueueConfigError(check.errors)
    return config


def _section(check: _Checker, data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        check.error(key, f"expected a table, got {_type_name(value)}")
        return {}
    return value


def _build(check: _Checker, data: Mapping[str, Any]) -> AcdConfig:
    for key in data:
        if key not in ("agents", "queues"):
            check.error(str(key), "unknown key (expected agents or queues)")
    agents: dict[str, AgentConfig] = {}
    raw_agents = _section(check, data, "agents")
    for name, value in raw_agents.items():
        place = f"agents.{name}"
        if not name:
            check.error(place, "agent name must not be empty")
            continue
        table = check.table(place, value, _AGENT_KEYS)
        wrapup = check.seconds(table, place, "wrapup", -1.0) if "wrapup" in table else None
        agents[name] = AgentConfig(
            agent=name,
            name=check.string(table, place, "name", ""),
            wrapup=None if wrapup is None or wrapup < 0 else wrapup,
        )
    queues: dict[str, QueueConfig] = {}
    raw_queues = _section(check, data, "queues")
    for name, value in raw_queues.items():
        if not name:
            check.error(f"queues.{name}", "queue name must not be empty")
            continue
        queues[name] = _queue(check, name, value, agents)
    _check_overflow_loops(check, queues)
    return AcdConfig(agents=agents, queues=queues)
