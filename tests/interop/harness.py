"""Running a real `omlmedia serve` and real peers (sipp) for the interop tests.

Peers are real programs installed by `make test`. A missing tool fails the test (never skips it): a
green run must mean the peer really ran.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from omlmedia.config import digest_ha1
from webrtc.accounts import hash_password

API_TOKEN = "interop-test-token"
DEMO_PASSWORD = "interop-secret"
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def require_tool(name: str) -> str:
    """The tool's path; fails the test when it is missing (make test installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs the test peers")
    return path


def free_port(*, udp_and_tcp: bool = True, pair: bool = False) -> int:
    """A port free on 127.0.0.1 for UDP and TCP (and port+1 too when `pair`)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if pair and port % 2:
            continue
        ports = [port, port + 1] if pair else [port]
        try:
            held = []
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


def write_test_config(
    path: Path,
    data_dir: Path,
    ports: dict[str, int],
    t1: float = 0.1,
    carrier: bool = False,
    media_timeout: float = 30.0,
) -> None:
    """A configuration like the demo's, with RFC timers short enough for tests to wait out."""
    md5, sha256 = digest_ha1("demo", "omlmedia", DEMO_PASSWORD)
    token_sha = hashlib.sha256(API_TOKEN.encode()).hexdigest()
    carrier_trunk = CARRIER_TRUNK.format(port=ports["carrier"]) if carrier else ""
    agent_hash = hash_password(DEMO_PASSWORD, n=2**12)
    path.write_text(
        f"""
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

{carrier_trunk}[[users]]
name = "demo"
ha1_md5 = "{md5}"
ha1_sha256 = "{sha256}"

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
    )


_rtp_block = 0


@dataclass
class RunningServer:
    """An `omlmedia serve` subprocess and how to reach it."""

    process: subprocess.Popen[bytes]
    sip_port: int
    tls_port: int
    http_port: int
    pbx_port: int
    carrier_port: int
    log_path: Path
    workdir: Path

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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -9
        return self.process.returncode


def start_server(
    workdir: Path,
    t1: float = 0.1,
    extra_args: tuple[str, ...] = (),
    carrier: bool = False,
    media_timeout: float = 30.0,
) -> RunningServer:
    """Start `omlmedia serve` on free ports with the test configuration; wait until it is ready."""
    global _rtp_block
    _rtp_block = (_rtp_block + 1) % 20
    rtp_low = 40000 + ((os.getpid() + _rtp_block) % 20) * 1000
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
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "omlmedia.toml"
    write_test_config(
        config, workdir / "data", ports, t1=t1, carrier=carrier, media_timeout=media_timeout
    )
    log_path = workdir / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "omlmedia", "serve", "--config", str(config), *extra_args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    server = RunningServer(
        process,
        ports["sip"],
        ports["tls"],
        ports["http"],
        ports["pbx"],
        ports["carrier"],
        log_path,
        workdir,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("omlmedia serve exited at start:\n" + server.log())
        if "omlmedia ready" in server.log():
            return server
        time.sleep(0.1)
    server.stop()
    pytest.fail("omlmedia serve did not become ready:\n" + server.log())


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
    taskset_core: int | None = None,
) -> SippResult:
    """Run sipp in the foreground (never -bg) with statistics, and collect the outcome."""
    sipp = require_tool("sipp")
    stats = workdir / f"{name}-stats.csv"
    errors = workdir / f"{name}-errors.log"
    for f in (stats, errors):
        f.unlink(missing_ok=True)
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
            command, cwd=workdir, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"sipp did not finish in {timeout} s: {' '.join(command)}\n{exc.stdout!r}")
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
