"""Prometheus metrics (``GET /metrics``, with the API's bearer token, and without one on
``api.metrics_listen`` when configured: a private address), with `prometheus-client`.

Theory of operation. Nothing here counts on its own: live values are read at scrape time from
their owners (`ServerCollector`: the server's `status()` counters, the SIP calls by state, the
ACD's queue summary, the agents' states, the event log's subscribers, the shared ACD's figures
when ``[cluster] acd = "shared"``), and the media-quality
histograms are fed from the event log's ``call.quality`` events (`QualityHistograms`, one
listener of `omlmedia.events.EventLog`). So the figures scraped cannot drift from those the API
serves. Each server has its own `CollectorRegistry` (never the process-global one), so several
servers in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from omlmedia.events import CALL_QUALITY, Event, EventLog

__all__ = ["Metrics", "QualityHistograms", "ServerCollector", "metrics_handler", "serve_metrics"]

logger = logging.getLogger(__name__)

StatusProvider = Callable[[], Mapping[str, Any]]
Counts = Callable[[], Mapping[tuple[str, ...], int]]

MOS_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5)
JITTER_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0)
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class QualityHistograms:
    """Per-leg media quality at each leg's end, from ``call.quality`` events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mos = Histogram(
            "omlmedia_leg_mos",
            "Estimated MOS (ITU-T G.107 E-model) of each leg at its end.",
            registry=registry,
            buckets=MOS_BUCKETS,
        )
        self.jitter = Histogram(
            "omlmedia_leg_jitter_ms",
            "RFC 3550 interarrival jitter of each leg at its end, in milliseconds.",
            registry=registry,
            buckets=JITTER_BUCKETS_MS,
        )
        self.loss = Histogram(
            "omlmedia_leg_loss_ratio",
            "Fraction of RTP packets lost on each leg (lost / (received + lost)).",
            registry=registry,
            buckets=LOSS_BUCKETS,
        )
        self.packets = Counter(
            "omlmedia_rtp_packets_received",
            "RTP packets received on legs that ended.",
            registry=registry,
        )
        self.lost = Counter(
            "omlmedia_rtp_packets_lost",
            "RTP packets lost on legs that ended.",
            registry=registry,
        )

    def __call__(self, ev: Event) -> None:
        """An event listener: takes ``call.quality`` events, ignores the others."""
        if ev.type != CALL_QUALITY:
            return
        data = ev.data
        mos = _number(data.get("mos"))
        if mos is not None:
            self.mos.observe(mos)
        jitter = _number(data.get("jitter_ms"))
        if jitter is not None:
            self.jitter.observe(jitter)
        received = _number(data.get("packets")) or 0.0
        lost = max(_number(data.get("lost")) or 0.0, 0.0)
        if received > 0:
            self.packets.inc(received)
        if lost > 0:
            self.lost.inc(lost)
        if received + lost > 0:
            self.loss.observe(lost / (received + lost))


class ServerCollector(Collector):
    """Reads the live figures at scrape time from their owners."""

    def __init__(
        self,
        status: StatusProvider,
        *,
        calls: Counts | None = None,
        agents: Callable[[], Iterable[str]] | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.status = status
        self.calls = calls
        """SIP calls by (state, direction)."""
        self.agents = agents
        """The state of every logged-in agent."""
        self.events = events

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.status()
        except Exception:
            logger.exception("reading the server's status for /metrics failed")
            status = {}
        yield from self._sip(status.get("sip") or {})
        yield from self._transport(status.get("transport") or {})
        yield from self._media(status.get("media") or {}, status.get("calls") or {})
        yield from self._queues(status.get("queues") or {})
        yield from self._agents()
        yield from self._events()
        cluster = status.get("cluster")
        acd = cluster.get("acd") if isinstance(cluster, Mapping) else None
        if isinstance(acd, Mapping) and acd:
            yield from self._shared_acd(acd)

    def _sip(self, sip: Mapping[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "omlmedia_sip_transactions",
            "SIP transactions in progress.",
            value=sip.get("transactions", 0),
        )
        yield GaugeMetricFamily(
            "omlmedia_sip_dialogs", "SIP dialogs established.", value=sip.get("dialogs", 0)
        )
        calls = GaugeMetricFamily(
            "omlmedia_sip_calls",
            "SIP calls (each one leg: an INVITE session) by state and direction.",
            labels=["state", "direction"],
        )
        if self.calls is not None:
            for (state, direction), count in sorted(self.calls().items()):
                calls.add_metric([state, direction], count)
        yield calls
        layer = CounterMetricFamily(
            "omlmedia_sip_transaction_events",
            "SIP transaction layer counters since start.",
            labels=["event"],
        )
        for name, value in sorted((sip.get("transaction_layer") or {}).items()):
            if _number(value) is not None:
                layer.add_metric([name], value)
        yield layer
        ua = CounterMetricFamily(
            "omlmedia_sip_ua_events", "SIP user agent counters since start.", labels=["event"]
        )
        for name, value in sorted((sip.get("ua") or {}).items()):
            if _number(value) is not None:
                ua.add_metric([name], value)
        yield ua

    def _transport(self, transport: Mapping[str, Any]) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "omlmedia_sip_transport_events",
            "SIP transport counters since start (datagrams, messages, bytes, drops).",
            labels=["event"],
        )
        for name, value in sorted(transport.items()):
            if _number(value) is not None:
                family.add_metric([name], value)
        yield family

    def _media(self, media: Mapping[str, Any], calls: Mapping[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "omlmedia_media_calls",
            "Calls holding media in the router's own targets (media services, B2BUA).",
            value=media.get("active", 0),
        )
        yield GaugeMetricFamily(
            "omlmedia_rtp_ports_in_use",
            "RTP port pairs in use.",
            value=media.get("rtp_ports_in_use", 0),
        )
        yield CounterMetricFamily(
            "omlmedia_rtp_ports_held_elsewhere",
            "RTP ports of the range found held by another process (skipped, tried again later).",
            value=media.get("rtp_ports_held_elsewhere", 0),
        )
        yield CounterMetricFamily(
            "omlmedia_rtp_port_failures",
            "Calls that got no RTP port pair (all in use, or held by another process).",
            value=media.get("rtp_port_failures", 0),
        )
        yield from self._kernel(media.get("kernel") or {})
        family = CounterMetricFamily(
            "omlmedia_calls", "Calls the router saw since start, by outcome.", labels=["outcome"]
        )
        for name, value in sorted(calls.items()):
            if _number(value) is not None:
                family.add_metric([name], value)
        yield family

    def _kernel(self, kernel: Mapping[str, Any]) -> Iterator[Metric]:
        """The kernel path of passthrough bridges (``[media] kernel_forwarding``)."""
        yield GaugeMetricFamily(
            "omlmedia_kernel_path_active",
            "1 when passthrough bridges may be relayed by the kernel (nftables).",
            value=1 if kernel.get("active") else 0,
        )
        yield GaugeMetricFamily(
            "omlmedia_kernel_path_calls",
            "Calls whose RTP the kernel relays now.",
            value=_number(kernel.get("calls")) or 0,
        )
        yield CounterMetricFamily(
            "omlmedia_kernel_path_packets",
            "RTP packets the kernel relayed since start.",
            value=_number(kernel.get("packets")) or 0,
        )
        yield CounterMetricFamily(
            "omlmedia_kernel_path_bytes",
            "Bytes (IP and UDP headers included) the kernel relayed since start.",
            value=_number(kernel.get("bytes")) or 0,
        )
        family = CounterMetricFamily(
            "omlmedia_kernel_path_fallbacks",
            "Calls handed back from the kernel to the userspace relay, by reason.",
            labels=["reason"],
        )
        fallbacks = kernel.get("fallbacks")
        for reason, value in sorted(fallbacks.items() if isinstance(fallbacks, dict) else ()):
            if _number(value) is not None:
                family.add_metric([str(reason)], value)
        yield family

    def _queues(self, queues: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        figures = {
            "waiting": ("omlmedia_queue_waiting", "Callers waiting in the queue."),
            "ringing": ("omlmedia_queue_ringing", "Callers being offered to an agent."),
            "callbacks": ("omlmedia_queue_callbacks", "Callers waiting to be called back."),
            "longest_wait": (
                "omlmedia_queue_longest_wait_seconds",
                "Seconds the longest-waiting caller has waited.",
            ),
            "members_logged_in": ("omlmedia_queue_members_logged_in", "Members logged in."),
            "members_ready": ("omlmedia_queue_members_ready", "Members ready for a call."),
            "members_busy": ("omlmedia_queue_members_busy", "Members on a call or ringing."),
        }
        for key, (name, help_text) in figures.items():
            family = GaugeMetricFamily(name, help_text, labels=["queue"])
            for queue, summary in sorted(queues.items()):
                value = _number(summary.get(key))
                if value is not None:
                    family.add_metric([queue], value)
            yield family

    def _agents(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "omlmedia_agents", "Logged-in agents by state.", labels=["state"]
        )
        if self.agents is not None:
            counts: dict[str, int] = {}
            for state in self.agents():
                counts[state] = counts.get(state, 0) + 1
            for state, count in sorted(counts.items()):
                family.add_metric([state], count)
        yield family

    def _shared_acd(self, acd: Mapping[str, Any]) -> Iterator[Metric]:
        """The cluster's one ACD seen from this node (the status's ``cluster.acd``): only when
        the shared ACD is on, so a node whose ACD is its own has none of these families."""

        def value(key: str) -> float:
            return _number(acd.get(key)) or 0.0

        yield GaugeMetricFamily(
            "omlmedia_acd_owner",
            "1 when this node holds the shared ACD's lease (it writes the timer ticks).",
            value=1 if acd.get("owner") is True else 0,
        )
        yield GaugeMetricFamily(
            "omlmedia_acd_epoch",
            "The epoch (fencing token) of this node's lease on the shared ACD, 0 once it "
            "stepped down (owner is 0 already when the lease's local deadline passed).",
            value=value("epoch"),
        )
        yield GaugeMetricFamily(
            "omlmedia_acd_pending_inputs",
            "Inputs of this node waiting to be appended to the ACD's stream in Redis.",
            value=value("pending"),
        )
        yield GaugeMetricFamily(
            "omlmedia_acd_remote_offers",
            "Offers of this node's callers to agents on other nodes in progress.",
            value=value("remote_offers"),
        )
        inputs = CounterMetricFamily(
            "omlmedia_acd_inputs",
            "Shared ACD inputs since start: submitted by this node, appended to the stream, "
            "dropped (local queue full while Redis was unreachable), applied by this node's "
            "follower (retried duplicates included), malformed (unreadable, or failing the "
            "engine on every node), skipped (retried duplicates of an input already applied).",
            labels=["event"],
        )
        for event in ("submitted", "appended", "dropped", "applied", "malformed", "skipped"):
            inputs.add_metric([event], value(event))
        yield inputs
        counters = {
            "redis_errors": ("omlmedia_acd_redis_errors", "Failed Redis operations."),
            "acquisitions": (
                "omlmedia_acd_lease_acquisitions",
                "Times this node took the shared ACD's lease.",
            ),
            "step_downs": (
                "omlmedia_acd_step_downs",
                "Times this node stopped owning the shared ACD (renewal failed or lease lapsed).",
            ),
            "nodes_lost": (
                "omlmedia_acd_nodes_lost",
                "Nodes this node, as owner, found lost (heartbeat lapsed).",
            ),
            "snapshots": (
                "omlmedia_acd_snapshots",
                "Snapshots of the ACD this node stored as owner.",
            ),
            "trimmed": (
                "omlmedia_acd_trimmed_entries",
                "Input entries trimmed from the stream after this node's snapshots.",
            ),
        }
        for key, (name, help_text) in counters.items():
            yield CounterMetricFamily(name, help_text + " Since start.", value=value(key))
        yield GaugeMetricFamily(
            "omlmedia_acd_snapshot_seconds",
            "How long this node's last snapshot took to take and encode.",
            value=value("snapshot_seconds"),
        )

    def _events(self) -> Iterator[Metric]:
        log = self.events
        yield GaugeMetricFamily(
            "omlmedia_event_stream_clients",
            "Clients of the event stream (and other live subscribers of the event log).",
            value=log.stream_clients if log is not None else 0,
        )
        yield CounterMetricFamily(
            "omlmedia_events_published",
            "Events published since start.",
            value=log.published if log is not None else 0,
        )
        yield CounterMetricFamily(
            "omlmedia_event_stream_dropped",
            "Event stream clients cut off for reading too slowly, since start.",
            value=log.stream_dropped if log is not None else 0,
        )
        yield CounterMetricFamily(
            "omlmedia_events_unrecorded",
            "Events not recorded for want of an id while the database was away, since start.",
            value=log.unrecorded if log is not None else 0,
        )


class Metrics:
    """One server's registry: its live collector and its quality histograms (fed by `events`)."""

    def __init__(
        self,
        status: StatusProvider,
        *,
        calls: Counts | None = None,
        agents: Callable[[], Iterable[str]] | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(status, calls=calls, agents=agents, events=events))
        self.quality = QualityHistograms(self.registry)
        if events is not None:
            events.listeners.append(self.quality)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


def metrics_handler(
    metrics: Metrics, authorized: Callable[[web.Request], bool]
) -> Callable[[web.Request], Any]:
    """The ``/metrics`` route: the exposition for a request `authorized` lets through (a 401
    with the API's error shape for any other)."""

    async def get_metrics(request: web.Request) -> web.Response:
        """Prometheus metrics (text exposition format): calls, legs, SIP, RTP quality, queues,
        agents, event-stream clients, the shared ACD."""
        if not authorized(request):
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="omlmedia"'},
            )
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return get_metrics


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` alone, in plain HTTP and without a token, on `host`:`port` (the
    configuration's ``api.metrics_listen``: an address only Prometheus reaches); returns the
    runner to clean up. Its cleanup cancels a scrape still running after the API's grace
    (`omlmedia.api.HTTP_STOP_GRACE`, a scraper reading slowly at the stop) instead of aiohttp's
    60 s: a scrape must not hold a node's stop."""
    from omlmedia import api  # api imports this module

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics, lambda request: True))
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=api.HTTP_STOP_GRACE
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
