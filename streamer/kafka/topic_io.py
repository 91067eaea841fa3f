"""Getting records into and out of topics: ``streamer produce`` and ``streamer tail``."""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from streamer.datasets import Example
from streamer.kafka.clients import KafkaClients
from streamer.settings import Settings


def events_from_examples(examples: Iterable[Example], id_prefix: str = "") -> Iterator[dict[str, Any]]:
    """Events for labelled examples; the gold label rides along as ``gold_label``."""
    for ex in examples:
        yield {"id": f"{id_prefix}{ex.id}", "text": ex.text, "gold_label": ex.label}


def events_from_file(path: Path) -> Iterator[bytes]:
    """Raw event values from a JSONL file (one value per line, sent as is) or a CSV file (one object per row)."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line
    else:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            for n, row in enumerate(csv.DictReader(fh)):
                row.setdefault("id", f"{path.stem}-{n}")
                yield orjson.dumps(row)


def event_key(value: bytes) -> bytes | None:
    """The event id as key when the value is a JSON object with a string id, else no key."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    ident = obj.get("id") if isinstance(obj, dict) else None
    return ident.encode() if isinstance(ident, str) and ident else None


async def produce(settings: Settings, topic: str, values: Iterable[bytes], *, rate: float = 0.0,
                  total: int | None = None, progress: bool = True,
                  wait_turn: Callable[[int], Awaitable[None]] | None = None) -> int:
    """Send ``values`` to ``topic`` (keyed by event id), at most ``rate`` per second (0: unpaced).

    ``wait_turn(sent)``, when given, is awaited before each send (closed-loop pacing).
    """
    from tqdm import tqdm

    producer = (await KafkaClients.connect(settings)).producer()
    await producer.start()
    sent = 0
    bar = tqdm(total=total, desc=f"producing to {topic}", unit="ev", disable=not progress, file=sys.stderr)
    started = time.perf_counter()
    try:
        for value in values:
            if wait_turn is not None:
                await wait_turn(sent)
            await producer.send(topic, value=value, key=event_key(value))
            sent += 1
            if sent % 100 == 0:
                bar.update(100)
            if rate > 0:
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0.005:
                    await asyncio.sleep(ahead)
        await producer.flush()
        bar.update(sent % 100)
    finally:
        bar.close()
        await producer.stop()
    return sent


async def read_records(settings: Settings, topic: str, *, idle_timeout: float | None = None,
                       ) -> AsyncIterator[ConsumerRecord]:
    """Every record of every partition of ``topic`` from the start, outside any consumer group (aiokafka's
    records: partition, offset, timestamp, key, value, headers); stops after ``idle_timeout`` seconds without a
    record."""
    consumer = (await KafkaClients.connect(settings, producing=False)).consumer()
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise SystemExit(f"topic {topic!r} does not exist on {settings.broker_url}")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        idle_since = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            if batches:
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                return
            for messages in batches.values():
                for m in messages:
                    yield m
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str, *, idle_timeout: float | None = None,
                     ) -> AsyncIterator[tuple[int, int, bytes | None, bytes | None]]:
    """:func:`read_records` as ``(partition, offset, key, value)``."""
    async for m in read_records(settings, topic, idle_timeout=idle_timeout):
        yield m.partition, m.offset, m.key, m.value


async def tail(settings: Settings, topic: str, *, limit: int | None, idle_timeout: float | None,
               with_meta: bool, out: TextIO = sys.stdout) -> int:
    """Print records of ``topic`` as JSON lines; returns how many were printed."""
    printed = 0
    async for partition, offset, key, value in read_topic(settings, topic, idle_timeout=idle_timeout):
        try:
            body: Any = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            body = {"undecodable": value.decode("utf-8", "replace") if value else None}
        if with_meta:
            body = {"partition": partition, "offset": offset,
                    "key": key.decode("utf-8", "replace") if key else None, "value": body}
        out.write(orjson.dumps(body).decode() + "\n")
        out.flush()
        printed += 1
        if limit is not None and printed >= limit:
            break
    return printed
