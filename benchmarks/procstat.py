"""What the benchmarks read from /proc: a process's CPU time and memory, a core's busy time, and
pinning a process to a core (server and load generator on different cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
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


def pin_all(pid: int, core: int) -> None:
    """Pin every thread of a process to one core (taskset -a; threads started later inherit it)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        subprocess.run(["taskset", "-apc", str(core), str(pid)], capture_output=True, check=False)
