"""Signed headers between the nodes of a cluster: one format, one signature, one replay cache.

A node asks another for something (an agent's offer, ``X-Oml-Offer``, `omlmedia.crossnode`; a
monitor leg, ``X-Oml-Monitor``, `omlmedia.monitor_remote`) in a header of the form

    <first>;<name>=<value>;...;ts=<unix>;nonce=<hex>;sig=<hex>

(every value percent-encoded) where ``sig`` is HMAC-SHA256, keyed with the cluster's shared
secret, over a **domain** (what the header is for, and for whom), the first value, every named
value in order, the time and the nonce, one a line. Each kind of header has its own domain (the
agent an offer is for; the tag ``monitor``), and its own set of names, so a header signed for one
purpose never verifies for another. `verify` also refuses a stale time (beyond ``max_skew``), a
missing or oversized nonce, a repeated name and any name other than the expected ones; `Nonces`
remembers the nonces seen within twice the skew, so a replayed header is refused.

`NodeSources` says which node a request comes from: by its exact SIP address when the internal
leg is in clear, or, with the encrypted leg, by the node its header names when it came over the
private TLS link from that node's host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote, unquote

from sip.endpoint import Endpoint

__all__ = ["NodeSources", "Nonces", "sign", "verify"]

_TRAILER = ("ts", "nonce", "sig")


def _mac(
    secret: bytes, domain: Sequence[str], first: str, values: Sequence[str], ts: int, nonce: str
) -> str:
    text = "\n".join((*domain, first, *values, str(ts), nonce))
    return hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()


def sign(
    secret: bytes,
    domain: Sequence[str],
    first: str,
    fields: Sequence[tuple[str, str]],
    now: float,
    nonce: str = "",
) -> str:
    """The header value carrying `first` and `fields` (name, value), signed at `now` (wall clock)
    for `domain`, with a fresh random nonce unless one is given."""
    ts = int(now)
    nonce = nonce or secrets.token_hex(8)
    mac = _mac(secret, domain, first, [value for _, value in fields], ts, nonce)
    named = "".join(f";{name}={quote(value, safe='')}" for name, value in fields)
    return f"{quote(first, safe='')}{named};ts={ts};nonce={nonce};sig={mac}"


def verify(
    secret: bytes,
    domain: Sequence[str],
    value: str,
    names: Sequence[str],
    now: float,
    max_skew: float,
) -> tuple[str, dict[str, str], str] | None:
    """The first value, the named values (decoded) and the nonce when `value` carries exactly
    `names` and is a valid signature for `domain`, made within `max_skew` of `now`; None
    otherwise."""
    first, _, rest = value.strip().partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, eq, item = part.partition("=")
        if not eq or key.strip() in params:
            return None
        params[key.strip()] = item.strip()
    if set(params) != {*names, *_TRAILER}:
        return None
    ts_text, nonce, sig = params["ts"], params["nonce"], params["sig"]
    if not ts_text.isdigit() or not nonce or len(nonce) > 64 or abs(now - int(ts_text)) > max_skew:
        return None
    decoded = {name: unquote(params[name]) for name in names}
    first = unquote(first)
    expected = _mac(secret, domain, first, [decoded[name] for name in names], int(ts_text), nonce)
    if not hmac.compare_digest(expected, sig):
        return None
    return first, decoded, nonce


class Nonces:
    """The nonces seen within `window` seconds (twice a signature's skew): a replayed header is
    refused."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def fresh(self, nonce: str, now: float) -> bool:
        """Whether `nonce` is unseen (it is remembered from now on)."""
        if nonce in self._seen:
            return False
        for old, at in list(self._seen.items()):
            if at < now - self.window:
                del self._seen[old]
        self._seen[nonce] = now
        return True


class NodeSources:
    """Which of the other nodes (`nodes` but `own`) a request comes from.

    `linked`: with the encrypted leg, whether a source is on the nodes' private TLS link (its
    certificate chained to the cluster's CA); None: the leg in clear, a node known by its exact
    address."""

    def __init__(
        self,
        nodes: Mapping[str, Endpoint],
        own: str,
        linked: Callable[[Endpoint], bool] | None = None,
    ) -> None:
        self.linked = linked
        others = {name: ep for name, ep in nodes.items() if name != own}
        self._by_address = {(ep.host, ep.port): name for name, ep in others.items()}
        self._host_of = {name: ep.host for name, ep in others.items()}
        self._hosts = set(self._host_of.values())

    def sender(self, source: Endpoint) -> str | None:
        """The node at `source`'s exact address (the leg in clear); ``""`` when `source` is on
        the private link (the header's node, checked by `named`); None when neither."""
        if self.linked is None:
            return self._by_address.get((source.host, source.port))
        return "" if self.linked(source) else None

    def named(self, sender: str, claimed: str, source: Endpoint) -> str | None:
        """The node a request from `sender` (`sender`'s answer) that names `claimed` in its
        signed header comes from; None when the two disagree."""
        if not sender and self._host_of.get(claimed) == source.host:
            return claimed
        return sender if sender and sender == claimed else None

    def is_node_host(self, host: str) -> bool:
        """Whether another node lives at `host`."""
        return host in self._hosts
