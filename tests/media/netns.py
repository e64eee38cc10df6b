"""Three hosts on one machine for kernel-path tests: caller, server and callee network
namespaces joined by veth links (the server routes between them), IPv4 and IPv6.

The namespaces themselves are benchmarks/netns.py's (the kernel-path benchmark uses the same
hosts); this module adds the check that the machine can run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from benchmarks.netns import Hosts, enter, in_ns, ip, three_hosts

__all__ = [
    "Hosts",
    "enter",
    "in_ns",
    "ip",
    "module_hosts",
    "require_kernel_tools",
    "three_hosts",
]


def require_kernel_tools() -> None:
    """Skip (fail under CI) when namespaces or nftables cannot be used here."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root is needed to create network namespaces")
    if shutil.which("ip") is None:
        problems.append("iproute2 (ip) is not installed")
    if shutil.which("nft") is None:
        problems.append("nftables (nft) is not installed")
    import ctypes.util

    if ctypes.util.find_library("nftables") is None:
        problems.append("libnftables1 is not installed")
    if problems:
        message = "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def module_hosts(prefix: str) -> Iterator[Hosts]:
    """A test module's three hosts (its ``hosts`` fixture yields from it): namespaces named
    after `prefix` and this process, so that concurrent runs do not collide."""
    require_kernel_tools()
    with three_hosts(f"{prefix}{os.getpid() % 100000}") as made:
        yield made
