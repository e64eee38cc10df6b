from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queueing.rank import ArrivalRank


def test_rank_counts_alive_entries_before_a_sequence_number() -> None:
    rank = ArrivalRank()
    for seq in (3, 5, 8, 13):
        rank.add(seq)
    rank.remove(5)
    assert [rank.rank(s) for s in (3, 8, 13)] == [0, 1, 2]
    assert len(rank) == 3


def test_rank_rejects_decreasing_or_unknown_sequence_numbers() -> None:
    rank = ArrivalRank()
    rank.add(2)
    with pytest.raises(ValueError):
        rank.add(2)
    with pytest.raises(KeyError):
        rank.remove(7)
    rank.remove(2)
    with pytest.raises(KeyError):
        rank.remove(2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 400)), max_size=400))
def test_rank_matches_a_sorted_list_through_compaction(ops: list[tuple[bool, int]]) -> None:
    rank = ArrivalRank()
    alive: list[int] = []
    seq = 0
    for add, pick in ops:
        if add or not alive:
            seq += 1
            rank.add(seq)
            alive.append(seq)
        else:
            rank.remove(alive.pop(pick % len(alive)))
        assert len(rank) == len(alive)
        for s in alive[:: max(1, len(alive) // 7)]:
            assert rank.rank(s) == alive.index(s)
