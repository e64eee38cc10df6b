"""The queues' and agents' figures over a span the ACD's statistics no longer keep (older than
their retention, `queueing.stats`): the answer says which part it covers (``stats.start`` moved
to ``stats.retained_since``, or an empty span when nothing of it is kept), never a 500."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from omlmedia.api import create_app
from omlmedia.storage import Store
from queueing.stats import DEFAULT_RETENTION
from tests.omlmedia.test_api import T0, config, get, runtime

DAY = 86400.0


async def test_figures_of_periods_older_than_the_retention_say_what_they_cover(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "omlmedia.db")
    acd = runtime(store)
    engine = acd.engine
    old = T0 - 4 * DAY  # a call four days ago, then one now: the old buckets are dropped
    engine.agent_login("agent1", old)
    engine.caller_enter("c1", "support", old + 1)
    engine.offer_answered("c1", "agent1", old + 3)
    engine.call_completed("c1", "agent1", old + 63)
    engine.caller_enter("c2", "support", T0 - 10)
    engine.offer_answered("c2", "agent1", T0 - 5)
    engine.events()
    kept = engine.statistics.retained_since
    assert kept is not None and T0 - DEFAULT_RETENTION - 900 <= kept <= T0 - DEFAULT_RETENTION

    app = create_app(config(), dict, acd=acd, database=tmp_path / "omlmedia.db")
    async with TestClient(TestServer(app)) as client:
        # a span wholly before the window: an empty span, nothing counted, and why
        gone = await get(client, f"/api/v1/queues/support?since={old - 900}&until={old + 900}")
        stats = gone["stats"]
        assert stats["start"] == stats["end"] < kept  # the end of the span asked for
        assert stats["retained_since"] == kept
        assert (stats["offered"], stats["answered"]) == (0, 0)
        agents = await get(client, f"/api/v1/agents?since={old}&until={old + 600}")
        agent1 = next(a for a in agents["agents"] if a["agent"] == "agent1")
        assert agent1["stats"]["answered"] == 0 and agent1["stats"]["retained_since"] == kept
        assert agent1["stats"]["start"] == agent1["stats"]["end"]

        # a span that starts before it: cut to what is kept, which counts the recent call only
        since = await get(client, f"/api/v1/queues/support?since={old - DAY}")
        assert since["stats"]["start"] == kept and since["stats"]["end"] > T0
        assert (since["stats"]["offered"], since["stats"]["answered"]) == (1, 1)
        one = await get(client, f"/api/v1/agents/agent1?since={old - DAY}")
        assert one["stats"]["start"] == kept and one["stats"]["answered"] == 1

        # the current period is inside the window, as ever
        now = (await get(client, "/api/v1/queues/support"))["stats"]
        assert now["start"] <= T0 < now["end"] and now["retained_since"] == kept
        assert now["offered"] == 1
