"""Offer/answer on one RTP leg (RFC 3264, SDES-SRTP per RFC 4568): the one place a leg of ours
answers an offer or takes the answer to our offer.

Theory of operation. Whatever the target (a service, a bridge, an agent's call, a queue, a
conference), a SIP leg follows the same three steps after offer/answer settles a stream: key the
leg (`SrtpSession.for_stream`, which keeps the context of a direction whose key did not change,
RFC 4568 §7.1.4), give it the payload formats (`leg_format`), and aim it at the peer's address.
`carry(leg, stream, codecs)` does them in that order and leaves the leg untouched when the keys are
unusable (ValueError). On top of it:

- `answer_offer(...)` is our answer to an offer on a leg keyed by `current`: any of `capabilities`,
  SDES keys from `session_crypto(current)` (its key first, then fresh ones), only usable offered
  keys accepted. It changes no leg: a target that must check more first (a bridge joins two legs)
  calls `carry` itself.
- `answer_on_leg(leg, offer, host, ...)` answers and carries in one go (a new leg, a re-INVITE).
- `apply_answer(leg, offer, answer, codecs)` reads the answer to our offer and carries its stream.

Errors are `ValueError`s: `SDPError` for a description that does not parse, `OfferAnswerError`
(status 488) when nothing fits, `UnsupportedCryptoError` for unusable keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from media.leg import RtpLeg, leg_format
from media.srtp import SrtpSession, is_usable, session_crypto
from omlmedia.services import CAPABILITIES
from sip.sdp import (
    DEFAULT_CAPABILITIES,
    Answer,
    Codec,
    MediaCapabilities,
    NegotiatedStream,
    OfferAnswerError,
    SessionDescription,
    negotiate,
    process_answer,
)

__all__ = ["SIP_CAPABILITIES", "answer_offer", "answer_on_leg", "apply_answer", "carry"]

SIP_CAPABILITIES = MediaCapabilities(
    tuple(c for c in DEFAULT_CAPABILITIES.codecs if c.encoding_name.lower() != "opus")
    + tuple(c for c in DEFAULT_CAPABILITIES.codecs if c.encoding_name.lower() == "opus"),
    rtcp_mux=False,
)
"""What a SIP leg of ours offers or answers when no target narrows it (the echo, a trunk's
benchmark): G.711 first (what PBXs expect), then G.722 and Opus; RTCP on its own port."""


def carry(
    leg: RtpLeg,
    stream: NegotiatedStream,
    codecs: Iterable[Codec],
    *,
    ptime: int | None = None,
    relatch: bool = False,
) -> None:
    """Put a negotiated `stream` on `leg`: its SRTP keys (or plain RTP), its payload formats
    (`codecs` are ours, `ptime` overrides the stream's) and the peer's address; `relatch` when a
    new peer takes the leg. Raises ValueError, before changing anything, for unusable keys."""
    leg.srtp = SrtpSession.for_stream(stream, leg.srtp)
    leg.set_format(leg_format(stream, codecs, ptime), stream.rtcp_mux)
    leg.set_remote(
        stream.remote_address, stream.remote_port, stream.remote_rtcp_port, relatch=relatch
    )


def answer_offer(
    offer: SessionDescription,
    capabilities: MediaCapabilities,
    host: str,
    port: int,
    *,
    session_id: int,
    version: int = 0,
    current: object = None,
) -> Answer:
    """Our answer to `offer` from `host`:`port` (RFC 3264 §6) for a leg whose SRTP session is
    `current`: an SDES offer is answered with `session_crypto(current)` and only usable keys of
    the offer are taken. Raises `OfferAnswerError` (488) when nothing fits."""
    return negotiate(
        offer,
        capabilities,
        host,
        port,
        session_id=session_id,
        version=version,
        # Fresh SDES keys (random bytes, base64) only when a stream is SRTP: negotiate reads
        # them for RTP/SAVP(F) streams alone, and most offers are plain RTP.
        crypto=session_crypto(current) if any("SAVP" in m.proto for m in offer.media) else (),
        accept_crypto=is_usable,
    )


def answer_on_leg(
    leg: RtpLeg,
    offer: SessionDescription,
    host: str,
    *,
    session_id: int,
    version: int = 0,
    capabilities: MediaCapabilities = CAPABILITIES,
) -> Answer:
    """Answer `offer` for `leg` (any of `capabilities`, SDES-SRTP when offered) and carry the
    stream on the leg; a peer at a new address unlatches it. Raises `OfferAnswerError` (488) or
    ValueError (unusable keys)."""
    answer = answer_offer(
        offer,
        capabilities,
        host,
        leg.port,
        session_id=session_id,
        version=version,
        current=leg.srtp,
    )
    stream = answer.audio
    moved = leg.peer is None or leg.peer[0] != stream.remote_address
    carry(leg, stream, capabilities.codecs, relatch=moved)
    return answer


def apply_answer(
    leg: RtpLeg,
    offer: SessionDescription | bytes,
    answer: SessionDescription | bytes,
    codecs: Iterable[Codec],
) -> NegotiatedStream:
    """Read the peer's `answer` to our `offer` (RFC 3264 §7) and carry its first accepted stream
    on `leg`. Raises `SDPError`, `OfferAnswerError` (the answer does not fit or rejects every
    stream) or ValueError (unusable keys)."""
    if isinstance(offer, bytes):
        offer = SessionDescription.parse(offer)
    if isinstance(answer, bytes):
        answer = SessionDescription.parse(answer)
    stream = next((s for s in process_answer(offer, answer) if s is not None), None)
    if stream is None:
        raise OfferAnswerError("the answer rejects every stream")
    carry(leg, stream, codecs)
    return stream
