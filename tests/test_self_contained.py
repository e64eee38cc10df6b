"""The suite's guard against reading beside the repository (tests/conftest.py) is armed."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT, OutsideRepositoryRead, outside_repository


def test_a_sibling_of_the_work_tree_cannot_be_read() -> None:
    sibling = ROOT.parent / "shared" / "conformance" / "rfc4475" / "EXPECTED.tsv"
    with pytest.raises(OutsideRepositoryRead):
        sibling.read_bytes()
    with pytest.raises(OutsideRepositoryRead):
        os.listdir(ROOT.parent)


def test_the_work_tree_and_system_paths_stay_readable() -> None:
    assert (ROOT / "setup.cfg").read_bytes()
    assert not outside_repository(ROOT / "tests" / "sip" / "fixtures" / "torture")
    assert not outside_repository("/usr/share")
    assert not outside_repository(ROOT)
    assert outside_repository(str(ROOT) + "-copy/x")
