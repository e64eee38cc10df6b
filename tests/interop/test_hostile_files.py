"""What a running server writes is for its own user only (issue 12, low items): the data
directory is 0700 and every file in it (database, generated TLS key, recordings; the public
certificate aside) 0600, even when the directory existed before with wider permissions."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import harness
from omlmedia.cli import _private
from tests.interop.harness import RunningServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("omlmedia")
    data = workdir / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as an operator's mkdir would leave it
    try:
        running = harness.start_server(workdir)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def test_the_data_directory_and_its_files_are_the_server_s_only(server: RunningServer) -> None:
    data = server.workdir / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [path for path in data.rglob("*") if path.is_file()]
    assert any(path.name.endswith(".db") for path in files), files
    assert any(path.suffix == ".key" for path in files), files
    # The certificate is what every TLS peer receives anyway: it may stay readable.
    wide = {
        str(p): oct(stat.S_IMODE(p.stat().st_mode))
        for p in files
        if p.stat().st_mode & 0o077 and p.suffix != ".crt"
    }
    assert not wide, wide
    dirs = [path for path in data.rglob("*") if path.is_dir()]
    assert all(stat.S_IMODE(d.stat().st_mode) & 0o077 == 0 for d in dirs), dirs


def test_an_open_data_directory_of_ours_is_closed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    _private(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
