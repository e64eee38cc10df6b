"""``/metrics`` carries the kernel path's figures from the status: calls on it, packets and
bytes it relayed, fallbacks by reason."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from omlmedia.api import create_app
from omlmedia.metrics import Metrics
from tests.omlmedia.test_api import config
from tests.omlmedia.test_metrics import sample, scrape

KERNEL: dict[str, Any] = {
    "active": True,
    "calls": 3,
    "packets": 12000,
    "bytes": 2064000,
    "installed": 5,
    "failures": 0,
    "fallbacks": {"hold": 1, "hangup": 1},
}


async def scraped_with(media: dict[str, Any]) -> dict[str, Any]:
    status = {"media": media}
    app = create_app(config(), lambda: status, metrics=Metrics(lambda: status))
    async with TestClient(TestServer(app)) as client:
        return await scrape(client)


async def test_kernel_path_figures_are_scraped_from_the_status() -> None:
    m = await scraped_with({"active": 3, "kernel": KERNEL})
    assert sample(m, "omlmedia_kernel_path_active") == 1
    assert sample(m, "omlmedia_kernel_path_calls") == 3
    assert sample(m, "omlmedia_kernel_path_packets_total") == 12000
    assert sample(m, "omlmedia_kernel_path_bytes_total") == 2064000
    assert sample(m, "omlmedia_kernel_path_fallbacks_total", reason="hold") == 1
    assert sample(m, "omlmedia_kernel_path_fallbacks_total", reason="hangup") == 1


async def test_an_inactive_kernel_path_scrapes_as_zero() -> None:
    m = await scraped_with({"kernel": {"active": False, "reason": "no CAP_NET_ADMIN"}})
    assert sample(m, "omlmedia_kernel_path_active") == 0
    assert sample(m, "omlmedia_kernel_path_calls") == 0
    assert sample(m, "omlmedia_kernel_path_packets_total") == 0
