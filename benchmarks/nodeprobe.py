"""``python -m benchmarks.nodeprobe serve ...``: `omlmedia` (the same command line) with probes a
benchmark turns on through the environment, to find where a node's time goes. Written when the
process exits (a SIGTERM'd server returns from ``serve``):

- ``OMLBENCH_PROFILE=FILE``: cProfile of the loop's thread from each SIGUSR1 to the next SIGUSR2
  (a benchmark sends them around its measured runs: start-up and shutdown left out), counting
  the process's CPU time (not the time waited), dumped to FILE at exit (``python -m pstats
  FILE``);
- ``OMLBENCH_STALLS=FILE``: the event loop's stalls, as JSON. A callback re-armed every
  millisecond on the node's loop notes when it last ran; a watcher thread looks every
  millisecond and, while the loop is late by more than ``OMLBENCH_STALL_MS`` (default 3), takes
  the stack of every thread (the loop's: what runs instead of the loop; the others': who may
  hold the GIL). Each stall is kept with how long the loop was away and its samples; the
  collector's passes over ``OMLBENCH_GC_MS`` (default 1) are kept too, with their generation
  (a collection holds the GIL, so the watcher cannot sample inside one). Each stall has the
  loop thread's time on a CPU (``ran_ms``) and runnable but waiting for one (``queued_ms``:
  the machine's load) from the kernel's schedstat; the rest it slept (another thread held the
  GIL, or a blocking call), and the other threads that ran or waited for a CPU meanwhile
  (``threads_ran_ms``: name/tid → [ran, queued], read every 10 ms: the GIL's possible holders,
  a holder preempted by the kernel keeping the loop waiting; the watcher left out). The
  re-armed callback costs CPU: for finding the culprit, not for measuring CPU. Times (``at``) are
  `time.monotonic()`'s, the same clock in every process of the machine;
- ``OMLBENCH_THREADS`` (any value): each thread gets its Python name as its kernel name (the main
  thread ``loop``), so that a benchmark reading ``/proc/PID/task/*/stat`` from outside tells
  which thread spends the process's CPU (the loop; the store's writer; PostgreSQL's connection
  thread...). Costs nothing after a thread's start, so the run's CPU figures stay the node's.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import atexit
import gc
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

BEAT = 0.001


class StallWatch:
    """The loop's late beats and the collector's long passes (see the module's docstring)."""

    def __init__(self, path: str, threshold_ms: float, gc_ms: float) -> None:
        self.path = path
        self.threshold = threshold_ms / 1000
        self.gc_threshold = gc_ms / 1000
        self.started = time.monotonic()
        self.last_beat = 0.0
        self.stalls: list[dict[str, Any]] = []
        self.gc_pauses: list[dict[str, Any]] = []
        self.beats = 0
        self._samples: list[dict[str, list[str]]] = []
        self._gc_started = 0.0
        self._main = threading.main_thread().ident
        self._main_tid = threading.main_thread().native_id
        self._stall_sched: tuple[float, float] | None = None
        self._stall_threads: dict[str, tuple[float, float]] = {}
        self._done = threading.Event()

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)
        # the server's loop is the first one made, by uvloop when installed (omlmedia.cli)
        asyncio.events.new_event_loop = self._watched(asyncio.events.new_event_loop)
        asyncio.new_event_loop = asyncio.events.new_event_loop
        try:
            import uvloop
        except ImportError:
            pass
        else:
            module: Any = uvloop
            module.new_event_loop = self._watched(uvloop.new_event_loop)
        atexit.register(self.write)

    def _watched(
        self, factory: Callable[[], asyncio.AbstractEventLoop]
    ) -> Callable[[], asyncio.AbstractEventLoop]:
        def new_event_loop() -> asyncio.AbstractEventLoop:
            loop = factory()
            if self.last_beat == 0.0:
                self.last_beat = time.monotonic()
                loop.call_soon(self._beat, loop)
                threading.Thread(target=self._watch, name="stall-watch", daemon=True).start()
            return loop

        return new_event_loop

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        if phase == "start":
            self._gc_started = now
        elif now - self._gc_started >= self.gc_threshold:
            self.gc_pauses.append(
                {
                    "at": self._gc_started,
                    "ms": round(1000 * (now - self._gc_started), 2),
                    "generation": info["generation"],
                    "collected": info["collected"],
                }
            )

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        gap = now - self.last_beat
        self.last_beat = now
        self.beats += 1
        samples, self._samples = self._samples, []
        sched, self._stall_sched = self._stall_sched, None
        threads, self._stall_threads = self._stall_threads, {}
        if gap >= self.threshold + BEAT:
            stall: dict[str, Any] = {
                "at": now - gap,
                "ms": round(1000 * (gap - BEAT), 2),
                "samples": samples,
            }
            if sched is not None:
                stall["ran_ms"], stall["queued_ms"] = sched
                stall["threads_ran_ms"] = threads
            self.stalls.append(stall)
        loop.call_later(BEAT, self._beat, loop)

    def _schedstat(self) -> tuple[float, float]:
        """The loop thread's time on a CPU and waiting in the run queue (ms), from the kernel."""
        with open(f"/proc/self/task/{self._main_tid}/schedstat") as stat:
            ran, queued = stat.read().split()[:2]
        return int(ran) / 1e6, int(queued) / 1e6

    def _threads_ran(self) -> dict[str, tuple[float, float]]:
        """Every other thread's time on a CPU and in the run queue so far (ms), by "name/tid"
        (the Python thread's name, else the kernel's); the watcher itself left out."""
        names = {t.native_id: t.name for t in threading.enumerate()}
        me = threading.get_native_id()
        out = {}
        for tid in os.listdir("/proc/self/task"):
            if int(tid) in (self._main_tid, me):
                continue
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as stat:
                    ran, queued = stat.read().split()[:2]
                name = names.get(int(tid))
                if name is None:
                    with open(f"/proc/self/task/{tid}/comm") as comm:
                        name = comm.read().strip()
            except OSError:
                continue
            out[f"{name}/{tid}"] = (int(ran) / 1e6, int(queued) / 1e6)
        return out

    def _watch(self) -> None:
        names = {}
        before = self._schedstat()
        others = self._threads_ran()
        polls = 0
        while not self._done.wait(BEAT):
            late = time.monotonic() - self.last_beat - BEAT
            now = self._schedstat()
            if late < self.threshold:
                before = now
                polls += 1
                if polls % 10 == 0:  # every 10 ms: other threads, the GIL's possible holders
                    others = self._threads_ran()
                continue
            # the loop thread since it was last seen on time: running (our code, or C code such
            # as a system call), or runnable but not given a CPU (the machine's load); the rest
            # of the stall it slept (the GIL held by another thread, or blocked): the other
            # threads that ran meanwhile name who
            self._stall_sched = (round(now[0] - before[0], 2), round(now[1] - before[1], 2))
            ran = {
                name: (
                    round(value[0] - others.get(name, (0.0, 0.0))[0], 2),
                    round(value[1] - others.get(name, (0.0, 0.0))[1], 2),
                )
                for name, value in self._threads_ran().items()
            }
            self._stall_threads = {n: v for n, v in ran.items() if v[0] + v[1] >= 0.5}
            if len(self._samples) >= 20:
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            sample = {}
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                name = "loop" if ident == self._main else names.get(ident, str(ident))
                stack = traceback.extract_stack(frame)[-12:]
                sample[name] = [
                    f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in stack
                ]
            self._samples.append(sample)

    def write(self) -> None:
        self._done.set()
        report = {
            "seconds": round(time.monotonic() - self.started, 3),
            "beats": self.beats,
            "threshold_ms": 1000 * self.threshold,
            "stalls": self.stalls,
            "gc_pauses": self.gc_pauses,
        }
        with open(self.path, "w") as out:
            json.dump(report, out)


def name_threads() -> None:
    """``OMLBENCH_THREADS``: every thread started from now on takes its Python name as its
    kernel name (``/proc/PID/task/TID/comm``, 15 bytes), so that a benchmark reading each
    thread's CPU from outside tells them apart; the main thread is named ``loop``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_name = 15

    def name(text: str) -> None:
        libc.prctl(pr_set_name, text.encode()[:15], 0, 0, 0)

    name("loop")
    bootstrap: Any = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(self: threading.Thread) -> None:
        name(self.name)
        bootstrap(self)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]


def main() -> None:
    stalls = os.environ.get("OMLBENCH_STALLS")
    if stalls:
        watch = StallWatch(
            stalls,
            float(os.environ.get("OMLBENCH_STALL_MS", "3")),
            float(os.environ.get("OMLBENCH_GC_MS", "1")),
        )
        watch.install()
    sys.argv[0] = "omlmedia"
    if os.environ.get("OMLBENCH_THREADS"):
        name_threads()
    profile_path = os.environ.get("OMLBENCH_PROFILE")
    if not profile_path:
        runpy.run_module("omlmedia", run_name="__main__", alter_sys=True)
        return
    import cProfile

    profile = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: profile.enable())
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: profile.disable())
    try:
        runpy.run_module("omlmedia", run_name="__main__", alter_sys=True)
    finally:
        profile.disable()
        profile.dump_stats(profile_path)


if __name__ == "__main__":
    main()
