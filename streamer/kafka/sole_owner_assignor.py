"""A partition assignor that gives every partition to one member: the group's other members stand by.

The learner group runs on it: one learner learns the whole ``labels`` log (a student is one model, so its
labels cannot be split among members), and a second learner process waits, a group member with nothing
assigned, until the first one leaves or is dropped; the group then hands it every partition. Each member
states, when it joins, how many labels its student has learned and whether it holds the partitions now;
the leader picks the member that has learned most, the one holding them on a tie (then the lowest member
id), so a standby never takes over from a learner as far along or further.

>>> from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata as Meta
>>> class Cluster:
...     def partitions_for_topic(self, topic): return {0, 1, 2, 3}
>>> def owner(members):
...     out = SoleOwnerAssignor(lambda: (0, False)).assign(Cluster(), members)
...     return [m for m, a in out.items() if a.partitions()]
>>> owner({"a": Meta(0, ["labels"], encode_progress(0, True)), "b": Meta(0, ["labels"], encode_progress(5200, False))})
['b']
>>> owner({"a": Meta(0, ["labels"], encode_progress(0, False)), "b": Meta(0, ["labels"], encode_progress(0, True))})
['b']
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from streamer.kafka.member_assignor import MemberAssignor

log = logging.getLogger(__name__)


def encode_progress(learned: int, holding: bool) -> bytes:
    return orjson.dumps({"learned": learned, "holding": holding})


def decode_progress(data: bytes | None) -> tuple[int, bool]:
    """A member's learned-label count and whether it holds the partitions; nothing for user data this assignor did
    not write."""
    try:
        progress = orjson.loads(data or b"{}")
        return int(progress.get("learned", 0)), bool(progress.get("holding", False))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0, False


class SoleOwnerAssignor(MemberAssignor):
    """Every subscribed partition to the member that has learned most (see the module docstring).

    ``progress`` (labels learned, whether this member holds the partitions) is called each time the member joins
    its group.
    """

    name = "babybear-sole-owner"

    def __init__(self, progress: Callable[[], tuple[int, bool]]) -> None:
        self.progress = progress

    def user_data(self) -> bytes:
        return encode_progress(*self.progress())

    def assign(self, cluster, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        def rank(member: str) -> tuple[int, bool, str]:
            learned, holding = decode_progress(members[member].user_data)
            return -learned, not holding, member

        owner = min(members, key=rank)
        topics: dict[str, list[int]] = collections.defaultdict(list)
        for topic in sorted(members[owner].subscription):
            topics[topic] = sorted(cluster.partitions_for_topic(topic) or ())
        log.info("assignment: every partition to %s (%d labels learned); %d member(s) standing by", owner,
                 decode_progress(members[owner].user_data)[0], len(members) - 1)
        return {m: ConsumerProtocolMemberAssignment(self.version, sorted(topics.items()) if m == owner else [], b"")
                for m in members}
