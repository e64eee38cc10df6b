"""The ``[[agents]]`` and ``[webrtc]`` configuration sections, given as plain dicts (from TOML).

```toml
[webrtc]
session_ttl = 43200          # seconds a login lasts
reconnect_grace = 30         # seconds a closed tab keeps its session and call
web_targets = ["sales", "agent-agent1"]   # what /call/<target> may call; none by default
receive_path = "bypass"      # "aiortc": aiortc's stock jitter buffer and decoder (a baseline)
max_playback_rate = 16000    # the most the pages' Opus carries (8000 narrowband ... 48000)
show_monitoring = false      # tell an agent's page when a supervisor monitors its call
[[webrtc.ice_servers]]
urls = ["turn:turn.example.com:3478?transport=udp"]
secret_file = "/etc/omlmedia/turn-secret"   # TURN REST: ephemeral credentials (coturn's
ttl = 3600                                  # use-auth-secret); or secret_env = "TURN_SECRET"
# username = "omlmedia"                     # or static ones (every page gets the same)
# credential = "secret"

[[agents]]
name = "agent1"
display_name = "Ana"
password_hash = "scrypt$n=16384,r=8,p=1$...$..."
# password = "demo"          # demo only: a clear password, hashed at load
```

Every error is a `ConfigError` whose message starts with the place: ``agents[1].name: ...``
(indices from 0, as in the list).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webrtc.accounts import Account, hash_password, parse_password_hash
from webrtc.exceptions import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "AgentConfig",
    "IceServerConfig",
    "WebrtcConfig",
    "ice_list",
    "parse_agents",
    "parse_ice_servers",
    "parse_web_targets",
    "parse_webrtc",
    "turn_rest_credential",
]

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_ICE_URL = re.compile(r"(stun|stuns|turn|turns):[^\s?]+(\?transport=(udp|tcp))?")
_AGENT_KEYS = {"name", "display_name", "password_hash", "password"}
_ICE_KEYS = {"urls", "username", "credential", "secret_file", "secret_env", "ttl"}
_WEBRTC_KEYS = {
    "ice_servers",
    "session_ttl",
    "reconnect_grace",
    "web_targets",
    "receive_path",
    "max_playback_rate",
    "show_monitoring",
}
PLAYBACK_RATES = (8000, 12000, 16000, 24000, 48000)
RECEIVE_PATHS = ("bypass", "aiortc")
_TARGET = re.compile(r"[A-Za-z0-9+*#._@:-]{1,64}")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One ``[[agents]]`` entry: `name` (login, lower case letters, digits, ``_.-``, up to 32),
    `display_name` (defaults to the name), `password_hash` (scrypt)."""

    name: str
    display_name: str
    password_hash: str

    def account(self) -> Account:
        """The account for `webrtc.accounts.AccountStore`."""
        return Account(self.name, self.display_name, self.password_hash)


@dataclass(frozen=True, slots=True)
class IceServerConfig:
    """One STUN/TURN server (the W3C ``RTCIceServer`` dictionary): TURN needs `username` and
    `credential`, or a `secret` shared with the TURN server for ephemeral credentials (the
    "TURN REST API" draft, coturn's ``use-auth-secret``): ``username = "<expiry>:<user>"``,
    ``credential = base64(HMAC-SHA1(secret, username))``, valid `ttl` seconds."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    ttl: float = 86400.0

    def as_browser(self, now: float | None = None, user: str = "omlmedia") -> dict[str, Any]:
        """The W3C ``RTCIceServer`` dictionary the pages get; with a `secret`, credentials made
        now (Unix time `now`) for `user`, expiring after `ttl`."""
        server: dict[str, Any] = {"urls": list(self.urls)}
        username, credential = self.username, self.credential
        if self.secret is not None:
            expiry = int((time.time() if now is None else now) + self.ttl)
            username = f"{expiry}:{user}"
            credential = turn_rest_credential(self.secret, username)
        if username is not None:
            server["username"] = username
        if credential is not None:
            server["credential"] = credential
        return server


def turn_rest_credential(secret: str, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))``: what a TURN server with the same shared secret
    (coturn ``static-auth-secret``) expects as the password of `username`."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


IceSource = Sequence[Mapping[str, Any]] | Callable[[], Sequence[Mapping[str, Any]]]
"""The pages' STUN/TURN servers: a list, or a function making it (fresh TURN credentials)."""


def ice_list(source: IceSource) -> list[dict[str, Any]]:
    """The ``RTCIceServer`` dictionaries of `source`, made now when it is a function."""
    servers = source() if callable(source) else source
    return [dict(server) for server in servers]


@dataclass(frozen=True, slots=True)
class WebrtcConfig:
    """The ``[webrtc]`` section and the agents: no ICE server by default (host candidates only;
    never aiortc's built-in public STUN server). `web_targets`: the targets (queue, agent
    target such as ``agent-agent1``, number) a website visitor may call from ``/call/<target>``
    without logging in; empty by default (no web calls). `receive_path`: how the agent
    channels take the page's audio, ``bypass`` (our capped jitter buffer and libopus, the
    default) or ``aiortc`` (aiortc's stock jitter buffer and decoder thread: a baseline for
    measurements). `max_playback_rate`: the Opus ``maxplaybackrate`` (RFC 7587 §6.1) of the
    server's answers, the most the pages' audio carries: 16000 (wideband, "HD voice") by
    default; a browser then encodes at most that band, which is all a G.711 or G.722 leg can
    carry anyway, and decoding it to 8 kHz costs the server about half of fullband's (libopus,
    20 ms of speech-like audio at 32 kbit/s: 64 -> 37 us; 24 us narrowband); 48000 asks for
    nothing (fullband); 8000 suits G.711-only deployments. `show_monitoring`: an agent's page
    is told (a notice) when a supervisor listens to, whispers on or barges into its call; off
    by default (`omlmedia.monitor`)."""

    agents: tuple[AgentConfig, ...] = ()
    ice_servers: tuple[IceServerConfig, ...] = ()
    session_ttl: float = 12 * 3600.0
    reconnect_grace: float = 30.0
    web_targets: tuple[str, ...] = ()
    receive_path: str = "bypass"
    max_playback_rate: int = 16000
    show_monitoring: bool = False


def _unknown(where: str, table: Mapping[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key")


def _text(where: str, value: Any, *, max_length: int = 256) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string")
    if not value.strip():
        raise ConfigError(f"{where}: must not be empty")
    if len(value) > max_length or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(f"{where}: too long or has control characters")
    return value


def parse_agents(items: Any, *, allow_clear_password: bool = True) -> tuple[AgentConfig, ...]:
    """Validate the ``[[agents]]`` array of tables. A clear ``password`` (demo only) is hashed
    here and a warning logged; `allow_clear_password=False` refuses it."""
    if items is None:
        return ()
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ConfigError("agents: must be an array of tables")
    agents: list[AgentConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"agents[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a table")
        _unknown(where, item, _AGENT_KEYS)
        if "name" not in item:
            raise ConfigError(f"{where}.name: is required")
        name = item["name"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}.name: must be 1-32 lower-case letters, digits, '_', '.' or '-'"
            )
        if name in seen:
            raise ConfigError(f"{where}.name: duplicate agent {name!r}")
        seen.add(name)
        display = _text(f"{where}.display_name", item.get("display_name", name), max_length=64)
        has_hash, has_clear = "password_hash" in item, "password" in item
        if has_hash == has_clear:
            raise ConfigError(f"{where}: exactly one of password_hash and password is required")
        if has_hash:
            password_hash = item["password_hash"]
            if not isinstance(password_hash, str):
                raise ConfigError(f"{where}.password_hash: must be a string")
            try:
                parse_password_hash(password_hash)
            except ValueError as exc:
                raise ConfigError(f"{where}.password_hash: {exc}") from None
        else:
            if not allow_clear_password:
                raise ConfigError(f"{where}.password: clear passwords are for the demo only")
            password = _text(f"{where}.password", item["password"], max_length=1024)
            logger.warning("%s: clear password hashed at load (demo only)", where)
            password_hash = hash_password(password)
        agents.append(AgentConfig(name, display, password_hash))
    return tuple(agents)


def parse_ice_servers(
    items: Any, *, where: str = "webrtc.ice_servers"
) -> tuple[IceServerConfig, ...]:
    """Validate STUN/TURN servers: ``urls`` (a string or a list of ``stun:``, ``stuns:``,
    ``turn:`` or ``turns:`` URLs), and for TURN ``username`` and ``credential``."""
    if items is None:
        return ()
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ConfigError(f"{where}: must be an array of tables")
    servers: list[IceServerConfig] = []
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{here}: must be a table")
        _unknown(here, item, _ICE_KEYS)
        urls = item.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, Sequence) or not urls:
            raise ConfigError(f"{here}.urls: must be a URL or a non-empty list of URLs")
        for url in urls:
            if not isinstance(url, str) or not _ICE_URL.fullmatch(url):
                raise ConfigError(
                    f"{here}.urls: {url!r} is not a stun:, stuns:, turn: or turns: URL"
                )
        username = item.get("username")
        credential = item.get("credential")
        if username is not None:
            username = _text(f"{here}.username", username)
        if credential is not None:
            credential = _text(f"{here}.credential", credential)
        secret = _turn_secret(here, item)
        ttl = _seconds(f"{here}.ttl", item.get("ttl", 86400.0), 60.0, 7 * 86400.0)
        if secret is not None and (username is not None or credential is not None):
            raise ConfigError(f"{here}: give secret_file/secret_env or username and credential")
        if (
            any(u.startswith("turn") for u in urls)
            and secret is None
            and (username is None or credential is None)
        ):
            raise ConfigError(
                f"{here}: a TURN server needs username and credential, or secret_file/secret_env"
            )
        servers.append(IceServerConfig(tuple(urls), username, credential, secret, ttl))
    return tuple(servers)


def _turn_secret(here: str, item: Mapping[str, Any]) -> str | None:
    """The TURN REST shared secret from ``secret_file`` (its first line) or ``secret_env``."""
    if "secret_file" in item and "secret_env" in item:
        raise ConfigError(f"{here}: give secret_file or secret_env, not both")
    if "secret_file" in item:
        path = _text(f"{here}.secret_file", item["secret_file"], max_length=4096)
        try:
            lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{here}.secret_file: cannot read {path}: {exc}") from None
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise ConfigError(f"{here}.secret_file: {path} is empty")
        return secret
    if "secret_env" in item:
        name = _text(f"{here}.secret_env", item["secret_env"], max_length=128)
        secret = os.environ.get(name, "").strip()
        if not secret:
            raise ConfigError(f"{here}.secret_env: the environment variable {name} is not set")
        return secret
    return None


def _seconds(where: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number of seconds")
    if not low <= value <= high:
        raise ConfigError(f"{where}: must be between {low:g} and {high:g}")
    return float(value)


def parse_web_targets(items: Any, *, where: str = "webrtc.web_targets") -> tuple[str, ...]:
    """Validate the web caller allow-list: 1-64 of ``A-Z a-z 0-9 + * # . _ @ : -`` each."""
    if items is None:
        return ()
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ConfigError(f"{where}: must be a list of targets")
    targets: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not _TARGET.fullmatch(item):
            raise ConfigError(f"{where}[{index}]: must be 1-64 letters, digits or + * # . _ @ : -")
        if item in targets:
            raise ConfigError(f"{where}[{index}]: duplicate target {item!r}")
        targets.append(item)
    return tuple(targets)


def parse_webrtc(
    section: Mapping[str, Any] | None,
    agents: Any = None,
    *,
    allow_clear_password: bool = True,
) -> WebrtcConfig:
    """Validate the ``[webrtc]`` table and the ``[[agents]]`` array together."""
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        raise ConfigError("webrtc: must be a table")
    _unknown("webrtc", section, _WEBRTC_KEYS)
    return WebrtcConfig(
        agents=parse_agents(agents, allow_clear_password=allow_clear_password),
        ice_servers=parse_ice_servers(section.get("ice_servers")),
        session_ttl=_seconds(
            "webrtc.session_ttl", section.get("session_ttl", 43200), 60, 7 * 86400
        ),
        reconnect_grace=_seconds(
            "webrtc.reconnect_grace", section.get("reconnect_grace", 30), 1, 3600
        ),
        web_targets=parse_web_targets(section.get("web_targets")),
        receive_path=_receive_path(section.get("receive_path", "bypass")),
        max_playback_rate=_playback_rate(section.get("max_playback_rate", 16000)),
        show_monitoring=_flag("webrtc.show_monitoring", section.get("show_monitoring", False)),
    )


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def _playback_rate(value: Any) -> int:
    if isinstance(value, bool) or value not in PLAYBACK_RATES:
        raise ConfigError(
            "webrtc.max_playback_rate: must be one of " + ", ".join(map(str, PLAYBACK_RATES))
        )
    return int(value)


def _receive_path(value: Any) -> str:
    if value not in RECEIVE_PATHS:
        raise ConfigError("webrtc.receive_path: must be 'bypass' or 'aiortc'")
    return str(value)
