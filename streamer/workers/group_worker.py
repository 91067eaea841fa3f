"""One member of a consumer group on plain aiokafka: consume, hand batches to decision logic, produce, commit.

Both workers run on it (the student on its input topic, the teacher on ``escalations`` and
``labels``). At-least-once: a partition's offset is committed only once every record produced
for the records before it has been acknowledged by the broker. Members join and leave
mid-stream without a record being handled twice: a batch, a commit and a rebalance never
interleave (one lock), a revoked partition's processed offsets are committed before it moves,
records fetched for partitions no longer assigned are dropped (their new owner reads them),
and a commit refused because the group moved on is logged, not fatal.

Broker outages (the broker frozen, refusing connections, restarting, a broker of a cluster lost)
never stop a worker before ``broker_timeout``: records wait in the producer for as long as the
worker waits for the broker, a commit that fails is tried again with the next one, and a member
dropped from its group while away claims, when it rejoins, the partitions it answered but could
not commit (:mod:`streamer.kafka.resume_assignor`): it gets them back, skips what it answered and
commits it, so nothing is answered twice.

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
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

from streamer.kafka.clients import KafkaClients
from streamer.kafka.embedded_broker import BrokerError
from streamer.kafka.resume_assignor import Claims, ResumeAssignor
from streamer.settings import Settings
from streamer.workers.runtime import Headers, RetryBatch, Send, WorkerRuntime
from streamer.workers.watchdog import EXIT_BROKER_LOST

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 1.0
#: Seconds a client gets to close at shutdown (a broker that is away cannot take its last requests).
STOP_TIMEOUT = 10.0
GAUGE_INTERVAL = 1.0
#: Exit status of a worker that could not handle or deliver a batch (its offsets stay uncommitted).
EXIT_BATCH_FAILED = 4
#: Exit status of a worker the cluster refuses for good (configuration, authorisation): the log says why.
EXIT_KAFKA_REFUSED = 5
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
        self.consumer: AIOKafkaConsumer | None = None
        self._processed: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        #: partitions revoked while their answered offsets could not be committed: claimed back at the next join
        self._unsettled: Claims = {}
        self._acks: list[asyncio.Future[Any]] = []
        self._assigned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()  # a batch, a commit and a rebalance never interleave
        self._commit_failing_since: float | None = None

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

    def assignors(self) -> tuple[Any, ...]:
        """The partition assignors this member offers its group, preferred first: the claims-aware spread, then
        ``roundrobin`` for members that do not know it."""
        return (ResumeAssignor(self.claims), RoundRobinPartitionAssignor)

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """After each assignment, holding the lock (the learner seeks to its checkpoint's offsets here)."""

    def processed(self, tp: TopicPartition, offset: int) -> None:
        """Record ``offset`` of ``tp`` as handled (its offset + 1 is committed once its outputs are acked)."""
        self._processed[tp] = offset + 1

    def claims(self) -> Claims:
        """Partitions this member answered further than it could commit (sent with every group join)."""
        claims = dict(self._unsettled)
        claims.update({tp: o for tp, o in self._processed.items() if self._committed.get(tp, -1) < o})
        return claims

    async def settle_acks(self) -> None:
        """Wait until every record produced so far is acknowledged (they wait out a broker outage in the
        producer); raises when one was not delivered."""
        acks, self._acks = self._acks, []
        try:
            # one by one, in order: most are done by now, and a done one is read without a wait or a loop callback
            # (gather put a callback on every record's future: about 7 % of a predictor's time)
            for ack in acks:
                await ack
        except Exception:
            self._processed.clear()  # a record was not delivered: commit nothing more, reprocess after restart
            for ack in acks:  # the other failures are known too: no "exception never retrieved" at exit
                if ack.done() and not ack.cancelled():
                    ack.exception()
            raise

    async def commit(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition] | None = None) -> bool:
        """Commit processed offsets once every record produced so far is acknowledged (hold the lock); ``False``
        when the broker refused or could not take the commit (the offsets are tried again with the next one)."""
        await self.settle_acks()
        offsets = {tp: o for tp, o in self._processed.items()
                   if tp in self._assigned and (partitions is None or tp in partitions)
                   and self._committed.get(tp) != o}
        if not offsets:
            return True
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            now = time.monotonic()
            if self._commit_failing_since is None:
                self._commit_failing_since = now
                log.warning("commit of %s failed (%r); the offsets are kept and committed later (or claimed back "
                            "at the next rebalance)", _show(offsets), exc)
            return False
        if self._commit_failing_since is not None:
            log.warning("commits go through again after %.0f s", time.monotonic() - self._commit_failing_since)
            self._commit_failing_since = None
        self._committed.update(offsets)
        return True

    async def resume(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """After an assignment: skip what this member answered but could not commit on partitions it got back.
        (Kept short: no heartbeat goes out while it runs; only claimed partitions cost a request.)"""
        for tp in assigned & set(self._unsettled):
            answered = self._unsettled.pop(tp)
            committed = await self._committed_offset(consumer, tp)
            if committed is not None and answered > committed:
                consumer.seek(tp, answered)
                self._processed[tp] = answered
                log.warning("resuming %s/%d at offset %d: this worker answered the records up to there before it "
                            "lost the group (committed: %d); committing them now", tp.topic, tp.partition, answered,
                            committed)
        for tp, answered in self._unsettled.items():
            log.warning("partition %s/%d went to another member with records up to offset %d answered here but not "
                        "committed: they are answered again there", tp.topic, tp.partition, answered)
        self._unsettled.clear()

    async def _committed_offset(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (0 when none), noted for the lag gauge; ``None`` if unreadable."""
        try:
            committed = await consumer.committed(tp) or 0
        except KafkaError as exc:
            log.warning("could not read the committed offset of %s/%d (%r)", tp.topic, tp.partition, exc)
            return None
        self._committed.setdefault(tp, committed)
        return committed

    async def note_committed(self, consumer: AIOKafkaConsumer) -> None:
        """Read the committed offset of assigned partitions whose lag has no starting point yet (outside the lock)."""
        for tp in [tp for tp in self._assigned if tp not in self._committed]:
            await self._committed_offset(consumer, tp)

    def lags(self, consumer: AIOKafkaConsumer) -> list[tuple[str, int, int]]:
        out = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp in self._committed:
                out.append((tp.topic, tp.partition, highwater - self._processed.get(tp, self._committed[tp])))
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

    async def _start(self, client: Any, what: str) -> None:
        """Start a client, retrying (with backoff) while the broker is away, up to ``broker_timeout``."""
        deadline = time.monotonic() + max(self.settings.broker_timeout, 1.0)
        delay = 0.5
        while True:
            try:
                await client.start()
                return
            except KafkaError as exc:
                if time.monotonic() + delay > deadline:
                    raise BrokerError(f"the {what} could not reach the broker within "
                                      f"{self.settings.broker_timeout:.0f} s ({exc!r})") from exc
                log.warning("the %s could not reach the broker (%r); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def run(self) -> int:
        """Consume until SIGTERM or Ctrl-C, then commit, stop and flush; returns the exit status."""
        runtime = self.runtime
        stop = runtime.stop_on_signals()
        try:
            self.clients = await KafkaClients.connect(self.settings)
        except BrokerError as exc:
            log.error("%s; exiting with status %d", exc, EXIT_BROKER_LOST)
            return EXIT_BROKER_LOST
        timings = self.clients.timings
        log.info("broker %s is %s; group timing: session %g s, heartbeat %g s, fetch wait %g s; producers acks=all%s",
                 self.settings.broker_url, self.clients.profile.describe(), timings.session_timeout,
                 timings.heartbeat_interval, timings.fetch_max_wait,
                 ", idempotent" if self.clients.profile.idempotence else "")
        producer = self.producer = self.clients.producer()
        group = self.names.group(self.role)
        consumer = self.consumer = self.clients.consumer(group, max_poll_records=self.max_records,
                                                         partition_assignment_strategy=self.assignors())

        async def send(topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
            self._acks.append(await producer.send(self.names[topic], value, key=key, headers=list(headers) or None))

        async def gauges() -> None:
            self.update_gauges()
            await self.note_committed(consumer)
            runtime.record_lag(self.lags(consumer))

        try:
            await self._start(producer, "producer")
            consumer.subscribe(self.topics(), listener=_Rebalance(self, consumer))
            await self._start(consumer, "consumer")
        except BrokerError as exc:
            log.error("%s; exiting with status %d", exc, EXIT_BROKER_LOST)
            await producer.stop()
            return EXIT_BROKER_LOST
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
                try:
                    batches = await self._fetch(consumer)
                except KafkaError as exc:
                    if exc.retriable:
                        log.warning("fetch failed (%r); retrying", exc)
                        await asyncio.sleep(0.5)
                        continue
                    log.error("the cluster refused this %s worker (%r): %s; exiting with status %d", self.role,
                              exc, _advice(exc), EXIT_KAFKA_REFUSED)
                    status = EXIT_KAFKA_REFUSED
                    break
                retry: RetryBatch | None = None
                async with self._lock:
                    live = {tp: m for tp, m in batches.items() if tp in self._assigned and m}
                    if live:
                        try:
                            await self.handle(live, send)
                        except RetryBatch as exc:
                            retry = exc
                            for tp, messages in live.items():  # the same records again from the next fetch
                                consumer.seek(tp, messages[0].offset)
                        except Exception:
                            log.exception("a batch of %d records was not handled and delivered; exiting with status "
                                          "%d without committing it", sum(map(len, live.values())), EXIT_BATCH_FAILED)
                            status = EXIT_BATCH_FAILED
                            break
                    if time.monotonic() - last_commit >= COMMIT_INTERVAL:
                        try:
                            await self.commit(consumer)
                        except Exception:
                            log.exception("records were not delivered; exiting with status %d without committing "
                                          "them", EXIT_BATCH_FAILED)
                            status = EXIT_BATCH_FAILED
                            break
                        last_commit = time.monotonic()
                if retry is not None:  # outside the lock: rebalances and stop signals go on meanwhile
                    try:
                        await asyncio.wait_for(stop.wait(), retry.delay)
                    except asyncio.TimeoutError:
                        pass
        finally:
            log.info("shutting down: stopped consuming; committing, flushing")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                async with self._lock:
                    if status == 0 and not await self.commit(consumer):
                        log.warning("final commit failed: the last records will be processed again")
            except Exception as exc:  # noqa: BLE001 - uncommitted records are processed again after restart
                log.warning("final commit failed (%r): the last records will be processed again", exc)
            await self.on_stopped()
            for client in (consumer, producer):
                try:
                    await asyncio.wait_for(client.stop(), STOP_TIMEOUT)
                except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the broker may be away
                    log.warning("%s did not stop cleanly (%r)", type(client).__name__, exc)
            log.info("%s worker stopped", self.role)
        return status


def _show(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}/{tp.partition}": o for tp, o in sorted(offsets.items())}


def _advice(exc: KafkaError) -> str:
    name = type(exc).__name__
    if "SessionTimeout" in name:
        return ("the session timeout is outside the broker's group.min/max.session.timeout.ms "
                "(set STREAMER_SESSION_TIMEOUT within them)")
    if "Authorization" in name:
        return "the principal lacks an ACL this worker needs (README, Label integrity)"
    return "see the error above"


class _Rebalance(ConsumerRebalanceListener):
    """Commit what was processed before partitions move (keep it as a claim when the group refuses the commit);
    resume claimed partitions and mark the worker ready once it has some."""

    def __init__(self, worker: GroupWorker, consumer: AIOKafkaConsumer) -> None:
        self.worker, self.consumer = worker, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        worker = self.worker
        async with worker._lock:
            if revoked:
                try:
                    await worker.commit(self.consumer, set(revoked))
                except Exception as exc:  # noqa: BLE001 - undelivered: nothing to claim, the records are redone
                    log.warning("records of revoked partitions were not delivered (%r)", exc)
            for tp in revoked:
                answered = worker._processed.pop(tp, None)
                if answered is not None and worker._committed.get(tp, -1) < answered:
                    worker._unsettled[tp] = answered
                worker._committed.pop(tp, None)
                worker.runtime.forget_lag(tp.topic, tp.partition)
            worker._assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.worker._lock:
            self.worker._assigned = set(assigned)
            await self.worker.resume(self.consumer, set(assigned))
            await self.worker.on_assigned(self.consumer, set(assigned))
        self.worker.runtime.partitions_assigned(assigned)
