"""One member of a consumer group on plain aiokafka: consume, hand batches to decision logic, produce, commit.

Both workers run on it (the student on its input topic, the teacher on ``escalations`` and
``labels``). At-least-once: a partition's offset is committed only once every record produced
for the records before it has been acknowledged by the broker. Members join and leave
mid-stream without a record being handled twice: a batch, a commit and a rebalance never
interleave (one lock), a revoked partition's processed offsets are committed before it moves,
records fetched for partitions no longer assigned are dropped (their new owner reads them),
and a commit refused because the group moved on is logged, not fatal.

Measured reason for aiokafka over Faust here: with the teacher as a Faust agent, a second teacher
joining mid-stream had 128 to 256 of 3,000 events answered twice in 3 of 5 runs (whole batches
answered around the rebalance were answered again by the new member), and Faust acks a batch whose
generator is abandoned; on this loop the same test answers every event once (``tests/test_chaos.py``). The student left Faust earlier for speed
(21k against 5.2k events/s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streamer.kafka.clients import KafkaClients
from streamer.settings import Settings
from streamer.workers.runtime import Headers, Send, WorkerRuntime

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 1.0
GAUGE_INTERVAL = 1.0
#: Exit status of a worker that could not handle or deliver a batch (its offsets stay uncommitted).
EXIT_BATCH_FAILED = 4
Batches = dict[TopicPartition, list[Any]]


class GroupWorker(ABC):
    """The consume/produce/commit lifecycle of one group member; subclasses decide what a batch means."""

    #: the consumer group's role (``student``, ``teacher``): the group is the namespace's group of it
    role: str
    #: most records handed over at once, and how long to wait to fill a batch (0: whatever one fetch brings)
    max_records: int = 500
    batch_wait: float = 0.0

    def __init__(self, settings: Settings, runtime: WorkerRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.clients = KafkaClients(settings)
        self.names = settings.topics
        self.producer: AIOKafkaProducer | None = None
        self._processed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._acks: list[asyncio.Future[Any]] = []
        self._assigned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()  # a batch, a commit and a rebalance never interleave

    @abstractmethod
    def topics(self) -> list[str]:
        """The topics (on the broker) this member consumes."""

    @abstractmethod
    async def handle(self, batches: Batches, send: Send) -> None:
        """Handle records of assigned partitions (called holding the lock); mark what is done with
        :meth:`processed`."""

    def timers(self, send: Send) -> dict[str, tuple[float, Any]]:
        """Periodic jobs of this worker, ``{name: (seconds, fn)}``, besides the gauges."""
        return {}

    def tasks(self, send: Send) -> list[tuple[str, Any]]:
        """Long-running coroutines of this worker, ``[(name, coroutine)]``."""
        return []

    def update_gauges(self) -> None:
        """The worker's own gauges, once a second."""

    async def on_stopped(self) -> None:
        """After the last commit (the student writes its checkpoint)."""

    def processed(self, tp: TopicPartition, offset: int) -> None:
        """Record ``offset`` of ``tp`` as handled (its offset + 1 is committed once its outputs are acked)."""
        self._processed[tp] = offset + 1

    async def commit(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition] | None = None) -> None:
        """Commit processed offsets once every record produced so far is acknowledged (hold the lock)."""
        offsets = {tp: o for tp, o in self._processed.items()
                   if tp in self._assigned and (partitions is None or tp in partitions)
                   and self._committed.get(tp) != o}
        acks, self._acks = self._acks, []
        try:
            await asyncio.gather(*acks)
        except Exception:
            self._processed.clear()  # a record was not delivered: commit nothing more, reprocess after restart
            raise
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit of %s refused after a rebalance (%s): those records are read again by their owner",
                        {f"{tp.topic}/{tp.partition}": o for tp, o in offsets.items()}, exc)
            return
        self._committed.update(offsets)

    def lags(self, consumer: AIOKafkaConsumer) -> list[tuple[str, int, int]]:
        out = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                out.append((tp.topic, tp.partition, highwater - self._committed.get(tp, 0)))
        return out

    async def _fetch(self, consumer: AIOKafkaConsumer) -> Batches:
        """One batch: what one fetch brings, or up to :attr:`max_records` gathered for :attr:`batch_wait` s."""
        batches = await consumer.getmany(timeout_ms=100, max_records=self.max_records)
        deadline = time.monotonic() + self.batch_wait
        count = sum(len(m) for m in batches.values())
        while batches and count < self.max_records and time.monotonic() < deadline:
            more = await consumer.getmany(timeout_ms=max(int(1000 * (deadline - time.monotonic())), 1),
                                          max_records=self.max_records - count)
            for tp, messages in more.items():
                batches.setdefault(tp, []).extend(messages)
                count += len(messages)
        return batches

    async def run(self) -> int:
        """Consume until SIGTERM or Ctrl-C, then commit, stop and flush; returns the exit status."""
        runtime = self.runtime
        stop = runtime.stop_on_signals()
        producer = self.producer = self.clients.producer()
        group = self.names.group(self.role)
        consumer = self.clients.consumer(group, max_poll_records=self.max_records)

        async def send(topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
            self._acks.append(await producer.send(self.names[topic], value, key=key, headers=list(headers) or None))

        def gauges() -> None:
            self.update_gauges()
            runtime.record_lag(self.lags(consumer))

        await producer.start()
        consumer.subscribe(self.topics(), listener=_Rebalance(self, consumer))
        await consumer.start()
        log.info("%s worker consuming %s in group %s", self.role, ", ".join(self.topics()), group)
        tasks = [asyncio.create_task(coro, name=name) for name, coro in self.tasks(send)]
        tasks.append(asyncio.create_task(
            runtime.run_background({"gauges": (GAUGE_INTERVAL, gauges), **self.timers(send)}), name="background"))
        last_commit, status = time.monotonic(), 0
        try:
            while not stop.is_set():
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise RuntimeError(f"{self.role} task {task.get_name()} failed") from task.exception()
                batches = await self._fetch(consumer)
                async with self._lock:
                    live = {tp: m for tp, m in batches.items() if tp in self._assigned and m}
                    if live:
                        try:
                            await self.handle(live, send)
                        except Exception:
                            log.exception("a batch of %d records was not handled and delivered; exiting with status "
                                          "%d without committing it", sum(map(len, live.values())), EXIT_BATCH_FAILED)
                            status = EXIT_BATCH_FAILED
                            break
                    if time.monotonic() - last_commit >= COMMIT_INTERVAL:
                        await self.commit(consumer)
                        last_commit = time.monotonic()
        finally:
            log.info("shutting down: stopped consuming; committing, flushing")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                async with self._lock:
                    await self.commit(consumer)
            except Exception as exc:  # noqa: BLE001 - uncommitted records are processed again after restart
                log.warning("final commit failed (%r): the last records will be processed again", exc)
            await self.on_stopped()
            await consumer.stop()
            await producer.stop()
            log.info("%s worker stopped", self.role)
        return status


class _Rebalance(ConsumerRebalanceListener):
    """Commit what was processed before partitions move; mark the worker ready once it has some."""

    def __init__(self, worker: GroupWorker, consumer: AIOKafkaConsumer) -> None:
        self.worker, self.consumer = worker, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        worker = self.worker
        async with worker._lock:
            if revoked:
                await worker.commit(self.consumer, set(revoked))
            worker._assigned -= set(revoked)
            for tp in revoked:
                worker._processed.pop(tp, None)
                worker._committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.worker._lock:
            self.worker._assigned = set(assigned)
        self.worker.runtime.partitions_assigned(assigned)
