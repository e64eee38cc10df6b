"""The built-in media targets of a route: ``echo``, ``moh``, ``record`` and ``dtmf``.

Theory of operation. `MediaTargets` is the owner (`omlmedia.targets.CallTarget`) of every call
routed to one of them. ``echo`` answers at once from a pooled port pair when one is free (else
after binding one) with an `RtpEcho`; the others bind a `MediaService` (`omlmedia.services`),
negotiate with its capabilities (SDES-SRTP when offered), start it and answer 200 OK. A call
cancelled while the sockets were bound is released, not answered. A re-INVITE or UPDATE is
answered from the same port (hold suspends the media-timeout watch); the end of the call stops
the media and counts its packets. DTMF by SIP INFO reaches a ``dtmf`` target's echo. A
``record`` call lasts at most ``media.max_record_duration`` seconds from its answer: then it is
ended with BYE, cause ``max-duration`` (in its ``call-ended`` line) and one ``recording-stopped``
line saying why, so one endless call cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from media.echo import RtpEcho
from media.leg import RtpLeg
from media.ports import PortsExhausted, RtpSocketPool
from media.srtp import is_usable
from omlmedia.clock import CallLater, Timer, loop_call_later
from omlmedia.config import Config, Route, RouteAction
from omlmedia.logs import event
from omlmedia.offer_answer import SIP_CAPABILITIES, answer_offer
from omlmedia.services import CAPABILITIES as SERVICE_CAPABILITIES
from omlmedia.services import DtmfEcho, MediaService, MusicOnHold, Recorder
from omlmedia.targets import Refusal, RouterStats, refuse
from omlmedia.upkeep import MediaWatch
from sip.message import Request, Response
from sip.sdp import (
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
    negotiate,
)
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

__all__ = ["CallMedia", "MediaTargets"]

logger = logging.getLogger(__name__)

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(eq=False)
class CallMedia:
    """What a media target keeps per call: the negotiated session and the media that runs it."""

    session_id: int
    version: int = 0
    echo: RtpEcho | None = None
    service: MediaService | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    watch: MediaWatch = field(default_factory=MediaWatch)
    deadline: Timer | None = field(default=None, repr=False)
    """The timer that ends a ``record`` call at its maximum duration."""

    @property
    def packets(self) -> int:
        """RTP packets received from the caller so far."""
        if self.echo is not None:
            return self.echo.packets
        if self.service is not None:
            return self.service.stats.received
        return 0


class MediaTargets:
    """Echo, music on hold, recording and DTMF echo: the owner of the calls routed to them."""

    def __init__(
        self,
        config: Config,
        service: SipService,
        pool: RtpSocketPool,
        media_host: str,
        stats: RouterStats,
        *,
        clock: Callable[[], float] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._call_later: CallLater = call_later or loop_call_later
        self.service = service
        self.pool = pool
        self.media_host = media_host
        """The address written in our SDP (c= and o=)."""
        self.stats = stats
        self._media: dict[int, CallMedia] = {}
        self._calls: dict[int, Call] = {}

    # -- taking a call -------------------------------------------------------------------------

    route_actions: tuple[RouteAction, ...] = (
        RouteAction.ECHO,
        RouteAction.MOH,
        RouteAction.RECORD,
        RouteAction.DTMF,
    )

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        """A route target (`omlmedia.targets.RouteTarget`): every call is taken."""
        self.take(call, route.action)
        return None

    def take(self, call: Call, action: RouteAction) -> None:
        """Own `call` and answer it with the target `action` names (echo, moh, record, dtmf)."""
        media = CallMedia(session_id=secrets.randbelow(2**31))
        call.app = self
        self._media[id(call)] = media
        self._calls[id(call)] = call
        if action is RouteAction.ECHO:
            self._start_echo(call, media)
            return
        media.task = asyncio.get_running_loop().create_task(
            self._answer_service(call, media, self._make_service(call, action))
        )

    def _refuse(
        self, call: Call, status: int, why: str, phrase: str | None = None, **fields: object
    ) -> None:
        refuse(self.service, call, status, why, phrase, **fields)

    def _start_echo(self, call: Call, media: CallMedia) -> None:
        """Answer `echo`: at once with a pooled port pair, or after binding a new one."""
        try:
            offer = SessionDescription.parse(call.remote_sdp) if call.remote_sdp else None
        except SDPError as exc:
            self._refuse(call, 400, str(exc), "Bad SDP")
            return
        expected = None
        if offer is not None:
            audio = next((m for m in offer.media if m.media == "audio"), None)
            connection = offer.stream_connection(audio) if audio is not None else None
            if connection is not None and not connection.is_unspecified:
                expected = connection.address
        echo = media.echo = RtpEcho(self.pool, expected)
        port = echo.start_now()
        if port is not None:
            self._answer_echo(call, media, offer, port)
        else:
            media.task = asyncio.get_running_loop().create_task(self._bind_echo(call, media, offer))

    async def _bind_echo(
        self, call: Call, media: CallMedia, offer: SessionDescription | None
    ) -> None:
        assert media.echo is not None
        try:
            port = await media.echo.start()
        except (PortsExhausted, OSError) as exc:
            media.echo = None
            self._refuse(call, 503, str(exc))
            return
        if call.state is not CallState.OFFERED:  # cancelled while the sockets were bound
            self._release(call)
            return
        self._answer_echo(call, media, offer, port)

    def _answer_echo(
        self, call: Call, media: CallMedia, offer: SessionDescription | None, port: int
    ) -> None:
        service = self.service
        try:
            if offer is not None:
                answer = negotiate(
                    offer,
                    SIP_CAPABILITIES,
                    self.media_host,
                    port,
                    session_id=media.session_id,
                    version=media.version,
                )
                body = bytes(answer.description)
            else:
                body = bytes(
                    create_offer(
                        SIP_CAPABILITIES, media.session_id, media.version, self.media_host, port
                    )
                )
        except OfferAnswerError:
            self._release(call)
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        event(
            logger,
            "call-answered",
            level=logging.DEBUG,
            call_id=call.call_id,
            target="echo",
            rtp_port=port,
        )
        self.stats.answered += 1
        service.act(lambda now: service.ua.answer(call, body, now))

    def _make_service(self, call: Call, action: RouteAction) -> MediaService:
        if action is RouteAction.MOH:
            return MusicOnHold(self.pool, self.media_host)
        if action is RouteAction.RECORD:
            path = self.recording_path(call)
            event(logger, "recording-started", call_id=call.call_id, path=str(path))
            return Recorder(
                self.pool, self.media_host, path, format=self.config.media.recording_format
            )

        def on_digit(digit: str, duration_ms: int) -> None:
            self.stats.dtmf += 1
            event(
                logger,
                "dtmf",
                call_id=call.call_id,
                digit=digit,
                via="rfc4733",
                duration_ms=duration_ms,
            )

        return DtmfEcho(self.pool, self.media_host, on_digit)

    def recording_path(self, call: Call) -> Path:
        """Where a call's recording goes: data_dir/recordings/YYYY/MM/DD/<time>-<call-id>.wav
        (or .opus, per media.recording_format)."""
        stamp = time.gmtime()
        safe_id = _UNSAFE_FILENAME.sub("_", call.call_id)[:80]
        directory = self.config.server.data_dir / "recordings" / time.strftime("%Y/%m/%d", stamp)
        directory.mkdir(parents=True, exist_ok=True)
        suffix = ".opus" if self.config.media.recording_format == "opus" else ".wav"
        return directory / f"{time.strftime('%H%M%S', stamp)}-{safe_id}{suffix}"

    async def _answer_service(self, call: Call, media: CallMedia, svc: MediaService) -> None:
        """Answer with a media service (moh, record, dtmf): bind, negotiate, start, 200 OK."""
        service = self.service
        try:
            offer = SessionDescription.parse(call.remote_sdp) if call.remote_sdp else None
        except SDPError as exc:
            self._refuse(call, 400, str(exc), "Bad SDP")
            return
        if offer is None:  # these services need the caller's offer (no late offer yet)
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        try:
            port = await svc.bind()
        except (PortsExhausted, OSError) as exc:
            self._refuse(call, 503, str(exc))
            return
        if call.state is not CallState.OFFERED:
            svc.stop()
            return
        media.service = svc
        try:
            answer = answer_offer(
                offer,
                SERVICE_CAPABILITIES,
                self.media_host,
                port,
                session_id=media.session_id,
                version=media.version,
                current=svc.srtp,
            )
            await svc.start(answer.audio)
        except OfferAnswerError:
            self._release(call)
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        if call.state is not CallState.OFFERED:
            self._release(call)
            return
        self.stats.answered += 1
        body = bytes(answer.description)
        service.act(lambda now: service.ua.answer(call, body, now))
        if isinstance(svc, Recorder):
            limit = self.config.media.max_record_duration
            start = self._now()
            media.deadline = self._call_later(limit, self._end_recording, call, start)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _end_recording(self, call: Call, start: float) -> None:
        """A ``record`` call reached ``media.max_record_duration``: BYE, cause ``max-duration``."""
        media = self._media.get(id(call))
        if media is None or call.state is CallState.ENDED:
            return
        media.deadline = None
        event(
            logger,
            "recording-stopped",
            level=logging.WARNING,
            call_id=call.call_id,
            reason="max-duration",
            seconds=round(self._now() - start, 1),
            limit=self.config.media.max_record_duration,
        )
        call.end_cause = "max-duration"
        service = self.service
        service.act(partial(service.ua.hangup, call))

    # -- the owner's events --------------------------------------------------------------------

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """Answer a re-INVITE or UPDATE (hold, resume, codec change) from the same port."""
        service = self.service
        media = self._media.get(id(call))
        if media is None or (media.echo is None and media.service is None):
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        if not request.body:
            service.act(lambda now: service.ua.respond(call, txn, 200, now))
            return
        try:
            offer = SessionDescription.parse(request.body)
            media.version += 1
            svc = media.service
            answer = negotiate(
                offer,
                SERVICE_CAPABILITIES if svc is not None else SIP_CAPABILITIES,
                self.media_host,
                svc.port if svc is not None else media.echo.port if media.echo else 0,
                session_id=media.session_id,
                version=media.version,
                crypto=svc.crypto() if svc is not None else (),
                accept_crypto=is_usable,
            )
            if svc is not None:
                svc.update(answer.audio)
        except (SDPError, OfferAnswerError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        media.watch.set_hold(offer.is_hold())
        direction = answer.audio.direction.value
        event(
            logger,
            "session-modified",
            call_id=call.call_id,
            method=request.method,
            direction=direction,
            hold=offer.is_hold(),
        )
        body = bytes(answer.description)
        service.act(lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp"))

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A digit by SIP INFO: a ``dtmf`` target plays it back."""
        media = self._media.get(id(call))
        if media is not None and isinstance(media.service, DtmfEcho):
            media.service.add_digit(digit)

    def on_ended(self, call: Call, cause: str) -> None:
        """Stop the call's media and give its ports back."""
        self._release(call)

    def on_response(self, call: Call, response: Response) -> None:
        """Nothing: these targets send no INVITE."""

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """Nothing: these targets send no REFER."""

    def _release(self, call: Call) -> None:
        self._calls.pop(id(call), None)
        media = self._media.pop(id(call), None)
        if media is None:
            return
        if media.deadline is not None:
            media.deadline.cancel()
            media.deadline = None
        if media.echo is not None:
            self.stats.echo_packets += media.echo.packets
            media.echo.stop()
            media.echo = None
        if media.service is not None:
            self.stats.service_packets += media.service.packets
            media.service.stop()
            media.service = None

    # -- upkeep --------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Calls holding media here."""
        return len(self._media)

    @property
    def legs(self) -> Iterator[RtpLeg]:
        """The services' legs (for RTCP reports; the echo sends none)."""
        for media in self._media.values():
            if media.service is not None:
                yield from media.service.legs

    def watched(self) -> Iterator[tuple[Call, MediaWatch, int]]:
        """Confirmed calls not on hold, for the media-timeout sweep."""
        for key, media in self._media.items():
            call = self._calls.get(key)
            if call is None or call.state is not CallState.CONFIRMED or media.watch.on_hold:
                continue
            yield call, media.watch, media.packets
