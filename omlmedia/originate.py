"""Click-to-call: an integration (a CRM) asks the server to call a number for an agent.

`Originate.originate` rings the agent's page with the number (``direction`` ``outbound``,
``caller_name`` "Click-to-call"); when the agent answers, the desk dials the number through the
trunk given (the campaign's, or the default one) as it dials a callback, and joins the far end
to the agent's channel when it answers. The agent must be logged in and Ready; while the call
rings the page and goes on, the ACD offers the agent nothing (the engine holds it paused, as for
any call outside the queues).

Each step is published as a ``call.click_to_call`` event with the call's id (the one the API
returned at once): ``stage`` ``ringing-agent``, ``dialing``, ``answered``, then ``ended``, or
``failed`` with its ``reason`` (``no-answer``: the agent did not answer within the ring
timeout; ``declined``; ``status-486``: the far end refused; ``no-trunk``...).
"""

from __future__ import annotations

import logging
import secrets

from omlmedia.desk import DIALABLE, AgentCall, Desk
from omlmedia.logs import event
from queueing.events import AgentState
from webrtc.channel import AgentChannel
from webrtc.exceptions import CommandError
from webrtc.signaling import CallInfo

__all__ = ["CALL_CLICK_TO_CALL", "Originate"]

CALL_CLICK_TO_CALL = "call.click_to_call"
"""A click-to-call's progress (data: stage, number, trunk, reason)."""

logger = logging.getLogger(__name__)


class Originate(Desk):
    """Click-to-call on top of the desk's callbacks."""

    def originate(self, agent: str, number: str, *, trunk: str = "", campaign: str = "") -> str:
        """Ring `agent`'s page for a call to `number` through `trunk` (empty: the default
        trunk), shown as `campaign`'s; the call's id. Raises `CommandError` ``bad-number``,
        ``not-ready`` (the agent is not logged in and Ready) or ``no-page`` (its session waits
        for a page that dropped to reconnect: nobody would hear it ring)."""
        if not DIALABLE.fullmatch(number):
            raise CommandError("bad-number", "not a number or extension")
        if self.state(agent) is not AgentState.READY:
            raise CommandError("not-ready", f"the agent {agent} is not logged in and Ready")
        if not self.hub.connected(agent):
            raise CommandError("no-page", f"the page of {agent} is not connected now")
        call_id = f"c2c-{secrets.token_hex(8)}"
        info = CallInfo(
            call_id=call_id,
            caller_number=number,
            caller_name="Click-to-call",
            queue=campaign,
            direction="outbound",
        )
        if not self.hub.offer_call(agent, info):
            raise CommandError("no-page", f"the agent {agent} has no page open")
        ac = AgentCall(call_id=call_id, call=None, agent=agent, info=info, offered_at=self.clock())
        ac.callback, ac.trunk, ac.origin = number, trunk, "api"
        self.calls[(call_id, agent)] = ac
        self._hold_engine(agent)
        self.stats.offered += 1
        ac.ring_timer = self.call_later(self.ring_timeout, self._ring_timeout, ac)
        self._set_state(agent, AgentState.RINGING)
        event(logger, "click-to-call", call_id=call_id, agent=agent, number=number, trunk=trunk)
        self._progress(ac, "ringing-agent")
        return call_id

    def _progress(self, ac: AgentCall, stage: str, reason: str = "") -> None:
        self.events.publish(
            CALL_CLICK_TO_CALL,
            call_id=ac.call_id,
            queue="",
            campaign=ac.info.queue,
            agent=ac.agent,
            data={"stage": stage, "number": ac.callback, "trunk": ac.trunk, "reason": reason},
        )

    async def _dial_for(self, ac: AgentCall) -> None:
        try:
            await super()._dial_for(ac)
        except CommandError as exc:
            if ac.origin:
                self._end_call(ac, exc.code)
            raise
        if ac.origin:
            self._progress(ac, "dialing")

    def _join(self, ac: AgentCall, channel: AgentChannel) -> None:
        super()._join(ac, channel)
        if ac.origin:
            self._progress(ac, "answered")

    def _finish(self, ac: AgentCall, cause: str, *, settle: bool = True) -> None:
        known = self.calls.get((ac.call_id, ac.agent)) is ac
        super()._finish(ac, cause, settle=settle)
        if ac.origin and known:
            if ac.answered_at is None:
                self._progress(ac, "failed", cause)
            else:
                self._progress(ac, "ended", cause)
