"""Every default the clients use, checked against Apache Kafka's documented limits; the embedded broker's short
timings only where the broker is the embedded one (the probe tells them apart on the real embedded broker)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamer.kafka import KafkaClients
from streamer.kafka.broker_profile import (EMBEDDED_TIMINGS, KAFKA_LIMITS, KAFKA_TIMINGS, BrokerProfile, probe_broker,
                                           timing_problems)
from streamer.kafka.partitioner import JavaPartitioner
from streamer.records.codec import MAX_TEXT_BYTES_LIMIT, internal_record_limit
from streamer.settings import Settings
from streamer.triage.snapshot import CHUNK_BYTES, pack_snapshot

KAFKA = BrokerProfile(kind="kafka", brokers=5, idempotence=True)
EMBEDDED = BrokerProfile(kind="embedded", brokers=1, idempotence=False)


def test_the_defaults_on_kafka_are_within_every_documented_limit():
    clients = KafkaClients(Settings(broker="kafka://kafka:9092"), KAFKA)
    timings = clients.timings
    assert timings == KAFKA_TIMINGS and timing_problems(timings) == []
    assert KAFKA_LIMITS.group_min_session_timeout <= timings.session_timeout <= KAFKA_LIMITS.group_max_session_timeout
    assert timings.heartbeat_interval <= timings.session_timeout / 3
    assert timings.fetch_max_wait < KAFKA_LIMITS.consumer_request_timeout
    # a teacher retrying through an outage still polls within max.poll.interval.ms, or the group drops it
    assert Settings().teacher_retry_timeout < KAFKA_LIMITS.max_poll_interval
    # every record made from the largest event allowed fits the broker's message.max.bytes
    assert internal_record_limit(MAX_TEXT_BYTES_LIMIT) < KAFKA_LIMITS.message_max_bytes
    # and so does every chunk of a learner's snapshot, its header included
    chunks = pack_snapshot(os.urandom(3 * CHUNK_BYTES), version=10**12, student="embed-nb", key=b"k")  # incompressible
    assert len(chunks) > 3 and max(len(value) for _, value in chunks) < KAFKA_LIMITS.message_max_bytes
    # the stock single-broker cluster (docker-compose.yml) gets replication factor 1; a cluster of 3 or more gets 3
    assert BrokerProfile(kind="kafka", brokers=1).replication_factor() == 1
    assert KAFKA.replication_factor() == 3
    for brokers in range(1, 7):
        factor = BrokerProfile(kind="kafka", brokers=brokers).replication_factor()
        min_insync = BrokerProfile.min_insync_replicas(factor)
        assert KAFKA_LIMITS.min_insync_replicas <= min_insync <= factor <= brokers
        assert factor == 1 or min_insync < factor  # one broker can be lost without stopping acks=all producers


def test_built_clients_carry_the_profile_timing_and_the_durable_producer_settings():
    async def build(profile: BrokerProfile, settings: Settings):
        clients = KafkaClients(settings, profile)
        consumer, producer = clients.consumer("g"), clients.producer()  # built, never started: no broker needed
        return {"session": consumer._session_timeout_ms, "heartbeat": consumer._heartbeat_interval_ms,
                "fetch_wait": consumer._fetch_max_wait_ms}, producer

    async def both():
        on_kafka = await build(KAFKA, Settings(broker="kafka://kafka:9092"))
        on_embedded = await build(EMBEDDED, Settings(broker="kafka://127.0.0.1:9092"))
        overridden = await build(KAFKA, Settings(broker="kafka://kafka:9092", session_timeout=30.0))
        return on_kafka, on_embedded, overridden

    (kafka_timing, kafka_producer), (embedded_timing, embedded_producer), (overridden, _) = asyncio.run(both())
    assert kafka_timing == {"session": 45_000, "heartbeat": 3_000, "fetch_wait": 500}
    assert embedded_timing == {"session": 4_000, "heartbeat": 1_000, "fetch_wait": 50}
    assert overridden["session"] == 30_000
    assert kafka_producer.client._request_timeout_ms >= 1000 * Settings().broker_timeout  # kept through an outage
    for producer, idempotent in ((kafka_producer, True), (embedded_producer, False)):
        assert producer._sender._acks == -1  # acks=all
        assert (producer._txn_manager is not None) is idempotent
        assert isinstance(producer._partitioner, JavaPartitioner)


def test_keyed_records_go_to_the_partition_every_kafka_client_picks():
    ours, theirs, rng = JavaPartitioner(), DefaultPartitioner(), random.Random(5)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))) for _ in range(20_000)]
    keys += [f"e{i}".encode() for i in range(5_000)] + [str(i).encode() * 3 for i in range(1_000)]
    for partitions in ([0], [0, 1, 2, 3], list(range(7)), [2, 5, 9]):
        assert [ours(k, partitions, partitions) for k in keys] == [theirs(k, partitions, partitions) for k in keys]
    assert {ours(None, [0, 1, 2, 3], [1]) for _ in range(20)} == {1}  # keyless: an available partition


def test_the_embedded_timings_break_kafka_limits_so_they_are_never_the_kafka_defaults():
    assert timing_problems(EMBEDDED_TIMINGS) != []
    assert KafkaClients(Settings(broker="kafka://kafka:9092")).timings == KAFKA_TIMINGS  # before any probe
    assert KafkaClients(Settings(broker_kind="embedded")).timings == EMBEDDED_TIMINGS


def test_durability_settings_are_validated_and_override_the_profile():
    assert KafkaClients(Settings(), KAFKA).durability() == (3, 2)
    assert KafkaClients(Settings(), EMBEDDED).durability() == (1, 1)
    assert KafkaClients(Settings(replication_factor=2), KAFKA).durability() == (2, 1)
    assert KafkaClients(Settings(replication_factor=3, min_insync_replicas=3), KAFKA).durability() == (3, 3)
    with pytest.raises(ValueError, match="must not exceed replication_factor"):
        Settings(replication_factor=2, min_insync_replicas=3)
    with pytest.raises(ValueError, match="broker_kind"):
        Settings(broker_kind="redpanda")
    with pytest.raises(ValueError, match="max_text_bytes"):
        Settings(max_text_bytes=MAX_TEXT_BYTES_LIMIT + 1)
    from_env = Settings.from_env({"STREAMER_SESSION_TIMEOUT": "30", "STREAMER_REPLICATION_FACTOR": "3"})
    assert (from_env.session_timeout, from_env.replication_factor, Settings().session_timeout) == (30.0, 3, None)


def test_the_probe_tells_the_embedded_broker_apart(broker):
    profile = asyncio.run(probe_broker(broker.bootstrap, timeout=10))
    assert (profile.kind, profile.brokers, profile.idempotence) == ("embedded", 1, False)
    forced = asyncio.run(probe_broker(broker.bootstrap, timeout=10, broker_kind="kafka"))
    assert forced.kind == "kafka" and forced.timings() == KAFKA_TIMINGS
