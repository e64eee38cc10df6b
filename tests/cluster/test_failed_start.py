"""A cluster node that cannot start (its HTTPS port taken) exits at once with status 2 and a
clear error, like a standalone one (`tests/interop/test_lifecycle.py`): its stores, Redis and
PostgreSQL clients and the shared ACD, already started, are stopped first. Left running, the
loop's shutdown waited on their tasks and the node hung until killed (60 s in a CI run)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import crossnode, harness
from tests.cluster import postgres, redis


def test_a_cluster_node_whose_https_port_is_taken_exits_at_once_with_a_clear_error(
    shared: redis.Redis, pg: postgres.Postgres, tmp_path: Path
) -> None:
    ports = harness._ports(41000)
    config = harness.server_config(tmp_path / "data", ports)
    secret = tmp_path / "cluster.secret"
    secret.write_bytes(crossnode.SECRET)
    config += (
        f'\n[storage]\ndsn = "{postgres.fresh_database(pg)}"\nnode = "a"\n'
        f'\n[cluster]\nredis_url = "{shared.url}"\nnode = "a"\nacd = "shared"\n'
        f'secret_file = "{secret}"\n[cluster.nodes.a]\nsip = "127.0.0.1:{ports["sip"]}"\n'
    )
    (tmp_path / "omlmedia.toml").write_text(config)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", ports["http"]))
        taken.listen()
        began = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "omlmedia", "serve", "--config", "omlmedia.toml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - began
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output[-3000:]
    assert "cannot start" in output and "address already in use" in output
    assert "Traceback" not in output
    assert took < 15, (took, output[-3000:])  # the start itself included; it hung 60 s
