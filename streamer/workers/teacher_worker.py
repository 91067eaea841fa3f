"""The teacher worker's transport: a Faust agent in its own consumer group on ``escalations``.

Faust batches the stream (``take_events``) and handles commits and signals; the decisions
are :class:`~streamer.workers.teacher_logic.TeacherLogic`'s, and the lifecycle services
(ready file, lag gauge, watchdog, summary) the shared :class:`~streamer.workers.runtime.WorkerRuntime`'s.
"""

from __future__ import annotations

from pathlib import Path

import faust

from streamer.records import DEAD_LETTER, ESCALATIONS, LABELS, PREDICTIONS
from streamer.workers.faust_app import consumer_lags, make_app, raw_topic
from streamer.workers.runtime import WorkerRuntime
from streamer.workers.teacher_logic import Incoming, TeacherLogic

LAG_INTERVAL = 1.0


def build_teacher_app(logic: TeacherLogic, ready_file: Path | None = None) -> faust.App:
    """The Faust app that feeds ``escalations`` to ``logic`` in batches."""
    settings = logic.settings
    app = make_app(settings, "teacher")
    runtime = WorkerRuntime(settings, logic.metrics, ready_file=ready_file, summary=logic.log_summary)
    topics = {name: raw_topic(app, name) for name in (PREDICTIONS, LABELS, DEAD_LETTER)}

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await topics[topic].send(key=key, value=value)

    @app.agent(raw_topic(app, ESCALATIONS), name="teacher")
    async def teacher_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.teacher_batch_size, within=settings.teacher_max_wait):
            await logic.answer([Incoming(ev.message.value, ev.message.topic, ev.message.partition,
                                         ev.message.offset) for ev in batch], send)

    @app.task
    async def background() -> None:
        await runtime.run_background({"lag": (LAG_INTERVAL, lambda: runtime.record_lag(consumer_lags(app)))})

    @app.on_partitions_assigned.connect
    async def assigned(sender: object, assigned: set, **kwargs: object) -> None:
        runtime.partitions_assigned(assigned)

    return app
