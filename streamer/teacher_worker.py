"""The teacher worker: its own consumer group on ``escalations``, batched inference.

Each batch is decoded, labelled in a worker thread (tokenisation included, so the
event loop keeps consuming and producing), then answered on ``predictions`` and
fed back on ``labels``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust

from streamer.catalogue import DEAD_LETTER, ESCALATIONS, LABELS, PREDICTIONS, Catalogue
from streamer.faust_app import make_app, raw_topic, record_lag, start_broker_watchdog
from streamer.metrics import WorkerMetrics
from streamer.records import (Rejection, dead_letter, dead_letter_key, decode, encode, label_record,
                              teacher_prediction, with_entities)
from streamer.settings import Settings
from streamer.teacher import Teacher

log = logging.getLogger(__name__)


def build_teacher_app(settings: Settings, catalogue: Catalogue, teacher: Teacher,
                      metrics: WorkerMetrics | None = None) -> faust.App:
    app = make_app(settings, "teacher")
    metrics = metrics or WorkerMetrics("teacher")
    app.metrics = metrics  # type: ignore[attr-defined]
    answered = metrics.predictions.labels(source="teacher")
    latency = metrics.decision_latency.labels(source="teacher")
    escalations_topic = raw_topic(app, ESCALATIONS)
    predictions = raw_topic(app, PREDICTIONS)
    labels = raw_topic(app, LABELS)
    dead_letters = raw_topic(app, DEAD_LETTER)
    spec = catalogue[ESCALATIONS]
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")

    @app.agent(escalations_topic, name="teacher")
    async def teacher_agent(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(settings.teacher_batch_size, within=settings.teacher_max_wait):
            records = []
            for ev in batch:
                m = ev.message
                record = decode(m.value, spec, settings.max_text_bytes)
                if isinstance(record, Rejection):
                    metrics.dead_letters.labels(topic=m.topic, reason=record.reason).inc()
                    log.debug("dead-lettered %s/%d@%d: %s", m.topic, m.partition, m.offset, record.error)
                    await dead_letters.send(key=dead_letter_key(m.topic, m.partition, m.offset),
                                            value=encode(dead_letter(m.value, record, m.topic, m.partition, m.offset)))
                else:
                    records.append(record)
            if not records:
                continue
            started = time.perf_counter()
            results = await loop.run_in_executor(executor, teacher.predict, [r["text"] for r in records])
            seconds = time.perf_counter() - started
            metrics.teacher_batch_size.observe(len(records))
            metrics.teacher_batch_seconds.observe(seconds)
            log.info("teacher batch: %d sequences in %.3f s", len(records), seconds)
            for record, (label, confidence) in zip(records, results):
                key = record["id"].encode()
                answer = teacher_prediction(record, label, confidence, teacher.version)
                if settings.task == "ner":
                    with_entities(answer, record["text"])
                await predictions.send(key=key, value=encode(answer))
                await labels.send(key=key, value=encode(label_record(record, label, teacher.version)))
                answered.inc()
                latency.observe(
                    max(answer["decided_time"] - answer["event_time"], 0) / 1e3)

    start_broker_watchdog(app, settings)

    @app.timer(1.0)
    async def update_lag() -> None:
        record_lag(app, metrics)

    @app.timer(10.0)
    async def report() -> None:
        batches = metrics.value("streamer_teacher_batch_size_count")
        if batches:
            sequences = metrics.value("streamer_teacher_batch_size_sum")
            log.info("teacher: batches=%d sequences=%d mean_batch=%.1f seq_per_s_in_model=%.0f",
                     batches, sequences, sequences / batches,
                     sequences / max(metrics.value("streamer_teacher_batch_seconds_sum"), 1e-9))

    return app
