"""The teacher worker's transport: a Faust agent in its own consumer group on ``escalations``.

Faust batches the stream (``take_events``) and handles commits and signals; the decisions
are :class:`~streamer.workers.teacher_logic.TeacherLogic`'s, and the lifecycle services
(ready file, lag gauge, watchdog, summary) the shared :class:`~streamer.workers.runtime.WorkerRuntime`'s.

A second agent in the same group reads ``labels`` and reports its bad records on
``dead-letter`` (each partition has one owner in the group, so each is reported once).

At-least-once: ``take_events`` acks a batch's events (so Faust may commit their offsets)
only when the agent asks for the next batch, and the agent asks only once every record it
produced for the batch is acknowledged by the broker. A batch that cannot be answered and
delivered exits the process before its events are acked (:data:`EXIT_BATCH_FAILED`), so a
restarted worker processes it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import faust

from streamer.records import DEAD_LETTER, ESCALATIONS, LABELS, PREDICTIONS
from streamer.workers.faust_app import consumer_lags, make_app, raw_topic
from streamer.workers.runtime import Headers, WorkerRuntime
from streamer.workers.teacher_logic import Incoming, TeacherLogic

log = logging.getLogger(__name__)

LAG_INTERVAL = 1.0
LABEL_AUDIT_BATCH = 500
#: exit status of a teacher worker that could not answer or deliver a batch (its offsets stay uncommitted)
EXIT_BATCH_FAILED = 4


class DeliveredSend:
    """A ``send`` onto Faust topics that keeps each record's delivery future until :meth:`delivered`."""

    def __init__(self, topics: Mapping[str, faust.TopicT]) -> None:
        self.topics = topics
        self.pending: list[Awaitable[Any]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        self.pending.append(await self.topics[topic].send(key=key, value=value, headers=list(headers) or None))

    async def delivered(self) -> None:
        """Wait until the broker has acknowledged every record sent so far (raises if one was not delivered)."""
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)


def build_teacher_app(logic: TeacherLogic, ready_file: Path | None = None) -> faust.App:
    """The Faust app that feeds ``escalations`` to ``logic`` in batches."""
    settings = logic.settings
    app = make_app(settings, "teacher")
    runtime = WorkerRuntime(settings, logic.metrics, ready_file=ready_file, summary=logic.log_summary)
    names = settings.topics
    send = DeliveredSend({name: raw_topic(app, names[name]) for name in (PREDICTIONS, LABELS, DEAD_LETTER)})

    async def handle(stream: faust.StreamT, size: int, within: float,
                     step: Callable[[list[Incoming], DeliveredSend], Awaitable[None]], what: str) -> None:
        async for batch in stream.take_events(size, within=within):
            try:
                await step([Incoming(ev.message.value, ev.message.topic, ev.message.partition, ev.message.offset,
                                     ev.message.headers or ()) for ev in batch], send)
                await send.delivered()
            except Exception:
                # Faust would ack the batch's events once this generator is closed, and then commit them:
                # leave now, before any of that, so they are processed again after a restart.
                log.exception("a batch of %d %s was not handled and delivered; exiting with status %d without "
                              "committing it", len(batch), what, EXIT_BATCH_FAILED)
                os._exit(EXIT_BATCH_FAILED)

    @app.agent(raw_topic(app, names[ESCALATIONS]), name="teacher")
    async def teacher_agent(stream: faust.StreamT) -> None:
        await handle(stream, settings.teacher_batch_size, settings.teacher_max_wait, logic.answer, "escalations")

    @app.agent(raw_topic(app, names[LABELS]), name="label-audit")
    async def label_audit_agent(stream: faust.StreamT) -> None:
        await handle(stream, LABEL_AUDIT_BATCH, settings.teacher_max_wait, logic.audit_labels, "labels")

    @app.task
    async def background() -> None:
        await runtime.run_background({"lag": (LAG_INTERVAL, lambda: runtime.record_lag(consumer_lags(app)))})

    @app.on_partitions_assigned.connect
    async def assigned(sender: object, assigned: set, **kwargs: object) -> None:
        runtime.partitions_assigned(assigned)

    return app
