"""benchmarks/kernel_relay.py runs at a tiny size, its far ends on hosts of their own behind veth
(the default topology): the kernel path relays the calls with no loss and costs its server next to
nothing, and the userspace relay is measured beside it."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.media.netns import require_kernel_tools


def test_the_kernel_path_carries_the_load_and_its_server_spends_nearly_nothing(
    run_benchmark: Callable[..., str],
) -> None:
    require_kernel_tools()
    out = run_benchmark(
        "kernel_relay", "--calls", "10", "--duration", "2", "--warmup", "1", "--skip-rtpengine"
    )
    rows = {
        m["target"]: m
        for m in re.finditer(
            r"^ +(?P<target>omlmedia(?:-kernel)?) N=10 +(?P<ok>ok |BAD) loss +(?P<loss>[\d.]+) % +"
            r"(?P<packets>\d+) pkts \((?P<kernel>\d+) by the kernel\) +"
            r"process CPU +(?P<cpu>[\d.]+) s",
            out,
            re.M,
        )
    }
    assert "topology netns" in out
    assert set(rows) == {"omlmedia", "omlmedia-kernel"}, out
    kernel, userspace = rows["omlmedia-kernel"], rows["omlmedia"]
    assert kernel["ok"] == "ok " and userspace["ok"] == "ok ", out
    # 10 calls, 2 legs each way at 50 packets/s for 2 s: the kernel moved at least that many.
    assert int(kernel["kernel"]) >= 2 * 10 * 50 * 2, out
    assert int(userspace["kernel"]) == 0
    assert float(kernel["cpu"]) < float(userspace["cpu"]), out
    assert re.search(r"^ +omlmedia-kernel: 10$", out, re.M), out
    # The rules are stateless: the server host tracks no connection for the relayed RTP.
    assert re.search(r"omlmedia-kernel N=10 .* conntrack entries 0\b", out), out
    assert re.search(r"^  N=10: omlmedia \d+ .*; omlmedia-kernel \d+ ", out, re.M), out
