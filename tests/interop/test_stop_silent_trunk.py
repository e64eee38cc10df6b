"""A trunk that never answers its OPTIONS pings does not hold up a graceful stop (issue 12, low
items): the ping's client transaction would live until Timer F (64*T1), and the stop used to
wait for it until its 5 s grace ran out. A UDP socket that reads and never answers plays the
silent peer (a closed port would answer with ICMP and end the transaction at once)."""

from __future__ import annotations

import socket
import time

import pytest

from benchmarks import harness
from omlmedia.server import SHUTDOWN_GRACE

SILENT_HOST = "127.0.0.1"


def test_stop_does_not_wait_for_an_unanswered_trunk_ping(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((SILENT_HOST, 0))
        silent.settimeout(15.0)
        port = silent.getsockname()[1]
        trunk = (
            f'[[trunks]]\nname = "silent"\nhost = "{SILENT_HOST}"\nport = {port}\n'
            'trusted_sources = ["192.0.2.99/32"]\nqualify_interval = 1.0\n\n'
        )
        try:
            server = harness.start_server(
                tmp_path_factory.mktemp("omlmedia"),
                t1=0.5,  # Timer F = 32 s: the ping outlives any grace
                edit_config=lambda text: text.replace("[[users]]", trunk + "[[users]]", 1),
            )
        except harness.ServerStartError as exc:
            pytest.fail(str(exc))
        try:
            data, _ = silent.recvfrom(65535)  # the first ping: now its transaction is live
            assert data.startswith(b"OPTIONS ")
            began = time.monotonic()
            assert server.stop() == 0, server.log()[-3000:]
            took = time.monotonic() - began
        finally:
            server.stop()
    # Not held until the grace ran out (what waiting for the ping's transaction did); a fixed
    # bound under it would be the machine's speed, not the stop's.
    assert took < SHUTDOWN_GRACE, f"the stop took {took:.1f} s:\n" + server.log()[-2000:]
    assert "Traceback" not in server.log()
