"""The suite's guard against reading beside the repository (tests/conftest.py) is armed."""

from __future__ import annotations

import os

import pytest

from tests import conftest
from tests.conftest import ROOT, OutsideRepositoryRead, outside_repository


def test_the_parent_of_the_work_tree_cannot_be_listed() -> None:
    with pytest.raises(OutsideRepositoryRead):
        os.listdir(ROOT.parent)


def test_a_file_of_a_directory_beside_the_tree_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The guard refuses before the file system is asked: the directory need not exist.
    monkeypatch.setattr(conftest, "_SIBLINGS", frozenset({"fixtures-beside"}))
    beside = ROOT.parent / "fixtures-beside" / "EXPECTED.tsv"
    with pytest.raises(OutsideRepositoryRead):
        beside.read_bytes()
    with pytest.raises(OutsideRepositoryRead):
        os.listdir(beside.parent)


def test_only_what_lay_beside_the_tree_is_refused() -> None:
    siblings = frozenset({"fixtures-beside"})
    assert outside_repository(ROOT.parent / "fixtures-beside" / "x.tsv", siblings)
    assert outside_repository(ROOT.parent, siblings)
    assert not outside_repository(ROOT.parent / "made-later" / "x", siblings)


def test_the_work_tree_and_system_paths_stay_readable() -> None:
    assert (ROOT / "setup.cfg").read_bytes()
    assert not outside_repository(ROOT / "tests" / "sip" / "fixtures" / "torture")
    assert not outside_repository("/usr/share")
    assert not outside_repository(ROOT)
