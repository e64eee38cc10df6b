"""MediaBridge's transparent passthrough, the mode a kernel-path call relays in: the same bytes
whether the relay or the kernel moves them, and one stream for the far end across the switch."""

from __future__ import annotations

import itertools

from media.bridge import MediaBridge
from media.leg import LegFormat, RtpLeg
from media.rtcp import ReceiverReport, ReportBlock, SenderReport, serialize_compound
from tests.media.fakes import fake_pair, header, rtp
from tests.media.test_bridge import A_PEER, B_PEER, Clock, opus, pcmu, sent


def make(
    a_format: LegFormat | None = None, b_format: LegFormat | None = None
) -> tuple[MediaBridge, RtpLeg, RtpLeg, Clock, list[str]]:
    clock = Clock()
    a = RtpLeg(fake_pair(40000)[0], clock=clock)
    b = RtpLeg(fake_pair(40002)[0], clock=clock)
    a.set_format(a_format or pcmu())
    b.set_format(b_format or pcmu())
    a.set_remote(*A_PEER)
    b.set_remote(*B_PEER)
    bridge = MediaBridge(a, b)
    fired: list[str] = []
    bridge.on_latched = lambda: fired.append("latched")
    bridge.start(transparent=True)
    return bridge, a, b, clock, fired


def test_transparent_passthrough_sends_each_packet_unchanged_under_the_sources_ssrc() -> None:
    bridge, a, b, _, _ = make()
    assert bridge.transparent
    packet = rtp(1000, 8000, ssrc=0xAAAA, payload=b"\x11" * 160, marker=True)
    a.pair.rtp.datagram_received(packet, A_PEER)
    assert sent(b) == [packet]
    assert b.ssrc == 0xAAAA and b.sender.ssrc == 0xAAAA  # our RTCP speaks of that stream
    assert b.sender.packet_count == 1


def test_on_latched_fires_for_each_packet_relayed_once_the_target_has_an_address() -> None:
    _, a, b, _, fired = make()
    a.pair.rtp.datagram_received(rtp(1, 160, ssrc=1), A_PEER)
    # Leg B's peer has not sent yet, but its SDP gave an address: the rules may go in (the
    # owner installs them, or replaces them when the addresses changed, or does nothing).
    assert fired == ["latched"]
    b.pair.rtp.datagram_received(rtp(1, 160, ssrc=2), B_PEER)
    a.pair.rtp.datagram_received(rtp(2, 320, ssrc=1), A_PEER)
    assert fired == ["latched"] * 3


def test_on_latched_waits_for_a_target_whose_sdp_named_no_address() -> None:
    _, a, b, _, fired = make()
    b.set_remote("pbx.example.com", 4000)  # a host name: nothing is sent until it latches
    a.pair.rtp.datagram_received(rtp(1, 160, ssrc=1), A_PEER)
    assert fired == [] and sent(b) == []


def test_kernel_removal_rearms_and_the_next_rewritten_packet_continues_the_stream() -> None:
    bridge, a, b, clock, fired = make()
    b.pair.rtp.datagram_received(rtp(1, 160, ssrc=2), B_PEER)
    for i in range(3):
        clock.now += 0.02
        a.pair.rtp.datagram_received(rtp(100 + i, 1000 + 160 * i, ssrc=1), A_PEER)
    assert len(fired) == 4
    # The kernel relays 50 packets (seq 103..152) that the bridge never sees, then is removed.
    clock.now += 1.0
    bridge.kernel_removed(50, 0)
    # Back in userspace the same source continues: still transparent, and still armed.
    a.pair.rtp.datagram_received(rtp(153, 1000 + 160 * 53, ssrc=1), A_PEER)
    assert sent(b)[-1] == rtp(153, 1000 + 160 * 53, ssrc=1)
    assert len(fired) == 5
    # A transfer brings a new source: rewritten from now on, after the kernel's last packet.
    clock.now += 0.02
    a.set_remote("127.0.0.2", 30500, relatch=True)
    a.pair.rtp.datagram_received(rtp(9000, 5, ssrc=7), ("127.0.0.2", 30500))
    a.pair.rtp.datagram_received(rtp(9001, 165, ssrc=7), ("127.0.0.2", 30500))
    assert not bridge.transparent
    headers = [header(p) for p in sent(b)]
    assert {h[4] for h in headers} == {1}  # one SSRC for the far end throughout
    assert [h[2] for h in headers[-3:]] == [153, 154, 155]
    assert headers[-2][1] is True  # the marker announces the new source
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(h[2] for h in headers[-3:]))


def test_hold_mutes_a_transparent_bridge_and_resume_continues_the_same_source() -> None:
    bridge, a, b, _, _ = make()
    a.pair.rtp.datagram_received(rtp(10, 1600, ssrc=1), A_PEER)
    bridge.hold(a, True)
    a.pair.rtp.datagram_received(rtp(11, 1760, ssrc=1), A_PEER)
    bridge.hold(a, False)
    a.pair.rtp.datagram_received(rtp(12, 1920, ssrc=1), A_PEER)
    assert sent(b) == [rtp(10, 1600, ssrc=1), rtp(12, 1920, ssrc=1)]
    assert bridge.transparent and bridge.counters().muted == 1


def test_legs_with_different_payload_types_are_never_transparent() -> None:
    bridge, a, b, _, fired = make(pcmu(0, 101), pcmu(0, 96))
    assert not bridge.transparent
    a.pair.rtp.datagram_received(rtp(1, 160, ssrc=1), A_PEER)
    assert header(sent(b)[0])[4] == b.ssrc != 1
    assert fired == []


def test_a_renegotiation_that_needs_rewriting_ends_transparency_for_good() -> None:
    bridge, a, b, _, _ = make()
    a.pair.rtp.datagram_received(rtp(1, 160, ssrc=1), A_PEER)
    b.set_format(opus())
    a.set_format(opus())
    bridge.start(transparent=True)
    assert bridge.transparent  # the same codec and types on both legs: still the same bytes
    b.set_format(pcmu(0, 96))
    a.set_format(pcmu(0, 101))
    bridge.start(transparent=True)
    assert bridge.passthrough and not bridge.transparent
    b.set_format(pcmu())
    bridge.start(transparent=True)
    assert not bridge.transparent
    a.pair.rtp.datagram_received(rtp(2, 320, ssrc=1), A_PEER)
    # Rewritten from now on, yet the far end's stream goes on with no jump and no marker.
    assert header(sent(b)[-1]) == (0, False, 2, 320, 1)


def test_music_on_hold_ends_transparency_and_resume_continues_after_the_music() -> None:
    bridge, a, b, clock, fired = make()
    for i in range(3):
        clock.now += 0.02
        a.pair.rtp.datagram_received(rtp(100 + i, 1000 + 160 * i, ssrc=1), A_PEER)
    bridge.hold(a, True)
    bridge.leave_transparent()  # what BridgeMedia does when music starts on leg B
    for _ in range(5):  # the music, on our stream towards B
        clock.now += 0.02
        b.send(0, False, (b.timestamp + 160) & 0xFFFFFFFF, b"\x55" * 160)
    bridge.hold(a, False)
    clock.now += 0.02
    a.pair.rtp.datagram_received(rtp(103, 1000 + 160 * 3, ssrc=1), A_PEER)
    seqs = [header(p)[2] for p in sent(b)]
    assert seqs == list(range(100, 100 + 9))  # relay, music, relay: one run of numbers
    assert {header(p)[4] for p in sent(b)} == {1}
    assert not bridge.transparent
    assert len(fired) == 3  # the packets before the hold; none once the relay rewrites


def test_a_sources_sender_report_names_the_stream_the_kernel_relays_for_the_targets_reports() -> (
    None
):
    bridge, a, b, _, _ = make()
    # The kernel relays from the first packet: only the caller's RTCP reaches the legs.
    a_rtcp = (A_PEER[0], A_PEER[1] + 1)
    a.pair.rtcp.datagram_received(serialize_compound([SenderReport(0xAAAA)]), a_rtcp)
    assert b.ssrc == 0xAAAA and b.sender.ssrc == 0xAAAA and bridge.transparent
    # The callee's report about that stream is now about ours: its loss is on leg B's record.
    block = ReportBlock(0xAAAA, fraction_lost=64)
    b_rtcp = (B_PEER[0], B_PEER[1] + 1)
    b.pair.rtcp.datagram_received(serialize_compound([ReceiverReport(0xBBBB, (block,))]), b_rtcp)
    assert b.quality().remote_loss == 0.25
    # A later report names the same stream; the RTP that then reaches the relay continues it.
    a.pair.rtcp.datagram_received(serialize_compound([SenderReport(0xAAAA)]), a_rtcp)
    a.pair.rtp.datagram_received(rtp(7, 1120, ssrc=0xAAAA), A_PEER)
    assert sent(b) == [rtp(7, 1120, ssrc=0xAAAA)] and bridge.transparent


def test_a_sender_report_changes_nothing_once_the_relay_knows_the_stream() -> None:
    _, a, b, _, _ = make()
    a.pair.rtp.datagram_received(rtp(1, 160, ssrc=0x1111), A_PEER)
    a.pair.rtcp.datagram_received(
        serialize_compound([SenderReport(0x2222)]), (A_PEER[0], A_PEER[1] + 1)
    )
    assert b.ssrc == 0x1111
