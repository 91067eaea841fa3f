"""Records compressed with every Kafka codec, by another team's client (librdkafka) and by ours, on the real
embedded broker."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streamer.kafka.topic_io import produce, read_topic
from streamer.settings import COMPRESSION_TYPES

pytestmark = pytest.mark.integration
CODECS = [c for c in COMPRESSION_TYPES if c != "none"]


def read_values(settings, topic: str) -> list[bytes]:
    async def go() -> list[bytes]:
        return [v async for _, _, _, v in read_topic(settings, topic, idle_timeout=1.5)]

    return asyncio.run(go())


def test_records_from_a_librdkafka_producer_in_every_codec_are_read(settings):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    sent = []
    for codec in CODECS:
        producer = confluent_kafka.Producer({"bootstrap.servers": settings.bootstrap_servers,
                                             "compression.type": codec, "linger.ms": 20})
        for i in range(50):
            value = orjson.dumps({"id": f"{codec}-{i}", "text": f"compressed with {codec} " * 5})
            producer.produce("events", value=value)  # keyless, as many producers send
            sent.append(value)
        assert producer.flush(30) == 0
    assert sorted(read_values(settings, "events")) == sorted(sent)


@pytest.mark.parametrize("codec", CODECS)
def test_what_our_producers_compress_is_read_by_librdkafka(settings, codec, librdkafka_records):
    ours = settings.replace(compression_type=codec)
    values = [orjson.dumps({"id": str(i), "text": "the same words again " * 20}) for i in range(200)]
    asyncio.run(produce(ours, "predictions", values, progress=False))
    got = [m.value() for m in librdkafka_records(settings, "predictions", len(values), timeout=60)]
    assert sorted(got) == sorted(values)
