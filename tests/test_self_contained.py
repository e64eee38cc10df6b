"""The suite's guard against reading beside the repository (tests/conftest.py) is armed."""

from __future__ import annotations

import os

import pytest

from tests.conftest import _SIBLINGS, ROOT, OutsideRepositoryRead, outside_repository


def test_the_parent_of_the_work_tree_cannot_be_listed() -> None:
    with pytest.raises(OutsideRepositoryRead):
        os.listdir(ROOT.parent)


@pytest.mark.skipif(not _SIBLINGS, reason="nothing lies beside this clone")
def test_a_sibling_of_the_work_tree_cannot_be_read() -> None:
    sibling = ROOT.parent / sorted(_SIBLINGS)[0]
    with pytest.raises(OutsideRepositoryRead):
        if sibling.is_dir():
            os.listdir(sibling)
        else:
            sibling.read_bytes()


def test_a_file_of_a_directory_beside_the_tree_is_refused() -> None:
    siblings = frozenset({"shared"})
    shared = ROOT.parent / "shared" / "conformance" / "rfc4475" / "EXPECTED.tsv"
    assert outside_repository(shared, siblings)
    assert outside_repository(ROOT.parent, siblings)
    assert not outside_repository(ROOT.parent / "made-later" / "x", siblings)


def test_the_work_tree_and_system_paths_stay_readable() -> None:
    assert (ROOT / "setup.cfg").read_bytes()
    assert not outside_repository(ROOT / "tests" / "sip" / "fixtures" / "torture")
    assert not outside_repository("/usr/share")
    assert not outside_repository(ROOT)
