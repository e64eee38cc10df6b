"""Errors of the ACD engine.

Two families, as in h11: `QueueConfigError` for a configuration that cannot be loaded, and
`AcdUsageError` (with its subclasses) for a caller of `AcdEngine` that misused the API — an
unknown agent, queue or call id, or a transition the agent's state does not allow. Races that
the asyncio side cannot avoid (an answer arriving after the offer was cancelled) are not errors:
those methods return ``False`` instead.
"""

from __future__ import annotations


class QueueConfigError(ValueError):
    """The ACD configuration is invalid; `errors` lists every problem, each ``place: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid queue configuration")
        self.errors = list(errors)

    def __str__(self) -> str:
        return "invalid queue configuration:\n" + "\n".join(f"  {e}" for e in self.errors)


class AcdUsageError(Exception):
    """The engine was called in a way its state does not allow (a local error)."""


class UnknownAgentError(AcdUsageError, KeyError):
    """The agent is not in the configuration."""


class UnknownQueueError(AcdUsageError, KeyError):
    """The queue is not in the configuration."""


class DuplicateCallError(AcdUsageError):
    """A call id entered a queue while the engine already tracks a call with that id."""


class AgentStateError(AcdUsageError):
    """The agent's state does not allow this operation (e.g. pausing a logged-out agent)."""
