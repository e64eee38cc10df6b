"""Monitoring across nodes over the encrypted internal leg (``[cluster] tls_cert``, ``tls_key``,
``tls_ca``: SIP over mutual TLS between the nodes' private listeners, SDES-SRTP media).

Real peers: nodes a and b with the cluster's certificates and one ACD (the `tls_nodes` fixture of
`tests.cluster.test_crossnode_tls`), a baresip caller (440 Hz) dialling ``support`` on node a,
agent1 answering in Chromium on node b (660 Hz), the supervisor's page in Chromium on node a.
Proved here: the supervisor on node a hears both tones through a monitor leg to node b that went
over the TLS link (node b admitted it there: with the certificates set, a leg in clear is
refused) with SRTP offered and answered, and the caller hanging up ends the monitoring and leaves
no call on either node. Modes, refusals and the clear leg: `tests.cluster.test_monitor_cluster`.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from benchmarks import harness
from tests.cluster.test_cluster_queues import _log_in
from tests.cluster.test_crossnode import both_clean
from tests.cluster.test_crossnode_tls import pki, tls_nodes  # noqa: F401 (fixtures)
from tests.cluster.test_monitor_cluster import AGENT_TONE, CALLER_TONE, SUPERVISOR_TONE
from tests.cluster.test_wallboard_cluster import SUPERVISOR_PASSWORD, supervisor_token
from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.pages import log_in
from tests.interop.test_monitor import hears

CALL_SECONDS = 20
"""The caller's call: it hangs up by itself while the supervisor listens."""


async def test_a_supervisor_on_node_a_listens_to_a_call_on_node_b_over_the_tls_link_with_srtp(
    tls_nodes: list[harness.RunningServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    a, b = tls_nodes
    await asyncio.to_thread(supervisor_token, a)
    async with (
        chromium(tmp_path / "agent", AGENT_TONE) as agent_browser,
        chromium(tmp_path / "supervisor", SUPERVISOR_TONE) as supervisor_browser,
    ):
        agent = await _log_in(agent_browser, b)
        state = agent.locator("#state")
        await agent.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=10000)
        supervisor = await supervisor_browser.new_page()
        await supervisor.goto(f"https://127.0.0.1:{a.http_port}/supervisor/")
        await log_in(supervisor, "sue", SUPERVISOR_PASSWORD)
        panel = supervisor.get_by_role("complementary", name="Monitoring")
        await expect(panel.locator("#monitor-channel")).to_have_text("connected", timeout=15000)
        mode = panel.locator("#monitor-mode")

        target = f"sip:support@127.0.0.1:{a.sip_port}"
        caller = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: dial(
                tmp_path / "caller", target, CALL_SECONDS, tone_hz=CALLER_TONE, codecs="PCMU"
            ),
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        await agent.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=10000)

        row = supervisor.locator("#call-rows tr").filter(has_text="agent1")
        await expect(row).to_have_count(1, timeout=10000)
        await row.get_by_role("button").click()
        await panel.get_by_role("button", name="Listen", exact=True).click()
        await expect(mode).to_contain_text("Listening", timeout=10000)
        await hears(
            supervisor, "monitor-audio", (CALLER_TONE, AGENT_TONE), (), "supervisor, over TLS"
        )
        run = await caller
        await expect(mode).to_have_text("Not monitoring", timeout=15000)
        await expect(panel.locator("#monitor-status")).to_contain_text("The call ended")

    assert run.established, run.output[-3000:]
    # Node b answered the leg it admitted over the TLS link with SRTP (SDES keys; an offer in
    # clear would have been refused: 488), and nothing is left on either node.
    assert re.search(r"event=monitor-leg-answered .*srtp=true", b.log()), b.log()[-3000:]
    assert not re.search(r"event=monitor-leg-refused", b.log()), b.log()[-3000:]
    assert "event=monitor-leg-placed" in a.log(), a.log()[-3000:]
    await both_clean(tls_nodes, "after the monitored caller hung up")
