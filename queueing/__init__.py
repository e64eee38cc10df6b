"""ACD engine: queues, agents, strategies, wrap-up, overflow and statistics; sans-IO, no I/O.

`build_config()` validates the ``[agents]`` / ``[queues]`` TOML tables into an `AcdConfig`;
`AcdEngine` takes inputs with ``now`` and emits the events of `queueing.events`.
"""

from queueing.config import AcdConfig, build_config, validate
from queueing.engine import AcdEngine, CallerState
from queueing.exceptions import AcdUsageError, QueueConfigError
from queueing.stats import Statistics

__all__ = [
    "AcdConfig",
    "AcdEngine",
    "AcdUsageError",
    "CallerState",
    "QueueConfigError",
    "Statistics",
    "build_config",
    "validate",
]
