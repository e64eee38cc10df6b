"""The deploy files pass the linters this machine has (docs/deploy.md says which, and what not).

No container engine runs here, so the image is never built in a test: the Dockerfile is linted
(hadolint, a test extra), the compose file validated (``docker-compose config``, Debian's), the
systemd unit and its drop-in verified and scored for exposure (``systemd-analyze``) in a
throw-away root. A missing linter fails the test: `make test` installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "contrib" / "systemd" / "omlmedia.service"
DROP_IN = ROOT / "contrib" / "systemd" / "low-ports.conf"
# systemd-analyze rates exposure 0.0 (locked down) ... 10.0 (none); the unit is at 1.7 today.
MAX_EXPOSURE = 2.5


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs the linters")
    return found


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.fixture
def system_root(tmp_path: Path) -> Path:
    """A root with the system's own units, the service and its drop-in, and a stand-in program
    at /opt/omlmedia/bin/omlmedia (verify checks that ExecStart is executable)."""
    units = Path("/usr/lib/systemd/system")
    if not units.is_dir():
        units = Path("/lib/systemd/system")
    shutil.copytree(units, tmp_path / "usr" / "lib" / "systemd" / "system", symlinks=True)
    service = tmp_path / "etc" / "systemd" / "system"
    (service / "omlmedia.service.d").mkdir(parents=True)
    shutil.copy(UNIT, service / "omlmedia.service")
    shutil.copy(DROP_IN, service / "omlmedia.service.d" / "low-ports.conf")
    program = tmp_path / "opt" / "omlmedia" / "bin" / "omlmedia"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return tmp_path


def test_systemd_unit_and_drop_in_verify_without_a_warning(system_root: Path) -> None:
    analyze = _tool("systemd-analyze")
    code, output = _run([analyze, "verify", f"--root={system_root}", "omlmedia.service"], ROOT)
    # verify exits 0 on an unknown key or a bad value and only says so: any output is a failure.
    assert (code, output) == (0, "")


def test_systemd_unit_is_hardened(system_root: Path) -> None:
    analyze = _tool("systemd-analyze")
    command = [
        analyze,
        "security",
        "--offline=yes",
        f"--root={system_root}",
        f"--threshold={int(MAX_EXPOSURE * 10)}",
        "--no-pager",
        "omlmedia.service",
    ]
    code, output = _run(command, ROOT)
    assert code == 0, output
    text = UNIT.read_text()
    for line in (
        "DynamicUser=yes",
        "StateDirectory=omlmedia",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "AmbientCapabilities=\n",
    ):
        assert line in text, line
    assert "CAP_NET_BIND_SERVICE" not in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in DROP_IN.read_text()


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    code, output = _run([hadolint, "--no-color", "Dockerfile"], ROOT)
    assert (code, output) == (0, "")
    text = (ROOT / "Dockerfile").read_text()
    assert "libopus0" in text
    assert "HEALTHCHECK" in text and "healthcheck.py" in text
    assert "\nUSER 10001:10001\n" in text


def test_compose_file_is_valid_and_needs_its_secrets() -> None:
    compose = _tool("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMLMEDIA_")}
    command = [compose, "--file", str(ROOT / "docker-compose.yml"), "config"]
    code, output = _run(command, ROOT, env)
    assert code != 0 and "OMLMEDIA_API_TOKEN" in output, output  # no default secret
    env |= {"OMLMEDIA_API_TOKEN": "a-token", "OMLMEDIA_DEMO_PASSWORD": "a-password"}
    code, output = _run(command, ROOT, env)
    assert code == 0, output
    assert "OMLMEDIA_API_TOKEN: a-token" in output
    assert "OMLMEDIA_DEMO_PASSWORD: a-password" in output
    assert "--api-token" not in output and "--demo-password" not in output  # not in `ps`
    assert "network_mode: host" in output
