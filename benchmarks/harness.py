"""Running the server under measurement: free ports, its configuration, `omlmedia serve` as a
subprocess pinned to a core, sipp as a peer, the load generator's child process, and the figures
every benchmark prints. What is read from /proc (CPU, memory, pinning) is in `procstat`.

The interop tests start their servers with the same code (tests/interop/harness.py adds only what
is pytest's: a failure to start fails the test), so a benchmark measures the server the tests check.
Nothing here imports from tests/.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.procstat import Window, pin_all, pin_self, pinned

ROOT = Path(__file__).resolve().parents[1]
API_TOKEN = "interop-test-token"
DEMO_PASSWORD = "interop-secret"


RTP_AREA = range(40000, 60000)
"""Where servers started here take their RTP ports (`RTP_BLOCKS` blocks of 1000, and the
in-process test pools' ranges): a port handed out by `free_port` is never in it, or a server
binding its RTP later could take it from under the program it was given to (a sipp media port
inside a server's block failed a CI run: "Unable to bind video RTP socket ... errno = 98")."""


def listen_ports() -> range:
    """Where `free_port` looks: below the kernel's ephemeral range (``ip_local_port_range``),
    from which the kernel gives a port to every outgoing connection and every bind to port 0 of
    any process: a port found free there can be taken by another process's connection between
    the check and the server's own bind (seen in CI: a node's HTTP port, errno 98, while other
    benchmark sections were starting); and below 20000, where the relay benchmarks put their
    servers' and rtpengine's RTP ranges (20000-29999) and sipp's media (30000 and up)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(min(low, 20000), 10008))


_given: deque[int] = deque(maxlen=1024)
"""The ports `free_port` gave last in this process: not given again while a server they went
to may not have bound them yet (two nodes started at once once got the same, and a node's SIP
port, picked apart from its other ports, was once also its TLS port)."""
_giving = threading.Lock()


def free_port(*, udp_and_tcp: bool = True, pair: bool = False) -> int:
    """A port free on 127.0.0.1 for UDP and TCP, outside `RTP_AREA` and the kernel's ephemeral
    range (`listen_ports`), picked at random so that processes looking at once rarely pick the
    same, and none of the last 1024 this process gave (`_given`); with `pair` an even one with
    the next three free too (sipp's ``-mp``: audio RTP and RTCP, then video's two)."""
    with _giving:
        port = _free_port(udp_and_tcp, pair)
        _given.extend(range(port, port + 4) if pair else (port,))
        return port


def _free_port(udp_and_tcp: bool, pair: bool) -> int:
    area = listen_ports()
    for _ in range(1000):
        port = random.randrange(area.start, area.stop - 3)
        if pair and port % 2:
            port -= 1
        ports = list(range(port, port + 4)) if pair else [port]
        if any(p in RTP_AREA or p in _given for p in ports):
            continue
        held: list[socket.socket] = []
        try:
            for p in ports:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(u)
                u.bind(("127.0.0.1", p))
                if udp_and_tcp:
                    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    held.append(t)
                    t.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return port
    raise RuntimeError("no free port")


# -- the configuration ---------------------------------------------------------------------------


CARRIER_TRUNK = """
# A carrier that wants OPTIONS pings and a registration (tests/interop/test_trunk_upkeep.py).
[[trunks]]
name = "carrier"
host = "127.0.0.1"
port = {port}
qualify_interval = 1.0
register = true
register_expires = 60
username = "omlmedia"
password = "carrier-secret"

"""


def server_config(
    data_dir: Path,
    ports: Mapping[str, int],
    t1: float = 0.1,
    carrier: bool = False,
    media_timeout: float = 30.0,
) -> str:
    """A configuration like the demo's, with RFC timers short enough for tests to wait out.

    `ports` names `sip`, `tls`, `http`, `pbx` (the trunk's peer), `carrier` (with `carrier`) and
    `rtp_low`, the first of 999 RTP ports."""
    from omlmedia.config import digest_ha1
    from webrtc.accounts import hash_password

    md5, sha256 = digest_ha1("demo", "omlmedia", DEMO_PASSWORD)
    token_sha = hashlib.sha256(API_TOKEN.encode()).hexdigest()
    carrier_trunk = CARRIER_TRUNK.format(port=ports["carrier"]) if carrier else ""
    agent_hash = hash_password(DEMO_PASSWORD, n=2**12)
    return f"""
[server]
listen = ["127.0.0.1"]
sip_port = {ports["sip"]}
sip_tls_port = {ports["tls"]}
http_port = {ports["http"]}
rtp_port_range = [{ports["rtp_low"]}, {ports["rtp_low"] + 998}]
data_dir = "{data_dir}"
log_level = "info"

[sip]
realm = "omlmedia"
t1 = {t1}
t4 = 1.0
# sipp 3.6 answers only the first challenge and knows only MD5.
digest_algorithms = ["MD5", "SHA-256"]

[media]
timeout = {media_timeout}

[security]
rate_limit_requests = 50
rate_limit_window = 1.0
ban_time = 5.0

[api]
token_sha256 = "{token_sha}"

[[trunks]]
name = "pbx"
host = "127.0.0.1"
port = {ports["pbx"]}
trusted_sources = ["127.0.0.1/32"]
codecs = ["PCMU", "PCMA", "G722", "opus", "telephone-event"]
# Used only when the PBX challenges our INVITEs (tests/interop/test_trunk.py).
username = "omlmedia"
password = "pbx-secret"
# The PBX (and every sipp on 127.0.0.1) calls out through itself: 9<number>, REFER to 92000.
allowed_targets = ["*"]
# SRTP callers on 127.0.0.1 come over UDP as this trunk; on loopback the keys never leave the host.
allow_sdes_over_udp = true

{carrier_trunk}[[users]]
name = "demo"
ha1_md5 = "{md5}"
ha1_sha256 = "{sha256}"
allowed_targets = ["*"]

[[routes]]
user = "echo"
target = "echo"

[[routes]]
user = "moh"
target = "moh"

[[routes]]
user = "record"
target = "record"

[[routes]]
user = "dtmf"
target = "dtmf"

[[routes]]
user = "busy"
target = "busy"

[[routes]]
user = "reject"
target = "reject"

[[routes]]
pattern = "^9(.+)$"
target = "trunk:pbx"
strip = 1

[[routes]]
pattern = "^agent-(.+)$"
target = "agent"
strip = 6

[[routes]]
pattern = "^conf-(.+)$"
target = "conference"
strip = 5

[[routes]]
user = "support"
target = "campaign:support"

[[routes]]
user = "sales"
target = "queue:sales"

[[routes]]
user = "billing"
target = "queue:billing"

[queues.support]
strategy = "rrmemory"
members = ["agent1", "agent2"]
ring_timeout = 15
wrapup = 1

# The supervisor page's test: one caller waiting turns the figure amber, two red.
[wallboard.thresholds.support]
waiting = [1, 2]

[queues.sales]
strategy = "ringall"
members = ["agent2"]
max_wait = 4
overflow = {{hangup = "goodbye"}}

[queues.billing]
strategy = "ringall"
members = ["agent2"]
max_wait = 2
overflow = {{queue = "support"}}

[[campaigns]]
name = "support"
queue = "support"
recording = true
dispositions = ["solved", "escalated"]
url = "https://crm.example/customer?phone={{caller}}"

[webrtc]
reconnect_grace = 5
web_targets = ["agent-agent2"]

[[agents]]
name = "agent1"
display_name = "Agent One"
password_hash = "{agent_hash}"

[[agents]]
name = "agent2"
display_name = "Agent Two"
password_hash = "{agent_hash}"
"""


# -- the server ----------------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """`omlmedia serve` exited at start or did not become ready; the message ends with its log."""


@dataclass
class RunningServer:
    """An `omlmedia serve` subprocess and how to reach it."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    workdir: Path
    rtp_claim: socket.socket | None = None
    """The claim on the server's block of RTP ports (see `_claim_rtp_block`), given up at stop."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def sip_port(self) -> int:
        return self.ports["sip"]

    @property
    def tls_port(self) -> int:
        return self.ports["tls"]

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    @property
    def pbx_port(self) -> int:
        return self.ports["pbx"]

    @property
    def carrier_port(self) -> int:
        return self.ports["carrier"]

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.http_port}/api/v1/status",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def wait_idle(self, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until no transaction, dialog or call is left; return the last status."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while time.monotonic() < deadline:
            sip = status["sip"]
            if sip["transactions"] == 0 and sip["dialogs"] == 0 and sip["calls"] == 0:
                break
            time.sleep(0.2)
            status = self.status()
        return status

    def assert_alive(self) -> None:
        assert self.process.poll() is None, "the server died:\n" + self.log()[-4000:]

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 15 s; the exit status (-9 when it had to be killed)."""
        try:
            return self._stop()
        finally:
            if self.process.poll() is not None and self.rtp_claim is not None:
                self.rtp_claim.close()
                self.rtp_claim = None

    def _stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -9
        return self.process.returncode


_rtp_block = 0
RTP_BLOCKS = 20


def _claim_rtp_block() -> tuple[int, socket.socket | None]:
    """The first port of a block of 1000 RTP ports in 40000-59999 that no other server started
    by a harness on this machine holds, and the claim on it (an abstract Unix socket, named for
    the block: given up when closed or when this process ends, whatever ends it). Each server of
    this process starts looking at the next block; when all 20 are claimed (more than 20 servers
    at once), the next block unclaimed: the server then skips the ports another one holds."""
    global _rtp_block
    _rtp_block = (_rtp_block + 1) % RTP_BLOCKS
    start = (os.getpid() + _rtp_block) % RTP_BLOCKS
    for step in range(RTP_BLOCKS):
        low = 40000 + ((start + step) % RTP_BLOCKS) * 1000
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            claim.bind(f"\0omlmedia-test-rtp-{low}")
        except OSError:
            claim.close()
            continue
        return low, claim
    return 40000 + start * 1000, None


def _ports(rtp_low: int) -> dict[str, int]:
    """Free ports for the server and its peers, outside the RTP range from `rtp_low`."""
    ports = {"rtp_low": rtp_low}
    taken: set[int] = set()
    for name in ("sip", "tls", "http", "pbx", "carrier"):
        # baresip, as the PBX, listens on its SIP port and on the next one for TLS.
        pair = name == "pbx"
        port = free_port(pair=pair)
        while rtp_low <= port <= rtp_low + 999 or {port, port + 1} & taken:
            port = free_port(pair=pair)
        ports[name] = port
        taken |= {port, port + 1} if pair else {port}
    return ports


def start_server(
    workdir: Path,
    *,
    t1: float = 0.1,
    media_timeout: float = 30.0,
    carrier: bool = False,
    edit_config: Callable[[str], str] | None = None,
    extra_args: Sequence[str] = (),
    python_args: Sequence[str] = ("-m", "omlmedia"),
    env: Mapping[str, str] | None = None,
    core: int | None = None,
    rtp_low: int | None = None,
    timeout: float = 60.0,
) -> RunningServer:
    """Start `omlmedia serve` of this tree on free ports and wait until it logs that it is ready.

    The configuration is `server_config`, passed through `edit_config` when given; `extra_args`
    follow ``serve --config omlmedia.toml``. `python_args` say how Python runs the command line
    (``-c CODE`` for a server with probes, ``-m cProfile -o FILE -m omlmedia`` to profile it).
    With `core`, the server starts on that core and all its threads stay there. Raises
    `ServerStartError` when it exits or is not ready within `timeout` seconds."""
    claim = None
    if rtp_low is None:
        rtp_low, claim = _claim_rtp_block()
    ports = _ports(rtp_low)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "omlmedia.toml"
    text = server_config(
        workdir / "data", ports, t1=t1, carrier=carrier, media_timeout=media_timeout
    )
    config.write_text(edit_config(text) if edit_config is not None else text)
    command = [sys.executable, *python_args, "serve", "--config", str(config), *extra_args]
    server_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}  # this tree's code
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            pinned(command, core), stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=server_env
        )
    server = RunningServer(process, ports, workdir, claim)
    deadline = time.monotonic() + timeout
    while "omlmedia ready" not in server.log():
        if process.poll() is not None:
            server.stop()  # gives up the claim
            raise ServerStartError(
                f"omlmedia serve exited at start (status {process.returncode}):\n"
                + server.log()[-4000:]
            )
        if time.monotonic() > deadline:
            server.stop()
            raise ServerStartError(
                f"omlmedia serve was not ready in {timeout:g} s:\n" + server.log()[-4000:]
            )
        time.sleep(0.1)
    if core is not None:
        pin_all(server.pid, core)
    return server


# -- sipp ----------------------------------------------------------------------------------------


@dataclass
class SippResult:
    """What a sipp run ended with: its exit status and its last statistics row."""

    returncode: int
    stats: dict[str, str]
    output: str
    errors: str

    def count(self, name: str) -> int:
        return int(self.stats.get(f"{name}(C)", "0") or 0)


def run_sipp(
    args: list[str],
    workdir: Path,
    timeout: float = 120.0,
    name: str = "sipp",
    core: int | None = None,
) -> SippResult:
    """Run sipp in the foreground (never -bg) with statistics, and collect the outcome. Raises
    FileNotFoundError when sipp is not installed and TimeoutError when it does not finish."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise FileNotFoundError("sipp is not installed (Debian: sip-tester)")
    stats = workdir / f"{name}-stats.csv"
    errors = workdir / f"{name}-errors.log"
    for old in (stats, errors):
        old.unlink(missing_ok=True)
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to("/usr/share/sip-tester")
    command = [
        sipp,
        *args,
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stats),
        "-fd",
        "1",
        "-trace_err",
        "-error_file",
        str(errors),
    ]
    try:
        completed = subprocess.run(
            pinned(command, core), cwd=workdir, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(
            f"sipp did not finish in {timeout} s: {' '.join(command)}\n{exc.stdout!r}"
        ) from None
    rows: list[dict[str, str]] = []
    if stats.exists():
        with stats.open() as f:
            rows = list(csv.DictReader(f, delimiter=";"))
    return SippResult(
        completed.returncode,
        rows[-1] if rows else {},
        completed.stdout.decode(errors="replace")[-3000:],
        errors.read_text(errors="replace")[-3000:] if errors.exists() else "",
    )


# -- the load generator's process ----------------------------------------------------------------


def run_generator(
    conn: Connection, core: int | None, main: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
) -> None:
    """A generator child process's body: pin it to `core`, run `main()` on uvloop (when
    installed) and send its result dict, or ``{"error": ...}`` for whatever ended it."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    if core is not None:
        pin_self(core)
    factory = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(main())
    except BaseException as exc:  # report anything: the parent prints it as a failed step
        conn.send({"error": f"{type(exc).__name__}: {exc}"[:2000]})
        return
    conn.send(result)


@dataclass
class GeneratorRun:
    """One load generator run against a server: the generator's result dict (``"error"`` in it
    when the run failed), the server's measurement window and, when asked, its py-spy profile."""

    result: dict[str, Any]
    window: Window
    profile: list[str]


def drive_generator(
    server: RunningServer,
    target: Callable[[Connection, dict[str, Any]], None],
    spec: dict[str, Any],
    *,
    timeout: float,
    label: str,
    profile_seconds: float | None = None,
    profile_out: Path | None = None,
) -> GeneratorRun:
    """Run `target(conn, spec)` in a spawned child process until it sends its result dict; read
    the server's window at its ``("window-start",)`` and ``("window-end",)`` messages (py-spying
    the server over the window when `profile_seconds` is given), print its ``("progress", text)``
    messages after `label`; then stop the generator and the server. A generator or server that
    dies, or a run longer than `timeout` s, gives an ``"error"`` result."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(child, spec), daemon=True)
    process.start()
    window = Window(server.pid)
    result: dict[str, Any] = {}
    spy: subprocess.Popen[bytes] | None = None
    out = profile_out or server.workdir / "pyspy.txt"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not parent.poll(1.0):
                if not process.is_alive():
                    raise RuntimeError("the generator died")
                if server.process.poll() is not None:
                    raise RuntimeError("the server died:\n" + server.log()[-2000:])
                continue
            message = parent.recv()
            if isinstance(message, dict):
                result = message
                break
            if message[0] == "window-start":
                window.start()
                if profile_seconds is not None:
                    spy = start_py_spy(server.pid, profile_seconds, out)
            elif message[0] == "window-end":
                window.end()
            elif message[0] == "progress":
                print(f"    [{label}] {message[1]}", flush=True)
        else:
            raise RuntimeError("the generator did not finish in time")
    except RuntimeError as exc:
        result = {"error": str(exc)[-800:]}
    finally:
        if spy is not None:
            try:
                spy.wait(timeout=(profile_seconds or 0) + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
        process.join(10)
        if process.is_alive():
            process.kill()
        server.stop()
    return GeneratorRun(result, window, summarize_py_spy(out) if spy is not None else [])


# -- profiles and figures ------------------------------------------------------------------------


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (in the venv) sampling the server's Python stacks over the window."""
    binary = Path(sys.executable).with_name("py-spy")
    if not binary.exists():
        return None
    return subprocess.Popen(
        [str(binary), "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--format", "raw", "--output", str(out), "--nonblocking", "--threads"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def summarize_py_spy(path: Path, top: int = 15) -> list[str]:
    """Own-time shares of the hottest functions from py-spy's raw (collapsed stacks) output."""
    if not path.exists():
        return ["py-spy wrote nothing (ptrace not permitted?)"]
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        if leaf.startswith("Runner.run "):  # no Python frame below: uvloop and syscalls
            leaf = "native code under the event loop (uvloop, socket I/O) " + leaf
        own[leaf] = own.get(leaf, 0) + n
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return [f"{100 * n / total:5.1f} %  {name}" for name, n in ranked] if total else []


def slope_kib_per_call(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS (KiB), or anything, over the number of calls."""
    if len(points) < 2:
        return None
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def fmt(value: float | None, spec: str = ".1f") -> str:
    """A figure for a report line: "-" when there is none (None, NaN, infinite)."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "-"
    return format(value, spec)
