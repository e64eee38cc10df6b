"""The route table with the routes created through the API: matched before the file's, in their
own order whether they name an exact user (a DID, found by a dictionary) or a pattern."""

from __future__ import annotations

import re
from pathlib import Path

from omlmedia.config import Route, RouteAction
from omlmedia.router import RouteTable
from tests.omlmedia.test_directory import write_config


def queue(user: str | None, name: str, pattern: str | None = None) -> Route:
    return Route(
        RouteAction.QUEUE,
        user=user,
        pattern=re.compile(pattern) if pattern is not None else None,
        trunk=name,
    )


def test_the_first_of_the_apis_routes_wins_exact_or_pattern_then_the_files(
    tmp_path: Path,
) -> None:
    _, config = write_config(tmp_path)
    table = RouteTable(
        config,
        (
            queue("5550001", "sales"),
            queue(None, "billing", r"^555\d+$"),
            queue("5550002", "support"),  # after the pattern: never reached for 5550002
            queue("5550001", "billing"),  # a second route for the same DID: the first wins
        ),
    )
    targets = {
        user: found[0].target if (found := table.route_for(user)) else None
        for user in ("5550001", "5550002", "5559999", "sales", "nothing")
    }
    assert targets == {
        "5550001": "queue:sales",
        "5550002": "queue:billing",
        "5559999": "queue:billing",
        "sales": "queue:sales",  # the file's route
        "nothing": None,
    }
    table.set_added((queue("sales", "billing"),))  # the cache is dropped with the change
    found = table.route_for("sales")
    assert found is not None and found[0].target == "queue:billing"
    table.set_added(())
    found = table.route_for("sales")
    assert found is not None and found[0].target == "queue:sales"


def test_a_thousand_dids_are_found_without_trying_each(tmp_path: Path) -> None:
    _, config = write_config(tmp_path)
    dids = tuple(queue(f"55510{i:05d}", "sales") for i in range(1000))
    table = RouteTable(config, dids)
    calls = 0
    original = Route.apply

    def counting(route: Route, user: str) -> str | None:
        nonlocal calls
        calls += 1
        return original(route, user)

    Route.apply = counting  # type: ignore[method-assign,assignment]
    try:
        found = table.route_for("5551000999")
    finally:
        Route.apply = original  # type: ignore[method-assign]
    assert found is not None and found[0].user == "5551000999"
    assert calls == 1
