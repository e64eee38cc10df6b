"""omlmedia.bridges: the codec choices of a B2BUA bridge, without sockets."""

from __future__ import annotations

import pytest

from media.bridge import codec_transcoder
from omlmedia.b2bua import TrunkOffers
from omlmedia.bridges import (
    TELEPHONE_EVENTS,
    Bridge,
    answer_preferring,
    caller_codecs,
    leg_codecs,
    offer_codecs,
)
from omlmedia.config import Trunk
from sip.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    MediaCapabilities,
    OfferAnswerError,
    create_offer,
)
from tests.omlmedia.deskfakes import inbound_call


def trunk(*codecs: str) -> Trunk:
    return Trunk(name="pbx", host="192.0.2.5", codecs=codecs)


def test_a_trunk_is_offered_the_callers_codecs_first_then_what_we_transcode_to() -> None:
    pbx = trunk("PCMA", "PCMU", "G722", "telephone-event")
    assert offer_codecs(pbx, (PCMU,), codec_transcoder) == (PCMU, PCMA, G722, *TELEPHONE_EVENTS)
    assert offer_codecs(pbx, (PCMU,), None) == (PCMU, *TELEPHONE_EVENTS)


def test_nothing_is_offered_when_no_codec_can_join_the_two_sides() -> None:
    assert offer_codecs(trunk("PCMA"), (G722,), None) == ()
    assert offer_codecs(trunk("PCMA"), (OPUS,), codec_transcoder) == (PCMA,)


def test_a_caller_may_use_the_other_legs_codec_or_any_we_transcode() -> None:
    assert caller_codecs(PCMA, None) == (PCMA, *TELEPHONE_EVENTS)
    accepted = caller_codecs(PCMA, codec_transcoder)
    assert accepted[0] == PCMA and PCMU in accepted and OPUS in accepted


def test_an_answer_prefers_the_other_legs_codec_then_falls_back_to_transcoding() -> None:
    offer = create_offer(MediaCapabilities((PCMU, PCMA)), 1, 1, "192.0.2.1", 4000)
    answer, _ = answer_preferring(offer, PCMA, "192.0.2.9", 20000, 7, 0, codec_transcoder)
    assert answer.audio.codec.encoding_name == "PCMA"
    answer, _ = answer_preferring(offer, G722, "192.0.2.9", 20000, 7, 0, codec_transcoder)
    assert answer.audio.codec.encoding_name == "PCMU"
    with pytest.raises(OfferAnswerError):
        answer_preferring(offer, G722, "192.0.2.9", 20000, 7, 0, None)


def test_a_new_party_on_a_leg_is_offered_its_codec_first() -> None:
    caller = inbound_call("9555")
    offer = create_offer(MediaCapabilities((PCMU,)), 1, 1, "192.0.2.1", 4000)
    bridge = Bridge(inbound=caller, trunk=trunk("PCMU"), number="555", offer=offer, session_id=1)
    bridge.chosen = (PCMU, TELEPHONE_EVENTS[0])
    assert leg_codecs(bridge, caller, trunk("PCMA", "PCMU"), codec_transcoder) == (
        PCMU,
        PCMA,
        *TELEPHONE_EVENTS,
    )
    assert leg_codecs(bridge, caller, None, None) == (PCMU, *TELEPHONE_EVENTS)


def test_a_trunks_offer_is_worked_out_once_per_trunk_codecs_and_callers_codecs() -> None:
    offers = TrunkOffers(codec_transcoder)
    pcma = (PCMA,)
    first = offers(trunk("PCMU", "PCMA"), pcma, 20)
    assert first is not None
    assert [c.encoding_name for c in first.codecs] == ["PCMA", "PCMU"]
    assert (first.ptime, first.rtcp_mux) == (20, False)
    # the same trunk codecs and caller's offer: the same value, not worked out again
    assert offers(trunk("PCMU", "PCMA"), pcma, 20) is first
    # a trunk with other codecs, or another ptime, is its own entry
    other = offers(trunk("PCMA"), pcma, 20)
    assert other is not None and [c.encoding_name for c in other.codecs] == ["PCMA"]
    assert offers(trunk("PCMU", "PCMA"), pcma, 30) not in (None, first)
    # nothing joins the two without transcoding: None (a 488), remembered as well
    alone = TrunkOffers(None)
    assert alone(trunk("PCMU"), pcma, 20) is None
    assert alone(trunk("PCMU"), pcma, 20) is None
    # bounded
    for ptime in range(TrunkOffers.LIMIT + 10):
        offers(trunk("PCMA"), pcma, ptime)
    assert len(offers._known) <= TrunkOffers.LIMIT
