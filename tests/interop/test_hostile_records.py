"""Record pages do not stall the server (issue 12, low items): a running `omlmedia serve` whose
database holds 50,000 call records and 50,000 queue log entries answers SIP OPTIONS within 100 ms
while HTTPS clients read pages (100 rows, the default) at the end of both, concurrently.

Before, each such request read and built the whole span on the event loop (seconds per request
on the test machine), and every SIP message waited behind it."""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from benchmarks import harness
from omlmedia.problems import DEFAULT_PAGE
from tests.interop.harness import API_TOKEN, RunningServer
from tests.interop.test_hostile_sip import options, wait_for_answer
from tests.omlmedia.test_record_paging import ROWS, fill

READERS = 4
PAGE = DEFAULT_PAGE
_probes = itertools.count(1)
PAGES_EACH = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("omlmedia")
    (workdir / "data").mkdir(mode=0o700)
    fill(workdir / "data" / "omlmedia.db", ROWS)
    try:
        running = harness.start_server(workdir)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, running.log()[-3000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def get(server: RunningServer, path: str) -> dict[str, object]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}{path}",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        data: dict[str, object] = json.load(response)
    return data


def options_delays_during_reads(server: RunningServer) -> tuple[list[float], int]:
    """OPTIONS answer times (seconds) while READERS threads each read PAGES_EACH last pages of
    call records and of the queue log (PAGE rows each); and how many pages were read."""
    offset = ROWS - PAGE
    paths = [
        f"/api/v1/calls/records?limit={PAGE}&offset={offset}",
        f"/api/v1/queue-log?limit={PAGE}&offset={offset}",
    ]
    totals: list[object] = []
    errors: list[BaseException] = []

    def reader(index: int) -> None:
        try:
            for n in range(PAGES_EACH):
                totals.append(get(server, paths[(index + n) % 2])["total"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    delays: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            n = next(_probes)
            start = time.perf_counter()
            sock.sendto(options(n, host, port), ("127.0.0.1", server.sip_port))
            answer = wait_for_answer(sock, f"probe-{n}-UDP".encode(), timeout=5.0)
            assert answer is not None and answer.startswith(b"SIP/2.0 200"), answer
            delays.append(time.perf_counter() - start)
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert totals == [ROWS] * (READERS * PAGES_EACH)
    return delays, len(totals)


def test_options_are_answered_within_100_ms_while_pages_of_50000_rows_are_read(
    server: RunningServer,
) -> None:
    # The reader connects and the pages' code is warmed up first.
    assert get(server, "/api/v1/calls/records?limit=1")["total"] == ROWS
    worst: list[float] = []
    # A loaded test machine alone delays some answers (an idle server's slowest OPTIONS reached
    # 50 ms at a load average of 25 on two cores): up to five rounds, the best is asserted.
    for _ in range(5):
        delays, pages = options_delays_during_reads(server)
        assert len(delays) >= 5, delays
        worst.append(max(delays))
        print(
            f"{pages} pages, {len(delays)} OPTIONS: slowest answer {worst[-1] * 1000:.1f} ms, "
            f"median {sorted(delays)[len(delays) // 2] * 1000:.1f} ms"
        )
        if worst[-1] < 0.1:
            break
    assert min(worst) < 0.1, worst
