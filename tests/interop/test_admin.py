"""Accounts, tokens and the audit log of a running `omlmedia serve`, across a restart.

An administrator (the configured token) creates a reporting account scoped to `sales` and a
token for it; the token reads what its role and scope allow and is refused the rest; the server
stops and starts again on the same data directory: the account, the token, its scope and the
audit log are all still there, a revoked token stays revoked, and the account logs in with its
password for a session token of its own.
"""

from __future__ import annotations

from pathlib import Path

from tests.interop.harness import start_server
from tests.interop.pages import call, stopped


def test_accounts_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    workdir = tmp_path / "server"
    server = start_server(workdir)
    try:
        status, rita = call(
            server,
            "POST",
            "/accounts",
            {"name": "rita", "role": "reporting", "password": "long-enough", "scope": ["sales"]},
        )
        assert status == 201, rita
        status, made = call(server, "POST", "/tokens", {"account": "rita", "label": "crm"})
        assert status == 201, made
        token = made["token"]
        status, gone = call(server, "POST", "/tokens", {"integration": "old", "role": "admin"})
        assert call(server, "DELETE", f"/tokens/{gone['id']}")[0] == 200
        status, queues = call(server, "GET", "/queues", token=token)
        assert status == 200 and [q["queue"] for q in queues["queues"]] == ["sales"]
        assert call(server, "GET", "/queues/support", token=token)[0] == 403
        assert call(server, "POST", "/agents/agent1/pause", {}, token=token)[0] == 403
        assert call(server, "GET", "/accounts", token=token)[0] == 403
        assert call(server, "GET", "/status", token=gone["token"])[0] == 401
    finally:
        stopped(server)
    assert token not in server.log()

    server = start_server(workdir)
    try:
        status, queues = call(server, "GET", "/queues", token=token)
        assert status == 200 and [q["queue"] for q in queues["queues"]] == ["sales"]
        assert call(server, "GET", "/status", token=gone["token"])[0] == 401
        status, account = call(server, "GET", "/accounts/rita")
        assert status == 200 and account["scope"] == ["sales"] and account["origin"] == "api"
        status, tokens = call(server, "GET", "/tokens?account=rita")
        assert [t["label"] for t in tokens["tokens"]] == ["crm"]
        status, session = call(
            server, "POST", "/sessions", {"name": "rita", "password": "long-enough"}, token=""
        )
        assert status == 201 and session["label"] == "session", session
        assert call(server, "GET", "/queues/sales", token=session["token"])[0] == 200
        assert call(server, "GET", "/queues/support", token=session["token"])[0] == 403
        status, audit = call(server, "GET", "/audit?actor=bootstrap")
        assert [e["action"] for e in audit["entries"]] == [
            "account.create",
            "token.create",
            "token.create",
            "token.revoke",
        ]
    finally:
        stopped(server)
