"""Media relay: N bridged calls of RTP through omlmedia, side by side with rtpengine.

Each call has two RTP legs (the caller's and the PBX's) and carries 50 packets/s per leg and
direction: 20 ms G.711 frames (160-byte payloads) with proper RTP headers. Two modes:

- ``passthrough``: PCMU on both legs. Every payload carries a marker (sender, packet number, send
  time in ns), so the receiver computes the added latency of the very packet that was sent.
- ``transcode``: PCMU (a tone) on the caller's leg, Opus (20 ms frames of a tone, pre-encoded once
  with opuslib and looped) on the PBX's leg. Payloads are rewritten by the relay, so packets are
  matched by order: the k-th packet out of the relay (by its RTP sequence number) is the k-th one
  sent into it; latency is approximate (a frame the transcoder drops or adds shifts the match).

omlmedia: the real server (`omlmedia serve`, the server configuration of benchmarks/harness.py,
taskset to core 0). This script is both the caller (INVITE sip:9<n>@server with a PCMU offer at the
generator's port) and the PBX behind trunk ``pbx`` (it answers the server's outbound INVITE with
PCMU, or with opus/48000/2 only in transcode mode), through the project's own SIP stack
(sip.ua.UserAgent behind sip.service.SipService). rtpengine: ``rtpengine --foreground --table=-1
--interface=127.0.0.1 --listen-ng=... --num-threads=1`` (userspace, core 0) driven over its ng
protocol (benchmarks/rtpengine_ng.py): offer/answer per call, ``codec: transcode opus, mask PCMU``
in transcode mode. The load generator is a separate process on core 1 (non-blocking sockets, epoll,
one time-scheduled loop); a direct loopback run (generator to itself) at each N gives its own
latency baseline and shows whether it keeps up.

CPU is read from /proc/PID/stat over the measurement window only (after the warm-up, calls set
up), and divided by the packets relayed in the window (received by the generator). Memory per call
is the slope of the server's VmRSS over N (calls up, during the window). Ratios to rtpengine are
from the same run and the same load.

    .venv/bin/python benchmarks/media_relay.py [--modes passthrough,transcode]
        [--calls 25,50,100,200,400] [--duration 10] [--warmup 2] [--json out.json]
        [--skip-rtpengine] [--profile [--profile-calls 100]]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import math
import multiprocessing
import os
import pstats
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import fmt, free_port, slope_kib_per_call  # noqa: E402
from benchmarks.procstat import (  # noqa: E402
    GENERATOR_CORE,
    SERVER_CORE,
    Window,
    cpu_seconds,
    pin_self,
    pinned,
    rss_kib,
)
from benchmarks.rtpengine_ng import NgClient, NgNotReady  # noqa: E402

PERIOD_NS = 20_000_000  # 20 ms frames, 50 packets/s per leg and direction
PCMU_PAYLOAD = 160
MARK = b"OMLB"
MARK_FORMAT = ">BBHII4sIIq"  # RTP header, then marker, sender, packet number, send time (ns)
OPUS_PT_DEFAULT = 111
SERVER_RTP_PORTS = "61000-64999"  # above the ephemeral range and the harness' 40000-59999 blocks
RTPENGINE_PORTS = (20000, 29999)
READY_SECONDS = 60.0  # rtpengine answers ng in 0.1 s when quiet; seconds on a loaded machine
GENERATOR_PORTS = (10000, 19998)
SEND_BATCH = 256  # sends at most between two receive polls

TARGETS = {
    "passthrough_cpu_ratio_max": 1.5,
    "passthrough_latency_p99_ms_max": 1.0,
    "transcoded_calls_per_core_min": 60,
    "memory_per_call_kib_max": 200,
}


# -- audio ---------------------------------------------------------------------------------------


def ulaw_tone_frames(count: int = 50, freq: float = 440.0) -> list[bytes]:
    """`count` 20 ms PCMU frames of a tone (G.711 µ-law, numpy)."""
    import numpy as np

    t = np.arange(count * 160) / 8000.0
    pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int32)
    sign = (pcm < 0).astype(np.int32) << 7
    mag = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    ulaw = (~(sign | (exponent << 4) | mantissa)) & 0xFF
    data = ulaw.astype(np.uint8).tobytes()
    return [data[i * 160 : (i + 1) * 160] for i in range(count)]


def opus_tone_frames(count: int = 250, freq: float = 440.0) -> list[bytes]:
    """`count` 20 ms Opus packets (48 kHz mono, VoIP, 32 kbit/s) of a slowly gliding tone."""
    import numpy as np
    import opuslib

    encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_VOIP)
    encoder.bitrate = 32000
    frames = []
    phase = 0.0
    for i in range(count):
        f = freq * (1.0 + 0.25 * math.sin(2 * math.pi * i / count))
        step = 2 * np.pi * f / 48000
        pcm = (8000 * np.sin(phase + step * np.arange(960))).astype("<i2")
        phase = (phase + step * 960) % (2 * np.pi)
        frames.append(encoder.encode(pcm.tobytes(), 960))
    return frames


# -- the load generator (a child process on its own core) ----------------------------------------

KIND_MARKED, KIND_TONE, KIND_OPUS = 0, 1, 2
RECV_MARKED, RECV_ORDER = 0, 1


def generator_main(conn: Connection, core: int) -> None:
    """Child process: binds sockets and drives the load on command (see `Generator`)."""
    pin_self(core)
    ulaw = ulaw_tone_frames()
    opus = opus_tone_frames()
    socks: list[socket.socket] = []
    next_port = GENERATOR_PORTS[0]
    conn.send(("ready", len(opus), sum(map(len, opus)) / len(opus)))
    while True:
        command, arg = conn.recv()
        if command == "bind":
            for s in socks:
                s.close()
            socks = []
            port = next_port
            tries = 0
            while len(socks) < arg:
                tries += 1
                if tries > 3 * (GENERATOR_PORTS[1] - GENERATOR_PORTS[0]):
                    raise RuntimeError("no free generator ports")
                if port > GENERATOR_PORTS[1]:
                    port = GENERATOR_PORTS[0]
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    s.close()
                    port += 2
                    continue
                port += 2
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
                socks.append(s)
            next_port = port
            conn.send([s.getsockname()[1] for s in socks])
        elif command == "run":
            conn.send(run_load(socks, arg, ulaw, opus, conn))
        elif command == "close":
            for s in socks:
                s.close()
            socks = []
            conn.send("closed")
        else:
            conn.send("bye")
            return


def run_load(
    socks: list[socket.socket],
    spec: dict[str, Any],
    ulaw: list[bytes],
    opus: list[bytes],
    conn: Connection,
) -> dict[str, Any]:
    """Send and receive until the window (after the warm-up) and a grace period are over.

    Socket 2i is call i's caller leg, 2i+1 its PBX leg; each receives what the other sent.
    `spec`: dests [(host, port)], send [(kind, pt)], recv [kind], warmup, duration, grace (s).
    """
    import numpy as np

    mono = time.monotonic_ns
    pack_into = struct.pack_into
    unpack_from = struct.unpack_from
    pack = struct.pack
    n = len(socks)
    dests: list[tuple[str, int]] = [(d[0], int(d[1])) for d in spec["dests"]]
    kinds = [int(k) for k, _ in spec["send"]]
    pts = [int(pt) for _, pt in spec["send"]]
    recv_kind = [int(k) for k in spec["recv"]]
    ssrcs = [secrets.randbits(32) for _ in range(n)]
    seq0 = [secrets.randbits(16) for _ in range(n)]
    ts0 = [secrets.randbits(32) for _ in range(n)]
    steps = [960 if k == KIND_OPUS else 160 for k in kinds]
    bufs = [bytearray(12 + PCMU_PAYLOAD) for _ in range(n)]
    for b in bufs:
        b[12:] = b"\xff" * PCMU_PAYLOAD
    sendtimes = [array.array("q") for _ in range(n)]
    first_seq = [-1] * n
    sock_fd = {s.fileno(): i for i, s in enumerate(socks)}
    recv_into = [s.recv_into for s in socks]
    sendto = [s.sendto for s in socks]
    epoll = select.epoll(max(1, n))
    for s in socks:
        epoll.register(s.fileno(), select.EPOLLIN)
    # Interleave the senders over the 20 ms period: call i's two legs half a period apart.
    order = [2 * i for i in range(n // 2)] + [2 * i + 1 for i in range(n // 2)]
    phases = [j * PERIOD_NS // max(1, n) for j in range(n)]
    n_ulaw, n_opus = len(ulaw), len(opus)

    rbuf = bytearray(2048)
    rview = memoryview(rbuf)
    latencies = array.array("q")
    received_window = [0, 0]  # by direction: 0 = towards the caller, 1 = towards the PBX
    received_total = 0
    foreign = 0
    rtcp = 0
    late_2ms = 0
    max_lag = 0
    send_errors = 0

    start = mono() + 50_000_000
    window_start = start + int(spec["warmup"] * 1e9)
    window_end = window_start + int(spec["duration"] * 1e9)
    stop = window_end + int(spec["grace"] * 1e9)
    started_notified = ended_notified = False
    cpu_start = cpu_end = 0.0
    round_start = start
    nxt = 0
    k = 0
    while True:
        now = mono()
        if now >= stop:
            break
        # -- sends that are due; a generator that fell behind (a busy core) still stops in time
        # and receives between batches, so its own sockets do not overflow while it catches up
        batch = 0
        while True:
            due = round_start + phases[nxt]
            if due > now or now >= stop or batch == SEND_BATCH:
                break
            batch += 1
            j = order[nxt]
            lag = now - due
            if lag > 2_000_000 and window_start <= now < window_end:
                late_2ms += 1
                if lag > max_lag:
                    max_lag = lag
            kind = kinds[j]
            seq = (seq0[j] + k) & 0xFFFF
            ts = (ts0[j] + k * steps[j]) & 0xFFFFFFFF
            now = mono()
            try:
                if kind == KIND_MARKED:
                    buf = bufs[j]
                    pack_into(MARK_FORMAT, buf, 0, 0x80, pts[j], seq, ts, ssrcs[j], MARK, j, k, now)
                    sendto[j](buf, dests[j])
                elif kind == KIND_TONE:
                    sendto[j](
                        pack(">BBHII", 0x80, pts[j], seq, ts, ssrcs[j]) + ulaw[k % n_ulaw], dests[j]
                    )
                else:
                    sendto[j](
                        pack(">BBHII", 0x80, pts[j], seq, ts, ssrcs[j]) + opus[k % n_opus], dests[j]
                    )
            except OSError:
                send_errors += 1
            sendtimes[j].append(now)
            nxt += 1
            if nxt == n:
                nxt = 0
                k += 1
                round_start += PERIOD_NS
        # -- window edges: tell the parent, which reads the peer's CPU and memory
        if not started_notified and now >= window_start:
            started_notified = True
            times = os.times()
            cpu_start = times.user + times.system
            conn.send(("window-start", now))
        elif started_notified and not ended_notified and now >= window_end:
            ended_notified = True
            times = os.times()
            cpu_end = times.user + times.system
            conn.send(("window-end", now))
        # -- receive whatever is ready; sleep until the next send when nothing is
        gap = round_start + phases[nxt] - mono()
        # epoll rounds up to whole ms: sends go out in batches of up to ~1 ms; never spin
        timeout = 0.0 if gap <= 0 else min(gap, 5_000_000) / 1e9
        for fd, _ in epoll.poll(timeout):
            i = sock_fd[fd]
            try:
                size = recv_into[i](rbuf)
            except OSError:
                continue
            now = mono()
            received_total += 1
            if size < 12 or rbuf[0] >> 6 != 2:
                foreign += 1
                continue
            if 72 <= (rbuf[1] & 0x7F) <= 76:  # RTCP (200-204) on an RTP port
                rtcp += 1
                continue
            if recv_kind[i] == RECV_MARKED:
                b0 = rbuf[0]
                offset = 12 + 4 * (b0 & 0x0F)
                if b0 & 0x10:
                    offset += 4 + 4 * unpack_from(">H", rbuf, offset + 2)[0]
                if size < offset + 24 or rview[offset : offset + 4] != MARK:
                    foreign += 1
                    continue
                sent_at = unpack_from(">q", rbuf, offset + 12)[0]
            else:
                seq = unpack_from(">H", rbuf, 2)[0]
                if first_seq[i] < 0:
                    first_seq[i] = seq
                number = (seq - first_seq[i]) & 0xFFFF
                times_sent = sendtimes[i ^ 1]
                if number >= len(times_sent):
                    foreign += 1
                    continue
                sent_at = times_sent[number]
            if window_start <= sent_at < window_end:
                received_window[i & 1] += 1
                latencies.append(now - sent_at)
    epoll.close()
    for s in socks:  # drain what is left so the next run starts clean
        try:
            while s.recv_into(rbuf):
                pass
        except OSError:
            pass
    sent_window = [0, 0]
    for j in range(n):
        t = np.frombuffer(sendtimes[j], dtype=np.int64)
        # what socket j sent is received by j ^ 1: direction of the receiver
        sent_window[(j ^ 1) & 1] += int(np.count_nonzero((t >= window_start) & (t < window_end)))
    lat = np.frombuffer(latencies, dtype=np.int64) / 1000.0 if len(latencies) else np.zeros(1)
    duration = (window_end - window_start) / 1e9
    return {
        "sockets": n,
        "sent_window": sum(sent_window),
        "received_window": sum(received_window),
        "sent_by_direction": {"to_caller": sent_window[0], "to_pbx": sent_window[1]},
        "received_by_direction": {"to_caller": received_window[0], "to_pbx": received_window[1]},
        "received_total": received_total,
        "foreign": foreign,
        "rtcp": rtcp,
        "send_errors": send_errors,
        "send_rate": sum(sent_window) / duration,
        "late_sends_over_2ms": late_2ms,
        "max_send_lag_ms": max_lag / 1e6,
        "generator_cpu_fraction": (cpu_end - cpu_start) / duration,
        "latency_us": {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        },
    }


class Generator:
    """The parent's handle on the generator process."""

    def __init__(self, core: int = GENERATOR_CORE) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=generator_main, args=(child, core), name="rtp-load", daemon=True
        )
        self.process.start()
        _, self.opus_frames, self.opus_bytes = self.conn.recv()

    async def call(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return await self.recv()

    async def recv(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    def close(self) -> None:
        try:
            self.conn.send(("exit", None))
        except OSError:
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


# -- SDP helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Addresses:
    """Where the hosts are: the relay's media address, the caller legs' and the PBX legs' (all
    loopback here; benchmarks/kernel_relay.py puts them in network namespaces of their own)."""

    server: str = "127.0.0.1"
    caller: str = "127.0.0.1"
    pbx: str = "127.0.0.1"


LOOPBACK = Addresses()


def sdp(port: int, codecs: list[tuple[int, str]], session: int, host: str = "127.0.0.1") -> str:
    """A plain RTP/AVP audio description on `host`."""
    lines = [
        "v=0",
        f"o=bench {session} 1 IN IP4 {host}",
        "s=media_relay",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt, _ in codecs)}",
        *(f"a=rtpmap:{pt} {name}" for pt, name in codecs),
        "a=ptime:20",
        "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n"


PCMU = [(0, "PCMU/8000")]


@dataclass
class Media:
    """What an SDP says: where to send, and its codecs (payload type -> encoding/clock[/ch])."""

    host: str
    port: int
    codecs: dict[int, str]

    @classmethod
    def parse(cls, text: str) -> Media:
        host = "127.0.0.1"
        port = 0
        codecs: dict[int, str] = {}
        in_audio = False
        for line in text.replace("\r\n", "\n").split("\n"):
            if line.startswith("m="):
                in_audio = line.startswith("m=audio ")
                if in_audio:
                    parts = line.split()
                    port = int(parts[1])
                    for pt in parts[3:]:
                        if pt.isdigit() and int(pt) < 35:
                            codecs[int(pt)] = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000"}.get(
                                int(pt), pt
                            )
            elif line.startswith("c=IN IP4 "):
                host = line.split()[2]
            elif in_audio and (m := re.match(r"a=rtpmap:(\d+) (\S+)", line)):
                codecs[int(m.group(1))] = m.group(2)
        return cls(host, port, codecs)

    def find(self, name: str) -> int | None:
        for pt, codec in self.codecs.items():
            if codec.lower().startswith(name.lower() + "/"):
                return pt
        return None


@dataclass
class CallSetup:
    """One call's addresses: where the caller leg and the PBX leg send, the payload types."""

    caller_dest: tuple[str, int]
    pbx_dest: tuple[str, int]
    caller_pt: int = 0
    pbx_pt: int = 0


class SetupFailed(RuntimeError):
    pass


# -- omlmedia: the real server, our caller UA and our PBX UA -------------------------------------


@dataclass
class SipCall:
    index: int
    future: asyncio.Future[CallSetup]
    pbx_dest: tuple[str, int] | None = None
    pbx_pt: int = 0
    call: Any = None


class Omlmedia:
    """`omlmedia serve` pinned to core 0, reached as a caller and as the PBX of trunk `pbx`."""

    name = "omlmedia"
    rtp_ports = SERVER_RTP_PORTS

    def __init__(
        self, workdir: Path, profile: Path | None = None, addresses: Addresses = LOOPBACK
    ) -> None:
        self.workdir = workdir
        self.profile = profile
        self.addresses = addresses
        self.server: Any = None
        self.calls: dict[int, SipCall] = {}
        self.mode = "passthrough"
        self.gen_ports: list[int] = []
        self.refusals: list[str] = []
        self.pbx_offers: list[str] = []
        self._services: list[tuple[Any, Any]] = []

    @property
    def pid(self) -> int:
        assert self.server is not None
        return int(self.server.process.pid)

    async def start(self) -> None:
        from sip.endpoint import Endpoint
        from sip.service import SipService
        from sip.transport import SipTransports
        from sip.ua import UserAgent

        python_args: tuple[str, ...] = ("-m", "omlmedia")
        if self.profile is not None:
            python_args = ("-m", "cProfile", "-o", str(self.profile), *python_args)
        self.server = harness.start_server(
            self.workdir,
            t1=0.5,
            media_timeout=600,
            extra_args=("--log-level", "warning", "--rtp-ports", self.rtp_ports),
            python_args=python_args,
            core=SERVER_CORE,
        )
        self.sip_port = self.server.sip_port

        self.caller_transports = SipTransports()
        await self.caller_transports.start(host="127.0.0.1", udp_port=free_port())
        self.caller_ua = UserAgent(
            local_endpoints={"udp": self.caller_transports.local_endpoint("udp")},
            trusted_source=lambda ip: "server",
            user_agent="media_relay-caller",
        )
        self.caller = SipService(self.caller_ua, self.caller_transports, self._on_caller_event)
        self.pbx_transports = SipTransports()
        await self.pbx_transports.start(host="127.0.0.1", udp_port=self.server.pbx_port)
        self.pbx_ua = UserAgent(
            local_endpoints={"udp": Endpoint("udp", "127.0.0.1", self.server.pbx_port)},
            trusted_source=lambda ip: "server",
            user_agent="media_relay-pbx",
        )
        self.pbx = SipService(self.pbx_ua, self.pbx_transports, self._on_pbx_event)
        self._services = [
            (self.caller, self.caller_transports),
            (self.pbx, self.pbx_transports),
        ]

    async def stop(self) -> None:
        """Close our two UAs and stop the server (SIGTERM); safe to call twice."""
        services, self._services = self._services, []
        for service, transports in services:
            service.close()
            await transports.close()
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def status(self) -> dict[str, Any]:
        return dict(self.server.status())

    async def setup(self, count: int, ports: list[int], mode: str) -> list[CallSetup]:
        """Place `count` calls 9<n> through the server; ports[2i] caller, ports[2i+1] PBX."""
        from sip.endpoint import Endpoint
        from sip.message import URI, Address

        self.mode = mode
        self.gen_ports = ports
        self.calls = {}
        self.refusals = []
        self.pbx_offers = []
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(40)
        server = Endpoint("udp", "127.0.0.1", self.sip_port)

        async def place(i: int) -> CallSetup:
            async with limit:
                entry = SipCall(i, loop.create_future())
                self.calls[i] = entry
                number = f"{100000 + i}"
                body = sdp(ports[2 * i], PCMU, 1000 + i, self.addresses.caller).encode()

                def invite(now: float) -> None:
                    entry.call = self.caller_ua.send_invite(
                        destination=server,
                        request_uri=URI.parse(f"sip:9{number}@127.0.0.1:{self.sip_port}"),
                        from_address=Address.parse("<sip:bench@127.0.0.1>"),
                        to_address=Address.parse(f"<sip:9{number}@127.0.0.1:{self.sip_port}>"),
                        body=body,
                        now=now,
                    )
                    entry.call.app = entry

                self.caller.act(invite)
                return await asyncio.wait_for(entry.future, 15)

        results = await asyncio.gather(*(place(i) for i in range(count)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.teardown()
            reasons = sorted({str(f) or type(f).__name__ for f in failures})
            raise SetupFailed(f"{len(failures)}/{count} calls failed: {'; '.join(reasons)[:500]}")
        return [r for r in results if isinstance(r, CallSetup)]

    async def teardown(self) -> None:
        for entry in self.calls.values():
            call = entry.call
            if call is not None:
                self.caller.act(partial(self.caller_ua.hangup, call))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.caller_ua.call_count == 0 and self.pbx_ua.call_count == 0:
                break
            await asyncio.sleep(0.1)
        for _ in range(100):
            if self.status()["sip"]["calls"] == 0:
                break
            await asyncio.sleep(0.1)
        self.calls = {}

    def _on_caller_event(self, event: Any) -> None:
        from sip.ua import CallEnded, CallProgress

        entry = getattr(getattr(event, "call", None), "app", None)
        if not isinstance(entry, SipCall) or entry.future.done():
            return
        if isinstance(event, CallProgress):
            status = event.response.status
            if status >= 300:
                entry.future.set_exception(
                    SetupFailed(f"server answered {status} {event.response.reason}")
                )
            elif status >= 200:
                answer = Media.parse(event.response.body.decode(errors="replace"))
                pt = answer.find("PCMU")
                if entry.pbx_dest is None or pt is None:
                    entry.future.set_exception(SetupFailed("200 OK without a usable answer"))
                    return
                entry.future.set_result(
                    CallSetup((answer.host, answer.port), entry.pbx_dest, pt, entry.pbx_pt)
                )
        elif isinstance(event, CallEnded):
            entry.future.set_exception(SetupFailed(f"call ended: {event.cause}"))

    def _on_pbx_event(self, event: Any) -> None:
        from sip.ua import IncomingCall

        if not isinstance(event, IncomingCall):
            return
        call = event.call
        user = call.request_user
        index = int(user) - 100000 if user.isdigit() else -1
        entry = self.calls.get(index)
        if entry is None:
            self.pbx.act(lambda now: self.pbx_ua.reject(call, 404, now))
            return
        offer = Media.parse(call.remote_sdp.decode(errors="replace"))
        port = self.gen_ports[2 * index + 1]
        if self.mode == "transcode":
            pt = offer.find("opus")
            if pt is None:
                self.pbx_offers.append(" ".join(sorted(set(offer.codecs.values()))))
                self.pbx.act(lambda now: self.pbx_ua.reject(call, 488, now))
                return
            answer = sdp(port, [(pt, "opus/48000/2")], 5000 + index, self.addresses.pbx)
        else:
            pt = offer.find("PCMU")
            if pt is None:
                self.pbx.act(lambda now: self.pbx_ua.reject(call, 488, now))
                return
            answer = sdp(port, [(pt, "PCMU/8000")], 5000 + index, self.addresses.pbx)
        entry.pbx_dest = (offer.host, offer.port)
        entry.pbx_pt = pt
        body = answer.encode()
        self.pbx.act(lambda now: self.pbx_ua.answer(call, body, now))


# -- rtpengine -----------------------------------------------------------------------------------


class Rtpengine:
    """rtpengine (userspace) on core 0, driven over ng."""

    name = "rtpengine"

    def __init__(self, workdir: Path, addresses: Addresses = LOOPBACK) -> None:
        self.addresses = addresses
        self.binary = shutil.which("rtpengine")
        if self.binary is None:
            raise FileNotFoundError("rtpengine is not installed (Debian: rtpengine-daemon)")
        self.ng_port = free_port()
        self.workdir = workdir
        self.calls: list[tuple[str, str]] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def command(self) -> list[str]:
        return pinned([
            str(self.binary), "--config-file=none",
            "--foreground", "--table=-1", f"--interface={self.addresses.server}",
            f"--listen-ng=127.0.0.1:{self.ng_port}", "--num-threads=1",
            f"--port-min={RTPENGINE_PORTS[0]}", f"--port-max={RTPENGINE_PORTS[1]}",
            "--delete-delay=0", "--log-stderr", "--log-level=4",
        ], SERVER_CORE)  # fmt: skip

    def start(self) -> None:
        log_path = self.workdir / "rtpengine.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        self.ng = NgClient(("127.0.0.1", self.ng_port), timeout=0.5, retries=10)
        try:
            self.ready_s = self.ng.wait_ready(READY_SECONDS, self.process.poll)
        except NgNotReady as exc:
            self.kill()
            raise RuntimeError(
                f"{exc}\n  command: {' '.join(self.command)}\n  {log_path}: "
                + (log_path.read_text(errors="replace")[-2000:] or "(empty)")
            ) from exc
        self.version = (
            subprocess.run(
                [str(self.binary), "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            or subprocess.run(
                [str(self.binary), "--version"], capture_output=True, text=True, check=False
            ).stderr.strip()
        )

    def kill(self) -> None:
        """SIGTERM, SIGKILL after 10 s; the ng socket closed. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "ng"):
            self.ng.close()

    async def stop(self) -> None:
        self.kill()

    async def setup(self, count: int, ports: list[int], mode: str) -> list[CallSetup]:
        common = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        setups = []
        self.calls = []
        for i in range(count):
            call_id, from_tag, to_tag = f"bench-{secrets.token_hex(6)}", f"f{i}", f"t{i}"
            options: dict[str, Any] = dict(common)
            if mode == "transcode":
                options["codec"] = {"transcode": ["opus/48000/2"], "mask": ["PCMU"]}
            offer = self.ng.offer(
                call_id,
                from_tag,
                sdp(ports[2 * i], PCMU, 1000 + i, self.addresses.caller),
                **options,
            )
            self.calls.append((call_id, from_tag))
            towards_pbx = Media.parse(offer["sdp"])
            pt = towards_pbx.find("opus" if mode == "transcode" else "PCMU")
            if pt is None:
                raise SetupFailed(f"rtpengine offered {towards_pbx.codecs} to the PBX")
            name = "opus/48000/2" if mode == "transcode" else "PCMU/8000"
            answer = self.ng.answer(
                call_id,
                from_tag,
                to_tag,
                sdp(ports[2 * i + 1], [(pt, name)], 5000 + i, self.addresses.pbx),
                **common,
            )
            towards_caller = Media.parse(answer["sdp"])
            caller_pt = towards_caller.find("PCMU")
            if caller_pt is None:
                raise SetupFailed(f"rtpengine answered {towards_caller.codecs} to the caller")
            setups.append(
                CallSetup(
                    (towards_caller.host, towards_caller.port),
                    (towards_pbx.host, towards_pbx.port),
                    caller_pt,
                    pt,
                )
            )
        return setups

    async def teardown(self) -> None:
        for call_id, from_tag in self.calls:
            try:
                self.ng.delete(call_id, from_tag)
            except (RuntimeError, TimeoutError):
                pass
        self.calls = []


# -- measurement ---------------------------------------------------------------------------------


@dataclass
class Step:
    target: str
    mode: str
    calls: int
    ok: bool = True
    error: str = ""
    packets: int = 0  # relayed in the window (received by the generator)
    sent: int = 0
    loss_pct: float = 0.0
    cpu_seconds: float = 0.0
    cpu_fraction: float = 0.0
    cpu_us_per_packet: float = 0.0
    rss_kib: int = 0
    other_load_on_core: float = 0.0  # busy fraction of the peer's core not spent by the peer
    softirq_s: tuple[float, float] = (0.0, 0.0)  # softirq time of the server's, generator's core
    receive_cpu_s: float = 0.0  # the server host's receive threads (threaded NAPI), if any
    latency_us: dict[str, float] = field(default_factory=dict)
    added_latency_us: dict[str, float] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)


async def measure(
    gen: Generator,
    target: Omlmedia | Rtpengine | None,
    mode: str,
    calls: int,
    args: argparse.Namespace,
    addresses: Addresses = LOOPBACK,
    receive_pids: tuple[int, ...] = (),
) -> Step:
    """One step: bind, set up `calls` calls on `target` (None: direct, the generator's legs
    sending to each other), load, tear down. `receive_pids`: threads that do the server host's
    receive work (threaded NAPI), whose CPU over the window goes into `Step.receive_cpu_s`."""
    name = target.name if target is not None else "direct"
    step = Step(name, mode, calls)
    ports: list[int] = await gen.call("bind", 2 * calls)
    if target is None:
        setups = [
            CallSetup((addresses.pbx, ports[2 * i + 1]), (addresses.caller, ports[2 * i]))
            for i in range(calls)
        ]
    else:
        try:
            setups = await target.setup(calls, ports, mode)
        except (SetupFailed, RuntimeError, TimeoutError) as exc:
            step.ok = False
            step.error = str(exc)
            await gen.call("close")
            return step
    dests: list[tuple[str, int]] = []
    send: list[tuple[int, int]] = []
    recv: list[int] = []
    for s in setups:
        dests += [s.caller_dest, s.pbx_dest]
        if mode == "transcode" and target is not None:
            send += [(KIND_TONE, s.caller_pt), (KIND_OPUS, s.pbx_pt)]
            recv += [RECV_ORDER, RECV_ORDER]
        else:
            send += [(KIND_MARKED, s.caller_pt), (KIND_MARKED, s.pbx_pt)]
            recv += [RECV_MARKED, RECV_MARKED]
    spec = {
        "dests": dests,
        "send": send,
        "recv": recv,
        "warmup": args.warmup,
        "duration": args.duration,
        "grace": 0.3,
    }
    gen.conn.send(("run", spec))
    window = Window(target.pid if target is not None else None)
    receive = [0.0, 0.0]
    while True:
        message = await gen.recv()
        if isinstance(message, dict):
            result = message
            break
        if message[0] == "window-start":
            window.start()
            receive[0] = sum(map(cpu_seconds, receive_pids))
        elif message[0] == "window-end":
            window.end()
            receive[1] = sum(map(cpu_seconds, receive_pids))
    if target is not None:
        await target.teardown()
    await gen.call("close")
    step.generator = {k: v for k, v in result.items() if k != "latency_us"}
    step.packets = result["received_window"]
    step.sent = result["sent_window"]
    step.loss_pct = 100.0 * (1 - step.packets / step.sent) if step.sent else 100.0
    step.latency_us = result["latency_us"]
    step.cpu_seconds = window.cpu_seconds
    step.cpu_fraction = step.cpu_seconds / args.duration
    step.cpu_us_per_packet = 1e6 * step.cpu_seconds / step.packets if step.packets else math.nan
    step.rss_kib = max(window.rss_kib_at_start, window.rss_kib)
    step.other_load_on_core = window.other_load_on_server_core(args.duration)
    step.softirq_s = window.softirq_seconds
    step.receive_cpu_s = receive[1] - receive[0]
    return step


def print_step(step: Step) -> None:
    if not step.ok:
        print(
            f"  {step.target:>9} {step.mode:>11} N={step.calls:<4} FAILED: {step.error}", flush=True
        )
        return
    lat = step.latency_us
    print(
        f"  {step.target:>9} {step.mode:>11} N={step.calls:<4} "
        f"{step.packets:>7} pkts  loss {step.loss_pct:6.3f} %  "
        f"CPU {100 * step.cpu_fraction:5.1f} % = {fmt(step.cpu_us_per_packet, '.2f')} us/pkt  "
        f"lat p50 {lat['p50']:7.0f} p99 {lat['p99']:7.0f} us  RSS {step.rss_kib} KiB  "
        f"gen CPU {100 * step.generator['generator_cpu_fraction']:.0f} %, "
        f"{step.generator['send_rate']:.0f} pkt/s, "
        f"late>2ms {step.generator['late_sends_over_2ms']}; "
        f"other load on core {SERVER_CORE}: {100 * step.other_load_on_core:.0f} %",
        flush=True,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ramp = [int(n) for n in args.calls.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="media_relay-"))
    pin_self(GENERATOR_CORE)
    gen = Generator()
    ours = Omlmedia(workdir / "omlmedia")
    peer: Rtpengine | None = None if args.skip_rtpengine else Rtpengine(workdir)
    steps: list[Step] = []
    baselines: dict[int, Step] = {}
    notes: list[str] = []
    try:
        await ours.start()
        if peer is not None:
            peer.start()
        print(
            f"work dir {workdir}; omlmedia pid {ours.pid}"
            + (f", rtpengine pid {peer.pid} ({peer.version})" if peer else ""),
            flush=True,
        )
        rss_idle = rss_kib(ours.pid)
        for mode in modes:
            print(f"{mode}:", flush=True)
            for n in ramp:
                if n not in baselines:
                    baselines[n] = await measure(gen, None, "passthrough", n, args)
                    print_step(baselines[n])
                base = baselines[n]
                row = []
                for target in (ours, peer):
                    if target is None:
                        continue
                    step = await measure(gen, target, mode, n, args)
                    if step.ok:
                        step.added_latency_us = {
                            q: step.latency_us[q] - base.latency_us[q] for q in ("p50", "p99")
                        }
                    steps.append(step)
                    row.append(step)
                    print_step(step)
                    if (
                        target is ours
                        and not step.ok
                        and mode == "transcode"
                        and ours.pbx_offers
                        and not any(note.startswith("transcode:") for note in notes)
                    ):
                        notes.append(
                            "transcode: omlmedia offered the PBX only "
                            f"[{ours.pbx_offers[0]}] (no opus), so the PBX refused with 488: "
                            "transcoding is not wired in this server build"
                        )
                expected = 2 * n * 1e9 / PERIOD_NS
                gen_saturated = (
                    base.generator["send_rate"] < 0.99 * expected
                    or base.generator["generator_cpu_fraction"] > 0.9
                    or base.loss_pct > 0.1
                )
                if gen_saturated:
                    notes.append(
                        f"the load generator fell behind at N={n} on its own (direct loopback: "
                        f"{base.generator['send_rate']:.0f} pkt/s sent, loss {base.loss_pct:.3f} "
                        f"%, CPU {100 * base.generator['generator_cpu_fraction']:.0f} %): "
                        "the ramp stops there"
                    )
                    break
                ours_step = next((s for s in row if s.target == "omlmedia"), None)
                lead = ours_step if ours_step is not None and ours_step.ok else None
                if lead is None:
                    lead = next((s for s in row if s.ok), None)
                if lead is None or lead.loss_pct > 0.1:
                    break
            print(flush=True)
        profile = None
        if args.profile:
            await ours.stop()  # the profiled server takes the same RTP port range
            profile = await run_profile(gen, args, workdir)
    finally:
        await ours.stop()
        if peer is not None:
            await peer.stop()
        gen.close()
    return summarize(args, steps, baselines, notes, rss_idle, profile, peer)


async def run_profile(gen: Generator, args: argparse.Namespace, workdir: Path) -> list[str]:
    """One passthrough step with the server under cProfile; the top functions by own time."""
    profile_path = workdir / "omlmedia.prof"
    profiled = Omlmedia(workdir / "profiled", profile=profile_path)
    await profiled.start()
    try:
        step = await measure(gen, profiled, "passthrough", args.profile_calls, args)
        print("profiled run (cProfile overhead included):", flush=True)
        print_step(step)
    finally:
        await profiled.stop()
    if not profile_path.exists():
        return ["no profile written (the server did not exit cleanly on SIGTERM)"]
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(profile_path), stream=out)
    stats.sort_stats("tottime").print_stats(20)
    text = out.getvalue()
    print(text, flush=True)
    return text.splitlines()


def summarize(
    args: argparse.Namespace,
    steps: list[Step],
    baselines: dict[int, Step],
    notes: list[str],
    rss_idle: int,
    profile: list[str] | None,
    peer: Rtpengine | None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "targets": TARGETS,
        "baseline_direct": [asdict(s) for s in baselines.values()],
        "steps": [asdict(s) for s in steps],
        "rtpengine_command": " ".join(peer.command) if peer else None,
        "modes": {},
        "notes": notes,
        "omlmedia_idle_rss_kib": rss_idle,
    }
    print("=" * 100)
    header = (
        f"{'mode':>11} {'N':>4} | {'us/pkt ours':>11} {'rtpengine':>9} {'ratio':>6} | "
        f"{'loss% ours':>10} {'rtpe':>6} | {'added lat p50/p99 us ours':>25} {'rtpe':>13} | "
        f"{'RSS MiB':>7}"
    )
    for mode in dict.fromkeys(s.mode for s in steps):
        print(header)
        rows = [s for s in steps if s.mode == mode]
        for n in dict.fromkeys(s.calls for s in rows):
            o = next((s for s in rows if s.calls == n and s.target == "omlmedia"), None)
            p = next((s for s in rows if s.calls == n and s.target == "rtpengine"), None)
            ratio = (
                o.cpu_us_per_packet / p.cpu_us_per_packet
                if o and p and o.ok and p.ok and p.cpu_us_per_packet > 0
                else None
            )

            def lat(s: Step | None) -> str:
                if s is None or not s.ok:
                    return "-"
                a = s.added_latency_us
                return f"{a.get('p50', math.nan):.0f}/{a.get('p99', math.nan):.0f}"

            print(
                f"{mode:>11} {n:>4} | "
                f"{fmt(o.cpu_us_per_packet if o and o.ok else None, '.2f'):>11} "
                f"{fmt(p.cpu_us_per_packet if p and p.ok else None, '.2f'):>9} "
                f"{fmt(ratio, '.2f'):>6} | "
                f"{fmt(o.loss_pct if o and o.ok else None, '.3f'):>10} "
                f"{fmt(p.loss_pct if p and p.ok else None, '.3f'):>6} | "
                f"{lat(o):>25} {lat(p):>13} | "
                f"{fmt(o.rss_kib / 1024 if o and o.ok else None, '.1f'):>7}"
            )
        summary: dict[str, Any] = {}
        for target in ("omlmedia", "rtpengine"):
            good = [s for s in rows if s.target == target and s.ok and s.loss_pct < 0.1]
            summary[f"{target}_max_calls_loss_below_0.1pct"] = max(
                (s.calls for s in good), default=None
            )
            if good:
                best = max(good, key=lambda s: s.calls)
                summary[f"{target}_cpu_us_per_packet_at_max"] = best.cpu_us_per_packet
                summary[f"{target}_calls_per_core_projected"] = (
                    best.calls / best.cpu_fraction if best.cpu_fraction > 0 else None
                )
            # CPU alone (whatever the loss): a call relays 100 packets/s (50 each way)
            ran = [s for s in rows if s.target == target and s.ok and s.packets]
            if ran:
                basis = (
                    max(good, key=lambda s: s.calls) if good else min(ran, key=lambda s: s.calls)
                )
                summary[f"{target}_calls_per_core_from_cpu_per_packet"] = 1e6 / (
                    100 * basis.cpu_us_per_packet
                )
        ours_ok = [s for s in rows if s.target == "omlmedia" and s.ok]
        slope = slope_kib_per_call([(s.calls, s.rss_kib) for s in ours_ok])
        summary["omlmedia_rss_kib_per_call"] = slope
        pairs = [
            (o, p)
            for o in ours_ok
            for p in rows
            if p.target == "rtpengine" and p.ok and p.calls == o.calls
        ]
        ratios = [o.cpu_us_per_packet / p.cpu_us_per_packet for o, p in pairs]
        summary["cpu_ratio_by_n"] = {o.calls: r for (o, _), r in zip(pairs, ratios, strict=True)}
        report["modes"][mode] = summary
        print(
            f"{mode}: largest N with loss < 0.1 %: omlmedia "
            f"{summary['omlmedia_max_calls_loss_below_0.1pct']}, rtpengine "
            f"{summary['rtpengine_max_calls_loss_below_0.1pct']}; omlmedia calls per core "
            "(projected at 100 % CPU) "
            f"{fmt(summary.get('omlmedia_calls_per_core_projected'), '.0f')}"
            f", rtpengine {fmt(summary.get('rtpengine_calls_per_core_projected'), '.0f')}; "
            f"omlmedia RSS slope {fmt(slope, '.0f')} KiB/call"
        )
        if mode == "passthrough":
            worst_p99 = max((s.added_latency_us.get("p99", 0) for s in ours_ok), default=None)
            print(
                f"  targets: CPU/pkt ratio <= {TARGETS['passthrough_cpu_ratio_max']} "
                f"(got {', '.join(f'{r:.2f}' for r in ratios) or '-'}); added latency p99 <= "
                f"{TARGETS['passthrough_latency_p99_ms_max']} ms (worst "
                f"{fmt(worst_p99 / 1000 if worst_p99 is not None else None, '.2f')} ms); "
                f"<= {TARGETS['memory_per_call_kib_max']} KiB/call (got {fmt(slope, '.0f')})"
            )
        else:
            print(
                f"  target: >= {TARGETS['transcoded_calls_per_core_min']} transcoded calls per "
                f"core (omlmedia projected "
                f"{fmt(summary.get('omlmedia_calls_per_core_projected'), '.0f')}; from CPU per "
                "packet alone: omlmedia "
                f"{fmt(summary.get('omlmedia_calls_per_core_from_cpu_per_packet'), '.0f')}, "
                "rtpengine "
                f"{fmt(summary.get('rtpengine_calls_per_core_from_cpu_per_packet'), '.0f')}); "
                "latency in this mode is matched by packet order (approximate)"
            )
        print()
    base = [
        f"N={s.calls}: p50 {s.latency_us['p50']:.0f} us, p99 {s.latency_us['p99']:.0f} us, "
        f"gen CPU {100 * s.generator['generator_cpu_fraction']:.0f} %"
        for s in baselines.values()
    ]
    print("generator baseline (direct loopback, subtracted above): " + "; ".join(base))
    for note in notes:
        print("note:", note)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="passthrough,transcode")
    parser.add_argument("--calls", default="25,50,100,200,400", help="the ramp of N")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window (s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="load before the window (s)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-rtpengine", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the ramp, one passthrough step with the server under cProfile",
    )
    parser.add_argument("--profile-calls", type=int, default=100)
    args = parser.parse_args()
    for mode in args.modes.split(","):
        if mode.strip() not in ("passthrough", "transcode"):
            parser.error(f"unknown mode {mode!r}")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
