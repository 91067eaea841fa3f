"""The teacher's decisions, without any transport: answer a batch of escalations.

Each batch is decoded (bad records go to ``dead-letter``), labelled by the teacher in a
worker thread (tokenisation included, so the event loop keeps consuming and producing),
then answered on ``predictions`` and fed back on ``labels``. A batch the teacher fails on
(it raises, or does not give one ``(label, confidence)`` per text) is split in halves until each failing
record is alone. Transient and permanent faults are told apart: a record that fails alone, twice, while
the teacher answers others (the batch's other records, or a probe text it answered before) goes to
``dead-letter`` (``teacher_error``); when the teacher fails on everything, the probe included (model
server down, device lost), that is an outage: the whole batch is handed back to be retried with backoff
for up to ``teacher_retry_timeout`` seconds, then :class:`TeacherUnavailable` is raised and the worker
exits uncommitted, so the escalations wait in Kafka for a healthy teacher.

>>> import asyncio, orjson
>>> from streamer.records import Catalogue
>>> from streamer.settings import Settings
>>> class Stub:
...     version = "stub"
...     def predict(self, texts): return [("pos", 0.9) for _ in texts]
>>> logic = TeacherLogic(Settings(), Catalogue.load(), Stub())
>>> sent = []
>>> async def send(topic, key, value, headers=()): sent.append((topic, key))
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from streamer.observability.metrics import WorkerMetrics
from streamer.records import (ESCALATIONS, LABELS, PREDICTIONS, Catalogue, Rejection, encode, label_record,
                              teacher_prediction)
from streamer.records.signing import decode_signed, sign_label
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.workers.runtime import Headers, RetryBatch, Send, send_dead_letter
from streamer.workers.recent import RecentKeys
from streamer.workers.watchdog import backoff_delay

log = logging.getLogger(__name__)


#: Escalations remembered (by id and escalation time) to skip a copy that a producer's retry stored twice.
RECENT_ESCALATIONS_KEPT = 100_000
#: What the teacher is asked when it has failed on everything and has answered nothing yet.
PROBE_TEXT = "This is a short probe sentence."
#: Longest wait between retries of a batch while the teacher is failing on everything (seconds).
TEACHER_RETRY_MAX_DELAY = 10.0


class TeacherUnavailable(RuntimeError):
    """The teacher has failed on every text, a probe included, for ``teacher_retry_timeout`` seconds."""


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
    headers: Headers = ()


def load_configured_teacher(settings: Settings) -> Labeller:
    """The teacher the settings name: ``teacher_class`` (else the task's teacher class) loaded from
    ``teacher_model_ref``."""
    return get_task(settings.task).load_teacher(settings.teacher_model_ref, device=settings.teacher_device,
                                                max_length=settings.teacher_max_length,
                                                batch_size=settings.teacher_batch_size,
                                                teacher_class=settings.teacher_class)


class TeacherLogic:
    """Answers escalations with a teacher, publishes predictions and labels, dead-letters bad records."""

    def __init__(self, settings: Settings, catalogue: Catalogue, teacher: Labeller,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.task = get_task(settings.task)
        self.teacher = teacher
        self.metrics = metrics or WorkerMetrics("teacher", settings.namespace)
        self.spec, self.labels_spec = catalogue[ESCALATIONS], catalogue[LABELS]
        self._label_key = settings.label_key.encode() if settings.label_key else None
        self._answered = self.metrics.predictions.labels(source="teacher")
        self._latency = self.metrics.decision_latency.labels(source="teacher")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")
        self._canary = PROBE_TEXT  # the last text the teacher answered: a probe that tells an outage from bad records
        #: escalations answered lately, by (id, escalated time): a copy stored by a producer's retry (a broker that
        #: died before acknowledging it) is the same request and is not answered twice
        self._recent = RecentKeys(RECENT_ESCALATIONS_KEPT)
        self._down_since: float | None = None  # since when the teacher has failed on everything
        self._down_attempts = 0

    async def answer(self, batch: list[Incoming], send: Send) -> None:
        """Decode, label and answer one batch of ``escalations`` records; dead-letter those that fail alone.

        Raises :class:`~streamer.workers.runtime.RetryBatch` (nothing sent) while the teacher fails on everything,
        and :class:`TeacherUnavailable` once it has done so for ``teacher_retry_timeout`` seconds."""
        items: list[tuple[Incoming, dict[str, Any]]] = []
        keys: set[tuple[str, int]] = set()
        for m in batch:
            record = decode_signed(m.value, self.spec, self.settings.max_internal_record_bytes, self._label_key,
                                   "escalation")
            if isinstance(record, Rejection):
                await send_dead_letter(self.metrics, send, m.value, record, m.topic, m.partition, m.offset)
            elif (key := (record["id"], record["escalated_time"])) in self._recent or key in keys:
                log.debug("escalation %s/%d@%d (id %r) is a copy of one answered already: skipped", m.topic,
                          m.partition, m.offset, record["id"])
                self.metrics.duplicates_skipped.labels(topic=ESCALATIONS).inc()
            else:
                keys.add(key)
                items.append((m, record))
        if not items:
            return
        started = time.perf_counter()
        results = await self._label_through_outages(items)
        seconds = time.perf_counter() - started
        self.metrics.teacher_batch_size.observe(len(items))
        self.metrics.teacher_batch_seconds.observe(seconds)
        log.info("teacher batch: %d sequences in %.3f s", len(items), seconds)
        for (m, record), result in zip(items, results):
            if isinstance(result, Exception):
                log.warning("teacher failed on %s/%d@%d (id %r) alone while it answers others, dead-lettered: "
                            "%s: %s", m.topic, m.partition, m.offset, record["id"], type(result).__name__, result)
                await send_dead_letter(self.metrics, send, m.value, Rejection.from_exception("teacher_error", result),
                                       m.topic, m.partition, m.offset)
                continue
            label, confidence = result
            key = record["id"].encode()
            answer = self.task.enrich(teacher_prediction(record, label, confidence, self.teacher.version),
                                      record["text"])
            await send(PREDICTIONS, key, encode(answer), m.headers)
            labelled = label_record(record, label, self.teacher.version)
            if self._label_key is not None:
                labelled["signature"] = sign_label(self._label_key, labelled)
            await send(LABELS, key, encode(labelled))
            self._recent.add((record["id"], record["escalated_time"]))
            self._answered.inc()
            self._latency.observe(max(answer["decided_time"] - answer["event_time"], 0) / 1e3)

    async def _label_through_outages(self, items: list[tuple[Incoming, dict[str, Any]]]
                                     ) -> list[tuple[str, float] | Exception]:
        """:meth:`_label`, with an outage told from bad records (see the module docstring). A record left failing
        has failed alone twice while the teacher answers other texts. While the teacher fails on everything the
        batch is handed back to be tried again after a backoff (:class:`RetryBatch`: the worker waits outside
        its batch lock, so rebalances and stop signals go on meanwhile), until ``teacher_retry_timeout``."""
        results = list(await self._label(items))
        failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        if len(failed) < len(results):
            self._canary = items[next(i for i, r in enumerate(results) if not isinstance(r, Exception))][1]["text"]
        if len(failed) < len(results) or await self._answers_probe():
            self._outage_over()
            for i in failed:  # once more alone: a record is dead-lettered only when it fails again
                results[i] = (await self._label([items[i]]))[0]
            return results
        now = time.monotonic()
        if self._down_since is None:
            self._down_since, self._down_attempts = now, 0
        down = now - self._down_since
        timeout = self.settings.teacher_retry_timeout
        if down >= timeout:
            raise TeacherUnavailable(
                f"the teacher failed on every text, a probe text included, for {down:.0f} s "
                f"(teacher_retry_timeout {timeout:.0f} s; {type(results[0]).__name__}: {results[0]}); the batch "
                f"stays uncommitted")
        delay = min(backoff_delay(self._down_attempts, cap=TEACHER_RETRY_MAX_DELAY), max(timeout - down, 0.1))
        self._down_attempts += 1
        self.metrics.teacher_retries.inc()
        log.warning("the teacher fails on every text, a probe text included (%s: %s): an outage, not bad records; "
                    "retrying the batch of %d in %.1f s (attempt %d, down %.0f s, giving up after %.0f s)",
                    type(results[0]).__name__, results[0], len(items), delay, self._down_attempts, down, timeout)
        raise RetryBatch(delay)

    def _outage_over(self) -> None:
        if self._down_since is not None:
            log.warning("the teacher answers again after %.0f s", time.monotonic() - self._down_since)
            self._down_since = None

    async def _answers_probe(self) -> bool:
        """Whether the teacher answers the probe text: the last text it answered (a fixed sentence before any)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, [self._canary])
        except Exception:  # noqa: BLE001 - failing on the probe is the answer
            return False
        return True

    async def audit_labels(self, batch: list[Incoming], send: Send) -> None:
        """Report the bad records of ``labels`` on ``dead-letter``: malformed, or unsigned while a label key is set.

        Every student reads every label and skips bad ones without reporting them; the teacher group owns each
        ``labels`` partition once, so each bad label is reported once.
        """
        for m in batch:
            record = decode_signed(m.value, self.labels_spec, self.settings.max_internal_record_bytes, self._label_key,
                                   "label")
            if isinstance(record, Rejection):
                await send_dead_letter(self.metrics, send, m.value, record, m.topic, m.partition, m.offset)

    async def _label(self, items: list[tuple[Incoming, dict[str, Any]]]) -> Sequence[tuple[str, float] | Exception]:
        """The teacher's answer for each item, or the exception it fails with on that item alone (found by
        splitting a failing batch in halves)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict,
                                                                    [record["text"] for _, record in items])
        except Exception as exc:  # noqa: BLE001 - any teacher failure is isolated, never fatal
            if len(items) == 1:
                return [exc]
            half = len(items) // 2
            return [*await self._label(items[:half]), *await self._label(items[half:])]

    def _predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """``teacher.predict``, checked: one ``(label, confidence)`` per text, each label a string."""
        results = [(label, float(confidence)) for label, confidence in self.teacher.predict(texts)]
        if len(results) != len(texts) or not all(isinstance(label, str) for label, _ in results):
            raise ValueError(f"the teacher must give one (label: str, confidence) per text; it gave {len(results)} "
                             f"answers for {len(texts)} texts")
        return results

    def log_summary(self) -> None:
        m = self.metrics
        batches = m.value("streamer_teacher_batch_size_count")
        if batches:
            sequences = m.value("streamer_teacher_batch_size_sum")
            log.info("teacher: batches=%d sequences=%d mean_batch=%.1f seq_per_s_in_model=%.0f",
                     batches, sequences, sequences / batches,
                     sequences / max(m.value("streamer_teacher_batch_seconds_sum"), 1e-9))
