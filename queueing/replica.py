"""One ACD across nodes: the engine's inputs as serialisable values, replayed in stream order.

Theory of operation
-------------------
Every node writes what happens to its callers and agents as an `Input` (each carrying its
``now``) to one ordered log (a Redis Stream in `omlmedia.acd_shared`). The node owning the ACD
applies the inputs **only in log order** to a `ReplicatedAcd`, which wraps a plain `AcdEngine`
and returns the engine's outputs as `Decision` values tagged ``(epoch, entry_id, seq)``. A timer
that falls due is not fired from the owner's clock: the owner writes a `Tick` input to the log and
applies it when it reads it back. Before any input, the timers due at or before its ``now`` fire
(what a single engine with a perfect clock would have done); ``now`` is clamped so that it never
goes back. Everything the engine does is therefore a function of the log alone: `rebuild()`
replaying the log from the start reproduces the engine exactly (same seed for the ``random``
strategies), which is how a new owner takes over.

`ReplicatedAcd.snapshot()` is the whole replica as JSON-able data (the engine's state through
`queueing.snapshot`, the last entry applied, the senders' counts); `restore()`, or `rebuild()`
given a snapshot and the entries after it, makes a replica that decides exactly what the one
snapshotted would have, input for input. A new owner then replays only the stream's tail, and the
stream can be trimmed up to the snapshot's entry.

Nodes pass every decision through a `DecisionFence`: a decision from an epoch older than the
newest seen, or seen already, is refused, so an owner that lost its lease cannot be acted on.

`check_decisions` is an invariant checker over a decision stream (no agent with two live offers,
no caller offered to two agents outside ``ringall``, no agent on a call offered another, first
offers FIFO within a queue and priority); the tests run it on the engine and on a cluster's
published decisions.

Serialisation is strict: `input_from_dict` / `Decision.from_dict` check every key and type and
raise `ReplicaError` naming the field, before anything is applied.
"""

from __future__ import annotations

import math
import random
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from enum import Enum
from typing import Any, ClassVar, Final, Union

from queueing.config import AcdConfig, AgentConfig, QueueConfig, Strategy
from queueing.engine import AcdEngine, CallerState
from queueing.events import (
    AgentState,
    AgentStateChanged,
    Announce,
    CallbackDial,
    CancelOffer,
    EnterResult,
    Event,
    Joined,
    LogEvent,
    OfferCall,
    Overflow,
    Overflowed,
    QueueLogEntry,
)
from queueing.exceptions import AcdUsageError
from queueing.snapshot import SnapshotError, _type_name, engine_from_state, engine_state
from queueing.stats import DEFAULT_RETENTION

__all__ = [
    "SNAPSHOT_VERSION",
    "Decision",
    "DecisionFence",
    "Input",
    "Refused",
    "ReplicaError",
    "ReplicatedAcd",
    "check_decisions",
    "config_from_dict",
    "config_to_dict",
    "entry_key",
    "input_from_dict",
]


class ReplicaError(ValueError):
    """A serialised input or decision is malformed, or inputs were applied out of order."""


# -- strict codec over the engine's frozen dataclasses ----------------------------------------


def _encode(value: object) -> Any:
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _decode(tp: Any, value: object, place: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        # the option of the value's own type first, so an int stays an int in `int | float`
        options = sorted(typing.get_args(tp), key=lambda option: option is not type(value))
        for option in options:
            try:
                return _decode(option, value, place)
            except ReplicaError:
                continue
        raise ReplicaError(f"{place}: {_type_name(value)} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ReplicaError(f"{place}: expected null, got {_type_name(value)}")
        return None
    if tp is str:
        if not isinstance(value, str):
            raise ReplicaError(f"{place}: expected a string, got {_type_name(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ReplicaError(f"{place}: expected a boolean, got {_type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ReplicaError(f"{place}: expected an integer, got {_type_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReplicaError(f"{place}: expected a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise ReplicaError(f"{place}: expected a finite number")
        return float(value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ReplicaError(f"{place}: {value!r} is not one of {allowed}") from None
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ReplicaError(f"{place}: expected a list, got {_type_name(value)}")
        return tuple(_decode(item, v, f"{place}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is Mapping:
        item = typing.get_args(tp)[1]
        if not isinstance(value, dict):
            raise ReplicaError(f"{place}: expected an object, got {_type_name(value)}")
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ReplicaError(f"{place}: keys must be strings")
            out[key] = _decode(item, v, f"{place}.{key}")
        return out
    if isinstance(tp, type) and is_dataclass(tp):
        return _decode_dataclass(tp, value, place)
    raise TypeError(f"{place}: no codec for {tp!r}")  # a programming error, not bad input


def _decode_dataclass(cls: type, value: object, place: str, skip: tuple[str, ...] = ()) -> Any:
    if not isinstance(value, dict):
        raise ReplicaError(f"{place}: expected an object, got {_type_name(value)}")
    hints = _hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known - set(skip))
    if unknown:
        raise ReplicaError(f"{place}: unknown field {unknown[0]!r}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in value:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ReplicaError(f"{place}: missing field {f.name!r}")
            continue
        kwargs[f.name] = _decode(hints[f.name], value[f.name], f"{place}.{f.name}")
    return cls(**kwargs)


def config_to_dict(config: AcdConfig) -> dict[str, Any]:
    """`AcdConfig` as plain JSON-able data (for `config_from_dict`)."""
    result: dict[str, Any] = _encode(config)
    return result


def config_from_dict(data: object) -> AcdConfig:
    """The `AcdConfig` of `config_to_dict`; `ReplicaError` on any malformed field."""
    config: AcdConfig = _decode_dataclass(AcdConfig, data, "config")
    for name, agent in config.agents.items():
        if agent.agent != name:
            raise ReplicaError(f"config.agents.{name}: its agent field says {agent.agent!r}")
    for name, queue in config.queues.items():
        if queue.name != name:
            raise ReplicaError(f"config.queues.{name}: its name field says {queue.name!r}")
        for member in queue.members:
            if member.agent not in config.agents:
                raise ReplicaError(f"config.queues.{name}: unknown member {member.agent!r}")
    return config


# -- inputs -----------------------------------------------------------------------------------


class _Input:
    """Base of every input: a kind, a ``now``, and the engine call it stands for."""

    kind: ClassVar[str]
    now: float

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _encode(self)
        data["kind"] = self.kind
        return data

    def apply(self, engine: AcdEngine, now: float) -> EnterResult | bool | None:
        raise NotImplementedError

    @property
    def call_id(self) -> str:
        return str(getattr(self, "call", ""))

    @property
    def agent_name(self) -> str:
        value = getattr(self, "agent", "")
        return value.agent if isinstance(value, AgentConfig) else str(value)


@dataclass(frozen=True, slots=True)
class AgentLogin(_Input):
    kind: ClassVar[str] = "agent-login"
    agent: str
    now: float
    paused_reason: str | None = None

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.agent_login(self.agent, now, paused_reason=self.paused_reason)


@dataclass(frozen=True, slots=True)
class AgentLogout(_Input):
    kind: ClassVar[str] = "agent-logout"
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.agent_logout(self.agent, now)


@dataclass(frozen=True, slots=True)
class ForceLogout(_Input):
    kind: ClassVar[str] = "force-logout"
    agent: str
    now: float
    supervisor: str = ""

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.force_logout(self.agent, now, supervisor=self.supervisor)


@dataclass(frozen=True, slots=True)
class AgentPause(_Input):
    kind: ClassVar[str] = "agent-pause"
    agent: str
    reason: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.agent_pause(self.agent, self.reason, now)


@dataclass(frozen=True, slots=True)
class ForcePause(_Input):
    kind: ClassVar[str] = "force-pause"
    agent: str
    reason: str
    now: float
    supervisor: str = ""

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.force_pause(self.agent, self.reason, now, supervisor=self.supervisor)


@dataclass(frozen=True, slots=True)
class AgentUnpause(_Input):
    kind: ClassVar[str] = "agent-unpause"
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.agent_unpause(self.agent, now)


@dataclass(frozen=True, slots=True)
class AgentReady(_Input):
    kind: ClassVar[str] = "agent-ready"
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.agent_ready(self.agent, now)


@dataclass(frozen=True, slots=True)
class CallerEnter(_Input):
    kind: ClassVar[str] = "caller-enter"
    call: str
    queue: str
    now: float
    priority: int = 0
    caller_number: str = ""
    caller_name: str = ""

    def apply(self, engine: AcdEngine, now: float) -> EnterResult:
        return engine.caller_enter(
            self.call,
            self.queue,
            now,
            priority=self.priority,
            caller_number=self.caller_number,
            caller_name=self.caller_name,
        )


@dataclass(frozen=True, slots=True)
class CallerAbandon(_Input):
    kind: ClassVar[str] = "caller-abandon"
    call: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.caller_abandon(self.call, now)


@dataclass(frozen=True, slots=True)
class CallbackRequest(_Input):
    kind: ClassVar[str] = "callback-request"
    call: str
    number: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.callback_request(self.call, self.number, now)


@dataclass(frozen=True, slots=True)
class OfferAnswered(_Input):
    kind: ClassVar[str] = "offer-answered"
    call: str
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.offer_answered(self.call, self.agent, now)


@dataclass(frozen=True, slots=True)
class OfferRejected(_Input):
    kind: ClassVar[str] = "offer-rejected"
    call: str
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.offer_rejected(self.call, self.agent, now)


@dataclass(frozen=True, slots=True)
class OfferTimeout(_Input):
    kind: ClassVar[str] = "offer-timeout"
    call: str
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.offer_timeout(self.call, self.agent, now)


@dataclass(frozen=True, slots=True)
class CallCompleted(_Input):
    kind: ClassVar[str] = "call-completed"
    call: str
    agent: str
    now: float
    reason: str = "agent"

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.call_completed(self.call, self.agent, now, reason=self.reason)


@dataclass(frozen=True, slots=True)
class CallTransferred(_Input):
    kind: ClassVar[str] = "call-transferred"
    call: str
    agent: str
    destination: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.call_transferred(self.call, self.agent, self.destination, now)


@dataclass(frozen=True, slots=True)
class AddAgent(_Input):
    kind: ClassVar[str] = "add-agent"
    agent: AgentConfig
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.add_agent(self.agent, now)


@dataclass(frozen=True, slots=True)
class UpdateAgent(_Input):
    kind: ClassVar[str] = "update-agent"
    agent: AgentConfig
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.update_agent(self.agent)


@dataclass(frozen=True, slots=True)
class RemoveAgent(_Input):
    kind: ClassVar[str] = "remove-agent"
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.remove_agent(self.agent, now)


@dataclass(frozen=True, slots=True)
class SetMember(_Input):
    kind: ClassVar[str] = "set-member"
    queue: str
    agent: str
    penalty: int
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.set_member(self.queue, self.agent, self.penalty, now)


@dataclass(frozen=True, slots=True)
class RemoveMember(_Input):
    kind: ClassVar[str] = "remove-member"
    queue: str
    agent: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> bool:
        return engine.remove_member(self.queue, self.agent, now)


@dataclass(frozen=True, slots=True)
class AddQueue(_Input):
    kind: ClassVar[str] = "add-queue"
    config: QueueConfig
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.add_queue(self.config, now)


@dataclass(frozen=True, slots=True)
class UpdateQueue(_Input):
    kind: ClassVar[str] = "update-queue"
    config: QueueConfig
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.update_queue(self.config, now)


@dataclass(frozen=True, slots=True)
class RemoveQueue(_Input):
    kind: ClassVar[str] = "remove-queue"
    queue: str
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.remove_queue(self.queue, now)


@dataclass(frozen=True, slots=True)
class Tick(_Input):
    """A timer fell due at the owner: fire every timer due at or before `now`."""

    kind: ClassVar[str] = "tick"
    now: float

    def apply(self, engine: AcdEngine, now: float) -> None:
        engine.handle_timer(now)


Input = (
    AgentLogin
    | AgentLogout
    | ForceLogout
    | AgentPause
    | ForcePause
    | AgentUnpause
    | AgentReady
    | CallerEnter
    | CallerAbandon
    | CallbackRequest
    | OfferAnswered
    | OfferRejected
    | OfferTimeout
    | CallCompleted
    | CallTransferred
    | AddAgent
    | UpdateAgent
    | RemoveAgent
    | SetMember
    | RemoveMember
    | AddQueue
    | UpdateQueue
    | RemoveQueue
    | Tick
)
INPUT_TYPES: Final[dict[str, type[_Input]]] = {
    cls.kind: cls for cls in typing.get_args(Input) if issubclass(cls, _Input)
}


def input_from_dict(data: object) -> Input:
    """The input `data` describes (``kind`` plus that input's fields); `ReplicaError` when any
    field is missing, unknown or of the wrong type."""
    if not isinstance(data, dict):
        raise ReplicaError(f"input: expected an object, got {_type_name(data)}")
    kind = data.get("kind")
    cls = INPUT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ReplicaError(f"input.kind: {kind!r} is not a known input")
    result: Input = _decode_dataclass(cls, data, f"input({kind})", skip=("kind",))
    return result


# -- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refused:
    """The input `kind` was refused by the engine (misuse, or a False result: an answer for an
    offer that is no longer ringing, say); the node that sent it undoes what it started."""

    kind: str
    call_id: str
    agent: str
    reason: str


Output = Event | Joined | Overflowed | Refused
_OUTPUT_TYPES: Final[dict[str, type]] = {
    "offer": OfferCall,
    "callback-dial": CallbackDial,
    "cancel-offer": CancelOffer,
    "overflow": Overflow,
    "announce": Announce,
    "agent-state": AgentStateChanged,
    "log": QueueLogEntry,
    "joined": Joined,
    "overflowed": Overflowed,
    "refused": Refused,
}
_OUTPUT_NAMES: Final = {cls: name for name, cls in _OUTPUT_TYPES.items()}


def entry_key(entry_id: str) -> tuple[int, int]:
    """A Redis Stream id (``"<ms>-<seq>"``) as a comparable pair; `ReplicaError` when malformed."""
    ms, sep, seq = entry_id.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit()):
        raise ReplicaError(f"entry id {entry_id!r} is not <ms>-<seq>")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True)
class Decision:
    """One engine output, tagged with the owner's epoch, the input's entry id and its rank."""

    epoch: int
    entry_id: str
    seq: int
    output: Output

    @property
    def key(self) -> tuple[int, tuple[int, int], int]:
        return self.epoch, entry_key(self.entry_id), self.seq

    @property
    def call_id(self) -> str:
        return str(getattr(self.output, "call_id", ""))

    @property
    def agent(self) -> str:
        return str(getattr(self.output, "agent", ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "entry": self.entry_id,
            "seq": self.seq,
            "type": _OUTPUT_NAMES[type(self.output)],
            "output": _encode(self.output),
        }

    @classmethod
    def from_dict(cls, data: object) -> Decision:
        if not isinstance(data, dict):
            raise ReplicaError(f"decision: expected an object, got {_type_name(data)}")
        unknown = sorted(set(data) - {"epoch", "entry", "seq", "type", "output"})
        if unknown:
            raise ReplicaError(f"decision: unknown field {unknown[0]!r}")
        epoch = _decode(int, data.get("epoch"), "decision.epoch")
        seq = _decode(int, data.get("seq"), "decision.seq")
        entry_id = _decode(str, data.get("entry"), "decision.entry")
        entry_key(entry_id)
        name = data.get("type")
        kind = _OUTPUT_TYPES.get(name) if isinstance(name, str) else None
        if kind is None:
            raise ReplicaError(f"decision.type: {name!r} is not a known output")
        output = _decode_dataclass(kind, data.get("output"), f"decision.output({name})")
        return cls(epoch, entry_id, seq, output)


Source = tuple[str, int]
"""Who appended an input (a node's incarnation) and its own running count of inputs."""


# -- the owner's side -------------------------------------------------------------------------


class ReplicatedAcd:
    """The owner's engine, fed only in stream order; every output becomes a `Decision`.

    `config` and `seed` must be the same on every node (the adapter keeps them in Redis), so that
    any node's `rebuild` reproduces the engine; so must `stats_period` and `stats_retention`
    (the engine's statistics buckets and how long they are kept).
    """

    def __init__(
        self,
        config: AcdConfig,
        *,
        seed: int,
        epoch: int = 0,
        stats_period: float = 900.0,
        stats_retention: float | None = DEFAULT_RETENTION,
    ) -> None:
        self.config = config
        self.seed = seed
        self.epoch = epoch
        self.stats_period = stats_period
        self.stats_retention = stats_retention
        self.engine = self._fresh()
        self.last_entry: str | None = None
        self.applied = 0
        """Inputs applied (duplicates skipped are not counted)."""
        self.skipped = 0
        """Inputs skipped as retried duplicates of one already applied."""
        self._sources: dict[str, int] = {}
        self._agent_origin: dict[str, str] = {}
        self._call_origin: dict[str, str] = {}
        self._clock = -math.inf

    def _fresh(self) -> AcdEngine:
        return AcdEngine(
            self.config,
            rng=random.Random(self.seed),
            stats_period=self.stats_period,
            stats_retention=self.stats_retention,
        )

    def due(self) -> float | None:
        """When a `Tick` should next be written (the engine's next timer), or None."""
        return self.engine.get_timer()

    def apply(self, entry_id: str, item: Input, source: Source | None = None) -> list[Decision]:
        """Apply one input read at `entry_id` (strictly after the last one) and return what the
        engine decided, tagged with this owner's epoch.

        `source` (the sender and its own count of inputs) makes a retried append harmless: an
        input whose count is not above the last one applied from that sender is skipped.
        """
        key = entry_key(entry_id)
        if self.last_entry is not None and key <= entry_key(self.last_entry):
            raise ReplicaError(f"entry {entry_id} is not after {self.last_entry}")
        self.last_entry = entry_id
        if source is not None:
            sender, count = source
            if count <= self._sources.get(sender, -1):
                self.skipped += 1
                return []
            self._sources[sender] = count
        self.applied += 1
        engine = self.engine
        now = self._clock = max(self._clock, item.now)
        due = engine.get_timer()
        if due is not None and due <= now and not isinstance(item, Tick):
            engine.handle_timer(now)
        outputs: list[Output] = list(engine.events())
        try:
            result = item.apply(engine, now)
        except AcdUsageError as error:
            result = None
            outputs.extend(engine.events())
            outputs.append(Refused(item.kind, item.call_id, item.agent_name, str(error)))
        else:
            outputs.extend(engine.events())
            if source is not None and isinstance(item, AgentLogin):
                self._agent_origin[item.agent] = source[0]
            elif source is not None and isinstance(item, CallerEnter):
                self._call_origin[item.call] = source[0]
            if isinstance(result, Joined | Overflowed):
                outputs.append(result)
            elif result is False:
                reason = "not-applicable"
                outputs.append(Refused(item.kind, item.call_id, item.agent_name, reason))
        return [Decision(self.epoch, entry_id, i, out) for i, out in enumerate(outputs)]

    def agent_origin(self, agent: str) -> str | None:
        """The sender that logged `agent` in last (a node's incarnation), None when unknown."""
        return self._agent_origin.get(agent)

    def call_origin(self, call: str) -> str | None:
        """The sender that entered caller `call` (a node's incarnation), None when unknown."""
        return self._call_origin.get(call)

    def senders(self) -> set[str]:
        """The senders that logged in an agent still logged in or entered a caller still
        present (the nodes whose loss would leave something behind)."""
        self._prune()
        return set(self._agent_origin.values()) | set(self._call_origin.values())

    def _prune(self) -> None:
        engine = self.engine
        for agent in [a for a in self._agent_origin if not self._present_agent(a)]:
            del self._agent_origin[agent]
        for call in [c for c in self._call_origin if engine.call_state(c) is CallerState.GONE]:
            del self._call_origin[call]

    def _present_agent(self, agent: str) -> bool:
        try:
            return self.engine.agent_status(agent).state is not AgentState.LOGGED_OUT
        except AcdUsageError:
            return False

    def lost(self, sender: str, now: float) -> list[Input]:
        """The inputs that record the loss of the node `sender` (its process died): its callers
        abandon, its agents' calls end and its agents are logged out (by "node-lost")."""
        self._prune()
        items: list[Input] = []
        for call, origin in self._call_origin.items():
            if origin == sender:
                items.append(CallerAbandon(call, now))
        for agent, origin in self._agent_origin.items():
            if origin != sender:
                continue
            status = self.engine.agent_status(agent)
            if status.state is AgentState.ON_CALL and status.call_id:
                if self._call_origin.get(status.call_id) != sender:
                    items.append(CallCompleted(status.call_id, agent, now, reason="node-lost"))
            items.append(ForceLogout(agent, now, supervisor="node-lost"))
        return items

    def rebuild(
        self,
        entries: Iterable[tuple[str, Input] | tuple[str, Input, Source | None]],
        last_published: str | None,
        *,
        epoch: int | None = None,
        snapshot: object | None = None,
    ) -> list[Decision]:
        """Start from a fresh engine (or from `snapshot`, see `restore`) and replay `entries`
        in order; the decisions of entries up to `last_published` were published already and
        are dropped, the others are returned (to publish under the new epoch).

        From a snapshot, the entries up to its ``last_entry`` are skipped (they are in it): the
        stream may be read from anywhere before the entry after it. The decisions of the inputs
        the snapshot holds are not made again, so a snapshot must only be stored once they are
        all published."""
        start: tuple[int, int] | None = None
        if snapshot is None:
            self.engine = self._fresh()
            self.last_entry = None
            self.applied = self.skipped = 0
            self._sources = {}
            self._agent_origin = {}
            self._call_origin = {}
            self._clock = -math.inf
        else:
            self.restore(snapshot)
            start = entry_key(self.last_entry) if self.last_entry is not None else None
        if epoch is not None:
            self.epoch = epoch
        limit = entry_key(last_published) if last_published is not None else None
        pending: list[Decision] = []
        for entry in entries:
            entry_id, item = entry[0], entry[1]
            if start is not None and entry_key(entry_id) <= start:
                continue
            decisions = self.apply(entry_id, item, entry[2] if len(entry) == 3 else None)
            if limit is None or entry_key(entry_id) > limit:
                pending.extend(decisions)
        return pending

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that decides this replica's future decisions, as JSON-able data: the
        engine's state and configuration, the last entry applied, the senders' counts and the
        origins of agents and callers (for `lost`), the clock. Take it between two `apply`
        calls; `restore` (or `rebuild(..., snapshot=...)`) on any node gives a replica that
        decides exactly what this one would, input for input. The epoch is not in it."""
        return {
            "version": SNAPSHOT_VERSION,
            "seed": self.seed,
            "stats_period": self.stats_period,
            "last_entry": self.last_entry,
            "applied": self.applied,
            "skipped": self.skipped,
            "clock": self._clock if self._clock != -math.inf else None,
            "sources": dict(self._sources),
            "agent_origin": dict(self._agent_origin),
            "call_origin": dict(self._call_origin),
            "engine_config": config_to_dict(self.engine.config),
            "engine": engine_state(self.engine),
        }

    def restore(self, data: object, *, epoch: int | None = None) -> None:
        """Become the replica `data` (from `snapshot`) describes, under `epoch` if given.

        `data` is checked whole before anything changes: `ReplicaError` naming the field when
        it is malformed or inconsistent, of an unknown version, or taken with another seed or
        statistics period than this replica's."""
        if not isinstance(data, dict):
            raise ReplicaError(f"snapshot: expected an object, got {_type_name(data)}")
        version = data.get("version")
        if version != SNAPSHOT_VERSION or isinstance(version, bool):
            raise ReplicaError(
                f"snapshot.version: {version!r} is not a known version ({SNAPSHOT_VERSION})"
            )
        unknown = sorted(str(k) for k in set(data) - set(_SNAPSHOT_KEYS))
        if unknown:
            raise ReplicaError(f"snapshot: unknown field {unknown[0]!r}")
        missing = [key for key in _SNAPSHOT_KEYS if key not in data]
        if missing:
            raise ReplicaError(f"snapshot: missing field {missing[0]!r}")
        seed = _decode(int, data["seed"], "snapshot.seed")
        if seed != self.seed:
            raise ReplicaError(f"snapshot.seed: taken with seed {seed}, this ACD has {self.seed}")
        period = _decode(float, data["stats_period"], "snapshot.stats_period")
        if period != self.stats_period:
            raise ReplicaError(
                f"snapshot.stats_period: {period:g}, this ACD has {self.stats_period:g}"
            )
        last_entry = _decode(str | None, data["last_entry"], "snapshot.last_entry")
        if last_entry is not None:
            try:
                entry_key(last_entry)
            except ReplicaError as error:
                raise ReplicaError(f"snapshot.last_entry: {error}") from None
        applied = _decode(int, data["applied"], "snapshot.applied")
        skipped = _decode(int, data["skipped"], "snapshot.skipped")
        clock = _decode(float | None, data["clock"], "snapshot.clock")
        sources = _decode(dict[str, int], data["sources"], "snapshot.sources")
        agent_origin = _decode(dict[str, str], data["agent_origin"], "snapshot.agent_origin")
        call_origin = _decode(dict[str, str], data["call_origin"], "snapshot.call_origin")
        try:
            config = config_from_dict(data["engine_config"])
        except ReplicaError as error:
            raise ReplicaError(f"snapshot.engine_config: {error}") from None
        try:
            engine = engine_from_state(
                config,
                data["engine"],
                "snapshot.engine",
                stats_period=self.stats_period,
                stats_retention=self.stats_retention,
            )
        except SnapshotError as error:
            raise ReplicaError(str(error)) from None
        self.engine = engine
        self.last_entry = last_entry
        self.applied = applied
        self.skipped = skipped
        self._clock = clock if clock is not None else -math.inf
        self._sources = sources
        self._agent_origin = agent_origin
        self._call_origin = call_origin
        if epoch is not None:
            self.epoch = epoch


SNAPSHOT_VERSION: Final = 1
"""The format of `ReplicatedAcd.snapshot`; `restore` refuses any other."""
_SNAPSHOT_KEYS: Final = (
    "version",
    "seed",
    "stats_period",
    "last_entry",
    "applied",
    "skipped",
    "clock",
    "sources",
    "agent_origin",
    "call_origin",
    "engine_config",
    "engine",
)


# -- the nodes' side --------------------------------------------------------------------------


class DecisionFence:
    """Accepts a decision only from the newest epoch seen and only once.

    Decisions of one epoch arrive in ``(entry_id, seq)`` order, so remembering the last one
    accepted per epoch is enough to refuse duplicates; a newer epoch resets it.
    """

    def __init__(self) -> None:
        self.epoch = -1
        self._last: tuple[tuple[int, int], int] | None = None
        self.accepted = 0
        self.stale = 0
        self.duplicates = 0

    def accept(self, decision: Decision) -> bool:
        epoch, entry, seq = decision.key
        if epoch < self.epoch:
            self.stale += 1
            return False
        if epoch > self.epoch:
            self.epoch = epoch
            self._last = None
        position = (entry, seq)
        if self._last is not None and position <= self._last:
            self.duplicates += 1
            return False
        self._last = position
        self.accepted += 1
        return True


# -- invariants -------------------------------------------------------------------------------


def check_decisions(outputs: Iterable[object], strategies: Mapping[str, Strategy]) -> list[str]:
    """Violations, in the order seen, of the ACD's cluster-wide promises over a decision stream
    (`strategies`: each queue's strategy): an agent offered while ringing or on a call; a caller
    offered to a second agent outside ``ringall``; a caller offered for the first time while an
    earlier caller of the same queue and priority waits never offered."""
    violations: list[str] = []
    ringing: dict[str, str] = {}  # agent -> call
    offers: dict[str, set[str]] = {}  # call -> agents ringing
    talking: dict[str, str] = {}  # agent -> call
    waiting: dict[tuple[str, int], list[str]] = {}  # (queue, priority) -> callers never offered
    place: dict[str, tuple[str, int]] = {}

    def release(call: str, agent: str) -> None:
        if ringing.get(agent) == call:
            del ringing[agent]
        offers.get(call, set()).discard(agent)

    def leave(call: str) -> None:
        for agent in offers.pop(call, set()):
            ringing.pop(agent, None)
        where = place.pop(call, None)
        if where is not None and call in waiting[where]:
            waiting[where].remove(call)

    for out in outputs:
        if isinstance(out, OfferCall | CallbackDial):
            call, agent = out.call_id, out.agent
            if agent in ringing:
                violations.append(f"{agent} offered {call} while ringing for {ringing[agent]}")
            if agent in talking:
                violations.append(f"{agent} offered {call} while on call {talking[agent]}")
            current = offers.setdefault(call, set())
            if current and strategies.get(out.queue) is not Strategy.RINGALL:
                violations.append(f"{call} offered to {agent} while ringing {sorted(current)}")
            current.add(agent)
            ringing[agent] = call
            where = place.get(call)
            if where is not None and call in waiting[where]:
                ahead = waiting[where][: waiting[where].index(call)]
                if ahead:
                    violations.append(f"{call} offered before {ahead[0]} (queue {where[0]})")
                waiting[where].remove(call)
        elif isinstance(out, CancelOffer):
            release(out.call_id, out.agent)
        elif isinstance(out, QueueLogEntry):
            call, agent, event = out.call_id, out.agent, out.event
            if event is LogEvent.ENTER:
                leave(call)
                priority = out.data.get("priority", 0)
                where = (out.queue, int(priority))
                place[call] = where
                waiting.setdefault(where, []).append(call)
            elif event is LogEvent.NO_ANSWER:
                release(call, agent)
            elif event is LogEvent.ANSWER:
                release(call, agent)
                leave(call)
                talking[agent] = call
            elif event in (LogEvent.COMPLETE, LogEvent.TRANSFER):
                if talking.get(agent) == call:
                    del talking[agent]
            elif event in (
                LogEvent.ABANDON,
                LogEvent.OVERFLOW,
                LogEvent.EXIT_TIMEOUT,
                LogEvent.EXIT_EMPTY,
            ):
                leave(call)
    return violations
