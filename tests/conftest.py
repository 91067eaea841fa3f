"""Shared fixtures: a real embedded broker and a briefly trained teacher.

The teacher used by the tests is fine-tuned for only a few dozen steps (about 40 s
on 2 CPU cores) so the suite stays fast; it is a weak teacher (about 0.7 held-out
accuracy on Rotten Tomatoes), which is enough to exercise the whole cascade.
Set STREAMER_TEST_TEACHER to a directory to reuse one between runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from streamer.kafka import EmbeddedBroker, free_port
from streamer.records.catalogue import Catalogue, ensure_topics
from streamer.settings import Settings

TEST_TEACHER_STEPS = 60
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests' own helpers (outage_kit, chaos_teacher)


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture()
def broker(tmp_path: Path):
    """A fresh embedded broker (Tansu) for one test, topics created from the catalogue."""
    with EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log") as b:
        asyncio.run(ensure_topics(Settings(broker=b.url)))
        yield b


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A local S3 endpoint (``tests/s3_server.py``) for durable embedded brokers (``tests/outage_kit.py``)."""
    from outage_kit import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3") / "s3.log").start()
    yield server
    server.stop()


@pytest.fixture()
def settings(tmp_path: Path, broker: EmbeddedBroker, quick_teacher: str) -> Settings:
    """Settings for the test's broker; the default student reads the test teacher's distilled embeddings."""
    return Settings(broker=broker.url, data_dir=tmp_path / "data", teacher_model=quick_teacher)


@pytest.fixture(scope="session")
def quick_teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A teacher fine-tuned briefly on the Rotten Tomatoes teacher split (weak, but real). It has no warm start
    for its students, so they start from nothing (``tests/test_warm_start.py`` labels one on a copy)."""
    from streamer.datasets import load_examples
    from streamer.commands.training import train_teacher

    cached = os.environ.get("STREAMER_TEST_TEACHER")
    out = Path(cached) if cached else tmp_path_factory.mktemp("teacher")
    if not (out / "config.json").is_file():
        train_teacher(load_examples("rotten_tomatoes", split="teacher"), out, dataset="rotten_tomatoes",
                      steps=TEST_TEACHER_STEPS, max_length=64, learning_rate=1.5e-4, holdout=300, progress=False,
                      warm_start=False)
    return str(out)


@pytest.fixture(scope="session")
def quick_ner_teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A token classifier fine-tuned briefly on the WNUT-16 teacher split (about 50 s; entity F1 about 0.1:
    weak, but it tags entities in about a fifth of the sentences, enough to exercise the NER cascade)."""
    from streamer.datasets import load_examples
    from streamer.commands.training import train_teacher

    cached = os.environ.get("STREAMER_TEST_NER_TEACHER")
    out = Path(cached) if cached else tmp_path_factory.mktemp("ner-teacher")
    if not (out / "config.json").is_file():
        train_teacher(load_examples("wnut16", split="teacher"), out, dataset="wnut16", steps=80, max_length=64,
                      learning_rate=3e-4, holdout=100, progress=False, task="ner")
    return str(out)


@pytest.fixture(scope="session")
def topic_records():
    """``topic_records(settings, topic, idle=1.5)``: every record of a topic, decoded; ``{}`` for malformed ones
    (tests write some on purpose), read until the topic has been quiet for ``idle`` seconds."""
    import orjson

    from streamer.kafka.topic_io import read_topic

    def decoded(value: bytes | None) -> dict:
        try:
            record = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return {}
        return record if isinstance(record, dict) else {}

    def read(settings: Settings, topic: str, idle: float = 1.5) -> list[dict]:
        async def go() -> list[dict]:
            return [decoded(v) async for _, _, _, v in read_topic(settings, topic, idle_timeout=idle)]

        return asyncio.run(go())

    return read


@pytest.fixture(scope="session")
def librdkafka_records():
    """``librdkafka_records(settings, topic, want, timeout)``: every record of ``topic`` (messages with headers)
    read by another team's client, librdkafka (``confluent-kafka``), outside any group (a group join on the
    embedded broker waits half of librdkafka's 45 s session timeout); stops at ``want`` records plus 3 quiet
    seconds (so a duplicate would still show up), or at ``timeout``."""
    import time

    confluent_kafka = pytest.importorskip("confluent_kafka")

    def read(settings: Settings, topic: str, want: int, timeout: float = 60.0) -> list:
        consumer = confluent_kafka.Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "unused",
                                             "enable.auto.commit": False})
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in partitions])
        out, deadline, quiet_until = [], time.monotonic() + timeout, None
        try:
            while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    out.append(msg)
                if quiet_until is None and len(out) >= want:
                    quiet_until = time.monotonic() + 3
        finally:
            consumer.close()
        return out

    return read
