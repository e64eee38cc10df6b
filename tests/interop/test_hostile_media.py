"""Hostile offers against a running `omlmedia serve`, with real sipp callers (issue 12):

- a digest user whose SDP names the cloud metadata address (169.254.169.254) for its media gets
  488, counted in ``calls.media_refused`` and logged, and nothing is sent there; the same user
  with its own address connects;
- a trunk that does not set ``allow_sdes_over_udp`` offering SDES keys (RTP/SAVP, ``a=crypto``)
  over UDP gets 488, while its plain RTP offer connects.

The module's server has the test configuration without the PBX trunk's ``allow_sdes_over_udp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import harness
from tests.interop.harness import DEMO_PASSWORD, SCENARIOS, RunningServer, run_sipp
from tests.interop.pages import calls_over

CALLER = "127.0.0.8"
AS_DEMO = ("-i", CALLER, "-p", "0", "-au", "demo", "-ap", DEMO_PASSWORD)
OWN_C_LINE = "c=IN IP[local_ip_type] [local_ip]"
SDES_MEDIA = (
    "m=audio [media_port] RTP/SAVP 0 101\n"
    "      a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
)


def _edit(text: str) -> str:
    opt_in = "allow_sdes_over_udp = true\n"
    assert text.count(opt_in) == 1
    return text.replace(opt_in, "")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    try:
        running = harness.start_server(tmp_path_factory.mktemp("omlmedia"), edit_config=_edit)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, "server did not stop cleanly:\n" + running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def _authenticated_488(tmp_path: Path, c_line: str) -> Path:
    """uac_auth_forbidden.xml whose SDP names `c_line` and whose authorized INVITE gets 488."""
    text = (SCENARIOS / "uac_auth_forbidden.xml").read_text()
    assert text.count(OWN_C_LINE) == 2 and text.count('<recv response="403">') == 1
    text = text.replace(OWN_C_LINE, c_line).replace(
        '<recv response="403">', '<recv response="488">'
    )
    path = tmp_path / "uac_auth_488.xml"
    path.write_text(text)
    return path


def _sdes_488(tmp_path: Path) -> Path:
    """uac_expect_603.xml offering SDES keys (RTP/SAVP) and expecting 488."""
    text = (SCENARIOS / "uac_expect_603.xml").read_text()
    plain = "m=audio [media_port] RTP/AVP 0 101\n"
    assert text.count(plain) == 1 and text.count('<recv response="603">') == 1
    text = text.replace(plain, SDES_MEDIA).replace('<recv response="603">', '<recv response="488">')
    path = tmp_path / "uac_sdes_488.xml"
    path.write_text(text)
    return path


def test_a_user_naming_the_metadata_address_for_its_media_gets_488(
    server: RunningServer, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.sip_port}"
    before = server.status()["calls"]["media_refused"]
    scenario = _authenticated_488(tmp_path, "c=IN IP4 169.254.169.254")
    refused = run_sipp(
        ["-sf", str(scenario), target, "-s", "echo", "-m", "1", *AS_DEMO], tmp_path, name="meta"
    )
    assert refused.returncode == 0, refused.output + refused.errors + server.log()[-3000:]
    assert server.status()["calls"]["media_refused"] - before == 1
    log = server.log()
    assert "reason=media-address-link-local" in log and "169.254.169.254" in log, log[-3000:]
    allowed = run_sipp(
        ["-sf", str(SCENARIOS / "uac_auth.xml"), target, "-s", "echo", "-m", "1", *AS_DEMO],
        tmp_path,
        name="own",
    )
    assert allowed.returncode == 0, allowed.output + allowed.errors + server.log()[-3000:]
    assert server.status()["calls"]["media_refused"] - before == 1
    calls_over(server)


def test_a_trunk_offering_sdes_keys_over_udp_without_opting_in_gets_488(
    server: RunningServer, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.sip_port}"
    before = server.status()["calls"]["media_refused"]
    as_pbx = ("-i", "127.0.0.1", "-p", "0")
    refused = run_sipp(
        ["-sf", str(_sdes_488(tmp_path)), target, "-s", "echo", "-m", "1", *as_pbx],
        tmp_path,
        name="sdes",
    )
    assert refused.returncode == 0, refused.output + refused.errors + server.log()[-3000:]
    assert server.status()["calls"]["media_refused"] - before == 1
    assert "reason=sdes-without-tls" in server.log()
    plain = run_sipp(
        ["-sn", "uac", target, "-s", "echo", "-m", "1", *as_pbx],
        tmp_path,
        name="plain",
    )
    assert plain.returncode == 0, plain.output + plain.errors + server.log()[-3000:]
    assert server.status()["calls"]["media_refused"] - before == 1
    calls_over(server)
