"""A partition assignor that gives every partition to one member: the group's other members stand by.

The learner group runs on it: one learner learns the whole ``labels`` log (a student is one model, so its
labels cannot be split among members), and a second learner process waits, a group member with nothing
assigned, until the first one leaves or is dropped; the group then hands it every partition. Each member
states, when it joins, how many labels its student has learned; the leader picks the member that has
learned most (the one working so far keeps the partitions; ties go to the lowest member id), so a standby
never takes over from a learner further along.

>>> from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata as Meta
>>> class Cluster:
...     def partitions_for_topic(self, topic): return {0, 1, 2, 3}
>>> members = {"a": Meta(0, ["labels"], encode_progress(0)), "b": Meta(0, ["labels"], encode_progress(5200))}
>>> out = SoleOwnerAssignor(lambda: 0).assign(Cluster(), members)
>>> [p for _, p in out["b"].partitions()], out["a"].partitions()
([0, 1, 2, 3], [])
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from streamer.kafka.member_assignor import MemberAssignor

log = logging.getLogger(__name__)


def encode_progress(learned: int) -> bytes:
    return orjson.dumps({"learned": learned})


def decode_progress(data: bytes | None) -> int:
    """A member's learned-label count; 0 for user data this assignor did not write."""
    try:
        return int(orjson.loads(data or b"{}").get("learned", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


class SoleOwnerAssignor(MemberAssignor):
    """Every subscribed partition to the member that has learned most (see the module docstring).

    ``progress`` is called each time the member joins its group.
    """

    name = "babybear-sole-owner"

    def __init__(self, progress: Callable[[], int]) -> None:
        self.progress = progress

    def user_data(self) -> bytes:
        return encode_progress(self.progress())

    def assign(self, cluster, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owner = min(members, key=lambda m: (-decode_progress(members[m].user_data), m))
        topics: dict[str, list[int]] = collections.defaultdict(list)
        for topic in sorted(members[owner].subscription):
            topics[topic] = sorted(cluster.partitions_for_topic(topic) or ())
        log.info("assignment: every partition to %s (%d labels learned); %d member(s) standing by", owner,
                 decode_progress(members[owner].user_data), len(members) - 1)
        return {m: ConsumerProtocolMemberAssignment(self.version, sorted(topics.items()) if m == owner else [], b"")
                for m in members}
