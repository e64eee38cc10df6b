"""webrtc.config: the [[agents]] and [webrtc] sections."""

from __future__ import annotations

from typing import Any

import pytest

from webrtc.accounts import hash_password, verify_password
from webrtc.config import parse_agents, parse_ice_servers, parse_webrtc
from webrtc.exceptions import ConfigError

HASH = hash_password("pw", n=2**10)


def test_agents_parse_with_hash_or_demo_password() -> None:
    agents = parse_agents(
        [
            {"name": "agent1", "display_name": "Ana", "password_hash": HASH},
            {"name": "agent2", "password": "demo"},
        ]
    )
    assert agents[0].display_name == "Ana" and agents[0].password_hash == HASH
    assert agents[1].display_name == "agent2"
    assert verify_password("demo", agents[1].password_hash)
    assert agents[0].account().name == "agent1"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("x", "agents: must be an array of tables"),
        ([1], "agents[0]: must be a table"),
        ([{"password": "x"}], "agents[0].name: is required"),
        ([{"name": "Bad Name", "password": "x"}], "agents[0].name: must be"),
        (
            [{"name": "a", "password": "x"}, {"name": "a", "password": "y"}],
            "agents[1].name: duplicate",
        ),
        ([{"name": "a"}], "agents[0]: exactly one of password_hash and password"),
        ([{"name": "a", "password": "x", "password_hash": HASH}], "agents[0]: exactly one"),
        (
            [{"name": "a", "password_hash": "md5$x"}],
            "agents[0].password_hash: password hash is not",
        ),
        ([{"name": "a", "password": ""}], "agents[0].password: must not be empty"),
        ([{"name": "a", "password": "x", "color": 1}], "agents[0].color: unknown key"),
        (
            [{"name": "a", "password": "x", "display_name": "a\nb"}],
            "agents[0].display_name: too long",
        ),
    ],
)
def test_agent_errors_name_the_place(items: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_agents(items)


def test_clear_password_can_be_refused() -> None:
    with pytest.raises(ConfigError, match="demo only"):
        parse_agents([{"name": "a", "password": "x"}], allow_clear_password=False)


def test_ice_servers() -> None:
    servers = parse_ice_servers(
        [
            {"urls": "stun:stun.example.com:3478"},
            {"urls": ["turn:t.example.com?transport=udp"], "username": "u", "credential": "c"},
        ]
    )
    assert servers[0].urls == ("stun:stun.example.com:3478",)
    assert servers[1].username == "u"
    with pytest.raises(ConfigError, match=r"webrtc.ice_servers\[0\]: a TURN server needs"):
        parse_ice_servers([{"urls": "turn:t.example.com"}])
    with pytest.raises(ConfigError, match=r"webrtc.ice_servers\[0\].urls: 'http://x'"):
        parse_ice_servers([{"urls": ["http://x"]}])
    with pytest.raises(ConfigError, match=r"webrtc.ice_servers\[0\].urls: must be"):
        parse_ice_servers([{"urls": []}])


def test_webrtc_section_defaults_and_errors() -> None:
    config = parse_webrtc(None, [{"name": "a", "password_hash": HASH}])
    assert config.ice_servers == () and config.reconnect_grace == 30.0 and len(config.agents) == 1
    assert parse_webrtc({"reconnect_grace": 5}).reconnect_grace == 5.0
    with pytest.raises(ConfigError, match=r"webrtc\.reconnect_grace: must be between"):
        parse_webrtc({"reconnect_grace": 0})
    with pytest.raises(ConfigError, match=r"webrtc\.session_ttl: must be a number"):
        parse_webrtc({"session_ttl": "1h"})
    with pytest.raises(ConfigError, match=r"webrtc\.stun: unknown key"):
        parse_webrtc({"stun": "x"})


def test_receive_path_defaults_to_the_bypass_and_is_checked() -> None:
    assert parse_webrtc(None).receive_path == "bypass"
    assert parse_webrtc({"receive_path": "aiortc"}).receive_path == "aiortc"
    for bad in ("stock", 1, None):
        with pytest.raises(ConfigError, match=r"webrtc\.receive_path: must be"):
            parse_webrtc({"receive_path": bad})


def test_max_playback_rate_defaults_to_wideband_and_is_checked() -> None:
    assert parse_webrtc(None).max_playback_rate == 16000
    assert parse_webrtc({"max_playback_rate": 48000}).max_playback_rate == 48000
    for bad in (44100, "16000", True, 0):
        with pytest.raises(ConfigError, match=r"webrtc\.max_playback_rate: must be one of"):
            parse_webrtc({"max_playback_rate": bad})


def test_show_monitoring_is_off_by_default_and_must_be_a_boolean() -> None:
    assert parse_webrtc(None).show_monitoring is False
    assert parse_webrtc({"show_monitoring": True}).show_monitoring is True
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match=r"webrtc\.show_monitoring: must be true or false"):
            parse_webrtc({"show_monitoring": bad})
