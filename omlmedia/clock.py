"""Time as the application's objects take it: a wall clock and a way to arm timers, both passed
to their constructors so that tests drive them with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["CallLater", "Timer", "loop_call_later"]


class Timer(Protocol):
    """An armed timer (`asyncio.TimerHandle`)."""

    def cancel(self) -> None: ...


CallLater = Callable[..., Timer]
"""`loop.call_later(delay, callback, *args)`: arms a timer, returns what cancels it."""


def loop_call_later(delay: float, callback: Callable[..., object], *args: object) -> Timer:
    """The running loop's `call_later`."""
    return asyncio.get_running_loop().call_later(delay, callback, *args)
