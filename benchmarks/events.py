"""Event fan-out: N stream clients of ``GET /api/v1/events`` while events are published at a fixed
rate; delivery latency (p50/p99/max) and the server's CPU per event.

    python benchmarks/events.py [--clients 100] [--rate 2000] [--seconds 10] [--transport sse|ws]

The server side is a subprocess pinned to the server core, running the server's own event path
and nothing else: `omlmedia.events.EventLog` writing through `AsyncStore` (SQLite, WAL, the
batched writer thread) and the API application (`omlmedia.api.create_app`, HTTPS with a
self-signed certificate, as `omlmedia serve` serves it) with its stream handler. A publisher task
in that process stands for the call, queue and agent events of a busy server: it publishes at
`--rate` on a 5 ms tick, each event the size of a queue event. SIP load is left out on purpose so
the figures are the stream's own (`--with-sip` is the combined run).

The clients run in this process, pinned to the generator core. Each event's ``time`` is the
server's wall clock when it was published; a client's latency is its own wall clock when the
event is read, minus that (same machine, same clock). The server's CPU is read from /proc over
the measured window (after `--warmup`), divided by the events published in it. When the
generator's core is saturated the latency includes the clients' own queueing: the report says
how busy that core was.

Measured on the 2-core development machine (shared, uvloop, HTTPS), SSE:

| clients x events/s | deliveries/s | p50 / p99 / max ms | server CPU | per event | per delivery |
|---|---|---|---|---|---|
| 25 x 2,000 | 50,000 | 14.1 / 24.7 / 31 | 14.8 % | 74 us | 3.0 us |
| 100 x 2,000 | 200,000 (all) | 21.9 / 38.0 / 70 | 33.5 % | 167 us | 1.7 us |

(Quiet machine, before the stream wrote at per-client slots.) With other processes taking
22-35 % of the server's core, p99 rose to 140-350 ms in later runs: the report gives that load
(`server_core_other_load_percent`) and the server's write calls a second
(`server_writes_per_s`, from /proc/PID/io: one per write to a client, a figure the machine's
load does not change). The SSE clients read a bare TLS stream with one regular expression per
read: aiohttp's client cost more per event than the server and saturated its core first.
WebSocket costs the server more per delivery (one frame, one TLS record and one send per
event: 13.5 us at 20 x 1,000, with an aiohttp client) than SSE's one write per batch.

`--webhooks N` (without `--with-sip`) adds N subscriptions to the event server, wired as the
server wires them (`WebhookService`: the outbox rows committed with the events, the delivery
worker in its own process, started on the server's core and then let run on any core:
`--worker-core`), each to its own path of a local HTTPS receiver in this process (a bare TLS
protocol: aiohttp's server cost more per request than the worker's client). `--fanout split`
gives each subscription every N-th event (`--rate` deliveries a second in all), `all` every
event. It reports each delivery's first arrival minus its event's time for the events of the
measured window (waiting for them after it), and the CPU of the server's main process and of
the worker apart. Measured 2026-12-06 (``--clients 0 --webhooks 10 --rate R --seconds 10``,
and ``--webhooks 0`` for the main process alone; load average in brackets): R = 1,000 [27]:
first arrival p50 18 ms, p99 228 ms; R = 2,000 [12-28]: p50 4.9 s, p99 13.7 s (the worker had
41 % of a core, 205 us per delivery); at load 38-45 the worker had 10-13 % of a core and fell
far behind even at 500. Main process 48-54 us per event with the subscriptions, 26-29 us
without [38-45]. No delivery lost or duplicated. With SIP (``--with-sip --cps 30 --seconds 6
--rounds 3 --webhooks 10 --clients 100`` [15 falling to 7.5]): set-up p99 per phase 8 / 20 /
304 ms alone, 20 / 104 / 224 with the clients, 12 / 20 / 88 with the webhooks (900 deliveries
a second, first arrival p50 16 ms, p99 52 / 95 / 567 ms, no retransmission).

`--with-sip` measures the effect on calls: a real `omlmedia serve`, sipp placing `--cps` calls
a second to ``echo`` (three events each), in `--rounds` rounds of interleaved phases: alone,
with `--clients` SSE clients reading every event, and with `--webhooks` subscriptions to every
event (each to its own path of a local HTTPS aiohttp receiver in this process; 0: no such
phase). Set-up is INVITE to 200 OK from sipp's ``-trace_rtt`` (whole milliseconds), pooled
over the phases of a kind; webhook latency is each delivery's first arrival minus the event's
time; the outbox depth is sampled from ``/metrics`` every 100 ms.

Before the stream wrote at slots (quiet machine, 200 calls/s, 100 clients): set-up p99 4 ms
alone, 8 ms with the clients, the server's CPU per call 1.2 then 2.7 ms. The stream now writes
at most once a period per client at a slot of its own (20-80 ms, `omlmedia.eventstream.linger`),
shares each event's SSE bytes between clients, and keeps to about 1,250 writes a second.
Measured on 2026-12-06 with the machine's load average at 11-19 on its 2 cores, A/B against
the previous stream in the same session (``--with-sip --cps 50 --seconds 6 --rounds 3
--webhooks 0 --clients 100``, two runs each, interleaved):

| stream | writes/s (alone: 170) | CPU per call, alone -> clients | set-up p99, alone -> clients |
|---|---|---|---|
| previous | 2,179 / 3,063 | 1.8 -> 4.8 / 2.2 -> 6.0 ms | 12 -> 364 / 8 -> 144 ms |
| slots | 1,305 / 1,323 | 2.0 -> 4.8 / 1.5 -> 3.5 ms | 76 -> 360 / 24 -> 88 ms |

Without SIP, same session (``--clients 100 --rate 2000 --seconds 5``, two runs each,
interleaved): CPU per delivery 1.85 / 2.30 us before, 1.23 / 1.30 us with the slots; writes
1,728 / 2,532 a second before, 1,284 / 1,585 with them; the previous stream fell behind (72 % and
70 % of the window's deliveries), the new one much less (83 %, 100 %); latency there was the
generator core's (100 % busy), not the server's.

At 30 calls/s (90 events/s, 9,000 deliveries/s; ``--with-sip --cps 30 --seconds 6 --rounds 3
--webhooks 10 --clients 100``, 540 calls of each kind per run, two runs each, interleaved;
alone -> with clients):

| stream | set-up p99 | CPU per call | writes/s (alone: 120) | delivery p99 |
|---|---|---|---|---|
| previous | 8 -> 52 / 8 -> 16 ms | 2.6 -> 10.0 / 2.0 -> 7.9 ms | 2,593 / 2,798 | 134 / 49 ms |
| slots | 8 -> 12 / 8 -> 8 ms | 2.4 -> 6.6 / 1.8 -> 5.7 ms | 1,278 / 1,280 | 80 / 79 ms |

and the webhook phase of the same runs (10 subscriptions, 900 deliveries/s): first arrival p50
12-29 ms, p99 123-868 ms, the outbox at most 109-538 deep, set-up p99 8 -> 12-40 ms, the
server's CPU per call up by 7-10 ms (about 0.25 ms per delivery, most of it aiohttp's client).

The writes halved; at that load the set-up times are the machine's, not the server's (the
same phase gave 4 ms and 100 ms within one run), so whether the issue's bound (set-up p99
changed by at most 10 %) now holds is not shown: it needs the quiet machine. Webhooks at the
same rate (``--cps 50 --webhooks 10``: 1,500 deliveries/s) fall far behind there: first
arrival p50 6.6-17 s, p99 11-27 s, the outbox up to 10,270 deep, the server's CPU per call
5.7-7.7 ms (about 0.2 ms per delivery), no delivery lost or duplicated; the issue's bound
(first attempt p99 <= 500 ms) is not met at that rate on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import API_TOKEN, free_port
from benchmarks.procstat import (
    GENERATOR_CORE,
    SERVER_CORE,
    Window,
    can_pin,
    pin_self,
    pinned,
)

TICK = 0.005
"""Seconds between the publisher's batches."""
PAYLOAD = {"wait": 12.5, "position": 3, "caller_number": "5551234", "priority": 0}
"""A queue event's data, as the ACD writes it."""


# -- pure helpers (tested in tests/benchmarks/test_events.py) -----------------------------------


def spread(values: Sequence[float]) -> str:
    """``min / median / max`` of `values` (each phase's figure), as the report prints it."""
    if not values:
        return "-"
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return f"{ordered[0]:g} / {median:g} / {ordered[-1]:g}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def due(rate: float, elapsed: float, sent: int) -> int:
    """How many events a fixed-rate publisher owes after `elapsed` seconds, having sent `sent`."""
    return max(0, int(rate * elapsed) - sent)


SSE_EVENT = re.compile(rb'id: (\d+)\nevent: [^\n]*\ndata: \{"id":\d+,"time":([-+.e\d]+),')
"""One SSE message of the stream, as far as its ``time`` (the JSON's second field)."""


def sse_times(buffer: bytearray) -> list[tuple[int, float]]:
    """Take the complete SSE messages off the front of `buffer`; each message's id and the
    ``time`` field of its JSON, found by one regular expression rather than by parsing the JSON
    (the clients must stay cheaper than the server they measure)."""
    end = buffer.rfind(b"\n\n")
    if end < 0:
        return []
    chunk = bytes(buffer[: end + 2])
    del buffer[: end + 2]
    return [(int(m[1]), float(m[2])) for m in SSE_EVENT.finditer(chunk)]


def dechunk(raw: bytearray) -> tuple[bytes, bool]:
    """Take the complete HTTP/1.1 chunks (RFC 9112 §7.1) off the front of `raw`: their data,
    and whether the last chunk came."""
    out: list[bytes] = []
    while (line_end := raw.find(b"\r\n")) >= 0:
        size = int(bytes(raw[:line_end]).split(b";")[0], 16)
        stop = line_end + 2 + size + 2
        if len(raw) < stop:
            break
        out.append(bytes(raw[line_end + 2 : line_end + 2 + size]))
        del raw[:stop]
        if size == 0:
            return b"".join(out), True
    return b"".join(out), False


# -- the server side ----------------------------------------------------------------------------


async def _serve(
    port: int,
    data_dir: Path,
    rate: float,
    webhooks: int = 0,
    receiver_port: int = 0,
    fanout: str = "split",
) -> None:
    from aiohttp import web

    from omlmedia.api import create_app
    from omlmedia.authz import Identity, Role
    from omlmedia.config import ApiConfig, Config, load_demo_config
    from omlmedia.events import EventLog
    from omlmedia.storage import AsyncStore, Store
    from omlmedia.webhooks import WebhookService
    from sip.tls import ensure_self_signed, server_context

    demo = load_demo_config()
    api = ApiConfig(token_sha256=hashlib.sha256(API_TOKEN.encode()).hexdigest())
    config = Config(server=demo.server, sip=demo.sip, security=demo.security, api=api)
    store = AsyncStore(Store(data_dir / "omlmedia.db"))
    store.start()
    log = EventLog(store)
    service = None
    if webhooks:
        # The server's own wiring (omlmedia.server): the outbox hook and the delivery worker.
        service = WebhookService(store)
        log.outbox = service.outbox
        bench = Identity("benchmark", Role.ADMIN)
        for n in range(webhooks):
            url = f"https://127.0.0.1:{receiver_port}/hook/{n}"
            types: tuple[str, ...] = (f"bench.{n}.",) if fanout == "split" else ()
            await service.create(bench, url=url, types=types, verify_tls=False)
        service.start()
        await service.worker.ready()
    cert, key = data_dir / "server.crt", data_dir / "server.key"
    ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    runner = web.AppRunner(create_app(config, dict, events=log), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context(cert, key)).start()
    print("ready", service.worker.pid if service is not None else 0, flush=True)
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    queues = ("support", "sales", "billing")
    # Split: each subscription takes every `webhooks`-th event (its own type), so the receivers
    # get `rate` deliveries a second in all; all: each takes every event.
    kinds = [f"bench.{n}.entered" for n in range(webhooks)] or ["queue.entered"]
    while True:
        await asyncio.sleep(TICK)
        for _ in range(due(rate, loop.time() - started, sent)):
            sent += 1
            log.publish(
                kinds[sent % len(kinds)],
                call_id=f"call-{sent}",
                queue=queues[sent % 3],
                data=PAYLOAD,
            )


def start_server(
    port: int,
    data_dir: Path,
    rate: float,
    webhooks: int = 0,
    receiver_port: int = 0,
    fanout: str = "split",
) -> tuple[subprocess.Popen[str], int]:
    """The server side, pinned to the server core, and its webhook worker's pid (0: none)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "serve",
        "--port",
        str(port),
        "--data",
        str(data_dir),
        "--rate",
        str(rate),
        "--webhooks",
        str(webhooks),
        "--receiver-port",
        str(receiver_port),
        "--fanout",
        fanout,
    ]
    process = subprocess.Popen(
        pinned(command, SERVER_CORE),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"the event server did not start: {line!r}")
    return process, int(line.split()[1])


def write_calls(pid: int) -> int:
    """The write system calls `pid` made so far (``syscw`` of /proc/PID/io; the event loop
    writes a TCP stream with write/writev, so each stream write to a client is one; 0 where it
    cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscw:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# -- the clients --------------------------------------------------------------------------------


class Tally:
    """What the clients saw in the measured window."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.delivered = 0
        self.measuring = False
        self.closed: list[str] = []
        self.gaps = 0


async def _sse_client(url: str, context: ssl.SSLContext, tally: Tally) -> None:
    """An SSE client on a bare TLS stream (aiohttp's client costs more per event than the
    server does)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port, ssl=context, server_hostname="localhost"
    )
    writer.write(
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {API_TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    raw, buffer, last = bytearray(), bytearray(), -1
    try:
        while data := await reader.read(1 << 16):
            raw += data
            payload, ended = dechunk(raw)
            buffer += payload
            now = time.time()
            for ident, sent in sse_times(buffer):
                if last >= 0 and ident != last + 1:
                    tally.gaps += 1
                last = ident
                if tally.measuring:
                    tally.delivered += 1
                    tally.latencies.append(now - sent)
            if ended:
                break
        tally.closed.append("end of stream")
    finally:
        writer.close()


async def _ws_client(url: str, context: ssl.SSLContext, tally: Tally) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.ws_connect(url, headers=headers, max_msg_size=0) as ws:
            last = -1
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                now = time.time()
                ev = json.loads(msg.data)
                if last >= 0 and ev["id"] != last + 1:
                    tally.gaps += 1
                last = ev["id"]
                if tally.measuring:
                    tally.delivered += 1
                    tally.latencies.append(now - ev["time"])
            tally.closed.append(f"closed {ws.close_code}")


def place_worker(worker: int, where: str) -> str:
    """Put the webhook worker (started on the server's core, like its parent) on `where`:
    ``any`` core (as the system would), or the ``server``'s or the ``generator``'s; what was
    done."""
    if not worker or not can_pin():
        return "not pinned"
    cores = {
        "any": set(range(os.cpu_count() or 1)),
        "server": {SERVER_CORE},
        "generator": {GENERATOR_CORE},
    }[where]
    os.sched_setaffinity(worker, cores)
    return where


async def _arrivals(receivers: Receivers, start: float, end: float, expected: int) -> list[float]:
    """Wait for the deliveries of the events published from `start` to `end` (until `expected`
    arrived, or no delivery at all for 5 s, or 60 s in all); their latencies in ms."""
    deadline, last, still = time.monotonic() + 60, -1, time.monotonic()
    while time.monotonic() < deadline:
        if len(receivers.between(start, end)) >= expected:
            break
        if len(receivers.seen) != last:  # the worker still delivers (maybe older events)
            last, still = len(receivers.seen), time.monotonic()
        elif time.monotonic() - still > 5:
            break
        await asyncio.sleep(0.2)
    return [v * 1000 for v in receivers.between(start, end)]


async def _measure(
    args: argparse.Namespace,
    port: int,
    pid: int,
    worker: int = 0,
    receivers: Receivers | None = None,
) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{port}/api/v1/events"
    tally = Tally()
    client = _sse_client if args.transport == "sse" else _ws_client
    tasks = [asyncio.ensure_future(client(url, context, tally)) for _ in range(args.clients)]
    await asyncio.sleep(args.warmup)
    window = Window(pid)
    worker_window = Window(worker) if worker else None
    tally.measuring = True
    writes = write_calls(pid)
    window.start()
    if worker_window is not None:
        worker_window.start()
    started = time.time()
    await asyncio.sleep(args.seconds)
    ended = time.time()
    window.end()
    if worker_window is not None:
        worker_window.end()
    load = os.getloadavg()
    writes = write_calls(pid) - writes
    tally.measuring = False
    published = args.rate * window.seconds
    hooks: dict[str, Any] = {}
    if receivers is not None and worker_window is not None:
        per_event = 1 if args.fanout == "split" else args.webhooks
        expected = round(published * per_event)
        arrived = await _arrivals(receivers, started, ended, expected)
        delivered = max(len(arrived), 1)
        hooks = {
            "webhooks": args.webhooks,
            "webhook_fanout": args.fanout,
            "webhook_worker_core": args.worker_core,
            "webhook_deliveries": len(arrived),
            "webhook_deliveries_expected": expected,
            "webhook_duplicates": receivers.duplicates,
            "webhook_ms_p50": round(percentile(arrived, 0.50), 1),
            "webhook_ms_p99": round(percentile(arrived, 0.99), 1),
            "webhook_ms_max": round(max(arrived), 1) if arrived else math.nan,
            "worker_cpu_percent": round(100 * worker_window.cpu_seconds / worker_window.seconds, 1),
            "worker_cpu_us_per_delivery": round(1e6 * worker_window.cpu_seconds / delivered, 1),
        }
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [v * 1000 for v in tally.latencies]
    return {
        "transport": args.transport,
        "clients": args.clients,
        "rate": args.rate,
        "seconds": round(window.seconds, 2),
        "events_published": round(published),
        "deliveries": tally.delivered,
        "deliveries_expected": round(published * args.clients),
        "latency_ms_p50": round(percentile(latencies, 0.50), 2),
        "latency_ms_p99": round(percentile(latencies, 0.99), 2),
        "latency_ms_max": round(max(latencies), 2) if latencies else math.nan,
        "server_cpu_percent": round(100 * window.cpu_seconds / window.seconds, 1),
        "server_cpu_us_per_event": round(1e6 * window.cpu_seconds / max(published, 1), 1),
        "server_cpu_us_per_delivery": round(1e6 * window.cpu_seconds / max(tally.delivered, 1), 2),
        "server_writes_per_s": round(writes / window.seconds),
        "generator_core_busy_percent": round(100 * window.generator_core_busy(window.seconds), 1),
        "server_core_other_load_percent": round(
            100 * window.other_load_on_server_core(window.seconds), 1
        ),
        "gaps": tally.gaps,
        "cut_off": len([c for c in tally.closed if "1013" in c]),
        "pinned": can_pin(),
        **hooks,
        "load_average_1m": round(load[0], 1),
    }


# -- the effect on SIP: a real `omlmedia serve`, sipp calls, with and without stream clients ---


def _setup_times_ms(workdir: Path, name: str) -> list[float]:
    """INVITE to 200 OK of every call, from sipp's ``-trace_rtt`` file (whole milliseconds)."""
    times: list[float] = []
    for path in workdir.glob(f"{name}_*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 2 and fields[1].strip():
                times.append(float(fields[1]))
        path.unlink()
    return times


def _sipp_calls(server: Any, workdir: Path, cps: int, seconds: float, name: str) -> dict[str, Any]:
    from benchmarks.harness import run_sipp

    calls = int(cps * seconds)
    (workdir / name).mkdir(exist_ok=True)
    result = run_sipp(
        [
            "-sn",
            "uac",
            f"127.0.0.1:{server.sip_port}",
            "-s",
            "echo",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            str(calls),
            "-r",
            str(cps),
            "-l",
            str(max(100, cps * 2)),
            "-trace_rtt",
            "-rtt_freq",
            "1",
        ],
        workdir / name,
        timeout=seconds * 4 + 60,
        name="uac",
        core=GENERATOR_CORE,
    )
    setup = _setup_times_ms(workdir / name, "uac")
    return {
        "setup_ms": setup,
        "calls": calls,
        "successful": result.count("SuccessfulCall"),
        "failed": result.count("FailedCall"),
        "retransmissions": result.count("Retransmissions"),
        "setup_ms_p50": percentile(setup, 0.50),
        "setup_ms_p99": percentile(setup, 0.99),
    }


HOOK_REQUEST = re.compile(rb"POST /hook/(\d+) HTTP/1\.1\r\n(.*?)\r\n\r\n", re.S | re.I)
HOOK_ID = re.compile(rb"^webhook-id: *(\S+)", re.M | re.I)
CONTENT_LENGTH = re.compile(rb"^content-length: *(\d+)", re.M | re.I)
EVENT_TIME = re.compile(rb'"time":([-+.e\d]+)')
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class _HookProtocol(asyncio.Protocol):
    """One receiver connection: HTTP/1.1 keep-alive POSTs, each answered 204 (a bare protocol
    with regular expressions: aiohttp's server cost more per request than the worker sending
    it, and the receivers share the generator's core)."""

    def __init__(self, receivers: Receivers) -> None:
        self.receivers = receivers
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's TLS transport is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while match := HOOK_REQUEST.match(self.buffer):
            path, head = match[1].decode(), match[2]  # copies: the buffer is cut below
            length = CONTENT_LENGTH.search(head)
            end = match.end() + (int(length[1]) if length else 0)
            if len(self.buffer) < end:
                break
            body = bytes(self.buffer[match.end() : end])
            del self.buffer[:end]
            ident = HOOK_ID.search(head)
            self.receivers.arrived(path, ident[1].decode() if ident else "", body)
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(NO_CONTENT * answers)


class Receivers:
    """Webhook receivers: one local HTTPS server, one path per subscription; the latency of
    each delivery's first arrival (its ``webhook-id`` per path) from the event's ``time``."""

    def __init__(self) -> None:
        self.port = 0
        self.latencies: list[float] = []
        self.sent: list[float] = []
        """Each first arrival's event time (the server's clock when published)."""
        self.seen: set[tuple[str, str]] = set()
        self.duplicates = 0
        self.server: asyncio.Server | None = None

    def arrived(self, path: str, ident: str, body: bytes) -> None:
        key = (path, ident)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        found = EVENT_TIME.search(body)
        sent = float(found[1]) if found else math.nan
        self.latencies.append(time.time() - sent)
        self.sent.append(sent)

    async def start(self, workdir: Path) -> None:
        from sip.tls import ensure_self_signed, server_context

        cert, key = workdir / "receiver.crt", workdir / "receiver.key"
        ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
        self.port = free_port()
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _HookProtocol(self),
            "127.0.0.1",
            self.port,
            ssl=server_context(cert, key),
        )

    def reset(self) -> None:
        self.latencies, self.sent, self.seen, self.duplicates = [], [], set(), 0

    def between(self, start: float, end: float) -> list[float]:
        """The latencies (s) of the first arrivals of events published from `start` to `end`."""
        return [
            lat for sent, lat in zip(self.sent, self.latencies, strict=True) if start <= sent < end
        ]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


OUTBOX_DEPTH = re.compile(rb"^omlmedia_webhook_outbox_depth (\S+)$", re.M)


async def _webhooks(
    base: str, context: ssl.SSLContext, receivers: Receivers, count: int
) -> list[str]:
    """`count` subscriptions to every event, each to its own path of `receivers`."""
    import aiohttp

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    ids = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), headers=headers
    ) as session:
        for n in range(count):
            url = f"https://127.0.0.1:{receivers.port}/hook/{n}"
            body = {"url": url, "verify_tls": False, "description": f"benchmark {n}"}
            async with session.post(f"{base}/api/v1/webhooks", json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"webhook not created: {await response.text()}")
                ids.append((await response.json())["id"])
    return ids


async def _unhook(base: str, context: ssl.SSLContext, ids: list[str]) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), headers=headers
    ) as session:
        for hook in ids:
            async with session.delete(f"{base}/api/v1/webhooks/{hook}") as response:
                if response.status >= 300:
                    raise RuntimeError(f"webhook not deleted: {await response.text()}")


async def _outbox_depths(base: str, context: ssl.SSLContext, depths: list[float]) -> None:
    """Sample the outbox depth from ``/metrics`` every 100 ms until cancelled."""
    import aiohttp

    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), headers=headers
    ) as session:
        while True:
            async with session.get(f"{base}/metrics") as response:
                if match := OUTBOX_DEPTH.search(await response.read()):
                    depths.append(float(match[1]))
            await asyncio.sleep(0.1)


async def _sip_phase(
    args: argparse.Namespace,
    server: Any,
    workdir: Path,
    name: str,
    *,
    clients: int = 0,
    webhooks: int = 0,
    receivers: Receivers | None = None,
) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    base = f"https://127.0.0.1:{server.http_port}"
    tally = Tally()
    tally.measuring = True
    tasks = [
        asyncio.ensure_future(_sse_client(f"{base}/api/v1/events", context, tally))
        for _ in range(clients)
    ]
    hooks: list[str] = []
    depths: list[float] = []
    if webhooks and receivers is not None:
        receivers.reset()
        hooks = await _webhooks(base, context, receivers, webhooks)
        tasks.append(asyncio.ensure_future(_outbox_depths(base, context, depths)))
    await asyncio.sleep(0.5 if tasks else 0)
    window = Window(server.pid)
    worker = (await asyncio.to_thread(server.status)).get("webhooks", {}).get("worker_pid")
    worker_window = Window(worker) if worker and hooks else None
    writes = write_calls(server.pid)
    window.start()
    if worker_window is not None:
        worker_window.start()
    calls = await asyncio.to_thread(_sipp_calls, server, workdir, args.cps, args.seconds, name)
    await asyncio.sleep(0.5)  # the last calls' events
    window.end()
    if worker_window is not None:
        worker_window.end()
    writes = write_calls(server.pid) - writes
    if hooks and receivers is not None:
        # Until every delivery arrived: the count stops growing and the outbox is empty.
        deadline, last = time.monotonic() + 30, -1
        while time.monotonic() < deadline and not (
            len(receivers.seen) == last and depths and depths[-1] == 0
        ):
            last = len(receivers.seen)
            await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    figures = {
        **calls,
        "kind": "with_webhooks" if webhooks else "with_clients" if clients else "alone",
        "stream_clients": clients,
        "webhooks": webhooks,
        "deliveries": tally.delivered,
        "delivery_ms_p99": round(percentile([v * 1000 for v in tally.latencies], 0.99), 2),
        "server_cpu_us_per_call": round(1e6 * window.cpu_seconds / max(calls["successful"], 1)),
        "server_writes_per_s": round(writes / window.seconds),
    }
    if hooks and receivers is not None:
        await _unhook(base, context, hooks)
        latencies = [v * 1000 for v in receivers.latencies]
        figures.update(
            webhook_deliveries=len(receivers.seen),
            webhook_duplicates=receivers.duplicates,
            webhook_ms_p50=round(percentile(latencies, 0.50), 2),
            webhook_ms_p99=round(percentile(latencies, 0.99), 2),
            outbox_depth_max=max(depths, default=math.nan),
            worker_cpu_us_per_delivery=round(
                1e6 * worker_window.cpu_seconds / max(len(receivers.seen), 1)
                if worker_window is not None
                else math.nan
            ),
        )
    return figures


def run_with_sip(args: argparse.Namespace) -> dict[str, Any]:
    """The same sipp run (`--cps` calls a second to ``echo`` for `--seconds`) against one
    server, alone, with `--clients` stream clients reading every call event, and with
    `--webhooks` subscriptions to every event (each to its own path of a local HTTPS
    receiver), interleaved `--rounds` times (alone, clients, webhooks, alone...) so that the
    other load of a shared machine falls on each alike; the set-up times of each kind are
    pooled."""
    from benchmarks.harness import start_server

    phases: list[dict[str, Any]] = []
    with TemporaryDirectory(prefix="omlmedia-events-sip-") as tmp:
        workdir = Path(tmp)
        server = start_server(workdir / "server", core=SERVER_CORE)
        receivers = Receivers()
        try:
            if can_pin():
                pin_self(GENERATOR_CORE)
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                if args.webhooks:
                    runner.run(receivers.start(workdir))
                kinds = [{}, {"clients": args.clients}, {"webhooks": args.webhooks}]
                try:
                    for round_ in range(args.rounds):
                        for n, kind in enumerate(kinds):
                            if n and not any(kind.values()):
                                continue
                            phase = _sip_phase(
                                args,
                                server,
                                workdir,
                                f"r{round_}k{n}",
                                **kind,
                                receivers=receivers,
                            )
                            phases.append(runner.run(phase))
                finally:
                    runner.run(receivers.stop())
        finally:
            server.stop()
    return sip_summary(phases, args.cps, args.seconds)


def sip_summary(phases: list[dict[str, Any]], cps: int, seconds: float) -> dict[str, Any]:
    """The pooled figures of interleaved phases, by kind (``alone``, ``with_clients``,
    ``with_webhooks``): set-up p50/p99 over every call of every phase of that kind, the change
    of each loaded kind's p99 from alone's, and each phase's own p99."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for phase in phases:
        kinds.setdefault(phase["kind"], []).append(phase)
    summary: dict[str, Any] = {"cps": cps, "seconds": seconds}
    for kind, own in kinds.items():
        times = [t for p in own for t in p["setup_ms"]]
        figures: dict[str, Any] = {
            "calls": sum(p["calls"] for p in own),
            "failed": sum(p["failed"] for p in own),
            "retransmissions": sum(p["retransmissions"] for p in own),
            "setup_ms_p50": percentile(times, 0.50),
            "setup_ms_p99": percentile(times, 0.99),
            "setup_ms_p99_min_median_max": spread([p["setup_ms_p99"] for p in own]),
            "server_cpu_us_per_call": round(
                sum(p["server_cpu_us_per_call"] for p in own) / len(own)
            ),
            "server_writes_per_s": round(
                sum(p.get("server_writes_per_s", 0) for p in own) / len(own)
            ),
        }
        if kind == "with_clients":
            figures["deliveries"] = sum(p["deliveries"] for p in own)
            figures["delivery_ms_p99"] = max(p["delivery_ms_p99"] for p in own)
        if kind == "with_webhooks":
            figures["webhook_deliveries"] = sum(p["webhook_deliveries"] for p in own)
            figures["webhook_duplicates"] = sum(p["webhook_duplicates"] for p in own)
            figures["webhook_ms_p50"] = max(p["webhook_ms_p50"] for p in own)
            figures["webhook_ms_p99"] = max(p["webhook_ms_p99"] for p in own)
            figures["outbox_depth_max"] = max(p["outbox_depth_max"] for p in own)
            figures["webhook_ms_p99_min_median_max"] = spread([p["webhook_ms_p99"] for p in own])
            figures["worker_cpu_us_per_delivery"] = spread(
                [p["worker_cpu_us_per_delivery"] for p in own]
            )
        summary[kind] = figures
    alone = summary.get("alone", {}).get("setup_ms_p99", math.nan)
    for kind, key in (
        ("with_clients", "setup_p99_change_percent"),
        ("with_webhooks", "webhooks_setup_p99_change_percent"),
    ):
        if kind in summary:
            loaded = summary[kind]["setup_ms_p99"]
            summary[key] = (
                round(100 * (loaded / alone - 1), 1)
                if alone and not math.isnan(alone)
                else math.nan
            )
    summary["phase_p99_ms"] = " ".join(f"{p['kind']}:{p['setup_ms_p99']:g}" for p in phases)
    summary["load_average_1m"] = round(os.getloadavg()[0], 1)
    return summary


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (the server runs on it), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The stream clients and webhook receivers against the event server at `--rate`."""
    with TemporaryDirectory(prefix="omlmedia-events-") as tmp:
        if can_pin():
            pin_self(GENERATOR_CORE)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_run(args, Path(tmp)))


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    receivers = Receivers()
    if args.webhooks:
        await receivers.start(workdir)
    port = free_port()
    process, worker = await asyncio.to_thread(
        start_server, port, workdir, args.rate, args.webhooks, receivers.port, args.fanout
    )
    try:
        place_worker(worker, args.worker_core)
        return await _measure(args, port, process.pid, worker, receivers if worker else None)
    finally:
        process.terminate()  # its worker sees the end of its input and stops too
        await asyncio.to_thread(process.wait, 10)
        await receivers.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) the server side")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--data", type=Path, required=True)
    serve.add_argument("--rate", type=float, required=True)
    serve.add_argument("--webhooks", type=int, default=0)
    serve.add_argument("--receiver-port", type=int, default=0)
    serve.add_argument("--fanout", choices=("split", "all"), default="split")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--transport", choices=("sse", "ws"), default="sse")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--with-sip",
        action="store_true",
        help="measure the effect on SIP instead: a real server, sipp at --cps to echo, "
        "call set-up p99 without and with --clients stream clients",
    )
    parser.add_argument(
        "--fanout",
        choices=("split", "all"),
        default="split",
        help="without --with-sip: each webhook gets its share of the events (split: --rate "
        "deliveries a second in all) or every event (all: --rate x --webhooks)",
    )
    parser.add_argument(
        "--worker-core",
        choices=("any", "server", "generator"),
        default="any",
        help="without --with-sip: where the webhook worker process runs",
    )
    parser.add_argument("--cps", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=3, help="with --with-sip: rounds of phases, interleaved"
    )
    parser.add_argument(
        "--webhooks",
        type=int,
        default=10,
        help="webhook subscriptions, each to its own path of a local HTTPS receiver (0: none); "
        "with --with-sip, those of the webhook phase",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                _serve(
                    args.port, args.data, args.rate, args.webhooks, args.receiver_port, args.fanout
                )
            )
        return 0
    figures = run_with_sip(args) if args.with_sip else run(args)
    for name, value in figures.items():
        if isinstance(value, dict):
            for key, item in value.items():
                print(f"{name + '.' + key:32} {item}")
        else:
            print(f"{name:32} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
