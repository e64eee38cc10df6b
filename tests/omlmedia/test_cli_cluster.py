"""The command line on a cluster's node: serve's start-up summary says whose ACD the node runs
(the cluster's shared one over Redis, or its own), and check-config warns (exit 0) when a shared
ACD keeps its records in each node's SQLite, where the nodes' figures would not add up."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from omlmedia.cli import main
from omlmedia.config import load_config, load_demo_config
from omlmedia.server import banner

SECRET = b"0123456789abcdef0123456789abcdef"

NODE = f"""
[api]
token_sha256 = "{hashlib.sha256(b"token").hexdigest()}"
[cluster]
redis_url = "redis://127.0.0.1:6390/0"
node = "a"
secret_file = "secret"
acd = "shared"
[cluster.nodes.a]
sip = "127.0.0.1:5070"
[cluster.nodes.b]
sip = "127.0.0.1:5080"
"""

POSTGRESQL = '[storage]\ndsn = "postgresql://omlmedia@127.0.0.1:5432/omlmedia"\n'


def node_config(tmp_path: Path, text: str = NODE) -> Path:
    (tmp_path / "secret").write_bytes(SECRET)
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_banner_of_a_node_sharing_the_acd_names_redis_and_the_node(tmp_path: Path) -> None:
    lines = banner(load_config(node_config(tmp_path))).splitlines()
    assert "  ACD: shared over Redis (node a)" in lines
    assert "  ACD: this node's own" not in lines


def test_the_banner_of_a_node_with_its_own_acd_says_so(tmp_path: Path) -> None:
    assert "  ACD: this node's own" in banner(load_demo_config()).splitlines()
    local = node_config(tmp_path, NODE.replace('acd = "shared"\n', ""))
    lines = banner(load_config(local)).splitlines()
    assert "  ACD: this node's own" in lines
    assert not [line for line in lines if "shared over Redis" in line]


def test_check_config_warns_that_a_shared_acd_on_sqlite_keeps_each_nodes_records_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(node_config(tmp_path))]) == 0  # a warning, not an error
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path / 'node.toml'}: OK\n")
    warnings = [line for line in captured.err.splitlines() if "cluster.acd" in line]
    assert len(warnings) == 1, captured.err
    assert warnings[0].startswith("omlmedia: warning: cluster.acd: ")
    assert "SQLite" in warnings[0] and "storage.dsn" in warnings[0], warnings[0]


@pytest.mark.parametrize(
    "text",
    [NODE + POSTGRESQL, NODE.replace('acd = "shared"\n', "")],
    ids=["shared-acd-on-postgresql", "own-acd-on-sqlite"],
)
def test_check_config_does_not_warn_about_the_acd_when_the_records_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    assert main(["check-config", str(node_config(tmp_path, text))]) == 0
    assert "cluster.acd" not in capsys.readouterr().err
