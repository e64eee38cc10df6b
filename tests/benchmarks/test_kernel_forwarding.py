"""benchmarks/kernel_forwarding.py at its smallest: every set-up forwards every packet, and the
kernel path's rules counted each of them."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.media.netns import require_kernel_tools

SETUPS = (
    "forwarding",
    "forwarding+conntrack",
    "kernel path",
    "kernel path+conntrack",
    "conntrack NAT",
)


def test_each_way_of_forwarding_delivers_every_packet_and_is_priced(
    run_benchmark: Callable[..., str],
) -> None:
    require_kernel_tools()
    out = run_benchmark("kernel_forwarding", "--packets", "2000", "--repeat", "1")
    for setup in SETUPS:
        line = re.search(
            rf"^ +{re.escape(setup)}: +([\d.]+) us/packet, (\d+)/2000 delivered(.*)$", out, re.M
        )
        assert line is not None, out
        assert float(line[1]) > 0 and int(line[2]) == 2000, out
        if setup.startswith("kernel path"):
            assert line[3] == ", 2000 counted by the rules", out
        median = re.search(rf"^ +{re.escape(setup)}: +[\d.]+ us \([+-][\d.]+ over", out, re.M)
        assert median is not None, out
