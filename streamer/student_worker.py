"""The student worker: answers or escalates each event, learns every teacher label.

``events`` partitions are split among student workers (one consumer group), while
every worker reads *all* partitions of ``labels`` (no group), so each holds a full
replica of the student.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.catalogue import DEAD_LETTER, ESCALATIONS, EVENTS, LABELS, PREDICTIONS, Catalogue
from streamer.faust_app import make_app, raw_topic
from streamer.policies import build_policy
from streamer.records import (Rejection, dead_letter, dead_letter_key, decode, encode, escalation,
                              student_prediction)
from streamer.settings import Settings
from streamer.student import Student
from streamer.triage import Triage

log = logging.getLogger(__name__)


def build_triage(settings: Settings) -> Triage:
    policy = build_policy(settings.policy, threshold=settings.threshold, target=settings.target,
                          audit_rate=settings.audit_rate, calibration_events=settings.calibration_events)
    return Triage(Student(), policy, warmup_labels=settings.warmup_labels, seed=settings.seed)


class StudentCounters:
    """What the worker has done, for its periodic log line."""

    def __init__(self) -> None:
        self.events = 0
        self.answered = 0
        self.escalated = 0
        self.dead_lettered = 0
        self.labels = 0


def build_student_app(settings: Settings, catalogue: Catalogue, triage: Triage | None = None) -> faust.App:
    """The student worker's Faust app; its agent and label follower share one :class:`Triage`."""
    app = make_app(settings, "student")
    triage = triage or build_triage(settings)
    counters = StudentCounters()
    app.triage = triage  # type: ignore[attr-defined]
    app.counters = counters  # type: ignore[attr-defined]
    events_topic = raw_topic(app, EVENTS)
    predictions = raw_topic(app, PREDICTIONS)
    escalations = raw_topic(app, ESCALATIONS)
    dead_letters = raw_topic(app, DEAD_LETTER)
    events_spec, labels_spec = catalogue[EVENTS], catalogue[LABELS]

    async def send_dead_letter(value: bytes | None, rejection: Rejection, topic: str, partition: int,
                               offset: int) -> None:
        counters.dead_lettered += 1
        log.warning("dead-lettered %s/%d@%d: %s", topic, partition, offset, rejection.error)
        await dead_letters.send(key=dead_letter_key(topic, partition, offset),
                                value=encode(dead_letter(value, rejection, topic, partition, offset)))

    async def handle(message: Any) -> None:
        event = decode(message.value, events_spec, settings.max_text_bytes)
        if isinstance(event, Rejection):
            await send_dead_letter(message.value, event, message.topic, message.partition, message.offset)
            return
        counters.events += 1
        route = triage.route(event["text"])
        key = event["id"].encode()
        event_time = int(message.timestamp * 1000)
        if route.escalate:
            counters.escalated += 1
            record = escalation(event, route.reason, route.label, route.confidence, triage.student.version,
                                route.threshold, route.weight, event_time)
            await escalations.send(key=key, value=encode(record))
        else:
            counters.answered += 1
            record = student_prediction(event, route.label, route.confidence, triage.student.version,
                                        route.threshold, event_time)
            await predictions.send(key=key, value=encode(record))

    @app.agent(events_topic, name="student")
    async def student_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.student_batch_size, within=settings.student_batch_wait):
            for ev in batch:
                await handle(ev.message)

    def learn(value: bytes | None, topic: str, partition: int, offset: int) -> Rejection | None:
        record = decode(value, labels_spec, settings.max_text_bytes)
        if isinstance(record, Rejection):
            return record
        triage.learn(record["text"], record["label"], student_label=record["student_label"],
                     student_confidence=record["student_confidence"], weight=record["weight"],
                     reason=record["reason"])
        counters.labels += 1
        return None

    @app.task
    async def follow_labels() -> None:
        """Read every partition of ``labels`` from the start and learn each teacher label."""
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **settings.kafka_client_options())
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(LABELS) or set()
            if not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(LABELS) or set()
            consumer.assign([TopicPartition(LABELS, p) for p in sorted(partitions)])
            log.info("following all %d partitions of %s", len(partitions), LABELS)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, messages in batches.items():
                    for m in messages:
                        rejection = learn(m.value, tp.topic, tp.partition, m.offset)
                        if rejection is not None:
                            await send_dead_letter(m.value, rejection, tp.topic, tp.partition, m.offset)
        finally:
            await consumer.stop()

    @app.timer(10.0)
    async def report() -> None:
        estimate = getattr(triage.policy, "estimated_agreement", lambda: None)()
        log.info("student: events=%d answered=%d escalated=%d dead_lettered=%d labels_learned=%d "
                 "threshold=%.3f estimated_agreement=%s", counters.events, counters.answered,
                 counters.escalated, counters.dead_lettered, counters.labels, triage.policy.threshold,
                 "n/a" if estimate is None else f"{estimate:.3f}")

    return app
