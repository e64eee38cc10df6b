"""A call whose media stops is ended; a call whose media flows is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.harness import SCENARIOS, RunningServer, free_port, run_sipp, start_server
from tests.interop.pages import calls_over


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("omlmedia"), media_timeout=1.5)
    yield running
    assert running.stop() == 0, running.log()[-4000:]


def test_a_call_without_rtp_is_ended_after_the_media_timeout(
    server: RunningServer, tmp_path: Path
) -> None:
    result = run_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_wait_for_bye.xml"),
            f"127.0.0.1:{server.sip_port}",
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "1",
        ],
        tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.output + result.errors  # the BYE came from us
    log = server.log()
    assert "event=media-timeout" in log and "cause=media-timeout" in log
    assert calls_over(server)["calls"]["media_timeouts"] == 1


def test_a_call_with_flowing_rtp_outlives_the_media_timeout(
    server: RunningServer, tmp_path: Path
) -> None:
    before = server.status()["calls"]["media_timeouts"]
    result = run_sipp(
        [
            "-sn",
            "uac_pcap",
            f"127.0.0.1:{server.sip_port}",
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-mp",
            str(free_port(pair=True)),
            "-m",
            "1",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors  # sipp hung up, not us
    assert calls_over(server)["calls"]["media_timeouts"] == before
