"""The student's decisions, without any transport: route an event, learn a label, stand in for a late teacher.

Every method takes a ``send`` (:data:`~streamer.workers.runtime.Send`), so the whole decision
path runs on the broker (:mod:`streamer.workers.student_worker`) or in process against a
collecting ``send``:

>>> import asyncio, orjson, tempfile
>>> from streamer.records import Catalogue
>>> from streamer.settings import Settings
>>> logic = StudentLogic(Settings(data_dir=tempfile.mkdtemp(), warmup_labels=5, student="nb"), Catalogue.load())
>>> sent = []
>>> async def send(topic, key, value, headers=()): sent.append((topic, key))
>>> asyncio.run(logic.handle_event(orjson.dumps({"id": "1", "text": "a film"}), "events", 0, 0, 1000, send))
>>> sent
[('escalations', b'1')]
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from streamer.observability.metrics import WorkerMetrics
from streamer.records import (ESCALATIONS, EVENTS, LABELS, PREDICTIONS, Catalogue, Rejection, encode, escalation,
                              student_prediction)
from streamer.records.codec import decode_event
from streamer.records.signing import decode_signed, sign_escalation
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.triage import Triage, build_triage, triage_config
from streamer.triage.router import Feedback, Route
from streamer.models.embeddings import EmbeddingsError, word_cache_of
from streamer.models.word_cache import WordCache, WordList
from streamer.triage.checkpoint import (Checkpoint, CheckpointError, lock_checkpoint, read_checkpoint,
                                        serialize_checkpoint, write_checkpoint_bytes)
from streamer.triage.policies import REASON_AUDIT, REASON_CALIBRATION, REASON_LOW_CONFIDENCE, REASON_WARMUP
from streamer.workers.recent import RecentKeys
from streamer.workers.runtime import Headers, Send, send_dead_letter

log = logging.getLogger(__name__)

#: Ids of the most recent labels remembered, so a label the teacher publishes again (after a crash between
#: publishing and committing) is learned once.
LEARNED_IDS_KEPT = 100_000


class InputRecord(NamedTuple):
    """One record of the input topic, as the worker consumed it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None = None
    headers: Headers = ()


class StudentState:
    """The worker's triage, the ``labels`` offsets it has learned up to, and escalations awaiting the teacher.

    Without a ``triage`` it locks and restores the checkpoint at ``settings.student_checkpoint``.
    """

    def __init__(self, settings: Settings, triage: Triage | None = None) -> None:
        self.settings = settings
        self.label_offsets: dict[int, int] = {}
        self.learned_ids = RecentKeys(LEARNED_IDS_KEPT)
        if triage is None:
            self.lock = lock_checkpoint(settings.student_checkpoint)
            triage = self._restore()
        self.triage = triage or build_triage(settings)
        self._writer: int | None = None  # a forked checkpoint writer still running
        self._checkpointed: tuple[int, dict[int, int]] | None = None  # what the last checkpoint holds
        #: event id -> (deadline, provisional prediction, the event's headers) while the teacher has not answered
        self.pending: dict[str, tuple[float, dict[str, Any], Headers]] = {}

    def _restore(self) -> Triage | None:
        settings = self.settings
        try:
            checkpoint = read_checkpoint(settings.student_checkpoint, trust_legacy=settings.trust_legacy_checkpoint)
        except CheckpointError as exc:
            if not isinstance(exc.__cause__, EmbeddingsError):
                raise
            log.warning("the checkpoint's student was built on other embeddings than the teacher's now (%s): starting "
                        "a fresh student and relearning every label", exc.__cause__)
            return None
        if checkpoint is None:
            return None
        triage, self.label_offsets = checkpoint.triage, checkpoint.label_offsets
        self.learned_ids = RecentKeys(LEARNED_IDS_KEPT, checkpoint.learned_ids)
        if checkpoint.config != triage_config(settings):
            fresh = build_triage(settings)
            if triage.student.kind != settings.student_kind:
                self.label_offsets = {}
                self.learned_ids = RecentKeys(LEARNED_IDS_KEPT)  # relearned from offset 0: no duplicates
                log.warning("the checkpoint holds a %r student but the settings ask for %r: starting a fresh one "
                            "and relearning every label", triage.student.kind, settings.student_kind)
                return fresh
            fresh.student = triage.student
            log.warning("triage settings changed since the checkpoint (%s -> %s): kept the learned student, "
                        "started a fresh threshold policy", checkpoint.config, triage_config(settings))
            triage = fresh
        log.info("restored the student checkpoint %s: %d labels learned, written %.0f s ago, labels offsets %s",
                 settings.student_checkpoint, triage.student.version, time.time() - checkpoint.written_time,
                 checkpoint.label_offsets)
        return triage

    def _serialize(self) -> bytes:
        return serialize_checkpoint(Checkpoint(self.triage, dict(self.label_offsets), triage_config(self.settings),
                                               learned_ids=list(self.learned_ids)))

    def _written(self, why: str, size: int, pickled_ms: float, started: float) -> None:
        log.info("checkpoint written (%s): %s, %d labels learned, %.1f kB; %.0f ms on the event loop, %.0f ms in "
                 "all", why, self.settings.student_checkpoint, self.triage.student.version, size / 1e3, pickled_ms,
                 1e3 * (time.perf_counter() - started))

    def _wait_for_writer(self) -> None:
        """Let a forked checkpoint writer that is still running finish first: both write through the same temporary
        file, and the older snapshot must not replace the newer checkpoint."""
        pid, self._writer = self._writer, None
        if pid is not None:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # already reaped
                pass

    def _unchanged(self) -> bool:
        """Whether the last checkpoint already holds this state (nothing learned, no offset moved since); notes
        the state as checkpointed otherwise."""
        now = (self.triage.student.version, dict(self.label_offsets))
        if now == self._checkpointed:
            return True
        self._checkpointed = now
        return False

    def checkpoint(self, why: str) -> None:
        """Write the checkpoint now, blocking (shutdown, broker lost)."""
        self._checkpointed = (self.triage.student.version, dict(self.label_offsets))
        self._wait_for_writer()
        started = time.perf_counter()
        body = self._serialize()
        pickled_ms = 1e3 * (time.perf_counter() - started)
        self._written(why, write_checkpoint_bytes(self.settings.student_checkpoint, body), pickled_ms, started)

    async def checkpoint_in_background(self, why: str) -> None:
        """Write the checkpoint without holding up the event loop for the pickling of a large student.

        Where ``os.fork`` exists, a forked child (a copy-on-write snapshot of this moment) pickles and writes it
        while the worker goes on; the loop pays only for the fork. Elsewhere the pickling runs on the loop and the
        file work in a thread.
        """
        if self._unchanged():
            return
        started = time.perf_counter()
        if not hasattr(os, "fork"):
            body = self._serialize()
            blocked_ms = 1e3 * (time.perf_counter() - started)
            size = await asyncio.to_thread(write_checkpoint_bytes, self.settings.student_checkpoint, body)
            self._written(why, size, blocked_ms, started)
            return
        pid = os.fork()
        if pid == 0:  # the child: pickle, write, leave (no logging, no cleanup of the parent's clients)
            try:
                size = write_checkpoint_bytes(self.settings.student_checkpoint, self._serialize())
                os._exit(0 if size else 1)
            except BaseException:  # noqa: BLE001 - reported through the exit status
                os._exit(1)
        self._writer = pid
        blocked_ms = 1e3 * (time.perf_counter() - started)
        try:
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        except ChildProcessError:  # reaped by a blocking checkpoint (shutdown), which wrote a newer one
            return
        # Cancelled (the worker is stopping) while the child still writes: ``_writer`` stays set, so the blocking
        # shutdown checkpoint waits for the child instead of writing through the same temporary file beside it.
        if self._writer == pid:
            self._writer = None
        if os.waitstatus_to_exitcode(status) != 0:
            log.warning("checkpoint (%s) failed in its writer process (status %d); writing it on the event loop",
                        why, os.waitstatus_to_exitcode(status))
            self.checkpoint(why)
            return
        self._written(why, self.settings.student_checkpoint.stat().st_size, blocked_ms, started)

class StudentLogic:
    """Routing, learning and provisional answers of one student worker, with its metrics."""

    def __init__(self, settings: Settings, catalogue: Catalogue, triage: Triage | None = None,
                 metrics: WorkerMetrics | None = None, *, learner: bool = False) -> None:
        #: a learner's policy is told of the stream's confidences through the labels (it routes nothing)
        self.learner = learner
        self._offered: Triage | None = None  # a snapshot's triage, routing from the next batch on
        self._offered_words: WordList | None = None  # and the learner's words, for a cold word cache
        self.settings = settings
        self.task = get_task(settings.task)
        self.state = StudentState(settings, triage)
        self.triage = self.state.triage
        self.metrics = metrics or WorkerMetrics("student", settings.namespace)
        self.metrics.agreement_target.set(settings.target)
        # label children bound once: they are touched for every event
        self._answered = self.metrics.predictions.labels(source="student")
        self._answer_latency = self.metrics.decision_latency.labels(source="student")
        self._escalated = {reason: self.metrics.escalations.labels(reason=reason)
                           for reason in (REASON_WARMUP, REASON_CALIBRATION, REASON_LOW_CONFIDENCE, REASON_AUDIT)}
        self.events_spec, self.labels_spec = catalogue[EVENTS], catalogue[LABELS]
        self._label_key = settings.label_key.encode() if settings.label_key else None
        rate = self.triage.policy.audit_rate
        self._max_weight = 1.0 / rate if rate > 0 else 1.0

    async def handle_event(self, value: bytes | None, topic: str, partition: int, offset: int,
                           timestamp_ms: int, send: Send, *, key: bytes | None = None, headers: Headers = ()) -> None:
        """Route one input record: a prediction, an escalation, or a dead letter (see :meth:`handle_records`)."""
        await self.handle_records([InputRecord(value, topic, partition, offset, timestamp_ms, key, headers)], send)

    async def handle_records(self, records: Sequence[InputRecord], send: Send) -> None:
        """Route a batch of input records, in order: each becomes a prediction, an escalation, or a dead letter.

        The id and text are read where the settings say (``id_field``, ``text_field``; the Kafka ``key`` is the id
        when the value has none); a record's headers ride along to its escalation and its prediction. The
        student predicts the whole batch at once (one tokenizer call for the embedding student); should that
        fail, each event is routed alone. Any failure on one record (decoding, the student, encoding, a record
        too large to produce) sends it to ``dead-letter`` with the reason and the exception type; the worker
        carries on.
        """
        settings = self.settings
        self._take_offered_triage()
        events = [decode_event(r.value, r.key, self.events_spec, settings.max_text_bytes, id_field=settings.id_field,
                               text_field=settings.text_field) for r in records]
        routes = iter(self._route_many([e["text"] for e in events if not isinstance(e, Rejection)]))
        for r, event in zip(records, events):
            if isinstance(event, Rejection):
                await send_dead_letter(self.metrics, send, r.value, event, r.topic, r.partition, r.offset)
                continue
            route = next(routes)
            try:
                out_topic, record = self._decide(event, r.timestamp_ms, r.headers, route)
                value = encode(record)
                if len(value) > settings.max_internal_record_bytes:  # only events of unusual shape get here
                    self.state.pending.pop(event["id"], None)
                    await send_dead_letter(self.metrics, send, r.value, Rejection(
                        "too_large", f"its {out_topic} record would be {len(value)} bytes, over the "
                                     f"{settings.max_internal_record_bytes}-byte limit of records made from an event"),
                        r.topic, r.partition, r.offset)
                    continue
                await send(out_topic, event["id"].encode(), value, r.headers)
            except Exception as exc:
                if isinstance(exc, KafkaError) and not isinstance(exc, MessageSizeTooLargeError):
                    raise  # the broker, not this record: the worker's own recovery handles it
                log.warning("event %s/%d@%d failed (%r): dead-lettered", r.topic, r.partition, r.offset, exc)
                self.state.pending.pop(event["id"], None)
                await send_dead_letter(self.metrics, send, r.value, Rejection.from_exception("processing_error", exc),
                                       r.topic, r.partition, r.offset)
                continue
            if out_topic == PREDICTIONS:
                self._answered.inc()
                self._answer_latency.observe(max(record["decided_time"] - r.timestamp_ms, 0) / 1e3)
            else:
                self._escalated[record["reason"]].inc()

    def _route_many(self, texts: list[str]) -> list[Route | None]:
        """The batch's routes; ``None`` for each when the batched prediction fails (each is then routed alone)."""
        if not texts:
            return []
        try:
            return list(self.triage.route_many(texts))
        except Exception as exc:  # noqa: BLE001 - one bad text must not cost the batch: route them one by one
            log.warning("batched prediction of %d events failed (%r): routing them one by one", len(texts), exc)
            return [None] * len(texts)

    def _decide(self, event: dict[str, Any], timestamp_ms: int, headers: Headers,
                route: Route | None = None) -> tuple[str, dict[str, Any]]:
        """Where one valid event goes (its ``route``, or routed now) and the record it gets there (a pending
        provisional answer is noted)."""
        triage = self.triage
        self.metrics.events.inc()
        if route is None:
            route = triage.route(event["text"])
        if not route.escalate:
            return PREDICTIONS, self.task.enrich(student_prediction(
                event, route.label, route.confidence, triage.student.version, route.threshold, timestamp_ms),
                event["text"])
        record = escalation(event, route.reason, route.label, route.confidence, triage.student.version,
                            route.threshold, route.weight, timestamp_ms)
        if self._label_key is not None:
            record["signature"] = sign_escalation(self._label_key, record)
        if self.settings.teacher_timeout > 0 and route.label is not None:
            answer = self.task.enrich(student_prediction(event, route.label, route.confidence, triage.student.version,
                                                         route.threshold, timestamp_ms, provisional=True),
                                      event["text"])
            self.state.pending[event["id"]] = (time.monotonic() + self.settings.teacher_timeout, answer, headers)
        return ESCALATIONS, record

    def learn_label(self, value: bytes | None) -> bool:
        """Learn one ``labels`` record; ``False`` when it is not learned (see :meth:`learn_labels`)."""
        return self.learn_labels([value]) == 1

    def learn_labels(self, values: Sequence[bytes | None], *, step: int = 1) -> int:
        """Learn ``labels`` records in order, the student taking the batch in one call; how many were learned.

        Not learned: a malformed label, or one without a valid signature while a label key is set (the teacher
        group reports those on ``dead-letter``: every student reads every label), a label whose event was learned
        already (the teacher published it again after a crash), or one the student cannot take (NER: tags and
        tokens differ in number, checked before the batch is learned). A label's weight is bounded to what the policy
        produces (1 to 1/audit rate). ``step``: labels a step for a student that learns by steps (the learner
        catching up on a backlog).
        """
        feedback: list[Feedback] = []
        ids: dict[str, None] = {}  # in order, and a set
        student, pending, learned = self.triage.student, self.state.pending, self.state.learned_ids
        spec, max_bytes, key = self.labels_spec, self.settings.max_internal_record_bytes, self._label_key
        for value in values:
            record = decode_signed(value, spec, max_bytes, key, "label")
            if isinstance(record, Rejection):
                self.metrics.labels_rejected.labels(reason=record.reason).inc()
                continue
            label_id = record["id"]
            pending.pop(label_id, None)
            if label_id in learned or label_id in ids:
                continue
            try:
                student.check_label(record["text"], record["label"])
            except ValueError as exc:
                log.warning("label for %r not learned: %s", record["id"], exc)
                self.metrics.labels_rejected.labels(reason="processing_error").inc()
                continue
            ids[label_id] = None
            feedback.append(Feedback(record["text"], record["label"], record["student_label"],
                                     record["student_confidence"], min(max(record["weight"], 1.0), self._max_weight),
                                     record["reason"]))
        if feedback:
            self.triage.learn_many(feedback, record_routes=self.learner, step=step)
            self.state.learned_ids.add_many(ids)  # once learned: a batch that failed can be learned again label by label
            self.metrics.labels_learned.inc(len(feedback))
        return len(feedback)

    def learn_labels_safely(self, values: Sequence[bytes | None], partition: int, first_offset: int, *,
                            step: int = 1) -> int:
        """:meth:`learn_labels`, and an unexpected failure counted and logged instead of raised (then each label
        of the batch is tried alone, so only the one that fails is lost): no label, however malformed, stops the
        worker (the teacher group reports bad labels on ``dead-letter``)."""
        try:
            return self.learn_labels(values, step=step)
        except Exception:  # noqa: BLE001 - one label must not stop every student, again on every restart
            if len(values) > 1:
                return sum(self.learn_labels_safely([v], partition, first_offset + i) for i, v in enumerate(values))
            log.warning("label %s/%d@%d not learned", self.settings.topics[LABELS], partition, first_offset,
                        exc_info=True)
            self.metrics.labels_rejected.labels(reason="processing_error").inc()
            return 0

    def offer_triage(self, triage: Triage, words: WordList | None = None) -> None:
        """Route with ``triage`` from the next batch on (a predictor loading a learner's snapshot, which may arrive
        while a batch is being sent: its events keep the route and the version they were decided with); ``words``:
        the learner's word cache, taken then by a word cache holding less than half as many words."""
        self._offered_words = words
        self._offered = triage

    def _take_offered_triage(self) -> None:
        triage, self._offered = self._offered, None
        words, self._offered_words = self._offered_words, None
        if triage is not None:
            triage.reseed()  # its own audit draw: predictors loading one snapshot must not audit in step
            self.triage = self.state.triage = triage
            self.metrics.snapshot_version.set(triage.student.version)
            cache = word_cache_of(triage.student)
            if words is not None and cache is not None and len(cache) < len(words) // 2:
                self._absorb(cache, words)

    @staticmethod
    def _absorb(cache: WordCache, words: WordList) -> None:
        """Take the learner's words into this process's word cache (here, on the loop that tokenises)."""
        started = time.perf_counter()
        try:
            added = cache.absorb(words)
        except ValueError as exc:
            log.warning("the snapshot's words were not taken (%s): new words are tokenised as they come", exc)
            return
        log.info("took %d of the learner's %d words into the word cache in %.0f ms", added, len(words),
                 1e3 * (time.perf_counter() - started))

    def note_answered(self, values: Sequence[bytes | None]) -> None:
        """Forget the pending provisional answers of the events these ``labels`` records answer (a predictor,
        which learns no label, reads them only for this)."""
        for value in values:
            try:
                self.state.pending.pop(str(orjson.loads(value or b"{}").get("id")), None)
            except (orjson.JSONDecodeError, AttributeError):
                continue

    async def publish_provisional(self, send: Send, now: float | None = None) -> int:
        """The student's answer, marked provisional, for escalations the teacher has not answered in time."""
        now = time.monotonic() if now is None else now
        expired = [event_id for event_id, (deadline, _, _) in self.state.pending.items() if deadline <= now]
        for event_id in expired:
            _, answer, headers = self.state.pending.pop(event_id)
            await send(PREDICTIONS, event_id.encode(), encode(answer), headers)
            self.metrics.predictions.labels(source="provisional").inc()
        if expired:
            log.info("teacher late: published %d provisional student answers (teacher_timeout %.1f s)",
                     len(expired), self.settings.teacher_timeout)
        return len(expired)

    def estimated_agreement(self) -> float | None:
        return getattr(self.triage.policy, "estimated_agreement", lambda: None)()

    def update_gauges(self) -> None:
        """Threshold and estimated agreement gauges."""
        self.metrics.threshold.set(min(self.triage.policy.threshold, 1.0))
        estimate = self.estimated_agreement()
        self.metrics.agreement.set(float("nan") if estimate is None else estimate)

    def log_summary(self) -> None:
        m = self.metrics
        estimate = self.estimated_agreement()
        log.info("student: events=%d answered=%d escalated=%d provisional=%d dead_lettered=%d labels_learned=%d "
                 "threshold=%.3f estimated_agreement=%s", m.value("streamer_events_total"),
                 m.value("streamer_predictions_total", source="student"),
                 m.total("streamer_escalations_total"), m.value("streamer_predictions_total", source="provisional"),
                 m.total("streamer_dead_letters_total"),
                 m.value("streamer_labels_learned_total"), self.triage.policy.threshold,
                 "n/a" if estimate is None else f"{estimate:.3f}")
