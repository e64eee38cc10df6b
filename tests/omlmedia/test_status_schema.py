"""The status's ``cluster.acd`` in the OpenAPI document: every figure the server reports is
documented with its type, an empty object (the node's ACD is its own) is valid, and a figure
missing or of the wrong type is not. tests/cluster/test_acd_metrics.py checks a real shared-ACD
node's status against the served document."""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema_rs  # schemathesis's validator (the test extra)
import pytest

from omlmedia.acd_shared import SharedAcdStats
from omlmedia.openapi import OPERATIONS
from tests.omlmedia.test_metrics_acd import ACD

STATUS = OPERATIONS[("GET", "/api/v1/status")].responses[200]
assert STATUS is not None
SHARED = STATUS["properties"]["cluster"]["properties"]["acd"]["anyOf"][1]


def status(acd: dict[str, Any]) -> dict[str, Any]:
    return {"cluster": {"crossnode": {}, "acd": acd, "internal_admitted": 0}, "queues": {}}


def test_every_figure_of_the_shared_acd_is_documented_and_required() -> None:
    figures = {field.name for field in dataclasses.fields(SharedAcdStats)}
    figures |= {"owner", "epoch", "followed", "pending", "remote_offers", "skipped"}
    assert set(SHARED["properties"]) == figures
    assert set(SHARED["required"]) == figures
    assert all(p.get("description") for p in SHARED["properties"].values())


def test_a_shared_acd_status_and_a_node_of_its_own_both_match() -> None:
    jsonschema_rs.validate(STATUS, status(ACD))
    jsonschema_rs.validate(STATUS, status({}))


@pytest.mark.parametrize(
    "acd",
    [
        {k: v for k, v in ACD.items() if k != "epoch"},
        {**ACD, "owner": 1},
        {**ACD, "followed": 3},
        {**ACD, "snapshot_seconds": "slow"},
    ],
    ids=["a-figure-missing", "owner-not-boolean", "followed-not-a-string", "seconds-not-number"],
)
def test_a_shared_acd_status_that_strays_from_the_document_does_not_match(
    acd: dict[str, Any],
) -> None:
    with pytest.raises(jsonschema_rs.ValidationError):
        jsonschema_rs.validate(STATUS, status(acd))
