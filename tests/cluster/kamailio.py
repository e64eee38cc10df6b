"""Kamailio for the tests: `benchmarks.kamailio` (our own instance of
``contrib/kamailio/kamailio.cfg``), plus `require`, which skips a test without Kamailio and fails
it under CI (``make test`` installs it)."""

from __future__ import annotations

import os

import pytest

from benchmarks.kamailio import (
    CONFIG,
    INVITE_TIMEOUT_MS,
    PING_INTERVAL,
    PROBE_THRESHOLD,
    PROBE_WINDOW,
    UAC_RR,
    Kamailio,
    binary,
    calls_total,
    kamailio,
    options_received,
    setup_time,
    setup_times,
    sipp_uac,
    summary,
    wait_probed,
)

__all__ = [
    "CONFIG",
    "INVITE_TIMEOUT_MS",
    "PING_INTERVAL",
    "PROBE_THRESHOLD",
    "PROBE_WINDOW",
    "UAC_RR",
    "Kamailio",
    "calls_total",
    "kamailio",
    "options_received",
    "require",
    "setup_time",
    "setup_times",
    "sipp_uac",
    "summary",
    "wait_probed",
]


def require() -> str:
    """Kamailio's path; skips without it, fails under CI (``make test`` installs it)."""
    try:
        return binary()
    except RuntimeError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
