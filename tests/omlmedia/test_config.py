"""Tests of omlmedia.config: the demo, files, overrides, and every validation rule."""

from __future__ import annotations

import hashlib
import ipaddress
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omlmedia.config import (
    ApiConfig,
    Config,
    ConfigError,
    Overrides,
    RouteAction,
    _build,
    digest_ha1,
    load_config,
    load_demo_config,
)
from sip.endpoint import Endpoint

TOKEN_SHA256 = hashlib.sha256(b"s3cret-token").hexdigest()
MINIMAL = f"""
[api]
token_sha256 = "{TOKEN_SHA256}"
"""
FULL = f"""
[server]
listen = ["0.0.0.0", "::1"]
sip_port = 5080
sip_tls_port = false
http_port = 9443
rtp_port_range = [30000, 30999]
data_dir = "state"
log_level = "DEBUG"
log_format = "json"
user_agent = "Acme PBX"

[sip]
t1 = 1
t2 = 8.0
t4 = 10
max_message_size = 4096
tcp_idle_timeout = 60
realm = "acme.example"

[security]
rate_limit_requests = 20
rate_limit_window = 5
ban_time = 0
trusted_networks = ["10.0.0.0/8", "2001:db8::/32"]

[api]
token_sha256 = "{TOKEN_SHA256.upper()}"

[[trunks]]
name = "carrier"
host = "sip.carrier.example"
transport = "tls"
trusted_sources = ["192.0.2.0/24", "198.51.100.7"]
outbound_proxy = "proxy.carrier.example:5071"
username = "acme"
password = "kept as given"
register = true
register_expires = 600
qualify_interval = 30
codecs = ["pcma", "OPUS", "telephone-event"]

[[trunks]]
name = "pbx"
host = "192.0.2.10"
username = "omlmedia"
ha1_md5 = "{"A" * 32}"
auth_realm = "asterisk"

[[users]]
name = "alice"
ha1_md5 = "{"0" * 32}"
ha1_sha256 = "{"f" * 64}"

[[users]]
name = "bob"
ha1_sha256 = "{"1" * 64}"

[[routes]]
user = "echo"
target = "echo"

[[routes]]
pattern = "^0(\\\\d+)$"
target = "trunk:carrier"
strip = 1
prefix = "+54"
"""


def write(tmp_path: Path, text: str, name: str = "omlmedia.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str, overrides: Overrides | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    return info.value.errors


def test_demo_config_defaults_listen_on_loopback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_demo_config()
    server = config.server
    assert config.is_demo and config.source is None
    assert server.listen == ("127.0.0.1",)
    assert (server.sip_port, server.sip_tls_port, server.http_port) == (5060, 5061, 8443)
    assert server.rtp_port_range == (20000, 29999)
    assert server.data_dir == tmp_path / "data"
    assert not server.data_dir.exists(), "loading must not create the data directory"
    assert (server.log_level, server.log_format) == ("info", "kv")
    assert server.user_agent == "omlmedia"  # no version for scanners to match
    assert config.sip.realm == "omlmedia"
    assert config.sip.tls_cert is None and config.sip.tls_key is None


def test_demo_config_has_stable_trunk_user_and_routes() -> None:
    config = load_demo_config()
    pbx = config.trunk("pbx")
    assert pbx is not None
    assert pbx.endpoint == Endpoint("udp", "127.0.0.1", 5070)
    assert pbx.trusted_sources == (ipaddress.ip_network("127.0.0.1/32"),)
    assert config.trunk_for_source("127.0.0.1") is pbx
    assert config.trunk_for_source("192.0.2.1") is None
    targets = {r.user: (r.action, r.target) for r in config.routes if r.user is not None}
    assert targets == {
        "echo": (RouteAction.ECHO, "echo"),
        "moh": (RouteAction.MOH, "moh"),
        "record": (RouteAction.RECORD, "record"),
        "busy": (RouteAction.BUSY, "busy"),
        "reject": (RouteAction.REJECT, "reject"),
        "dtmf": (RouteAction.DTMF, "dtmf"),
        "support": (RouteAction.CAMPAIGN, "campaign:support"),
        "sales": (RouteAction.CAMPAIGN, "campaign:sales"),
    }
    assert config.acd is not None and set(config.acd.queues) == {"support", "sales"}
    assert [c.queue for c in config.campaigns] == ["support", "sales"]
    assert [a.name for a in config.webrtc.agents] == ["agent1", "agent2", "agent3"]
    assert config.route("agent-agent2") is not None
    assert config.route("conf-7") is not None
    found = config.route("9555123")
    assert found is not None
    route, number = found
    assert (route.target, route.trunk, number) == ("trunk:pbx", "pbx", "555123")
    assert config.route("9") is None
    assert config.route("nobody") is None


def test_demo_config_generates_password_and_token_shown_once() -> None:
    config = load_demo_config()
    password = config.generated.demo_password
    token = config.generated.api_token
    assert password and token and len(token) >= 32
    demo = config.user("demo")
    assert demo is not None
    assert (demo.ha1_md5, demo.ha1_sha256) == digest_ha1("demo", "omlmedia", password)
    assert config.api.token_matches(token)
    assert not config.api.token_matches(token + "x")
    assert password not in repr(config) and token not in repr(config)
    other = load_demo_config()
    assert other.generated.demo_password != password
    assert other.generated.api_token != token


def test_demo_config_with_every_override(tmp_path: Path) -> None:
    overrides = Overrides(
        listen=("0.0.0.0", "::"),
        sip_port=5090,
        sip_tls_port=5091,
        http_port=8080,
        rtp_port_range=(40000, 40100),
        data_dir=str(tmp_path / "d"),
        log_level="debug",
        log_format="json",
        demo_pbx=("192.0.2.5", 5062),
        demo_password="pw-0123456789",
        api_token="tok",
    )
    config = load_demo_config(overrides)
    server = config.server
    assert server.listen == ("0.0.0.0", "::")
    assert (server.sip_port, server.sip_tls_port, server.http_port) == (5090, 5091, 8080)
    assert server.rtp_port_range == (40000, 40100)
    assert server.data_dir == tmp_path / "d"
    assert (server.log_level, server.log_format) == ("debug", "json")
    pbx = config.trunk("pbx")
    assert pbx is not None and (pbx.host, pbx.port) == ("192.0.2.5", 5062)
    assert pbx.trusts("127.0.0.1") and pbx.trusts("192.0.2.5") and not pbx.trusts("192.0.2.6")
    demo = config.user("demo")
    assert demo is not None and demo.ha1_md5 == digest_ha1("demo", "omlmedia", "pw-0123456789")[0]
    assert config.api.token_sha256 == hashlib.sha256(b"tok").hexdigest()
    assert config.generated.demo_password is None and config.generated.api_token is None


@pytest.mark.parametrize(
    "listen", [("192.0.2.1",), ("0.0.0.0",), ("127.0.0.1", "::"), ("2001:db8::1",)]
)
def test_a_short_demo_password_is_refused_when_listening_beyond_loopback(
    listen: tuple[str, ...],
) -> None:
    with pytest.raises(ConfigError) as info:
        load_demo_config(Overrides(listen=listen, demo_password="eleven-char"))
    assert info.value.errors == [
        "--demo-password: at least 12 characters when listening beyond loopback (the SIP user "
        "and every agent share it)"
    ]


def test_a_short_demo_password_serves_on_loopback_and_a_long_one_anywhere() -> None:
    config = load_demo_config(Overrides(listen=("127.0.0.1", "::1"), demo_password="pw"))
    demo = config.user("demo")
    assert demo is not None and demo.ha1_md5 == digest_ha1("demo", "omlmedia", "pw")[0]
    config = load_demo_config(Overrides(listen=("0.0.0.0",), demo_password="twelve-chars"))
    demo = config.user("demo")
    assert demo is not None and demo.ha1_md5 == digest_ha1("demo", "omlmedia", "twelve-chars")[0]


def test_demo_pbx_by_name_trusts_only_loopback() -> None:
    config = load_demo_config(Overrides(demo_pbx=("pbx.example", 5060), no_tls=True))
    pbx = config.trunk("pbx")
    assert pbx is not None and pbx.host == "pbx.example"
    assert pbx.trusted_sources == (ipaddress.ip_network("127.0.0.1/32"),)
    assert config.server.sip_tls_port is None


def test_demo_override_errors_name_the_flag_and_are_all_listed() -> None:
    with pytest.raises(ConfigError) as info:
        load_demo_config(
            Overrides(
                listen=("1.2.3",),
                sip_port=0,
                rtp_port_range=(20001, 20100),
                demo_pbx=("bad host", 70000),
                demo_password="",
                api_token=" ",
                log_format="xml",
            )
        )
    assert info.value.errors == [
        "--demo-password: must not be empty",
        "--listen (server.listen[0]): not an IP address: '1.2.3'",
        "--sip-port (server.sip_port): must be an integer from 1 to 65535",
        "--rtp-ports (server.rtp_port_range): LOW must be even (RTP uses even ports, RFC 3550 §11)",
        "--log-format (server.log_format): must be one of kv, json",
        "--api-token (api.token_sha256): must not be empty or blank",
        "--demo-pbx (trunks[0].host): not a host name or IP address: 'bad host'",
        "--demo-pbx (trunks[0].port): must be an integer from 1 to 65535",
    ]


def test_minimal_file_takes_defaults_relative_to_its_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.source == tmp_path / "omlmedia.toml" and not config.is_demo
    assert config.server.data_dir == tmp_path / "data"
    assert config.server.listen == ("127.0.0.1",)
    assert config.api.token_sha256 == TOKEN_SHA256
    assert config.generated.api_token is None
    assert (config.trunks, config.users, config.routes) == ((), (), ())


def test_file_without_token_gets_a_generated_one(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nsip_port = 5060\n"))
    assert config.generated.api_token is not None
    assert config.api.token_matches(config.generated.api_token)


def test_full_file_is_read_into_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    server, sip, security = config.server, config.sip, config.security
    assert server.listen == ("0.0.0.0", "::1")
    assert (server.sip_port, server.sip_tls_port, server.http_port) == (5080, None, 9443)
    assert server.rtp_port_range == (30000, 30999)
    assert server.data_dir == tmp_path / "state"
    assert (server.log_level, server.log_format, server.user_agent) == ("debug", "json", "Acme PBX")
    assert (sip.t1, sip.t2, sip.t4, sip.max_message_size) == (1.0, 8.0, 10.0, 4096)
    assert (sip.tcp_idle_timeout, sip.realm) == (60.0, "acme.example")
    assert isinstance(sip.t1, float)
    assert (security.rate_limit_requests, security.rate_limit_window) == (20, 5.0)
    assert security.ban_time == 0.0
    assert security.trusted_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.api == ApiConfig(TOKEN_SHA256)
    carrier, pbx = config.trunks
    assert (carrier.name, carrier.host, carrier.port, carrier.transport) == (
        "carrier",
        "sip.carrier.example",
        5061,
        "tls",
    )
    assert carrier.endpoint == Endpoint("tls", "proxy.carrier.example", 5071)
    assert carrier.trusts("192.0.2.200") and carrier.trusts("198.51.100.7")
    assert not carrier.trusts("198.51.100.8") and not carrier.trusts("not an address")
    assert (carrier.username, carrier.password) == ("acme", "kept as given")
    assert "kept as given" not in repr(config)
    assert (carrier.register, carrier.register_expires, carrier.qualify_interval) == (
        True,
        600,
        30.0,
    )
    assert carrier.codecs == ("PCMA", "opus", "telephone-event")
    assert pbx.trusted_sources == (ipaddress.ip_network("192.0.2.10/32"),)
    assert (pbx.port, pbx.transport, pbx.ha1_md5, pbx.auth_realm) == (
        5060,
        "udp",
        "a" * 32,
        "asterisk",
    )
    assert [u.name for u in config.users] == ["alice", "bob"]
    assert config.user("bob") is not None and config.user("bob").ha1_md5 is None  # type: ignore[union-attr]
    found = config.route("01149")
    assert found is not None and found[0].trunk == "carrier" and found[1] == "+541149"
    assert config.route("0x") is None, "patterns must match the whole user part"
    assert config.route("echo") == (config.routes[0], "echo")


def test_flags_override_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(
        path,
        Overrides(
            listen=("127.0.0.2",),
            sip_port=6060,
            sip_tls_port=6061,
            http_port=6443,
            rtp_port_range=(50000, 50010),
            data_dir="rel",
            log_level="warning",
            log_format="kv",
            api_token="new-token",
        ),
    )
    server = config.server
    assert server.listen == ("127.0.0.2",)
    assert (server.sip_port, server.sip_tls_port, server.http_port) == (6060, 6061, 6443)
    assert server.rtp_port_range == (50000, 50010)
    assert server.data_dir == Path("rel").absolute(), "flag paths are relative to the cwd"
    assert (server.log_level, server.log_format) == ("warning", "kv")
    assert config.api.token_matches("new-token")
    assert config.trunk("carrier") is not None


def test_no_tls_flag_turns_off_the_file_tls_port(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), Overrides(no_tls=True))
    assert config.server.sip_tls_port is None


def test_demo_only_flags_are_refused_with_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), Overrides(demo_pbx=("h", 1), demo_password="p"))
    assert info.value.errors == [
        "--demo-pbx: only applies to the embedded demo (no --config)",
        "--demo-password: only applies to the embedded demo (no --config)",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[servr]\n", 'servr: unknown key (did you mean "server"?)'),
        ("[server]\nsip_prot = 5060\n", 'server.sip_prot: unknown key (did you mean "sip_port"?)'),
        ("[server]\nzzz = 1\n", "server.zzz: unknown key"),
        ("server = 5\n", "server: expected a table, got an integer"),
        ("[server]\nsip_port = '5060'\n", "server.sip_port: expected an integer, got a string"),
        ("[server]\nsip_port = true\n", "server.sip_port: expected an integer, got a boolean"),
        ("[server]\nsip_port = 0\n", "server.sip_port: must be an integer from 1 to 65535"),
        ("[server]\nhttp_port = 65536\n", "server.http_port: must be an integer from 1 to 65535"),
        (
            "[server]\nsip_tls_port = true\n",
            "server.sip_tls_port: must be a port from 1 to 65535, or false for off",
        ),
        (
            "[server]\nsip_tls_port = 5060\n",
            "server.sip_tls_port: port 5060 clashes with server.sip_port (TCP)",
        ),
        (
            "[server]\nhttp_port = 5061\n",
            "server.http_port: port 5061 clashes with server.sip_tls_port (TCP)",
        ),
        (
            "[server]\nrtp_port_range = [5000, 6000]\n",
            "server.rtp_port_range: contains server.sip_port 5060 (UDP)",
        ),
        (
            "[server]\nrtp_port_range = [3, 9]\n",
            "server.rtp_port_range: LOW must be even (RTP uses even ports, RFC 3550 §11)",
        ),
        (
            "[server]\nrtp_port_range = [30000, 30000]\n",
            "server.rtp_port_range: LOW must be less than HIGH",
        ),
        (
            "[server]\nrtp_port_range = [0, 70000]\n",
            "server.rtp_port_range: ports must be from 1 to 65535",
        ),
        (
            "[server]\nrtp_port_range = '2-4'\n",
            "server.rtp_port_range: expected [LOW, HIGH], two integers",
        ),
        ("[server]\nlisten = []\n", "server.listen: must list at least one address"),
        ("[server]\nlisten = 'x'\n", "server.listen: expected an array of strings, got a string"),
        ("[server]\nlisten = [1]\n", "server.listen[0]: expected a string, got an integer"),
        ("[server]\nlisten = ['localhost']\n", "server.listen[0]: not an IP address: 'localhost'"),
        (
            "[server]\nlisten = ['::1', '::1']\n",
            "server.listen[1]: duplicate address '::1'",
        ),
        (
            "[server]\nlisten = ['0.0.0.0', '127.0.0.1']\n",
            "server.listen: 0.0.0.0 already covers every IPv4 address",
        ),
        (
            "[server]\nlog_level = 'loud'\n",
            "server.log_level: must be one of debug, info, warning, error, critical",
        ),
        ("[server]\nlog_format = 'xml'\n", "server.log_format: must be one of kv, json"),
        ("[server]\ndata_dir = ''\n", "server.data_dir: must not be empty"),
        ("[server]\nuser_agent = ' '\n", "server.user_agent: must be printable text"),
        ("[sip]\nt1 = 0\n", "sip.t1: must be greater than 0 and at most 60"),
        ("[sip]\nt1 = 'fast'\n", "sip.t1: expected a number, got a string"),
        ("[sip]\nt1 = 5\nt2 = 4\n", "sip.t2: must be at least sip.t1"),
        (
            "[sip]\nmax_message_size = 100\n",
            "sip.max_message_size: must be an integer from 1024 to 16777216",
        ),
        (
            "[sip]\nrealm = 'a\"b'\n",
            "sip.realm: must be non-empty printable text without quotes or backslashes",
        ),
        (
            "[sip]\ntls_cert = '/etc/passwd'\n",
            "sip: tls_cert and tls_key go together (neither: a self-signed certificate)",
        ),
        ("[sip]\ntls_cert = '/etc/passwd'\ntls_key = 'k.pem'\n", "sip.tls_key: file not found: "),
        (
            "[security]\nrate_limit_requests = 0\n",
            "security.rate_limit_requests: must be an integer from 1 to 1000000000",
        ),
        ("[security]\nban_time = -1\n", "security.ban_time: must be at least 0 and at most 1e+07"),
        (
            "[security]\ntrusted_networks = ['10.0.0.1/8']\n",
            "security.trusted_networks[0]: bad CIDR '10.0.0.1/8' (an address, or a network with "
            "no host bits set)",
        ),
        (
            "[api]\ntoken = 'x'\n",
            "api.token: plain tokens are not accepted; give token_sha256 "
            "(SHA-256 hex of the token)",
        ),
        ("trunks = 1\n", "trunks: expected an array of tables ([[trunks]]), got an integer"),
        ("[trunks]\nname = 'x'\n", "trunks: expected an array of tables ([[trunks]]), got a table"),
        ("[[trunks]]\nname = 'a'\n", "trunks[0].host: required"),
        ("[[trunks]]\nhost = 'h'\n", "trunks[0].name: required"),
        ("[[trunks]]\nname = 'a b'\nhost = 'h'\n", "trunks[0].name: invalid value 'a b'"),
        (
            "[[trunks]]\nname = 'a'\nhost = 'bad_host!'\n",
            "trunks[0].host: not a host name or IP address: 'bad_host!'",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\ntransport = 'sctp'\n",
            "trunks[0].transport: must be one of udp, tcp, tls",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\nprot = 1\n",
            'trunks[0].prot: unknown key (did you mean "port"?)',
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\ntrusted_sources = ['300.1.1.1']\n",
            "trunks[0].trusted_sources[0]: bad CIDR '300.1.1.1' (an address, or a network with "
            "no host bits set)",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\noutbound_proxy = 'p:0'\n",
            "trunks[0].outbound_proxy: port must be from 1 to 65535, got '0'",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\noutbound_proxy = 'p q'\n",
            "trunks[0].outbound_proxy: not a host name or IP address: 'p q'",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\npassword = 'p'\n",
            "trunks[0].username: required with credentials or register = true",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\nregister = 'yes'\n",
            "trunks[0].register: expected a boolean, got a string",
        ),
        (
            f"[[trunks]]\nname = 'a'\nhost = 'h'\nusername = 'u'\nha1_md5 = '{'a' * 32}'\n",
            "trunks[0].auth_realm: required with ha1_md5/ha1_sha256 (the peer's realm)",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\nusername = 'u'\npassword = 'p'\n"
            f"ha1_sha256 = '{'a' * 64}'\nauth_realm = 'r'\n",
            "trunks[0]: give password or ha1_md5/ha1_sha256, not both",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\nusername = 'u'\nha1_md5 = 'abc'\n"
            "auth_realm = 'r'\n",
            "trunks[0].ha1_md5: invalid value 'abc'",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\nregister_expires = 10\n",
            "trunks[0].register_expires: must be an integer from 60 to 86400",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\nqualify_interval = -1\n",
            "trunks[0].qualify_interval: must be at least 0 and at most 86400",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\ncodecs = ['G729']\n",
            "trunks[0].codecs[0]: "
            "unknown codec 'G729' (known: PCMU, PCMA, G722, opus, telephone-event)",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\ncodecs = ['PCMU', 'pcmu']\n",
            "trunks[0].codecs[1]: duplicate codec 'pcmu'",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\ncodecs = []\n",
            "trunks[0].codecs: must list at least one codec",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\ncodecs = ['telephone-event']\n",
            "trunks[0].codecs: needs an audio codec besides telephone-event",
        ),
        (
            "[[trunks]]\nname = 'a'\nhost = 'h'\n[[trunks]]\nname = 'a'\nhost = 'i'\n",
            'trunks[1].name: duplicate trunk name "a" (also trunks[0])',
        ),
        (
            "[[users]]\nname = 'u'\n",
            "users[0]: needs ha1_md5 or ha1_sha256 (see `omlmedia hash-password`)",
        ),
        (
            f"[[users]]\nname = 'u'\npassword = 'p'\nha1_md5 = '{'a' * 32}'\n",
            "users[0].password: plain passwords are not accepted here; run `omlmedia "
            "hash-password`",
        ),
        (
            f"[[users]]\nname = 'u'\nha1_sha256 = '{'g' * 64}'\n",
            f"users[0].ha1_sha256: invalid value '{'g' * 64}'",
        ),
        (
            f"[[users]]\nname = 'a:b'\nha1_md5 = '{'a' * 32}'\n",
            "users[0].name: invalid value 'a:b'",
        ),
        (
            f"[[users]]\nname = 'u'\nha1_md5 = '{'a' * 32}'\n"
            f"[[users]]\nname = 'u'\nha1_md5 = '{'b' * 32}'\n",
            'users[1].name: duplicate user name "u" (also users[0])',
        ),
        ("[[routes]]\ntarget = 'echo'\n", "routes[0]: needs exactly one of user or pattern"),
        (
            "[[routes]]\nuser = 'a'\npattern = 'b'\ntarget = 'echo'\n",
            "routes[0]: needs exactly one of user or pattern",
        ),
        ("[[routes]]\nuser = 'a'\n", "routes[0].target: required"),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'voicemail'\n",
            "routes[0].target: unknown target "
            "'voicemail' (one of echo, moh, record, busy, reject, dtmf, agent, conference, "
            "trunk:<name>, agent:<name>, queue:<name> or campaign:<name>)",
        ),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'trunk:nowhere'\n",
            'routes[0].target: unknown trunk "nowhere"',
        ),
        (
            "[[routes]]\npattern = '^9(.+$'\ntarget = 'echo'\n",
            "routes[0].pattern: bad regular "
            "expression: missing ), unterminated subpattern at position 2",
        ),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'echo'\nstrip = -1\n",
            "routes[0].strip: must be an integer from 0 to 64",
        ),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'echo'\nprefix = 'a b'\n",
            "routes[0].prefix: invalid value 'a b'",
        ),
        ("[[routes]]\nuser = 'a b'\ntarget = 'echo'\n", "routes[0].user: invalid value 'a b'"),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'echo'\nstrp = 1\n",
            'routes[0].strp: unknown key (did you mean "strip"?)',
        ),
    ],
)
def test_each_validation_rule_reports_its_location(tmp_path: Path, text: str, error: str) -> None:
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(error), errors


def test_bad_api_token_hash_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[api]\ntoken_sha256 = 'abc'\n"))
    assert info.value.errors == ["api.token_sha256: expected 64 hexadecimal digits (a SHA-256)"]


def test_route_to_a_trunk_with_errors_does_not_add_unknown_trunk(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        "[[trunks]]\nname = 'pbx'\nport = 0\n[[routes]]\nuser = 'x'\ntarget = 'trunk:pbx'\n",
    )
    assert errors == [
        "trunks[0].host: required",
        "trunks[0].port: must be an integer from 1 to 65535",
    ]


def test_every_error_is_listed_at_once(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        [server]
        sip_port = 70000
        log_levl = "debug"
        [sip]
        t1 = -1
        [[trunks]]
        name = "pbx"
        [[trunks]]
        name = "pbx"
        host = "192.0.2.1"
        trusted_sources = ["nope"]
        [[users]]
        name = "alice"
        [[routes]]
        pattern = "("
        target = "trunk:carrier"
        """,
    )
    assert errors == [
        'server.log_levl: unknown key (did you mean "log_level"?)',
        "server.sip_port: must be an integer from 1 to 65535",
        "sip.t1: must be greater than 0 and at most 60",
        "trunks[0].host: required",
        "trunks[1].trusted_sources[0]: bad CIDR 'nope' (an address, or a network with no host "
        "bits set)",
        'trunks[1].name: duplicate trunk name "pbx" (also trunks[0])',
        "users[0]: needs ha1_md5 or ha1_sha256 (see `omlmedia hash-password`)",
        "routes[0].pattern: bad regular expression: missing ), unterminated subpattern at "
        "position 0",
        'routes[0].target: unknown trunk "carrier"',
    ]
    assert str(ConfigError(errors)).startswith("invalid configuration:\n  server.log_levl")


def test_tls_files_resolve_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("x")
    (tmp_path / "tls" / "key.pem").write_text("x")
    config = load_config(
        write(tmp_path, MINIMAL + "[sip]\ntls_cert = 'tls/cert.pem'\ntls_key = 'tls/key.pem'\n")
    )
    assert config.sip.tls_cert == tmp_path / "tls" / "cert.pem"
    assert config.sip.tls_key == tmp_path / "tls" / "key.pem"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[server]\nsip_port = \n", "line 2, column 12: Invalid value"),
        ("a = 1\na = 2\n", "line 2, column 6: Cannot overwrite a value"),
        ("a = [1,", "line 1 (end of file): Invalid value"),
    ],
)
def test_toml_syntax_errors_give_line_and_column(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.errors == [error]


def test_unreadable_and_non_utf8_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert info.value.errors == [
        f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"
    ]
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"a = 'caf\xe9'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == ["byte 8: not valid UTF-8"]


def test_digest_ha1_matches_rfc_2617_example() -> None:
    md5, sha256 = digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert md5 == "939e7578ed9e3c518a452acee763bce9"
    assert sha256 == hashlib.sha256(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()


def test_trunk_for_source_stays_right_past_its_cache_bound() -> None:
    config = load_demo_config(Overrides(demo_pbx=("192.0.2.5", 5060)))
    pbx = config.trunk("pbx")
    for i in range(5000):
        assert config.trunk_for_source(f"10.{i // 256}.{i % 256}.1") is None
    assert config.trunk_for_source("192.0.2.5") is pbx
    assert config.trunk_for_source("127.0.0.1") is pbx
    assert config.trunk_for_source("garbage") is None


def test_route_strip_and_prefix_rewrite_exact_user() -> None:
    config = load_demo_config()
    found = config.route("echo")
    assert found is not None and found[1] == "echo" and found[0].apply("echoo") is None


TOML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["udp", "tls", "trunk:pbx", "echo", "127.0.0.1", "10.0.0.0/8", "^9(.+)$"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SECTION_KEYS = {
    "server": ["listen", "sip_port", "sip_tls_port", "rtp_port_range", "data_dir", "log_level"],
    "sip": ["t1", "t2", "realm", "tls_cert", "tls_key"],
    "security": ["ban_time", "trusted_networks"],
    "api": ["token_sha256", "token", "metrics_listen"],
}
ITEM_KEYS = {
    "trunks": ["name", "host", "port", "transport", "outbound_proxy", "codecs", "username"],
    "users": ["name", "ha1_md5", "password"],
    "routes": ["user", "pattern", "target", "strip", "prefix"],
}


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for section, keys in SECTION_KEYS.items():
        if draw(st.booleans()):
            raw[section] = {k: draw(TOML_VALUES) for k in keys if draw(st.booleans())}
    for section, keys in ITEM_KEYS.items():
        if draw(st.booleans()):
            raw[section] = [
                {k: draw(TOML_VALUES) for k in keys if draw(st.booleans())}
                for _ in range(draw(st.integers(0, 2)))
            ]
    if draw(st.booleans()):
        raw[draw(st.sampled_from(list(SECTION_KEYS)))] = draw(TOML_VALUES)
    return raw


@settings(max_examples=150, deadline=None)
@given(raw=raw_configs())
def test_bad_input_raises_only_config_error(raw: dict[str, Any]) -> None:
    try:
        config = _build(raw, Overrides(), base_dir=Path("/nonexistent"), source=None)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and ": " in e for e in exc.errors)
    else:
        assert isinstance(config, Config)


def test_advertise_must_be_a_reachable_ip_address(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[server]\nlisten = ["0.0.0.0"]\nadvertise = "203.0.113.9"\n')
    assert load_config(good).server.advertise == "203.0.113.9"
    for value, message in (
        ("pbx.example", "server.advertise: not an IP address: 'pbx.example'"),
        ("0.0.0.0", "server.advertise: must be an address peers reach, not a wildcard"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(f'[server]\nadvertise = "{value}"\n')
        with pytest.raises(ConfigError) as caught:
            load_config(bad)
        assert message in caught.value.errors


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "[queues.support]\nstrategy = 'fastest'\nmembers = []\n",
            'queues.support.strategy: unknown strategy "fastest"',
        ),
        (
            "[queues.support]\nmembers = ['nobody']\n",
            "queues.support.members[0]",
        ),
        (
            "[[campaigns]]\nname = 'c'\nqueue = 'missing'\n",
            'campaigns[0].queue: unknown queue "missing"',
        ),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'queue:missing'\n",
            'routes[0].target: unknown queue "missing"',
        ),
        (
            "[[routes]]\nuser = 'a'\ntarget = 'agent:nobody'\n",
            'routes[0].target: unknown agent "nobody"',
        ),
        (
            "[media]\nrecording_format = 'mp3'\n",
            "media.recording_format",
        ),
        (
            "[[agents]]\nname = 'Bad Name'\npassword_hash = 'x'\n",
            "agents[0].name",
        ),
    ],
)
def test_queues_campaigns_and_agents_are_checked_with_their_place(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(error in e for e in info.value.errors), info.value.errors


def test_metrics_listen_is_an_ip_address_and_a_port(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[api]\nmetrics_listen = "10.0.0.5"\n')
    assert load_config(good).api.metrics_listen == ("10.0.0.5", 9464)
    good.write_text('[api]\nmetrics_listen = "[::1]:9500"\n')
    assert load_config(good).api.metrics_listen == ("::1", 9500)
    assert load_config(write(tmp_path, "")).api.metrics_listen is None
    for value, message in (
        (
            "metrics.example:9464",
            "api.metrics_listen: expected an IP address, got 'metrics.example'",
        ),
        ("10.0.0.5:99999", "api.metrics_listen: port must be from 1 to 65535, got '99999'"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(f'[api]\nmetrics_listen = "{value}"\n')
        with pytest.raises(ConfigError) as caught:
            load_config(bad)
        assert caught.value.errors == [message]
