"""Schemathesis over the whole OpenAPI document of a running `omlmedia serve`: no 5xx, every
answer matches its documented status, content type, headers and schema, invalid requests are
refused, and every method the document does not list answers 405 with ``Allow``.

Run as an administrator (the configured token), TLS verification off (the test certificate is
self-signed), with a fixed seed and a bounded number of examples per operation. Left out:

- the event stream's body (``x-stream``: ``GET /api/v1/events`` is documented, but an SSE or
  WebSocket stream never ends, so it is not fuzzed; tests/interop/test_events_e2e.py covers it);
- operations the document marks ``x-undocumented`` (a route without an entry in
  `omlmedia.openapi.OPERATIONS`; tests/omlmedia/test_openapi.py fails for them, naming them);
- the ``positive_data_acceptance`` check: the API refuses, with a 400 naming the field, requests
  that JSON Schema cannot tell from valid ones (``until`` before ``since``, a scope naming a queue
  the configuration does not know, a token for neither an account nor an integration).

A body over the API's size limit is refused with 413, which the negative-data check is told to
expect. Schemathesis probes the server with a NUL byte in a header: aiohttp refuses it (400),
and the server logs that as one warning line, so its log holds no traceback at all.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import API_TOKEN, RunningServer, start_server

MAX_EXAMPLES = 20
SEED = 1

CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
"""


def _unexpected_tracebacks(log: str) -> list[str]:
    """Log lines with a traceback: none, not even for Schemathesis's malformed-header probes
    (aiohttp's refusal of those is one warning line, `omlmedia.logs`)."""
    return [line for line in log.splitlines() if "Traceback" in line]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server of its own; it must stop cleanly with no traceback but the probes'."""
    running = start_server(tmp_path / "server")
    yield running
    assert running.stop() == 0, running.log()[-4000:]
    unexpected = _unexpected_tracebacks(running.log())
    assert not unexpected, "\n".join(unexpected)[-6000:]


def _document(server: RunningServer) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{server.http_port}/api/v1/openapi.json"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        document: dict[str, Any] = json.load(response)
    return document


def test_schemathesis_finds_nothing_over_the_whole_document(
    server: RunningServer, tmp_path: Path
) -> None:
    document = _document(server)
    operations = [op for ops in document["paths"].values() for op in ops.values()]
    left_out = [
        op["operationId"] for op in operations if op.get("x-stream") or op.get("x-undocumented")
    ]
    assert len(operations) - len(left_out) >= 20
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"https://127.0.0.1:{server.http_port}/api/v1/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "-H",
        f"Authorization: Bearer {API_TOKEN}",
        "--tls-verify",
        "false",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    for operation_id in left_out:
        command += ["--exclude-operation-id", operation_id]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
