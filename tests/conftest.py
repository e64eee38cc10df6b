"""The suite reads nothing beside the repository.

The tests carry their own fixtures: a file of a sibling directory (CI lays a copy of the
project's shared documents beside the clone) must never be what makes a test pass. An audit hook
(PEP 578) refuses every open, listing or scan of a path that lies beside the work tree, so that
such a read fails the test that makes it, in development and in CI alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_ROOT = str(ROOT) + os.sep
_BESIDE = str(ROOT.parent) + os.sep
_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


class OutsideRepositoryRead(PermissionError):
    """A test read a file beside the work tree instead of carrying the fixture itself."""


def outside_repository(path: object) -> bool:
    """True for a path that lies beside the work tree (in its parent, not under it)."""
    if isinstance(path, int) or path is None:
        return False
    try:
        text = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return False
    absolute = os.path.abspath(text)
    if not absolute.startswith(_BESIDE) and absolute + os.sep != _BESIDE:
        return False
    return not (absolute + os.sep).startswith(_ROOT)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _EVENTS and args and outside_repository(args[0]):
        raise OutsideRepositoryRead(f"the tests read {args[0]!r}, outside {ROOT}")


sys.addaudithook(_audit)
