"""benchmarks/kernel_sipp.py, the whole-system form of the kernel-path benchmark: its round-trip
matching on a capture, its Kamailio configuration checked by Kamailio itself, and a brief run of
both sides (omlmedia with the kernel path, Kamailio + rtpengine) at a few brief calls (2 s each,
their audio cut: about ten seconds per system, the window opening after one call length)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.kernel_sipp import (
    CALLEE,
    CALLER,
    KAMAILIO_CONFIG,
    SERVER,
    profile_split,
    require_tools,
    rtt_from_trace,
)
from tests.cluster import kamailio
from tests.media.netns import require_kernel_tools

ROOT = Path(__file__).resolve().parents[2]


def udp_frame(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """An Ethernet frame with an IPv4/UDP/RTP header (no checksums: the parser needs none)."""
    rtp = struct.pack(">BBHII", 0x80, 8, seq, 160 * seq, 0x1234) + b"\xd5" * 10
    udp = struct.pack(">HHHH", sport, dport, 8 + len(rtp), 0) + rtp
    ip = (
        struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0)
        + bytes(map(int, src.split(".")))
        + bytes(map(int, dst.split(".")))
    )
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def pcap(packets: list[tuple[float, bytes]]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for stamp, frame in packets:
        sec, usec = int(stamp), round((stamp - int(stamp)) * 1e6)
        out += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    return out


@pytest.mark.parametrize("shift", [0, 4242, 65530])
def test_round_trips_pair_each_sent_packet_with_its_echo_even_when_the_relay_renumbers(
    tmp_path: Path, shift: int
) -> None:
    packets = []
    for port, delay in ((40000, 0.000300), (40004, 0.001200)):
        for k in range(50):
            sent = 100.0 + k * 0.020
            seq = 1000 + k
            packets.append((sent, udp_frame(CALLER, SERVER, port, 20000, seq)))
            back = (seq + shift) & 0xFFFF
            packets.append((sent + delay, udp_frame(SERVER, CALLER, 20000, port, back)))
    packets.sort(key=lambda p: p[0])
    # One echo lost: it is simply missing, not matched to another packet.
    del packets[11]
    trace = tmp_path / "caller.pcap"
    trace.write_bytes(pcap(packets))
    rtts = rtt_from_trace(trace)
    near = [round(rtt / 100) * 100 for rtt in rtts]
    assert len(rtts) == 99 and all(abs(r - n) < 2 for r, n in zip(rtts, near, strict=True))
    assert sorted({near.count(300), near.count(1200)}) == [49, 50]


def test_an_empty_or_missing_capture_gives_no_round_trip(tmp_path: Path) -> None:
    assert rtt_from_trace(tmp_path / "none.pcap") == []
    (tmp_path / "empty.pcap").write_bytes(pcap([]))
    assert rtt_from_trace(tmp_path / "empty.pcap") == []


def test_a_profiles_split_gives_a_helpers_own_time_to_its_callers_parts() -> None:
    # pstats' table: (file, line, function) -> (calls, calls, own, cumulative, callers), each
    # caller's edge (calls, calls, own, cumulative).
    parse = ("/w/sip/message.py", 1, "parse_message")
    sdp = ("/w/sip/sdp.py", 1, "parse")
    helper = ("~", 0, "<method 'split' of 'str' objects>")
    imported = ("/w/omlmedia/server.py", 1, "<module>")
    table = {
        parse: (10, 10, 0.5, 2.0, {}),
        sdp: (10, 10, 0.2, 0.6, {}),
        helper: (30, 30, 1.2, 1.2, {parse: (20, 20, 0.9, 0.9), sdp: (10, 10, 0.3, 0.3)}),
        imported: (1, 1, 0.4, 0.4, {}),
    }
    parts = profile_split(table)
    assert parts["SIP parse and serialise"] == pytest.approx(0.5 + 0.9)
    assert parts["SDP"] == pytest.approx(0.2 + 0.3)
    assert parts["start-up (imports)"] == pytest.approx(0.4)
    assert sum(parts.values()) == pytest.approx(2.3)


def test_the_kamailio_proxy_configuration_passes_kamailios_own_check(tmp_path: Path) -> None:
    binary = kamailio.require()
    config = tmp_path / "kamailio.cfg"
    config.write_text(
        KAMAILIO_CONFIG.format(
            server="127.0.0.1", port=5060, ng_port=22222, callee=CALLEE, callee_port=5060
        )
    )
    result = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_brief_run_measures_both_sides_with_every_call_answered_and_no_loss() -> None:
    require_kernel_tools()
    missing = require_tools()
    if missing:
        message = f"{', '.join(missing)} missing: run make setup-test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    completed = subprocess.run(
        [sys.executable, "benchmarks/kernel_sipp.py", "--calls", "6", "--duration", "1.5",
         "--call-seconds", "2", "--targets", "omlmedia-kernel,kamailio+rtpengine"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,  # about 20 s when quiet; the machine is shared
        check=False,
    )  # fmt: skip
    out = completed.stdout
    assert completed.returncode == 0, out[-3000:] + completed.stderr[-3000:]
    rows = {
        m["system"]: m
        for m in re.finditer(
            r"^ +(?P<system>\S+) N=6 +(?P<ok>ok |BAD) calls (?P<good>\d+)/(?P<tried>\d+) "
            r"\((?P<failed>\d+) failed\) .* (?P<relayed>\d+) pkts relayed .*"
            r"\((?P<kernel>\d+) by the kernel over the step\)",
            out,
            re.M,
        )
    }
    assert set(rows) == {"omlmedia-kernel", "kamailio+rtpengine"}, out
    for row in rows.values():
        assert row["ok"] == "ok " and row["failed"] == "0", out
        assert row["good"] == row["tried"] and int(row["good"]) >= 6, out
        # RTP crossed the system both ways in the 1.5 s window (the calls' audio, echoed)
        assert int(row["relayed"]) >= 100, out
    assert int(rows["omlmedia-kernel"]["kernel"]) > 0, out
    assert int(rows["kamailio+rtpengine"]["kernel"]) == 0, out
    # the ratio (nan if Kamailio + rtpengine's processes spent under the CPU counters' 10 ms tick)
    ratio = r"(?:[\d.]+|nan)x"
    summary = rf"^  N=6: omlmedia-kernel \d+ = {ratio} \({ratio}\); kamailio"
    assert re.search(summary, out, re.M), out
