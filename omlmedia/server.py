"""The server process: binds what the configuration asks for, wires SIP to the call router, serves
the HTTPS API, and stops gracefully on SIGTERM/SIGINT (calls get BYE, transactions finish)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCIceServer

from media.kernelpath_nft import KernelPath
from media.player import MediaFileError, sound_path
from media.ports import PortAllocator, RtpSocketPool
from omlmedia.accounts import AccountBook, account_summary
from omlmedia.acd import AcdRuntime
from omlmedia.acd_cluster import ClusterAgents, RemoteOffers, SharedEngine
from omlmedia.acd_shared import SharedAcd
from omlmedia.agents import AgentDesk
from omlmedia.api import _scopes as api_scopes
from omlmedia.api import start_api
from omlmedia.authz import Identity, Role, Scopes
from omlmedia.b2bua import B2bua
from omlmedia.bridges import transcoder_factory
from omlmedia.callevents import CallEvents
from omlmedia.calls_api import DESK_KEY
from omlmedia.cluster import AgentLocator, RedisSessions
from omlmedia.conference import ConferenceService
from omlmedia.config import (
    ClusterConfig,
    Config,
    RouteAction,
    digest_without_qop_allowed,
    summary,
)
from omlmedia.crossnode import ClusterEnd, CrossNode, InternalGate
from omlmedia.directory import AgentPages, Directory, file_users
from omlmedia.events import AGENT_STATE, CALL_ENDED, NO_EVENTS, EventLog
from omlmedia.livequality import LiveQuality
from omlmedia.lockouts import RedisLockouts
from omlmedia.logs import event
from omlmedia.lost_calls import CAUSE as LOST_CAUSE
from omlmedia.lost_calls import LostCall, LostCalls
from omlmedia.media_targets import MediaTargets
from omlmedia.metrics import Metrics, serve_metrics
from omlmedia.monitor import MonitorService
from omlmedia.monitor_remote import MonitorGate, MonitorLegs, internal_calls
from omlmedia.netlimits import ConnectionGate, budget, raise_nofile
from omlmedia.notify import ACCOUNTS, WEBHOOKS, ChangeListener
from omlmedia.recordings import Deleted, RetentionJob
from omlmedia.reports_api import ReportReader, left_logged_in
from omlmedia.router import CallRouter, RouteTable
from omlmedia.storage import AsyncStore, CallRecord, Store
from omlmedia.storage_pg import MIGRATION_LOCK, PgConnection
from omlmedia.targets import RouterStats
from omlmedia.trunks import NextHops, TrunkManager
from omlmedia.upkeep import Upkeep
from omlmedia.webhooks import WebhookCollector, WebhookService
from queueing.engine import AcdEngine
from sip.digest import DigestServer
from sip.endpoint import Endpoint
from sip.security import RateLimiter, SourcePolicy
from sip.service import SipService
from sip.tls import MutualContexts, client_context, ensure_self_signed, server_context
from sip.transaction import Timers
from sip.transport import Internal, SipTransports, TransportLimits
from sip.ua import UAEvent, UserAgent
from webrtc.accounts import AccountStore
from webrtc.app import close_pages
from webrtc.app import create_app as create_agent_app
from webrtc.channel import AgentChannel, guard_counters, ice_servers_from_config
from webrtc.fastpath import fastpath_status
from webrtc.forwarded import PROXY_TRUST_KEY, ProxyTrust
from webrtc.signaling import AgentHub
from webrtc.webcaller import WebCaller, WebCallerHub

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0
"""Seconds the server waits at shutdown for BYE transactions to complete."""


def url_host(address: str) -> str:
    """`address` as the host part of a URL: an IPv6 literal in brackets (RFC 3986 §3.2.2)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def banner(config: Config) -> str:
    """What the server prints at start: where it listens, what it serves, generated secrets."""
    lines = [
        "omlmedia " + ("(embedded demo configuration)" if config.is_demo else str(config.source))
    ]
    lines += [f"  {line}" for line in summary(config)]
    if config.routes:
        targets = ", ".join(
            route.user
            if route.user is not None
            else (route.pattern.pattern if route.pattern else "?")
            for route in config.routes
        )
        lines.append(f"  SIP targets: {targets}")
    host = url_host(config.server.listen[0])
    lines.append(f"  API: https://{host}:{config.server.http_port}/api/v1/status (bearer token)")
    metrics = f"https://{host}:{config.server.http_port}/metrics"
    if config.api.metrics_listen is not None:
        metrics_host, metrics_port = config.api.metrics_listen
        metrics += f", http://{url_host(metrics_host)}:{metrics_port}/metrics (no token)"
    lines.append(f"  Events: /api/v1/events (WebSocket, SSE); metrics: {metrics}")
    if config.webrtc.agents:
        names = ", ".join(agent.name for agent in config.webrtc.agents)
        lines.append(f"  Agent page: https://{host}:{config.server.http_port}/agent/ ({names})")
    if config.accounts:
        lines.append(f"  Accounts: {account_summary(config.accounts)}")
    if config.acd is not None:
        campaigns = {c.queue: c.name for c in config.campaigns}
        queues = ", ".join(
            f"{q} (campaign {campaigns[q]})" if q in campaigns else q for q in config.acd.queues
        )
        lines.append(f"  Queues: {queues}")
    cluster = config.cluster
    if cluster.acd == "shared":
        lines.append(f"  ACD: shared over Redis (node {cluster.node})")
    else:
        lines.append("  ACD: this node's own")
    if cluster.node is not None:
        own = next((n for n in cluster.nodes if n.name == cluster.node), None)
        where = f"{own.host}:{own.port}" if own is not None else "?"
        if cluster.tls:
            lines.append(f"  Internal leg: SIP over mutual TLS at {where}, SRTP")
        else:
            lines.append(f"  Internal leg: SIP over UDP at {where}, RTP in clear")
    if config.webrtc.web_targets:
        lines.append(f"  Web callers: /call/<{'|'.join(config.webrtc.web_targets)}>")
    if config.generated.api_token:
        lines.append(f"  API token (generated): {config.generated.api_token}")
    if config.generated.demo_password:
        lines.append(
            f"  demo password (generated; SIP user 'demo', the agents and the accounts): "
            f"{config.generated.demo_password}"
        )
    return "\n".join(lines)


def advertised_address(config: Config) -> str:
    """The address written in Via, Contact and SDP (see ServerConfig.advertise)."""
    if config.server.advertise is not None:
        return config.server.advertise
    host = config.server.listen[0]
    if not ipaddress.ip_address(host).is_unspecified:
        return host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = (
        config.trunks[0].host if config.trunks else ("2001:db8::1" if ":" in host else "192.0.2.1")
    )
    try:
        # Connecting a UDP socket sends nothing: it only asks the kernel for the route's source.
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def default_music() -> Path | None:
    """The default music on hold of the sound set, if it is installed."""
    try:
        return sound_path("moh")
    except MediaFileError:
        logger.warning("the default music on hold is missing: held calls hear silence")
        return None


def _internal_link(cluster: ClusterConfig) -> Internal | None:
    """The private mutual-TLS listener of the cluster's encrypted internal leg (``[cluster]
    tls_ca``) at this node's ``[cluster.nodes.<name>] sip`` port, and the other nodes'; with
    ``tls_crl`` both contexts refuse a revoked peer certificate; a changed CRL file is put in
    force while running (`sip.tls.MutualContexts`, polled by the transports)."""
    if not cluster.tls or cluster.node is None:
        return None
    assert cluster.tls_cert is not None and cluster.tls_key is not None
    assert cluster.tls_ca is not None
    contexts = MutualContexts(cluster.tls_cert, cluster.tls_key, cluster.tls_ca, cluster.tls_crl)
    own = next(n for n in cluster.nodes if n.name == cluster.node)
    peers = frozenset((n.host, n.port) for n in cluster.nodes if n.name != cluster.node)
    return Internal(own.port, contexts.server, contexts.client, peers, contexts)


def _cluster_end(cluster: ClusterConfig, service: SipService) -> ClusterEnd:
    """This node's end of the internal legs (`omlmedia.crossnode.ClusterEnd`): with the
    cluster's certificates (`_internal_link`) the nodes' TLS listeners and SRTP, else their UDP
    addresses and RTP in clear."""
    assert cluster.node is not None and cluster.secret is not None
    leg = "tls" if cluster.tls else "udp"
    return ClusterEnd(
        node=cluster.node,
        secret=cluster.secret,
        nodes={n.name: Endpoint(leg, n.host, n.port) for n in cluster.nodes},
        service=service,
        tls=cluster.tls,
    )


def _tls_files(config: Config) -> tuple[Path, Path]:
    """The certificate and key for SIP TLS and HTTPS: configured, or self-signed in data_dir."""
    if config.sip.tls_cert is not None and config.sip.tls_key is not None:
        return config.sip.tls_cert, config.sip.tls_key
    directory = config.server.data_dir / "tls"
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.crt", directory / "server.key"
    ips = [a for a in config.server.listen if not ipaddress.ip_address(a).is_unspecified]
    ips = list(dict.fromkeys([*ips, advertised_address(config)]))
    ensure_self_signed(cert, key, ["localhost"], ips)
    return cert, key


@contextmanager
def one_node_at_a_time(db: Any) -> Iterator[None]:
    """Nodes sharing a PostgreSQL database that start together seed the file's declarations
    (accounts, directory, pause reasons) one after the other, under the migration lock: the later
    one reads what the earlier wrote and finds nothing to change, where both inserted the same
    rows and one failed on their key (``pause_reasons_pkey``) and exited. SQLite: one node."""
    if not isinstance(db, PgConnection):
        yield
        return
    db.advisory_lock(MIGRATION_LOCK)
    try:
        yield
    finally:
        db.advisory_unlock(MIGRATION_LOCK)


class Server:
    """Everything one process runs; built by :func:`serve`, usable from tests too."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.proxy_trust = ProxyTrust(config.security.trusted_proxies)
        """Whose X-Forwarded-For names a page's address (`webrtc.forwarded`), and its bad ones."""
        low, high = config.server.rtp_port_range
        self.limits = budget(raise_nofile(), high - low + 1)
        """The connection caps, from the open files limit (raised here: `omlmedia.netlimits`)."""
        self.transports = SipTransports(
            limits=TransportLimits(
                max_message_size=config.sip.max_message_size,
                idle_timeout=config.sip.tcp_idle_timeout,
                max_connections=self.limits.sip,
                reserved_connections=self.limits.sip_reserved,
            )
        )
        office = SourcePolicy([str(n) for n in config.security.trusted_networks])
        self.http_gate = ConnectionGate(
            self.limits.http, self.limits.http_per_source, trusted=office.is_trusted
        )
        """HTTPS connections per source and in total (``security.trusted_networks`` are not
        capped per source: an office behind one address)."""
        self.media_host = advertised_address(config)
        """The address written in our SDP (c= and o=)."""
        low, high = config.server.rtp_port_range
        self.pool = RtpSocketPool(PortAllocator(low, high), config.server.listen[0])
        self.hold_music = default_music()
        """What a held party hears (bridges, queues, agents)."""
        self.routes = RouteTable(config)
        self.stats = RouterStats()
        self.service: SipService | None = None
        self.router: CallRouter | None = None
        self.media_targets: tuple[MediaTargets, B2bua] | None = None
        self.kernel: KernelPath | None = None
        """The kernel path of passthrough bridges (``[media] kernel_forwarding``), if active."""
        self.kernel_note = ""
        """What the server said at start about the kernel path (why it is not active)."""
        """The router's own media users (counted as active media in the status)."""
        self.upkeep: Upkeep | None = None
        self.api: web.AppRunner | None = None
        self.metrics_api: web.AppRunner | None = None
        """``/metrics`` alone on ``api.metrics_listen``, when configured."""
        self.trunks: TrunkManager | None = None
        self.desk: AgentDesk | None = None
        self.hub: AgentHub | None = None
        self.pages: web.Application | None = None
        """The agent, supervisor and web caller pages with their sockets (`webrtc.app`)."""
        self.acd: AcdRuntime | None = None
        self.store: AsyncStore | None = None
        self.accounts: AccountBook | None = None
        self.directory: Directory | None = None
        self.retention: RetentionJob | None = None
        self.live_quality: LiveQuality | None = None
        self._retention_reader: ReportReader | None = None
        """Agents and queues (`omlmedia.directory`): seeded from the file, changed by the API."""
        self.events: EventLog | None = None
        """The event log (`omlmedia.events`): call, queue and agent events, stored and streamed."""
        self.webhooks: WebhookService | None = None
        self.changes: ChangeListener | None = None
        self.sessions: RedisSessions | None = None
        """The agents' page sessions shared in Redis (``[cluster] redis_url``)."""
        self.lockouts: RedisLockouts | None = None
        """The failure counts of the agent page's and the API's logins, shared in Redis
        (``[cluster] redis_url``)."""
        self.gate: InternalGate | None = None
        self.shared_acd: SharedAcd | None = None
        """The cluster's one ACD (``[cluster] acd = "shared"``): `omlmedia.acd_cluster`."""
        self.remote_offers: RemoteOffers | None = None
        self.crossnode: CrossNode | None = None
        """Cross-node calls (``[cluster] node`` and ``nodes``): `omlmedia.crossnode`."""
        self._crossnode_task: asyncio.Task[None] | None = None
        self.monitor: MonitorService | None = None
        self.monitor_legs: MonitorLegs | None = None
        """Monitoring of calls on other nodes (``[cluster]``): `omlmedia.monitor_remote`."""
        """Other nodes' changes to the shared PostgreSQL database (`omlmedia.notify`)."""
        """Webhook subscriptions and their outbox (`omlmedia.webhooks`), fed by the event log."""
        self._tls: ssl.SSLContext | None = None
        self.lost_calls: LostCalls | None = None
        """The heartbeat of this node, and the records of the calls of dead nodes
        (``[cluster] redis_url`` with ``[storage] dsn``): `omlmedia.lost_calls`."""

    async def start(self) -> None:
        """Bind SIP, start the API; raises OSError when a port cannot be bound."""
        config = self.config
        host = config.server.listen[0]
        cert, key = _tls_files(config)
        self._tls = server_context(cert, key)
        tls_port = config.server.sip_tls_port
        cluster = config.cluster
        internal = _internal_link(cluster)
        await self.transports.start(
            host=host,
            udp_port=config.server.sip_port,
            tcp_port=config.server.sip_port,
            tls_port=tls_port,
            tls_server_context=self._tls if tls_port is not None else None,
            tls_client_context=client_context(verify=True),
            internal=internal,
        )
        advertised = advertised_address(config)
        local = {
            t: Endpoint(t, advertised, self.transports.local_endpoint(t).port)
            for t in ("udp", "tcp", "tls")
            if t != "tls" or tls_port is not None
        }
        if len(config.server.listen) > 1:
            logger.warning(
                "only the first listen address is served for now: %s (ignored: %s)",
                host,
                ", ".join(config.server.listen[1:]),
            )
        policy = SourcePolicy(
            [str(n) for t in config.trunks for n in t.trusted_sources]
            + [str(n) for n in config.security.trusted_networks]
            # the other nodes: a busy cluster's internal legs are not a flood (their requests
            # are still admitted only by the gate: address, link and signature)
            + [n.host for n in cluster.nodes if n.name != cluster.node]
        )
        self.transports.trusted = policy.is_trusted  # the reserved SIP connections are theirs
        limits = self.limits
        event(
            logger,
            "connection-limits",
            open_files=limits.nofile,
            sip_connections=limits.sip,
            sip_reserved=limits.sip_reserved,
            https_connections=limits.http,
            https_per_source=limits.http_per_source,
        )
        users = {user.name: user for user in config.users}
        realm = config.sip.realm

        def lookup_ha1(username: str, user_realm: str, algorithm: str) -> str | None:
            user = users.get(username)
            if user is None or user_realm != realm:
                return None
            return user.ha1_sha256 if algorithm.upper().startswith("SHA-256") else user.ha1_md5

        def trusted_source(ip: str) -> str | None:
            trunk = config.trunk_for_source(ip)
            return trunk.name if trunk is not None else None

        leg = "tls" if internal is not None else "udp"
        if cluster.node is not None and cluster.secret is not None:
            self.gate = InternalGate(
                cluster.secret,
                {n.name: Endpoint(leg, n.host, n.port) for n in cluster.nodes},
                cluster.node,
                linked=self.transports.is_internal if internal is not None else None,
            )
        ua = UserAgent(
            local_endpoints=local,
            trusted_source=trusted_source,
            internal_source=MonitorGate(
                cluster.secret,
                {n.name: Endpoint(leg, n.host, n.port) for n in cluster.nodes},
                cluster.node,
                self.gate,
                linked=self.transports.is_internal if internal is not None else None,
            )
            if self.gate is not None and cluster.node is not None and cluster.secret is not None
            else None,
            digest=DigestServer(
                realm,
                os.urandom(32),
                algorithms=config.sip.digest_algorithms,
                allow_no_qop=digest_without_qop_allowed(config),
            )
            if users
            else None,
            lookup_ha1=lookup_ha1 if users else None,
            rate_limiter=RateLimiter(
                config.security.rate_limit_requests,
                config.security.rate_limit_window,
                config.security.ban_time,
                policy=policy,
            ),
            auth_limiter=RateLimiter(
                config.security.auth_max_failures,
                config.security.auth_failure_window,
                config.security.auth_ban_time,
                policy=policy,
            ),
            timers=Timers(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4),
            user_agent=config.server.user_agent,
        )
        if internal is not None:
            own = next(n for n in cluster.nodes if n.name == cluster.node)
            linked = Endpoint("tls", own.host, own.port)
            is_internal = self.transports.is_internal
            ua.local_for = lambda peer: linked if is_internal(peer) else None
        hops = NextHops(config)
        await hops.resolve()
        # From the SIP service on, everything is built at once, each part with what it needs:
        # no SIP event can come before the router exists.
        router: CallRouter

        def on_event(ev: UAEvent) -> None:
            router.on_event(ev)

        self.events = events = self._open_events()
        calls = CallEvents(
            events,
            self.routes.route_for,
            on_event,
            campaigns={c.name: c for c in config.campaigns},
        )
        self.service = service = SipService(ua, self.transports, calls.on_event)
        self.trunks = TrunkManager(config, service, hops)
        media = MediaTargets(config, service, self.pool, self.media_host, self.stats)
        b2bua = B2bua(
            config,
            service,
            self.pool,
            self.media_host,
            self.stats,
            self.routes.route_for,
            hops=hops,
            hold_music=self.hold_music,
            transcoders=transcoder_factory(),
            trunk_down=self.trunks.is_down,
            events=events,
        )
        # One table per server instance (by SIP port): a second server on the host never
        # deletes the first one's rules, and a restart finds its own leftovers.
        self.kernel, self.kernel_note = KernelPath.for_server(
            config.media.kernel_forwarding, f"omlmedia_{config.server.sip_port}"
        )
        if self.kernel is not None or config.media.kernel_forwarding:
            level = logging.INFO if self.kernel is not None else logging.WARNING
            logger.log(level, "%s", self.kernel_note)
        b2bua.kernel = self.kernel
        conference = ConferenceService(self.pool, self.media_host, service)
        self.accounts = AccountBook(
            config.storage.location(config.server.data_dir), config.api.token_matches
        )
        with one_node_at_a_time(self.accounts.db):
            self.accounts.reload()  # what a node that started with it seeded meanwhile
            self.accounts.seed(config.accounts)
            self.directory = Directory(
                self.accounts,
                campaigns={c.name: c.queue for c in config.campaigns},
                used_by=file_users((), config.routes),
                trunks=[t.name for t in config.trunks],
                events=events,
            )
            self.directory.seed(
                config.webrtc.agents,
                config.acd.queues if config.acd else {},
                config.campaigns,
                config.disposition_sets,
            )
            calls.campaigns = self.directory.campaigns_now()
            self.directory.campaign_tables.append(calls.campaigns)
            self.directory.file_routes = config.routes
            self.directory.seed_pause_reasons(config.wallboard.pause_reasons)
        self.routes.set_added(self.directory.routes_now())
        self.directory.route_tables.append(self.routes)
        pages = self.pages = self._start_agents(service, b2bua, self.directory)
        if config.storage.dsn is not None and cluster.redis_url is not None:
            await self._start_lost_calls(cluster.redis_url, events)
        self.media_targets = (media, b2bua)
        router = self.router = CallRouter(
            config,
            service,
            self.routes,
            self.stats,
            [media, b2bua, conference, *(t for t in (self.desk, self.acd) if t is not None)],
            trunks=self.trunks,
        )
        if self.gate is not None and self.desk is not None:
            assert cluster.node is not None and cluster.secret is not None
            end = _cluster_end(cluster, service)
            self.crossnode = CrossNode(
                end,
                b2bua=b2bua,
                desk=self.desk,
                locator=AgentLocator(cluster.redis_url, cluster.node)
                if cluster.redis_url is not None
                else None,
            )
            router.internal = self.crossnode.take_internal
            if self.monitor is not None:
                self.monitor_legs = MonitorLegs(
                    end, pool=self.pool, media_host=self.media_host, monitor=self.monitor
                )
                router.internal = internal_calls(self.monitor_legs, self.crossnode.take_internal)
            self._crossnode_task = asyncio.get_running_loop().create_task(self.crossnode.run())
        if self.shared_acd is not None:
            await self._start_shared_acd(service)
        if config.storage.dsn is not None:
            # Once the shared ACD runs: the listener's first reload (on connecting) converges
            # its engine, which a node whose ACD had not started yet failed to do.
            self._listen_for_changes(config.storage.location(config.server.data_dir))
        reported = [b2bua, media, *(t for t in (self.desk, self.acd) if t is not None)]
        self.upkeep = Upkeep(
            service,
            [*reported, conference],
            [media, b2bua],
            config.media.timeout,
            on_timeout=self._count_media_timeout,
        )
        self.upkeep.start()
        if self.acd is not None and self.hub is not None:
            self.live_quality = self._start_live_quality(self.acd, self.hub, events)
        self.trunks.start()
        metrics = self._metrics(events)
        if self.webhooks is not None:
            metrics.registry.register(WebhookCollector(self.webhooks))
        self.api = await start_api(
            config,
            self.status,
            host,
            self._tls,
            pages,
            acd=self.acd,
            database=self.store.store.path if self.acd is not None and self.store else None,
            events=events,
            metrics=metrics,
            accounts=self.accounts,
            webhooks=self.webhooks,
            directory=self.directory,
            gate=self.http_gate,
            lockouts=self.lockouts,
        )
        if config.api.metrics_listen is not None:
            self.metrics_api = await serve_metrics(metrics, *config.api.metrics_listen)
        self._start_retention()
        event(
            logger,
            "ready",
            sip=", ".join(str(e) for e in local.values()),
            api=f"https://{url_host(host)}:{config.server.http_port}",
        )

    def _start_retention(self) -> None:
        """The daily job that deletes the recordings older than their campaign's
        ``recording_retention_days`` (none when no campaign sets one), each deletion audited."""
        retention = {c.name: c.recording_retention_days for c in self.config.campaigns}
        if not any(days > 0 for days in retention.values()) or self.store is None:
            return
        reader = self._retention_reader = ReportReader(self.store.store.path)
        accounts = self.accounts
        actor = Identity("retention", Role.ADMIN)

        async def records(before: float) -> list[CallRecord]:
            return await reader.records(0.0, before)

        async def audit(item: Deleted) -> None:
            if accounts is not None:
                detail = {"campaign": item.campaign, "file": item.path.name, "days": item.days}
                await accounts.call(
                    accounts.record, actor, "recording.delete", item.call_id, detail, None
                )

        self.retention = RetentionJob(
            retention,
            self.config.server.data_dir / "recordings",
            records,
            audit,
            clock=time.time,
        )
        self.retention.start()

    def _open_events(self) -> EventLog:
        """The store (queue log, call records, events) and the event log; the calls a previous
        run left open are closed (`Store.recover`), each with its ``call.ended``."""
        storage = self.config.storage
        location = storage.location(self.config.server.data_dir)
        # One node per SQLite file: it closes every call left open there (its host name may
        # change between runs, in a container); nodes sharing PostgreSQL close only their own.
        node = storage.node if storage.dsn is not None else ""
        # On PostgreSQL, a stop during an outage keeps what the database did not take in the
        # data dir, and the next start writes it first (`Store.close`).
        spill = self.config.server.data_dir / "unflushed.json" if storage.dsn is not None else None
        self.store = store = AsyncStore(Store(location, node=node, writer=True, spill=spill))
        # One ACD, one PostgreSQL: the stream is the cluster's (every node's committed events).
        events = EventLog(
            store, cluster=storage.dsn is not None and self.config.cluster.acd == "shared"
        )
        self.webhooks = webhooks = WebhookService(store, scopes=self._scopes)
        events.outbox = webhooks.outbox
        webhooks.start()
        now = time.time()
        closed = store.store.recover(now)
        if closed:
            logger.warning("closed %d call(s) left open by the previous run", len(closed))
        for call_id in closed:
            events.publish(CALL_ENDED, call_id=call_id, data={"cause": "server-restart"}, time=now)
        if storage.dsn is None:
            # No agent is logged in at start: the states the last run left open end when it
            # was last heard of, so reports do not count the time the server was down.
            agents, last = left_logged_in(store.store)
            for agent in agents:
                data = {"state": "logged-out", "reason": "server-restart"}
                events.publish(AGENT_STATE, agent=agent, data=data, time=last)
        store.start()
        events.start()
        return events

    async def _start_lost_calls(self, redis_url: str, events: EventLog) -> None:
        """Beat in Redis, and record the calls of the nodes whose heartbeat lapsed (each with
        its ``call.ended``, cause ``node-lost``)."""
        storage = self.config.storage

        def lost(calls: list[LostCall]) -> None:
            for call in calls:
                data = {"cause": LOST_CAUSE, "node": call.node}
                events.publish(CALL_ENDED, call_id=call.call_id, data=data, time=call.end)

        self.lost_calls = LostCalls(
            redis_url,
            storage.node,
            storage.location(self.config.server.data_dir),
            on_lost=lost,
        )
        await self.lost_calls.start()

    def _listen_for_changes(self, dsn: Path | str) -> None:
        """Apply the accounts, tokens, directory and webhooks other nodes sharing the database
        change, as they commit them (`omlmedia.notify`)."""
        book, directory, webhooks = self.accounts, self.directory, self.webhooks
        assert book is not None and directory is not None

        async def accounts() -> None:
            await book.call(book.reload)
            await directory.reload()

        async def hooks() -> None:
            if webhooks is not None:
                await webhooks.reload()

        self.changes = ChangeListener(str(dsn), {ACCOUNTS: accounts, WEBHOOKS: hooks})
        self.changes.start()

    def _metrics(self, events: EventLog) -> Metrics:
        """What ``/metrics`` reads: the status, the calls by state, the agents' states."""

        def calls() -> dict[tuple[str, ...], int]:
            counts: dict[tuple[str, ...], int] = {}
            service = self.service
            for call in service.ua.calls.values() if service is not None else ():
                key = (call.state.value, call.direction)
                counts[key] = counts.get(key, 0) + 1
            return counts

        def agents() -> list[str]:
            desk = self.desk
            return [desk.state(a).value for a in desk.logged_in] if desk is not None else []

        return Metrics(self.status, calls=calls, agents=agents, events=events)

    def _shared_acd_status(self) -> dict[str, Any]:
        """The cluster's ACD seen from this node ({} when its ACD is its own)."""
        shared = self.shared_acd
        if shared is None:
            return {}
        remote = self.remote_offers
        return {
            "owner": shared.is_owner,
            "epoch": shared.epoch,
            "followed": shared.followed,
            "pending": shared.pending,
            "remote_offers": len(remote.offers) if remote is not None else 0,
            "skipped": shared.replica.skipped if shared.replica is not None else 0,
            **vars(shared.stats),
        }

    async def _start_shared_acd(self, service: SipService) -> None:
        """The cluster's one ACD: offers to agents on other nodes go over internal legs; the
        node serves once it has followed the ACD's stream to its end."""
        cluster, acd, shared = self.config.cluster, self.acd, self.shared_acd
        assert acd is not None and shared is not None and self.desk is not None
        assert cluster.node is not None and cluster.secret is not None
        assert isinstance(acd.engine, SharedEngine)
        self.remote_offers = RemoteOffers(
            acd,
            _cluster_end(cluster, service),
            pool=self.pool,
            media_host=self.media_host,
            dial_out=self.desk.dial_out,
        )
        acd.listen(ClusterAgents(self.desk, self.remote_offers, acd.engine))
        await shared.start()
        started = time.monotonic()
        await shared.caught_up.wait()
        event(
            logger,
            "shared-acd",
            node=cluster.node,
            followed=shared.stats.applied,
            seconds=round(time.monotonic() - started, 3),
        )

    def _start_live_quality(self, acd: AcdRuntime, hub: AgentHub, events: EventLog) -> LiveQuality:
        """Both legs of every answered queue call measured every few seconds, for the
        wallboard (``call.live_quality``) and the call records' low-MOS flag."""
        wallboard = self.config.wallboard
        live = LiveQuality(
            lambda: acd.callers,
            hub.channel,
            events,
            interval=wallboard.quality_interval,
            threshold=wallboard.mos_threshold,
        )
        acd.live_quality = live.record_legs
        live.start()
        return live

    def _count_media_timeout(self) -> None:
        self.stats.media_timeouts += 1

    def _scopes(self) -> Scopes:
        """What scopes are checked against: the directory's queues and members now."""
        if self.directory is not None:
            return self.directory.scopes()
        return api_scopes(self.config)

    def _start_agents(
        self, service: SipService, b2bua: B2bua, directory: Directory
    ) -> web.Application:
        """The ACD (its agents and queues from `directory`), the agent desk, the agent hub and
        the agent page (`/agent/`, `/ws`); changes to `directory` apply to them at once."""
        config = self.config
        loop = asyncio.get_running_loop()
        media_host = self.media_host
        cluster = config.cluster
        engine: AcdEngine | SharedEngine
        if cluster.acd == "shared" and cluster.redis_url is not None and cluster.node is not None:
            shared: list[SharedEngine] = []
            self.shared_acd = SharedAcd(
                cluster.redis_url,
                cluster.node,
                directory.acd_config(),
                lambda _decision: None,
                on_applied=lambda *entry: shared[0].applied(*entry),
            )
            engine = SharedEngine(self.shared_acd, time.time)
            shared.append(engine)
        else:
            engine = AcdEngine(directory.acd_config())
        acd = AcdRuntime(
            engine,
            self.pool,
            media_host,
            service=service,
            store=self.store,
            campaigns=directory.campaigns_now(),
            music=self.hold_music,
            recordings=config.server.data_dir / "recordings",
            events=self.events or NO_EVENTS,
            max_record_duration=config.media.max_record_duration,
        )
        self.acd = acd
        if isinstance(engine, SharedEngine):
            engine.on_events = acd.pump
            engine.on_lost = acd.rejoin
        accounts = AccountStore(
            directory.agent_accounts(),
            clock=loop.time,
            session_ttl=config.webrtc.session_ttl,
        )
        if config.cluster.redis_url is not None:
            accounts.shared = self.sessions = RedisSessions(config.cluster.redis_url)
            accounts.lockouts = self.lockouts = RedisLockouts(config.cluster.redis_url, accounts)
        ice_config = config.webrtc.ice_servers

        def ice() -> list[RTCIceServer]:
            """The server's own STUN/TURN servers, TURN REST credentials made for this peer."""
            return ice_servers_from_config(ice_config)

        def browser_ice() -> list[dict[str, Any]]:
            """The pages' STUN/TURN servers, made at each login or web call (fresh credentials)."""
            return [server.as_browser() for server in ice_config]

        routes = self.routes

        def resolve(target: str) -> str | None:
            found = routes.route_for(target)
            if found is None or found[0].action is not RouteAction.AGENT:
                return None
            return found[0].trunk or found[1]

        def route(target: str) -> tuple[RouteAction, str] | None:
            found = routes.route_for(target)
            return None if found is None else (found[0].action, found[0].trunk or found[1])

        def web_for(desk: AgentDesk) -> WebCallerHub:
            return WebCallerHub(
                desk,
                config.webrtc.web_targets,
                ice_servers=browser_ice,
                media_factory=lambda name: WebCaller(
                    name,
                    ice_servers=ice(),
                    max_playback_rate=config.webrtc.max_playback_rate,
                    advertised=self.media_host,  # visitors' candidates trimmed to what it reaches
                ),
            )

        def authenticate(token: str) -> Identity | None:
            book = self.accounts
            return book.authenticate(token) if book is not None else None

        async def audit(
            identity: Identity,
            action: str,
            target: str,
            before: Mapping[str, Any] | None,
            after: Mapping[str, Any] | None,
        ) -> None:
            book = self.accounts
            if book is not None:
                await book.call(book.record, identity, action, target, before, after)

        monitor = MonitorService(
            authenticate,
            self._scopes,
            lambda name: AgentChannel(
                name,
                ice_servers=ice(),
                receive_path=config.webrtc.receive_path,
                max_playback_rate=config.webrtc.max_playback_rate,
            ),
            audit=audit,
            events=self.events or NO_EVENTS,
            show_agents=config.webrtc.show_monitoring,
            ice_servers=browser_ice,
        )

        def hub_for(desk: AgentDesk) -> AgentHub:
            return AgentHub(
                accounts,
                desk,
                lambda agent: AgentChannel(
                    agent,
                    ice_servers=ice(),
                    receive_path=config.webrtc.receive_path,
                    max_playback_rate=config.webrtc.max_playback_rate,
                ),
                clock=loop.time,
                reconnect_grace=config.webrtc.reconnect_grace,
                ice_servers=browser_ice,
                web=desk.web,
                supervisors=monitor,
                pause_reasons=directory.pause_reasons,
            )

        desk = AgentDesk(
            self.pool,
            media_host,
            service=service,
            hub=hub_for,
            web=web_for if config.webrtc.web_targets else None,
            acd=acd,
            dial_out=b2bua.place_call,
            route=route,
            resolve=resolve,
            recordings=config.server.data_dir / "recordings",
            hold_music=self.hold_music,
            max_delay_ms=60,
            events=self.events or NO_EVENTS,
        )
        monitor.bind(desk)
        self.monitor = monitor
        desk.audit = audit
        self.desk = desk
        self.hub = desk.hub
        directory.reason_listeners.append(desk.hub.pause_reasons_changed)
        directory.disposition_listeners.append(desk.hub.dispositions_changed)
        directory.campaign_tables.append(acd.campaigns)
        directory.bind(
            acd,
            accounts,
            AgentPages(
                lambda agent: any(c.agent == agent for c in desk.calls.values()), desk.log_out
            ),
        )
        pages = create_agent_app(desk.hub)
        # The page's and the API's source address behind HAProxy (lockout, limits, SECURITY lines).
        pages[PROXY_TRUST_KEY] = self.proxy_trust
        pages[DESK_KEY] = desk  # the API's live call control (`omlmedia.calls_api`)
        return pages

    def status(self) -> dict[str, Any]:
        """The live counters the API serves."""
        assert self.service is not None and self.media_targets is not None
        ua = self.service.ua
        layer = ua.transactions
        return {
            "sip": {
                "transactions": layer.transaction_count,
                "dialogs": len(ua.dialogs),
                "calls": ua.call_count,
                "ua": vars(ua.stats).copy(),
                "transaction_layer": dataclasses.asdict(layer.counters),
            },
            "transport": dataclasses.asdict(self.transports.stats),
            "media": {
                "active": sum(target.active for target in self.media_targets),
                "rtp_ports_in_use": self.pool.in_use,
                "rtp_ports_pooled": self.pool.idle,
                "rtp_ports_held_elsewhere": self.pool.ports.held_elsewhere,
                "rtp_port_failures": self.pool.failures,
                "kernel": (
                    self.kernel.status()
                    if self.kernel is not None
                    else {"active": False, "reason": self.kernel_note}
                ),
            },
            "calls": vars(self.stats).copy(),
            "agents": {
                "logged_in": len(self.desk.logged_in) if self.desk is not None else 0,
                "calls": len(self.desk.calls) if self.desk is not None else 0,
                **(vars(self.desk.stats) if self.desk is not None else {}),
            },
            "queues": self.acd.queue_summary() if self.acd is not None else {},
            "cluster": {
                "crossnode": vars(self.crossnode.stats).copy() if self.crossnode else {},
                "acd": self._shared_acd_status(),
                "internal_admitted": self.gate.admitted if self.gate is not None else 0,
                "internal_refused": self.gate.refused if self.gate is not None else 0,
                "lost_calls": self.lost_calls.status() if self.lost_calls is not None else {},
            },
            "trunks": self.trunks.status() if self.trunks is not None else {},
            "storage": self.store.status() if self.store is not None else {},
            "webhooks": self.webhooks.status() if self.webhooks is not None else {},
            "webrtc": {
                "audio_fast_path": fastpath_status(),
                "dropped_foreign_source": guard_counters["dropped_foreign_source"],
                "forwarded_for_malformed": self.proxy_trust.malformed,
            },
        }

    async def _give_up_on_dead_nodes(self) -> None:
        """The BYEs just sent to another node whose heartbeat lapsed (killed: nothing answers)
        end at once as on a transport error (RFC 3261 §8.1.3.1), so the stop does not wait
        `SHUTDOWN_GRACE` for them; the live nodes' and the trunks' are waited for as before."""
        cluster = self.config.cluster
        if self.lost_calls is None or self.service is None or cluster.node is None:
            return
        peers = {n.name: n for n in cluster.nodes if n.name != cluster.node}
        dead = await self.lost_calls.lapsed(sorted(peers), within=0.5)
        ua = self.service.ua
        for name in sorted(dead):
            logger.warning("stopping: node %s is dead, its BYEs are not waited for", name)
            node = peers[name]

            def fail(now: float, host: str = node.host, port: int = node.port) -> None:
                for transport in ("udp", "tls"):
                    ua.transactions.transport_error(Endpoint(transport, host, port), now)
                ua.handle_timer(now)

            self.service.act(fail)

    async def stop(self) -> None:
        """Graceful stop: no new HTTPS connection, BYE every call and let transactions finish
        (bounded), then close every page's and stream's socket ("going away": a page reconnects
        at once, in a cluster through the balancer to another node) and everything else."""
        if self.api is not None:
            for site in list(self.api.sites):
                await site.stop()  # the connections open go on; a balancer's next goes elsewhere
        if self.changes is not None:
            await self.changes.close()
        if self.service is not None:
            if self.trunks is not None:
                self.trunks.stop()
            if self.router is not None:
                self.router.hangup_all()
            await self._give_up_on_dead_nodes()
            await self.service.wait_idle(SHUTDOWN_GRACE)
            self.service.close()
        if self.pages is not None:
            event(logger, "pages-closed", sockets=await close_pages(self.pages))
        if self.upkeep is not None:
            self.upkeep.stop()
        if self.live_quality is not None:
            await self.live_quality.stop()
        if self.retention is not None:
            await self.retention.close()
        if self._retention_reader is not None:
            await self._retention_reader.close()
        if self.kernel is not None:
            self.kernel.stop()
        if self.monitor_legs is not None:
            await self.monitor_legs.close()
        self.pool.close()
        if self.acd is not None:
            self.acd.close()
        if self.remote_offers is not None:
            await self.remote_offers.close()
        if self.shared_acd is not None:
            await self.shared_acd.close()
        if self.hub is not None and self.pages is None:
            await self.hub.close()
        if self._crossnode_task is not None:
            self._crossnode_task.cancel()
        if self.crossnode is not None:
            await self.crossnode.close()
        if self.lost_calls is not None:
            await self.lost_calls.close()
        if self.sessions is not None:
            await self.sessions.close()
        if self.lockouts is not None:
            await self.lockouts.close()
        if self.events is not None:
            await self.events.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.store is not None:
            await self.store.close()
        if self.api is not None:
            await self.api.cleanup()
        if self.metrics_api is not None:
            await self.metrics_api.cleanup()
        if self.directory is not None:
            await self.directory.close()
        if self.accounts is not None:
            self.accounts.close()
        await self.transports.close()


async def _stop_after_failed_start(server: Server) -> None:
    """Stop what a failed start had started, so that the process exits at once: a cluster node
    whose HTTPS port was taken had its stores, Redis and PostgreSQL clients and their tasks
    running, and the loop's shutdown waited on them until the node was killed (60 s in a CI
    run). `Server.stop` skips what was not started; bounded, and whatever a half-started part
    raises is logged: the exit is what matters here."""
    try:
        await asyncio.wait_for(server.stop(), 2 * SHUTDOWN_GRACE)
    except Exception:
        logger.exception("stopping after a failed start")
        await server.transports.close()


async def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT; the exit status for the CLI."""
    server = Server(config)
    try:
        await server.start()
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        print(f"omlmedia: cannot start: {exc}", flush=True)
        await _stop_after_failed_start(server)
        return 2
    # Everything loaded so far (modules, configuration, listeners) lives as long as the process:
    # take it out of the collector's reach. Full collections then scan only the calls' objects;
    # measured under sipp load, the longest gen2 pause fell from ~110 ms to ~20 ms (SIP
    # retransmissions, and later RTP jitter, come from such pauses).
    gc.collect()
    gc.freeze()
    # A call's objects live for the call (seconds): with Python's default thresholds (700, 10,
    # 10) each is traversed by many young collections first. Collecting the young generation
    # every 10,000 allocations instead of 700 (and the middle one every 20 of those) took the
    # collector from 4.6 % to 0.4 % of the event loop's py-spy samples on kernel-path calls
    # (600 at N = 100); the full collections' trigger is unchanged.
    gc.set_threshold(10_000, 20, 10)
    print(f"omlmedia ready (pid {os.getpid()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    event(logger, "stopping", calls=server.service.ua.call_count if server.service else 0)
    await server.stop()
    event(logger, "stopped")
    return 0
