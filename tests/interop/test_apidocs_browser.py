"""The API's docs page (``/api/docs``) in headless Chromium against a running `omlmedia serve`:
without a token it reads the OpenAPI document and lists every operation, with its roles; the
strict CSP refuses nothing the page needs; the filter is reached and used with the keyboard."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.browser import chromium
from tests.interop.harness import RunningServer, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "server")
    yield running
    assert running.stop() == 0, running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


def _document(server: RunningServer) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{server.http_port}/api/v1/openapi.json"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        document: dict[str, Any] = json.load(response)
    return document


async def test_the_docs_page_lists_every_operation(server: RunningServer, tmp_path: Path) -> None:
    document = _document(server)
    expected = sorted(
        f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops
    )
    problems: list[str] = []
    async with chromium(tmp_path / "browser", 440.0) as context:
        page = await context.new_page()
        page.on(
            "console",
            lambda msg: problems.append(msg.text) if msg.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        response = await page.goto(f"https://127.0.0.1:{server.http_port}/api/docs")
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        await page.wait_for_selector("body[data-operations]", timeout=10_000)
        titles = await page.locator("#operations section.operation h3").all_inner_texts()
        assert sorted(" ".join(t.split()) for t in titles) == expected
        assert await page.locator("#toc li a").count() == len(expected)
        status = await page.locator("#status").inner_text()
        assert status == f"{len(expected)} operations."
        pause = page.locator("#op-post-api-v1-agents-name-pause")
        assert "Roles: admin, supervisor" in await pause.inner_text()
        assert await page.locator("#schema-Problem").count() == 1

        for _ in range(6):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.id") == "filter":
                break
        assert await page.evaluate("document.activeElement.id") == "filter"
        await page.keyboard.type("/api/v1/tokens")
        visible = await page.locator("#operations section.operation:visible h3").all_inner_texts()
        assert visible and all("/api/v1/tokens" in t for t in visible)
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.tagName") == "A"
    assert not problems, problems
