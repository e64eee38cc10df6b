"""Issue 12's SDES and qop settings: SRTP keys never cross a non-TLS trunk unless the trunk opts in
(`allow_sdes_over_udp`, warned about towards a public address), and digest without ``qop`` is
accepted only on loopback listeners unless `security.allow_digest_without_qop` says otherwise."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from omlmedia.cli import main
from omlmedia.config import (
    Config,
    ConfigError,
    digest_warnings,
    digest_without_qop_allowed,
    load_config,
    load_demo_config,
    sdes_allowed,
    sdes_warnings,
)

TOKEN = hashlib.sha256(b"t").hexdigest()
USERS = f'[[users]]\nname = "alice"\nha1_sha256 = "{"0" * 64}"\n'
PUBLIC = '[server]\nlisten = ["0.0.0.0"]\n'


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(f'[api]\ntoken_sha256 = "{TOKEN}"\n{text}')
    return load_config(path)


def trunk(host: str = "10.0.0.2", **keys: str) -> str:
    lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return f'[[trunks]]\nname = "pbx"\nhost = "{host}"\n{lines}'


def test_srtp_on_a_udp_or_tcp_trunk_is_an_error_naming_the_key_unless_it_opts_in(
    tmp_path: Path,
) -> None:
    for transport in ('"udp"', '"tcp"'):
        with pytest.raises(ConfigError) as info:
            load(tmp_path, trunk(transport=transport, srtp="true"))
        [error] = info.value.errors
        assert error.startswith("trunks[0].srtp: SDES keys would cross"), error
        assert "allow_sdes_over_udp" in error
    opted = load(tmp_path, trunk(srtp="true", allow_sdes_over_udp="true")).trunks[0]
    assert opted.srtp and opted.allow_sdes_over_udp
    tls = load(tmp_path, trunk(transport='"tls"', srtp="true")).trunks[0]
    assert tls.srtp and not tls.allow_sdes_over_udp


def test_allow_sdes_over_udp_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, trunk(allow_sdes_over_udp='"yes"'))
    assert any(e.startswith("trunks[0].allow_sdes_over_udp") for e in info.value.errors)


def test_inbound_sdes_is_answered_only_over_tls_from_users_or_from_trunks_that_opt_in(
    tmp_path: Path,
) -> None:
    plain = load(tmp_path, trunk()).trunks[0]
    opted = load(tmp_path, trunk(allow_sdes_over_udp="true")).trunks[0]
    assert not sdes_allowed(plain, "udp")
    assert not sdes_allowed(plain, "tcp")
    assert sdes_allowed(plain, "tls")
    assert sdes_allowed(opted, "udp")
    assert sdes_allowed(None, "udp")


def test_opting_in_towards_a_public_address_is_warned_about(tmp_path: Path) -> None:
    private = load(tmp_path, trunk(allow_sdes_over_udp="true"))
    assert sdes_warnings(private) == []
    for host in ("8.8.8.8", "pbx.example.com"):
        public = load(tmp_path, trunk(host=host, allow_sdes_over_udp="true"))
        [warning] = sdes_warnings(public)
        assert warning.startswith("trunks[0].allow_sdes_over_udp: SRTP keys"), warning
        assert host in warning
    tls = load(tmp_path, trunk(host="8.8.8.8", transport='"tls"', allow_sdes_over_udp="true"))
    assert sdes_warnings(tls) == []


def test_digest_without_qop_is_allowed_on_loopback_only_by_default(tmp_path: Path) -> None:
    assert digest_without_qop_allowed(load(tmp_path, ""))
    assert digest_without_qop_allowed(load_demo_config())
    assert not digest_without_qop_allowed(load(tmp_path, PUBLIC))
    allowed = load(tmp_path, PUBLIC + "[security]\nallow_digest_without_qop = true\n")
    assert allowed.security.allow_digest_without_qop is True
    assert digest_without_qop_allowed(allowed)
    refused = load(tmp_path, "[security]\nallow_digest_without_qop = false\n")
    assert not digest_without_qop_allowed(refused)


def test_allowing_digest_without_qop_beyond_loopback_is_warned_about(tmp_path: Path) -> None:
    sha_only = '[sip]\ndigest_algorithms = ["SHA-256"]\n'
    assert digest_warnings(load(tmp_path, PUBLIC + sha_only + USERS)) == []
    text = PUBLIC + sha_only + "[security]\nallow_digest_without_qop = true\n" + USERS
    [warning] = digest_warnings(load(tmp_path, text))
    assert warning.startswith("security.allow_digest_without_qop: digest responses without qop")
    loopback = sha_only + "[security]\nallow_digest_without_qop = true\n" + USERS
    assert digest_warnings(load(tmp_path, loopback)) == []


def test_allow_digest_without_qop_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[security]\nallow_digest_without_qop = 1\n")
    assert any(e.startswith("security.allow_digest_without_qop") for e in info.value.errors)


def test_check_config_prints_the_sdes_warning_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "omlmedia.toml"
    path.write_text(trunk(host="8.8.8.8", srtp="true", allow_sdes_over_udp="true"))
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "trunks[0].allow_sdes_over_udp: SRTP keys to and from trunk 'pbx'" in err, err
