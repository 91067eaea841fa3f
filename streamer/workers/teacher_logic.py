"""The teacher's decisions, without any transport: answer a batch of escalations.

Each batch is decoded (bad records go to ``dead-letter``), labelled by the teacher in a
worker thread (tokenisation included, so the event loop keeps consuming and producing),
then answered on ``predictions`` and fed back on ``labels``.

>>> import asyncio, orjson
>>> from streamer.records import Catalogue
>>> from streamer.settings import Settings
>>> class Stub:
...     version = "stub"
...     def predict(self, texts): return [("pos", 0.9) for _ in texts]
>>> logic = TeacherLogic(Settings(), Catalogue.load(), Stub())
>>> sent = []
>>> async def send(topic, key, value): sent.append((topic, key))
>>> esc = {"id": "e1", "text": "fine", "event": {}, "reason": "warmup", "student_label": None,
...        "student_confidence": 0.0, "student_version": 0, "threshold": 0.9, "weight": 1.0,
...        "event_time": 1, "escalated_time": 2}
>>> asyncio.run(logic.answer([Incoming(orjson.dumps(esc), "escalations", 0, 0)], send))
>>> sent
[('predictions', b'e1'), ('labels', b'e1')]
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from streamer.observability.metrics import WorkerMetrics
from streamer.records import (ESCALATIONS, LABELS, PREDICTIONS, Catalogue, Rejection, decode, encode, label_record,
                              teacher_prediction)
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.workers.runtime import Send, send_dead_letter

log = logging.getLogger(__name__)


class Labeller(Protocol):
    """What the logic needs of a teacher: a version and batched predictions."""

    version: str

    def predict(self, texts: list[str]) -> list[tuple[str, float]]: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed record: its value and where it came from."""

    value: bytes | None
    topic: str
    partition: int
    offset: int


def load_configured_teacher(settings: Settings) -> Labeller:
    """The teacher the settings name: the task's teacher class loaded from ``teacher_model_ref``."""
    return get_task(settings.task).load_teacher(settings.teacher_model_ref, device=settings.teacher_device,
                                                max_length=settings.teacher_max_length,
                                                batch_size=settings.teacher_batch_size)


class TeacherLogic:
    """Answers escalations with a teacher, publishes predictions and labels, dead-letters bad records."""

    def __init__(self, settings: Settings, catalogue: Catalogue, teacher: Labeller,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.task = get_task(settings.task)
        self.teacher = teacher
        self.metrics = metrics or WorkerMetrics("teacher")
        self.spec = catalogue[ESCALATIONS]
        self._answered = self.metrics.predictions.labels(source="teacher")
        self._latency = self.metrics.decision_latency.labels(source="teacher")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")

    async def answer(self, batch: list[Incoming], send: Send) -> None:
        """Decode, label and answer one batch of ``escalations`` records."""
        records = []
        for m in batch:
            record = decode(m.value, self.spec, self.settings.max_text_bytes)
            if isinstance(record, Rejection):
                await send_dead_letter(self.metrics, send, m.value, record, m.topic, m.partition, m.offset)
            else:
                records.append(record)
        if not records:
            return
        started = time.perf_counter()
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self.teacher.predict,
                                                                   [r["text"] for r in records])
        seconds = time.perf_counter() - started
        self.metrics.teacher_batch_size.observe(len(records))
        self.metrics.teacher_batch_seconds.observe(seconds)
        log.info("teacher batch: %d sequences in %.3f s", len(records), seconds)
        for record, (label, confidence) in zip(records, results):
            key = record["id"].encode()
            answer = self.task.enrich(teacher_prediction(record, label, confidence, self.teacher.version),
                                      record["text"])
            await send(PREDICTIONS, key, encode(answer))
            await send(LABELS, key, encode(label_record(record, label, self.teacher.version)))
            self._answered.inc()
            self._latency.observe(max(answer["decided_time"] - answer["event_time"], 0) / 1e3)

    def log_summary(self) -> None:
        m = self.metrics
        batches = m.value("streamer_teacher_batch_size_count")
        if batches:
            sequences = m.value("streamer_teacher_batch_size_sum")
            log.info("teacher: batches=%d sequences=%d mean_batch=%.1f seq_per_s_in_model=%.0f",
                     batches, sequences, sequences / batches,
                     sequences / max(m.value("streamer_teacher_batch_seconds_sum"), 1e-9))
