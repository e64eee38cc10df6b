"""sipp, a real SIP peer, against a running `omlmedia serve`."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.interop.harness import SCENARIOS, RunningServer, free_port, run_sipp
from tests.interop.pages import calls_over
from tests.interop.test_hostile_sip import wait_for_answer


def _target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.sip_port}"


def test_uac_500_calls_to_echo_all_succeed_and_leave_nothing_behind(
    server: RunningServer, tmp_path: Path
) -> None:
    result = run_sipp(
        [
            "-sn",
            "uac",
            _target(server),
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "500",
            "-r",
            "100",
            "-l",
            "100",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 500
    assert result.count("FailedCall") == 0
    status = server.wait_idle()
    assert status["sip"]["transactions"] == 0
    assert status["sip"]["dialogs"] == 0
    assert status["sip"]["calls"] == 0
    assert status["media"]["rtp_ports_in_use"] == 0
    # 500 calls x (INVITE, ACK, BYE) at least, all counted by the transport.
    assert status["transport"]["datagrams_in"] >= 1500
    assert status["sip"]["transaction_layer"]["timeouts"] == 0
    server.assert_alive()


def test_rtp_sent_to_echo_comes_back(server: RunningServer, tmp_path: Path) -> None:
    before = server.status()["calls"]["echo_packets"]
    result = run_sipp(
        [
            "-sn",
            "uac_pcap",
            _target(server),
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-mp",
            str(free_port(pair=True)),
            "-m",
            "2",
            "-r",
            "2",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 2
    calls_over(server)
    echoed = server.status()["calls"]["echo_packets"] - before
    # g711a.pcap carries 236 RTP packets, and dtmf_2833_1.pcap a few more: all come back.
    assert echoed >= 2 * 236, echoed


def test_uac_with_10_percent_loss_ends_every_call_and_drains_transactions(
    server: RunningServer, tmp_path: Path
) -> None:
    result = run_sipp(
        [
            "-sn",
            "uac",
            _target(server),
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "100",
            "-r",
            "20",
            "-lost",
            "10",
            "-recv_timeout",
            "20000",
        ],
        tmp_path,
        timeout=180,
    )
    finished = result.count("SuccessfulCall") + result.count("FailedCall")
    assert finished == 100, result.output + result.errors
    assert result.count("SuccessfulCall") >= 50
    status = server.wait_idle(timeout=30)
    assert status["sip"]["transactions"] == 0, status
    assert status["sip"]["dialogs"] == 0, status
    assert status["sip"]["calls"] == 0, status
    server.assert_alive()


def test_reinvite_hold_and_resume_are_answered(server: RunningServer, tmp_path: Path) -> None:
    result = run_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_hold_resume.xml"),
            _target(server),
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
    assert result.count("SuccessfulCall") == 3
    log = server.log()
    assert "event=session-modified" in log and "direction=recvonly" in log
    assert "direction=sendrecv" in log


def test_busy_and_reject_targets_answer_486_and_603(server: RunningServer, tmp_path: Path) -> None:
    for user, status in (("busy", "486"), ("reject", "603")):
        result = run_sipp(
            [
                "-sf",
                str(SCENARIOS / f"uac_expect_{status}.xml"),
                _target(server),
                "-s",
                user,
                "-i",
                "127.0.0.1",
                "-p",
                "0",
                "-m",
                "1",
            ],
            tmp_path,
            name=user,
        )
        assert result.returncode == 0, user + result.output + result.errors


def test_digest_authenticated_invite_from_untrusted_source_is_answered(
    server: RunningServer, tmp_path: Path
) -> None:
    result = run_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_auth.xml"),
            _target(server),
            "-s",
            "echo",
            "-i",
            "127.0.0.2",
            "-p",
            "0",
            "-m",
            "3",
            "-r",
            "3",
            "-au",
            "demo",
            "-ap",
            "interop-secret",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 3


def test_untrusted_source_with_wrong_password_gets_403_and_a_security_line(
    server: RunningServer, tmp_path: Path
) -> None:
    result = run_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_auth_forbidden.xml"),
            _target(server),
            "-s",
            "echo",
            "-i",
            "127.0.0.3",
            "-p",
            "0",
            "-m",
            "1",
            "-au",
            "nobody",
            "-ap",
            "guess",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert "SECURITY reason=auth-failed src=127.0.0.3" in server.log()


def test_calls_over_tcp_reuse_one_connection(server: RunningServer, tmp_path: Path) -> None:
    result = run_sipp(
        [
            "-sn",
            "uac",
            _target(server),
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-t",
            "t1",
            "-m",
            "50",
            "-r",
            "25",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 50
    calls_over(server)


def _options(branch: str) -> bytes:
    return (
        f"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{branch};rport\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:echo@127.0.0.1>\r\nFrom: <sip:scan@127.0.0.1>;tag=1\r\n"
        f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _status_of(sock: socket.socket) -> int | None:
    try:
        data, _ = sock.recvfrom(65535)
    except TimeoutError:
        return None
    return int(data[8:11])


def test_a_flooding_source_is_banned_while_trusted_trunks_are_served(
    server: RunningServer,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scanner:
        scanner.bind(("127.0.0.4", 0))
        scanner.settimeout(1.0)
        scanner.sendto(_options("scan-first"), ("127.0.0.1", server.sip_port))
        # An unknown source learns nothing but that it must authenticate.
        assert _status_of(scanner) == 401
        for i in range(300):
            scanner.sendto(_options(f"scan-{i}"), ("127.0.0.1", server.sip_port))
            if i % 20 == 0:
                time.sleep(0.002)
        # Banned: dropped silently. Answers to the burst may still be on their way (a loaded
        # server), so what is judged is an answer to this request, over a second (the server
        # answers in milliseconds), not any datagram.
        scanner.sendto(_options("scan-after"), ("127.0.0.1", server.sip_port))
        assert wait_for_answer(scanner, b"scan-after", timeout=1.0) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
        trunk.bind(("127.0.0.1", 0))
        trunk.settimeout(2.0)
        trunk.sendto(_options("trunk-ping"), ("127.0.0.1", server.sip_port))
        assert _status_of(trunk) == 200
    assert "SECURITY reason=rate-limit-ban src=127.0.0.4" in server.log()
    assert server.status()["sip"]["ua"]["rate_limited"] > 0
