"""A small client of rtpengine's "ng" control protocol, for driving it as a benchmark peer.

The protocol: each request is one UDP datagram ``<cookie> <bencoded dictionary>``; rtpengine answers
with a datagram starting with the same cookie, followed by a bencoded dictionary whose ``result`` is
``ok`` (or ``pong`` for ``ping``), ``error`` with an ``error-reason``, or ``load limit``. A request
that got no answer is sent again with the same cookie, so rtpengine can answer a retransmission from
its cache instead of acting twice.

Bencode (BitTorrent BEP 3): integers ``i42e``, byte strings ``4:spam``, lists ``l...e``,
dictionaries ``d...e`` with keys sorted as raw bytes. Strings come back from :func:`bdecode` as
``bytes``; :meth:`NgClient.request` turns them into ``str`` where they are valid UTF-8 (SDP,
results, tags).

    client = NgClient(("127.0.0.1", 22223))
    reply = client.offer(call_id, from_tag, sdp, codec={"transcode": ["opus"]})
    print(reply["sdp"])
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any


class BencodeError(ValueError):
    """The data is not valid bencode (or has bytes left after the value)."""


class NgError(RuntimeError):
    """rtpengine answered ``result: error`` (or something that is not a valid answer)."""


def bencode(value: Any) -> bytes:
    """Encode ints, str (as UTF-8), bytes, lists/tuples and dicts (keys sorted as bytes).

    bool is refused (it would silently become ``i1e``); so are floats and None.
    """
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"cannot bencode {value!r}")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        data = value.encode()
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode()
            elif not isinstance(key, bytes):
                raise TypeError(f"bencode dictionary keys are strings, not {key!r}")
            items.append((key, item))
        items.sort(key=lambda pair: pair[0])
        out.append(b"d")
        previous = None
        for key, item in items:
            if key == previous:
                raise ValueError(f"duplicate dictionary key {key!r}")
            previous = key
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one complete bencoded value; byte strings stay ``bytes``, dict keys too."""
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as exc:
        if isinstance(exc, BencodeError):
            raise
        raise BencodeError(f"invalid bencode: {exc}") from exc
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the bencoded value")
    return value


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos)
        text = data[pos + 1 : end]
        if (
            not text
            or text == b"-"
            or text.startswith(b"-0")
            or (text[:1] == b"0" and text != b"0")
        ):
            raise BencodeError(f"invalid integer {text!r}")
        return int(text), end + 1
    if lead == b"l":
        pos += 1
        items = []
        while data[pos : pos + 1] != b"e":
            if pos >= len(data):
                raise BencodeError("unterminated list")
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if lead == b"d":
        pos += 1
        result: dict[bytes, Any] = {}
        while data[pos : pos + 1] != b"e":
            if pos >= len(data):
                raise BencodeError("unterminated dictionary")
            key, pos = _decode(data, pos)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            result[key], pos = _decode(data, pos)
        return result, pos + 1
    if lead.isdigit():
        colon = data.index(b":", pos)
        length_text = data[pos:colon]
        if not length_text.isdigit():
            raise BencodeError(f"invalid string length {length_text!r}")
        start = colon + 1
        end = start + int(length_text)
        if end > len(data):
            raise BencodeError("string runs past the end")
        return data[start:end], end
    if not lead:
        raise BencodeError("unexpected end of data")
    raise BencodeError(f"unexpected byte {lead!r} at {pos}")


def to_text(value: Any) -> Any:
    """Decoded bencode with every UTF-8 byte string (keys included) turned into ``str``."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        return [to_text(item) for item in value]
    if isinstance(value, dict):
        return {to_text(key): to_text(item) for key, item in value.items()}
    return value


def frame(cookie: bytes, message: Mapping[str, Any]) -> bytes:
    """One ng datagram: the cookie, a space, the bencoded dictionary."""
    if not cookie or b" " in cookie:
        raise ValueError("the cookie is a non-empty token without spaces")
    return cookie + b" " + bencode(message)


def unframe(datagram: bytes) -> tuple[bytes, dict[str, Any]]:
    """Split an ng datagram into its cookie and its (decoded, text) dictionary."""
    cookie, space, body = datagram.partition(b" ")
    if not space or not cookie:
        raise NgError(f"not an ng message: {datagram[:40]!r}")
    value = to_text(bdecode(body))
    if not isinstance(value, dict):
        raise NgError("the ng message is not a dictionary")
    return cookie, value


class NgNotReady(TimeoutError):
    """rtpengine did not answer a ``ping`` before the deadline, or exited while we waited."""


class NgClient:
    """Blocking request/response over UDP with retransmission (one outstanding request)."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float = 1.0,
        retries: int = 3,
        sock: socket.socket | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if sock is None:
            self.sock.bind(("127.0.0.1" if address[0].startswith("127.") else "0.0.0.0", 0))
        self._prefix = secrets.token_hex(4)
        self._counter = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_cookie(self) -> bytes:
        self._counter += 1
        return f"{self._prefix}_{self._counter}".encode()

    def request(self, command: str, **params: Any) -> dict[str, Any]:
        """Send ``command`` with ``params`` (underscores in names become dashes); the reply dict.

        Raises :class:`NgError` on ``result: error`` and :class:`TimeoutError` when rtpengine
        never answers.
        """
        message: dict[str, Any] = {"command": command}
        for key, value in params.items():
            if value is not None:
                message[key.replace("_", "-")] = value
        cookie = self.next_cookie()
        datagram = frame(cookie, message)
        for _ in range(self.retries + 1):
            reply = self._exchange(cookie, datagram, self.timeout)
            if reply is None:
                continue
            result = reply.get("result")
            if result == "error":
                raise NgError(f"{command}: {reply.get('error-reason', 'error')}")
            if result not in ("ok", "pong"):
                raise NgError(f"{command}: result {result!r}")
            return reply
        raise TimeoutError(f"rtpengine did not answer {command!r} at {self.address}")

    def _exchange(self, cookie: bytes, datagram: bytes, timeout: float) -> dict[str, Any] | None:
        """Send `datagram` once; the answer carrying `cookie` within `timeout`, or None. An
        ICMP error (nothing listening yet) counts as no answer."""
        try:
            self.sock.sendto(datagram, self.address)
        except ConnectionRefusedError:
            pass
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            except ConnectionRefusedError:
                continue  # the port unreachable of an earlier send (a connected socket)
            try:
                got, reply = unframe(data)
            except (NgError, BencodeError):
                continue
            if got == cookie:
                return reply
            # else a late answer to an earlier, retransmitted request
        return None

    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def wait_ready(
        self,
        seconds: float,
        exited: Callable[[], int | None] = lambda: None,
        interval: float = 0.1,
    ) -> float:
        """Ping until rtpengine answers, for up to `seconds`; the seconds it took.

        A starting rtpengine is not listening yet, and on a loaded machine it can take seconds
        to get there (it loads its codec libraries first): each ping waits `interval`, a fresh
        one follows, and `exited` (the process's exit status, None while it runs) is checked
        between them, so a process that died is reported at once. Raises :class:`NgNotReady`
        naming the address, how long it waited and whether the process still runs."""
        started = time.monotonic()
        deadline = started + seconds
        pings = 0
        while True:
            status = exited()
            if status is not None:
                raise NgNotReady(
                    f"rtpengine exited with status {status} before answering ng ping at "
                    f"{self.address[0]}:{self.address[1]} ({pings} pings in "
                    f"{time.monotonic() - started:.1f} s)"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise NgNotReady(
                    f"rtpengine (still running) did not answer ng ping at "
                    f"{self.address[0]}:{self.address[1]} in {seconds:g} s ({pings} pings)"
                )
            pings += 1
            cookie = self.next_cookie()
            if self._exchange(cookie, frame(cookie, {"command": "ping"}), min(interval, left)):
                return time.monotonic() - started

    def offer(self, call_id: str, from_tag: str, sdp: str, **options: Any) -> dict[str, Any]:
        """``offer``: rtpengine rewrites the caller's SDP for the callee (its ports)."""
        return self.request("offer", call_id=call_id, from_tag=from_tag, sdp=sdp, **options)

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: str, **options: Any
    ) -> dict[str, Any]:
        """``answer``: rtpengine rewrites the callee's SDP for the caller."""
        return self.request(
            "answer", call_id=call_id, from_tag=from_tag, to_tag=to_tag, sdp=sdp, **options
        )

    def delete(self, call_id: str, from_tag: str | None = None, **options: Any) -> dict[str, Any]:
        return self.request("delete", call_id=call_id, from_tag=from_tag, **options)

    def query(self, call_id: str, **options: Any) -> dict[str, Any]:
        return self.request("query", call_id=call_id, **options)
