"""The shared ACD's figures on a real node's ``/metrics`` (``[cluster] acd = "shared"``).

One `omlmedia serve` node with a throwaway Redis (the ACD's stream) and sipp callers dialling the
``support`` queue (no agent is Ready: they wait). Proved here, by scraping ``/metrics`` as
Prometheus would (bearer token, text format):

- the node takes the lease at start: owner 1, epoch at least 1, one acquisition; its start-up
  summary says the ACD is shared, and it warns that its records are on SQLite;
- a caller entering the queue moves the inputs submitted, appended and applied;
- Redis frozen (SIGSTOP) past the lease: the node steps down (owner 0, one step-down, Redis
  errors counted) and a caller arriving meanwhile leaves its input pending; Redis back
  (SIGCONT): the node owns the ACD again with a higher epoch, the pending input is appended and
  both callers wait;
- the status's ``cluster.acd`` matches its schema in the served OpenAPI document.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema_rs  # schemathesis's validator (the test extra)
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import harness
from benchmarks.crossnode import sip_port
from tests.cluster import redis
from tests.cluster.test_crossnode import SECRET
from tests.cluster.test_shared_database import api
from tests.interop.harness import SCENARIOS, start_sipp

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


def _shared_acd(name: str, port: int, redis_url: str, secret: Path) -> Callable[[str], str]:
    """The node's configuration: the harness's, on `port`, with the cluster's one ACD."""

    def edit(text: str) -> str:
        text = re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {port}", text, count=1)
        return text + (
            f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\n'
            f'secret_file = "{secret}"\nacd = "shared"\n'
            f'[cluster.nodes.{name}]\nsip = "127.0.0.1:{port}"\n'
        )

    return edit


def scrape(node: harness.RunningServer) -> Metrics:
    request = urllib.request.Request(
        f"https://127.0.0.1:{node.http_port}/metrics",
        headers={"Authorization": f"Bearer {harness.API_TOKEN}"},
    )
    with urllib.request.urlopen(request, context=_TLS, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(m: Metrics, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def inputs(m: Metrics, event: str) -> float:
    return value(m, "omlmedia_acd_inputs_total", event=event)


def until(node: harness.RunningServer, what: str, check: Callable[[Metrics], bool]) -> Metrics:
    """Scrape until `check` holds (generous deadline: the machine is shared); the last scrape."""
    deadline = time.monotonic() + 20
    while True:
        m = scrape(node)
        if check(m):
            return m
        assert time.monotonic() < deadline, f"{what}: {_acd(m)}"
        time.sleep(0.1)


def _acd(m: Metrics) -> dict[str, float]:
    return {f"{n}{dict(ls) or ''}": v for (n, ls), v in m.items() if n.startswith("omlmedia_acd")}


def waiting(node: harness.RunningServer) -> int:
    status, view = api(node, "GET", "/api/v1/status")
    assert status == 200, view
    return int(view["queues"]["support"]["waiting"])


def caller(node: harness.RunningServer, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """A sipp caller into the queue that waits until the server hangs up."""
    return start_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_wait_in_queue.xml"),
            f"127.0.0.1:{node.sip_port}",
            "-s",
            "support",
            "-m",
            "1",
            "-timeout",
            "90",
        ],
        workdir,
        name,
    )


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    redis.require()
    with redis.redis() as instance:
        yield instance


def test_the_shared_acd_figures_move_with_callers_and_with_redis_frozen_past_the_lease(
    shared: redis.Redis, tmp_path: Path
) -> None:
    secret = tmp_path / "cluster.secret"
    secret.write_bytes(SECRET)
    port = sip_port()
    node = harness.start_server(
        tmp_path / "a", edit_config=_shared_acd("a", port, shared.url, secret)
    )
    node.ports["sip"] = port
    callers: list[subprocess.Popen[bytes]] = []
    frozen = False
    try:
        start = until(node, "the node owns the ACD", lambda m: value(m, "omlmedia_acd_owner") == 1)
        epoch = value(start, "omlmedia_acd_epoch")
        assert epoch >= 1, _acd(start)
        assert value(start, "omlmedia_acd_lease_acquisitions_total") == 1, _acd(start)
        assert value(start, "omlmedia_acd_step_downs_total") == 0, _acd(start)
        assert value(start, "omlmedia_acd_remote_offers") == 0, _acd(start)
        log = node.log()  # serve's start-up summary, and its warning: records on SQLite here
        assert "  ACD: shared over Redis (node a)" in log, log[-3000:]
        assert "warning: cluster.acd: the ACD is shared but the records are in" in log

        # 1. A caller enters the queue: its input is submitted, appended and applied.
        callers.append(caller(node, tmp_path, "first"))
        entered = until(
            node,
            "the caller's input went through the stream",
            lambda m: (
                all(inputs(m, e) > inputs(start, e) for e in ("submitted", "appended"))
                and inputs(m, "applied") > inputs(start, "applied")
                and value(m, "omlmedia_acd_pending_inputs") == 0
            ),
        )
        assert waiting(node) == 1
        assert inputs(entered, "dropped") == inputs(entered, "malformed") == 0, _acd(entered)

        # 2. Redis frozen past the lease (3 s): the node steps down and counts the errors; a
        # caller arriving meanwhile leaves its input pending.
        os.kill(shared.process.pid, signal.SIGSTOP)
        frozen = True
        down = until(  # owner is 0 as soon as the lease's local deadline passes, a moment
            # before the renewal in flight fails and the node steps down (epoch 0)
            node,
            "the node steps down",
            lambda m: (
                value(m, "omlmedia_acd_owner") == 0
                and value(m, "omlmedia_acd_step_downs_total") == 1
            ),
        )
        assert value(down, "omlmedia_acd_epoch") == 0, _acd(down)
        callers.append(caller(node, tmp_path, "second"))
        pending = until(
            node,
            "the second caller's input waits for Redis",
            lambda m: value(m, "omlmedia_acd_pending_inputs") >= 1,
        )
        assert inputs(pending, "submitted") > inputs(entered, "submitted"), _acd(pending)
        os.kill(shared.process.pid, signal.SIGCONT)
        frozen = False

        # 3. Redis back: the node owns the ACD again with a new epoch, nothing is left pending,
        # and both callers wait in the queue.
        back = until(
            node,
            "the node owns the ACD again, its inputs appended",
            lambda m: (
                value(m, "omlmedia_acd_owner") == 1 and value(m, "omlmedia_acd_pending_inputs") == 0
            ),
        )
        assert value(back, "omlmedia_acd_epoch") > epoch, _acd(back)
        assert value(back, "omlmedia_acd_lease_acquisitions_total") == 2, _acd(back)
        assert value(back, "omlmedia_acd_redis_errors_total") > 0, _acd(back)
        assert inputs(back, "appended") > inputs(entered, "appended"), _acd(back)
        deadline = time.monotonic() + 20
        while waiting(node) != 2:
            assert time.monotonic() < deadline, "the second caller does not wait in the queue"
            time.sleep(0.1)
        assert inputs(back, "dropped") == 0, _acd(back)

        # 4. The status's cluster.acd matches the served document, figure by figure.
        status, view = api(node, "GET", "/api/v1/status")
        assert status == 200, view
        _, document = api(node, "GET", "/api/v1/openapi.json")
        schema = document["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]
        acd = schema["application/json"]["schema"]["properties"]["cluster"]["properties"]["acd"]
        jsonschema_rs.validate(acd, view["cluster"]["acd"])
        assert set(view["cluster"]["acd"]) == set(acd["anyOf"][1]["properties"])
    finally:
        if frozen:
            os.kill(shared.process.pid, signal.SIGCONT)
        assert node.stop() == 0, node.log()[-3000:]
        for sipp in callers:  # the node's stop hung them up
            try:
                sipp.wait(30)
            except subprocess.TimeoutExpired:
                sipp.kill()
                sipp.wait()
