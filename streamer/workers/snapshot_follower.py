"""A predictor's side of the ``snapshots`` topic: load the newest complete snapshot, then every newer one.

On start the follower reads the topic's tail, growing the window backwards until it holds a complete
snapshot (a few records, whatever the length of the ``labels`` log), so a new predictor serves a
current student within seconds. It then follows the topic. Snapshots are authenticated, decompressed
and unpickled in a thread, and handed over (``on_snapshot``) between batches: the event loop never
learns and never stalls for a load. A snapshot no newer than the one in use is skipped; one that fails
authentication is logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamer.kafka.clients import KafkaClients
from streamer.triage.snapshot import (PackedSnapshot, Snapshot, SnapshotAssembler, SnapshotError, decode_chunk,
                                      open_snapshot)

log = logging.getLogger(__name__)

#: Records read back from the end of the topic first (a snapshot is one to a few chunks); x4 until one is complete.
FIRST_WINDOW = 8
#: How often a missing topic is looked for again, and how long the follower waits before saying that no learner
#: has published yet (seconds).
TOPIC_CHECK_INTERVAL = 5.0
RETRY_DELAY = 1.0
T = TypeVar("T")


class SnapshotFollower:
    """Feeds ``on_snapshot`` the newest snapshot on ``topic``, then each newer one, until cancelled."""

    def __init__(self, clients: KafkaClients, topic: str, key: bytes, on_snapshot: Callable[[Snapshot], None],
                 start: Callable[[AIOKafkaConsumer, str], object]) -> None:
        self.clients = clients
        self.topic = topic
        self.key = key
        self.on_snapshot = on_snapshot
        self.start = start  # starts a client, retrying while the broker is away (the worker's own)
        self.assembler = SnapshotAssembler()
        self.loaded: Snapshot | None = None

    async def run(self) -> None:
        consumer = self.clients.consumer(max_partition_fetch_bytes=2 * 1024 * 1024)
        await self.start(consumer, "snapshots consumer")
        tp = TopicPartition(self.topic, 0)
        try:
            await self._wait_for_topic(consumer)
            consumer.assign([tp])
            started = time.monotonic()
            newest = await self._retrying(lambda: self._newest(consumer, tp))
            if newest is None:
                log.info("no student snapshot on %s yet: every event goes to the teacher until the learner publishes "
                         "one (is `streamer worker learner` running?)", self.topic)
            else:
                await self._load(newest, time.monotonic() - started)
            announced = newest is not None
            while True:
                batches = await self._retrying(lambda: consumer.getmany(tp, timeout_ms=500))
                newest = None
                for message in batches.get(tp, []):
                    newest = self._add(message.value, message.offset) or newest
                if newest is not None:
                    await self._load(newest)
                    announced = True
                elif not announced and time.monotonic() - started > 6 * TOPIC_CHECK_INTERVAL:
                    log.warning("still no student snapshot on %s after %.0f s: this student worker learns nothing "
                                "itself (STREAMER_LEARNING=learner); start `streamer worker learner`", self.topic,
                                time.monotonic() - started)
                    announced = True
        finally:
            await consumer.stop()

    @staticmethod
    async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again after a pause while the broker is away (the worker's watchdog decides when to stop
        waiting): the predictor serves its snapshot meanwhile."""
        while True:
            try:
                return await call()
            except KafkaError as exc:
                log.warning("reading the snapshots failed (%r); retrying in %.0f s", exc, RETRY_DELAY)
                await asyncio.sleep(RETRY_DELAY)

    async def _wait_for_topic(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                cluster = await consumer._client.fetch_all_metadata()  # without auto-creating the topic
                if cluster.partitions_for_topic(self.topic):
                    return
                log.warning("topic %s does not exist yet: waiting for it (create the topics with `streamer topics "
                            "create`)", self.topic)
            except KafkaError as exc:  # the broker is away: the watchdog decides when to stop waiting
                log.warning("could not read the metadata of %s (%r); retrying", self.topic, exc)
            await asyncio.sleep(TOPIC_CHECK_INTERVAL)

    async def _newest(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> PackedSnapshot | None:
        """The newest complete snapshot, read from the end of the topic backwards (the position is left at the
        end, with the assembler holding any snapshot still being written)."""
        end = (await consumer.end_offsets([tp]))[tp]
        window = FIRST_WINDOW
        while True:
            start = max(0, end - window)
            consumer.seek(tp, start)
            self.assembler = SnapshotAssembler()
            newest = None
            while True:
                batches = await consumer.getmany(tp, timeout_ms=300)
                messages = batches.get(tp, [])
                for message in messages:
                    newest = self._add(message.value, message.offset) or newest
                if not messages and await consumer.position(tp) >= max(consumer.highwater(tp) or 0, end):
                    break
            if newest is not None or start == 0:
                return newest
            window *= 4

    def _add(self, value: bytes | None, offset: int) -> PackedSnapshot | None:
        try:
            return self.assembler.add(decode_chunk(value))
        except SnapshotError as exc:
            log.warning("%s@%d skipped: %s", self.topic, offset, exc)
            return None

    async def _load(self, packed: PackedSnapshot, read_s: float = 0.0) -> None:
        if self.loaded is not None and packed.version <= self.loaded.version:
            return
        started = time.monotonic()
        try:
            snapshot = await asyncio.to_thread(open_snapshot, packed, self.key)
        except SnapshotError as exc:
            log.warning("%s", exc)
            return
        self.on_snapshot(snapshot)
        first = self.loaded is None
        self.loaded = snapshot
        log.log(logging.INFO if first else logging.DEBUG,
                "serving student snapshot %d (%.0f kB, published %.1f s ago; read in %.2f s, loaded in %.2f s)",
                snapshot.version, snapshot.size / 1e3, max(time.time() - snapshot.created_ms / 1e3, 0.0), read_s,
                time.monotonic() - started)
