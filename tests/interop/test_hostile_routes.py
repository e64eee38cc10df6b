"""Route permissions against a running `omlmedia serve` and real sipp peers (issue 12 item 5).

The module's server has the test configuration plus a UDP trunk ``carrier`` trusted at
127.0.0.9 with no ``allowed_targets`` (so the default: every target but ``trunk:`` ones), a
route ``8<number>`` to it, and the digest user ``demo`` limited to ``echo`` and ``trunk:pbx``. A
UDP socket listens where the carrier would be dialled, to prove nothing is sent there.

- The carrier's address calls ``9<number>`` (trunk:pbx): 403, while it still reaches ``echo``.
- ``demo`` calls ``8<number>`` (trunk:carrier): 403.
- ``demo`` calls ``9<number>``, the PBX (sipp UAS) answers, and ``demo`` transfers the PBX party
  with REFER: to ``8<number>`` (a route to a trunk it may not dial) 403; to a bare number at the
  carrier's address (before, the Refer-To host chose the trunk) 404. The carrier never gets an
  INVITE and the calls end cleanly.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks import harness
from tests.interop.harness import (
    DEMO_PASSWORD,
    SCENARIOS,
    RunningServer,
    free_port,
    pbx,
    run_sipp,
)

CARRIER_HOST = "127.0.0.9"
STRANGER = "127.0.0.6"
FROM_CARRIER = ("-i", CARRIER_HOST, "-p", "0", "-m", "2", "-r", "2")
AS_DEMO = ("-i", STRANGER, "-p", "0", "-au", "demo", "-ap", DEMO_PASSWORD)


def _edit(carrier_port: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        users = text.index("[[users]]")
        head, rest = text[:users], text[users:]
        rest = rest.replace('allowed_targets = ["*"]', 'allowed_targets = ["echo", "trunk:pbx"]', 1)
        return (
            head
            + f'[[trunks]]\nname = "carrier"\nhost = "{CARRIER_HOST}"\nport = {carrier_port}\n\n'
            + rest
            + '\n[[routes]]\npattern = "^8(.+)$"\ntarget = "trunk:carrier"\nstrip = 1\n'
        )

    return edit


@pytest.fixture(scope="module")
def carrier() -> Iterator[socket.socket]:
    """A UDP socket where the carrier trunk would be dialled."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CARRIER_HOST, 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, carrier: socket.socket
) -> Iterator[RunningServer]:
    try:
        running = harness.start_server(
            tmp_path_factory.mktemp("omlmedia"), edit_config=_edit(carrier.getsockname()[1])
        )
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def _expect(tmp_path: Path, status: int) -> Path:
    """uac_expect_486.xml expecting `status` instead."""
    path = tmp_path / f"uac_expect_{status}.xml"
    path.write_text(
        (SCENARIOS / "uac_expect_486.xml")
        .read_text()
        .replace('response="486"', f'response="{status}"')
    )
    return path


def _target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.sip_port}"


def _nothing_sent_to(carrier: socket.socket) -> None:
    try:
        data = carrier.recv(65535)
    except BlockingIOError:
        return
    pytest.fail(f"the carrier was sent {data[:200]!r}")


def test_a_udp_trunk_without_permissions_cannot_dial_out_but_reaches_echo(
    server: RunningServer, carrier: socket.socket, tmp_path: Path
) -> None:
    before = server.status()["calls"]["forbidden"]
    refused = run_sipp(
        ["-sf", str(_expect(tmp_path, 403)), _target(server), "-s", "95551234", *FROM_CARRIER],
        tmp_path,
        name="refused",
    )
    assert refused.returncode == 0, refused.output + refused.errors
    assert refused.count("SuccessfulCall") == 2
    echo = run_sipp(
        ["-sn", "uac", _target(server), "-s", "echo", "-i", CARRIER_HOST, "-p", "0", "-m", "1"],
        tmp_path,
        name="echo",
    )
    assert echo.returncode == 0, echo.output + echo.errors
    assert server.status()["calls"]["forbidden"] - before == 2
    log = server.log()
    assert "event=call-forbidden" in log and "reason=route-not-permitted" in log
    assert "trunk=carrier" in log
    _nothing_sent_to(carrier)


def test_a_digest_user_cannot_dial_a_trunk_it_is_not_allowed(
    server: RunningServer, carrier: socket.socket, tmp_path: Path
) -> None:
    scenario = tmp_path / "uac_auth_403.xml"
    scenario.write_text(
        (SCENARIOS / "uac_auth.xml")
        .read_text()
        .split('  <recv response="100" optional="true">\n  </recv>\n  <recv response="180"')[0]
        + '  <recv response="100" optional="true">\n  </recv>\n'
        + '  <recv response="403">\n  </recv>\n'
        + _ack(cseq=2)
        + "</scenario>\n"
    )
    result = run_sipp(
        ["-sf", str(scenario), _target(server), "-s", "85551234", "-m", "1", *AS_DEMO],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert "auth_user=demo" in server.log() and "target=trunk:carrier" in server.log()
    _nothing_sent_to(carrier)


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


@pytest.mark.parametrize(
    ("refer_to", "status"),
    [
        ("sip:85550000@127.0.0.1", 403),
        (f"sip:5550000@{CARRIER_HOST}", 404),
    ],
    ids=["route-to-a-forbidden-trunk", "trunk-chosen-by-the-refer-to-host"],
)
def test_a_refer_reaches_only_what_the_referrer_may_dial(
    server: RunningServer, carrier: socket.socket, tmp_path: Path, refer_to: str, status: int
) -> None:
    scenario = tmp_path / "uac_auth_refer.xml"
    scenario.write_text(
        (SCENARIOS / "uac_auth_refer.xml")
        .read_text()
        .replace("REFER_TO_URI", refer_to)
        .replace("REFER_STATUS", str(status))
    )
    before = server.status()["calls"]["forbidden"]
    with pbx(server, tmp_path, ["-sf", str(SCENARIOS / "uas_answer_pcma.xml")], 1):
        media = ("-mp", str(free_port(pair=True)))
        result = run_sipp(
            ["-sf", str(scenario), _target(server), "-s", "91000", "-m", "1", *AS_DEMO, *media],
            tmp_path,
        )
    assert result.returncode == 0, result.output + result.errors
    status_now = server.wait_idle()
    assert status_now["sip"]["calls"] == 0
    assert status_now["calls"]["forbidden"] - before == (1 if status == 403 else 0)
    if status == 403:
        assert "event=transfer-refused" in server.log()
    _nothing_sent_to(carrier)
