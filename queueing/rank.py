"""Order statistics over callers in arrival order: a Fenwick tree that grows by appending.

Positions in a queue are announced periodically to every waiting caller, so "how many callers of
this priority arrived before this one and are still here" must not cost a scan of the queue.
"""

from __future__ import annotations

from bisect import bisect_left


class ArrivalRank:
    """Alive/dead flags over increasing sequence numbers, with O(log n) rank queries."""

    __slots__ = ("_alive", "_dead", "_seqs", "_tree")

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._alive = bytearray()
        self._tree: list[int] = [0]
        self._dead = 0

    def __len__(self) -> int:
        return len(self._seqs) - self._dead

    def add(self, seq: int) -> None:
        """Append `seq`, which must be greater than every sequence number added before."""
        if self._seqs and seq <= self._seqs[-1]:
            raise ValueError("sequence numbers must increase")
        self._seqs.append(seq)
        self._alive.append(1)
        index = len(self._tree)
        low = index - (index & -index)
        self._tree.append(1 + self._prefix(index - 1) - self._prefix(low))

    def remove(self, seq: int) -> None:
        """Mark `seq` as gone; compacts once more than half of the entries are gone."""
        position = bisect_left(self._seqs, seq)
        if position == len(self._seqs) or self._seqs[position] != seq:
            raise KeyError(seq)
        if not self._alive[position]:
            raise KeyError(seq)
        self._alive[position] = 0
        self._dead += 1
        index = position + 1
        tree = self._tree
        while index < len(tree):
            tree[index] -= 1
            index += index & -index
        if self._dead > 64 and self._dead * 2 > len(self._seqs):
            self._compact()

    def rank(self, seq: int) -> int:
        """How many alive entries come before `seq`."""
        return self._prefix(bisect_left(self._seqs, seq))

    def _prefix(self, count: int) -> int:
        total = 0
        tree = self._tree
        while count > 0:
            total += tree[count]
            count -= count & -count
        return total

    def _compact(self) -> None:
        seqs = [s for s, alive in zip(self._seqs, self._alive, strict=True) if alive]
        self._seqs = seqs
        self._alive = bytearray(b"\x01" * len(seqs))
        self._dead = 0
        tree = [0] + [1] * len(seqs)
        for index in range(1, len(tree)):
            parent = index + (index & -index)
            if parent < len(tree):
                tree[parent] += tree[index]
        self._tree = tree
