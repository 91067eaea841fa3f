"""A bounded memory of recently handled keys: the idempotent-consumer check of the workers.

A producer that is not idempotent (the embedded broker has no idempotent producer) retries a
request whose answer it lost, and the broker may then hold the record twice. The workers remember
the keys of what they handled lately (the student: label ids; the teacher: escalation id and
time) and skip a copy, counting it; a key older than the last ``size`` ones is forgotten.

>>> recent = RecentKeys(2)
>>> [recent.seen(k) for k in ("a", "b", "a", "c", "a")]
[False, False, True, False, False]
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
            self.seen(key)

    def seen(self, key: Hashable) -> bool:
        """``True`` when ``key`` is among the last ones (it is then not added again); else remember it."""
        if key in self.keys:
            return True
        self.add(key)
        return False

    def add(self, key: Hashable) -> None:
        self.keys[key] = None
        if len(self.keys) > self.size:
            self.keys.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(self.keys)
