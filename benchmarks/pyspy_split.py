"""Where a process's CPU goes, from py-spy's sampled stacks: by stage, by entry, by phase.

cProfile makes Python code 3-5 times dearer and does not see C code (libnftables, uvloop, the
kernel's work inside a syscall), so its split of a call's CPU is skewed. A sampling profiler is
not: ``py-spy record --native`` stops the process 250 times a second and takes the whole stack,
Python and C. Record the server while a fixed number of calls go through it, e.g. (as root)::

    .venv/bin/python benchmarks/kernel_sipp.py --calls 100 --fixed-calls 600 \\
        --targets omlmedia-kernel &
    py-spy record -r 250 --native --threads -f raw -o /tmp/x.txt --pid <omlmedia serve pid>

and split the samples of the event loop's thread::

    .venv/bin/python benchmarks/pyspy_split.py /tmp/x.txt --ms-per-call 4.5

Each busy sample (not the loop's ``epoll_pwait``) goes to the *stage* of its deepest frame that
names one (its file: ``sip/message.py`` is SIP parse/build, ``media/kernelpath*`` the kernel
rules, ``json`` and ``omlmedia/events.py`` the events...), so a helper (a dataclass's
``__init__``, ``json``'s encoder, a C function) counts for the code that called it; a send
syscall goes to what sent (libnftables' netlink messages are the kernel rules, a SIP datagram
the SIP sends). The *entry* is what the event loop ran (a SIP datagram, a SIP timer, the
upkeep's RTCP tick, a task), the *phase* the part of a call (set-up, hang-up). With
``--ms-per-call`` (the thread's CPU per call measured without the profiler, e.g. by
``kernel_sipp.py --fixed-calls``), shares are also given in ms per call. Under load, samples
count time runnable as well as running; shares stay right, absolute times do not: scale them.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IDLE = "idle (the loop waiting)"

_SYSCALL_SEND = ("sendmsg ", "sendto ")

STAGES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("gc", lambda f: f.startswith("gc_collect")),
    ("logging", lambda f: "(logging/" in f),
    ("kernel rules (libnftables, counters)", lambda f: "(media/kernelpath" in f),
    ("records (store, queue log)", lambda f: "(omlmedia/storage" in f),
    (
        "events (call.* publish, JSON, webhooks' hook)",
        lambda f: any(
            s in f
            for s in (
                "(omlmedia/events.py",
                "(omlmedia/callevents.py",
                "(omlmedia/webhooks",
                "(json/",
                "_json.c",
            )
        ),
    ),
    ("metrics (prometheus)", lambda f: "(omlmedia/metrics" in f or "(prometheus_client/" in f),
    (
        "SDP (sip/sdp, offer/answer)",
        lambda f: "(sip/sdp.py" in f or "(omlmedia/offer_answer" in f or "(media/srtp" in f,
    ),
    (
        "SIP message parse/build",
        lambda f: any(s in f for s in ("(sip/message.py", "(sip/validation", "(sip/endpoint")),
    ),
    ("SIP transactions", lambda f: "(sip/transaction.py" in f),
    (
        "SIP dialogs, UA, service, transport",
        lambda f: any(s in f for s in ("(sip/dialog", "(sip/ua.py", "(sip/service", "(sip/transp")),
    ),
    ("RTP legs, ports, RTCP", lambda f: "(media/" in f or "(omlmedia/upkeep" in f),
    (
        "B2BUA, bridges, router, trunks",
        lambda f: any(
            s in f
            for s in (
                "(omlmedia/b2bua",
                "(omlmedia/bridges",
                "(omlmedia/router",
                "(omlmedia/trunks",
                "(omlmedia/config",
            )
        ),
    ),
    ("other omlmedia (server, API)", lambda f: "(omlmedia/" in f or "(webrtc/" in f),
    ("asyncio and uvloop", lambda f: "(loop.c" in f or "(asyncio/" in f or "(uv" in f),
)
"""Checked from the leaf to the root: the first frame that names a stage gives the sample's."""

ENTRIES: tuple[tuple[str, str], ...] = (
    ("a SIP datagram", "datagram_received"),
    ("a SIP timer", "SipService._fire"),
    ("the B2BUA's dialling task", "B2bua._dial_trunk"),
    ("the RTCP tick", "Upkeep._rtcp_tick"),
    ("the upkeep's sweeps", "Upkeep."),
    ("the kernel path's queued removals", "KernelPath.flush"),
    ("the store's flush (loop side)", "AsyncStore."),
    ("HTTP (aiohttp)", "(aiohttp/"),
)
"""What the loop ran, by the first (outermost) frame that names one."""

PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "set-up (INVITE in, dialled, answered, ACK)",
        ("B2bua.take", "B2bua._dial_trunk", "B2bua.on_response", "CallRouter._on_incoming"),
    ),
    ("hang-up (BYE, the bridge's end)", ("B2bua.on_ended", "B2bua._end_bridge")),
    ("RTCP reports", ("Upkeep._rtcp_tick",)),
    ("media-timeout sweep", ("Upkeep._sweep",)),
)
"""Part of a call, by a frame anywhere in the stack; the rest is SIP's own (other messages,
transactions, timers) or no call's."""


@dataclass
class Split:
    """Samples of one thread, counted by stage, entry, phase and leaf-most Python function."""

    samples: int = 0
    idle: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    entries: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        return self.samples - self.idle


def _is_python(frame: str) -> bool:
    return ".py:" in frame or ".py)" in frame or "(<string>" in frame


def stage_of(frames: Sequence[str]) -> str:
    """The stage a stack's sample goes to (see `STAGES`)."""
    leaf = frames[-1]
    if leaf.startswith(_SYSCALL_SEND) or leaf.startswith("recvmsg "):
        python = [f for f in frames if _is_python(f)]
        last = python[-1] if python else ""
        if "(sip/transport" in last:
            return "SIP send syscalls (the kernel's UDP path)"
        if "(media/ports" in last:
            return "RTCP send syscalls"
        if leaf.startswith("recvmsg ") and not last.startswith("("):
            return "receive syscalls (uvloop)"
    for frame in reversed(frames):
        for name, match in STAGES:
            if match(frame):
                return name
    return "other (C with no Python frame of ours)"


def _first(frames: Sequence[str], table: Iterable[tuple[str, str]]) -> str:
    for frame in frames:
        for name, mark in table:
            if mark in frame:
                return name
    return "other"


def split(lines: Iterable[str], thread: str | None = "MainThread") -> Split:
    """Count py-spy ``raw`` lines (``frame;frame;... count``, the root first; with
    ``--threads`` the first frame names the thread): only `thread`'s when given and named."""
    result = Split()
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            if thread is not None and thread not in frames[0]:
                continue
            frames = frames[1:]
        if not frames:
            continue
        result.samples += count
        if frames[-1].startswith("epoll_pwait") or frames[-1].startswith("epoll_wait"):
            result.idle += count
            continue
        result.stages[stage_of(frames)] += count
        result.entries[_first(frames, ENTRIES)] += count
        phase = "SIP alone (other messages, transactions, timers) or no call"
        for name, marks in PHASES:
            if any(mark in frame for frame in frames for mark in marks):
                phase = name
                break
        result.phases[phase] += count
        python = [f for f in frames if _is_python(f)]
        if python:
            result.functions[re.sub(r":\d+\)$", ")", python[-1])] += count
    return result


def table(title: str, counts: Counter[str], busy: int, ms_per_call: float | None, top: int) -> str:
    rows = [f"| {title} | samples | share |" + (" ms per call |" if ms_per_call else "")]
    rows.append("|---|---|---|" + ("---|" if ms_per_call else ""))
    for name, count in counts.most_common(top):
        share = count / busy if busy else 0.0
        row = f"| {name} | {count} | {100 * share:.1f} % |"
        if ms_per_call:
            row += f" {share * ms_per_call:.2f} |"
        rows.append(row)
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("raw", type=Path, nargs="+", help="py-spy -f raw outputs (summed)")
    parser.add_argument("--thread", default="MainThread", help="thread name ('' for all)")
    parser.add_argument("--ms-per-call", type=float, default=None)
    parser.add_argument("--top", type=int, default=25, help="leaf-most Python functions shown")
    args = parser.parse_args(argv)
    lines: list[str] = []
    for path in args.raw:
        lines.extend(path.read_text().splitlines())
    result = split(lines, args.thread or None)
    print(f"{result.samples} samples, {result.idle} idle, {result.busy} busy")
    for title, counts, top in (
        ("stage", result.stages, 50),
        ("entry (what the loop ran)", result.entries, 50),
        ("phase of a call", result.phases, 50),
        ("leaf-most Python function", result.functions, args.top),
    ):
        print()
        print(table(title, counts, result.busy, args.ms_per_call, top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
