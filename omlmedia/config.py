"""Server configuration: a TOML file or the embedded demo, validated into frozen dataclasses.

`load_config()` reads a file, `load_demo_config()` the embedded ``demo.toml``; both apply
command-line `Overrides` to the raw TOML first, then validate everything in one pass and raise one
`ConfigError` listing every problem with its location (``trunks[1].host: required``,
``--sip-port: ...``).
The reference for every key is ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import tomllib
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from omlmedia.accounts import AccountSeed, parse_accounts
from omlmedia.wallboard import WallboardConfig, parse_wallboard
from queueing.config import AcdConfig
from queueing.config import build_config as build_acd_config
from queueing.exceptions import QueueConfigError
from sip.endpoint import Endpoint
from sip.tls import CertificateError, check_crl, mutual_contexts
from webrtc.accounts import hash_password
from webrtc.config import WebrtcConfig, parse_webrtc
from webrtc.exceptions import ConfigError as WebrtcConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEMO_RESOURCE: Final = "demo.toml"
DEMO_TRUNK: Final = "pbx"
DEMO_USER: Final = "demo"
MIN_DEMO_PASSWORD: Final = 12
"""Characters a given demo password needs when the demo listens beyond loopback: the SIP user, the
agents and the accounts share it, and the SIP port is scanned within minutes."""
DEMO_TRUSTED_SOURCE: Final = "127.0.0.1/32"
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("kv", "json")
TRANSPORTS: Final = ("udp", "tcp", "tls")
_SOURCE_CACHE_SIZE: Final = 4096
CODECS: Final = {name.lower(): name for name in ("PCMU", "PCMA", "G722", "opus", "telephone-event")}


@cache
def package_version() -> str:
    """The installed version of omlmedia (``0.0.0`` when run from an uninstalled tree)."""
    try:
        return metadata.version("omlmedia")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class ConfigError(ValueError):
    """The configuration is invalid; `errors` lists every problem, each ``location: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration")
        self.errors = list(errors)

    def __str__(self) -> str:
        return "invalid configuration:\n" + "\n".join(f"  {e}" for e in self.errors)


class RouteAction(Enum):
    """What a route does with a call (built-in services, or a trunk)."""

    ECHO = "echo"
    MOH = "moh"
    RECORD = "record"
    BUSY = "busy"
    REJECT = "reject"
    DTMF = "dtmf"
    TRUNK = "trunk"
    AGENT = "agent"
    """A browser agent: `agent:<name>`, or `agent` alone when the rewritten user part is the
    agent's name (``pattern = "^agent-(.+)$"``, ``strip = 6``)."""
    QUEUE = "queue"
    """An ACD queue: `queue:<name>`."""
    CAMPAIGN = "campaign"
    """An inbound campaign (its queue, recording, agent page URL): `campaign:<name>`."""
    CONFERENCE = "conference"
    """A conference room named by the rewritten user part (``pattern = "^conf-(.+)$"``,
    ``strip = 5``)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Listeners, media ports, storage and logging of the process."""

    listen: tuple[str, ...] = ("127.0.0.1",)
    """IP addresses to listen on (SIP, HTTP and RTP)."""
    sip_port: int = 5060
    """SIP over UDP and TCP (RFC 3261 §18)."""
    sip_tls_port: int | None = 5061
    """SIP over TLS (RFC 3261 §26.2); None when SIP TLS is off."""
    http_port: int = 8443
    """HTTPS: REST API, WebSocket signalling, agent pages."""
    rtp_port_range: tuple[int, int] = (20000, 29999)
    """Inclusive RTP/RTCP port range; RTP on even ports (RFC 3550 §11)."""
    data_dir: Path = Path("data")
    """Recordings, database, generated certificates; absolute after loading."""
    log_level: str = "info"
    log_format: str = "kv"
    user_agent: str = "omlmedia"
    """User-Agent and Server header value (RFC 3261 §20.41, §20.35); no version by default, so
    a scanner learns nothing to match against advisories."""
    advertise: str | None = None
    """The address peers reach us at, written in Via, Contact and SDP (a public or NAT address);
    None: the listen address, or, when listening on a wildcard, the address of the interface the
    system routes to the first trunk."""


@dataclass(frozen=True, slots=True)
class SipConfig:
    """SIP stack settings: RFC 3261 §17.1.1.1 timer values, limits, digest realm, TLS files."""

    t1: float = 0.5
    """RTT estimate, seconds (RFC 3261 §17.1.1.1)."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests and INVITE responses, seconds."""
    t4: float = 5.0
    """Maximum duration a message remains in the network, seconds."""
    max_message_size: int = 65535
    """Largest SIP message accepted, bytes."""
    tcp_idle_timeout: float = 300.0
    """Idle stream connections are closed after this many seconds."""
    realm: str = "omlmedia"
    """Digest realm of our challenges (RFC 7616 §3.3)."""
    tls_cert: Path | None = None
    """PEM certificate chain; None: a self-signed one is generated into data_dir."""
    tls_key: Path | None = None
    """PEM private key for `tls_cert`."""
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    """Digest challenges we send, in order of preference (RFC 8760 §2.4). Clients that read only the
    first challenge and know only MD5 (sipp 3.6, older phones) need ``["MD5", "SHA-256"]``."""


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Flood protection for untrusted sources, and sources trusted beyond the trunks."""

    rate_limit_requests: int = 100
    """Requests allowed from one untrusted source address per window."""
    rate_limit_window: float = 10.0
    """Seconds."""
    ban_time: float = 300.0
    """Seconds a source exceeding the limit is ignored; 0 means never banned."""
    trusted_networks: tuple[IPNetwork, ...] = ()
    """Sources exempt from rate limits (trunks' trusted_sources are exempt too)."""
    auth_max_failures: int = 10
    """Digest failures a source (IPv4 address, IPv6 /64) may make in a burst before a ban."""
    auth_failure_window: float = 600.0
    """Seconds in which `auth_max_failures` failures are forgiven again."""
    auth_ban_time: float = 3600.0
    """Seconds a source that failed too often is ignored."""
    max_calls_per_user: int = 20
    """Live calls one digest user may hold; the INVITE beyond gets 486 with Retry-After."""
    max_calls_per_source: int = 50
    """Live calls one untrusted source (IPv4 address, IPv6 /64) may hold; trunks and
    `trusted_networks` are not capped per source."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Reverse proxies (HAProxy) in front of the HTTPS pages and API: from a TCP peer in these
    networks, the client's address is the right-most ``X-Forwarded-For`` entry that is not a
    trusted proxy itself (`webrtc.forwarded`); from anyone else the header is ignored."""
    allow_digest_without_qop: bool | None = None
    """Accept digest responses without ``qop`` (RFC 2069 style, which RFC 7616 §3.3 dropped: no
    cnonce, no nonce count, so a captured response replays within the nonce's life) for old
    PBXs. None (absent): accepted only while every listen address is loopback
    (`digest_without_qop_allowed`)."""


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Media handling common to every call."""

    timeout: float = 30.0
    """Seconds without RTP from a call that is up and not on hold before it is ended (cause
    ``media-timeout``, BYE to every leg); 0 turns the check off."""
    recording_format: str = "wav"
    """``wav`` (16-bit PCM, the codec's rate) or ``opus`` (Ogg/Opus, ~10 times smaller) for
    the `record` target."""
    kernel_forwarding: bool = False
    """Relay passthrough bridges in the kernel (nftables rules, `media.kernelpath`) once both
    legs latched; needs CAP_NET_ADMIN and libnftables, and IP forwarding for far ends on other
    hosts. The server says at start whether it is active and why not."""
    max_record_duration: float = 600.0
    """Seconds a call to the `record` target may last: then it is ended with BYE (cause
    ``max-duration``), so a caller cannot fill the disk with one endless call."""


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """The contact center's site (``[site]``)."""

    timezone: str = "UTC"
    """IANA time zone name (``America/Argentina/Buenos_Aires``): a day in the reports and the
    wallboard's "today" is a day of this zone."""

    @property
    def zone(self) -> ZoneInfo:
        """The time zone as a `ZoneInfo` (validated when the configuration was loaded)."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the queue log, call records, events and webhook outbox live (``[storage]``)."""

    dsn: str | None = None
    """A PostgreSQL database (``postgresql://user@host:port/name``, no password in it); None:
    SQLite in the data dir (``omlmedia.db``)."""
    password: str | None = field(default=None, repr=False)
    """The PostgreSQL password, read from ``password_file`` (None: libpq's ``PGPASSWORD`` or
    ``~/.pgpass``, which asyncpg honours, or none)."""
    node: str = field(default_factory=lambda: _default_node())
    """This node's name: its calls in progress are the ones it closes at restart."""

    def location(self, data_dir: Path) -> Path | str:
        """What `omlmedia.storage.Store` opens: the DSN (with the password, in memory only) or
        the SQLite file."""
        if self.dsn is None:
            return data_dir / "omlmedia.db"
        if self.password is None:
            return self.dsn
        parts = urllib.parse.urlsplit(self.dsn)
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        secret = urllib.parse.quote(self.password, safe="")
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What the nodes of a cluster share besides the database (``[cluster]``)."""

    redis_url: str | None = None
    """Redis (``redis://host:port/db``) holding the agents' page sessions, so that a page whose
    node died is taken by another without logging in again (`omlmedia.cluster`); None: sessions
    are each node's own."""
    node: str | None = None
    """This node's name among `nodes` (``[cluster] node``); None: no cross-node calls."""
    nodes: tuple[ClusterNode, ...] = ()
    """The nodes' internal SIP addresses (``[cluster.nodes.<name>] sip``), this one included:
    calls to an agent whose page is on another node go there (`omlmedia.crossnode`)."""
    secret: bytes | None = field(default=None, repr=False)
    """The shared secret signing the internal INVITEs (``[cluster] secret_file``)."""
    acd: str = "local"
    """``"local"``: each node runs its own queues; ``"shared"``: one ACD for the whole cluster
    over Redis (`omlmedia.acd_cluster`): a queue's callers on any node are offered to its agents
    on any node. Needs the cross-node keys (``node``, ``nodes``, ``secret_file``, ``redis_url``)."""
    tls_cert: Path | None = None
    """This node's certificate on the internal leg (``[cluster] tls_cert``), issued by `tls_ca`;
    with `tls_key` and `tls_ca` the internal leg is SIP over mutual TLS with SDES-SRTP media
    (`omlmedia.crossnode`); None (all three unset): UDP and RTP in clear."""
    tls_key: Path | None = None
    """The private key of `tls_cert`."""
    tls_ca: Path | None = None
    """The cluster's CA: a peer on the internal leg must present a certificate it issued."""
    tls_crl: Path | None = None
    """A PEM CRL of `tls_ca` (``[cluster] tls_crl``): a peer presenting a certificate it revokes
    is refused at the handshake; read at start-up. None: no revocation check."""

    @property
    def tls(self) -> bool:
        """Whether the internal leg is encrypted (SIP over mutual TLS, SRTP)."""
        return self.tls_ca is not None


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """A node of the cluster, as the others reach it for cross-node calls: its SIP address
    (UDP), or with ``[cluster] tls_ca`` its internal TLS listener."""

    name: str
    host: str
    """An IP address: an internal INVITE is admitted by its exact source address and port."""
    port: int


def _default_node() -> str:
    """The host name, as a node name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
    return name or "node"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """REST/debug API credentials: only the SHA-256 of the bearer token is kept."""

    token_sha256: str
    """Lower-case hex SHA-256 of the API token."""
    metrics_listen: tuple[str, int] | None = None
    """Where ``/metrics`` is also served in plain HTTP without a token (a private address for
    Prometheus); None: only on the API's port, with a token."""

    def token_matches(self, token: str) -> bool:
        """True when `token` hashes to `token_sha256` (constant-time comparison)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(digest, self.token_sha256)


@dataclass(frozen=True, slots=True)
class Trunk:
    """A SIP peer (PBX, carrier) trusted by source address and reached at host:port.

    Outbound credentials answer the peer's digest challenges (RFC 7616 §3.4): `password` is kept
    as given because answering needs it (or its HA1 for the peer's realm, `auth_realm`).
    """

    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    trusted_sources: tuple[IPNetwork, ...] = ()
    outbound_proxy: Endpoint | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ha1_md5: str | None = field(default=None, repr=False)
    ha1_sha256: str | None = field(default=None, repr=False)
    auth_realm: str | None = None
    register: bool = False
    register_expires: int = 3600
    qualify_interval: float = 0.0
    """Seconds between OPTIONS pings (RFC 3261 §11); 0 means off."""
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "telephone-event")
    """Offered in this order (RFC 3264 §5.1); telephone-event is RFC 4733 DTMF."""
    srtp: bool = False
    """Offer SRTP with SDES keys (RTP/SAVP, RFC 4568) on calls we place to this trunk. Calls the
    trunk places with SRTP are answered with SRTP whatever this says (over TLS, or with
    `allow_sdes_over_udp`)."""
    allow_sdes_over_udp: bool = False
    """SDES keys travel in the SDP in clear (RFC 4568 §8.1): on a trunk whose transport is not
    TLS they are refused (its SRTP offers get 488, ``srtp = true`` is a configuration error)
    unless this is true, for a PBX on a network nobody else can read."""
    allowed_targets: tuple[str, ...] | None = None
    """Route targets this trunk's calls and transfers may reach (`may_reach`); None: every
    target but ``trunk:`` ones."""

    @property
    def endpoint(self) -> Endpoint:
        """Next hop for requests to this trunk: the outbound proxy if set (RFC 3261 §8.1.2)."""
        if self.outbound_proxy is not None:
            return self.outbound_proxy
        return Endpoint(self.transport, self.host, self.port)

    def trusts(self, address: str) -> bool:
        """True when a request from `address` (an IP literal) belongs to this trunk."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_sources)


@dataclass(frozen=True, slots=True)
class User:
    """A SIP user allowed from untrusted sources through digest (RFC 7616); hashes only."""

    name: str
    ha1_md5: str | None = field(default=None, repr=False)
    """H(name:realm:password) with MD5, lower-case hex."""
    ha1_sha256: str | None = field(default=None, repr=False)
    """H(name:realm:password) with SHA-256, lower-case hex."""
    allowed_targets: tuple[str, ...] | None = None
    """Route targets this user's calls and transfers may reach (`may_reach`); None: every
    target but ``trunk:`` ones."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call goes, chosen by its Request-URI user part (RFC 3261 §19.1.1)."""

    action: RouteAction
    user: str | None = None
    """Exact user part to match; exactly one of `user` and `pattern` is set."""
    pattern: re.Pattern[str] | None = None
    """Regular expression the whole user part must match."""
    trunk: str | None = None
    """Trunk name when `action` is TRUNK; agent name when `action` is AGENT with a name."""
    strip: int = 0
    """Leading characters removed from the user part."""
    prefix: str = ""
    """Prepended to the user part after `strip`."""

    @property
    def target(self) -> str:
        """The target as written in the configuration (``echo``, ``trunk:pbx``...)."""
        if self.action is RouteAction.TRUNK:
            return f"trunk:{self.trunk}"
        if (
            self.action in (RouteAction.AGENT, RouteAction.QUEUE, RouteAction.CAMPAIGN)
            and self.trunk
        ):
            return f"{self.action.value}:{self.trunk}"
        return str(self.action.value)

    def apply(self, user: str) -> str | None:
        """The rewritten user part when this route matches `user`, else None."""
        if self.user is not None:
            if user != self.user:
                return None
        elif self.pattern is None or self.pattern.fullmatch(user) is None:
            return None
        return self.prefix + user[self.strip :]


@dataclass(frozen=True, slots=True)
class GeneratedSecrets:
    """Secrets generated at load because none were given; shown once in the banner."""

    api_token: str | None = field(default=None, repr=False)
    demo_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    server: ServerConfig
    sip: SipConfig
    security: SecurityConfig
    api: ApiConfig
    trunks: tuple[Trunk, ...] = ()
    users: tuple[User, ...] = ()
    routes: tuple[Route, ...] = ()
    media: MediaConfig = MediaConfig()
    site: SiteConfig = SiteConfig()
    storage: StorageConfig = field(default_factory=StorageConfig)
    """Where the records live (``[storage]``)."""
    cluster: ClusterConfig = ClusterConfig()
    """What the nodes of a cluster share (``[cluster]``)."""
    """The site: its time zone (``[site]``)."""
    wallboard: WallboardConfig = field(default_factory=WallboardConfig)
    """The supervisors' wallboard: thresholds, pause reasons, the low-MOS flag
    (``[wallboard]``, `omlmedia.wallboard`)."""
    webrtc: WebrtcConfig = field(default_factory=WebrtcConfig)
    """Browser agents and the agent page (``[webrtc]``, ``[[agents]]``)."""
    acd: AcdConfig | None = None
    """The queues (``[queues.NAME]``) and their members; None when there is none."""
    campaigns: tuple[Campaign, ...] = ()
    disposition_sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """Named lists of dispositions (``[disposition_sets.<name>]``) that campaigns refer to."""
    accounts: tuple[AccountSeed, ...] = ()
    """Accounts of the API and the pages (``[[accounts]]``; agents are in ``webrtc.agents``)."""
    """Inbound campaigns (``[[campaigns]]``)."""
    source: Path | None = None
    """The file it was read from; None for the embedded demo."""
    generated: GeneratedSecrets = GeneratedSecrets()
    _source_cache: dict[str, Trunk | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def is_demo(self) -> bool:
        """True for the embedded demo configuration."""
        return self.source is None

    def trunk(self, name: str) -> Trunk | None:
        """The trunk called `name`, if any."""
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None

    def trunk_for_source(self, address: str) -> Trunk | None:
        """The first trunk whose trusted_sources contain `address` (answers are cached)."""
        cache = self._source_cache
        try:
            return cache[address]
        except KeyError:
            pass
        found = next((trunk for trunk in self.trunks if trunk.trusts(address)), None)
        if len(cache) >= _SOURCE_CACHE_SIZE:
            cache.clear()
        cache[address] = found
        return found

    def user(self, name: str) -> User | None:
        """The SIP user called `name`, if any."""
        for user in self.users:
            if user.name == name:
                return user
        return None

    def route(self, user: str) -> tuple[Route, str] | None:
        """The first route matching a Request-URI user part, with the rewritten user part."""
        for route in self.routes:
            rewritten = route.apply(user)
            if rewritten is not None:
                return route, rewritten
        return None


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values that replace those of the file (None: keep the file's value)."""

    listen: tuple[str, ...] | None = None
    sip_port: int | None = None
    sip_tls_port: int | None = None
    no_tls: bool = False
    http_port: int | None = None
    rtp_port_range: tuple[int, int] | None = None
    data_dir: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    demo_pbx: tuple[str, int] | None = None
    """Host and port of the demo trunk ``pbx`` (demo only)."""
    demo_password: str | None = field(default=None, repr=False)
    """Password of the demo SIP user (demo only)."""
    api_token: str | None = field(default=None, repr=False)


def digest_ha1(user: str, realm: str, password: str) -> tuple[str, str]:
    """H(user:realm:password) with MD5 and SHA-256, lower-case hex (RFC 7616 §3.4.2)."""
    a1 = f"{user}:{realm}:{password}".encode()
    return hashlib.md5(a1).hexdigest(), hashlib.sha256(a1).hexdigest()


def may_reach(allowed: tuple[str, ...] | None, target: str) -> bool:
    """True when a caller with `allowed` (``allowed_targets`` of its trunk or digest user) may
    reach the route target `target` (``echo``, ``trunk:pbx``, ``campaign:sales``...).

    Each entry is a shell-style pattern (``*``, ``campaign:*``, ``trunk:pbx``); None, the default,
    allows every target but ``trunk:`` ones: a trunk or user calls out through a trunk only when
    the configuration says so."""
    if allowed is None:
        return not target.startswith("trunk:")
    return any(fnmatch.fnmatchcase(target, pattern) for pattern in allowed)


def permission_warnings(config: Config) -> list[str]:
    """What `check-config` and `serve` warn about route permissions: a UDP trunk that can reach a
    ``trunk:`` route (anyone who forges its source address can dial out)."""
    warnings: list[str] = []
    for index, trunk in enumerate(config.trunks):
        if trunk.transport != "udp":
            continue
        reached = [
            f"routes[{i}] ({route.target})"
            for i, route in enumerate(config.routes)
            if route.action is RouteAction.TRUNK and may_reach(trunk.allowed_targets, route.target)
        ]
        if reached:
            warnings.append(
                f"trunks[{index}].allowed_targets: UDP trunk {trunk.name!r} can reach "
                f"{', '.join(reached)}; whoever forges its source address can dial out "
                "(prefer TCP or TLS, or leave trunk: targets out)"
            )
    return warnings


def digest_warnings(config: Config) -> list[str]:
    """What `check-config` and `serve` warn about digest: MD5 challenges (RFC 7616 keeps MD5 for
    old clients only) offered to digest users while listening beyond loopback, and digest
    without ``qop`` allowed there."""
    if not config.users or not _beyond_loopback(config.server.listen):
        return []
    warnings: list[str] = []
    if config.security.allow_digest_without_qop:
        warnings.append(
            "security.allow_digest_without_qop: digest responses without qop are accepted on a "
            "listen address beyond loopback; a captured response replays while its nonce lives "
            "(keep it only for PBXs that know nothing else)"
        )
    if "MD5" not in config.sip.digest_algorithms:
        return warnings
    md5_only = [user.name for user in config.users if user.ha1_sha256 is None]
    text = (
        "sip.digest_algorithms: MD5 is offered to digest users on a listen address beyond "
        "loopback; keep it only for clients that know nothing else (SHA-256 alone: "
        '["SHA-256"])'
    )
    if md5_only:
        text += f"; users with an MD5 hash only: {', '.join(md5_only)}"
    return [*warnings, text]


def digest_without_qop_allowed(config: Config) -> bool:
    """Whether digest responses without ``qop`` are accepted: `allow_digest_without_qop` when
    set, else only while every listen address is loopback (RFC 7616 §3.3 wants qop=auth)."""
    allowed = config.security.allow_digest_without_qop
    if allowed is not None:
        return allowed
    return not _beyond_loopback(config.server.listen)


def sdes_allowed(trunk: Trunk | None, transport: str) -> bool:
    """Whether an SDES offer (keys in the SDP) received over `transport` from `trunk` (None: a
    digest user) may be answered: over TLS always, otherwise only from a trunk that sets
    ``allow_sdes_over_udp`` (digest users' phones are not restricted)."""
    if transport == "tls" or trunk is None:
        return True
    return trunk.allow_sdes_over_udp


def sdes_warnings(config: Config) -> list[str]:
    """What `check-config` and `serve` warn about SDES: a trunk that allows its keys over a
    non-TLS transport while it is not on a private network (its host is a public address or a
    host name), where whoever reads the path reads the keys."""
    warnings: list[str] = []
    for index, trunk in enumerate(config.trunks):
        if not trunk.allow_sdes_over_udp or trunk.transport == "tls":
            continue
        try:
            address = ipaddress.ip_address(trunk.host)
        except ValueError:
            public = True
        else:
            public = address.is_global
        if public:
            warnings.append(
                f"trunks[{index}].allow_sdes_over_udp: SRTP keys to and from trunk "
                f"{trunk.name!r} cross {trunk.transport.upper()} in clear to a public address "
                f"({trunk.host}); whoever reads the path decrypts the calls (prefer TLS)"
            )
    return warnings


def cluster_warnings(config: Config) -> list[str]:
    """What `check-config` and `serve` warn about the cluster: a shared ACD whose records stay
    in each node's SQLite (``[storage]`` without ``dsn``), where each node keeps its own queue
    log and call records, so the cluster's figures do not add up; nodes on several hosts whose
    internal leg is in clear (no ``tls_ca``), where the callers' audio crosses the network
    readable."""
    cluster = config.cluster
    warnings: list[str] = []
    if cluster.acd == "shared" and config.storage.dsn is None:
        warnings.append(
            "cluster.acd: the ACD is shared but the records are in this node's SQLite "
            "([storage] without dsn): each node keeps its own queue log and call records, so the "
            "cluster's reports and figures do not add up; set storage.dsn to the PostgreSQL "
            "database every node shares"
        )
    hosts = {node.host for node in cluster.nodes}
    if cluster.node is not None and not cluster.tls and len(hosts) > 1:
        warnings.append(
            "cluster.tls_ca: the nodes are on several hosts ("
            + ", ".join(sorted(hosts))
            + ") and the internal leg between them is in clear (SIP over UDP, RTP): whoever "
            "reads the network hears the calls that cross nodes; set tls_cert, tls_key and "
            "tls_ca for SIP over mutual TLS with SRTP"
        )
    return warnings


def summary(config: Config) -> list[str]:
    """A few lines describing a valid configuration (for `check-config`)."""
    server = config.server
    tls = f"TLS {server.sip_tls_port}" if server.sip_tls_port is not None else "no TLS"
    low, high = server.rtp_port_range
    lines = [
        f"listen {', '.join(server.listen)}: SIP {server.sip_port} (UDP, TCP), {tls}, "
        f"HTTP {server.http_port}, RTP {low}-{high}",
        f"data_dir {server.data_dir}; log {server.log_level} as {server.log_format}",
        f"{len(config.trunks)} trunk(s): "
        + (", ".join(f"{t.name} ({t.endpoint})" for t in config.trunks) or "none"),
        f"{len(config.users)} user(s), {len(config.routes)} route(s), "
        f"SIP realm {config.sip.realm!r}",
    ]
    if config.generated.api_token is not None:
        lines.append("api.token_sha256 not set: serve generates a random token at each start")
    return lines


def load_config(path: str | Path, overrides: Overrides | None = None) -> Config:
    """Read, override and validate a TOML configuration file; raises `ConfigError`."""
    overrides = overrides or Overrides()
    path = Path(path)
    demo_only = [
        flag
        for flag, value in (
            ("--demo-pbx", overrides.demo_pbx),
            ("--demo-password", overrides.demo_password),
        )
        if value is not None
    ]
    if demo_only:
        raise ConfigError(
            [f"{flag}: only applies to the embedded demo (no --config)" for flag in demo_only]
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    raw = _parse_toml(data)
    return _build(raw, overrides, base_dir=path.absolute().parent, source=path)


def _beyond_loopback(addresses: Iterable[object]) -> bool:
    """True when one of `addresses` is not a loopback IP address (a wildcard is every address)."""
    for address in addresses:
        try:
            if not ipaddress.ip_address(str(address).strip("[]")).is_loopback:
                return True
        except ValueError:
            return True
    return False


def load_demo_config(overrides: Overrides | None = None) -> Config:
    """The embedded demo configuration (``omlmedia/demo.toml``) with `overrides` applied.

    The trunk ``pbx`` goes to `demo_pbx` (default 127.0.0.1:5070) and trusts 127.0.0.1 (and the
    demo PBX address when it is an IP literal); the SIP user ``demo`` gets the HA1s of
    `demo_password`, generated when absent. Relative paths are relative to the working directory.
    """
    overrides = overrides or Overrides()
    raw = _parse_toml(resources.files("omlmedia").joinpath(DEMO_RESOURCE).read_bytes())
    origins: dict[str, str] = {}
    errors: list[str] = []
    generated_password: str | None = None
    for index, trunk in enumerate(raw["trunks"]):
        if trunk["name"] == DEMO_TRUNK and overrides.demo_pbx is not None:
            host, port = overrides.demo_pbx
            trunk["host"], trunk["port"] = host, port
            origins[f"trunks[{index}].host"] = origins[f"trunks[{index}].port"] = "--demo-pbx"
            network = _ip_network_or_none(host.strip("[]"))
            if network is not None and network not in map(
                ipaddress.ip_network, trunk["trusted_sources"]
            ):
                trunk["trusted_sources"].append(str(network))
    password = overrides.demo_password
    listen = overrides.listen if overrides.listen is not None else raw["server"]["listen"]
    if password is None:
        password = generated_password = secrets.token_urlsafe(12)
    elif not password:
        errors.append("--demo-password: must not be empty")
        password = secrets.token_urlsafe(12)
    elif len(password) < MIN_DEMO_PASSWORD and _beyond_loopback(listen):
        errors.append(
            f"--demo-password: at least {MIN_DEMO_PASSWORD} characters when listening beyond "
            "loopback (the SIP user and every agent share it)"
        )
    realm = raw["sip"]["realm"]
    for user in raw["users"]:
        if user["name"] == DEMO_USER:
            user["ha1_md5"], user["ha1_sha256"] = digest_ha1(DEMO_USER, realm, password)
    for agent in [*raw.get("agents", ()), *raw.get("accounts", ())]:
        agent["password_hash"] = hash_password(password)
    return _build(
        raw,
        overrides,
        base_dir=Path.cwd(),
        source=None,
        origins=origins,
        errors=errors,
        generated_password=generated_password,
    )


_TOML_POSITION = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"
)


def _parse_toml(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"byte {exc.start}: not valid UTF-8"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        if match is None:
            raise ConfigError([f"TOML syntax error: {exc}"]) from None
        if match["line"] is None:
            where = f"line {text.count(chr(10)) + 1} (end of file)"
        else:
            where = f"line {match['line']}, column {match['col']}"
        raise ConfigError([f"{where}: {match['msg']}"]) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _ip_network_or_none(text: object) -> IPNetwork | None:
    if not isinstance(text, str):
        return None
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        return None


_TOML_TYPES: Final[Mapping[type, str]] = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_URI_USER = re.compile(r"[^\s@:<>\"]+")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_MISSING: Final = object()


def _type_name(value: object) -> str:
    for kind, name in _TOML_TYPES.items():
        if type(value) is kind:
            return name
    return "a date/time"


_DEFAULT_CODECS: Final = ("PCMU", "PCMA", "telephone-event")


class _Checker:
    """Collects errors; reads typed values from raw TOML tables."""

    def __init__(self, origins: Mapping[str, str]) -> None:
        self.errors: list[str] = []
        self.origins = origins

    def error(self, path: str, message: str) -> None:
        flag = self.origins.get(path)
        if flag is None and path.endswith("]"):
            flag = self.origins.get(path.rpartition("[")[0])
        self.errors.append(f"{flag} ({path}): {message}" if flag else f"{path}: {message}")

    def table(
        self, path: str, value: object, allowed: tuple[str, ...], hints: Mapping[str, str] = {}
    ) -> dict[str, Any]:
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a table, got {_type_name(value)}")
            return {}
        for key in value:
            if key in allowed:
                continue
            where = f"{path}.{key}" if path else key
            if key in hints:
                self.error(where, hints[key])
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            suggestion = f' (did you mean "{close[0]}"?)' if close else ""
            self.error(where, f"unknown key{suggestion}")
        return value

    def tables(self, path: str, value: object) -> Iterator[tuple[str, Any]]:
        if value is _MISSING:
            return
        if not isinstance(value, list):
            self.error(path, f"expected an array of tables ([[{path}]]), got {_type_name(value)}")
            return
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item

    def get(self, table: dict[str, Any], path: str, key: str, kind: type, what: str) -> Any:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            self.error(_join(path, key), f"expected {what}, got {_type_name(value)}")
            return None
        return value

    def string(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        choices: tuple[str, ...] = (),
    ) -> str | None:
        value = self.get(table, path, key, str, "a string")
        if value is _MISSING:
            if required:
                self.error(_join(path, key), "required")
            return default
        if value is None:
            return None
        if choices:
            lowered = value.lower()
            if lowered not in choices:
                self.error(_join(path, key), f"must be one of {', '.join(choices)}")
                return None
            return str(lowered)
        if pattern is not None and pattern.fullmatch(value) is None:
            self.error(_join(path, key), f"invalid value {value!r}")
            return None
        if required and not value:
            self.error(_join(path, key), "must not be empty")
            return None
        return str(value)

    def integer(
        self, table: dict[str, Any], path: str, key: str, default: int, low: int, high: int
    ) -> int | None:
        value = self.get(table, path, key, int, "an integer")
        if value is _MISSING:
            return default
        if value is None:
            return None
        if not low <= value <= high:
            self.error(_join(path, key), f"must be an integer from {low} to {high}")
            return None
        return int(value)

    def number(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        low: float,
        high: float,
        *,
        low_open: bool = False,
    ) -> float | None:
        value = self.get(table, path, key, float, "a number")
        if value is _MISSING:
            return default
        if value is None:
            return None
        if value > high or value < low or (low_open and value == low):
            bound = "greater than" if low_open else "at least"
            self.error(_join(path, key), f"must be {bound} {low:g} and at most {high:g}")
            return None
        return float(value)

    def boolean(self, table: dict[str, Any], path: str, key: str, default: bool) -> bool | None:
        value = self.get(table, path, key, bool, "a boolean")
        if value is _MISSING:
            return default
        return None if value is None else bool(value)

    def strings(
        self, table: dict[str, Any], path: str, key: str, default: tuple[str, ...]
    ) -> tuple[str, ...] | None:
        value = self.get(table, path, key, list, "an array of strings")
        if value is _MISSING:
            return default
        if value is None:
            return None
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        for i in bad:
            self.error(f"{_join(path, key)}[{i}]", f"expected a string, got {_type_name(value[i])}")
        return None if bad else tuple(value)

    def networks(self, table: dict[str, Any], path: str, key: str) -> tuple[IPNetwork, ...] | None:
        values = self.strings(table, path, key, ())
        if values is None:
            return None
        result: list[IPNetwork] = []
        for i, text in enumerate(values):
            try:
                result.append(ipaddress.ip_network(text))
            except ValueError:
                self.error(
                    f"{_join(path, key)}[{i}]",
                    f"bad CIDR {text!r} (an address, or a network with no host bits set)",
                )
        return tuple(result) if len(result) == len(values) else None

    def path(self, table: dict[str, Any], path: str, key: str, base_dir: Path) -> Path | None:
        text = self.string(table, path, key)
        if not text:
            if text == "":
                self.error(_join(path, key), "must not be empty")
            return None
        resolved = Path(text).expanduser()
        return resolved if resolved.is_absolute() else base_dir / resolved


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _apply_overrides(
    raw: dict[str, Any], overrides: Overrides, origins: dict[str, str]
) -> dict[str, Any]:
    server = raw.setdefault("server", {})
    if not isinstance(server, dict):
        return raw
    values: tuple[tuple[str, str, object], ...] = (
        ("listen", "--listen", list(overrides.listen) if overrides.listen is not None else None),
        ("sip_port", "--sip-port", overrides.sip_port),
        ("sip_tls_port", "--sip-tls-port", overrides.sip_tls_port),
        ("sip_tls_port", "--no-tls", False if overrides.no_tls else None),
        ("http_port", "--http-port", overrides.http_port),
        (
            "rtp_port_range",
            "--rtp-ports",
            list(overrides.rtp_port_range) if overrides.rtp_port_range is not None else None,
        ),
        (
            "data_dir",
            "--data-dir",
            str(Path(overrides.data_dir).absolute()) if overrides.data_dir else overrides.data_dir,
        ),
        ("log_level", "--log-level", overrides.log_level),
        ("log_format", "--log-format", overrides.log_format),
    )
    for key, flag, value in values:
        if value is not None:
            server[key] = value
            origins[f"server.{key}"] = flag
    if overrides.api_token is not None:
        api = raw.setdefault("api", {})
        if isinstance(api, dict):
            origins["api.token_sha256"] = "--api-token"
            api["token_sha256"] = (
                hashlib.sha256(overrides.api_token.encode()).hexdigest()
                if overrides.api_token.strip()
                else ""
            )
    return raw


_TOP_KEYS: Final = (
    "server",
    "sip",
    "security",
    "media",
    "api",
    "trunks",
    "users",
    "routes",
    "webrtc",
    "agents",
    "queues",
    "campaigns",
    "disposition_sets",
    "accounts",
    "site",
    "storage",
    "wallboard",
    "cluster",
)
_SITE_KEYS: Final = ("timezone",)
_STORAGE_KEYS: Final = ("dsn", "password_file", "node")
_CLUSTER_KEYS: Final = (
    "redis_url",
    "node",
    "secret_file",
    "nodes",
    "acd",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "tls_crl",
)
_CLUSTER_SECRET_MIN: Final = 16
"""Bytes of the shortest cluster secret accepted."""
_NODE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MEDIA_KEYS: Final = ("timeout", "recording_format", "kernel_forwarding", "max_record_duration")
_SERVER_KEYS: Final = (
    "listen",
    "sip_port",
    "sip_tls_port",
    "http_port",
    "rtp_port_range",
    "data_dir",
    "log_level",
    "log_format",
    "user_agent",
    "advertise",
)
_SIP_KEYS: Final = (
    "t1",
    "t2",
    "t4",
    "max_message_size",
    "tcp_idle_timeout",
    "realm",
    "tls_cert",
    "tls_key",
    "digest_algorithms",
)
_SECURITY_KEYS: Final = (
    "rate_limit_requests",
    "rate_limit_window",
    "ban_time",
    "trusted_networks",
    "auth_max_failures",
    "auth_failure_window",
    "auth_ban_time",
    "max_calls_per_user",
    "max_calls_per_source",
    "trusted_proxies",
    "allow_digest_without_qop",
)
_API_KEYS: Final = ("token_sha256", "metrics_listen")
_TRUNK_KEYS: Final = (
    "name",
    "host",
    "port",
    "transport",
    "trusted_sources",
    "outbound_proxy",
    "username",
    "password",
    "ha1_md5",
    "ha1_sha256",
    "auth_realm",
    "register",
    "srtp",
    "allow_sdes_over_udp",
    "register_expires",
    "qualify_interval",
    "codecs",
    "allowed_targets",
)
_USER_KEYS: Final = ("name", "ha1_md5", "ha1_sha256", "allowed_targets")
_ROUTE_KEYS: Final = ("user", "pattern", "target", "strip", "prefix")
_PLAINTEXT_HINT: Final = "plain passwords are not accepted here; run `omlmedia hash-password`"
_TOKEN_HINT: Final = "plain tokens are not accepted; give token_sha256 (SHA-256 hex of the token)"


def _build(
    raw: dict[str, Any],
    overrides: Overrides,
    *,
    base_dir: Path,
    source: Path | None,
    origins: dict[str, str] | None = None,
    errors: list[str] | None = None,
    generated_password: str | None = None,
) -> Config:
    origins = {} if origins is None else origins
    raw = _apply_overrides(raw, overrides, origins)
    check = _Checker(origins)
    check.errors.extend(errors or ())
    check.table("", raw, _TOP_KEYS)
    server = _server(check, raw.get("server", _MISSING), base_dir)
    sip = _sip(check, raw.get("sip", _MISSING), base_dir)
    security = _security(check, raw.get("security", _MISSING))
    media = _media(check, raw.get("media", _MISSING))
    site = _site(check, raw.get("site", _MISSING))
    storage = _storage(check, raw.get("storage", _MISSING), base_dir)
    cluster = _cluster(check, raw.get("cluster", _MISSING), base_dir)
    if server is not None and cluster is not None:
        _internal_port(check, server, cluster)
    api, api_token = _api(check, raw.get("api", _MISSING))
    trunk_names = _trunk_names(raw.get("trunks"))
    trunks = _trunks(check, raw.get("trunks", _MISSING), trunk_names)
    users = _users(check, raw.get("users", _MISSING), trunk_names)
    routes = _routes(check, raw.get("routes", _MISSING), _trunk_names(raw.get("trunks")))
    webrtc = WebrtcConfig()
    try:
        webrtc = parse_webrtc(raw.get("webrtc"), raw.get("agents"), allow_clear_password=False)
    except WebrtcConfigError as exc:
        check.errors.append(str(exc))
    agent_names = {agent.name for agent in webrtc.agents}
    acd: AcdConfig | None = None
    if raw.get("queues"):
        try:
            acd = build_acd_config(
                {
                    "agents": {a.name: {"name": a.display_name} for a in webrtc.agents},
                    "queues": raw["queues"],
                }
            )
        except QueueConfigError as exc:
            check.errors.extend(e if e.startswith("queues") else f"queues: {e}" for e in exc.errors)
    queue_names = set(acd.queues) if acd is not None else set()
    wallboard, wallboard_errors = parse_wallboard(raw.get("wallboard"), queue_names)
    check.errors.extend(wallboard_errors)
    disposition_sets = parse_disposition_sets(check, raw.get("disposition_sets", _MISSING))
    campaigns = _campaigns(
        check,
        raw.get("campaigns", _MISSING),
        queue_names,
        _trunk_names(raw.get("trunks")),
        disposition_sets,
    )
    campaign_names = {c.name for c in campaigns}
    accounts, account_errors = parse_accounts(
        raw.get("accounts"), agents=agent_names, known=campaign_names | queue_names
    )
    check.errors.extend(account_errors)
    for index, route in enumerate(routes):
        where = f"routes[{index}].target"
        if route.action is RouteAction.AGENT and route.trunk and route.trunk not in agent_names:
            check.errors.append(f'{where}: unknown agent "{route.trunk}"')
        if route.action is RouteAction.QUEUE and route.trunk not in queue_names:
            check.errors.append(f'{where}: unknown queue "{route.trunk}"')
        if route.action is RouteAction.CAMPAIGN and route.trunk not in campaign_names:
            check.errors.append(f'{where}: unknown campaign "{route.trunk}"')
    if (
        check.errors
        or server is None
        or sip is None
        or security is None
        or media is None
        or site is None
        or storage is None
        or cluster is None
        or api is None
    ):
        raise ConfigError(check.errors)
    return Config(
        server=server,
        sip=sip,
        security=security,
        media=media,
        site=site,
        wallboard=wallboard,
        storage=storage,
        cluster=cluster,
        api=api,
        trunks=trunks,
        users=users,
        routes=routes,
        webrtc=webrtc,
        acd=acd,
        campaigns=campaigns,
        disposition_sets=disposition_sets,
        accounts=accounts,
        source=source,
        generated=GeneratedSecrets(api_token=api_token, demo_password=generated_password),
    )


def _server(check: _Checker, value: object, base_dir: Path) -> ServerConfig | None:
    table = check.table("server", value, _SERVER_KEYS)
    p = "server"
    defaults = ServerConfig()
    listen = check.strings(table, p, "listen", defaults.listen)
    if listen is not None:
        listen = _listen(check, listen)
    sip_port = check.integer(table, p, "sip_port", defaults.sip_port, 1, 65535)
    tls_value = table.get("sip_tls_port", _MISSING)
    sip_tls_port: int | None
    if tls_value is False:
        sip_tls_port = None
    elif tls_value is True:
        check.error("server.sip_tls_port", "must be a port from 1 to 65535, or false for off")
        sip_tls_port = None
    else:
        sip_tls_port = check.integer(table, p, "sip_tls_port", 5061, 1, 65535)
    tls_ok = tls_value is False or sip_tls_port is not None
    http_port = check.integer(table, p, "http_port", defaults.http_port, 1, 65535)
    rtp = _rtp_range(check, table)
    data_dir = check.path(table, p, "data_dir", base_dir)
    if "data_dir" not in table:
        data_dir = base_dir / defaults.data_dir
    log_level = check.string(table, p, "log_level", defaults.log_level, choices=LOG_LEVELS)
    log_format = check.string(table, p, "log_format", defaults.log_format, choices=LOG_FORMATS)
    user_agent = check.string(table, p, "user_agent", defaults.user_agent)
    if user_agent is not None and (not user_agent.strip() or not user_agent.isprintable()):
        check.error("server.user_agent", "must be printable text")
    advertise = check.string(table, p, "advertise", None)
    if advertise is not None:
        try:
            ip = ipaddress.ip_address(advertise.strip("[]"))
        except ValueError:
            check.error("server.advertise", f"not an IP address: {advertise!r}")
        else:
            if ip.is_unspecified:
                check.error("server.advertise", "must be an address peers reach, not a wildcard")
            advertise = str(ip)
    _port_clashes(check, sip_port, sip_tls_port, http_port, rtp)
    if (
        listen is None
        or sip_port is None
        or not tls_ok
        or http_port is None
        or rtp is None
        or data_dir is None
        or log_level is None
        or log_format is None
        or user_agent is None
    ):
        return None
    return ServerConfig(
        listen=listen,
        sip_port=sip_port,
        sip_tls_port=sip_tls_port,
        http_port=http_port,
        rtp_port_range=rtp,
        data_dir=data_dir,
        log_level=log_level,
        log_format=log_format,
        user_agent=user_agent,
        advertise=advertise,
    )


def _listen(check: _Checker, listen: tuple[str, ...]) -> tuple[str, ...] | None:
    if not listen:
        check.error("server.listen", "must list at least one address")
        return None
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    ok = True
    for i, text in enumerate(listen):
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            check.error(f"server.listen[{i}]", f"not an IP address: {text!r}")
            ok = False
            continue
        if address in addresses:
            check.error(f"server.listen[{i}]", f"duplicate address {text!r}")
            ok = False
        addresses.append(address)
    for address in addresses:
        if address.is_unspecified and any(
            a.version == address.version and a != address for a in addresses
        ):
            check.error(
                "server.listen", f"{address} already covers every IPv{address.version} address"
            )
            ok = False
    return tuple(str(a) for a in addresses) if ok else None


def _rtp_range(check: _Checker, table: dict[str, Any]) -> tuple[int, int] | None:
    value = table.get("rtp_port_range", _MISSING)
    if value is _MISSING:
        return 20000, 29999
    where = "server.rtp_port_range"
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        check.error(where, "expected [LOW, HIGH], two integers")
        return None
    low, high = value
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        check.error(where, "ports must be from 1 to 65535")
        return None
    if low % 2:
        check.error(where, "LOW must be even (RTP uses even ports, RFC 3550 §11)")
        return None
    if low >= high:
        check.error(where, "LOW must be less than HIGH")
        return None
    return low, high


def _port_clashes(
    check: _Checker,
    sip_port: int | None,
    sip_tls_port: int | None,
    http_port: int | None,
    rtp: tuple[int, int] | None,
) -> None:
    tcp = [
        ("sip_port", sip_port),
        ("sip_tls_port", sip_tls_port),
        ("http_port", http_port),
    ]
    for i, (name, port) in enumerate(tcp):
        for other, other_port in tcp[:i]:
            if port and port == other_port:
                check.error(f"server.{name}", f"port {port} clashes with server.{other} (TCP)")
    if rtp is not None and sip_port is not None and rtp[0] <= sip_port <= rtp[1]:
        check.error(
            "server.rtp_port_range",
            f"contains server.sip_port {sip_port} (UDP)",
        )


def _sip(check: _Checker, value: object, base_dir: Path) -> SipConfig | None:
    table = check.table("sip", value, _SIP_KEYS)
    p = "sip"
    d = SipConfig()
    t1 = check.number(table, p, "t1", d.t1, 0.0, 60.0, low_open=True)
    t2 = check.number(table, p, "t2", d.t2, 0.0, 600.0, low_open=True)
    t4 = check.number(table, p, "t4", d.t4, 0.0, 600.0, low_open=True)
    if t1 is not None and t2 is not None and t2 < t1:
        check.error("sip.t2", "must be at least sip.t1")
    size = check.integer(table, p, "max_message_size", d.max_message_size, 1024, 16 * 1024 * 1024)
    idle = check.number(
        table, p, "tcp_idle_timeout", d.tcp_idle_timeout, 0.0, 86400.0, low_open=True
    )
    realm = check.string(table, p, "realm", d.realm)
    if realm is not None and (
        not realm or '"' in realm or "\\" in realm or not realm.isprintable()
    ):
        check.error("sip.realm", "must be non-empty printable text without quotes or backslashes")
        realm = None
    cert = check.path(table, p, "tls_cert", base_dir)
    key = check.path(table, p, "tls_key", base_dir)
    if ("tls_cert" in table) != ("tls_key" in table):
        check.error("sip", "tls_cert and tls_key go together (neither: a self-signed certificate)")
    for name, file in (("tls_cert", cert), ("tls_key", key)):
        if file is not None and not file.is_file():
            check.error(f"sip.{name}", f"file not found: {file}")
    algorithms = check.strings(table, p, "digest_algorithms", d.digest_algorithms)
    if algorithms is not None:
        upper = tuple(a.upper() for a in algorithms)
        if (
            not upper
            or any(a not in ("SHA-256", "MD5") for a in upper)
            or len(set(upper)) != len(upper)
        ):
            check.error("sip.digest_algorithms", 'must list "SHA-256" and/or "MD5", each once')
            algorithms = None
        else:
            algorithms = upper
    if None in (t1, t2, t4, size, idle, realm, algorithms) or (
        t2 is not None and t1 is not None and t2 < t1
    ):
        return None
    assert t1 is not None and t2 is not None and t4 is not None
    assert size is not None and idle is not None and realm is not None and algorithms is not None
    return SipConfig(t1, t2, t4, size, idle, realm, cert, key, algorithms)


def _media(check: _Checker, value: object) -> MediaConfig | None:
    table = check.table("media", value, _MEDIA_KEYS)
    timeout = check.number(table, "media", "timeout", MediaConfig().timeout, 0.0, 86400.0)
    recording_format = check.string(
        table, "media", "recording_format", "wav", choices=("wav", "opus")
    )
    kernel_forwarding = check.boolean(table, "media", "kernel_forwarding", False)
    max_record = check.number(
        table,
        "media",
        "max_record_duration",
        MediaConfig().max_record_duration,
        0.0,
        86400.0,
        low_open=True,
    )
    if (
        timeout is None
        or recording_format is None
        or kernel_forwarding is None
        or max_record is None
    ):
        return None
    return MediaConfig(
        timeout=timeout,
        recording_format=recording_format,
        kernel_forwarding=kernel_forwarding,
        max_record_duration=max_record,
    )


def _site(check: _Checker, value: object) -> SiteConfig | None:
    table = check.table("site", value, _SITE_KEYS)
    timezone = check.string(table, "site", "timezone", SiteConfig().timezone)
    if timezone is None:
        return None
    if not _is_time_zone(timezone):
        close = difflib.get_close_matches(timezone, sorted(available_timezones()), n=1)
        suggestion = f' (did you mean "{close[0]}"?)' if close else ""
        check.error("site.timezone", f"unknown IANA time zone {timezone!r}{suggestion}")
        return None
    return SiteConfig(timezone=timezone)


def _cluster(check: _Checker, value: object, base_dir: Path) -> ClusterConfig | None:
    table = check.table("cluster", value, _CLUSTER_KEYS)
    url = check.string(table, "cluster", "redis_url")
    ok = "redis_url" not in table or url is not None
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            check.error("cluster.redis_url", "must be a Redis URL: redis://host:port/db")
            ok = False
    node = check.string(table, "cluster", "node", pattern=_NODE_NAME)
    ok = ok and ("node" not in table or node is not None)
    secret_path = check.path(table, "cluster", "secret_file", base_dir)
    ok = ok and ("secret_file" not in table or secret_path is not None)
    nodes: list[ClusterNode] = []
    raw_nodes = table.get("nodes", _MISSING)
    if raw_nodes is not _MISSING and not isinstance(raw_nodes, dict):
        check.error("cluster.nodes", "expected tables [cluster.nodes.<name>]")
        ok = False
    elif isinstance(raw_nodes, dict):
        for name, item in raw_nodes.items():
            where = f"cluster.nodes.{name}"
            if _NODE_NAME.fullmatch(name) is None:
                check.error(where, f"invalid node name {name!r}")
                ok = False
                continue
            entry = check.table(where, item, ("sip",))
            sip = check.string(entry, where, "sip", required=True)
            found = _host_port(check, f"{where}.sip", sip, 5060) if sip else None
            if found is None:
                ok = False
            elif not _is_ip(found[0]):
                check.error(f"{where}.sip", "must be an IP address and port (no host name)")
                ok = False
            else:
                nodes.append(ClusterNode(name, found[0], found[1]))
    secret: bytes | None = None
    if secret_path is not None:
        try:
            secret = secret_path.read_bytes().strip()
        except OSError as exc:
            check.error("cluster.secret_file", f"cannot read the secret: {exc}")
            ok = False
        else:
            if len(secret) < _CLUSTER_SECRET_MIN:
                least = f"the secret must be at least {_CLUSTER_SECRET_MIN} bytes"
                check.error("cluster.secret_file", least)
                ok = False
    if ok and (nodes or node is not None or secret is not None):
        for key, missing in (
            ("nodes", not nodes),
            ("node", node is None),
            ("secret_file", secret is None),
            ("redis_url", url is None),
        ):
            if missing:
                check.error(f"cluster.{key}", "required for cross-node calls")
                ok = False
        if ok and node not in {n.name for n in nodes}:
            check.error("cluster.node", f"{node!r} is not one of cluster.nodes")
            ok = False
    acd = check.string(table, "cluster", "acd") if "acd" in table else "local"
    if acd not in ("local", "shared"):
        check.error("cluster.acd", 'must be "local" or "shared"')
        ok = False
    elif acd == "shared" and ok and node is None:
        check.error(
            "cluster.acd", "a shared ACD needs the cross-node keys: node, nodes, secret_file"
        )
        ok = False
    tls_files: dict[str, Path | None] = {}
    for name in ("tls_cert", "tls_key", "tls_ca"):
        tls_files[name] = check.path(table, "cluster", name, base_dir)
        ok = ok and (name not in table or tls_files[name] is not None)
    given = [name for name in tls_files if name in table]
    if given and len(given) != len(tls_files):
        check.error("cluster", "tls_cert, tls_key and tls_ca go together (none: the leg in clear)")
        ok = False
    elif given and ok:
        cert, key_file, ca = (tls_files[name] for name in ("tls_cert", "tls_key", "tls_ca"))
        assert cert is not None and key_file is not None and ca is not None
        if node is None:
            check.error("cluster.tls_ca", "the internal leg's TLS needs the cross-node keys")
            ok = False
        try:
            mutual_contexts(cert, key_file, ca)
        except CertificateError as exc:
            field_name = "tls_ca" if "CA" in str(exc) else "tls_cert"
            check.error(f"cluster.{field_name}", f"{exc} ({cert}, {key_file}, {ca})")
            ok = False
    crl = check.path(table, "cluster", "tls_crl", base_dir)
    ok = ok and ("tls_crl" not in table or crl is not None)
    if crl is not None and tls_files["tls_ca"] is None:
        check.error("cluster.tls_crl", "a CRL of tls_ca: needs tls_cert, tls_key and tls_ca")
        ok = False
    elif crl is not None and ok:
        ca = tls_files["tls_ca"]
        assert ca is not None
        try:
            check_crl(crl, ca)
        except CertificateError as exc:
            check.error("cluster.tls_crl", f"{exc} ({crl}, {ca})")
            ok = False
    if not ok or acd is None:
        return None
    return ClusterConfig(
        redis_url=url,
        node=node,
        nodes=tuple(nodes),
        secret=secret,
        acd=acd,
        tls_cert=tls_files["tls_cert"],
        tls_key=tls_files["tls_key"],
        tls_ca=tls_files["tls_ca"],
        tls_crl=crl,
    )


def _internal_port(check: _Checker, server: ServerConfig, cluster: ClusterConfig) -> None:
    """With the encrypted leg, this node's ``[cluster.nodes.<name>] sip`` is its private TLS
    listener: a port of its own (in clear it is the node's SIP port, so a configuration that
    only adds the certificates would bind the SIP port twice)."""
    own = next((n for n in cluster.nodes if n.name == cluster.node), None)
    if not cluster.tls or own is None:
        return
    taken = {
        "sip_port": server.sip_port,
        "sip_tls_port": server.sip_tls_port,
        "http_port": server.http_port,
    }
    for key, port in taken.items():
        if port == own.port:
            check.error(
                f"cluster.nodes.{own.name}.sip",
                f"with tls_ca this is the node's private TLS listener: a port of its own, "
                f"not server.{key} ({port})",
            )
            return


def _storage(check: _Checker, value: object, base_dir: Path) -> StorageConfig | None:
    table = check.table("storage", value, _STORAGE_KEYS)
    p = "storage"
    dsn = check.string(table, p, "dsn")
    node = check.string(table, p, "node", pattern=_NODE_NAME)
    password_path = check.path(table, p, "password_file", base_dir)
    ok = "dsn" not in table or dsn is not None
    if dsn is not None:
        parts = urllib.parse.urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            check.error("storage.dsn", "must be a PostgreSQL URL: postgresql://user@host:port/db")
            ok = False
        elif parts.password is not None:
            check.error(
                "storage.dsn",
                "must not hold the password: put it in storage.password_file or PGPASSWORD",
            )
            ok = False
    password: str | None = None
    if password_path is not None:
        if dsn is None:
            check.error("storage.password_file", "needs storage.dsn")
            ok = False
        try:
            password = password_path.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            reason = "empty" if isinstance(exc, IndexError) else str(exc)
            check.error("storage.password_file", f"cannot read the password: {reason}")
            ok = False
    if ("node" in table and node is None) or not ok:
        return None
    if node is None:
        return StorageConfig(dsn=dsn, password=password)
    return StorageConfig(dsn=dsn, password=password, node=node)


def _is_time_zone(name: str) -> bool:
    """True for a name the time zone database knows (``Europe/Madrid``, ``UTC``); a path, an
    empty name or an unknown one is not."""
    if not name or name.startswith(("/", ".")) or ".." in name or "\\" in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _security(check: _Checker, value: object) -> SecurityConfig | None:
    table = check.table("security", value, _SECURITY_KEYS)
    p = "security"
    d = SecurityConfig()
    requests = check.integer(table, p, "rate_limit_requests", d.rate_limit_requests, 1, 10**9)
    window = check.number(
        table, p, "rate_limit_window", d.rate_limit_window, 0.0, 86400.0, low_open=True
    )
    ban = check.number(table, p, "ban_time", d.ban_time, 0.0, 10**7)
    networks = check.networks(table, p, "trusted_networks")
    failures = check.integer(table, p, "auth_max_failures", d.auth_max_failures, 1, 10**6)
    failure_window = check.number(
        table, p, "auth_failure_window", d.auth_failure_window, 0.0, 86400.0, low_open=True
    )
    auth_ban = check.number(table, p, "auth_ban_time", d.auth_ban_time, 0.0, 10**7)
    per_user = check.integer(table, p, "max_calls_per_user", d.max_calls_per_user, 1, 10**6)
    per_source = check.integer(table, p, "max_calls_per_source", d.max_calls_per_source, 1, 10**6)
    proxies = check.networks(table, p, "trusted_proxies")
    no_qop = check.boolean(table, p, "allow_digest_without_qop", False)
    if (
        requests is None
        or window is None
        or ban is None
        or networks is None
        or failures is None
        or failure_window is None
        or auth_ban is None
        or per_user is None
        or per_source is None
        or proxies is None
        or no_qop is None
    ):
        return None
    return SecurityConfig(
        requests,
        window,
        ban,
        networks,
        auth_max_failures=failures,
        auth_failure_window=failure_window,
        auth_ban_time=auth_ban,
        max_calls_per_user=per_user,
        max_calls_per_source=per_source,
        trusted_proxies=proxies,
        allow_digest_without_qop=no_qop if "allow_digest_without_qop" in table else None,
    )


def _api(check: _Checker, value: object) -> tuple[ApiConfig | None, str | None]:
    table = check.table("api", value, _API_KEYS, {"token": _TOKEN_HINT})
    metrics_listen = _metrics_listen(check, table)
    bad_listen = "metrics_listen" in table and metrics_listen is None
    digest = check.string(table, "api", "token_sha256")
    if digest is None:
        if "token_sha256" in table or bad_listen:
            return None, None
        token = secrets.token_urlsafe(24)
        return ApiConfig(hashlib.sha256(token.encode()).hexdigest(), metrics_listen), token
    if _HEX64.fullmatch(digest) is None:
        if check.origins.get("api.token_sha256") == "--api-token":
            check.error("api.token_sha256", "must not be empty or blank")
        else:
            check.error("api.token_sha256", "expected 64 hexadecimal digits (a SHA-256)")
        return None, None
    if bad_listen:
        return None, None
    return ApiConfig(digest.lower(), metrics_listen), None


def _metrics_listen(check: _Checker, table: dict[str, Any]) -> tuple[str, int] | None:
    """``api.metrics_listen``: an IP address and a port (9464, Prometheus's, by default)."""
    listen = check.string(table, "api", "metrics_listen")
    if listen is None:
        return None
    found = _host_port(check, "api.metrics_listen", listen, 9464)
    if found is not None and not _is_ip(found[0]):
        check.error("api.metrics_listen", f"expected an IP address, got {found[0]!r}")
        return None
    return found


def _host_port(check: _Checker, where: str, text: str, default_port: int) -> tuple[str, int] | None:
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            check.error(where, f"expected HOST[:PORT], got {text!r}")
            return None
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        port_text = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            check.error(where, f"port must be from 1 to 65535, got {port_text!r}")
            return None
        port = int(port_text)
    if not (_is_ip(host) or _HOSTNAME.fullmatch(host)):
        check.error(where, f"not a host name or IP address: {host!r}")
        return None
    return host, port


def _check_names(check: _Checker, kind: str, names: list[tuple[str, str | None]]) -> None:
    seen: dict[str, str] = {}
    for path, name in names:
        if name is None:
            continue
        if name in seen:
            check.error(f"{path}.name", f'duplicate {kind} name "{name}" (also {seen[name]})')
        else:
            seen[name] = path


def _trunk_names(value: object) -> set[str]:
    if not isinstance(value, list):
        return set()
    return {t["name"] for t in value if isinstance(t, dict) and isinstance(t.get("name"), str)}


_TARGET_KINDS: Final = tuple(action.value for action in RouteAction)


def _allowed_targets(
    check: _Checker, table: dict[str, Any], path: str, trunk_names: set[str]
) -> tuple[str, ...] | None:
    """``allowed_targets``: the patterns, None when the key is absent (errors go to `check`).
    Every entry is ``*`` or starts with a route target kind; a ``trunk:`` entry must match a
    trunk."""
    values = check.strings(table, path, "allowed_targets", ())
    if values is None or "allowed_targets" not in table:
        return None
    for i, text in enumerate(values):
        where = f"{path}.allowed_targets[{i}]"
        kind, _, name = text.partition(":")
        if text == "*":
            continue
        if kind not in _TARGET_KINDS:
            check.error(
                where,
                f"unknown target {text!r} (a route target such as echo, trunk:<name>, "
                "campaign:<name>, a pattern such as campaign:*, or * for every target)",
            )
        elif kind == "trunk" and not any(fnmatch.fnmatchcase(t, name) for t in trunk_names):
            check.error(where, f'no trunk matches "{name}"')
    return values


def _trunks(check: _Checker, value: object, trunk_names: set[str]) -> tuple[Trunk, ...]:
    result: list[Trunk] = []
    names: list[tuple[str, str | None]] = []
    for path, item in check.tables("trunks", value):
        errors_before = len(check.errors)
        table = check.table(path, item, _TRUNK_KEYS)
        if not isinstance(item, dict):
            continue
        name = check.string(table, path, "name", required=True, pattern=_NAME)
        names.append((path, name))
        host_text = check.string(table, path, "host", required=True)
        host: str | None = None
        if host_text:
            host = host_text.strip("[]")
            if not (_is_ip(host) or _HOSTNAME.fullmatch(host)):
                check.error(f"{path}.host", f"not a host name or IP address: {host_text!r}")
        transport = check.string(table, path, "transport", "udp", choices=TRANSPORTS)
        default_port = 5061 if transport == "tls" else 5060
        port = check.integer(table, path, "port", default_port, 1, 65535)
        sources = check.networks(table, path, "trusted_sources")
        if "trusted_sources" not in table and host is not None and _is_ip(host):
            sources = (ipaddress.ip_network(host),)
        proxy: Endpoint | None = None
        proxy_text = check.string(table, path, "outbound_proxy")
        if proxy_text is not None and transport is not None:
            parsed = _host_port(check, f"{path}.outbound_proxy", proxy_text, default_port)
            if parsed is not None:
                proxy = Endpoint(transport, *parsed)
        username = check.string(table, path, "username", pattern=_URI_USER)
        password = check.string(table, path, "password")
        ha1_md5 = check.string(table, path, "ha1_md5", pattern=_HEX32)
        ha1_sha256 = check.string(table, path, "ha1_sha256", pattern=_HEX64)
        auth_realm = check.string(table, path, "auth_realm")
        has_ha1 = "ha1_md5" in table or "ha1_sha256" in table
        if password is not None and has_ha1:
            check.error(path, "give password or ha1_md5/ha1_sha256, not both")
        if has_ha1 and "auth_realm" not in table:
            check.error(f"{path}.auth_realm", "required with ha1_md5/ha1_sha256 (the peer's realm)")
        register = check.boolean(table, path, "register", False)
        if ("password" in table or has_ha1 or register) and "username" not in table:
            check.error(f"{path}.username", "required with credentials or register = true")
        expires = check.integer(table, path, "register_expires", 3600, 60, 86400)
        qualify = check.number(table, path, "qualify_interval", 0.0, 0.0, 86400.0)
        codecs = _codecs(check, table, path)
        srtp = check.boolean(table, path, "srtp", False)
        sdes_over_udp = check.boolean(table, path, "allow_sdes_over_udp", False)
        if srtp and transport is not None and transport != "tls" and not sdes_over_udp:
            check.error(
                f"{path}.srtp",
                f"SDES keys would cross {transport.upper()} in clear: use transport = "
                '"tls", or set allow_sdes_over_udp = true for a network nobody else can read',
            )
        allowed = _allowed_targets(check, table, path, trunk_names)
        if len(check.errors) > errors_before:
            continue
        assert name is not None and host is not None and transport is not None
        assert port is not None and sources is not None and register is not None
        assert expires is not None and qualify is not None and codecs is not None
        result.append(
            Trunk(
                name=name,
                host=host,
                port=port,
                transport=transport,
                trusted_sources=sources,
                outbound_proxy=proxy,
                username=username,
                password=password,
                ha1_md5=ha1_md5.lower() if ha1_md5 else None,
                ha1_sha256=ha1_sha256.lower() if ha1_sha256 else None,
                auth_realm=auth_realm,
                register=register,
                register_expires=expires,
                qualify_interval=qualify,
                codecs=codecs,
                srtp=bool(srtp),
                allow_sdes_over_udp=bool(sdes_over_udp),
                allowed_targets=allowed,
            )
        )
    _check_names(check, "trunk", names)
    return tuple(result)


@dataclass(frozen=True, slots=True)
class Campaign:
    """An inbound campaign: the queue its calls wait in and what the agent gets with them."""

    name: str
    queue: str
    recording: bool = False
    """Record each call (stereo Ogg/Opus, caller left, agent right) under data_dir/recordings."""
    url: str = ""
    """The page the agent's browser opens for a call; ``{caller}`` is the caller's number."""
    dispositions: tuple[str, ...] = ()
    """What an agent may choose at the end of a call (free text when empty); those of its
    `disposition_set` when it names one."""
    disposition_set: str = ""
    """The named set of dispositions (``[disposition_sets.<name>]``) its agents choose from:
    when set, it wins over the campaign's own list, and a change of the set reaches it."""
    callback: bool = True
    """Waiting callers may press 1 to be called back, keeping their place."""
    trunk: str = ""
    """The trunk callbacks go out through (empty: the trunk the call came in on)."""
    recording_retention_days: int = 0
    """Recordings older than this many days are deleted by the daily retention job (0: kept)."""
    callback_min_digits: int = 6
    """The shortest number a caller may ask to be called back at (shorter ones are service and
    premium codes)."""
    callback_max_digits: int = 15
    """The longest such number (E.164 has at most 15 digits)."""
    callback_international: bool = False
    """Whether a callback number may start with the international prefix ``00`` (toll fraud asks
    for callbacks to numbers that pay the asker)."""
    callback_one_per_number: bool = True
    """At most one waiting callback per number: a flood of requests cannot make the agents call
    one victim again and again."""
    callback_expiry: float = 4 * 3600.0
    """Seconds after which a callback that has not come up yet is dropped, never dialled."""


_CAMPAIGN_KEYS: Final = (
    "name",
    "queue",
    "recording",
    "url",
    "dispositions",
    "callback",
    "trunk",
    "recording_retention_days",
    "callback_min_digits",
    "callback_max_digits",
    "callback_international",
    "callback_one_per_number",
    "callback_expiry",
    "disposition_set",
)
MAX_DISPOSITION: Final = 64
"""The longest disposition (characters)."""


def _dispositions(check: _Checker, table: dict[str, Any], path: str) -> tuple[str, ...] | None:
    """A list of dispositions: each 1 to 64 printable characters, no spaces around, no two
    alike."""
    values = check.strings(table, path, "dispositions", ())
    if values is None:
        return None
    where = _join(path, "dispositions")
    ok = True
    for i, text in enumerate(values):
        if not (0 < len(text) <= MAX_DISPOSITION and text.isprintable() and text.strip() == text):
            check.error(f"{where}[{i}]", f"must be 1 to {MAX_DISPOSITION} printable characters")
            ok = False
        elif text in values[:i]:
            check.error(f"{where}[{i}]", f'"{text}" is listed twice')
            ok = False
    return values if ok else None


def parse_disposition_sets(check: _Checker, value: object) -> dict[str, tuple[str, ...]]:
    """``[disposition_sets.<name>]`` tables, each ``dispositions = [...]`` (at least one): named
    lists of dispositions that campaigns refer to (``disposition_set``)."""
    if value is _MISSING:
        return {}
    if not isinstance(value, dict):
        check.error("disposition_sets", f"expected a table, got {_type_name(value)}")
        return {}
    sets: dict[str, tuple[str, ...]] = {}
    for name, item in value.items():
        path = f"disposition_sets.{name}"
        table = check.table(path, item, ("dispositions",))
        if not isinstance(item, dict):
            continue
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            check.error(path, f"invalid name {name!r}")
            continue
        if "dispositions" not in table:
            check.error(f"{path}.dispositions", "required")
            continue
        dispositions = _dispositions(check, table, path)
        if dispositions is not None and not dispositions:
            check.error(f"{path}.dispositions", "must list at least one disposition")
        elif dispositions is not None:
            sets[name] = dispositions
    return sets


def _campaigns(
    check: _Checker,
    value: object,
    queues: set[str],
    trunks: set[str],
    sets: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[Campaign, ...]:
    """The ``[[campaigns]]`` tables; a ``disposition_set`` must be one of `sets` (the set's
    dispositions are the campaign's), none when `sets` is None."""
    result: list[Campaign] = []
    names: list[tuple[str, str | None]] = []
    for path, item in check.tables("campaigns", value):
        errors_before = len(check.errors)
        table = check.table(path, item, _CAMPAIGN_KEYS)
        if not isinstance(item, dict):
            continue
        name = check.string(table, path, "name", required=True, pattern=_NAME)
        queue = check.string(table, path, "queue", required=True)
        if queue is not None and queue not in queues:
            check.error(f"{path}.queue", f'unknown queue "{queue}"')
        recording = check.boolean(table, path, "recording", False)
        url = check.string(table, path, "url", "")
        if url and not url.startswith(("https://", "http://")):
            check.error(f"{path}.url", "must be an http(s) address")
        dispositions = _dispositions(check, table, path)
        disposition_set = check.string(table, path, "disposition_set", "")
        if disposition_set:
            known = sets or {}
            if disposition_set in known:
                dispositions = known[disposition_set]
            else:
                check.error(
                    f"{path}.disposition_set", f'unknown disposition set "{disposition_set}"'
                )
        callback = check.boolean(table, path, "callback", True)
        trunk = check.string(table, path, "trunk", "")
        if trunk and trunk not in trunks:
            check.error(f"{path}.trunk", f'unknown trunk "{trunk}"')
        retention = check.integer(table, path, "recording_retention_days", 0, 0, 36500)
        d = Campaign("", "")
        low = check.integer(table, path, "callback_min_digits", d.callback_min_digits, 1, 20)
        high = check.integer(table, path, "callback_max_digits", d.callback_max_digits, 1, 20)
        if low is not None and high is not None and low > high:
            check.error(f"{path}.callback_max_digits", "must be at least callback_min_digits")
        international = check.boolean(table, path, "callback_international", False)
        one_per_number = check.boolean(table, path, "callback_one_per_number", True)
        expiry = check.number(
            table, path, "callback_expiry", d.callback_expiry, 0.0, 7 * 86400.0, low_open=True
        )
        if len(check.errors) > errors_before or name is None or queue is None:
            continue
        names.append((path, name))
        result.append(
            Campaign(
                name=name,
                queue=queue,
                recording=bool(recording),
                url=url or "",
                dispositions=tuple(dispositions or ()),
                disposition_set=disposition_set or "",
                callback=bool(callback),
                trunk=trunk or "",
                recording_retention_days=retention or 0,
                callback_min_digits=low or d.callback_min_digits,
                callback_max_digits=high or d.callback_max_digits,
                callback_international=bool(international),
                callback_one_per_number=bool(one_per_number),
                callback_expiry=expiry or d.callback_expiry,
            )
        )
    _check_names(check, "campaign", names)
    return tuple(result)


def _codecs(check: _Checker, table: dict[str, Any], path: str) -> tuple[str, ...] | None:
    values = check.strings(table, path, "codecs", _DEFAULT_CODECS)
    if values is None:
        return None
    where = f"{path}.codecs"
    if not values:
        check.error(where, "must list at least one codec")
        return None
    result: list[str] = []
    for i, text in enumerate(values):
        codec = CODECS.get(text.lower())
        if codec is None:
            check.error(
                f"{where}[{i}]", f"unknown codec {text!r} (known: {', '.join(CODECS.values())})"
            )
        elif codec in result:
            check.error(f"{where}[{i}]", f"duplicate codec {text!r}")
        else:
            result.append(codec)
    if len(result) == len(values) and result == ["telephone-event"]:
        check.error(where, "needs an audio codec besides telephone-event")
        return None
    return tuple(result) if len(result) == len(values) else None


def _users(check: _Checker, value: object, trunk_names: set[str]) -> tuple[User, ...]:
    result: list[User] = []
    names: list[tuple[str, str | None]] = []
    for path, item in check.tables("users", value):
        errors_before = len(check.errors)
        table = check.table(path, item, _USER_KEYS, {"password": _PLAINTEXT_HINT})
        if not isinstance(item, dict):
            continue
        name = check.string(table, path, "name", required=True, pattern=_USER_NAME)
        names.append((path, name))
        ha1_md5 = check.string(table, path, "ha1_md5", pattern=_HEX32)
        ha1_sha256 = check.string(table, path, "ha1_sha256", pattern=_HEX64)
        if "ha1_md5" not in table and "ha1_sha256" not in table:
            check.error(path, "needs ha1_md5 or ha1_sha256 (see `omlmedia hash-password`)")
        allowed = _allowed_targets(check, table, path, trunk_names)
        if len(check.errors) > errors_before or name is None:
            continue
        result.append(
            User(
                name,
                ha1_md5.lower() if ha1_md5 else None,
                ha1_sha256.lower() if ha1_sha256 else None,
                allowed,
            )
        )
    _check_names(check, "user", names)
    return tuple(result)


def _routes(check: _Checker, value: object, trunk_names: set[str]) -> tuple[Route, ...]:
    result: list[Route] = []
    named = (RouteAction.TRUNK, RouteAction.QUEUE, RouteAction.CAMPAIGN)
    targets = ", ".join(a.value for a in RouteAction if a not in named)
    for path, item in check.tables("routes", value):
        errors_before = len(check.errors)
        table = check.table(path, item, _ROUTE_KEYS)
        if not isinstance(item, dict):
            continue
        user = check.string(table, path, "user", pattern=_URI_USER)
        pattern_text = check.string(table, path, "pattern")
        if ("user" in table) == ("pattern" in table):
            check.error(path, "needs exactly one of user or pattern")
        pattern: re.Pattern[str] | None = None
        if pattern_text is not None:
            try:
                pattern = re.compile(pattern_text)
            except re.error as exc:
                check.error(f"{path}.pattern", f"bad regular expression: {exc}")
        target = check.string(table, path, "target", required=True)
        action: RouteAction | None = None
        trunk: str | None = None
        if target:
            kind, _, trunk_name = target.partition(":")
            if kind == "trunk":
                action = RouteAction.TRUNK
                trunk = trunk_name
                if trunk_name not in trunk_names:
                    check.error(f"{path}.target", f'unknown trunk "{trunk_name}"')
            elif kind in ("agent", "queue", "campaign") and trunk_name:
                action = RouteAction(kind)
                trunk = trunk_name
            else:
                try:
                    action = RouteAction(target)
                except ValueError:
                    check.error(
                        f"{path}.target",
                        f"unknown target {target!r} (one of {targets}, trunk:<name>, "
                        "agent:<name>, queue:<name> or campaign:<name>)",
                    )
        strip = check.integer(table, path, "strip", 0, 0, 64)
        prefix = check.string(table, path, "prefix", "")
        if prefix and _URI_USER.fullmatch(prefix) is None:
            check.error(f"{path}.prefix", f"invalid value {prefix!r}")
        if len(check.errors) > errors_before or action is None:
            continue
        assert strip is not None and prefix is not None
        result.append(Route(action, user, pattern, trunk, strip, prefix))
    return tuple(result)
