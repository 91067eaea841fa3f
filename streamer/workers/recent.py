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
        for key in keys:
            self.add(key)

    def add(self, key: Hashable) -> None:
        """Remember ``key`` (as the newest, should it be there already); the oldest goes beyond ``size``."""
        self.keys[key] = None
        self.keys.move_to_end(key)
        if len(self.keys) > self.size:
            self.keys.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(self.keys)
