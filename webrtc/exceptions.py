"""Errors of the webrtc package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CommandError", "ConfigError", "LoginError", "ProtocolError"]


class ConfigError(ValueError):
    """A value of the ``[[agents]]`` or ``[webrtc]`` configuration is invalid; the message names
    the place (``agents[1].name: ...``)."""


class LoginError(Exception):
    """A login was refused. ``code`` is ``bad-credentials``, ``locked-out`` or ``busy`` (too many
    password checks at once); the message never says whether the account exists."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ProtocolError(ValueError):
    """The page broke the signalling protocol (remote error): the message is answered with
    ``{"type": "error", "code": code, "reason": reason}`` and changes nothing."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CommandError(Exception):
    """The server (``CallControl``) refused an agent command; sent to the page as an error,
    with `details` (short JSON values, such as the ``node`` that holds a call) beside the code
    and the reason."""

    def __init__(self, code: str, reason: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.details: Mapping[str, Any] = details or {}
