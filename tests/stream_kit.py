"""Feeding a stream to the broker and reading what the workers made of it (the integration tests' helpers)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

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


def wait_for(path: Path, pattern: re.Pattern, timeout: float = 60.0, after: int = 0) -> re.Match:
    """The last match of ``pattern`` in the log at ``path`` past its first ``after`` characters, waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(pattern.finditer(path.read_text()[after:])) if path.exists() else []
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"{pattern.pattern!r} not in {path} within {timeout:.0f} s")
