"""What the benchmarks read from /proc: a process's CPU time, memory and run-queue wait, a core's
busy time, and pinning processes to cores (server and load generator on different cores).

Every benchmark puts the system under test on `SERVER_CORE` and its load generator on
`GENERATOR_CORE`; on a one-core machine pinning does nothing and the figures say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CORE, GENERATOR_CORE = 0, 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU time of one thread of this process (0 once it has ended)."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def core_busy_seconds(core: int) -> float:
    """Busy (non-idle, non-iowait) time of one core, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS
    return 0.0


def core_softirq_seconds(core: int) -> float:
    """Softirq time of one core, from /proc/stat (its seventh column): the kernel's packet
    receive and forwarding work there, whichever process was interrupted. Tick-sampled on this
    machine's kernel (no IRQ time accounting): a tick that lands in a softirq also counts in the
    interrupted process's system time."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            return int(line.split()[7]) / CLOCK_TICKS
    return 0.0


def run_queue_wait_seconds(pid: int) -> float:
    """Time the threads of `pid` spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat,
    second field, ns): the scheduler's delay, which other load on the core causes."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def can_pin() -> bool:
    """Whether there are cores to keep apart (pinning on one core would only serialise)."""
    return (os.cpu_count() or 1) > 1


def pin_self(core: int) -> None:
    """Pin this process (the load generator, or the benchmark's parent) to one core."""
    if can_pin():
        os.sched_setaffinity(0, {core})


def pin_all(pid: int, core: int) -> None:
    """Pin every thread of a process to one core (taskset -a; threads started later inherit it)."""
    if shutil.which("taskset") and can_pin():
        subprocess.run(["taskset", "-apc", str(core), str(pid)], capture_output=True, check=False)


def pinned(command: list[str], core: int | None) -> list[str]:
    """`command` started on one core (taskset -c), so that even its start-up runs there."""
    if core is None or not shutil.which("taskset") or not can_pin():
        return command
    return ["taskset", "-c", str(core), *command]


class Window:
    """What a process and both cores spend over a measurement window: `start()` and `end()` read
    /proc at its edges (the process's CPU and run-queue wait, both cores' busy time, its RSS)."""

    def __init__(
        self, pid: int | None, server_core: int = SERVER_CORE, generator_core: int = GENERATOR_CORE
    ) -> None:
        self.pid = pid
        self.cores = (server_core, generator_core)
        self.started = self.ended = 0.0
        self._first = self._last = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        self.rss_kib_at_start = self.rss_kib = 0

    def _read(self) -> tuple[float, float, float, float, float, float]:
        server, generator = (core_busy_seconds(core) for core in self.cores)
        irq_server, irq_generator = (core_softirq_seconds(core) for core in self.cores)
        if self.pid is None:
            return (0.0, 0.0, server, generator, irq_server, irq_generator)
        cpu, wait = cpu_seconds(self.pid), run_queue_wait_seconds(self.pid)
        return (cpu, wait, server, generator, irq_server, irq_generator)

    def start(self) -> None:
        self.started = time.monotonic()
        self._first = self._read()
        if self.pid is not None:
            self.rss_kib_at_start = rss_kib(self.pid)

    def end(self) -> None:
        self.ended = time.monotonic()
        self._last = self._read()
        if self.pid is not None:
            self.rss_kib = rss_kib(self.pid)

    def _delta(self, index: int) -> float:
        return self._last[index] - self._first[index]

    @property
    def seconds(self) -> float:
        """Wall-clock length of the window (monotonic)."""
        return self.ended - self.started

    @property
    def cpu_seconds(self) -> float:
        """The process's CPU time (all threads) in the window."""
        return self._delta(0)

    @property
    def run_queue_wait_seconds(self) -> float:
        """Time the process's threads were runnable but waited for a CPU in the window."""
        return self._delta(1)

    def other_load_on_server_core(self, seconds: float) -> float:
        """Busy fraction of the server's core not spent by the process, over `seconds`."""
        return max(0.0, (self._delta(2) - self.cpu_seconds) / seconds) if seconds > 0 else 0.0

    @property
    def softirq_seconds(self) -> tuple[float, float]:
        """Softirq time of the server's core and of the generator's core in the window."""
        return (self._delta(4), self._delta(5))

    def generator_core_busy(self, seconds: float) -> float:
        """Busy fraction of the generator's core over `seconds`."""
        return self._delta(3) / seconds if seconds > 0 else 0.0
