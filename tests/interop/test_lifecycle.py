"""Starting and stopping `omlmedia serve` as an operator does."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.interop.harness import SCENARIOS, run_sipp, start_server


def test_sigterm_hangs_up_calls_in_progress_and_exits_zero(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    results = []
    caller = threading.Thread(
        target=lambda: results.append(
            run_sipp(
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
                    "3",
                    "-r",
                    "10",
                    "-l",
                    "3",
                ],
                tmp_path,
                timeout=60,
            )
        )
    )
    caller.start()
    try:
        # The three calls answered, not only offered: `sip.calls` counts a call from its
        # INVITE, and the echo of a fresh server (no RTP port pooled yet) answers only once
        # its ports are bound; a call still binding would get a 480 at the stop, not a BYE.
        deadline = time.monotonic() + 15
        while (status := server.status())["calls"]["answered"] < 3:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert (status["sip"]["calls"], status["calls"]["answered"]) == (3, 3), status
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()
        caller.join(timeout=60)
    assert results and results[0].returncode == 0, results and results[0].errors
    assert results[0].count("SuccessfulCall") == 3
    log = server.log()
    assert "event=stopping calls=3" in log and "event=stopped" in log
    assert "Traceback" not in log


def test_a_bad_configuration_exits_2_with_the_location_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[server]\nsip_port = 70000\n\n[[routes]]\nuser = "x"\ntarget = "trunk:nowhere"\n'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "omlmedia", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "server.sip_port" in completed.stderr and "routes[0]" in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    first = start_server(tmp_path / "first")
    try:
        config = (tmp_path / "first" / "omlmedia.toml").read_text()
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        (second_dir / "omlmedia.toml").write_text(config)
        completed = subprocess.run(
            [sys.executable, "-m", "omlmedia", "serve", "--config", "omlmedia.toml"],
            cwd=second_dir,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert completed.returncode == 2, completed.stdout + completed.stderr
        assert "cannot start" in completed.stdout + completed.stderr
        assert "Traceback" not in completed.stderr
    finally:
        assert first.stop() == 0


def test_listening_on_a_wildcard_advertises_a_reachable_address(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", extra_args=("--listen", "0.0.0.0"))
    try:
        result = run_sipp(
            [
                "-sn",
                "uac",
                f"127.0.0.1:{server.sip_port}",
                "-s",
                "echo",
                "-i",
                "127.0.0.1",
                "-p",
                "0",
                "-m",
                "3",
                "-r",
                "3",
            ],
            tmp_path,
        )
        assert result.returncode == 0, result.output + result.errors
        assert "0.0.0.0" not in server.log().split("omlmedia ready")[-1]
    finally:
        assert server.stop() == 0
