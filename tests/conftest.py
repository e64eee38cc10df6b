"""The suite reads nothing beside the repository.

The tests carry their own fixtures: a file of a sibling directory (CI lays a copy of the
project's shared documents beside the clone) must never be what makes a test pass. An audit hook
(PEP 578) refuses every open, listing or scan of a path that lies beside the work tree, so that
such a read fails the test that makes it, in development and in CI alike.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_PARENT = str(ROOT.parent)
_SIBLINGS = frozenset(
    name
    for name in os.listdir(_PARENT)
    if name != ROOT.name and not name.startswith(f"pytest-of-{getpass.getuser()}")
)
"""What lay beside the work tree when the suite started (pytest's own temp root aside): a
directory that tests create later (a temp dir, when the tree itself lies in /tmp) stays usable."""
_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


class OutsideRepositoryRead(PermissionError):
    """A test read a file beside the work tree instead of carrying the fixture itself."""


def outside_repository(path: object, siblings: frozenset[str] | None = None) -> bool:
    """True for a path that lies beside the work tree: its parent, or under one of `siblings`
    (by default what lay beside the tree when the suite started)."""
    if isinstance(path, int) or path is None:
        return False
    try:
        text = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return False
    absolute = os.path.abspath(text)
    if absolute == _PARENT:
        return True
    head, sep, rest = absolute.partition(_PARENT + os.sep)
    if head or not sep:
        return False
    return rest.split(os.sep, 1)[0] in (_SIBLINGS if siblings is None else siblings)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _EVENTS and args and outside_repository(args[0]):
        raise OutsideRepositoryRead(f"the tests read {args[0]!r}, outside {ROOT}")


sys.addaudithook(_audit)
