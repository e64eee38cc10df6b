"""The concurrent call cap per digest user against a running `omlmedia serve` and real sipp
callers (issue 12, low items).

The module's server has the test configuration with ``security.max_calls_per_user = 2``. The
digest user ``demo`` holds two calls to ``echo`` (sipp, calls kept up for a while); a third
call of ``demo`` then gets 486 with ``Retry-After`` (counted, logged once); once the two end with
BYE, a new call of ``demo`` connects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import harness
from tests.interop.harness import (
    DEMO_PASSWORD,
    SCENARIOS,
    RunningServer,
    SippResult,
    free_port,
    run_sipp,
)
from tests.interop.pages import calls_over

CALLER = "127.0.0.6"
AS_DEMO = ("-i", CALLER, "-p", "0", "-au", "demo", "-ap", DEMO_PASSWORD)
CAP = 2
AUTH_ANSWERED = '  <recv response="100" optional="true">\n  </recv>\n  <recv response="180"'


def _edit(text: str) -> str:
    assert "[security]\n" in text
    return text.replace("[security]\n", f"[security]\nmax_calls_per_user = {CAP}\n", 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    try:
        running = harness.start_server(tmp_path_factory.mktemp("omlmedia"), edit_config=_edit)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def _held_call(tmp_path: Path) -> Path:
    """uac_auth.xml keeping the answered call up for 4 s before its BYE."""
    text = (SCENARIOS / "uac_auth.xml").read_text()
    bye = text.index('  <send retrans="500">', text.index('<recv response="200" rtd="true">'))
    path = tmp_path / "uac_auth_held.xml"
    path.write_text(text[:bye] + '  <pause milliseconds="4000"/>\n' + text[bye:])
    return path


def _expect_486(tmp_path: Path) -> Path:
    """uac_auth.xml whose authenticated INVITE must get 486 with Retry-After (then its ACK)."""
    text = (SCENARIOS / "uac_auth.xml").read_text()
    head = text.split(AUTH_ANSWERED)[0]
    path = tmp_path / "uac_auth_486.xml"
    path.write_text(
        head
        + '  <recv response="100" optional="true">\n  </recv>\n'
        + '  <recv response="486">\n'
        + '    <action>\n      <ereg regexp="^ *30$" search_in="hdr" header="Retry-After:"'
        + ' check_it="true" assign_to="retry"/>\n    </action>\n  </recv>\n'
        + _ack(cseq=2)
        + '  <Reference variables="retry"/>\n'
        + "</scenario>\n"
    )
    return path


def _ack(cseq: int) -> str:
    return f"""  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""


def _wait_calls(server: RunningServer, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.status()["sip"]["calls"] == count:
            return
        time.sleep(0.05)
    pytest.fail(f"the server never held {count} calls: {server.status()['sip']}")


def test_a_digest_user_beyond_its_call_cap_gets_486_and_connects_again_once_calls_end(
    server: RunningServer, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.sip_port}"
    held: list[SippResult] = []
    media = ("-mp", str(free_port(pair=True)))
    scenario = str(_held_call(tmp_path))
    hold = ["-sf", scenario, target, "-s", "echo", "-m", "2", "-l", "2", "-r", "10", *AS_DEMO]
    holder = threading.Thread(
        target=lambda: held.append(
            run_sipp(
                [*hold, *media],
                tmp_path,
                name="held",
            )
        )
    )
    holder.start()
    try:
        _wait_calls(server, CAP)
        refused = run_sipp(
            ["-sf", str(_expect_486(tmp_path)), target, "-s", "echo", "-m", "1", *AS_DEMO],
            tmp_path,
            name="refused",
        )
    finally:
        holder.join(timeout=120)
    assert refused.returncode == 0, refused.output + refused.errors
    assert held, "the held calls' sipp did not finish"
    assert held[0].returncode == 0, held[0].output + held[0].errors
    assert held[0].count("SuccessfulCall") == CAP
    calls_over(server)
    again = run_sipp(
        ["-sf", str(SCENARIOS / "uac_auth.xml"), target, "-s", "echo", "-m", "1", *AS_DEMO],
        tmp_path,
        name="again",
    )
    assert again.returncode == 0, again.output + again.errors
    assert server.status()["calls"]["over_limit"] == 1
    log = server.log()
    assert log.count("event=call-limit") == 1, log[-4000:]
    assert "cap=user" in log and "key=demo" in log
