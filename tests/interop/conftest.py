from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.harness import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One `omlmedia serve` per test module; it must stop cleanly (exit 0) at the end."""
    workdir = tmp_path_factory.mktemp("omlmedia")
    running = start_server(workdir)
    yield running
    returncode = running.stop()
    assert returncode == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]
