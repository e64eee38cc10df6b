"""benchmarks/pyspy_split.py: py-spy's raw stacks split by stage, entry and phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.pyspy_split import main, split, stage_of

ROOT = "thread (1): MainThread;Runner.run (asyncio/runners.py:118);uv_run (core.c:464)"
DATAGRAM = ROOT + ";_UdpProtocol.datagram_received (sip/transport.py:513)"
RAW = [
    # the loop waiting: idle, in no stage
    f"{ROOT};epoll_pwait (libc.so.6) 50",
    # a dataclass's __init__ under the SIP parser is SIP parse/build
    f"{DATAGRAM};parse_message (sip/message.py:10);__init__ (<string>:2) 10",
    # libnftables' netlink send under the kernel path is the kernel rules, in the set-up
    f"{DATAGRAM};B2bua.on_response (omlmedia/b2bua.py:305);KernelPath.install "
    "(media/kernelpath_nft.py:3);Nftables.run (media/kernelpath_nft.py:9);"
    "ffi_call (libffi.so.8);sendmsg (libc.so.6) 7",
    # a SIP datagram's send syscall
    f"{DATAGRAM};SipTransports.send (sip/transport.py:70);sendmsg (libc.so.6) 3",
    # json under the events' publish is the events, in the hang-up
    f"{DATAGRAM};B2bua._end_bridge (omlmedia/b2bua.py:496);EventLog.publish "
    "(omlmedia/events.py:520);dumps (json/__init__.py:238);encoder_call (_json.c) 4",
    # gc wherever it runs; the RTCP tick as its own entry and phase
    f"{ROOT};Upkeep._rtcp_tick (omlmedia/upkeep.py:5);RtpLeg.send_report "
    "(media/leg.py:7);gc_collect_main (libpython3.11.so) 2",
    # another thread: left out
    "thread (2): omlmedia-store_0;Store.flush (omlmedia/storage.py:1) 99",
    "",
    "not a stack line",
]


def test_samples_go_to_the_deepest_frame_naming_a_stage_and_sends_to_what_sent() -> None:
    result = split(RAW)
    assert (result.samples, result.idle, result.busy) == (76, 50, 26)
    assert result.stages == {
        "SIP message parse/build": 10,
        "kernel rules (libnftables, counters)": 7,
        "SIP send syscalls (the kernel's UDP path)": 3,
        "events (call.* publish, JSON, webhooks' hook)": 4,
        "gc": 2,
    }
    assert result.entries == {"a SIP datagram": 24, "the RTCP tick": 2}
    assert result.phases["set-up (INVITE in, dialled, answered, ACK)"] == 7
    assert result.phases["hang-up (BYE, the bridge's end)"] == 4
    assert result.phases["RTCP reports"] == 2
    assert result.functions["Nftables.run (media/kernelpath_nft.py)"] == 7
    assert result.functions["__init__ (<string>)"] == 10


def test_every_thread_when_none_is_named_and_stacks_without_thread_names() -> None:
    assert split(RAW, None).busy == 26 + 99
    bare = [line.split(";", 1)[1] for line in RAW if line.startswith("thread (1)")]
    assert split(bare).busy == 26
    assert stage_of(["x (libc.so.6)"]) == "other (C with no Python frame of ours)"


def test_the_command_prints_the_tables_in_ms_per_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "x.txt"
    raw.write_text("\n".join(RAW) + "\n")
    assert main([str(raw), "--ms-per-call", "2.6"]) == 0
    out = capsys.readouterr().out
    assert "76 samples, 50 idle, 26 busy" in out
    assert "| SIP message parse/build | 10 | 38.5 % | 1.00 |" in out
