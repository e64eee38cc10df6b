"""Kamailio (Debian's ``kamailio``) as the SIP front of omlmedia nodes, for the tests and the
benchmark: our own instance of ``contrib/kamailio/kamailio.cfg`` in the foreground (``-DD -E``)
on a free loopback port, with its own runtime directory and dispatcher list, stopped after. The
system-wide service is never used (``make setup-test`` disables it). `tests.cluster.kamailio`
adds the tests' ``require``."""

from __future__ import annotations

import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "contrib" / "kamailio" / "kamailio.cfg"
UAC_RR = ROOT / "tests" / "cluster" / "scenarios" / "uac_rr.xml"
"""sipp as a PBX behind a proxy: ACK and BYE follow the Record-Route (set-up time is rtd 1)."""

PING_INTERVAL = 1
PROBE_THRESHOLD = 2
INVITE_TIMEOUT_MS = 1500
PROBE_WINDOW = PING_INTERVAL * PROBE_THRESHOLD + INVITE_TIMEOUT_MS / 1000 + 1.0
"""Seconds within which Kamailio takes a dead node out of rotation: the failed probes (one per
interval, each failing after the transaction timeout) plus a second of slack."""


def binary() -> str:
    """Kamailio's path; RuntimeError when it is not installed (``make setup-test`` installs it;
    the tests' `tests.cluster.kamailio.require` skips or fails instead)."""
    path = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").is_file() else None
    )
    if path is None:
        raise RuntimeError("kamailio is not installed: run make setup-test")
    return path


def reload_dispatcher(control: str, within: float = 15.0) -> None:
    """``kamcmd dispatcher.reload`` on the control socket `control` (``unix:PATH``), retried
    until it takes (a reload within reload_delta, 1 s, of the last one is refused)."""
    kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
    deadline = time.monotonic() + within
    while True:
        result = subprocess.run(
            [kamcmd, "-s", control, "dispatcher.reload"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode == 0 and "error" not in output.lower():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"dispatcher.reload refused: {output}")
        time.sleep(0.2)


@dataclass
class Kamailio:
    """A running instance: its SIP port and its log."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def log_path(self) -> Path:
        return self.directory / "kamailio.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def control(self) -> str:
        """Its kamcmd control socket."""
        return f"unix:{self.directory / 'ctl'}"

    def set_nodes(self, nodes: Sequence[int]) -> None:
        """Write the dispatcher list (omlmedia nodes on these loopback SIP ports) and make
        Kamailio reload it, as an operator adds or removes a node."""
        (self.directory / "dispatcher.list").write_text(
            "".join(f"1 sip:127.0.0.1:{port}\n" for port in nodes)
        )
        reload_dispatcher(self.control)

    def wait_for(self, text: str, timeout: float) -> float:
        """Poll the log until it holds `text`; the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"kamailio exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in kamailio's log:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return time.monotonic()


@contextmanager
def kamailio(
    directory: Path,
    nodes: Sequence[int],
    *,
    trusted: str = "^127[.]0[.]0[.]1$",
    invite_pipe: str = "0:TAILDROP:200",
) -> Iterator[Kamailio]:
    """Kamailio dispatching to omlmedia nodes on loopback SIP ports `nodes`. The PBX (every
    test peer on 127.0.0.1) is `trusted` (a regular expression of source addresses that pike
    never limits); `invite_pipe` is the cluster-wide INVITE rate limit."""
    program = binary()
    directory.mkdir(parents=True, exist_ok=True)
    assert len(str(directory / "ctl")) < 100, "a unix socket path must be short"
    targets = directory / "dispatcher.list"
    targets.write_text("".join(f"1 sip:127.0.0.1:{port}\n" for port in nodes))
    port = harness.free_port()
    command = [
        program,
        *("-f", str(CONFIG), "-DD", "-E", "-Y", str(directory), "-m", "32", "-M", "4"),
        *("-A", f"OML_LISTEN=udp:127.0.0.1:{port}"),
        *("-A", f'OML_DISPATCHER_LIST="{targets}"'),
        *("-A", f"OML_PING_INTERVAL={PING_INTERVAL}"),
        *("-A", f"OML_PROBE_THRESHOLD={PROBE_THRESHOLD}"),
        *("-A", f"OML_INVITE_TIMEOUT={INVITE_TIMEOUT_MS}"),
        *("-A", f'OML_TRUSTED="{trusted}"'),
        *("-A", f'OML_INVITE_PIPE="{invite_pipe}"'),
        *("-A", f'OML_CTL="unix:{directory / "ctl"}"'),
    ]
    with (directory / "kamailio.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    instance = Kamailio(process, port, directory)
    try:
        instance.wait_for("Listening on", 15)
        yield instance
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def options_received(node: harness.RunningServer) -> int:
    """Requests the node's SIP stack has received (the probes among them)."""
    return int(node.status()["sip"]["ua"]["received"])


def calls_total(node: harness.RunningServer) -> int:
    """Calls the node has taken since it started."""
    return int(node.status()["sip"]["ua"]["calls_total"])


def wait_probed(nodes: Sequence[harness.RunningServer], timeout: float = 10.0) -> None:
    """Wait until Kamailio's OPTIONS probes reach every node."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        while options_received(node) == 0:
            assert time.monotonic() < deadline, "kamailio's probes never reached a node"
            time.sleep(0.05)


def sipp_uac(target: str, *, calls: int, rate: float, pause_ms: int) -> list[str]:
    """The sipp arguments of `calls` calls to echo through `target`, `pause_ms` long each, with
    ACK and BYE following the Record-Route as a PBX's do."""
    return [
        *("-sf", str(UAC_RR), target, "-s", "echo", "-i", "127.0.0.1", "-p", "0"),
        *("-m", str(calls), "-r", str(rate), "-d", str(pause_ms), "-l", str(calls)),
    ]


def _header(message: str, name: str) -> list[str]:
    values = []
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            values.append(value.strip())
    return values


def setup_time(
    sock: socket.socket, target: tuple[str, int], call: int, user: str = "echo"
) -> float:
    """One call to `user` (echo; or a service that answers at once, a queue) through `target` (a
    node, or Kamailio): INVITE, 200 OK, ACK and BYE along the route set; the INVITE → 200 OK
    time in milliseconds, by the monotonic clock."""
    host, port = sock.getsockname()
    unique = f"{call}x{time.time_ns()}"
    tag, call_id = f"t{call}", f"{unique}@127.0.0.1"
    common = (
        f"From: <sip:bench@{host}:{port}>;tag={tag}\r\nCall-ID: {call_id}\r\n"
        f"Contact: <sip:bench@{host}:{port}>\r\nMax-Forwards: 70\r\n"
    )
    sdp = f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    sdp += "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    uri = f"sip:{user}@{target[0]}:{target[1]}"
    invite = (
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bKi{unique}\r\n"
        f"To: <{uri}>\r\n{common}CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    )
    started = time.perf_counter()
    sock.sendto(invite.encode(), target)
    while True:
        answer = sock.recv(65535).decode(errors="replace")
        if call_id not in answer:
            continue
        code = int(answer.split(" ", 2)[1])
        if code >= 200:
            break
    elapsed = (time.perf_counter() - started) * 1000
    assert code == 200, answer
    to = _header(answer, "to")[0]
    routes = "".join(f"Route: {route}\r\n" for route in reversed(_header(answer, "record-route")))
    contact = _header(answer, "contact")[0].strip("<>").split(">")[0]
    for cseq, method in ((1, "ACK"), (2, "BYE")):
        request = (
            f"{method} {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{method}{unique}\r\n{routes}"
            f"To: {to}\r\n{common}CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), target)
    while True:
        reply = sock.recv(65535).decode(errors="replace")
        if call_id in reply and "CSeq: 2 BYE" in reply and reply.startswith("SIP/2.0 200"):
            return elapsed


def setup_times(
    targets: Sequence[tuple[str, int]], calls: int, timeout: float = 5.0
) -> list[list[float]]:
    """`calls` calls to each of `targets`, interleaved (one to each in turn, so that load on the
    machine weighs on all alike); their set-up times (ms), per target."""
    times: list[list[float]] = [[] for _ in targets]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        for call in range(calls):
            for index, target in enumerate(targets):
                times[index].append(setup_time(sock, target, call * len(targets) + index))
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    """Median, 90th and 99th percentiles and mean of set-up times (ms)."""
    ordered = sorted(times)
    return {
        "calls": len(ordered),
        "median": statistics.median(ordered),
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
        "p99": ordered[int(0.99 * (len(ordered) - 1))],
        "mean": statistics.fmean(ordered),
    }
