"""Concurrent call caps per digest user and per source (issue 12, low items): the configuration
keys, and the bookkeeping of `omlmedia.callcaps.CallCaps` (the sipp proof is in
`tests/interop/test_call_caps.py`)."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest

from omlmedia.callcaps import CallCaps, source_key
from omlmedia.config import Config, ConfigError, load_config

TOKEN = hashlib.sha256(b"t").hexdigest()


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(f'[api]\ntoken_sha256 = "{TOKEN}"\n{text}')
    return load_config(path)


def test_the_call_caps_have_finite_defaults_and_are_configurable(tmp_path: Path) -> None:
    security = load(tmp_path, "").security
    assert (security.max_calls_per_user, security.max_calls_per_source) == (20, 50)
    security = load(
        tmp_path, "[security]\nmax_calls_per_user = 2\nmax_calls_per_source = 7\n"
    ).security
    assert (security.max_calls_per_user, security.max_calls_per_source) == (2, 7)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("max_calls_per_user = 0", "security.max_calls_per_user: must be an integer from 1"),
        ('max_calls_per_source = "many"', "security.max_calls_per_source: expected an integer"),
    ],
)
def test_a_bad_call_cap_names_its_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[security]\n{text}\n")
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_a_user_beyond_its_cap_is_refused_once_logged_and_admitted_after_a_call_ends() -> None:
    caps = CallCaps(max_per_user=2, max_per_source=100)
    calls = [object() for _ in range(4)]
    assert caps.admit(calls[0], user="alice", host="192.0.2.1", trunk=None) is None
    assert caps.admit(calls[1], user="alice", host="192.0.2.2", trunk=None) is None
    first = caps.admit(calls[2], user="alice", host="192.0.2.3", trunk=None)
    second = caps.admit(calls[3], user="alice", host="192.0.2.3", trunk=None)
    assert first is not None and second is not None
    assert (first.cap, first.key, first.limit, first.first_of_burst) == ("user", "alice", 2, True)
    assert second.first_of_burst is False
    assert caps.refused == 2
    assert caps.admit(object(), user="bob", host="192.0.2.1", trunk=None) is None
    caps.release(calls[2])  # refused: held nothing, frees nothing
    assert caps.live("user", "alice") == 2
    caps.release(calls[0])
    assert caps.live("user", "alice") == 1
    assert caps.admit(calls[2], user="alice", host="192.0.2.3", trunk=None) is None
    again = caps.admit(object(), user="alice", host="192.0.2.3", trunk=None)
    assert again is not None and again.first_of_burst is True  # a new burst logs again


def test_a_source_is_capped_per_ipv4_address_and_ipv6_slash_64() -> None:
    caps = CallCaps(max_per_user=100, max_per_source=1)
    assert caps.admit(object(), user=None, host="2001:db8:1:2::1", trunk=None) is None
    refusal = caps.admit(object(), user=None, host="2001:db8:1:2:ffff::9", trunk=None)
    assert refusal is not None and (refusal.cap, refusal.key) == ("source", "2001:db8:1:2::/64")
    assert caps.admit(object(), user=None, host="2001:db8:1:3::1", trunk=None) is None
    assert caps.admit(object(), user="a", host="198.51.100.7", trunk=None) is None
    assert caps.admit(object(), user="b", host="198.51.100.7", trunk=None) is not None
    assert source_key("::ffff:198.51.100.7") == "198.51.100.7"


def test_trunks_and_trusted_networks_are_not_capped_per_source() -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    caps = CallCaps(max_per_user=100, max_per_source=1, trusted=trusted)
    for _ in range(5):
        assert caps.admit(object(), user=None, host="203.0.113.5", trunk="carrier") is None
        assert caps.admit(object(), user=None, host="10.1.2.3", trunk=None) is None
    assert caps.refused == 0
