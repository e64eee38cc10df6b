"""The aiohttp floor of issue 12: releases before 3.12.14 carry known request-smuggling and leak
advisories, so the package never admits them and the environment never runs one."""

from __future__ import annotations

import configparser
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FLOOR = Version("3.12.14")


def test_setup_cfg_admits_no_aiohttp_before_3_12_14() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    requirements = [
        Requirement(line)
        for line in parser["options"]["install_requires"].splitlines()
        if line.strip()
    ]
    [aiohttp] = [r for r in requirements if r.name == "aiohttp"]
    assert not aiohttp.specifier.contains("3.12.13")
    assert aiohttp.specifier.contains(str(FLOOR))


def test_the_installed_aiohttp_is_past_the_advisories() -> None:
    assert Version(version("aiohttp")) >= FLOOR
