"""A partition assignor that gives each partition back to the member holding answered-but-uncommitted records of it.

A member that loses the broker for longer than its session timeout is dropped from its group; when it comes
back, its offset commits are refused (the group has moved on), yet everything it answered is already on the
output topics. With a plain assignor its partitions could go to another member, which would answer those
events again. With this one each member states, when it joins, how far it has answered each partition it has
not been able to commit (its *claims*); the group leader gives every claimed partition to the member with the
furthest claim and spreads the rest evenly. The member then seeks past what it answered and commits it
(:class:`~streamer.workers.group_worker.GroupWorker`), so nothing is answered twice.

Without claims (every normal rebalance, where offsets are committed before partitions move) it is an even
round-robin spread. Members that do not know it fall back to ``roundrobin``, which every worker also offers.

>>> from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata as Meta
>>> from aiokafka.structs import TopicPartition as TP
>>> class Cluster:
...     def partitions_for_topic(self, topic): return {0, 1, 2, 3}
>>> members = {"a": Meta(0, ["events"], encode_claims({})),
...            "b": Meta(0, ["events"], encode_claims({TP("events", 3): 120, TP("events", 2): 7}))}
>>> out = ResumeAssignor(dict).assign(Cluster(), members)
>>> sorted(out["a"].partitions()), sorted(out["b"].partitions())
([TopicPartition(topic='events', partition=0), TopicPartition(topic='events', partition=1)], \
[TopicPartition(topic='events', partition=2), TopicPartition(topic='events', partition=3)])
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.structs import TopicPartition

from streamer.kafka.member_assignor import MemberAssignor

log = logging.getLogger(__name__)

#: partition -> the next offset to commit (every record before it has been answered and acknowledged)
Claims = dict[TopicPartition, int]


def encode_claims(claims: Mapping[TopicPartition, int]) -> bytes:
    return orjson.dumps([[tp.topic, tp.partition, offset] for tp, offset in sorted(claims.items())])


def decode_claims(data: bytes | None) -> Claims:
    """A member's claims; nothing for user data this assignor did not write."""
    try:
        return {TopicPartition(str(t), int(p)): int(o) for t, p, o in orjson.loads(data or b"[]")}
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return {}


class ResumeAssignor(MemberAssignor):
    """Claimed partitions to their furthest claimer, the rest spread evenly (see the module docstring).

    ``claims`` is called each time the member joins its group.
    """

    name = "babybear-resume"

    def __init__(self, claims: Callable[[], Claims]) -> None:
        self.claims = claims

    def user_data(self) -> bytes:
        return encode_claims(self.claims())

    def assign(self, cluster, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        partitions: list[TopicPartition] = []
        for topic in sorted({t for m in members.values() for t in m.subscription}):
            partitions += [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        owner: dict[TopicPartition, str] = {}
        furthest: dict[TopicPartition, int] = {}
        for member_id, meta in sorted(members.items()):
            for tp, offset in decode_claims(meta.user_data).items():
                if tp.topic in meta.subscription and offset > furthest.get(tp, -1):
                    owner[tp], furthest[tp] = member_id, offset
        counts = collections.Counter({member_id: 0 for member_id in members})
        counts.update(owner[tp] for tp in partitions if tp in owner)
        for tp in partitions:
            if tp not in owner:
                candidates = [m for m in sorted(members) if tp.topic in members[m].subscription]
                owner[tp] = min(candidates, key=lambda m: counts[m])
                counts[owner[tp]] += 1
        if furthest:
            log.info("assignment resumes claimed partitions: %s",
                     {f"{tp.topic}/{tp.partition}": (owner[tp], o) for tp, o in sorted(furthest.items())})
        by_member: dict[str, dict[str, list[int]]] = {m: collections.defaultdict(list) for m in members}
        for tp in partitions:
            by_member[owner[tp]][tp.topic].append(tp.partition)
        return {m: ConsumerProtocolMemberAssignment(self.version, sorted(topics.items()), b"")
                for m, topics in by_member.items()}
