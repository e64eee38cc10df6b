"""benchmarks/kernel_transactions.py at its smallest: a hang-up's removal shares the next
install's transaction (one a call instead of two), and both ways are priced."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.media.netns import require_kernel_tools


def test_shared_transactions_halve_a_calls_transactions_and_are_priced(
    run_benchmark: Callable[..., str],
) -> None:
    require_kernel_tools()
    out = run_benchmark("kernel_transactions", "--installed", "5", "--calls", "40", "--rounds", "1")
    # Shared: one transaction a call, and one more for the removals still queued at the end.
    for way, transactions in (("alone", 2.0), ("shared", 1.0 + 1 / 40)):
        line = re.search(
            rf"^ +{way}: ([\d.]+) ms per call \(install \+ removal\), ([\d.]+) transactions",
            out,
            re.M,
        )
        assert line is not None, out
        assert float(line[1]) > 0 and abs(float(line[2]) - transactions) < 0.006, out
    assert re.search(
        r"^a listing of every call's counters with 5 calls installed: [\d.]+ ms", out, re.M
    ), out
