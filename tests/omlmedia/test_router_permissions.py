"""Route permissions (issue 12 item 5): which route targets each trunk and each digest user may
reach, checked by the router for new calls and by the B2BUA for REFER; `check-config`'s warning
for a UDP trunk that can dial out. No sockets: the SIP core is a recorder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

import pytest

from omlmedia.config import (
    Config,
    ConfigError,
    RouteAction,
    load_config,
    load_demo_config,
    may_reach,
    permission_warnings,
)
from omlmedia.router import CallRouter, RouteTable
from omlmedia.targets import RouterStats, route_permitted
from sip.endpoint import Endpoint
from sip.service import SipService
from sip.ua import IncomingCall
from tests.omlmedia.deskfakes import FakeClock, FakeService, inbound_call
from tests.omlmedia.test_router import Taker

TOKEN = hashlib.sha256(b"t").hexdigest()
HA1 = "0" * 32

CONFIG = f"""
[api]
token_sha256 = "{TOKEN}"

[[trunks]]
name = "pbx"
host = "127.0.0.1"
port = 5080

[[trunks]]
name = "carrier"
host = "192.0.2.10"
transport = "tcp"
allowed_targets = ["campaign:*", "echo", "trunk:pbx"]

[[trunks]]
name = "lab"
host = "192.0.2.20"
allowed_targets = ["*"]

[[users]]
name = "alice"
ha1_md5 = "{HA1}"

[[users]]
name = "bob"
ha1_md5 = "{HA1}"
allowed_targets = ["echo", "trunk:carrier"]

[[routes]]
user = "600"
target = "echo"

[[routes]]
user = "601"
target = "moh"

[[routes]]
pattern = "^9(\\\\d+)$"
target = "trunk:pbx"
strip = 1

[[routes]]
pattern = "^8(\\\\d+)$"
target = "trunk:carrier"
strip = 1
"""


def load(tmp_path: Path, text: str = CONFIG) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(text)
    return load_config(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.errors


class World:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.service = FakeService(FakeClock())
        self.media = Taker(RouteAction.ECHO, RouteAction.MOH)
        self.b2bua = Taker(RouteAction.TRUNK)
        self.stats = RouterStats()
        self.router = CallRouter(
            config,
            cast(SipService, self.service),
            RouteTable(config),
            self.stats,
            [self.media, self.b2bua],
        )

    def offer(
        self,
        number: str,
        *,
        trunk: str | None = None,
        user: str | None = None,
        transport: str = "udp",
    ) -> int | None:
        """Offer a call; the status it was refused with, None when a target took it."""
        call = inbound_call(number)
        call.trunk, call.user = trunk, user
        call.source = Endpoint(transport, "192.0.2.99", 5060)
        self.router.on_event(IncomingCall(call))
        rejects = [a[2] for a in self.service.ua.of(call) if a[0] == "reject"]
        if rejects:
            assert call.app is None
            return int(rejects[0])
        assert call.app is not None
        return None


def test_the_default_reaches_every_target_but_trunks() -> None:
    assert may_reach(None, "echo") and may_reach(None, "campaign:sales")
    assert not may_reach(None, "trunk:pbx")
    assert may_reach(("*",), "trunk:pbx")
    assert may_reach(("campaign:*",), "campaign:sales") and not may_reach(("campaign:*",), "echo")
    assert not may_reach((), "echo")


def test_a_udp_trunk_without_allowed_targets_cannot_dial_out_but_reaches_services(
    tmp_path: Path,
) -> None:
    world = World(load(tmp_path))
    assert world.offer("600", trunk="pbx") is None
    assert world.offer("95551234", trunk="pbx") == 403
    assert world.offer("85551234", trunk="pbx") == 403
    assert world.stats.forbidden == 2
    assert world.b2bua.events == []


def test_a_trunk_reaches_only_what_its_allowed_targets_list(tmp_path: Path) -> None:
    world = World(load(tmp_path))
    assert world.offer("600", trunk="carrier", transport="tcp") is None
    assert world.offer("601", trunk="carrier", transport="tcp") == 403
    assert world.offer("95551234", trunk="carrier", transport="tcp") is None
    assert world.offer("85551234", trunk="carrier", transport="tcp") == 403
    assert world.offer("95551234", trunk="lab") is None
    assert world.offer("85551234", trunk="lab") is None


def test_a_tcp_trunk_s_address_over_udp_never_reaches_a_trunk_route(tmp_path: Path) -> None:
    """The carrier speaks TCP: a UDP INVITE from its address may be forged, so it does not dial
    out, though it still reaches the services."""
    world = World(load(tmp_path))
    assert world.offer("95551234", trunk="carrier", transport="udp") == 403
    assert world.offer("600", trunk="carrier", transport="udp") is None
    config = world.config
    call = inbound_call("95551234")
    call.trunk, call.source = "carrier", Endpoint("udp", "192.0.2.10", 5060)
    assert route_permitted(config, call, "trunk:pbx") == "udp-from-stream-trunk"


def test_digest_users_reach_trunks_only_when_listed(tmp_path: Path) -> None:
    world = World(load(tmp_path))
    assert world.offer("600", user="alice") is None
    assert world.offer("95551234", user="alice") == 403
    assert world.offer("600", user="bob") is None
    assert world.offer("601", user="bob") == 403
    assert world.offer("85551234", user="bob") is None
    assert world.offer("95551234", user="bob") == 403
    # A caller that is neither (none exists today) gets the default.
    assert world.offer("95551234") == 403
    assert world.offer("600") is None


def test_a_forbidden_route_is_logged_with_who_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(load(tmp_path))
    with caplog.at_level("INFO", logger="omlmedia.router"):
        assert world.offer("95551234", user="alice") == 403
    [record] = [r for r in caplog.records if r.getMessage() == "call-forbidden"]
    assert record.levelname == "WARNING"
    fields = record.__dict__["omlmedia_fields"]
    assert fields["status"] == 403 and fields["reason"] == "route-not-permitted"
    assert fields["target"] == "trunk:pbx" and fields["auth_user"] == "alice"
    assert fields["source"] == "udp:192.0.2.99:5060"


@pytest.mark.parametrize(
    ("where", "value", "error"),
    [
        ("trunks", '["nowhere"]', 'trunks[0].allowed_targets[0]: unknown target "nowhere"'),
        ("trunks", '["trunk:gone"]', 'trunks[0].allowed_targets[0]: no trunk matches "gone"'),
        ("users", '["echo", "voicemail"]', "users[0].allowed_targets[1]: unknown target"),
        ("users", '"echo"', "users[0].allowed_targets: expected an array of strings"),
        ("users", "[1]", "users[0].allowed_targets[0]: expected a string"),
    ],
)
def test_check_config_names_the_bad_allowed_targets_entry(
    tmp_path: Path, where: str, value: str, error: str
) -> None:
    entry = (
        '[[trunks]]\nname = "pbx"\nhost = "127.0.0.1"\n'
        if where == "trunks"
        else f'[[users]]\nname = "u"\nha1_md5 = "{HA1}"\n'
    )
    text = f'[api]\ntoken_sha256 = "{TOKEN}"\n\n{entry}allowed_targets = {value}\n'
    found = errors(tmp_path, text)
    assert any(e.replace("'", '"').startswith(error) for e in found), found


def test_check_config_warns_when_a_udp_trunk_can_reach_a_trunk_route(tmp_path: Path) -> None:
    config = load(tmp_path)
    [warning] = permission_warnings(config)
    assert warning.startswith("trunks[2].allowed_targets: UDP trunk 'lab' can reach")
    assert "routes[2] (trunk:pbx)" in warning and "routes[3] (trunk:carrier)" in warning
    # The TCP carrier reaches trunk:pbx without a warning; the UDP pbx reaches no trunk route.
    assert not any("'carrier'" in w or "'pbx'" in w for w in permission_warnings(config))


def test_the_demo_keeps_calling_out_from_loopback_and_as_the_demo_user() -> None:
    config = load_demo_config()
    world = World(config)
    assert world.offer("91234", trunk="pbx") is None
    assert world.offer("91234", user="demo") is None
    assert world.offer("echo", user="demo") is None


def test_check_config_prints_the_udp_trunk_warning_and_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omlmedia.cli import main

    base = (
        "[[trunks]]\nname = 'pbx'\nhost = '192.0.2.1'\ntransport = '{transport}'\n"
        "allowed_targets = ['*']\n[[routes]]\npattern = '^9(.+)$'\ntarget = 'trunk:pbx'\n"
    )
    path = tmp_path / "udp.toml"
    path.write_text(base.format(transport="udp"))
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(
        "omlmedia: warning: trunks[0].allowed_targets: UDP trunk 'pbx' can reach "
        "routes[0] (trunk:pbx); whoever forges its source address can dial out"
    ), err
    path.write_text(base.format(transport="tcp"))
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
