"""The student worker: answers or escalates each event, learns every teacher label.

``events`` partitions are split among student workers (one consumer group), while
every worker reads *all* partitions of ``labels`` (no group), so each holds a full
replica of the student. The replica is checkpointed with the ``labels`` offsets it
has learned up to (periodically, on shutdown and before giving up on the broker)
and restored on start; only the labels after the checkpoint are replayed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from aiokafka import TopicPartition

from streamer.catalogue import DEAD_LETTER, ESCALATIONS, EVENTS, LABELS, PREDICTIONS, Catalogue
from streamer.checkpoint import Checkpoint, lock_checkpoint, read_checkpoint, write_checkpoint
from streamer.faust_app import make_app, raw_topic, record_lag, start_broker_watchdog
from streamer.io import groupless_consumer
from streamer.metrics import WorkerMetrics
from streamer.records import (Rejection, dead_letter, dead_letter_key, decode, encode, escalation,
                              student_prediction)
from streamer.settings import Settings
from streamer.triage import Triage, build_triage, triage_config

log = logging.getLogger(__name__)


class StudentCounters:
    """What the worker has done, for its periodic log line."""

    def __init__(self) -> None:
        self.events = 0
        self.answered = 0
        self.escalated = 0
        self.provisional = 0
        self.dead_lettered = 0
        self.labels = 0


class StudentState:
    """The worker's triage, the ``labels`` offsets it has learned up to, and escalations awaiting the teacher."""

    def __init__(self, settings: Settings, triage: Triage | None = None) -> None:
        self.settings = settings
        self.label_offsets: dict[int, int] = {}
        if triage is None:
            self.lock = lock_checkpoint(settings.student_checkpoint)
            checkpoint = read_checkpoint(settings.student_checkpoint)
            if checkpoint is not None:
                triage, self.label_offsets = checkpoint.triage, checkpoint.label_offsets
                if checkpoint.config != triage_config(settings):
                    fresh = build_triage(settings)
                    if triage.student.kind != settings.student:
                        triage = fresh
                        self.label_offsets = {}
                        log.warning("the checkpoint holds a %r student but the settings ask for %r: starting a "
                                    "fresh one and relearning every label", checkpoint.triage.student.kind,
                                    settings.student)
                    else:
                        fresh.student = triage.student
                        triage = fresh
                        log.warning("triage settings changed since the checkpoint (%s -> %s): kept the learned "
                                    "student, started a fresh threshold policy", checkpoint.config,
                                    triage_config(settings))
                log.info("restored the student checkpoint %s: %d labels learned, written %.0f s ago, labels "
                         "offsets %s", settings.student_checkpoint, triage.student.version,
                         time.time() - checkpoint.written_time, checkpoint.label_offsets)
        self.triage = triage or build_triage(settings)
        #: event id -> (deadline, provisional prediction) while the teacher has not answered
        self.pending: dict[str, tuple[float, dict[str, Any]]] = {}

    def checkpoint(self, why: str) -> None:
        started = time.perf_counter()
        size = write_checkpoint(self.settings.student_checkpoint,
                                Checkpoint(self.triage, dict(self.label_offsets), triage_config(self.settings)))
        log.info("checkpoint written (%s): %s, %d labels learned, %.1f kB in %.0f ms", why,
                 self.settings.student_checkpoint, self.triage.student.version, size / 1e3,
                 1e3 * (time.perf_counter() - started))


def build_student_app(settings: Settings, catalogue: Catalogue, triage: Triage | None = None,
                      metrics: WorkerMetrics | None = None) -> faust.App:
    """The student worker's Faust app; its agent and label follower share one :class:`StudentState`."""
    app = make_app(settings, "student")
    state = StudentState(settings, triage)
    triage = state.triage
    counters = StudentCounters()
    metrics = metrics or WorkerMetrics("student")
    app.triage = triage  # type: ignore[attr-defined]
    app.counters = counters  # type: ignore[attr-defined]
    app.metrics = metrics  # type: ignore[attr-defined]
    metrics.agreement_target.set(settings.target)
    app.student_state = state  # type: ignore[attr-defined]
    events_topic = raw_topic(app, EVENTS)
    predictions = raw_topic(app, PREDICTIONS)
    escalations = raw_topic(app, ESCALATIONS)
    dead_letters = raw_topic(app, DEAD_LETTER)
    events_spec, labels_spec = catalogue[EVENTS], catalogue[LABELS]
    timeout = settings.teacher_timeout

    async def send_dead_letter(value: bytes | None, rejection: Rejection, topic: str, partition: int,
                               offset: int) -> None:
        counters.dead_lettered += 1
        metrics.dead_letters.labels(topic=topic, reason=rejection.reason).inc()
        log.debug("dead-lettered %s/%d@%d: %s", topic, partition, offset, rejection.error)
        await dead_letters.send(key=dead_letter_key(topic, partition, offset),
                                value=encode(dead_letter(value, rejection, topic, partition, offset)))

    async def handle(message: Any) -> None:
        event = decode(message.value, events_spec, settings.max_text_bytes)
        if isinstance(event, Rejection):
            await send_dead_letter(message.value, event, message.topic, message.partition, message.offset)
            return
        counters.events += 1
        metrics.events.inc()
        route = triage.route(event["text"])
        key = event["id"].encode()
        event_time = int(message.timestamp * 1000)
        if route.escalate:
            counters.escalated += 1
            metrics.escalations.labels(reason=route.reason).inc()
            record = escalation(event, route.reason, route.label, route.confidence, triage.student.version,
                                route.threshold, route.weight, event_time)
            await escalations.send(key=key, value=encode(record))
            if timeout > 0 and route.label is not None:
                answer = student_prediction(event, route.label, route.confidence, triage.student.version,
                                            route.threshold, event_time, provisional=True)
                state.pending[event["id"]] = (time.monotonic() + timeout, answer)
        else:
            counters.answered += 1
            record = student_prediction(event, route.label, route.confidence, triage.student.version,
                                        route.threshold, event_time)
            await predictions.send(key=key, value=encode(record))
            metrics.predictions.labels(source="student").inc()
            metrics.decision_latency.labels(source="student").observe(max(record["decided_time"] - event_time, 0) / 1e3)

    @app.agent(events_topic, name="student")
    async def student_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.student_batch_size, within=settings.student_batch_wait):
            for ev in batch:
                await handle(ev.message)

    def learn(value: bytes | None) -> Rejection | None:
        record = decode(value, labels_spec, settings.max_text_bytes)
        if isinstance(record, Rejection):
            return record
        triage.learn(record["text"], record["label"], student_label=record["student_label"],
                     student_confidence=record["student_confidence"], weight=record["weight"],
                     reason=record["reason"])
        state.pending.pop(record["id"], None)
        counters.labels += 1
        metrics.labels_learned.inc()
        return None

    @app.task
    async def follow_labels() -> None:
        """Read every partition of ``labels`` after the checkpoint (from the start without one); learn each."""
        consumer = groupless_consumer(settings)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(LABELS) or set()
            if not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(LABELS) or set()
            tps = [TopicPartition(LABELS, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in state.label_offsets:
                    consumer.seek(tp, state.label_offsets[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            log.info("following all %d partitions of %s from offsets %s", len(tps), LABELS,
                     {p: state.label_offsets.get(p, 0) for p in sorted(partitions)})
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, messages in batches.items():
                    for m in messages:
                        rejection = learn(m.value)
                        state.label_offsets[tp.partition] = m.offset + 1
                        if rejection is not None:
                            await send_dead_letter(m.value, rejection, tp.topic, tp.partition, m.offset)
        finally:
            await consumer.stop()

    if timeout > 0:
        @app.timer(min(timeout / 2, 1.0))
        async def publish_provisional() -> None:
            """The student's answer, marked provisional, for escalations the teacher has not answered in time."""
            now = time.monotonic()
            expired = [event_id for event_id, (deadline, _) in state.pending.items() if deadline <= now]
            for event_id in expired:
                _, answer = state.pending.pop(event_id)
                counters.provisional += 1
                await predictions.send(key=event_id.encode(), value=encode(answer))
                metrics.predictions.labels(source="provisional").inc()
            if expired:
                log.info("teacher late: published %d provisional student answers (teacher_timeout %.1f s)",
                         len(expired), timeout)

    if settings.checkpoint_interval > 0:
        @app.timer(settings.checkpoint_interval)
        async def periodic_checkpoint() -> None:
            state.checkpoint("periodic")

    @app.on_before_shutdown.connect
    async def checkpoint_on_shutdown(sender: Any, **kwargs: Any) -> None:
        state.checkpoint("shutdown")

    start_broker_watchdog(app, settings, on_give_up=lambda: state.checkpoint("broker lost"))

    @app.timer(1.0)
    async def update_gauges() -> None:
        metrics.threshold.set(min(triage.policy.threshold, 1.0))
        estimate = getattr(triage.policy, "estimated_agreement", lambda: None)()
        metrics.agreement.set(float("nan") if estimate is None else estimate)
        record_lag(app, metrics)

    @app.timer(10.0)
    async def report() -> None:
        estimate = getattr(triage.policy, "estimated_agreement", lambda: None)()
        log.info("student: events=%d answered=%d escalated=%d provisional=%d dead_lettered=%d labels_learned=%d "
                 "threshold=%.3f estimated_agreement=%s", counters.events, counters.answered,
                 counters.escalated, counters.provisional, counters.dead_lettered, counters.labels,
                 triage.policy.threshold, "n/a" if estimate is None else f"{estimate:.3f}")
    return app
