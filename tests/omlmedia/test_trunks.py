"""Trunk next hops: UDP host names are resolved once, addresses and TCP/TLS names are kept."""

from __future__ import annotations

from pathlib import Path

from omlmedia.config import load_config
from omlmedia.trunks import NextHops
from sip.endpoint import Endpoint


async def test_udp_trunk_names_resolve_to_an_address_of_our_family(tmp_path: Path) -> None:
    config_file = tmp_path / "trunks.toml"
    config_file.write_text(
        '[[trunks]]\nname = "byname"\nhost = "localhost"\nport = 5080\n\n'
        '[[trunks]]\nname = "byip"\nhost = "127.0.0.2"\n\n'
        '[[trunks]]\nname = "tls"\nhost = "localhost"\ntransport = "tls"\nport = 5061\n\n'
        '[[trunks]]\nname = "nowhere"\nhost = "no-such-host.invalid"\n'
    )
    config = load_config(config_file)
    hops = NextHops(config)
    await hops.resolve()
    trunks = {t.name: t for t in config.trunks}
    assert hops.endpoint(trunks["byname"]) == Endpoint("udp", "127.0.0.1", 5080)
    assert hops.endpoint(trunks["byip"]) == Endpoint("udp", "127.0.0.2", 5060)
    assert hops.endpoint(trunks["tls"]) == Endpoint("tls", "localhost", 5061)
    assert hops.endpoint(trunks["nowhere"]) == Endpoint("udp", "no-such-host.invalid", 5060)
