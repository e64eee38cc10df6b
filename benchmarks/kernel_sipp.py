"""The kernel path in the whole system: sipp calls with real SIP and RTP through omlmedia, side by
side with Kamailio + rtpengine, in one run (issue 14's benchmark form).

Three hosts of the benchmark's own (benchmarks/netns.py, as in kernel_relay.py): on the caller
host (198.18.1.2) sipp places ``uac_pcap`` calls (INVITE with a PCMA offer, the 236-packet
``g711a.pcap`` with an RFC 4733 '1', BYE after about 9 s, one media port per call); on the callee
host (198.18.2.2) a sipp UAS answers with PCMA and echoes every RTP packet it receives
(``-rtp_echo``); the system under test runs on the server host between them (198.18.1.1) on
core 0, whose receive work is steered to core 0 as a network card's would be (the far ends' to
core 1, where both sipps run). Systems, in the same run:

- ``omlmedia``: `omlmedia serve`, the calls come in on trunk ``pbx`` and go out to the UAS
  through it (9<number>), userspace relay;
- ``omlmedia-kernel``: the same with ``[media] kernel_forwarding = true`` (root);
- ``kamailio+rtpengine``: Kamailio 5.6 (a stateful proxy: ``rtpengine_offer`` on the INVITE,
  ``rtpengine_answer`` on its 200, ``rtpengine_delete`` on BYE, every request relayed to the UAS)
  with rtpengine (userspace, one thread, ``--table=-1``) over ng.

At each N the UAC keeps N calls up (rate N / call length, ``-l N``); after a ramp of one call
length the window opens. Over the window: the system's CPU (omlmedia's process and its webhook
worker; Kamailio's processes + rtpengine's) plus core 0's softirq time beyond what it spent over an
idle window of the same length just before (tick-sampled: for a userspace system the sum is an
upper bound and its processes alone a lower bound, both printed); the call-seconds (sipp's current
calls, each second of the window); the packets relayed (nftables counters on the far hosts: what
reached the UAS plus what came back to the UAC). Over the whole step: failed calls (sipp), loss
each way (sent by the UAC -> received by the UAS; echoed by the UAS -> received back by the UAC,
the far hosts' counters), and the round-trip time of the echo at the caller host for a sample of
calls (tcpdump on the caller's link, packets matched by media port and RTP sequence number: through
the system, the UAS's echo and back).

    sudo .venv/bin/python benchmarks/kernel_sipp.py [--calls 100,200,400]
        [--duration 10] [--targets omlmedia,omlmedia-kernel,kamailio+rtpengine] [--json out.json]
        [--receive rps|napi [--receive-nice N]]  (as in kernel_relay.py) [--profile]

Measured (docs/kernel.md has the runs): on the shared 2-core machine when quiet (load 1-3), CPU
per call-second, processes + receive softirq (processes alone), at N = 100-200 over two runs:
the kernel path 1,316-1,574 (653-718), Kamailio + rtpengine 2,286-2,926 (1,424-1,622), the
userspace relay 3,406-3,775: the kernel path 0.52-0.67x Kamailio + rtpengine, not the issue's
0.5x; 0.7-1.4x in runs at load 3-19. ``--profile`` shows where omlmedia's CPU goes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pstats
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness, netns  # noqa: E402
from benchmarks.harness import fmt  # noqa: E402
from benchmarks.kernel_relay import (  # noqa: E402
    NETNS_ADDRESSES,
    NETNS_RTP_PORTS,
    enable_kernel_forwarding,
    on_server_host,
)
from benchmarks.media_relay import READY_SECONDS, Rtpengine  # noqa: E402
from benchmarks.procstat import (  # noqa: E402
    GENERATOR_CORE,
    SERVER_CORE,
    core_softirq_seconds,
    cpu_seconds,
    pinned,
)

SERVER, CALLER, CALLEE = NETNS_ADDRESSES.server, NETNS_ADDRESSES.caller, NETNS_ADDRESSES.pbx
SIP_PORT = 5060  # the far hosts are the benchmark's own: the standard port is free there
UAC_MEDIA_PORT = 40000  # sipp's k-th call (from 0) sends from 40000 + 4k: above the server's
UAS_MEDIA_PORT = 30000  # RTP ports (20000-29999) so the far hosts' counters see only the far ends
CALL_SECONDS = 9.2  # uac_pcap: 8 s of pcap, 1 s of DTMF, set-up and BYE
SIPP_PCAPS = Path("/usr/share/sip-tester")  # uac_pcap's audio and DTMF (Debian's sip-tester)
SAMPLED_CALLS = 10  # the round-trip sample: calls started just before the window

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="PCMA answer, the far end of the benchmark (RTP echoed with -rtp_echo)">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=uas 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
]]></send>
  <recv request="ACK" optional="true" rtd="true" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <timewait milliseconds="2000"/>
</scenario>
"""


def short_pcap(source: Path, seconds: float, out: Path) -> None:
    """The first `seconds` of the capture `source` (a pcap file), written to `out`."""
    data = source.read_bytes()
    endian = "<" if struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    kept, offset, first = [data[:24]], 24, None
    while offset + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        stamp = sec + usec / 1e6
        first = stamp if first is None else first
        end = offset + 16 + caplen
        if stamp - first < seconds:
            kept.append(data[offset:end])
        offset = end
    out.write_bytes(b"".join(kept))


def uac_scenario(workdir: Path, call_seconds: float) -> list[str]:
    """sipp's options for the UAC's scenario: ``uac_pcap`` itself (about 9.2 s a call), or for
    a shorter `call_seconds` the same scenario with its 8 s of audio cut to fit (the RFC 4733
    digit's second and the set-up keep their 1.2 s): the smoke test's brief calls."""
    if call_seconds > CALL_SECONDS + 4.0:
        return long_scenario(workdir, call_seconds)
    if call_seconds >= CALL_SECONDS:
        return ["-sn", "uac_pcap"]
    audio = workdir / "g711a_short.pcap"
    seconds = max(call_seconds - 1.2, 0.2)
    short_pcap(SIPP_PCAPS / "g711a.pcap", seconds, audio)
    scenario = subprocess.run(  # sipp -sd exits with 99 after printing the scenario
        ["sipp", "-sd", "uac_pcap"], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    scenario = scenario.replace("pcap/g711a.pcap", str(audio)).replace(
        '<pause milliseconds="8000"/>', f'<pause milliseconds="{round(1000 * seconds)}"/>'
    )
    if str(audio) not in scenario:
        raise RuntimeError("sipp's uac_pcap scenario changed: cannot shorten its calls")
    path = workdir / "uac_short.xml"
    path.write_text(scenario)
    return ["-sf", str(path)]


PLAY_AUDIO = """  <nop>
    <action>
      <exec play_pcap_audio="pcap/g711a.pcap"/>
    </action>
  </nop>
"""


def plays_for(call_seconds: float) -> int:
    """How many plays of uac_pcap's 8 s of audio a long call of `call_seconds` makes."""
    return max(2, round((call_seconds - (CALL_SECONDS - 8.0)) / 8.0))


def call_length(requested: float) -> float:
    """The length the calls really have for ``--call-seconds`` `requested`: shorter ones cut
    to it, uac_pcap's own, or a whole number of plays of its audio (`long_scenario`)."""
    if requested > CALL_SECONDS + 4.0:
        return plays_for(requested) * 8.0 + (CALL_SECONDS - 8.0)
    return min(requested, CALL_SECONDS)


def long_scenario(workdir: Path, call_seconds: float) -> list[str]:
    """``uac_pcap`` with its 8 s of audio played as many times as fit `call_seconds` (about:
    whole plays), each play after the last: calls as long as a contact center's (minutes),
    where the set-up's share of each call-second is smaller. The RTP's sequence numbers and
    timestamps start again with each play (a relay passes them as they come)."""
    plays = plays_for(call_seconds)
    scenario = subprocess.run(  # sipp -sd exits with 99 after printing the scenario
        ["sipp", "-sd", "uac_pcap"], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    block = PLAY_AUDIO + "\n"
    start = scenario.find(PLAY_AUDIO)
    end = scenario.find('<pause milliseconds="8000"/>', start)
    if start < 0 or end < 0:
        raise RuntimeError("sipp's uac_pcap scenario changed: cannot lengthen its calls")
    end += len('<pause milliseconds="8000"/>')
    played = "".join(f'{block}  <pause milliseconds="8000"/>\n' for _ in range(plays)).rstrip("\n")
    scenario = scenario[:start] + played.lstrip() + scenario[end:]
    path = workdir / f"uac_long_{plays}.xml"
    path.write_text(scenario)
    return ["-sf", str(path)]


KAMAILIO_CONFIG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:{server}:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    $du = "sip:{callee}:{callee_port}";
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            t_relay();
        }} else {{
            forward();
        }}
        exit;
    }}
    if (is_method("INVITE") && !has_totag()) {{
        rtpengine_offer("replace-origin replace-session-connection ICE=remove");
        t_on_reply("ANSWER");
    }} else if (is_method("BYE")) {{
        rtpengine_delete();
    }}
    t_relay();
    exit;
}}

onreply_route[ANSWER] {{
    if (has_body("application/sdp")) {{
        rtpengine_answer("replace-origin replace-session-connection ICE=remove");
    }}
}}
"""


def require_tools() -> list[str]:
    """What is missing to run the benchmark here."""
    missing = [
        tool
        for tool in ("sipp", "kamailio", "rtpengine", "nft", "ip", "tcpdump")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").is_file()
    ]
    if os.geteuid() != 0:
        missing.append("root (network namespaces, nftables)")
    return missing


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def thread_cpu(pid: int) -> float:
    """CPU seconds of `pid`'s main thread (its event loop), from /proc/PID/task/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


# -- the far hosts: RTP counters and the UAS ------------------------------------------------------

COUNTERS = """table inet omlbench {{
    counter rtp_in {{}}
    counter rtp_out {{}}
    chain input {{
        type filter hook input priority 0;
        udp dport {ports} udp dport & 1 == 0 counter name rtp_in
    }}
    chain output {{
        type filter hook output priority 0;
        udp sport {ports} udp sport & 1 == 0 counter name rtp_out
    }}
}}
"""


def install_counters(namespace: str, ports: str) -> None:
    """Count the RTP a far host receives and sends on its media ports (`ports`, an nft port or
    range; even ports only: the systems' RTCP goes to the odd ones)."""
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=COUNTERS.format(ports=ports),
        text=True,
        check=True,
        capture_output=True,
        timeout=10,
    )


def read_counters(namespace: str) -> dict[str, int]:
    """Packets of RTP (anything but SIP) received and sent by a far host so far."""
    out = netns.in_ns(namespace, "nft", "-j", "list", "counters", "table", "inet", "omlbench")
    found: dict[str, int] = {}
    for item in json.loads(out.stdout)["nftables"]:
        counter = item.get("counter")
        if counter:
            found[counter["name"]] = int(counter["packets"])
    return found


class Uas:
    """sipp answering on the callee host and echoing RTP, on the generator's core."""

    def __init__(self, hosts: netns.Hosts, workdir: Path) -> None:
        scenario = workdir / "uas_echo_pcma.xml"
        scenario.write_text(UAS_SCENARIO)
        command = pinned(
            [
                "sipp", "-sf", str(scenario), "-i", CALLEE, "-p", str(SIP_PORT),
                "-mi", CALLEE, "-mp", str(UAS_MEDIA_PORT), "-rtp_echo", "-nostdin",
                "-max_socket", "60000", "-trace_err", "-error_file", str(workdir / "uas.err"),
            ],
            GENERATOR_CORE,
        )  # fmt: skip
        self.log = (workdir / "uas.log").open("wb")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", hosts.callee, *command],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# -- the systems under test -----------------------------------------------------------------------


T = TypeVar("T")


class System:
    name = ""
    sip_port = 0
    calls_done = 0
    """Calls completed through this system in this run (a profile's CPU per call)."""
    polls = 0
    """Requests the benchmark made to the system's status API so far (work it adds)."""

    def pids(self) -> list[int]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kernel_packets(self) -> int:
        return 0

    def kernel_work(self) -> tuple[int, int]:
        """(libnftables transactions, counter listings) of the kernel path so far."""
        return (0, 0)

    def relayed_packets(self) -> int:
        """RTP packets relayed for calls that ended (the kernel's and the legs'), when known."""
        return 0

    def idle(self, snapshot: Callable[[], T]) -> T:
        """Wait until the last step's calls are gone; `snapshot()` taken when they are, before
        any request the wait itself makes to the system that found them gone (the CPU counted
        up to then is the calls', not the benchmark's)."""
        return snapshot()


PROFILED = """import cProfile, runpy, sys, time
sys.argv[0] = "omlmedia"
profile = cProfile.Profile(time.process_time)
try:
    profile.runcall(runpy.run_module, "omlmedia", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.dump_stats({out!r})
"""
"""`omlmedia serve` under cProfile counting CPU time (the process's), not the time waited."""


class OmlmediaSystem(System):
    name = "omlmedia"
    kernel = False

    def __init__(self, workdir: Path, profile: bool = False) -> None:
        self.workdir = workdir
        self.server: harness.RunningServer | None = None
        self.profile = workdir / "server.prof" if profile else None
        """cProfile's output for the whole life of the server (``--profile``)."""

    def config(self, text: str) -> str:
        text = on_server_host(SERVER)(text)
        trunk = text.index("[[trunks]]")
        head, tail = text[:trunk], text[trunk:]
        tail = tail.replace('host = "127.0.0.1"', f'host = "{CALLEE}"', 1)
        tail = tail.replace(
            'trusted_sources = ["127.0.0.1/32"]',
            f'trusted_sources = ["{CALLER}/32", "{CALLEE}/32"]',
            1,
        )
        port_line = next(line for line in tail.splitlines() if line.startswith("port = "))
        tail = tail.replace(port_line, f"port = {SIP_PORT}", 1)
        text = head + tail
        return enable_kernel_forwarding(text) if self.kernel else text

    def start(self) -> None:
        self.server = harness.start_server(
            self.workdir,
            t1=0.5,
            media_timeout=600,
            edit_config=self.config,
            extra_args=("--log-level", "warning", "--rtp-ports", NETNS_RTP_PORTS),
            core=SERVER_CORE,
            python_args=(
                ("-c", PROFILED.format(out=str(self.profile)))
                if self.profile is not None
                else ("-m", "omlmedia")
            ),
        )
        self.sip_port = self.server.sip_port
        if self.kernel:
            kernel = self.server.status()["media"]["kernel"]
            if not kernel.get("active"):
                self.stop()
                raise RuntimeError(f"the kernel path is not active: {kernel.get('reason')}")

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
            if self.profile is not None and self.profile.exists():
                print_profile(self.profile, self.name, self.calls_done)

    def pids(self) -> list[int]:
        """The server and its children (the webhook worker), as Kamailio's are counted."""
        assert self.server is not None
        return process_tree(self.server.pid)

    def status(self) -> dict[str, Any]:
        """The server's status API (one HTTPS request: a TLS handshake and the whole status,
        2.5 ms of the server's CPU; counted in `polls`)."""
        assert self.server is not None
        self.polls += 1
        return self.server.status()

    def kernel_packets(self) -> int:
        kernel = self.status()["media"]["kernel"]
        return int(kernel.get("packets", 0)) if kernel.get("active") else 0

    def kernel_work(self) -> tuple[int, int]:
        kernel = self.status()["media"]["kernel"]
        return (int(kernel.get("transactions", 0)), int(kernel.get("listings", 0)))

    def relayed_packets(self) -> int:
        return int(self.status()["calls"]["relayed_packets"])

    def idle(self, snapshot: Callable[[], T]) -> T:
        """Until no call or dialog is left, polled every 0.1 s; `snapshot()` is taken before
        each poll and the one before the poll that found none left is returned, so a poll's own
        work is never in it. Transactions are not waited for: a BYE's stays completed for 64 T1
        (32 s here) to answer retransmissions, and costs nothing."""
        deadline = time.monotonic() + 30
        while True:
            taken = snapshot()
            sip = self.status()["sip"]
            if (sip["dialogs"] == 0 and sip["calls"] == 0) or time.monotonic() > deadline:
                return taken
            time.sleep(0.1)


class OmlmediaKernelSystem(OmlmediaSystem):
    name = "omlmedia-kernel"
    kernel = True


class KamailioRtpengine(System):
    name = "kamailio+rtpengine"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.rtpengine = Rtpengine(workdir, NETNS_ADDRESSES)
        self.process: subprocess.Popen[bytes] | None = None
        self.sip_port = SIP_PORT

    def start(self) -> None:
        self.rtpengine.start()
        config = self.workdir / "kamailio.cfg"
        config.write_text(
            KAMAILIO_CONFIG.format(
                server=SERVER,
                port=self.sip_port,
                ng_port=self.rtpengine.ng_port,
                callee=CALLEE,
                callee_port=SIP_PORT,
            )
        )
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        command = [binary, "-f", str(config), "-DD", "-E", "-Y", str(self.workdir)]
        command += ["-m", "64", "-M", "8"]
        with (self.workdir / "kamailio.log").open("wb") as output:
            self.process = subprocess.Popen(
                pinned(command, SERVER_CORE), stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_SECONDS
        log = self.workdir / "kamailio.log"
        while "Listening on" not in log.read_text(errors="replace"):
            status = self.process.poll()
            if status is not None or time.monotonic() > deadline:
                state = (
                    f"exited with status {status}"
                    if status is not None
                    else f"not listening after {READY_SECONDS:g} s"
                )
                raise RuntimeError(
                    f"kamailio {state} ({' '.join(command)}); {log}:\n"
                    + (log.read_text(errors="replace")[-3000:] or "(empty)")
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.rtpengine.kill()

    def pids(self) -> list[int]:
        assert self.process is not None
        return [*process_tree(self.process.pid), self.rtpengine.pid]


# -- one step -------------------------------------------------------------------------------------


@dataclass
class Row:
    system: str
    calls: int
    ok: bool
    attempted: int
    successful: int
    failed: int
    call_seconds: float
    process_cpu_s: float
    softirq_s: float
    cpu_s: float
    cpu_us_per_call_second: float
    process_us_per_call_second: float
    relayed_packets: int
    cpu_us_per_packet: float
    kernel_packets: int
    loss_to_uas_pct: float
    loss_back_pct: float
    rtt_p50_us: float
    rtt_p99_us: float
    rtt_samples: int
    load_average: tuple[float, float, float]
    error: str = ""
    sipp: dict[str, str] = field(default_factory=dict)


def rtt_from_trace(path: Path) -> list[float]:
    """Round trips (µs) in a tcpdump capture at the caller host: each RTP packet the UAC sent
    from a sampled media port, to the packet that came back to that port with its sequence
    number. A relay that renumbers (omlmedia's userspace relay outside transparent mode) shifts
    a call's numbers by a constant: per port, the shift is the most common difference between a
    returning packet's number and the last one sent."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_header = {1: 14, 113: 16, 276: 20}.get(linktype, 14)
    out: dict[int, list[tuple[float, int]]] = {}
    back: dict[int, list[tuple[float, int]]] = {}
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        packet = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        stamp = sec * 1e6 + (frac / 1000 if nano else frac)
        ip = packet[link_header:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        header = (ip[0] & 0x0F) * 4
        udp = ip[header:]
        if len(udp) < 8 + 12:
            continue
        sport, dport = struct.unpack(">HH", udp[:4])
        src = ip[12:16]
        seq = struct.unpack(">H", udp[8 + 2 : 8 + 4])[0]
        if src == bytes(map(int, CALLER.split("."))):
            out.setdefault(sport, []).append((stamp, seq))
        else:
            back.setdefault(dport, []).append((stamp, seq))
    rtts: list[float] = []
    for port, returned in back.items():
        sent_list = out.get(port, [])
        if not sent_list:
            continue
        shifts: dict[int, int] = {}
        i = 0
        for stamp, seq in returned:
            while i + 1 < len(sent_list) and sent_list[i + 1][0] <= stamp:
                i += 1
            if sent_list[i][0] <= stamp:
                shift = (seq - sent_list[i][1]) & 0xFFFF
                shifts[shift] = shifts.get(shift, 0) + 1
        if not shifts:
            continue
        shift = max(shifts, key=lambda k: shifts[k])
        sent_at = {seq: stamp for stamp, seq in sent_list}
        for stamp, seq in returned:
            start = sent_at.get((seq - shift) & 0xFFFF)
            if start is not None and 0 <= stamp - start < 5e6:
                rtts.append(stamp - start)
    return rtts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def sipp_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f, delimiter=";"))


def uac_command(
    system: System, workdir: Path, calls: int, total: int, call_seconds: float
) -> list[str]:
    """sipp placing `total` calls of `call_seconds` through `system`, `calls` of them kept up
    (its statistics in ``uac.csv`` of `workdir`), on the generator's core."""
    return pinned(
        [
            "sipp", *uac_scenario(workdir, call_seconds), f"{SERVER}:{system.sip_port}",
            "-s", "91234",
            "-i", CALLER, "-p", str(SIP_PORT), "-mi", CALLER, "-mp", str(UAC_MEDIA_PORT),
            "-r", f"{calls / call_seconds:.3f}", "-rp", "1000", "-l", str(calls),
            "-m", str(total), "-max_socket", "60000", "-nostdin", "-trace_stat",
            "-stf", str(workdir / "uac.csv"), "-fd", "1",
            "-trace_err", "-error_file", str(workdir / "uac.err"),
        ],
        GENERATOR_CORE,
    )  # fmt: skip


def settled_idle_rate(pids: list[int], limit: float = 20.0) -> float:
    """The processes' idle CPU rate (s per s), once their start-up is over: 2-second readings
    until one no longer falls below the one before it, give or take a tick (or `limit`
    seconds passed)."""
    deadline = time.monotonic() + limit
    previous = math.inf
    while True:
        cpu0, t0 = tree_cpu(pids), time.monotonic()
        time.sleep(2.0)
        rate = (tree_cpu(pids) - cpu0) / (time.monotonic() - t0)
        if rate >= previous - 0.005 or time.monotonic() > deadline:
            return rate
        previous = rate


def per_call(
    system: System, topology: netns.Topology, calls: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """`--fixed-calls`: exactly that many calls, `calls` kept up, and the system's processes'
    CPU time from just before the first to just after the last, less what they spend idle
    over as long (measured just before): CPU per call. Unlike the window's CPU per
    call-second, it counts the work calls cost whatever the load delays, so runs on a busy
    machine can be compared (the medians of a few)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pcap_dir = workdir / "pcap"
    if not pcap_dir.exists():
        pcap_dir.symlink_to(SIPP_PCAPS)
    call_seconds = call_length(args.call_seconds)
    pids = system.pids()
    idle_rate = settled_idle_rate(pids)
    uac = uac_command(system, workdir, calls, args.fixed_calls, call_seconds)
    relayed0, kernel0 = system.relayed_packets(), system.kernel_packets()
    work0 = system.kernel_work()
    main_pid = pids[0]
    main0, loop0 = tree_cpu([main_pid]), thread_cpu(main_pid)
    cpu0, started = tree_cpu(pids), time.monotonic()
    polls0 = system.polls
    with (workdir / "uac.log").open("wb") as log:
        sipp = subprocess.Popen(
            ["ip", "netns", "exec", topology.hosts.caller, *uac],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        pids = sorted(set(pids) | set(system.pids()))
        try:
            sipp.wait(args.fixed_calls * call_seconds / calls * 3 + 120)
        except subprocess.TimeoutExpired:
            sipp.kill()
            sipp.wait()
    end_tree, end_main, end_loop, ended = system.idle(
        lambda: (tree_cpu(pids), tree_cpu([main_pid]), thread_cpu(main_pid), time.monotonic())
    )
    # Every poll of the status API before the one that found the calls gone is in the span.
    polls = system.polls - polls0 - 1 if system.polls > polls0 else 0
    elapsed = ended - started
    cpu = end_tree - cpu0 - idle_rate * elapsed
    main = end_main - main0
    others = cpu + idle_rate * elapsed - main
    threads = main - (end_loop - loop0)
    relayed = system.relayed_packets() - relayed0
    userspace = relayed - (system.kernel_packets() - kernel0) if relayed else math.nan
    work1 = system.kernel_work()
    transactions, listings = work1[0] - work0[0], work1[1] - work0[1]
    rows = sipp_rows(workdir / "uac.csv")
    last = rows[-1] if rows else {}
    successful = int(last.get("SuccessfulCall(C)", "0") or 0)
    failed = int(last.get("FailedCall(C)", "0") or 0)
    retransmissions = int(last.get("Retransmissions(C)", "0") or 0)
    result = {
        "system": system.name,
        "calls": calls,
        "fixed_calls": args.fixed_calls,
        "successful": successful,
        "failed": failed,
        "cpu_s": cpu,
        "idle_cpu_per_s": idle_rate,
        "elapsed_s": elapsed,
        "cpu_ms_per_call": 1e3 * cpu / successful if successful else math.nan,
        "other_processes_ms_per_call": 1e3 * others / successful if successful else math.nan,
        "other_threads_ms_per_call": 1e3 * threads / successful if successful else math.nan,
        "userspace_packets_per_call": userspace / successful if successful else math.nan,
        "uac_retransmissions": retransmissions,
        "status_polls_in_span": polls,
        "nft_transactions_per_call": transactions / successful if successful else math.nan,
        "nft_listings_per_call": listings / successful if successful else math.nan,
        "load_average": os.getloadavg(),
    }
    print(
        f"  {system.name:>18} N={calls:<4} calls {successful}/{args.fixed_calls} ({failed} "
        f"failed) in {elapsed:.1f} s: CPU {cpu:.3f} s beyond idle ({idle_rate * 1e3:.1f} ms/s) "
        f"= {fmt(result['cpu_ms_per_call'], '.2f')} ms per call (idle included: the server's "
        f"threads beside its loop {fmt(result['other_threads_ms_per_call'], '.2f')}, the "
        f"processes beside it {fmt(result['other_processes_ms_per_call'], '.2f')}), RTP "
        "through the process "
        f"{fmt(result['userspace_packets_per_call'], '.1f')} packets per call, nftables "
        f"{fmt(result['nft_transactions_per_call'], '.2f')} transactions and "
        f"{fmt(result['nft_listings_per_call'], '.2f')} listings per call, "
        f"{retransmissions} SIP retransmissions by the UAC, {polls} status polls in the span  "
        "load avg "
        f"{result['load_average'][0]:.1f}",
        flush=True,
    )
    return result


def step(
    system: System,
    topology: netns.Topology,
    calls: int,
    args: argparse.Namespace,
    workdir: Path,
) -> Row:
    """N calls kept up through `system`; the window after one call length of ramp."""
    workdir.mkdir(parents=True, exist_ok=True)
    pcap_dir = workdir / "pcap"
    if not pcap_dir.exists():
        pcap_dir.symlink_to(SIPP_PCAPS)
    call_seconds = call_length(args.call_seconds)
    rate = calls / call_seconds
    ramp = call_seconds + 1.0
    total = math.ceil(rate * (ramp + args.duration + 1.0))
    hosts, receive_pids = topology.hosts, list(topology.receive_pids)
    background = 0.0 if receive_pids else idle_softirq(args.duration)
    stats = workdir / "uac.csv"
    uac = uac_command(system, workdir, calls, total, call_seconds)
    link = hosts.links()["caller"][1]
    first = math.ceil(rate * ramp)  # calls started in the last second before the window
    sampled = (UAC_MEDIA_PORT + 4 * first, UAC_MEDIA_PORT + 4 * (first + SAMPLED_CALLS - 1))
    trace_file = workdir / "caller.pcap"
    trace = subprocess.Popen(
        ["ip", "netns", "exec", hosts.caller, "tcpdump", "-i", link, "-s", "64", "-nn", "-U",
         "-w", str(trace_file), "-B", "8192",
         f"ip host {CALLER} and udp portrange {sampled[0]}-{sampled[1]}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    far = {name: read_counters(ns) for name, ns in (("uac", hosts.caller), ("uas", hosts.callee))}
    kernel_before = system.kernel_packets()
    started = time.monotonic()
    log = (workdir / "uac.log").open("wb")
    sipp = subprocess.Popen(
        ["ip", "netns", "exec", hosts.caller, *uac],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    pids = system.pids()
    time.sleep(max(0.0, started + ramp - time.monotonic()))
    pids = sorted(set(pids) | set(system.pids()))
    window_far = {n: read_counters(ns) for n, ns in (("uac", hosts.caller), ("uas", hosts.callee))}
    cpu0 = tree_cpu(pids)
    soft0 = tree_cpu(receive_pids) if receive_pids else _softirq()
    t0 = time.monotonic()
    time.sleep(args.duration)
    cpu1 = tree_cpu(pids)
    soft1 = tree_cpu(receive_pids) if receive_pids else _softirq()
    t1 = time.monotonic()
    window_far_end = {
        n: read_counters(ns) for n, ns in (("uac", hosts.caller), ("uas", hosts.callee))
    }
    try:
        sipp.wait(120 + call_seconds)
    except subprocess.TimeoutExpired:
        sipp.kill()
        sipp.wait()
    log.close()
    system.idle(lambda: None)
    trace.send_signal(signal.SIGINT)
    try:
        trace.wait(10)
    except subprocess.TimeoutExpired:
        trace.kill()
        trace.wait()
    after = {name: read_counters(ns) for name, ns in (("uac", hosts.caller), ("uas", hosts.callee))}
    kernel = system.kernel_packets() - kernel_before
    rows = sipp_rows(stats)
    last = rows[-1] if rows else {}
    seconds = t1 - t0
    in_window = [
        r for r in rows if t0 - started <= _elapsed(r.get("ElapsedTime(C)", "")) <= t1 - started
    ]
    current = [int(r.get("CurrentCall", "0") or 0) for r in in_window]
    call_seconds = (sum(current) / len(current) if current else calls) * seconds
    process_cpu = cpu1 - cpu0
    softirq = max(0.0, (soft1 - soft0) - background * seconds / args.duration)
    cpu = process_cpu + softirq

    def delta(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]], host: str, c: str) -> int:
        return b[host].get(c, 0) - a[host].get(c, 0)

    relayed = delta(window_far, window_far_end, "uas", "rtp_in") + delta(
        window_far, window_far_end, "uac", "rtp_in"
    )
    sent_uac = delta(far, after, "uac", "rtp_out")
    got_uas = delta(far, after, "uas", "rtp_in")
    sent_uas = delta(far, after, "uas", "rtp_out")
    got_uac = delta(far, after, "uac", "rtp_in")
    successful = int(last.get("SuccessfulCall(C)", "0") or 0)
    failed = int(last.get("FailedCall(C)", "0") or 0)
    attempted = int(last.get("TotalCallCreated", "0") or 0) or total
    rtts = rtt_from_trace(trace_file)
    loss_to = 100.0 * (1 - got_uas / sent_uac) if sent_uac else math.nan
    loss_back = 100.0 * (1 - got_uac / sent_uas) if sent_uas else math.nan
    ok = sipp.returncode == 0 and failed == 0 and successful > 0
    return Row(
        system.name,
        calls,
        ok and loss_to <= 0.1 and loss_back <= 0.1,
        attempted,
        successful,
        failed,
        call_seconds,
        process_cpu,
        softirq,
        cpu,
        1e6 * cpu / call_seconds if call_seconds else math.nan,
        1e6 * process_cpu / call_seconds if call_seconds else math.nan,
        relayed,
        1e6 * cpu / relayed if relayed else math.nan,
        kernel,
        loss_to,
        loss_back,
        percentile(rtts, 50),
        percentile(rtts, 99),
        len(rtts),
        os.getloadavg(),
        "" if ok else f"sipp exit {sipp.returncode}, {failed} failed: see {workdir}",
        {k: last.get(k, "") for k in ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)")},
    )


PROFILE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SIP parse and serialise", ("sip/message.py", "sip/grammar.py")),
    (
        "SIP transactions, dialogs, transport",
        (
            "sip/transaction.py",
            "sip/ua.py",
            "sip/dialog.py",
            "sip/transport.py",
            "sip/service.py",
            "sip/validation.py",
            "sip/digest.py",
            "sip/security.py",
        ),
    ),
    ("SDP", ("sip/sdp.py", "omlmedia/offer_answer.py")),
    (
        "B2BUA, routing, trunks",
        (
            "omlmedia/b2bua.py",
            "omlmedia/bridges.py",
            "omlmedia/router.py",
            "omlmedia/trunks.py",
            "omlmedia/targets.py",
            "omlmedia/transfers_sip.py",
        ),
    ),
    ("kernel rules (nftables)", ("media/kernelpath.py", "media/kernelpath_nft.py")),
    ("RTP legs, RTCP, media upkeep", ("media/", "omlmedia/upkeep.py")),
    ("records, queue log (SQLite writer)", ("omlmedia/storage.py", "sqlite3/")),
    (
        "events (publish, JSON, webhooks' outbox)",
        (
            "omlmedia/events.py",
            "omlmedia/callevents.py",
            "omlmedia/webhooks.py",
            "json/",
            "omlmedia/metrics.py",
        ),
    ),
    ("logging", ("logging/", "omlmedia/logs.py")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/")),
)
"""The parts of a call's CPU in a profile (`profile_split`): the first whose path fragment a
function's file contains (``/``-separated, so ``media/`` is every other media module)."""


def _part_of(file: str, function: str) -> str | None:
    if function == "<module>" or "importlib" in file or file.startswith("<frozen"):
        return "start-up (imports)"
    for part, fragments in PROFILE_PARTS:
        if any(f"/{fragment}" in file for fragment in fragments):
            return part
    if "/omlmedia/" in file and "/site-packages/" not in file:
        return "other omlmedia"
    return None


def profile_split(table: dict[Any, Any]) -> dict[str, float]:
    """Seconds of the profile by part of the call (`PROFILE_PARTS`): each function's own time
    goes to its part, and the own time of a function of no part (a builtin, ``re``,
    ``dataclasses``...) to its callers' parts, shared in proportion to the time each call
    edge spent (cProfile keeps edges, not stacks: an estimate where one helper serves
    several parts)."""
    parts: dict[str, float] = {}
    memo: dict[Any, dict[str, float]] = {}

    def shares(func: Any, depth: int) -> dict[str, float]:
        """How `func`'s own time divides between parts (fractions summing to 1)."""
        if func in memo:
            return memo[func]
        part = _part_of(func[0], func[2])
        if part is not None:
            memo[func] = {part: 1.0}
            return memo[func]
        callers = table.get(func, (0, 0, 0, 0, {}))[4]
        spent = sum(edge[3] for edge in callers.values())
        if depth > 40 or not callers or spent <= 0:
            memo[func] = {"unattributed (top level)": 1.0}
            return memo[func]
        memo[func] = {"unattributed (top level)": 1.0}  # a cycle: cut here
        mixed: dict[str, float] = {}
        for caller, edge in callers.items():
            for name, fraction in shares(caller, depth + 1).items():
                mixed[name] = mixed.get(name, 0.0) + fraction * edge[3] / spent
        memo[func] = mixed
        return mixed

    for func, entry in table.items():
        for name, fraction in shares(func, 0).items():
            parts[name] = parts.get(name, 0.0) + fraction * entry[2]
    return parts


def print_profile(path: Path, name: str, calls: int = 0, top: int = 25) -> None:
    """The profiled server's CPU by part of a call (`profile_split`: per call when `calls` is
    known), the functions where it spent the most time of their own, and the project's
    functions by cumulative time."""
    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1.0
    print(f"{name} profile ({path}): CPU time, {total:.2f} s in all", flush=True)
    print(f"  by part ({calls} calls; cProfile makes Python 2-3 times dearer, C not):")
    for part, seconds in sorted(profile_split(table).items(), key=lambda item: -item[1]):
        each = f"{1e3 * seconds / calls:7.2f} ms per call" if calls else ""
        print(f"  {100 * seconds / total:5.1f} %  {seconds:7.3f} s {each}  {part}", flush=True)
    print("  own time first:", flush=True)

    def show(ranked: list[tuple[Any, Any]]) -> None:
        for (file, line, function), (_, calls, own, cumulative, _) in ranked:
            where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
            print(
                f"  {100 * own / total:5.1f} %  {own:7.3f} s own {cumulative:7.3f} s cum "
                f"{calls:>8} calls  {function}  {where}",
                flush=True,
            )

    show(sorted(table.items(), key=lambda item: -item[1][2])[:top])
    print("  ... and the project's functions by cumulative time:", flush=True)
    ours = [
        item
        for item in table.items()
        if any(f"/{part}/" in item[0][0] for part in ("sip", "media", "omlmedia", "webrtc"))
        and "/site-packages/" not in item[0][0]
    ]
    show(sorted(ours, key=lambda item: -item[1][3])[:top])


def _softirq() -> float:
    return core_softirq_seconds(SERVER_CORE)


def idle_softirq(seconds: float) -> float:
    """Core 0's softirq time over `seconds` with no load of ours: the machine's background."""
    before = _softirq()
    time.sleep(seconds)
    return _softirq() - before


def _elapsed(text: str) -> float:
    """sipp's ElapsedTime(C), ``HH:MM:SS:mmm[...]``, in seconds."""
    parts = text.split(":")
    try:
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        ms = int(parts[3][:3]) if len(parts) > 3 else 0
    except (IndexError, ValueError):
        return -1.0
    return 3600 * h + 60 * m + s + ms / 1000


def print_row(r: Row) -> None:
    print(
        f"  {r.system:>18} N={r.calls:<4} {'ok ' if r.ok else 'BAD'} calls {r.successful}/"
        f"{r.attempted} ({r.failed} failed)  {r.call_seconds:6.0f} call-s  "
        f"CPU {r.process_cpu_s:6.3f} s + receive {r.softirq_s:6.3f} s = "
        f"{fmt(r.cpu_us_per_call_second, '.0f')} us/call-s "
        f"(processes alone {fmt(r.process_us_per_call_second, '.0f')}), "
        f"{r.relayed_packets} pkts relayed = {fmt(r.cpu_us_per_packet, '.2f')} us/pkt "
        f"({r.kernel_packets} by the kernel over the step)  "
        f"loss to UAS {fmt(r.loss_to_uas_pct, '.3f')} % back {fmt(r.loss_back_pct, '.3f')} %  "
        f"RTT p50 {fmt(r.rtt_p50_us, '.0f')} p99 {fmt(r.rtt_p99_us, '.0f')} us "
        f"({r.rtt_samples})  load avg {r.load_average[0]:.1f}"
        + (f"  {r.error}" if r.error else ""),
        flush=True,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = require_tools()
    if missing:
        raise SystemExit(f"cannot run: {', '.join(missing)} missing")
    calls = [int(n) for n in args.calls.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="kernel_sipp-"))
    print(f"work dir {workdir}", flush=True)
    makers: dict[str, Callable[[Path], System]] = {
        "omlmedia": lambda path: OmlmediaSystem(path, args.profile),
        "omlmedia-kernel": lambda path: OmlmediaKernelSystem(path, args.profile),
        "kamailio+rtpengine": KamailioRtpengine,
    }
    results: dict[str, list[Row]] = {}
    fixed: dict[str, list[dict[str, Any]]] = {}
    failures: dict[str, str] = {}
    with ExitStack() as stack:
        topology = stack.enter_context(
            netns.topology(f"oks{os.getpid() % 10000}", args.receive, args.receive_nice)
        )
        hosts = topology.hosts
        install_counters(hosts.caller, f"{UAC_MEDIA_PORT}-65535")
        install_counters(hosts.callee, str(UAS_MEDIA_PORT))
        uas = Uas(hosts, workdir)
        stack.callback(uas.stop)
        for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
            system = makers[name](workdir / name)
            try:
                system.start()
            except Exception as exc:  # the other systems still run; the run fails at its end
                system.stop()
                failures[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name} did not start: {failures[name]}", flush=True)
                results[name] = []
                continue
            print(f"{name} (pids {system.pids()}):", flush=True)
            rows: list[Row] = []
            try:
                if args.fixed_calls:
                    for n in calls:
                        done = per_call(system, topology, n, args, workdir / name / f"fixed{n}")
                        system.calls_done += done["successful"]
                        fixed.setdefault(name, []).append(done)
                    continue
                for n in calls:
                    r = step(system, topology, n, args, workdir / name / f"n{n}")
                    system.calls_done += r.successful
                    rows.append(r)
                    print_row(r)
                    if not r.ok:
                        break
            finally:
                system.stop()
            results[name] = rows
    if args.fixed_calls:
        return netns.summary(args, {}, per_call=fixed, did_not_start=failures)
    return summarize(results, args, failures)


def _ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0 (a window too short for the CPU counters' 10 ms ticks)."""
    return a / b if b else math.nan


def summarize(
    results: dict[str, list[Row]], args: argparse.Namespace, failures: dict[str, str]
) -> dict[str, Any]:
    print("\nlargest N with 0 failed calls and loss <= 0.1 % each way:")
    for name, rows in results.items():
        best = max((r.calls for r in rows if r.ok), default=0)
        print(
            f"  {name:>18}: {best}"
            + (f" (did not start: {failures[name]})" if name in failures else "")
        )
    print("CPU per call-second, ratio to Kamailio + rtpengine (to its processes alone):")
    ratios: dict[str, dict[int, tuple[float, float]]] = {}
    for n in sorted({r.calls for rows in results.values() for r in rows}):
        at = {name: next((r for r in rows if r.calls == n), None) for name, rows in results.items()}
        reference = at.get("kamailio+rtpengine")
        cells = []
        for name, r in at.items():
            if r is None:
                continue
            cell = f"{name} {fmt(r.cpu_us_per_call_second, '.0f')}" + ("" if r.ok else " [BAD]")
            if name != "kamailio+rtpengine" and reference is not None:
                high = _ratio(r.cpu_us_per_call_second, reference.cpu_us_per_call_second)
                low = _ratio(r.cpu_us_per_call_second, reference.process_us_per_call_second)
                ratios.setdefault(name, {})[n] = (high, low)
                cell += f" = {high:.2f}x ({low:.2f}x)"
            cells.append(cell)
        print(f"  N={n}: " + "; ".join(cells))
    return netns.summary(args, results, ratio_to_kamailio_rtpengine=ratios, did_not_start=failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    netns.add_arguments(
        parser, calls="100,200,400", targets="omlmedia,omlmedia-kernel,kamailio+rtpengine",
        what="systems",
    )  # fmt: skip
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run omlmedia under cProfile (slower: for where its time goes, not for its CPU)",
    )
    parser.add_argument(
        "--call-seconds",
        type=float,
        default=CALL_SECONDS,
        help=f"length of a call (default {CALL_SECONDS}, uac_pcap's; shorter cuts its audio, "
        "longer plays it again: e.g. 57.2 for seven plays)",
    )
    parser.add_argument(
        "--fixed-calls",
        type=int,
        default=0,
        metavar="M",
        help="instead of the window: M calls at each N and the CPU each costs the system",
    )
    args = parser.parse_args()
    netns.unwind_on_sigterm()
    summary = run(args)
    return 1 if summary["did_not_start"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
