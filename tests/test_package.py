"""The wheel stands alone: built from the tree, installed into a fresh venv, it serves and plays.

One wheel is built (``python -m build``: sdist, then the wheel from the sdist, as a release is)
from the files the Docker build context holds (.dockerignore), and installed with its dependencies
into a new venv in a temporary directory. Every check then runs the venv's own programs with the
working directory outside the repository, so what answers is the wheel's code and data, never the
tree's: the pages (``ui/``, shipped as ``webrtc/ui/``), the sounds (``media/sounds/``) and the
demo configuration (``omlmedia/demo.toml``).

The serving test starts ``omlmedia serve`` on the embedded demo (free ports on 127.0.0.1), fetches
the agent page and the web caller page over HTTPS, asks the health and status API (and runs the
image's healthcheck script against it), and places a real call with sipp into the demo's ``moh``
route, reading the RTP it gets back on a port of its own. A missing tool fails (never skips):
`make test` installs them.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from media.g711 import PCMA, PCMU
from tests.interop.harness import SCENARIOS, free_port, run_sipp

ROOT = Path(__file__).resolve().parents[1]
HEALTHCHECK = ROOT / "contrib" / "docker" / "healthcheck.py"
API_TOKEN = "package-test-token"
DEMO_PASSWORD = "package-secret"


def _version() -> str:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    return setup["metadata"]["version"]


@dataclass
class Installed:
    """The wheel, the venv it is installed in, and a working directory outside the repository."""

    wheel: Path
    venv: Path
    home: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def program(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _docker_context(dest: Path) -> Path:
    """A copy of what .dockerignore lets into the image build (an allow-list: ``*``, then ``!path``
    lines, then ``**/pattern`` exclusions). The wheel is built from it, as the Dockerfile does, so
    a file the package needs that the image's build context leaves out fails here."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore must stay an allow-list"
    allowed = [line[1:].rstrip("/") for line in lines[1:] if line.startswith("!")]
    excluded = [line.removeprefix("**/") for line in lines[1:] if not line.startswith("!")]
    assert all(line.startswith(("!", "**/")) for line in lines[1:]), lines
    ignore = shutil.ignore_patterns(*excluded)
    for name in allowed:
        source, target = ROOT / name, dest / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _step(command: list[str], cwd: Path, what: str, timeout: float = 600) -> None:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel and install it (dependencies from the package index) into a fresh venv."""
    if find_spec("build") is None:
        pytest.fail("the `build` package is missing: run `make test`, which installs it")
    work = tmp_path_factory.mktemp("package")
    dist, venv, home = work / "dist", work / "venv", work / "home"
    home.mkdir()
    seconds: dict[str, float] = {}
    start = time.monotonic()
    context = _docker_context(work / "context")
    _step([sys.executable, "-m", "build", "--outdir", str(dist), str(context)], work, "build")
    seconds["build"] = time.monotonic() - start
    wheels = sorted(dist.glob("omlmedia-*.whl"))
    assert len(wheels) == 1, wheels
    start = time.monotonic()
    # A venv without pip of its own (ensurepip costs seconds); the test's pip installs into it,
    # without compiling every installed module to bytecode first (3 of its 8 s): what the
    # programs import compiles as they run, as in any venv.
    _step([sys.executable, "-m", "venv", "--without-pip", str(venv)], work, "venv")
    python = str(venv / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile"]
    install.append(str(wheels[0]))
    _step(install, home, "pip install of the wheel")
    seconds["install"] = time.monotonic() - start
    print(f"wheel built in {seconds['build']:.1f} s, installed in {seconds['install']:.1f} s")
    return Installed(wheels[0], venv, home, seconds)


def test_wheel_carries_the_pages_the_sounds_and_the_demo(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line for line in wheel.read(metadata).decode().splitlines() if "Requires-Dist" in line
        ]
    pages = {f"webrtc/ui/{p.relative_to(ROOT / 'ui').as_posix()}" for p in (ROOT / "ui").rglob("*")}
    sounds = {p.relative_to(ROOT).as_posix() for p in (ROOT / "media" / "sounds").rglob("*")}
    pages = {n for n in pages if "." in n.rsplit("/", 1)[-1]}
    sounds = {n for n in sounds if "." in n.rsplit("/", 1)[-1]}
    assert {"webrtc/ui/agent/index.html", "webrtc/ui/call/index.html"} <= pages
    assert {
        "media/sounds/moh.wav",
        "media/sounds/en/welcome.wav",
        "media/sounds/es/welcome.wav",
    } <= (sounds)
    assert pages - names == set()
    assert sounds - names == set()
    assert "omlmedia/demo.toml" in names
    assert not any(n.startswith(("tests/", "ui/", "benchmarks/")) for n in names)
    assert not any("sipmessage" in line for line in requires), requires


def test_version_is_the_one_of_setup_cfg(installed: Installed) -> None:
    result = installed.run(installed.program("omlmedia"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"omlmedia {_version()}"


def test_the_installed_code_and_data_are_the_wheels_not_the_trees(installed: Installed) -> None:
    probe = (
        "import json, media, omlmedia, webrtc.app as app\n"
        "from media.player import load, sound_path\n"
        "moh = sound_path('moh')\n"
        "samples = load(moh, 8000)\n"
        "print(json.dumps({'omlmedia': omlmedia.__file__, 'media': media.__file__,\n"
        "    'ui': str(app.UI_DIR), 'moh': str(moh), 'samples': int(samples.size),\n"
        "    'peak': int(abs(samples.astype('int32')).max())}))\n"
    )
    result = installed.run(installed.program("python"), "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    site = installed.venv.resolve()
    for key in ("omlmedia", "media", "ui", "moh"):
        assert Path(found[key]).resolve().is_relative_to(site), (key, found[key])
        assert not Path(found[key]).resolve().is_relative_to(ROOT), (key, found[key])
    assert (Path(found["ui"]) / "agent" / "index.html").is_file()
    assert found["samples"] >= 8000 * 5  # seconds of music at 8 kHz, not a stub
    assert found["peak"] > 1000


# -- a running server ------------------------------------------------------------------------


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    sip_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, token: str | None = None) -> tuple[int, str, str]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.http_port}{path}", headers=headers
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                body = response.read().decode(errors="replace")
                return response.status, response.headers.get("Content-Type", ""), body
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), ""


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[Served]:
    """``omlmedia serve`` of the venv on the embedded demo, on free ports of 127.0.0.1."""
    ports = {name: free_port() for name in ("sip", "tls", "http")}
    pbx = free_port(pair=True)
    rtp_low = 31000 + (os.getpid() % 8) * 1000
    log_path = installed.home / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                installed.program("omlmedia"),
                "serve",
                "--listen=127.0.0.1",
                f"--sip-port={ports['sip']}",
                f"--sip-tls-port={ports['tls']}",
                f"--http-port={ports['http']}",
                f"--rtp-ports={rtp_low}-{rtp_low + 999}",
                f"--data-dir={installed.home / 'data'}",
                f"--demo-pbx=127.0.0.1:{pbx}",
                f"--demo-password={DEMO_PASSWORD}",
                f"--api-token={API_TOKEN}",
            ],
            cwd=installed.home,
            env=installed.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Served(process, log_path, ports["http"], ports["sip"])
    deadline = time.monotonic() + 30
    while "omlmedia ready" not in server.log():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("omlmedia serve did not become ready:\n" + server.log()[-4000:])
        time.sleep(0.1)
    yield server
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, "serve did not stop cleanly:\n" + server.log()[-4000:]
    assert "Traceback" not in server.log(), server.log()[-6000:]


@pytest.mark.interop
def test_installed_server_serves_the_agent_and_web_caller_pages(served: Served) -> None:
    status, kind, body = served.get("/agent/")
    assert (status, kind.split(";")[0]) == (200, "text/html"), (status, kind)
    assert "agent.js" in body
    assert served.get("/agent/agent.js")[0] == 200
    status, kind, body = served.get("/call/support")
    assert (status, kind.split(";")[0]) == (200, "text/html"), (status, kind)
    assert "call.js" in body
    assert served.get("/call-ui/call.js")[0] == 200
    assert served.get("/call/not-allowed")[0] == 404


@pytest.mark.interop
def test_installed_server_reports_health_and_status(served: Served) -> None:
    assert served.get("/api/v1/health")[0] == 401  # the API wants its token, health included
    status, _, body = served.get("/api/v1/health", API_TOKEN)
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = served.get("/api/v1/status", API_TOKEN)
    assert status == 200
    assert json.loads(body)["sip"]["calls"] == 0


@pytest.mark.interop
def test_the_images_healthcheck_passes_on_the_installed_server(
    installed: Installed, served: Served
) -> None:
    def check(token: str | None, port: int = served.http_port) -> int:
        env = installed.env()
        env["OMLMEDIA_HEALTH_URL"] = f"https://127.0.0.1:{port}/api/v1/health"
        env.pop("OMLMEDIA_API_TOKEN", None)
        if token is not None:
            env["OMLMEDIA_API_TOKEN"] = token
        python = installed.program("python")
        command = [python, str(HEALTHCHECK)]
        result = subprocess.run(
            command, cwd=installed.home, env=env, capture_output=True, timeout=30, check=False
        )
        return result.returncode

    assert check(API_TOKEN) == 0
    assert check("not-the-token") == 1
    assert check(None) == 0  # no token to give: the API's 401 over HTTPS shows it alive
    assert check(API_TOKEN, port=free_port()) == 1  # nothing listens there


class _RtpSink:
    """A UDP port of the test, offered in the caller's SDP: counts and keeps what arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)
        self.port = 0
        for _ in range(50):
            port = free_port(pair=True)
            try:
                self.sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            self.port = port
            break
        assert self.port, "no free RTP port for the test"
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(2048))
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.mark.interop
def test_installed_server_plays_music_on_hold_to_a_sipp_caller(
    served: Served, tmp_path: Path
) -> None:
    sink = _RtpSink()
    try:
        result = run_sipp(
            [
                "-sf",
                str(SCENARIOS / "uac_listen.xml"),
                f"127.0.0.1:{served.sip_port}",
                "-s",
                "moh",
                "-i",
                "127.0.0.1",
                "-p",
                "0",
                "-mp",
                str(free_port(pair=True)),
                "-key",
                "rtp_port",
                str(sink.port),
                "-m",
                "1",
            ],
            tmp_path,
            timeout=60,
        )
    finally:
        sink.close()
    assert result.returncode == 0, result.output + result.errors
    assert result.count("SuccessfulCall") == 1
    rtp = [p for p in sink.packets if len(p) > 12 and p[0] >> 6 == 2]
    assert len(rtp) >= 100, f"{len(rtp)} RTP packets in a 3 s call:\n{served.log()[-3000:]}"
    codec = {0: PCMU, 8: PCMA}[rtp[0][1] & 0x7F]
    audio = np.concatenate([codec.decode(p[12:]) for p in rtp]).astype(np.float64)
    rms = float(np.sqrt(np.mean(audio**2)))
    assert rms > 300, rms  # music, not silence
