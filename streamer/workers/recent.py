"""A bounded memory of recently handled keys: the idempotent-consumer check of the workers.

A producer that is not idempotent (the embedded broker has no idempotent producer) retries a
request whose answer it lost, and the broker may then hold the record twice. The workers remember
the keys of what they handled lately (the student: label ids; the teacher: escalation id and
time) and skip a copy, counting it; a key older than the last ``size`` ones is forgotten. A key is
added once what it stands for is handled, so a batch handed back is handled again.

>>> recent = RecentKeys(2)
>>> for key in ("a", "b", "c"):
...     recent.add(key)
>>> "a" in recent, "b" in recent, "c" in recent, len(recent)
(False, True, True, 2)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable


class RecentKeys:
    """The last ``size`` distinct keys seen, oldest forgotten first."""

    def __init__(self, size: int, keys: Iterable[Hashable] = ()) -> None:
        self.size = size
        self.keys: OrderedDict[Hashable, None] = OrderedDict()
        self.add_many(keys)

    def add(self, key: Hashable) -> None:
        """Remember ``key`` (as the newest, should it be there already); the oldest goes beyond ``size``."""
        self.add_many((key,))

    def add_many(self, keys: Iterable[Hashable]) -> None:
        """:meth:`add` for each of ``keys`` in turn (the oldest forgotten once, at the end: the same keys remain).

        >>> recent = RecentKeys(3, "abc"); recent.add_many("dbe"); list(recent)
        ['d', 'b', 'e']
        """
        kept = self.keys
        for key in keys:
            kept[key] = None
            kept.move_to_end(key)
        while len(kept) > self.size:
            kept.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(self.keys)
