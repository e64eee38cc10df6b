"""``[security] trusted_proxies``: the reverse proxies whose X-Forwarded-For is believed."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest

from omlmedia.config import Config, ConfigError, load_config

TOKEN = hashlib.sha256(b"t").hexdigest()


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(f'[api]\ntoken_sha256 = "{TOKEN}"\n{text}')
    return load_config(path)


def test_no_proxy_is_trusted_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "").security.trusted_proxies == ()


def test_trusted_proxies_are_read_as_networks(tmp_path: Path) -> None:
    config = load(tmp_path, '[security]\ntrusted_proxies = ["10.0.0.5", "fd00::/64"]\n')
    assert config.security.trusted_proxies == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("fd00::/64"),
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('trusted_proxies = ["haproxy"]', "security.trusted_proxies[0]: bad CIDR"),
        ('trusted_proxies = ["10.0.0.1/8"]', "security.trusted_proxies[0]: bad CIDR"),
        ('trusted_proxies = "10.0.0.0/8"', "security.trusted_proxies"),
    ],
)
def test_a_bad_trusted_proxy_names_the_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[security]\n{text}\n")
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors
