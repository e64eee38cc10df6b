"""The agent desk: SIP and web calls delivered to browser agents through their open agent
channel, and the transfers agents make of them.

`AgentDesk` is the server side of the agent page (`webrtc.signaling.CallControl`) and of the
web-caller page (`webrtc.webcaller.WebCallControl`), made of three parts, each in its module:
the desk itself (`omlmedia.desk`: agents' states, offers, answer, hang-up, hold, the ACD's side),
consultations and transfers (`omlmedia.transfers`), web calls (`omlmedia.webcalls`) and
click-to-call (`omlmedia.originate`).
"""

from __future__ import annotations

from omlmedia.desk import AgentCall, DeskStats, JoinedCall
from omlmedia.originate import Originate
from omlmedia.transfers import Transfers
from omlmedia.webcalls import WebCalls

__all__ = ["AgentCall", "AgentDesk", "DeskStats", "JoinedCall"]


class AgentDesk(Originate, Transfers, WebCalls):
    """Agents' states and calls; the `CallControl` of the agent hub and the
    `WebCallControl` of the web callers."""
