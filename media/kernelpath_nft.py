"""The kernel path's I/O: libnftables through ctypes, and the table of one server.

Why libnftables and not pyroute2: the batches of `media.kernelpath` are libnftables' JSON, the
format nftables documents (libnftables-json(5)), or for a call's change its own text syntax;
libnftables checks either (a wrong batch is refused whole with a message naming the problem)
and turns one batch into one netlink transaction.
pyroute2's nftables support builds raw expressions by hand with no concatenated-map or mangle
helpers. The C library is Debian's ``libnftables1`` (what ``python3-nftables`` wraps); the
few calls needed are bound here directly, since a virtualenv does not see Debian's Python
packages. A call takes well under a millisecond, so the server calls it from the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from media.kernelpath import (
    DEFAULT_TABLE,
    Batch,
    ForwardedPair,
    FourTuple,
    counters_of,
    install_batch,
    list_counters_command,
    remove_batch,
    replace_batch,
    table_batch,
    teardown_batch,
)

__all__ = ["KernelPath", "KernelPathError", "Nftables", "forwarding_enabled", "has_net_admin"]

logger = logging.getLogger(__name__)

_OUTPUT_JSON = 1 << 4
SERVER_REMOVAL_DELAY = 0.25
"""A server's hang-up removals wait up to this long for the next install's transaction."""
_CAP_NET_ADMIN = 12


class KernelPathError(Exception):
    """libnftables refused a batch or cannot be loaded; the message says why."""


def has_net_admin(status: str | None = None) -> bool:
    """True when this process has CAP_NET_ADMIN in its effective set (``/proc/self/status``)."""
    if status is None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                status = f.read()
        except OSError:
            return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1)
            except (IndexError, ValueError):
                return False
    return False


def forwarding_enabled(version: int) -> bool:
    """True when the kernel forwards packets of IP `version` (needed for far ends on other
    hosts; peers on this host need nothing)."""
    path = (
        "/proc/sys/net/ipv4/ip_forward"
        if version == 4
        else "/proc/sys/net/ipv6/conf/all/forwarding"
    )
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class Nftables:
    """One libnftables context taking JSON or text batches and answering JSON (`run`), or text
    for a listing (`text`)."""

    def __init__(self, library: str | None = None) -> None:
        name = library or ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise KernelPathError(f"libnftables is not installed ({exc})") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise KernelPathError("libnftables could not create a context")
        lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._lib = lib
        self._ctx: int | None = ctx
        self._lock = threading.Lock()

    def run(self, batch: Batch | str) -> dict[str, Any]:
        """Apply `batch` (one transaction: a JSON document, or commands in nftables' own syntax,
        one a line); its JSON answer, empty for a change. Raises KernelPathError with
        libnftables' message when the batch is refused (nothing changed)."""
        text = batch if isinstance(batch, str) else json.dumps(batch)
        with self._lock:
            if self._ctx is None:
                raise KernelPathError("the nftables context is closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            output = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            error = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            message = error.decode(errors="replace").strip() or f"libnftables returned {rc}"
            raise KernelPathError(message)
        text = output.decode(errors="replace").strip()
        if not text:
            return {}
        try:
            answer = json.loads(text)
        except ValueError:
            raise KernelPathError("libnftables answered something that is not JSON") from None
        return answer if isinstance(answer, dict) else {}

    def text(self, command: str) -> str:
        """Run `command` and return libnftables' answer in its text syntax (a listing). Raises
        KernelPathError with libnftables' message when the command is refused."""
        with self._lock:
            if self._ctx is None:
                raise KernelPathError("the nftables context is closed")
            self._lib.nft_ctx_output_set_flags(self._ctx, 0)
            try:
                rc = self._lib.nft_run_cmd_from_buffer(self._ctx, command.encode())
                output = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
                error = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
            finally:
                self._lib.nft_ctx_output_set_flags(self._ctx, _OUTPUT_JSON)
        if rc != 0:
            message = error.decode(errors="replace").strip() or f"libnftables returned {rc}"
            raise KernelPathError(message)
        return output.decode(errors="replace")

    def close(self) -> None:
        """Free the context; safe to call twice."""
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


@dataclass
class KernelPathStats:
    """What the kernel path did since start (for the status API and metrics)."""

    installed: int = 0
    replaced: int = 0
    """Calls whose rules were swapped for a far end that sent from elsewhere than expected."""
    removed: int = 0
    failures: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    """Calls handed back to userspace, by reason (``hold``, ``reinvite``, ``hangup``...)."""
    retired_packets: int = 0
    retired_bytes: int = 0
    """What the rules of calls removed since had forwarded."""
    listings: int = 0
    """Listings of every call's counters (hang-ups, the media-timeout sweep, the status API)."""
    transactions: int = 0
    """libnftables transactions run for calls' changes (several calls' changes may share one)."""


class KernelPath:
    """The server's nftables table and the pairs it relays.

    `start` creates the table (removing leftovers of a crashed run), `install`/`remove` change
    one call each, `counters` reads every call's counters at once, `stop` deletes the table. A
    refused change raises KernelPathError and leaves the kernel as it was; the caller then keeps
    the call in userspace.

    Coalescing: with a `removal_delay`, a hang-up's removal (the call is over: nothing waits for
    its packets to come back to the legs) is queued for up to that long, and goes to the kernel
    in the same transaction as the next install, or with the other hang-ups queued meanwhile
    when the delay runs out (`flush`). A transaction costs libnftables and the kernel about the
    same for one call's elements as for several calls' (0.17-0.23 ms), so a steady flow of calls
    pays about one transaction a call instead of two. Each call's elements stay together in the
    transaction (atomic per call, and in the order the changes were made: a removal before a
    later install of the same four-tuple). When a shared transaction is refused (nothing of it
    applied), each call's change is tried again alone, so one bad change fails only its own
    call. Installs, replacements and removals for any other reason (hold, re-INVITE: the legs
    must have the next packet) go at once."""

    def __init__(
        self,
        nft: Nftables | None = None,
        table: str = DEFAULT_TABLE,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = 0.5,
        removal_delay: float = 0.0,
    ) -> None:
        self.table = table
        self._nft = nft
        self.pairs: dict[str, ForwardedPair] = {}
        self.stats = KernelPathStats()
        self.active = False
        self.forwarding = {4: False, 6: False}
        """Whether the kernel forwards each IP version (read at start): without it only
        peers on this host can be relayed."""
        self.clock = clock
        self.max_age = max_age
        """Seconds a reading of the counters serves `pair_counters` (one listing for all)."""
        self._cached: dict[FourTuple, tuple[int, int]] = {}
        self._cached_at: float | None = None
        self.removal_delay = removal_delay
        """Seconds a hang-up's removal may wait to share a transaction (0: at once)."""
        self._pending: list[tuple[ForwardedPair, str]] = []
        """Removals waiting for the next transaction: the pair and its batch text."""
        self._flush_handle: asyncio.TimerHandle | None = None

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this process cannot use the kernel path, or None when it may try."""
        if os.name != "posix" or not os.path.exists("/proc/self/status"):
            return "not Linux"
        if not has_net_admin():
            return "the process lacks CAP_NET_ADMIN"
        if ctypes.util.find_library("nftables") is None:
            return "libnftables is not installed (Debian package libnftables1)"
        return None

    def start(self) -> None:
        """Create the table afresh; raises KernelPathError (with the kernel's reason)."""
        if self._nft is None:
            self._nft = Nftables()
        try:
            self._nft.run(table_batch(self.table))
        except KernelPathError as exc:
            if "Operation not permitted" in str(exc):
                raise KernelPathError(os.strerror(errno.EPERM) + ": " + str(exc)) from None
            raise
        self.pairs.clear()
        self.forwarding = {4: forwarding_enabled(4), 6: forwarding_enabled(6)}
        self.active = True

    def reachable(self, pair: ForwardedPair) -> bool:
        """True when the kernel can deliver `pair`'s packets: both far ends on this host, or
        forwarding on for their IP version."""
        if self.forwarding.get(pair.version):
            return True
        return all(ipaddress.ip_address(leg.remote[0]).is_loopback for leg in (pair.a, pair.b))

    def _run(self, batch: Batch | str) -> dict[str, Any]:
        if self._nft is None or not self.active:
            raise KernelPathError("the kernel path is not started")
        try:
            return self._nft.run(batch)
        except KernelPathError:
            self.stats.failures += 1
            raise

    def _listing(self, command: str) -> str:
        if self._nft is None or not self.active:
            raise KernelPathError("the kernel path is not started")
        try:
            return self._nft.text(command)
        except KernelPathError:
            self.stats.failures += 1
            raise

    DEFERRABLE = frozenset({"hangup"})
    """Removal reasons that may wait for a shared transaction: the call is over."""

    def install(self, pair: ForwardedPair) -> tuple[int, int]:
        """Relay `pair` in the kernel; replaces what its key relayed before in the same
        transaction (a far end that sends from elsewhere than its SDP said). Returns the packets
        the replaced rules had moved (from A to B, from B to A); (0, 0) for a new key. Goes to
        the kernel now, with the removals queued before it in the same transaction."""
        old = self.pairs.get(pair.key)
        if old == pair:
            return (0, 0)
        if old is not None:
            moved = self._retire(old)
            self._apply(replace_batch(old, pair, self.table))
            self.stats.replaced += 1
        else:
            moved = (0, 0)
            self._apply(install_batch(pair, self.table))
            self.stats.installed += 1
        self.pairs[pair.key] = pair
        return moved

    def remove(self, key: str, reason: str) -> tuple[int, int]:
        """Hand `key`'s call back to userspace (`reason` counted); the packets its rules had
        forwarded (from A to B, from B to A). Nothing happens for a key not installed. A
        hang-up's removal may wait up to `removal_delay` to share a transaction."""
        pair = self.pairs.get(key)
        if pair is None:
            return (0, 0)
        moved = self._retire(pair)
        text = remove_batch(pair, self.table)
        del self.pairs[key]
        if reason in self.DEFERRABLE and self._defer():
            self._pending.append((pair, text))
        else:
            self._apply(text)
        self.stats.removed += 1
        self.stats.fallbacks[reason] = self.stats.fallbacks.get(reason, 0) + 1
        return moved

    def _defer(self) -> bool:
        """Arm the flush of the queued removals (in the running loop); False when they cannot
        wait (no delay, or no loop to flush them)."""
        if self.removal_delay <= 0 or self._nft is None or not self.active:
            return False
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._flush_handle = loop.call_later(self.removal_delay, self.flush)
        return True

    def _take_pending(self) -> list[tuple[ForwardedPair, str]]:
        pending, self._pending = self._pending, []
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        return pending

    def flush(self) -> None:
        """Apply the queued removals now, in one transaction (each alone if it is refused: a
        refused one is counted and logged, the others applied)."""
        pending = self._take_pending()
        if pending:
            self._apply_together(pending, None)

    @property
    def pending(self) -> int:
        """Removals queued for the next transaction."""
        return len(self._pending)

    def _apply(self, change: str) -> None:
        """Apply one call's `change` now, with the queued removals before it in the same
        transaction. Raises KernelPathError when `change` itself is refused."""
        pending = self._take_pending()
        if pending:
            self._apply_together(pending, change)
        else:
            self._run(change)
            self.stats.transactions += 1

    def _apply_together(self, pending: list[tuple[ForwardedPair, str]], change: str | None) -> None:
        """The queued removals (and `change`, last) in one transaction; when it is refused,
        each again alone, so only the refused ones fail (a refused `change` raises)."""
        texts = [text for _, text in pending]
        if change is not None:
            texts.append(change)
        if self._nft is None or not self.active:
            raise KernelPathError("the kernel path is not started")
        try:
            self._nft.run("\n".join(texts))
            self.stats.transactions += 1
            return
        except KernelPathError as exc:
            logger.info(
                "a shared nftables transaction of %d changes was refused (%s): each alone",
                len(texts),
                exc,
            )
        for pair, text in pending:
            try:
                self._run(text)
                self.stats.transactions += 1
            except KernelPathError as exc:
                logger.warning("kernel path removal of call %s failed: %s", pair.key, exc)
        if change is not None:
            self._run(change)
            self.stats.transactions += 1

    def _retire(self, pair: ForwardedPair) -> tuple[int, int]:
        found = self._recent()
        ab, ab_bytes = found.get(pair.counted("ab"), (0, 0))
        ba, ba_bytes = found.get(pair.counted("ba"), (0, 0))
        self.stats.retired_packets += ab + ba
        self.stats.retired_bytes += ab_bytes + ba_bytes
        return ab, ba

    def counters(self) -> dict[FourTuple, tuple[int, int]]:
        """(packets, bytes) by direction, for every call installed (read now: one listing per
        IP version in use, whose cost grows with the number of calls)."""
        found: dict[FourTuple, tuple[int, int]] = {}
        for version in sorted({pair.version for pair in self.pairs.values()}):
            found.update(counters_of(self._listing(list_counters_command(version, self.table))))
            self.stats.listings += 1
        self._cached, self._cached_at = found, self.clock()
        return found

    def _recent(self) -> dict[FourTuple, tuple[int, int]]:
        """The counters read at most `max_age` ago (read again if older): a burst of hang-ups
        costs one listing per `max_age`, not one per call."""
        at = self._cached_at
        if at is None or self.clock() - at > self.max_age:
            try:
                return self.counters()
            except KernelPathError:
                pass
        return self._cached

    def pair_counters(self, key: str, fresh: bool = True) -> tuple[int, int] | None:
        """(packets from A to B, packets from B to A) of `key`'s rules; None when not installed.
        Not `fresh`: from a reading at most `max_age` old (one listing serves every call of a
        media-timeout sweep)."""
        pair = self.pairs.get(key)
        if pair is None:
            return None
        if fresh:
            try:
                found = self.counters()
            except KernelPathError:
                found = self._cached
        else:
            found = self._recent()
        return (found.get(pair.counted("ab"), (0, 0))[0], found.get(pair.counted("ba"), (0, 0))[0])

    def totals(self) -> tuple[int, int]:
        """(packets, bytes) forwarded since start, by calls removed and calls still installed
        (theirs from a reading at most `max_age` old: a status poll costs no listing of its own
        when one was made less than `max_age` ago, and its figures lag by at most that)."""
        packets, size = self.stats.retired_packets, self.stats.retired_bytes
        if self.pairs:
            found = self._recent()
            for pair in self.pairs.values():
                for suffix in ("ab", "ba"):
                    p, b = found.get(pair.counted(suffix), (0, 0))
                    packets += p
                    size += b
        return packets, size

    @classmethod
    def for_server(
        cls, enabled: bool, table: str = DEFAULT_TABLE, removal_delay: float = SERVER_REMOVAL_DELAY
    ) -> tuple[KernelPath | None, str]:
        """The started kernel path of a server and what to say about it at start (None when
        off or unavailable, the reason in the message). Off but able to: the table a crashed
        run left (with the option on) is deleted, so no stale rule keeps relaying."""
        reason = cls.unavailable_reason()
        if not enabled:
            if reason is None:
                try:
                    nft = Nftables()
                    try:
                        nft.run(teardown_batch(table))
                    finally:
                        nft.close()
                except KernelPathError:
                    pass
            return None, "kernel forwarding is off ([media] kernel_forwarding)"
        if reason is not None:
            return None, f"kernel forwarding is not active: {reason}"
        kernel = cls(table=table, removal_delay=removal_delay)
        try:
            kernel.start()
        except KernelPathError as exc:
            return None, f"kernel forwarding is not active: nftables refused the table: {exc}"
        remote = [f"IPv{v}" for v in (4, 6) if kernel.forwarding[v]]
        reach = (
            f"far ends anywhere over {' and '.join(remote)}"
            if remote
            else "far ends on this host only (IP forwarding is off)"
        )
        return kernel, f"kernel forwarding is active (nftables table inet {table}, {reach})"

    def status(self) -> dict[str, Any]:
        """What the status API and the metrics show."""
        packets, size = self.totals()
        return {
            "active": self.active,
            "calls": len(self.pairs),
            "packets": packets,
            "bytes": size,
            "installed": self.stats.installed,
            "replaced": self.stats.replaced,
            "failures": self.stats.failures,
            "fallbacks": dict(self.stats.fallbacks),
            "transactions": self.stats.transactions,
            "listings": self.stats.listings,
        }

    def stop(self) -> None:
        """Delete the table (every call falls back) and free the context; safe to call twice."""
        self._take_pending()  # the table goes with every element
        if self._nft is None:
            return
        if self.active:
            try:
                self._nft.run(teardown_batch(self.table))
            except KernelPathError as exc:
                logger.warning("could not delete nftables table %s: %s", self.table, exc)
        self.active = False
        self.pairs.clear()
        self._nft.close()
        self._nft = None
