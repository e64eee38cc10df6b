"""The asyncio adapter around the sans-IO :class:`sip.ua.UserAgent`.

It feeds the core with what the transports receive and the loop's clock, sends what the core wants
sent, runs one re-armed ``loop.call_at`` timer for the core's next deadline, and hands the core's
events to the application callback. The application acts on calls through :meth:`SipService.act`,
which runs its function with ``now`` and then flushes, so that no action is ever left unsent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sip.endpoint import Endpoint
from sip.transport import SipTransports
from sip.ua import UAEvent, UserAgent

logger = logging.getLogger(__name__)


class SipService:
    """Binds a :class:`UserAgent` to :class:`SipTransports` and the event loop."""

    def __init__(
        self,
        ua: UserAgent,
        transports: SipTransports,
        on_event: Callable[[UAEvent], None],
    ) -> None:
        self.ua = ua
        self.transports = transports
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flushing = False
        self._idle: asyncio.Event | None = None
        transports.on_message = self._on_message
        transports.on_error = self._on_transport_error

    def now(self) -> float:
        """The clock every core in this process shares."""
        return self._loop.time()

    def act(self, action: Callable[[float], object]) -> None:
        """Run an application action on the core (it receives ``now``), then flush."""
        action(self._loop.time())
        self.flush()

    def flush(self) -> None:
        """Send what the core produced, deliver its events, re-arm the timer."""
        if self._flushing:
            return
        self._flushing = True
        try:
            ua = self.ua
            send = self.transports.send
            while True:
                datagrams = ua.datagrams_to_send()
                for data, destination in datagrams:
                    send(data, destination)
                event = ua.next_event()
                if event is None and not datagrams:
                    break
                while event is not None:
                    try:
                        self._on_event(event)
                    except Exception:
                        logger.exception("application failed on %s", type(event).__name__)
                    event = ua.next_event()
        finally:
            self._flushing = False
        self._arm()
        if self._idle is not None and self.ua.transactions.unsettled_count == 0:
            self._idle.set()

    async def wait_idle(self, within: float) -> bool:
        """Wait until every transaction is settled (BYEs answered at shutdown; those left only
        absorb retransmissions, see ``TransactionLayer.unsettled_count``); False on timeout."""
        if self.ua.transactions.unsettled_count == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True

    def close(self) -> None:
        """Stop the timer (the transports are closed by their owner)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None

    def _on_message(self, data: bytes, source: Endpoint) -> None:
        self.ua.receive(data, source, self._loop.time())
        self.flush()

    def _on_transport_error(self, destination: Endpoint) -> None:
        self.ua.transactions.transport_error(destination, self._loop.time())
        self.ua.handle_timer(self._loop.time())
        self.flush()

    def _arm(self) -> None:
        deadline = self.ua.get_timer()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.ua.handle_timer(self._loop.time())
        except Exception:
            logger.exception("timer handling failed")
        self.flush()
