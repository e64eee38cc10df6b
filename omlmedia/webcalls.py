"""Web callers at the agent desk: a visitor of a ``/call/<target>`` page rings the agent the
target names (`webrtc.webcaller.WebCallControl`), as a SIP caller would; once answered, the
visitor's peer connection and the agent's channel are joined browser to browser (`Desk.answer`).
"""

from __future__ import annotations

import logging
import secrets

from omlmedia.desk import AgentCall, Desk
from omlmedia.logs import event
from queueing.events import AgentState
from webrtc.exceptions import CommandError
from webrtc.signaling import CallInfo
from webrtc.webcaller import WebCallerInfo

logger = logging.getLogger(__name__)

__all__ = ["WebCalls"]


class WebCalls(Desk):
    """The web callers' side of the desk (`webrtc.webcaller.WebCallControl`)."""

    async def web_call(self, target: str, caller: WebCallerInfo) -> str:
        """A website visitor calls `target`: ring the agent it names (as for a SIP caller)."""
        agent = self.resolve(target)
        if agent is None or self.state(agent) is not AgentState.READY:
            self.stats.refused += 1
            raise CommandError("unavailable", "nobody can take the call now")
        call_id = f"web-{secrets.token_hex(8)}"
        info = CallInfo(
            call_id=call_id,
            caller_number="web",
            caller_name=caller.name or "Web visitor",
            queue=target,
            direction="inbound",
            video=caller.video,
        )
        if not self.hub.offer_call(agent, info):
            self.stats.refused += 1
            raise CommandError("unavailable", "nobody can take the call now")
        ac = AgentCall(
            call_id=call_id,
            call=None,
            agent=agent,
            info=info,
            offered_at=self.clock(),
            web=caller.media,
        )
        self.calls[(call_id, agent)] = ac
        self._hold_engine(agent)
        self.stats.offered += 1
        ac.ring_timer = self.call_later(self.ring_timeout, self._ring_timeout, ac)
        self._set_state(agent, AgentState.RINGING)
        if self.web is not None:
            self.web.web_call_ringing(call_id)
        event(
            logger,
            "agent-offered",
            call_id=call_id,
            agent=agent,
            queue=target,
            source="web",
            video=caller.video,
        )
        return call_id

    async def web_hangup(self, call_id: str) -> None:
        """The visitor hung up or closed the page."""
        for ac in self._for_call(call_id):
            if ac.web is not None:
                self._finish(ac, "caller-hangup")

    async def web_dtmf(self, call_id: str, digit: str) -> None:
        """The visitor pressed a key: shown to the agent."""
        for ac in self._for_call(call_id):
            if ac.web is not None:
                self.hub.dtmf_received(ac.agent, call_id, digit)
