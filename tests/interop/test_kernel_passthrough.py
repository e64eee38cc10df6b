"""The kernel path with a real server: `omlmedia serve` with ``[media] kernel_forwarding``,
sipp callers and a sipp PBX echoing RTP, all in a network namespace of the test's own (the
server's nftables table lives there and goes with it).

The existing passthrough interop scenarios run here with the fast path on: the media still
reaches the PBX and comes back, but through the kernel's rules, which the status API counts,
and the server leaves no rule behind when the calls end and when it stops.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from tests.interop.baresip import answerer, dial, dominant_frequency
from tests.interop.harness import (
    SCENARIOS,
    RunningServer,
    caller_to,
    echoing_pbx,
    free_port,
    pbx,
    pbx_on,
    pcap_caller,
    sipp_caller,
    start_sipp,
)
from tests.interop.test_bridge_media import wait_listening
from tests.media.netns import enter, in_ns, ip, require_kernel_tools

NS = f"okpi{os.getpid() % 100000}"


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    require_kernel_tools()
    ip("netns", "add", NS)
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        with enter(NS):
            yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10)


def with_kernel_forwarding(text: str) -> str:
    assert "[media]\n" in text
    return text.replace("[media]\n", "[media]\nkernel_forwarding = true\n", 1)


@pytest.fixture(scope="module")
def server(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    try:
        running = harness.start_server(
            tmp_path_factory.mktemp("kernel-server"), edit_config=with_kernel_forwarding
        )
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        yield running
    finally:
        running.stop()


def kernel_status(server: RunningServer) -> dict[str, Any]:
    status = server.status()["media"]["kernel"]
    assert isinstance(status, dict)
    return status


def tables(namespace: str) -> str:
    return in_ns(namespace, "nft", "list", "tables").stdout


def test_the_server_says_the_kernel_path_is_active(server: RunningServer, namespace: str) -> None:
    assert "kernel forwarding is active" in server.log()
    assert f"omlmedia_{server.sip_port}" in tables(namespace)
    assert kernel_status(server)["active"] is True


def test_bridged_rtp_to_an_echoing_pbx_goes_through_the_kernel(
    server: RunningServer, tmp_path: Path
) -> None:
    relayed_before = server.status()["calls"]["relayed_packets"]
    before = kernel_status(server)
    with pbx(server, tmp_path, echoing_pbx(), 2):
        result = sipp_caller(server, tmp_path, pcap_caller("91234", calls=2, rate=2))
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 2
    status = server.wait_idle()
    assert status["sip"]["calls"] == 0 and status["media"]["rtp_ports_in_use"] == 0
    kernel = status["media"]["kernel"]
    assert kernel["calls"] == 0  # both calls' rules are gone with the calls
    assert kernel["installed"] - before["installed"] == 2, (kernel, server.log()[-3000:])
    fallbacks = kernel["fallbacks"]
    assert fallbacks.get("hangup", 0) - before["fallbacks"].get("hangup", 0) == 2
    # Each call's 236-packet pcap reaches the PBX and its echo comes back (as without the
    # kernel path), every packet in the kernel: the rules went in at the answer, and sipp
    # sends from the addresses its SDP gave, so no packet reached the legs.
    relayed = status["calls"]["relayed_packets"] - relayed_before
    assert relayed >= 2 * 2 * 236 * 0.95, relayed
    moved = kernel["packets"] - before["packets"]
    assert moved == relayed, (moved, relayed, kernel)
    assert kernel["replaced"] == before["replaced"], kernel


def hold_resume_caller() -> list[str]:
    """A UAC to 91234 that plays the pcap, holds (music), resumes and plays it again."""
    scenario = str(SCENARIOS / "uac_pcap_hold_resume.xml")
    return ["-sf", scenario, "-s", "91234", "-mp", str(free_port(pair=True)), "-m", "1"]


def delta(after: dict[str, Any], before: dict[str, Any], reason: str) -> int:
    return int(after["fallbacks"].get(reason, 0)) - int(before["fallbacks"].get(reason, 0))


def test_hold_with_music_hands_the_call_back_to_userspace_for_the_rest_of_it(
    server: RunningServer, tmp_path: Path
) -> None:
    relayed_before = server.status()["calls"]["relayed_packets"]
    before = kernel_status(server)
    with pbx(server, tmp_path, echoing_pbx(), 1):
        result = sipp_caller(server, tmp_path, hold_resume_caller())
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 1
    status = server.wait_idle()
    kernel = status["media"]["kernel"]
    assert "hold=true" in server.log() and "hold=false" in server.log()
    # In the kernel before the hold; the music on hold then goes out on the stream the PBX
    # sees, so after the resume the relay rewrites the caller's packets to go on from it (the
    # kernel cannot): the call stays in userspace, and its hang-up has no rules to remove.
    assert kernel["installed"] - before["installed"] == 1, (kernel, server.log()[-3000:])
    assert delta(kernel, before, "hold") == 1, kernel
    assert delta(kernel, before, "hangup") == 0, kernel
    assert kernel["calls"] == 0
    moved = kernel["packets"] - before["packets"]
    relayed = status["calls"]["relayed_packets"] - relayed_before
    assert moved >= 2 * 150, kernel  # 5 s of 30 ms packets each way before the hold
    assert relayed - moved >= 2 * 150, (relayed, moved)  # as much after it, in userspace


def test_stopping_the_server_deletes_its_table(
    namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    try:
        running = harness.start_server(
            tmp_path_factory.mktemp("kernel-stop"), edit_config=with_kernel_forwarding
        )
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    table = f"omlmedia_{running.sip_port}"
    assert table in tables(namespace)
    assert running.stop() == 0
    assert table not in tables(namespace)


def test_a_killed_server_leaves_no_rule_behind_after_its_next_start(
    namespace: str, tmp_path: Path
) -> None:
    try:
        first = harness.start_server(tmp_path / "first", edit_config=with_kernel_forwarding)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    sip_port = first.sip_port
    table = f"omlmedia_{sip_port}"
    uas = start_sipp(pbx_on(first, echoing_pbx(), 1), tmp_path, "pbx")
    uac = start_sipp(caller_to(first, hold_resume_caller()), tmp_path, "caller")
    try:
        deadline = time.monotonic() + 20
        while kernel_status(first)["calls"] != 1:
            assert time.monotonic() < deadline, first.log()[-3000:]
            time.sleep(0.1)
        first.process.kill()  # kill -9: no chance to delete anything
        first.process.wait(timeout=10)
        left = in_ns(namespace, "nft", "list", "table", "inet", table).stdout
        assert "elements = {" in left, left  # the call's map elements
    finally:
        for process in (uac, uas):
            process.kill()
            process.wait(timeout=10)

    def same_sip_port(text: str) -> str:
        text = with_kernel_forwarding(text)
        return re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {sip_port}", text)

    try:
        second = harness.start_server(tmp_path / "second", edit_config=same_sip_port)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        listing = in_ns(namespace, "nft", "list", "table", "inet", table).stdout
        assert "pre_port4" in listing and "elements" not in listing, listing
    finally:
        assert second.stop() == 0
    assert table not in tables(namespace)


def test_each_side_hears_the_others_tone_with_the_kernel_relaying(
    server: RunningServer, tmp_path: Path
) -> None:
    """The baresip tone test of test_bridge_media with the fast path on: the audio is intact."""
    before = kernel_status(server)
    with answerer(
        tmp_path / "pbx", server.pbx_port, user="5550100", tone_hz=660.0, codecs="PCMU", seconds=20
    ) as callee:
        wait_listening(server.pbx_port)
        caller = dial(
            tmp_path / "caller",
            f"sip:95550100@127.0.0.1:{server.sip_port}",
            5,
            tone_hz=440.0,
            codecs="PCMU",
        )
    assert caller.established, caller.output[-3000:] + server.log()[-3000:]
    heard_by_caller, share = dominant_frequency(caller.decoded())
    assert abs(heard_by_caller - 660.0) < 5.0 and share > 0.3, (heard_by_caller, share)
    heard_by_callee, share = dominant_frequency(callee.decoded())
    assert abs(heard_by_callee - 440.0) < 5.0 and share > 0.3, (heard_by_callee, share)
    kernel = server.wait_idle()["media"]["kernel"]
    assert kernel["installed"] - before["installed"] == 1, kernel
    # About 5 s of 20 ms packets each way, nearly all of them moved by the kernel.
    assert kernel["packets"] - before["packets"] >= 400, kernel


def test_media_timeout_counts_the_packets_the_kernel_moves(namespace: str, tmp_path: Path) -> None:
    """With a 2 s media timeout, a 7 s call whose RTP the kernel moves is not ended: the sweep
    reads the rules' counters (the legs themselves see nothing after the first packets)."""
    try:
        short = harness.start_server(
            tmp_path / "server", media_timeout=2.0, edit_config=with_kernel_forwarding
        )
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        with pbx(short, tmp_path, echoing_pbx(), 1):
            result = sipp_caller(short, tmp_path, pcap_caller("91234"))
        assert result.returncode == 0, result.output + result.errors + short.log()[-3000:]
        assert result.count("SuccessfulCall") == 1
        status = short.wait_idle()
        assert status["calls"]["media_timeouts"] == 0
        kernel = status["media"]["kernel"]
        assert kernel["installed"] == 1 and kernel["packets"] >= 2 * 200, kernel
        assert "media-timeout" not in short.log()
    finally:
        short.stop()
