"""Structured logging: one line per event, ``key=value`` (logfmt) or JSON.

`configure_logging()` installs one handler on the root logger. `event()` logs a named event with
fields; plain ``logger.info("text %s", x)`` calls still work and appear as ``msg="..."``.
Fields of the enclosing `log_context()` (``call_id``, ``leg``...) are added to every line logged
inside it, including from tasks started inside it (they inherit the contextvar).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Final, TextIO

from aiohttp.http_exceptions import HttpProcessingError

LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS: Final = ("kv", "json")
RESERVED: Final = frozenset({"ts", "level", "logger", "event", "msg", "exc", "stack"})

_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar("omlmedia_log_context", default=_EMPTY)
_NEEDS_QUOTES = re.compile(r'[\s"=\\\x00-\x1f\x7f]')
_EVENT_ATTR: Final = "omlmedia_event"
_FIELDS_ATTR: Final = "omlmedia_fields"
_CONTEXT_ATTR: Final = "omlmedia_context"
_HANDLER_ATTR: Final = "omlmedia_handler"


class LogConfigError(ValueError):
    """`configure_logging()` was given an unknown level or format."""


class LogContext:
    """Adds fields to every line logged while it is entered (a contextvar, so per task)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: Mapping[str, object]) -> None:
        self._fields = fields
        self._token: Token[Mapping[str, object]] | None = None

    def __enter__(self) -> Mapping[str, object]:
        merged = {**_context.get(), **self._fields}
        self._token = _context.set(merged)
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _context.reset(self._token)
            self._token = None


def log_context(**fields: object) -> LogContext:
    """``with log_context(call_id=..., leg="a"):`` adds these fields to the lines logged inside."""
    return LogContext(fields)


def current_context() -> Mapping[str, object]:
    """The fields of the enclosing `log_context()` blocks."""
    return _context.get()


def event(
    logger: logging.Logger, name: str, /, *, level: int = logging.INFO, **fields: object
) -> None:
    """Log the event `name` with `fields`; costs one level check when `level` is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={_EVENT_ATTR: name, _FIELDS_ATTR: fields}, stacklevel=2)


def kv_value(value: object) -> str:
    """A logfmt value: bare when safe, else double-quoted with JSON escapes."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
    elif kind is int or kind is float:
        return str(value)
    elif value is None:
        return "null"
    elif kind is bool:
        return "true" if value else "false"
    else:
        text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return _json_string(text)
    return text


_json_string = json.JSONEncoder(ensure_ascii=False).encode


class _ContextFilter(logging.Filter):
    """Captures the log context when the record is made (before any queue or thread hop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, _CONTEXT_ATTR):
            setattr(record, _CONTEXT_ATTR, _context.get())
        return True


class _PeerErrorFilter(logging.Filter):
    """An HTTP request that breaks the protocol is the peer's error, not ours: aiohttp logs it
    at error level with a traceback, so any client could fill the log with tracebacks. Such a
    record becomes one warning line (``event=http-bad-request``, the reason, no traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.name.startswith("aiohttp."):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            setattr(record, _EVENT_ATTR, "http-bad-request")
            setattr(record, _FIELDS_ATTR, {"status": exc.code, "reason": exc.message})
        return True


class StructuredFormatter(logging.Formatter):
    """Formats records as one ``key=value`` line, or one JSON object when `json_lines`."""

    def __init__(self, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        """The ordered fields of one line: ts, level, logger, event or msg, context, fields."""
        out: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name = getattr(record, _EVENT_ATTR, None)
        if name is not None:
            out["event"] = name
        else:
            out["msg"] = record.getMessage()
        context = getattr(record, _CONTEXT_ATTR, None)
        if context is None:
            context = _context.get()
        for key, value in context.items():
            out[key + "_" if key in RESERVED else key] = value
        for key, value in getattr(record, _FIELDS_ATTR, _EMPTY).items():
            out[key + "_" if key in RESERVED else key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out

    def format(self, record: logging.LogRecord) -> str:
        """One line, no embedded newlines."""
        fields = self.fields(record)
        if self.json_lines:
            return json.dumps(fields, ensure_ascii=False, default=str, separators=(",", ":"))
        return " ".join([f"{key}={kv_value(value)}" for key, value in fields.items()])


def parse_level(level: str | int) -> int:
    """A level name (``debug``...``critical``, any case) or number as a `logging` level."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.lower() in LEVELS:
        return LEVELS[level.lower()]
    raise LogConfigError("unknown log level")


def configure_logging(
    level: str | int = "info", fmt: str = "kv", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record at `level` and above to `stream` (stderr) as `fmt` lines.

    Calling it again replaces the handler it installed before; other handlers are left alone.
    """
    numeric = parse_level(level)
    if fmt not in FORMATS:
        raise LogConfigError("unknown log format")
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_ATTR, False):
            root.removeHandler(old)
            old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(StructuredFormatter(json_lines=fmt == "json"))
    handler.addFilter(_ContextFilter())
    handler.addFilter(_PeerErrorFilter())
    setattr(handler, _HANDLER_ATTR, True)
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
