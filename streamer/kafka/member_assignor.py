"""The base of this system's partition assignors: each member tells the group leader something when it joins.

aiokafka sends a member's :meth:`MemberAssignor.metadata` (its subscription and user data) with every
join; the leader's :meth:`assign` reads every member's and decides. Subclasses say what a member
tells (:meth:`user_data`) and how the leader assigns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata


class MemberAssignor(ABC):
    """A partition assignor whose members send user data of their own when they join."""

    name: str
    version = 0

    @abstractmethod
    def user_data(self) -> bytes:
        """What this member tells the leader, read each time it joins."""

    @abstractmethod
    def assign(self, cluster, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        """The leader's decision: every member's assignment, from their metadata."""

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, list(topics), self.user_data())

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
