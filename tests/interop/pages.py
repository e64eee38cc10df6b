"""What the tests of the supervisor pages share: one API request with the configured (admin)
token, an account made through the API, and the pages' login form."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from tests.interop.harness import API_TOKEN, RunningServer


def call(server: RunningServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The status and the JSON answer of one API request with the configured (admin) token."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}/api/v1{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def make_account(server: RunningServer, name: str, role: str, password: str) -> None:
    """Create account `name` with `role` and `password` through the API (201 or the test fails)."""
    status, body = call(
        server, "POST", "/accounts", {"name": name, "role": role, "password": password}
    )
    assert status == 201, body


async def log_in(page: Any, name: str, password: str) -> None:
    """Fill and send a page's login form (the agent page's labels: Username, Password, Log in)."""
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in", exact=True).click()
