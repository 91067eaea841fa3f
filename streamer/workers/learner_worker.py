"""The learner: the one worker that learns the ``labels`` log and publishes the student for predictors.

With ``STREAMER_LEARNING=learner`` student workers no longer learn (they are predictors, loading
snapshots); one learner does, off their event loops. It consumes every partition of ``labels`` in the
learner group (``babybear-learner``, or ``<namespace>-learner``): the group's assignor gives them all to
one member (:mod:`streamer.kafka.sole_owner_assignor`), so a second learner process stands by and takes
over when the first leaves or is dropped. The learner learns in batches (``learn_many``), tells the
threshold policy the stream's confidences through the labels' weights
(:meth:`~streamer.triage.router.Triage.learn_many`), and publishes the student on ``snapshots``
(:mod:`streamer.triage.snapshot`: compressed, authenticated, chunked) at most every ``snapshot_interval``
seconds, as :class:`~streamer.triage.snapshot.SnapshotSchedule` says: every tick while the student is young,
once it has 1 % more labels later on, and at once when it leaves warm-up. Once more than ``catch_up_labels``
labels wait (a burst, a restart, a log replayed from the start) it catches up until at most
:data:`CATCH_UP_UNTIL` wait: the embedding student takes ``catch_up_step`` labels an optimiser step instead of one,
1,024 labels a call (20,000-27,700 labels/s in the bench here, about 2,000 a step per label).
It checkpoints like a student worker (its own file, ``learner-<host>.ckpt``), so a restart replays only the
labels after the checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.kafka.sole_owner_assignor import SoleOwnerAssignor
from streamer.records import LABELS, SNAPSHOTS
from streamer.triage import triage_config
from streamer.triage.snapshot import SnapshotSchedule, pack_snapshot, pickle_snapshot, snapshot_key
from streamer.workers.group_worker import Batches, GroupWorker
from streamer.workers.runtime import Send, WorkerRuntime
from streamer.workers.student_logic import StudentLogic

log = logging.getLogger(__name__)

#: Labels learned in one call; the event loop gets a turn between two (heartbeats, the snapshot timer). While
#: catching up, a call of 1,024 labels takes about 60 ms, and costs per call (the policy's refit, array setup)
#: weigh a quarter of what they do at 256 (in process, measured together: 11,800 labels/s in calls of 256, 15,700
#: in calls of 1,024).
LEARNING_BATCH = 256
CATCH_UP_BATCH = 1024
#: Once catching up, a learner goes on until at most this many labels wait (not ``catch_up_labels``): a backlog's
#: last 2,000 labels learned a step per label took about a second, at 2,000 labels/s, of a 100,000-label replay.
CATCH_UP_UNTIL = LEARNING_BATCH


class LearnerWorker(GroupWorker):
    """Learns every label (:class:`StudentLogic`, in learner mode) and publishes snapshots of the student."""

    role = "learner"
    max_records = 2000

    def __init__(self, logic: StudentLogic, ready_file: Path | None = None) -> None:
        settings = logic.settings
        super().__init__(settings, WorkerRuntime(settings, logic.metrics, ready_file=ready_file,
                                                 summary=self.log_summary,
                                                 on_broker_lost=lambda: logic.state.checkpoint("broker lost")))
        self.logic = logic
        self.key = snapshot_key(settings)
        #: whether the last assignment gave this learner the labels (its partitions are revoked before each join,
        #: so this, not the assignment, tells the group who had them)
        self.holding = False
        self.schedule = SnapshotSchedule(settings.warmup_labels)  # the first snapshot goes out at the first tick
        self.published_bytes = 0
        self.catching_up = False

    def topics(self) -> list[str]:
        return [self.names[LABELS]]

    def assignors(self) -> tuple[Any, ...]:
        return (SoleOwnerAssignor(lambda: (self.logic.triage.student.version, self.holding)),)

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Go on from the checkpoint's offsets (the student's state), not the group's committed ones."""
        self.holding = bool(assigned)
        offsets = self.logic.state.label_offsets
        for tp in sorted(assigned):
            if tp.partition in offsets:
                consumer.seek(tp, offsets[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        if assigned:
            log.info("learning %d partitions of %s from offsets %s (%d labels learned)", len(assigned),
                     self.names[LABELS], {tp.partition: offsets.get(tp.partition, 0) for tp in sorted(assigned)},
                     self.logic.triage.student.version)
        else:
            log.info("standing by: another learner holds %s", self.names[LABELS])

    def waiting(self, batches: Batches) -> int:
        """Labels not yet learned on every partition this learner holds, as far as the last fetch saw: from this
        batch's first offset on its partitions, from the next offset to learn on the others (a fetch brings one
        partition's records at a time, so the batch alone would say "caught up" with other partitions behind). A
        partition none of whose labels are learned yet counts from offset 0."""
        consumer, learned = self.consumer, self.logic.state.label_offsets
        total = 0
        for tp in self._assigned | set(batches):
            end = (consumer.highwater(tp) if consumer is not None else None) or 0
            messages = batches.get(tp)
            if messages:
                total += max(end, messages[-1].offset + 1) - messages[0].offset
            else:
                total += max(end - learned.get(tp.partition, 0), 0)
        return total

    def learning_step(self, batches: Batches) -> int:
        """Labels an optimiser step: :attr:`catch_up_step` from when more than ``catch_up_labels`` wait until at
        most :data:`CATCH_UP_UNTIL` do, else 1."""
        settings = self.settings
        waiting = self.waiting(batches)
        until = min(CATCH_UP_UNTIL, settings.catch_up_labels)
        catching_up = waiting > (until if self.catching_up else settings.catch_up_labels)
        if catching_up != self.catching_up:
            self.catching_up = catching_up
            log.info("%s: %d labels waiting (catch-up from above %d until %d or fewer wait, %d labels a step)",
                     "catching up" if catching_up else "caught up", waiting, settings.catch_up_labels, until,
                     settings.catch_up_step if catching_up else 1)
        return settings.catch_up_step if catching_up else 1

    async def handle(self, batches: Batches, send: Send) -> None:
        offsets = self.logic.state.label_offsets
        step = self.learning_step(batches)
        size = LEARNING_BATCH if step == 1 else CATCH_UP_BATCH
        for tp, messages in batches.items():
            for start in range(0, len(messages), size):
                chunk = messages[start:start + size]
                self.logic.learn_labels_safely([m.value for m in chunk], tp.partition, chunk[0].offset, step=step)
                offsets[tp.partition] = chunk[-1].offset + 1
                await asyncio.sleep(0)
            self.processed(tp, messages[-1].offset)
        if self.schedule.early(self.logic.triage.student.version):
            await self.publish(send)

    def timers(self, send: Send) -> dict[str, tuple[float, Any]]:
        settings, state = self.settings, self.logic.state
        timers: dict[str, tuple[float, Any]] = {"snapshot": (settings.snapshot_interval, lambda: self.tick(send))}
        if settings.checkpoint_interval > 0:
            timers["checkpoint"] = (settings.checkpoint_interval, lambda: state.checkpoint_in_background("periodic"))
        return timers

    async def tick(self, send: Send) -> bool:
        """Publish the student if the schedule says so at this tick of the clock; whether it did."""
        return await self.publish(send) if self.schedule.due(self.logic.triage.student.version) else False

    async def publish(self, send: Send) -> bool:
        """Publish the student, if this learner holds the labels; whether it did."""
        triage = self.logic.triage
        version = triage.student.version
        if not self._assigned:
            return False
        started = time.perf_counter()
        body = pickle_snapshot(triage, self.logic.state.label_offsets, triage_config(self.settings))
        pickled_ms = 1e3 * (time.perf_counter() - started)
        records = await asyncio.to_thread(pack_snapshot, body, version=version, student=triage.student.kind,
                                          key=self.key)
        for key, value in records:
            await send(SNAPSHOTS, key, value)
        self.schedule.published_at(version)
        self.published_bytes = sum(len(v) for _, v in records)
        self.logic.metrics.snapshots_published.inc()
        self.logic.metrics.snapshot_version.set(version)
        log.debug("published snapshot %d: %d records, %.0f kB (pickled in %.0f ms on the loop, %.0f ms in all)",
                  version, len(records), self.published_bytes / 1e3, pickled_ms,
                  1e3 * (time.perf_counter() - started))
        return True

    def update_gauges(self) -> None:
        self.logic.update_gauges()

    async def on_stopped(self) -> None:
        self.logic.state.checkpoint("shutdown")

    def log_summary(self) -> None:
        m = self.logic.metrics
        log.info("learner: labels_learned=%d rejected=%d snapshot=%d (%.0f kB) snapshots_published=%d "
                 "threshold=%.3f", m.value("streamer_labels_learned_total"), m.total("streamer_labels_rejected_total"),
                 self.schedule.published, self.published_bytes / 1e3, m.value("streamer_snapshots_published_total"),
                 self.logic.triage.policy.threshold)
