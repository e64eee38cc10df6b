"""Offer/answer on one leg: answering an offer and applying an answer key, format and aim it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from media.leg import RtpLeg
from media.srtp import SrtpSession, offer_crypto
from omlmedia.offer_answer import answer_offer, answer_on_leg, apply_answer, carry
from omlmedia.services import CAPABILITIES
from sip.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    CryptoAttribute,
    MediaCapabilities,
    OfferAnswerError,
    SessionDescription,
    create_offer,
    negotiate,
)
from tests.media.fakes import fake_pair

PEER = MediaCapabilities((PCMA, PCMU, TELEPHONE_EVENT), rtcp_mux=False)


def new_leg(port: int = 20000) -> RtpLeg:
    return RtpLeg(fake_pair(port)[0])


def peer_offer(
    address: str = "192.0.2.1", port: int = 4000, srtp: bool = False, version: int = 1
) -> SessionDescription:
    crypto = offer_crypto() if srtp else ()
    return create_offer(PEER, 7, version, address, port, crypto=crypto)


def test_answer_on_leg_sets_the_codec_address_and_plain_rtp() -> None:
    leg = new_leg()
    answer = answer_on_leg(leg, peer_offer(), "192.0.2.9", session_id=5)
    assert answer.audio.codec.encoding_name == "PCMA"
    assert answer.description.origin.session_id == 5
    assert leg.format is not None and leg.format.encoding_name == "PCMA"
    assert leg.format.event_send_type == TELEPHONE_EVENT.payload_type
    assert leg.peer == ("192.0.2.1", 4000)
    assert leg.srtp is None
    assert f"m=audio {leg.port} RTP/AVP" in bytes(answer.description).decode()


def test_answer_on_leg_keys_an_srtp_offer_and_keeps_the_key_on_a_reoffer() -> None:
    leg = new_leg()
    offer = peer_offer(srtp=True)
    answer_on_leg(leg, offer, "192.0.2.9", session_id=5)
    first = leg.srtp
    assert isinstance(first, SrtpSession)
    again = answer_on_leg(leg, peer_offer(srtp=True, version=2), "192.0.2.9", session_id=5)
    assert again.audio.local_crypto == first.local
    assert isinstance(leg.srtp, SrtpSession) and leg.srtp.local == first.local


def test_answer_on_leg_leaves_the_leg_alone_when_nothing_fits() -> None:
    leg = new_leg()
    g729 = Codec(18, "G729", 8000)
    offer = create_offer(MediaCapabilities((g729,)), 7, 1, "192.0.2.1", 4000)
    with pytest.raises(OfferAnswerError):
        answer_on_leg(leg, offer, "192.0.2.9", session_id=5)
    assert leg.format is None and leg.peer is None


def test_answer_offer_takes_only_usable_keys() -> None:
    bad = CryptoAttribute.inline(1, "F8_128_HMAC_SHA1_80", b"k" * 30)
    offer = create_offer(PEER, 7, 1, "192.0.2.1", 4000, crypto=(bad,))
    with pytest.raises(OfferAnswerError):
        answer_offer(offer, CAPABILITIES, "192.0.2.9", 20000, session_id=5)


def test_carry_refuses_unusable_keys_before_changing_the_leg() -> None:
    leg = new_leg()
    answer = answer_on_leg(leg, peer_offer(), "192.0.2.9", session_id=5)
    stream = answer.audio
    bad = CryptoAttribute.inline(1, "AES_CM_128_HMAC_SHA1_80", b"short")
    keyed = replace(stream, local_crypto=bad, remote_crypto=bad)
    before = leg.format
    with pytest.raises(ValueError):
        carry(leg, keyed, CAPABILITIES.codecs)
    assert leg.format is before and leg.srtp is None


def test_a_new_address_relatches_the_leg() -> None:
    leg = new_leg()
    answer_on_leg(leg, peer_offer(), "192.0.2.9", session_id=5)
    answer_on_leg(leg, peer_offer("198.51.100.7", 6000, version=2), "192.0.2.9", session_id=5)
    assert leg.peer == ("198.51.100.7", 6000)


def test_apply_answer_carries_the_peers_answer_to_our_offer() -> None:
    leg = new_leg()
    ours = create_offer(CAPABILITIES, 9, 0, "192.0.2.9", leg.port, crypto=offer_crypto())
    theirs = negotiate(
        ours,
        PEER,
        "192.0.2.1",
        4000,
        session_id=7,
        version=1,
        crypto=offer_crypto(),
    )
    stream = apply_answer(leg, bytes(ours), bytes(theirs.description), CAPABILITIES.codecs)
    assert stream.codec.encoding_name == "PCMU"
    assert leg.format is not None and leg.format.encoding_name == "PCMU"
    assert leg.peer == ("192.0.2.1", 4000)
    assert isinstance(leg.srtp, SrtpSession)
    assert leg.srtp.remote == theirs.audio.local_crypto


def test_apply_answer_refuses_an_answer_that_rejects_every_stream() -> None:
    leg = new_leg()
    ours = create_offer(CAPABILITIES, 9, 0, "192.0.2.9", leg.port)
    rejected = bytes(ours).replace(f"m=audio {leg.port} ".encode(), b"m=audio 0 ")
    with pytest.raises(ValueError):
        apply_answer(leg, ours, rejected, CAPABILITIES.codecs)
    assert leg.format is None
