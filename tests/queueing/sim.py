"""Helpers for the ACD tests: build an engine from plain dicts and read its events."""

from __future__ import annotations

import random
from typing import Any, TypeVar

from queueing.config import build_config
from queueing.engine import AcdEngine
from queueing.events import Event, LogEvent, QueueLogEntry

T = TypeVar("T")


def make_engine(
    queues: dict[str, dict[str, Any]],
    agents: dict[str, dict[str, Any]] | list[str] | None = None,
    *,
    seed: int = 1,
    login: bool = True,
    now: float = 0.0,
) -> AcdEngine:
    """An engine over `queues`; agents default to every member named, all logged in at `now`."""
    if agents is None:
        names: list[str] = []
        for queue in queues.values():
            for member in queue.get("members", []):
                name = member if isinstance(member, str) else member["agent"]
                if name not in names:
                    names.append(name)
        agents = names
    if isinstance(agents, list):
        agents = {name: {} for name in agents}
    engine = AcdEngine(build_config({"agents": agents, "queues": queues}), rng=random.Random(seed))
    if login:
        for name in agents:
            engine.agent_login(name, now)
        engine.events()
    return engine


class Recorder:
    """Keeps every event drained from an engine, for assertions."""

    def __init__(self, engine: AcdEngine) -> None:
        self.engine = engine
        self.all: list[Event] = []

    def drain(self) -> list[Event]:
        events = self.engine.events()
        self.all.extend(events)
        return events

    def run_until(self, until: float) -> list[Event]:
        """Fire every timer due up to `until` and drain."""
        engine = self.engine
        while (when := engine.get_timer()) is not None and when <= until:
            engine.handle_timer(when)
        return self.drain()


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def log(events: list[Event], event: LogEvent | None = None) -> list[QueueLogEntry]:
    entries = of_type(events, QueueLogEntry)
    return [e for e in entries if event is None or e.event is event]
