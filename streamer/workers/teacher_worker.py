"""The teacher worker's transport: ``escalations`` and ``labels`` in the teacher group, batched.

Escalations are gathered into batches (up to ``teacher_batch_size``, waiting at most
``teacher_max_wait``) across the member's partitions and answered by
:class:`~streamer.workers.teacher_logic.TeacherLogic`; ``labels`` records are audited (bad ones
reported on ``dead-letter``, each partition having one owner in the group). Consuming,
committing (only after every answer is acknowledged) and rebalancing are
:class:`~streamer.workers.group_worker.GroupWorker`'s; a batch that cannot be answered and
delivered ends the worker with status 4, uncommitted, so it is answered after a restart.
"""

from __future__ import annotations

from pathlib import Path

from streamer.records import ESCALATIONS, LABELS
from streamer.workers.group_worker import Batches, GroupWorker
from streamer.workers.runtime import Send, WorkerRuntime
from streamer.workers.teacher_logic import Incoming, TeacherLogic


class TeacherWorker(GroupWorker):
    """One teacher worker on the broker: :class:`TeacherLogic` behind the group worker."""

    role = "teacher"

    def __init__(self, logic: TeacherLogic, ready_file: Path | None = None) -> None:
        settings = logic.settings
        super().__init__(settings, WorkerRuntime(settings, logic.metrics, ready_file=ready_file,
                                                 summary=logic.log_summary))
        self.logic = logic
        self.max_records = settings.teacher_batch_size
        self.batch_wait = settings.teacher_max_wait

    def topics(self) -> list[str]:
        return [self.names[ESCALATIONS], self.names[LABELS]]

    async def handle(self, batches: Batches, send: Send) -> None:
        by_topic: dict[str, list[Incoming]] = {self.names[ESCALATIONS]: [], self.names[LABELS]: []}
        for tp, messages in batches.items():
            by_topic[tp.topic] += [Incoming(m.value, tp.topic, tp.partition, m.offset, m.headers or ())
                                   for m in messages]
        await self.logic.answer(by_topic[self.names[ESCALATIONS]], send)
        await self.logic.audit_labels(by_topic[self.names[LABELS]], send)
        for tp, messages in batches.items():
            self.processed(tp, messages[-1].offset)
