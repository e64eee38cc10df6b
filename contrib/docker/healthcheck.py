"""The container's health check: ``GET /api/v1/health`` of the server in this container.

Exit 0 when healthy, 1 when not (Docker's HEALTHCHECK convention). The URL is
``$OMLMEDIA_HEALTH_URL`` (default ``https://127.0.0.1:8443/api/v1/health``: the demo's HTTPS port
on loopback). The API wants its bearer token: with ``$OMLMEDIA_API_TOKEN`` set, healthy means 200
``{"status": "ok"}``; without it, the API's own 401 answer over HTTPS is taken as alive (the
server's event loop and API answered), and any other outcome is not. The certificate is not
checked: the server generates a self-signed one unless configured, and this is loopback.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "https://127.0.0.1:8443/api/v1/health"


def check(url: str, token: str | None, timeout: float = 4.0) -> tuple[bool, str]:
    """Whether the server at `url` is healthy, and a one-line reason."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            body = json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and not token:
            return True, "alive (401: no OMLMEDIA_API_TOKEN given to check the API itself)"
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"no answer: {exc}"
    if body != {"status": "ok"}:
        return False, f"unexpected answer: {body!r}"
    return True, "ok"


def main() -> int:
    url = os.environ.get("OMLMEDIA_HEALTH_URL") or DEFAULT_URL
    healthy, reason = check(url, os.environ.get("OMLMEDIA_API_TOKEN") or None)
    print(f"{url}: {reason}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
