"""``/metrics`` carries the shared ACD's figures from the status's ``cluster.acd`` (lease, epoch,
inputs by outcome, Redis errors, snapshots), and none of them when the node's ACD is its own.
tests/cluster/test_acd_metrics.py scrapes them from a real node with Redis and a sipp caller."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from omlmedia.api import create_app
from omlmedia.metrics import Metrics
from tests.omlmedia.test_api import config
from tests.omlmedia.test_metrics import sample, scrape

ACD: dict[str, Any] = {  # the shape of `Server._shared_acd_status`
    "owner": True,
    "epoch": 4,
    "followed": "1733490000000-3",
    "pending": 2,
    "remote_offers": 1,
    "skipped": 1,
    "submitted": 12,
    "appended": 10,
    "dropped": 0,
    "redis_errors": 3,
    "acquisitions": 2,
    "step_downs": 1,
    "applied": 25,
    "published": 0,
    "refused_publish": 0,
    "malformed": 1,
    "accepted": 0,
    "fenced": 0,
    "nodes_lost": 1,
    "rebuild_seconds": 0.0,
    "rebuild_entries": 0,
    "snapshots": 5,
    "snapshot_seconds": 0.012,
    "trimmed": 4000,
    "restored_from": "",
}


async def scraped_with(acd: dict[str, Any]) -> dict[str, Any]:
    status = {"cluster": {"crossnode": {}, "acd": acd}}
    app = create_app(config(), lambda: status, metrics=Metrics(lambda: status))
    async with TestClient(TestServer(app)) as client:
        return await scrape(client)


async def test_the_shared_acd_figures_are_scraped_from_the_status() -> None:
    m = await scraped_with(ACD)
    assert sample(m, "omlmedia_acd_owner") == 1
    assert sample(m, "omlmedia_acd_epoch") == 4
    assert sample(m, "omlmedia_acd_pending_inputs") == 2
    assert sample(m, "omlmedia_acd_remote_offers") == 1
    for event in ("submitted", "appended", "dropped", "applied", "malformed", "skipped"):
        assert sample(m, "omlmedia_acd_inputs_total", event=event) == ACD[event], event
    assert sample(m, "omlmedia_acd_redis_errors_total") == 3
    assert sample(m, "omlmedia_acd_lease_acquisitions_total") == 2
    assert sample(m, "omlmedia_acd_step_downs_total") == 1
    assert sample(m, "omlmedia_acd_nodes_lost_total") == 1
    assert sample(m, "omlmedia_acd_snapshots_total") == 5
    assert sample(m, "omlmedia_acd_trimmed_entries_total") == 4000
    assert sample(m, "omlmedia_acd_snapshot_seconds") == 0.012


async def test_a_follower_that_is_not_owner_scrapes_owner_and_epoch_as_zero() -> None:
    m = await scraped_with({**ACD, "owner": False, "epoch": 0})
    assert sample(m, "omlmedia_acd_owner") == 0
    assert sample(m, "omlmedia_acd_epoch") == 0


async def test_a_node_whose_acd_is_its_own_has_no_shared_acd_families() -> None:
    m = await scraped_with({})
    assert not [name for name in m if name.startswith("omlmedia_acd_")], sorted(m)
    assert "omlmedia_events_published_total" in m  # the rest is there


async def test_odd_values_in_the_status_scrape_as_zero_not_as_a_failed_scrape() -> None:
    m = await scraped_with({"owner": "yes", "epoch": None, "pending": float("nan"), "trimmed": "x"})
    assert sample(m, "omlmedia_acd_owner") == 0
    assert sample(m, "omlmedia_acd_epoch") == 0
    assert sample(m, "omlmedia_acd_pending_inputs") == 0
    assert sample(m, "omlmedia_acd_trimmed_entries_total") == 0
    assert sample(m, "omlmedia_acd_inputs_total", event="applied") == 0
