"""A cluster on several hosts on one machine: one network namespace per host, joined by a bridge,
for tests/cluster/test_multihost.py.

    root (the test, Chromium)  .1 ─┐
    pbx  (sipp callers)        .2 ─┤
    kam  (Kamailio)            .3 ─┤  bridge br0 in the namespace <prefix>sw,
    lb   (HAProxy)             .4 ─┼─ 10.213.<n>.0/24 (n from the test's pid), nothing routed
    db   (Redis, PostgreSQL)   .5 ─┤  anywhere else
    node1, node2, node3   .11 .12 .13

Every namespace is named ``omh<pid>-<host>`` (the switch ``omh<pid>-sw``): namespaces left by a
run that crashed (its pid gone) are deleted when the next run starts. Processes run inside a
host with ``ip netns exec`` (which execs the program: the pid is the program's, ``kill -9``
reaches it). Everything a `Hosts` started is stopped by pid, then its namespaces are deleted,
whatever the test did.
"""

from __future__ import annotations

import csv
import ctypes
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from benchmarks import harness, pgserver, redisserver
from benchmarks.kamailio import reload_dispatcher
from tests.cluster import kamailio as kam
from tests.cluster.pki import tls_keys

PREFIX = "omh"
HOSTS = {"pbx": 2, "kam": 3, "lb": 4, "db": 5, "node1": 11, "node2": 12, "node3": 13}
SIP_PORT = 5060
HTTP_PORT = 8443
REDIS_PORT = 6379
PG_PORT = 5432
LB_PORT = 443
INTERNAL_PORT = 5070
"""Each node's private TLS listener for the internal leg, when the cluster has certificates."""
CLUSTER_SECRET = b"multihost-cluster-secret-32bytes!"


def require() -> None:
    """Skip (fail under CI) when this machine cannot build the hosts or run their programs."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root is needed to create network namespaces")
    for tool in ("ip", "sipp", "haproxy", "kamailio", "kamcmd", "redis-server"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            problems.append(f"{tool} is not installed")
    if not pgserver.available():
        problems.append("PostgreSQL 15 is not installed")
    if problems:
        message = "; ".join(problems) + ": run make setup-test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


def remove_leftovers() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone (killing what still runs in
    them); their names."""
    removed = []
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{PREFIX}(\d+)-\w+", name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        if Path(f"/proc/{match.group(1)}").exists():
            continue  # a run still going
        # What that run started there (nodes, Kamailio, PostgreSQL...) outlived it: end it.
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    for stale in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-pg-*"):
        match = re.fullmatch(rf"{PREFIX}(\d+)-pg-\w+", stale.name)
        if match is not None and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(stale, ignore_errors=True)  # its PostgreSQL's files
    return removed


@dataclass
class Hosts:
    """The namespaces, their addresses, and every process started in them (stopped by pid)."""

    tag: str
    subnet: int
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """Those of `processes` in host db (Redis): stopped last."""
    stoppers: list[Any] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def addr(self, host: str) -> str:
        return f"10.213.{self.subnet}.{1 if host == 'root' else HOSTS[host]}"

    def run(
        self, host: str, *command: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end in `host`."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self,
        host: str,
        command: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running program in `host`, its output in `log`."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        self.processes.append(process)
        if host == "db":
            self.services.append(process)
        return process

    def close(self) -> None:
        """Stop the programs of every host but db together (the nodes' last writes find Redis
        and PostgreSQL still there), then db's, then what the stoppers stop (PostgreSQL, its
        files)."""
        _stop([p for p in self.processes if p not in self.services])
        _stop(self.services)
        for stop in reversed(self.stoppers):
            with suppress(Exception):
                stop()


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each of `processes` still running, then wait for them (10 s, then SIGKILL)."""
    living = [p for p in processes if p.poll() is None]
    for process in living:
        process.send_signal(signal.SIGTERM)
    for process in living:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def hosts(workdir: Path, extra: Sequence[str] = ()) -> Iterator[Hosts]:
    """Create the namespaces and the bridge; stop what ran there and delete them after."""
    remove_leftovers()
    tag = f"{PREFIX}{os.getpid()}"
    made = Hosts(tag, 100 + os.getpid() % 150, workdir)
    names = [*HOSTS, *extra]
    created: list[str] = []
    root_link = f"{tag}r"
    try:
        switch = made.ns("sw")
        _ip("netns", "add", switch)
        created.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for index, host in enumerate(["root", *names]):
            port = f"p{index}"
            if host == "root":
                _ip("link", "add", root_link, "type", "veth", "peer", "name", port, "netns", switch)
                _ip("addr", "add", f"{made.addr(host)}/24", "dev", root_link)
                _ip("link", "set", root_link, "up")
            else:
                name = made.ns(host)
                _ip("netns", "add", name)
                created.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
                _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", port)
                _ip("-n", name, "link", "set", port, "netns", switch)
                _ip("-n", name, "addr", "add", f"{made.addr(host)}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
        yield made
    finally:
        made.close()
        _ip("link", "del", root_link, check=False)
        for name in reversed(created):
            _ip("netns", "del", name, check=False)


# -- the shared services, in host db -------------------------------------------------------------


def start_redis(h: Hosts) -> str:
    """A throwaway redis-server in `db`; its URL."""
    directory = h.workdir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    argv = [redisserver.BIN, "--port", str(REDIS_PORT), "--bind", h.addr("db"), "--save", ""]
    # Not protected mode: its clients are the other hosts, on the test-only network.
    argv += ["--protected-mode", "no", "--appendonly", "no", "--dir", str(directory)]
    argv += ["--daemonize", "no"]
    h.start("db", argv, directory / "log")
    wait_tcp(h.addr("db"), REDIS_PORT, 15)
    return f"redis://{h.addr('db')}:{REDIS_PORT}/0"


def start_postgres(h: Hosts) -> str:
    """A throwaway PostgreSQL 15 in `db` (run as the postgres user), with database ``oml``
    trusted from the hosts' network; its DSN."""
    # Its own temp dir: the postgres user cannot enter pytest's (root's, mode 0700).
    directory = Path(tempfile.mkdtemp(prefix=f"{h.tag}-pg-"))
    h.stoppers.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    shutil.chown(directory, "postgres")
    data = directory / "data"
    owner = ["runuser", "-u", "postgres", "--"]
    initdb = [str(pgserver.BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "omlmedia"]
    result = subprocess.run([*owner, *initdb, "--no-sync"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all 10.213.{h.subnet}.0/24 trust\n")
    options = f"-p {PG_PORT} -k {directory} -c listen_addresses={h.addr('db')} -c fsync=on"
    pg_ctl = [str(pgserver.BIN / "pg_ctl"), "-D", str(data), "-o", options]
    started = h.run("db", *owner, *pg_ctl, "-l", str(directory / "log"), "-w", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    h.stoppers.append(
        lambda: subprocess.run(
            [*owner, *pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60
        )
    )
    create = [str(pgserver.BIN / "createdb"), "-h", h.addr("db"), "-p", str(PG_PORT)]
    made = subprocess.run([*create, "-U", "omlmedia", "oml"], capture_output=True, timeout=30)
    assert made.returncode == 0, made.stderr
    return f"postgresql://omlmedia@{h.addr('db')}:{PG_PORT}/oml"


def wait_tcp(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {host}:{port}"
            time.sleep(0.05)


# -- omlmedia nodes ------------------------------------------------------------------------------

_CONTEXT = ssl.create_default_context()
_CONTEXT.check_hostname = False
_CONTEXT.verify_mode = ssl.CERT_NONE


@dataclass
class Node:
    """An `omlmedia serve` in its own host."""

    name: str
    host: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"https://{self.host}:{HTTP_PORT}{path}",
            method=method,
            headers={"Authorization": f"Bearer {harness.API_TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, context=_CONTEXT, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def status(self) -> dict[str, Any]:
        code, body = self.api("GET", "/api/v1/status")
        assert code == 200, body
        return body

    def metric(self, name: str) -> float:
        """The value of the unlabelled metric `name` on its ``/metrics``."""
        import urllib.request

        request = urllib.request.Request(
            f"https://{self.host}:{HTTP_PORT}/metrics",
            headers={"Authorization": f"Bearer {harness.API_TOKEN}"},
        )
        with urllib.request.urlopen(request, context=_CONTEXT, timeout=5) as response:
            text = response.read().decode()
        (value,) = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
        return float(value)

    def calls_total(self) -> int:
        return int(self.status()["sip"]["ua"]["calls_total"])

    def wait_ready(self, timeout: float = 90) -> Node:
        """Wait until it says it is ready; itself."""
        deadline = time.monotonic() + timeout
        while "omlmedia ready" not in self.log():
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.log()[-4000:]}"
            time.sleep(0.1)
        return self

    def agent_state(self, agent: str) -> str | None:
        """The agent's state here; None when the node does not answer."""
        try:
            code, view = self.api("GET", f"/api/v1/agents/{agent}")
        except OSError:
            return None
        return str(view.get("state")) if code == 200 else None


def node_config(
    h: Hosts,
    name: str,
    redis_url: str,
    dsn: str,
    media_timeout: float,
    tls: tuple[Path, Path, Path] | None = None,
) -> str:
    """The tests' usual configuration (`benchmarks.harness.server_config`) for a node on host
    `name`: Kamailio is its trunk's peer (trusted by address), HAProxy a trusted proxy, records
    in the shared PostgreSQL, sessions, heartbeats and the one ACD of the cluster in the shared
    Redis (cross-node calls between the node hosts), and a queue ``hold`` without members where
    callers wait with music until they hang up. With `tls` (the cluster's CA, the nodes'
    certificate and its key) the internal leg is SIP over mutual TLS to each node's private
    listener (`INTERNAL_PORT`) with SRTP, as ``check-config`` asks of nodes on several hosts."""
    ports = {"sip": SIP_PORT, "tls": SIP_PORT + 1, "http": HTTP_PORT, "pbx": SIP_PORT}
    ports["rtp_low"] = 20000
    text = harness.server_config(
        h.workdir / name / "data", ports, t1=0.1, media_timeout=media_timeout
    )
    host, kam_host, lb = h.addr(name), h.addr("kam"), h.addr("lb")
    replacements = {
        'listen = ["127.0.0.1"]': f'listen = ["{host}"]',
        'host = "127.0.0.1"': f'host = "{kam_host}"',
        'trusted_sources = ["127.0.0.1/32"]': f'trusted_sources = ["{kam_host}/32"]',
        "[security]\n": f'[security]\ntrusted_proxies = ["{lb}/32"]\n',
        "[queues.support]": (
            '[[routes]]\nuser = "hold"\ntarget = "queue:hold"\n\n'
            '[queues.hold]\nstrategy = "ringall"\nmembers = []\n\n[queues.support]'
        ),
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    secret = h.workdir / "cluster.secret"
    if not secret.exists():
        secret.write_bytes(CLUSTER_SECRET)
    leg_port = SIP_PORT if tls is None else INTERNAL_PORT
    nodes = "".join(
        f'[cluster.nodes.{n}]\nsip = "{h.addr(n)}:{leg_port}"\n'
        for n in HOSTS
        if n.startswith("node")
    )
    keys = tls_keys(tls) if tls is not None else ""
    return (
        text
        + f'\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
        + f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\nsecret_file = "{secret}"\n'
        + 'acd = "shared"\n'
        + keys
        + nodes
    )


def launch_node(
    h: Hosts,
    name: str,
    redis_url: str,
    dsn: str,
    *,
    media_timeout: float = 30.0,
    tls: tuple[Path, Path, Path] | None = None,
) -> Node:
    """`omlmedia serve` of this tree in host `name`, started (not ready yet: `Node.wait_ready`;
    several nodes start together faster than one after the other); `tls`: `node_config`'s."""
    workdir = h.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "omlmedia.toml"
    config.write_text(node_config(h, name, redis_url, dsn, media_timeout, tls))
    command = [sys.executable, "-m", "omlmedia", "serve", "--config", str(config)]
    env = {"PYTHONPATH": str(harness.ROOT)}
    process = h.start(name, command, workdir / "server.log", env=env, cwd=workdir)
    return Node(name, h.addr(name), process, workdir)


# -- Kamailio, HAProxy ---------------------------------------------------------------------------


@dataclass
class Front:
    """Kamailio in host kam."""

    process: subprocess.Popen[bytes]
    directory: Path
    h: Hosts

    def log(self) -> str:
        return (self.directory / "kamailio.log").read_text(errors="replace")

    def set_nodes(self, nodes: Sequence[str]) -> None:
        """Write the dispatcher list (these hosts) and make Kamailio reload it."""
        (self.directory / "dispatcher.list").write_text(
            "".join(f"1 sip:{self.h.addr(n)}:{SIP_PORT}\n" for n in nodes)
        )
        reload_dispatcher(f"unix:{self.directory / 'ctl'}")

    def wait_for(self, text: str, timeout: float, after: int = 0) -> float:
        """Poll the log (from offset `after`) until it holds `text`; the monotonic time."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[after:]:
            assert self.process.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"{text!r} not in kamailio's log"
            time.sleep(0.02)
        return time.monotonic()


def start_kamailio(h: Hosts, nodes: Sequence[str]) -> Front:
    directory = h.workdir / "kam"
    directory.mkdir(parents=True, exist_ok=True)
    targets = directory / "dispatcher.list"
    targets.write_text("".join(f"1 sip:{h.addr(n)}:{SIP_PORT}\n" for n in nodes))
    pbx = h.addr("pbx").replace(".", "[.]")
    command = [
        kam.require(),
        *("-f", str(kam.CONFIG), "-DD", "-E", "-Y", str(directory), "-m", "32", "-M", "4"),
        *("-A", f"OML_LISTEN=udp:{h.addr('kam')}:{SIP_PORT}"),
        *("-A", f'OML_DISPATCHER_LIST="{targets}"'),
        *("-A", f"OML_PING_INTERVAL={kam.PING_INTERVAL}"),
        *("-A", f"OML_PROBE_THRESHOLD={kam.PROBE_THRESHOLD}"),
        *("-A", f"OML_INVITE_TIMEOUT={kam.INVITE_TIMEOUT_MS}"),
        *("-A", f'OML_TRUSTED="^{pbx}$"'),
        *("-A", f'OML_CTL="unix:{directory / "ctl"}"'),
    ]
    process = h.start("kam", command, directory / "kamailio.log")
    front = Front(process, directory, h)
    front.wait_for("Listening on", 20)
    return front


def start_haproxy(h: Hosts, nodes: Sequence[str]) -> str:
    """HAProxy with contrib/haproxy/haproxy.cfg in host lb, in front of `nodes`; its URL."""
    from sip.tls import ensure_self_signed
    from tests.cluster.test_haproxy import CONFIG, HAPROXY

    directory = h.workdir / "lb"
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], [h.addr("lb")])
    pem = directory / "front.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    env = {
        "OML_BIND": f"{h.addr('lb')}:{LB_PORT}",
        "OML_CERT": str(pem),
        "OML_HEALTH_TOKEN": harness.API_TOKEN,
    }
    for index, node in enumerate(nodes, 1):
        env[f"OML_NODE{index}"] = f"{h.addr(node)}:{HTTP_PORT}"
    h.start("lb", [HAPROXY, "-f", str(CONFIG), "-db"], directory / "haproxy.log", env=env)
    wait_tcp(h.addr("lb"), LB_PORT, 15)
    return f"https://{h.addr('lb')}:{LB_PORT}"


# -- what the wire carries ----------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000


class Capture:
    """The UDP datagrams through a host's link (its ``eth0``, a veth to the switch), both ways:
    an AF_PACKET socket opened inside the host's namespace (by a thread of its own that enters
    it with setns(2) and ends, so no other thread of the test changes namespace)."""

    def __init__(self, h: Hosts, host: str) -> None:
        made: list[socket.socket | BaseException] = []

        def open_inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/var/run/netns/{h.ns(host)}", os.O_RDONLY)
                try:
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {h.ns(host)}")
                finally:
                    os.close(fd)
                # ETH_P_ALL: a socket of one protocol (IPv4) sees only what comes in, not what
                # the host sends.
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
                sock.bind(("eth0", 0))
                made.append(sock)
            except BaseException as error:  # reported by the constructor, in the test's thread
                made.append(error)

        opener = threading.Thread(target=open_inside, name=f"capture-{host}")
        opener.start()
        opener.join()
        (result,) = made
        if isinstance(result, BaseException):
            raise result
        self.sock = result
        self.sock.settimeout(0.2)

    def flows(self, seconds: float) -> dict[tuple[str, int, str, int], list[bytes]]:
        """For `seconds`: the RTP payloads of type 0 (PCMU, in clear or SRTP: the header is
        clear either way) by (source address, port, destination address, port)."""
        found: dict[tuple[str, int, str, int], list[bytes]] = {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            ip = frame[14:]
            if frame[12:14] != b"\x08\x00" or len(ip) < 28 or ip[9] != 17:
                continue
            udp = ip[(ip[0] & 0x0F) * 4 :]
            rtp = udp[8:]
            if len(rtp) < 12 or rtp[0] >> 6 != 2 or rtp[1] & 0x7F != 0:
                continue
            source, destination = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
            key = (source, int.from_bytes(udp[0:2]), destination, int.from_bytes(udp[2:4]))
            found.setdefault(key, []).append(rtp[12:])
        return found

    def close(self) -> None:
        self.sock.close()


# -- sipp callers, in host pbx -------------------------------------------------------------------

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "uac_rr_rtp.xml"


@dataclass
class Sipp:
    """A sipp run in host pbx: started now, read when it ends."""

    process: subprocess.Popen[bytes]
    stats: Path
    output: IO[bytes]
    out_path: Path

    def wait(self, timeout: float) -> dict[str, str]:
        """Wait for its end; its last statistics row."""
        self.process.wait(timeout)
        self.output.close()
        rows: list[dict[str, str]] = []
        if self.stats.exists():
            with self.stats.open() as f:
                rows = list(csv.DictReader(f, delimiter=";"))
        return rows[-1] if rows else {}

    def text(self) -> str:
        return self.out_path.read_text(errors="replace")[-3000:]


def sipp(
    h: Hosts,
    name: str,
    *,
    calls: int,
    rate: float,
    pause_ms: int,
    service: str = "hold",
    media_port: int = 30000,
    port: int = 0,
) -> Sipp:
    """`calls` callers from host pbx through Kamailio to `service`, each sending its RTP (the
    7 s PCMA recording, looped) and hanging up after `pause_ms`; ACK and BYE follow the
    Record-Route. Its statistics are in the work dir under `name`."""
    workdir = h.workdir / "sipp"
    workdir.mkdir(parents=True, exist_ok=True)
    pcap = workdir / "pcap"
    if not pcap.exists():
        pcap.symlink_to("/usr/share/sip-tester")
    stats = workdir / f"{name}-stats.csv"
    stats.unlink(missing_ok=True)
    command = [
        shutil.which("sipp") or "sipp",
        *("-sf", str(SCENARIO), f"{h.addr('kam')}:{SIP_PORT}", "-s", service),
        *("-i", h.addr("pbx"), "-p", str(port), "-mp", str(media_port)),
        *("-m", str(calls), "-r", str(rate), "-l", str(calls), "-d", str(pause_ms)),
        *("-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "1"),
        *("-trace_err", "-error_file", str(workdir / f"{name}-errors.log")),
    ]
    out_path = workdir / f"{name}.out"
    output = out_path.open("wb")
    process = subprocess.Popen(
        ["ip", "netns", "exec", h.ns("pbx"), *command],
        stdout=output,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    h.processes.append(process)
    return Sipp(process, stats, output, out_path)


def udp_received(h: Hosts, host: str) -> int:
    """UDP datagrams that reached `host` so far, to a socket or not (/proc/net/snmp ``Udp:``
    InDatagrams, NoPorts and InErrors)."""
    text = h.run(host, "cat", "/proc/net/snmp").stdout
    header, values = (line.split() for line in text.splitlines() if line.startswith("Udp:"))
    row = dict(zip(header[1:], map(int, values[1:]), strict=True))
    return row["InDatagrams"] + row["NoPorts"] + row["InErrors"]


def count(stats: Mapping[str, str], name: str) -> int:
    return int(stats.get(f"{name}(C)", "0") or 0)
