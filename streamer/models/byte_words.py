"""Words found by their UTF-8 bytes in numpy: an index from a word's bytes to its row in a word cache.

``str.split`` makes a Python string of every word, and a dictionary lookup then hashes it and compares it with the
kept key: about 0.4 µs a word on a busy learner, most of it in memory. Here a batch of texts is one byte array:
words are runs of bytes between ASCII whitespace, hashed together (a polynomial hash of each run, mixed), found in
an open-addressing table, and their bytes compared with the row's kept bytes, all in a few numpy operations per
batch. A word whose hash matches no row, or whose bytes differ from the row its hash found (a collision), is left
to the caller (the dictionary), so the index is exact whatever the hash gives.

>>> import numpy as np
>>> index = ByteWords()
>>> index.add(["good", "film"])
>>> words = index.words(np.frombuffer("film  good\\x1fodd".encode(), np.uint8))
>>> index.rows_of(words).tolist(), words.at.tolist(), words.lengths.tolist()
([1, 0, -1], [0, 6, 11], [4, 4, 3])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: the bytes that end a word: the ASCII characters ``str.split`` splits on
WORD_END = np.zeros(256, dtype=bool)
WORD_END[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: its powers never vanish modulo 2**64
_LENGTH = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64's finaliser
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


class Words(NamedTuple):
    """The words of a byte array: their bytes end to end, where each starts in those and in the array, its length,
    its hash, and where each byte of :attr:`data` lies in its word."""

    data: np.ndarray
    starts: np.ndarray
    at: np.ndarray
    lengths: np.ndarray
    hashes: np.ndarray
    within: np.ndarray


class ByteWords:
    """Rows of words by their UTF-8 bytes (row ``i`` is the ``i``-th word added)."""

    def __init__(self) -> None:
        self._powers = np.ones(1, dtype=np.uint64)
        self.clear()

    def clear(self) -> None:
        """Forget every word."""
        self.slots = np.full(1 << 12, -1, dtype=np.int64)  # open addressing, at most half full
        self.hashes = np.zeros(1024, dtype=np.uint64)  # each row's hash
        self.starts = np.zeros(1024, dtype=np.int64)  # where each row's bytes start in :attr:`data`
        self.lengths = np.zeros(1024, dtype=np.int64)
        self.data = np.zeros(1 << 14, dtype=np.uint8)
        self.rows = 0
        self.used = 0  # bytes in :attr:`data`

    def powers(self, n: int) -> np.ndarray:
        """The first ``n`` (at least) powers of the hash's base, modulo 2**64."""
        if len(self._powers) < n:
            base = np.full(max(n, 2 * len(self._powers)), _BASE, dtype=np.uint64)
            base[0] = 1
            self._powers = np.cumprod(base)
        return self._powers

    def hash(self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, within: np.ndarray) -> np.ndarray:
        """The hash of each word of ``data`` (words end to end, none empty; ``within``: each byte's place in its
        word)."""
        if not len(lengths):
            return np.zeros(0, dtype=np.uint64)
        h = np.add.reduceat(data.astype(np.uint64) * self.powers(int(lengths.max()))[within], starts)
        h ^= lengths.astype(np.uint64) * _LENGTH
        h ^= h >> _S30
        h *= _MIX1
        h ^= h >> _S27
        h *= _MIX2
        h ^= h >> _S31
        return h

    def words(self, text: np.ndarray) -> Words:
        """The words of UTF-8 bytes ``text`` (runs of bytes other than :data:`WORD_END`), hashed."""
        inside = ~WORD_END[text]
        edges = np.flatnonzero(np.diff(np.concatenate(([False], inside, [False])).view(np.int8)))
        at, lengths = edges[::2], edges[1::2] - edges[::2]
        starts = np.cumsum(lengths) - lengths
        data = text[inside]
        within = np.arange(len(data)) - np.repeat(starts, lengths)
        return Words(data, starts, at, lengths, self.hash(data, starts, lengths, within), within)

    def add(self, words: list[str]) -> None:
        """Give the next rows to ``words`` (words of ``str.split``: none empty, none holding whitespace), in order."""
        new = self.words(np.frombuffer(b" ".join(w.encode("utf-8", "surrogatepass") for w in words), np.uint8))
        first, n = self.rows, len(words)
        if len(new.lengths) != n:
            raise ValueError("a word to add is empty or holds whitespace")
        if first + n > len(self.hashes):
            size = max(2 * len(self.hashes), first + n)
            self.hashes, self.starts, self.lengths = (np.resize(a, size) for a in (self.hashes, self.starts,
                                                                                  self.lengths))
        if self.used + len(new.data) > len(self.data):
            self.data = np.resize(self.data, max(2 * len(self.data), self.used + len(new.data)))
        self.data[self.used:self.used + len(new.data)] = new.data
        self.starts[first:first + n] = self.used + new.starts
        self.lengths[first:first + n] = new.lengths
        self.hashes[first:first + n] = new.hashes
        self.used += len(new.data)
        self.rows += n
        if 2 * self.rows > len(self.slots):  # more than half full: a table at least twice as large, filled again
            self.slots = np.full(1 << (2 * self.rows).bit_length(), -1, dtype=np.int64)
            self._place(np.arange(self.rows))
        else:
            self._place(np.arange(first, first + n))

    def _place(self, rows: np.ndarray) -> None:
        """Put ``rows`` in free slots, each at the first free one from where its hash points (linear probing)."""
        mask = len(self.slots) - 1
        slot = (self.hashes[rows] & np.uint64(mask)).astype(np.int64)
        while len(rows):
            free = self.slots[slot] < 0
            first = np.zeros(len(rows), dtype=bool)
            first[np.flatnonzero(free)[np.unique(slot[free], return_index=True)[1]]] = True  # one row a free slot
            self.slots[slot[first]] = rows[first]
            rows, slot = rows[~first], (slot[~first] + 1) & mask

    def rows_of(self, words: Words) -> np.ndarray:
        """Each word's row; -1 for a word not added (or, rarely, one whose hash is another word's)."""
        mask = len(self.slots) - 1
        slot = (words.hashes & np.uint64(mask)).astype(np.int64)
        found = np.full(len(words.lengths), -1, dtype=np.int64)
        todo = np.arange(len(found))
        while len(todo):
            row = self.slots[slot[todo]]
            live = row >= 0
            hit = np.zeros(len(todo), dtype=bool)
            hit[live] = self.hashes[row[live]] == words.hashes[todo[live]]
            found[todo[hit]] = row[hit]
            todo = todo[live & ~hit]
            slot[todo] = (slot[todo] + 1) & mask
        same = found >= 0
        same[same] = self.lengths[found[same]] == words.lengths[same]
        kept = self.data.take(np.repeat(self.starts[np.where(same, found, 0)], words.lengths) + words.within,
                              mode="clip")  # each word's row's bytes (any bytes where the lengths differ)
        differs = np.flatnonzero(kept != words.data)
        if len(differs):
            same[np.searchsorted(words.starts, differs, side="right") - 1] = False
        found[~same] = -1
        return found


__all__ = ["WORD_END", "ByteWords", "Words"]
