"""What the cluster is, and the client timings and durability that follow from it.

Apache Kafka holds clients to documented limits (:data:`KAFKA_LIMITS`); the embedded broker
(Tansu) has quirks of its own (it holds a JoinGroup for half the session timeout and every fetch
for the whole fetch wait, and has no idempotent producer). A worker therefore asks the broker
what it is before it builds a client (:func:`probe_broker`): the cluster id tells the embedded
broker apart, the number of brokers bounds the replication factor, and an InitProducerId request
(what an idempotent producer sends first) tells whether idempotence is there. Timings the user
did not set come from the profile: Apache Kafka's own client defaults on Kafka, short ones only
on the embedded broker.

>>> kafka = BrokerProfile(kind="kafka", brokers=5, idempotence=True)
>>> kafka.timings(), kafka.replication_factor(), kafka.min_insync_replicas(3)
(Timings(session_timeout=45.0, heartbeat_interval=3.0, fetch_max_wait=0.5), 3, 2)
>>> BrokerProfile(kind="embedded", brokers=1, idempotence=False).timings()
Timings(session_timeout=4.0, heartbeat_interval=1.0, fetch_max_wait=0.05)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

BROKER_KINDS = ("auto", "kafka", "embedded")
#: Cluster ids that mark the embedded broker: ours, and Tansu's own default.
EMBEDDED_CLUSTER_IDS = ("babybear-embedded", "tansu_cluster")


@dataclass(frozen=True)
class KafkaLimits:
    """Apache Kafka's documented defaults that clients must stay within (broker, consumer and producer configs,
    https://kafka.apache.org/documentation/#configuration). A cluster may be configured otherwise; these are what
    a stock cluster, like the one in docker-compose.yml, enforces."""

    group_min_session_timeout: float = 6.0  # group.min.session.timeout.ms = 6000: JoinGroup below it is refused
    group_max_session_timeout: float = 1800.0  # group.max.session.timeout.ms = 1800000
    heartbeat_share_of_session: float = 1 / 3  # heartbeat.interval.ms: "no higher than 1/3 of" session.timeout.ms
    max_poll_interval: float = 300.0  # max.poll.interval.ms = 300000: longer between polls and the member is dropped
    consumer_request_timeout: float = 30.0  # request.timeout.ms = 30000 (consumer): a fetch must answer within it
    message_max_bytes: int = 1_048_588  # message.max.bytes: the largest record batch a broker accepts
    min_insync_replicas: int = 1  # min.insync.replicas must be at least 1 and at most the replication factor


KAFKA_LIMITS = KafkaLimits()


@dataclass(frozen=True)
class Timings:
    """Consumer-group timing, in seconds."""

    session_timeout: float
    heartbeat_interval: float
    fetch_max_wait: float


#: Apache Kafka's own client defaults (session.timeout.ms 45000 since Kafka 3.0, heartbeat.interval.ms 3000,
#: fetch.max.wait.ms 500): a broker outage shorter than the session moves no partition.
KAFKA_TIMINGS = Timings(session_timeout=45.0, heartbeat_interval=3.0, fetch_max_wait=0.5)
#: The embedded broker holds each JoinGroup for half the session timeout and each fetch for the whole wait
#: (shared/notes/embedded-broker.md): short timings keep a group join near 2 s and every hop near 50 ms.
EMBEDDED_TIMINGS = Timings(session_timeout=4.0, heartbeat_interval=1.0, fetch_max_wait=0.05)


@dataclass(frozen=True)
class BrokerProfile:
    """The cluster as a client sees it: its kind, how many brokers it has, whether producers can be idempotent."""

    kind: str  # "kafka" | "embedded"
    brokers: int = 1
    idempotence: bool = False
    cluster_id: str | None = None

    @classmethod
    def assumed(cls, broker_kind: str = "auto") -> "BrokerProfile":
        """The profile before any probe: Kafka's rules (``auto`` assumes Kafka), no idempotence."""
        return cls(kind="embedded" if broker_kind == "embedded" else "kafka")

    def timings(self) -> Timings:
        return EMBEDDED_TIMINGS if self.kind == "embedded" else KAFKA_TIMINGS

    def replication_factor(self) -> int:
        """Default replication factor of the topics this system creates: 3, or every broker of a smaller cluster."""
        return max(1, min(3, self.brokers))

    @staticmethod
    def min_insync_replicas(replication_factor: int) -> int:
        """Default ``min.insync.replicas``: all replicas but one (at most 2), so one broker can be lost without
        stopping producers that ask for every in-sync replica (``acks=all``)."""
        return max(1, min(2, replication_factor - 1))

    def describe(self) -> str:
        return (f"{'the embedded broker (Tansu)' if self.kind == 'embedded' else 'Apache Kafka'} "
                f"(cluster {self.cluster_id or 'unknown'}, {self.brokers} broker{'s' * (self.brokers != 1)}, "
                f"idempotent producers {'available' if self.idempotence else 'not available'})")


def timing_problems(timings: Timings, limits: KafkaLimits = KAFKA_LIMITS) -> list[str]:
    """What in ``timings`` a stock Apache Kafka cluster would refuse or punish; empty when they are valid.

    >>> timing_problems(Timings(4.0, 1.0, 0.05))
    ['session timeout 4 s is below group.min.session.timeout.ms (6 s): the broker refuses to let the worker join']
    """
    problems = []
    if timings.session_timeout < limits.group_min_session_timeout:
        problems.append(f"session timeout {timings.session_timeout:g} s is below group.min.session.timeout.ms "
                        f"({limits.group_min_session_timeout:g} s): the broker refuses to let the worker join")
    if timings.session_timeout > limits.group_max_session_timeout:
        problems.append(f"session timeout {timings.session_timeout:g} s is above group.max.session.timeout.ms "
                        f"({limits.group_max_session_timeout:g} s): the broker refuses to let the worker join")
    if timings.heartbeat_interval > timings.session_timeout * limits.heartbeat_share_of_session + 1e-9:
        problems.append(f"heartbeat interval {timings.heartbeat_interval:g} s is more than a third of the session "
                        f"timeout ({timings.session_timeout:g} s): one lost heartbeat can cost the membership")
    if timings.fetch_max_wait >= limits.consumer_request_timeout:
        problems.append(f"fetch wait {timings.fetch_max_wait:g} s is not below the request timeout "
                        f"({limits.consumer_request_timeout:g} s): every idle fetch would time out")
    return problems


async def probe_broker(bootstrap: str, client_options: dict[str, Any] | None = None, *, timeout: float = 20.0,
                       broker_kind: str = "auto", producing: bool = True) -> BrokerProfile:
    """Wait (up to ``timeout`` s) for a broker of ``bootstrap`` to answer, then profile the cluster; without
    ``producing`` the idempotence question is not asked (on Kafka it allocates a producer id).

    Raises :class:`~streamer.kafka.embedded_broker.BrokerError` when none answers in time.
    """
    from aiokafka.protocol.metadata import MetadataRequest
    from aiokafka.protocol.transaction import InitProducerIdRequest

    from streamer.kafka.embedded_broker import wait_for_broker

    async def profile(client: Any) -> BrokerProfile:
        node = client.get_random_node()
        metadata = await client.send(node, MetadataRequest(topics=[]))
        cluster_id = getattr(metadata, "cluster_id", None)
        idempotence = False
        if producing:
            try:
                pid = await client.send(node, InitProducerIdRequest(transactional_id=None,
                                                                    transaction_timeout_ms=60_000))
                idempotence = pid.error_code == 0
            except Exception as exc:  # noqa: BLE001 - any failure here means: no idempotent producer
                log.debug("InitProducerId failed (%r): producers will not be idempotent", exc)
        kind = broker_kind if broker_kind != "auto" else (
            "embedded" if cluster_id in EMBEDDED_CLUSTER_IDS else "kafka")
        return BrokerProfile(kind=kind, brokers=max(1, len(metadata.brokers)), idempotence=idempotence,
                             cluster_id=cluster_id)

    return await wait_for_broker(bootstrap, timeout=timeout, client_options=client_options, then=profile)
