from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.harness import RunningServer, start_server
from tests.interop.pages import calls_over


def _stopped_cleanly(running: RunningServer) -> None:
    returncode = running.stop()
    assert returncode == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One `omlmedia serve` (the test configuration) for the modules that set
    ``SHARED_SERVER = True``: their tests only place calls that end, check what their own calls
    did and leave nothing behind (no account, setting or ban), so a server started once for all
    of them proves the same as one each, for one start instead of one a module."""
    running = start_server(tmp_path_factory.mktemp("omlmedia-shared"))
    yield running
    _stopped_cleanly(running)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One `omlmedia serve` per test module (or the shared one, for a module that sets
    ``SHARED_SERVER = True``); it must stop cleanly (exit 0) at the end."""
    if getattr(request.module, "SHARED_SERVER", False):
        running: RunningServer = request.getfixturevalue("shared_server")
        start = len(running.log())
        yield running
        # What the module did is over and clean before the next module uses the server.
        running.assert_alive()
        calls_over(running)  # (not their transactions' timers: wait_idle waited those out too)
        assert "Traceback" not in running.log()[start:], running.log()[start:][-6000:]
        return
    workdir = tmp_path_factory.mktemp("omlmedia")
    running = start_server(workdir)
    yield running
    _stopped_cleanly(running)
