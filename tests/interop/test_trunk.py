"""Numbers starting with 9 go out through trunk `pbx` (a sipp UAS standing in for the PBX)."""

from __future__ import annotations

from pathlib import Path

from tests.interop.harness import (
    SCENARIOS,
    RunningServer,
    echoing_pbx,
    pbx,
    pcap_caller,
    sipp_caller,
)
from tests.interop.pages import calls_over

SHARED_SERVER = True
"""These tests share the session's server (tests/interop/conftest.py)."""


def test_call_to_9_number_is_bridged_to_the_pbx_and_rtp_is_relayed(
    server: RunningServer, tmp_path: Path
) -> None:
    before = server.status()["calls"]["relayed_packets"]
    with pbx(server, tmp_path, echoing_pbx(), 2):
        result = sipp_caller(server, tmp_path, pcap_caller("91234", calls=2, rate=2))
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 2
    status = calls_over(server, ports=True)
    relayed = status["calls"]["relayed_packets"] - before
    # Each call's 236-packet pcap reaches the PBX, which echoes it back through the relay.
    assert relayed >= 2 * 2 * 236 * 0.95, relayed
    assert "number=1234" in server.log()


def test_cancel_before_answer_reaches_the_pbx(server: RunningServer, tmp_path: Path) -> None:
    with pbx(server, tmp_path, ["-sf", str(SCENARIOS / "uas_ring_no_answer.xml")], 3):
        result = sipp_caller(
            server,
            tmp_path,
            ["-sf", str(SCENARIOS / "uac_cancel.xml"), "-s", "95555", "-m", "3", "-r", "3"],
        )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 3
    status = server.wait_idle()
    assert status["sip"]["calls"] == 0 and status["sip"]["transactions"] == 0


def test_pbx_busy_is_relayed_to_the_caller(server: RunningServer, tmp_path: Path) -> None:
    uas_busy = tmp_path / "uas_busy.xml"
    uas_busy.write_text(
        (SCENARIOS / "uas_ring_no_answer.xml")
        .read_text()
        .split('<recv request="CANCEL">')[0]
        .replace("180 Ringing", "486 Busy Here")
        + '  <recv request="ACK">\n  </recv>\n</scenario>\n'
    )
    with pbx(server, tmp_path, ["-sf", str(uas_busy)], 1):
        result = sipp_caller(
            server,
            tmp_path,
            ["-sf", str(SCENARIOS / "uac_expect_486.xml"), "-s", "96000", "-m", "1"],
        )
    assert result.returncode == 0, result.output + result.errors


def test_blind_transfer_by_the_pbx_reconnects_the_caller_to_the_new_extension(
    server: RunningServer, tmp_path: Path
) -> None:
    with pbx(server, tmp_path, ["-sf", str(SCENARIOS / "uas_transferor.xml")], 2):
        result = sipp_caller(
            server,
            tmp_path,
            ["-sf", str(SCENARIOS / "uac_long_call.xml"), "-s", "91000", "-m", "1"],
        )
    assert result.returncode == 0, result.output + result.errors
    log = server.log()
    assert "event=transfer-requested" in log and "event=transfer-completed" in log, log[-3000:]
    assert calls_over(server)["calls"]["transfers"] >= 1


def test_a_pbx_that_challenges_our_invite_gets_valid_digest_credentials(
    server: RunningServer, tmp_path: Path
) -> None:
    with pbx(server, tmp_path, ["-sf", str(SCENARIOS / "uas_challenge.xml")], 1):
        result = sipp_caller(
            server,
            tmp_path,
            ["-sf", str(SCENARIOS / "uac_long_call.xml"), "-s", "93000", "-m", "1"],
        )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 1
