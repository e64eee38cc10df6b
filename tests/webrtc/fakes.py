"""Fakes for the hub: a CallControl that records commands, connections, channels, a clock."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from queueing.events import AgentState
from webrtc.exceptions import CommandError
from webrtc.signaling import AgentHub, CallInfo


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class FakeCallControl:
    """Records every call as (method, args...); `refuse` makes the next command fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: CommandError | None = None
        self.hub: AgentHub | None = None
        """Told the state `set_agent_state` sets, as the server tells its hub."""
        self._ids = itertools.count(1)

    def _record(self, *entry: Any) -> None:
        self.calls.append(entry)
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def agent_logged_in(self, agent: str) -> None:
        self.calls.append(("agent_logged_in", agent))

    async def agent_gone(self, agent: str, reason: str) -> None:
        self.calls.append(("agent_gone", agent, reason))

    async def set_agent_state(self, agent: str, state: AgentState, reason: str | None) -> None:
        self._record("set_agent_state", agent, state, reason)
        if self.hub is not None:
            self.hub.state_changed(agent, state, reason)

    async def answer(self, agent: str, call_id: str) -> None:
        self._record("answer", agent, call_id)

    async def hangup(self, agent: str, call_id: str) -> None:
        self._record("hangup", agent, call_id)

    async def hold(self, agent: str, call_id: str) -> None:
        self._record("hold", agent, call_id)

    async def resume(self, agent: str, call_id: str) -> None:
        self._record("resume", agent, call_id)

    async def mute(self, agent: str, call_id: str, muted: bool) -> None:
        self._record("mute", agent, call_id, muted)

    async def set_recording(self, agent: str, call_id: str, paused: bool) -> None:
        self._record("set_recording", agent, call_id, paused)
        if self.hub is not None:
            self.hub.recording_changed(agent, call_id, "paused" if paused else "on")

    async def send_dtmf(self, agent: str, call_id: str, digit: str) -> None:
        self._record("send_dtmf", agent, call_id, digit)

    async def transfer_blind(self, agent: str, call_id: str, to: str) -> None:
        self._record("transfer_blind", agent, call_id, to)

    async def transfer_attended_consult(self, agent: str, call_id: str, to: str) -> CallInfo:
        self._record("transfer_attended_consult", agent, call_id, to)
        return CallInfo(f"consult-{next(self._ids)}", caller_number=to)

    async def transfer_attended_complete(self, agent: str, call_id: str) -> None:
        self._record("transfer_attended_complete", agent, call_id)

    async def transfer_attended_cancel(self, agent: str, call_id: str) -> None:
        self._record("transfer_attended_cancel", agent, call_id)

    async def dial(self, agent: str, number: str) -> CallInfo:
        self._record("dial", agent, number)
        return CallInfo(f"out-{next(self._ids)}", caller_number=number)

    async def set_disposition(self, agent: str, call_id: str, disposition: str, notes: str) -> None:
        self._record("set_disposition", agent, call_id, disposition, notes)


class FakeConnection:
    def __init__(self, source: str = "192.0.2.10", port: int = 40000) -> None:
        self._source, self._port = source, port
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    @property
    def source(self) -> str:
        return self._source

    @property
    def port(self) -> int:
        return self._port

    def send(self, message: Mapping[str, Any]) -> None:
        self.sent.append(dict(message))

    def close(self) -> None:
        self.closed = True

    def last(self) -> dict[str, Any]:
        return self.sent[-1]

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


class FakeChannel:
    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.offers: list[str] = []
        self.closed = False

    async def accept_offer(self, sdp: str) -> str:
        if "bad" in sdp:
            raise ValueError("offer cannot be answered: bad")
        self.offers.append(sdp)
        return "v=0\r\nanswer"

    async def close(self) -> None:
        self.closed = True


class FakeWebControl:
    """A WebCallControl that records calls; `on_call(target, caller, call_id)` may bridge."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: CommandError | None = None
        self.on_call: Any = None
        self._ids = itertools.count(1)

    async def web_call(self, target: str, caller: Any) -> str:
        self.calls.append(("web_call", target, caller.name, caller.address))
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error
        call_id = f"web-{next(self._ids)}"
        if self.on_call is not None:
            self.on_call(target, caller, call_id)
        return call_id

    async def web_hangup(self, call_id: str) -> None:
        self.calls.append(("web_hangup", call_id))

    async def web_dtmf(self, call_id: str, digit: str) -> None:
        self.calls.append(("web_dtmf", call_id, digit))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


class FakeWebMedia:
    """Stands in for webrtc.webcaller.WebCaller in hub tests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.video = False
        self.closed = False

    async def accept_offer(self, sdp: str) -> str:
        if "bad" in sdp:
            raise ValueError("offer cannot be answered: bad")
        self.video = "m=video" in sdp
        return "v=0\r\nweb-answer"

    async def close(self) -> None:
        self.closed = True


class FramePipe:
    """A sink feeding a source (20 ms frames), at most `depth` frames deep: bridges two media."""

    def __init__(self, depth: int = 3) -> None:
        from collections import deque

        self.frames: Any = deque(maxlen=depth)

    def sink(self, samples: Any) -> None:
        self.frames.append(samples)

    def source(self) -> Any:
        return self.frames.popleft() if self.frames else None
