"""The kernel-forwarding drop-in verifies with the unit and grants CAP_NET_ADMIN only."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.test_deploy import ROOT, _run, _tool, system_root  # noqa: F401 (fixture)

KERNEL_DROP_IN = ROOT / "contrib" / "systemd" / "kernel-forwarding.conf"


def test_kernel_forwarding_drop_in_verifies_and_grants_net_admin_alone(
    system_root: Path,  # noqa: F811
) -> None:
    drop_ins = system_root / "etc" / "systemd" / "system" / "omlmedia.service.d"
    shutil.copy(KERNEL_DROP_IN, drop_ins / "kernel-forwarding.conf")
    analyze = _tool("systemd-analyze")
    code, output = _run([analyze, "verify", f"--root={system_root}", "omlmedia.service"], ROOT)
    assert (code, output) == (0, "")
    settings = [
        line
        for line in KERNEL_DROP_IN.read_text().splitlines()
        if line and not line.startswith(("#", "["))
    ]
    assert settings == [
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
    ]
