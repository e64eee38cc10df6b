"""Web callers: a website visitor calls a target from ``/call/<target>``, no login.

Theory of operation. The page talks over the same ``/ws`` socket and protocol as the agent page
(`webrtc.signaling`), with the ``web-call`` message family; `AgentHub` hands those messages to
the `WebCallerHub`, which does no I/O of its own. A socket that carries a web call cannot log in
as an agent, and an agent's socket cannot place web calls.

- ``web-call-prepare`` (target) checks the target against the allow-list (``[webrtc]
  web_targets``) and returns the STUN/TURN servers the page must give its peer connection.
- ``web-call`` (target, offer SDP, optional name) makes a `WebCaller`, a fresh aiortc peer
  connection for this one call (not a long-lived channel), answers the offer (audio Opus, and
  VP8 video when the page sends it) and asks the server, `WebCallControl.web_call(target,
  caller)`, to place the call; the page gets the answer SDP and the ``call_id``, then
  ``web-call-state`` events (``ringing``, ``answered``, ``ended``) that the server pushes
  through `web_call_ringing`, `web_call_answered` and `web_call_ended`.
- ``web-call-hangup`` and ``web-call-dtmf`` go to `WebCallControl.web_hangup` / `web_dtmf`.
- A socket that closes hangs up its call (``web_hangup``; reason ``caller-gone``).

Abuse. Placing a call costs a peer connection, so ``web-call`` is rate-limited per source
(an IPv4 address, an IPv6 /64: `sip.transport.source_key`; `calls_per_minute`, sliding minute),
limited in concurrent calls per source (`calls_per_address`) and overall (`max_calls`). A call
counts from the moment it is admitted, before its offer is answered, so parallel ``web-call``
messages from many sockets of one source cannot all pass; the table of sources forgets those idle
for a minute and holds at most `MAX_SOURCES`. An unknown or not-allowed target gets the same
``unknown-target`` error whether it exists or not. Everything else follows the signalling
rules: a bad message gets an ``error`` and changes nothing.

Media. `WebCaller` is a `webrtc.channel.PeerMedia`: ``attach(source, sink)`` like an agent
channel (the same pre-encoded Opus send path and the same receive bypass), ``video_in`` the VP8
the visitor sends (a `webrtc.video.VideoRelay`) and ``attach_video(relay)`` to send the visitor
another peer's video. Between a web caller and an agent the server relays video without
transcoding: ``agent_channel.attach_video(web_caller.video_in)`` (and the other way round).
`join_audio` joins the audio of two peers (a web caller and an agent, or two agents in a
consultation) through two short frame queues, with no SIP leg and no transcoding in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from sip.transport import source_key
from webrtc.channel import PeerMedia
from webrtc.config import IceSource, ice_list
from webrtc.exceptions import CommandError, ProtocolError
from webrtc.signaling import PROTOCOL_VERSION, Connection, Message

logger = logging.getLogger(__name__)

__all__ = [
    "WebCallControl",
    "WebCaller",
    "WebCallerHub",
    "WebCallerInfo",
    "candidate_allowed",
    "join_audio",
    "trim_candidates",
]

Samples = npt.NDArray[np.int16]

MAX_SOURCES = 10000
"""Sources the web-call rate limiter remembers at most (the least recently seen go first)."""
_WINDOW = 60.0


def _always() -> bool:
    return True


def join_audio(
    first: PeerMedia,
    second: PeerMedia,
    *,
    first_talks: Callable[[], bool] = _always,
    second_talks: Callable[[], bool] = _always,
    depth: int = 3,
) -> None:
    """Join the audio of two peers: what one receives goes out to the other through a frame
    queue of at most `depth` 20 ms frames (60 ms by default: a late side loses the oldest
    frames, never builds a standing delay). `first_talks()` says whether what `first` sends
    crosses now (False: hold or mute, its frames are dropped and the other side hears
    silence); `second_talks()` the same for `second`. Both peers run at 48 kHz (Opus on both
    sides, nothing resampled); `detach()` either peer to end the join on its side."""
    to_first: deque[Samples] = deque(maxlen=depth)
    to_second: deque[Samples] = deque(maxlen=depth)

    def first_source() -> Samples | None:
        return to_first.popleft() if to_first and second_talks() else None

    def second_source() -> Samples | None:
        return to_second.popleft() if to_second and first_talks() else None

    def from_first(frame: Samples) -> None:
        if first_talks():
            to_second.append(frame)

    def from_second(frame: Samples) -> None:
        if second_talks():
            to_first.append(frame)

    first.attach(first_source, from_first)
    second.attach(second_source, from_second)


def _candidate_address(line: str) -> str | None:
    """The connection address of an ``a=candidate:`` line (RFC 8839 §5.1), None if malformed."""
    fields = line.split()
    return fields[4] if len(fields) >= 8 else None


def _candidate_type(line: str) -> str:
    fields = line.split()
    return fields[7] if len(fields) >= 8 and fields[6] == "typ" else ""


def candidate_allowed(address: str, advertised: str) -> bool:
    """Whether the server may send ICE checks to a visitor's candidate at `address`, given the
    address it advertises: never unspecified, multicast, link-local (cloud metadata at
    169.254.169.254 included) or reserved addresses; loopback only when the server advertises
    loopback; private (RFC 1918, RFC 6598, IPv6 ULA) and mDNS ``.local`` names only when it
    advertises a private or loopback address; global addresses always."""
    try:
        ours = ipaddress.ip_address(advertised)
    except ValueError:
        ours = None
    local_server = ours is not None and (ours.is_loopback or ours.is_private)
    if address.lower().endswith(".local"):
        return local_server
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return ours is not None and ours.is_loopback
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return False
    if ip.is_private or ip in _SHARED:
        return local_server
    return ip.is_global


_SHARED = ipaddress.ip_network("100.64.0.0/10")
"""RFC 6598 carrier-grade NAT space: private to a network, yet not `is_private`."""


def trim_candidates(sdp: str, keep: Callable[[str, str], bool]) -> tuple[str, int]:
    """`sdp` without the ``a=candidate:`` lines `keep(address, type)` refuses (type: ``host``,
    ``srflx``, ``prflx``, ``relay``); and how many went."""
    lines = sdp.split("\r\n")
    kept: list[str] = []
    dropped = 0
    for line in lines:
        if line.startswith("a=candidate:"):
            address = _candidate_address(line)
            if address is None or not keep(address, _candidate_type(line)):
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept), dropped


class WebCaller(PeerMedia):
    """The media of one web call: its own peer connection (audio, optional video).

    With `advertised` (the address the server gives peers), the visitor's offer loses every
    candidate `candidate_allowed` refuses before aiortc sees it, so a visitor cannot make the
    server send ICE checks to loopback, link-local (cloud metadata) or internal addresses; and
    the answer lists only the advertised address's host candidates (and relayed or reflexive
    ones), not every interface of the host."""

    kind = "web caller"

    def __init__(self, name: str, *, advertised: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        self.video = False
        """Whether the visitor's offer sends video."""
        self.advertised = advertised
        self.candidates_refused = 0
        """The visitor's candidates dropped from its offer."""

    async def accept_offer(self, sdp: str) -> str:
        advertised = self.advertised
        if advertised is not None:
            sdp, self.candidates_refused = trim_candidates(
                sdp, lambda address, _: candidate_allowed(address, advertised)
            )
            if self.candidates_refused:
                logger.info(
                    "web caller %s: %d candidate(s) refused", self.name, self.candidates_refused
                )
        answer = await super().accept_offer(sdp)
        if advertised is not None:
            trimmed, _ = trim_candidates(
                answer, lambda address, kind: address == advertised or kind in ("srflx", "relay")
            )
            if "a=candidate:" in trimmed:
                answer = trimmed
        pc = self.peer_connection
        self.video = pc is not None and any(
            t.kind == "video" and t.currentDirection in ("recvonly", "sendrecv")
            for t in pc.getTransceivers()
        )
        return answer


@dataclass(frozen=True, slots=True)
class WebCallerInfo:
    """Who is calling: `address` (source IP), `name` (what the visitor typed, may be empty),
    `video` (the visitor sends video), `media` (attach audio and video to it)."""

    address: str
    name: str
    video: bool
    media: WebCaller


class WebCallControl(Protocol):
    """What the server does for web callers. Raise `CommandError` to refuse."""

    async def web_call(self, target: str, caller: WebCallerInfo) -> str:
        """Place a call from the visitor to `target` (one of the allowed web targets: a queue,
        an agent target, a number); returns its call id. Ringing, answer and end are pushed
        with `WebCallerHub.web_call_ringing` / `web_call_answered` / `web_call_ended`."""
        ...

    async def web_hangup(self, call_id: str) -> None:
        """The visitor hung up (or closed the page)."""
        ...

    async def web_dtmf(self, call_id: str, digit: str) -> None:
        """The visitor pressed a key (send it on as RFC 4733 or show it to the agent)."""
        ...


MediaFactory = Callable[[str], WebCaller]


@dataclass(slots=True)
class _WebCall:
    call_id: str
    target: str
    conn: Connection
    media: WebCaller
    source: str = ""
    """The caller's source key (`sip.transport.source_key`), counted by the limiter."""
    state: str = "ringing"
    started: float = field(default_factory=time.monotonic)


class WebCallerHub:
    """The live web calls, keyed by call id (see the module docstring)."""

    def __init__(
        self,
        control: WebCallControl,
        targets: Iterable[str],
        *,
        ice_servers: IceSource = (),
        media_factory: MediaFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        calls_per_minute: int = 6,
        calls_per_address: int = 2,
        max_calls: int = 100,
    ) -> None:
        self.control = control
        self.targets = frozenset(targets)
        self._ice = ice_servers
        self.media_factory = media_factory or (lambda name: WebCaller(name))
        self.clock = clock
        self.calls_per_minute = calls_per_minute
        self.calls_per_address = calls_per_address
        self.max_calls = max_calls
        self.refused = 0
        self._calls: dict[str, _WebCall] = {}
        self._by_conn: dict[int, str] = {}
        self._owners: set[int] = set()
        self._attempts: dict[str, deque[float]] = {}
        """Admission times within the last minute, per source, least recently seen first."""
        self._live: dict[str, int] = {}
        """Calls admitted and not finished, per source (placing ones included)."""
        self._placing = 0
        self._placing_conns: set[int] = set()
        self._tasks: set[asyncio.Future[None]] = set()

    # --- queries ---

    def media(self, call_id: str) -> WebCaller | None:
        """The media of a live web call."""
        call = self._calls.get(call_id)
        return call.media if call is not None else None

    def calls(self) -> list[str]:
        return list(self._calls)

    def state(self, call_id: str) -> str | None:
        call = self._calls.get(call_id)
        return call.state if call is not None else None

    # --- WebCallHandler (called by AgentHub) ---

    def owns(self, conn: Connection) -> bool:
        return id(conn) in self._owners

    def allows(self, target: str) -> bool:
        return target in self.targets

    async def handle(self, conn: Connection, message: Message) -> None:
        kind, f, ref = message.type, message.fields, message.id
        if kind == "web-call-prepare":
            self._check_target(f["target"])
            self._owners.add(id(conn))
            self._send(
                conn,
                {
                    "type": "web-call-ready",
                    "ref": ref,
                    "target": f["target"],
                    "ice_servers": ice_list(self._ice),
                },
            )
        elif kind == "web-call":
            await self._start(conn, message)
        elif kind == "web-call-hangup":
            call = self._own_call(conn, f["call_id"])
            await self.control.web_hangup(call.call_id)
            self._send(conn, {"type": "ack", "ref": ref})
            await self._finish(call, "caller-hangup")
        elif kind == "web-call-dtmf":
            call = self._own_call(conn, f["call_id"])
            if call.state != "answered":
                raise ProtocolError("bad-state", f"the call is {call.state}")
            await self.control.web_dtmf(call.call_id, f["digit"])
            self._send(conn, {"type": "ack", "ref": ref})
        else:  # pragma: no cover - AgentHub routes only web-call* types here
            raise ProtocolError("unknown-type", "unknown message type")

    def connection_closed(self, conn: Connection) -> None:
        self._owners.discard(id(conn))
        call_id = self._by_conn.pop(id(conn), None)
        call = self._calls.get(call_id) if call_id is not None else None
        if call is None:
            return

        async def gone() -> None:
            try:
                await self.control.web_hangup(call.call_id)
            except Exception:
                logger.exception("web call %s: hangup after the page left failed", call.call_id)
            await self._finish(call, "caller-gone")

        task = asyncio.ensure_future(gone())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every web call's media (server shutdown)."""
        for call in list(self._calls.values()):
            self._send(call.conn, _state(call, "ended", "shutdown"))
            await call.media.close()
        self._calls.clear()
        self._by_conn.clear()
        self._live.clear()

    # --- server pushes ---

    def web_call_ringing(self, call_id: str) -> None:
        self._set_state(call_id, "ringing")

    def web_call_answered(self, call_id: str) -> None:
        self._set_state(call_id, "answered")

    def web_call_ended(self, call_id: str, reason: str = "hangup") -> None:
        """The far end hung up (or the call failed): the page is told, the media closed."""
        call = self._calls.get(call_id)
        if call is None:
            return
        task = asyncio.ensure_future(self._finish(call, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- internals ---

    def _check_target(self, target: str) -> None:
        if target not in self.targets:
            raise ProtocolError("unknown-target", "this target cannot be called from the web")

    def _admit(self, address: str) -> str:
        """Count a new call from `address` (its source key is returned: `_leave` it when the
        call ends or fails), or refuse it."""
        now = self.clock()
        key = source_key(address)
        self._forget_idle(now)
        attempts = self._attempts.pop(key, None) or deque()
        self._attempts[key] = attempts  # most recently seen last
        while attempts and now - attempts[0] >= _WINDOW:
            attempts.popleft()
        if len(attempts) >= self.calls_per_minute:
            self.refused += 1
            raise ProtocolError("rate-limited", "too many calls from this address: wait")
        if (
            self._live.get(key, 0) >= self.calls_per_address
            or len(self._calls) + self._placing >= self.max_calls
        ):
            self.refused += 1
            raise ProtocolError("too-many-calls", "too many calls in progress")
        attempts.append(now)
        self._live[key] = self._live.get(key, 0) + 1
        while len(self._attempts) > MAX_SOURCES:
            del self._attempts[next(iter(self._attempts))]
        return key

    def _leave(self, key: str) -> None:
        left = self._live.get(key, 0) - 1
        if left > 0:
            self._live[key] = left
        else:
            self._live.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        """Drop the sources whose last admission is a minute old (they are seen oldest first)."""
        attempts = self._attempts
        while attempts:
            key = next(iter(attempts))
            times = attempts[key]
            if times and now - times[-1] < _WINDOW:
                return
            del attempts[key]

    def sources(self) -> int:
        """Sources the rate limiter remembers."""
        return len(self._attempts)

    async def _start(self, conn: Connection, message: Message) -> None:
        f = message.fields
        self._check_target(f["target"])
        if id(conn) in self._by_conn or id(conn) in self._placing_conns:
            raise ProtocolError("bad-state", "this page has a call in progress")
        key = self._admit(conn.source)
        self._placing += 1
        self._placing_conns.add(id(conn))
        placed = False
        try:
            self._owners.add(id(conn))
            media = self.media_factory(f"web:{conn.source}")
            try:
                answer = await media.accept_offer(f["sdp"])
            except ValueError as exc:
                await media.close()
                raise ProtocolError("bad-sdp", str(exc)[:200]) from None
            info = WebCallerInfo(conn.source, f.get("name", ""), media.video, media)
            try:
                call_id = await self.control.web_call(f["target"], info)
            except BaseException:
                await media.close()
                raise
            if not isinstance(call_id, str) or not call_id or call_id in self._calls:
                await media.close()
                raise CommandError("internal", "the call could not be placed")
            placed = True
        finally:
            self._placing -= 1
            self._placing_conns.discard(id(conn))
            if not placed:
                self._leave(key)
        call = _WebCall(call_id, f["target"], conn, media, key)
        self._calls[call_id] = call
        self._by_conn[id(conn)] = call_id
        self._send(
            conn,
            {"type": "web-call-answer", "ref": message.id, "call_id": call_id, "sdp": answer},
        )
        self._send(conn, _state(call, call.state, ""))

    def _own_call(self, conn: Connection, call_id: str) -> _WebCall:
        call = self._calls.get(call_id)
        if call is None or call.conn is not conn:
            raise ProtocolError("unknown-call", "no such call on this page")
        return call

    def _set_state(self, call_id: str, state: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.state == state:
            return
        call.state = state
        self._send(call.conn, _state(call, state, ""))

    async def _finish(self, call: _WebCall, reason: str) -> None:
        if self._calls.get(call.call_id) is not call:
            return
        del self._calls[call.call_id]
        self._leave(call.source)
        if self._by_conn.get(id(call.conn)) == call.call_id:
            del self._by_conn[id(call.conn)]
        call.state = "ended"
        self._send(call.conn, _state(call, "ended", reason))
        await call.media.close()

    def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        message.setdefault("v", PROTOCOL_VERSION)
        try:
            conn.send(message)
        except Exception:
            logger.debug("send to web caller page failed", exc_info=True)


def _state(call: _WebCall, state: str, reason: str) -> dict[str, Any]:
    return {"type": "web-call-state", "call_id": call.call_id, "state": state, "reason": reason}
