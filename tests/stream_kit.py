"""Feeding a stream to the broker and reading what the workers made of it (the integration tests' helpers)."""

from __future__ import annotations

import asyncio
import time

import orjson

from streamer.datasets import load_examples
from streamer.kafka.topic_io import produce, read_topic
from streamer.records import EVENTS, PREDICTIONS
from streamer.settings import Settings


def events(n: int, prefix: str) -> list[bytes]:
    return [orjson.dumps({"id": f"{prefix}{i}", "text": ex.text})
            for i, ex in enumerate(load_examples("rotten_tomatoes", split="stream", limit=n))]


def feed(settings: Settings, values: list[bytes], rate: float = 0.0) -> None:
    asyncio.run(produce(settings, EVENTS, values, rate=rate, progress=False))


def read_all(settings: Settings, topic: str) -> list[dict]:
    async def go() -> list[dict]:
        return [orjson.loads(v) async for _, _, _, v in read_topic(settings, topic, idle_timeout=2.0)]

    return asyncio.run(go())


def answers_by_id(settings: Settings, ids: set[str], timeout: float) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout
    while True:
        answers: dict[str, list[dict]] = {}
        for record in read_all(settings, PREDICTIONS):
            answers.setdefault(record["id"], []).append(record)
        if ids <= set(answers) or time.monotonic() > deadline:
            return answers
        time.sleep(2)
