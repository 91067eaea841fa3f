"""The student worker's transport: consume the input topic in the student group, follow ``labels``, produce.

Input partitions are split among student workers (consumer group ``babybear-student``, or
``<namespace>-student``). How they learn depends on ``STREAMER_LEARNING``:

* ``replica`` (default): every worker reads *all* partitions of ``labels`` (no group) and learns
  each label, so each holds a full replica of the student. The replica is checkpointed with the
  ``labels`` offsets it has learned up to (periodically, on shutdown and before giving up on the
  broker) and restored on start; only the labels after the checkpoint are replayed.
* ``learner``: the worker is a predictor. It learns nothing; it serves the newest snapshot the
  learner (:mod:`streamer.workers.learner_worker`) published on ``snapshots`` and swaps in each
  newer one (:mod:`streamer.workers.snapshot_follower`), so it is current within seconds of
  starting, whatever the length of the ``labels`` log.

The decisions are
:class:`~streamer.workers.student_logic.StudentLogic`'s; consuming, committing and rebalancing
are :class:`~streamer.workers.group_worker.GroupWorker`'s. Measured on 2 cores: 21k events/s
for this loop against 5.2k through a Faust agent with the same student (README, Speed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamer.records import EVENTS, LABELS, SNAPSHOTS
from streamer.triage.snapshot import snapshot_key
from streamer.workers.group_worker import Batches, GroupWorker
from streamer.workers.runtime import Send, WorkerRuntime
from streamer.workers.snapshot_follower import SnapshotFollower
from streamer.workers.student_logic import InputRecord, StudentLogic

log = logging.getLogger(__name__)

#: How often the worker looks for new ``labels`` partitions and for missing topics (seconds).
TOPIC_CHECK_INTERVAL = 10.0
#: Labels learned in one call before the event loop gets a turn: a replica replaying the whole ``labels`` log
#: learned a fetch of 2,000 labels in one go (seconds at ~1,000 labels/s), long enough under load to miss the
#: heartbeats of a 4 s session and be dropped from the group.
LEARNING_CHUNK = 64


class StudentWorker(GroupWorker):
    """One student worker on the broker: :class:`StudentLogic` behind the group worker."""

    role = "student"

    def __init__(self, logic: StudentLogic, ready_file: Path | None = None) -> None:
        settings = logic.settings
        #: a predictor loads the learner's snapshots and learns nothing (nor checkpoints: the snapshots are its state)
        self.predictor = settings.learning == "learner"
        super().__init__(settings, WorkerRuntime(settings, logic.metrics, ready_file=ready_file,
                                                 summary=logic.log_summary,
                                                 on_broker_lost=None if self.predictor
                                                 else lambda: logic.state.checkpoint("broker lost")))
        self.logic = logic
        self.max_records = settings.student_batch_size

    def topics(self) -> list[str]:
        return [self.names[EVENTS]]

    async def handle(self, batches: Batches, send: Send) -> None:
        """Every record of the batch through the student at once (one batched prediction), then marked processed."""
        records = [InputRecord(m.value, tp.topic, tp.partition, m.offset, m.timestamp, m.key, m.headers)
                   for tp, messages in batches.items() for m in messages]
        await self.logic.handle_records(records, send)
        for tp, messages in batches.items():
            if messages:
                self.processed(tp, messages[-1].offset)

    def timers(self, send: Send) -> dict[str, tuple[float, Any]]:
        logic, settings = self.logic, self.settings
        timers: dict[str, tuple[float, Any]] = {}
        if settings.checkpoint_interval > 0 and not self.predictor:
            timers["checkpoint"] = (settings.checkpoint_interval,
                                    lambda: logic.state.checkpoint_in_background("periodic"))
        if settings.teacher_timeout > 0:
            timers["provisional"] = (min(settings.teacher_timeout / 2, 1.0), lambda: logic.publish_provisional(send))
        return timers

    def tasks(self, send: Send) -> list[tuple[str, Any]]:
        if not self.predictor:
            return [("follow-labels", self.follow_labels())]
        follower = SnapshotFollower(self.clients, self.names[SNAPSHOTS], snapshot_key(self.settings),
                                    lambda snapshot: self.logic.offer_triage(snapshot.triage, snapshot.words),
                                    self._start)
        tasks: list[tuple[str, Any]] = [("follow-snapshots", follower.run())]
        if self.settings.teacher_timeout > 0:  # provisional answers wait for the teacher's: read which came
            tasks.append(("follow-answers", self.follow_labels(answers_only=True)))
        return tasks

    def update_gauges(self) -> None:
        self.logic.update_gauges()

    async def on_stopped(self) -> None:
        if not self.predictor:
            self.logic.state.checkpoint("shutdown")

    async def follow_labels(self, answers_only: bool = False) -> None:
        """Read every partition of ``labels`` after the checkpoint (from the start without one) and learn each
        label; partitions added to the topic later are followed too, and a missing topic is waited for.
        ``answers_only`` (a predictor): from the end of each partition, only to note which escalations the teacher
        answered."""
        consumer = self.clients.consumer()
        await self._start(consumer, "labels consumer")
        offsets = {} if answers_only else self.logic.state.label_offsets
        followed: set[TopicPartition] = set()
        try:
            while True:
                try:
                    new = await self._new_label_partitions(consumer, followed)
                except KafkaError as exc:  # the broker is away: the watchdog decides when to stop waiting
                    log.warning("could not refresh the partitions of %s (%r); retrying in %.0f s",
                                self.names[LABELS], exc, TOPIC_CHECK_INTERVAL)
                    new = set()
                if new:
                    followed |= new
                    consumer.assign(sorted(followed))
                    for tp in new:
                        if tp.partition in offsets:
                            consumer.seek(tp, offsets[tp.partition])
                        elif answers_only:
                            await consumer.seek_to_end(tp)
                        else:
                            await consumer.seek_to_beginning(tp)
                    log.info("following %d partitions of %s from offsets %s", len(followed), self.names[LABELS],
                             {tp.partition: offsets.get(tp.partition, 0) for tp in sorted(followed)})
                if not followed:
                    await asyncio.sleep(TOPIC_CHECK_INTERVAL)
                    continue
                deadline = time.monotonic() + TOPIC_CHECK_INTERVAL
                while time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                    for tp, messages in batches.items():
                        for start in range(0, len(messages), LEARNING_CHUNK):
                            chunk = messages[start:start + LEARNING_CHUNK]
                            if answers_only:
                                self.logic.note_answered([m.value for m in chunk])
                            else:
                                self.logic.learn_labels_safely([m.value for m in chunk], tp.partition,
                                                               chunk[0].offset)
                            offsets[tp.partition] = chunk[-1].offset + 1
                            await asyncio.sleep(0)  # let heartbeats, events and commits through
        finally:
            await consumer.stop()

    async def _new_label_partitions(self, consumer: AIOKafkaConsumer,
                                    followed: set[TopicPartition]) -> set[TopicPartition]:
        cluster = await consumer._client.fetch_all_metadata()  # fresh metadata, without auto-creating the topic
        labels_topic = self.names[LABELS]
        labels = cluster.partitions_for_topic(labels_topic) or set()
        for name in (LABELS, EVENTS):
            if not cluster.partitions_for_topic(self.names[name]):
                log.warning("topic %s does not exist on %s yet: waiting for it (%s)%s", self.names[name],
                            self.settings.broker_url,
                            "create the topics with `streamer topics create`" if self.names.owned(name)
                            else "it is your input topic", "; until then this student learns nothing"
                            if name == LABELS else "")
        return {TopicPartition(labels_topic, p) for p in labels} - followed
