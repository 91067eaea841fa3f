"""Two cascades on one cluster, each reading an existing topic of its own shape (real broker, real workers)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from streamer.datasets import load_examples
from streamer.records import ensure_topics
from streamer.workers.supervisor import WorkerProcesses

pytestmark = pytest.mark.integration

#: namespace -> (dataset, the user's input topic and its partitions, id field, text field, how a value is shaped)
CASCADES = {
    "sentiment": ("rotten_tomatoes", "reviews.raw", 4, "review.id", "review.body",
                  lambda ident, text: {"review": {"id": ident, "body": text}, "site": "rt"}),
    "topics": ("bbc_news", "news.raw", 2, "article_id", "content",
               lambda ident, text: {"article_id": ident, "content": text, "desk": "bbc"}),
}
PER_CASCADE = 240
BAD = 6


@pytest.fixture(scope="module")
def quick_bbc_teacher(tmp_path_factory) -> str:
    """A topic classifier fine-tuned very briefly on BBC News (weak, but a second, different teacher)."""
    from streamer.commands.training import train_teacher

    out = tmp_path_factory.mktemp("bbc-teacher")
    train_teacher(load_examples("bbc_news", split="teacher"), out, dataset="bbc_news", steps=25, max_length=64,
                  learning_rate=2e-4, holdout=100, progress=False)
    return str(out)


def user_topics(settings, topics: dict[str, int]) -> None:
    """Topics that exist before any cascade (another team's)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
        finally:
            await admin.close()

    asyncio.run(go())


def test_two_namespaced_cascades_read_their_own_topics(tmp_path, settings, quick_teacher, quick_bbc_teacher,
                                                       librdkafka_records):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    teachers = {"sentiment": quick_teacher, "topics": quick_bbc_teacher}
    user_topics(settings, {spec[1]: spec[2] for spec in CASCADES.values()})
    workers, sent, cascade_settings = [], {}, {}
    for ns, (dataset, topic, _, id_field, text_field, shape) in CASCADES.items():
        s = settings.replace(namespace=ns, input_topic=topic, id_field=id_field, text_field=text_field)
        cascade_settings[ns] = s
        created = asyncio.run(ensure_topics(s))
        assert topic not in created and f"{ns}.predictions" in created  # the input topic is the user's
        run_dir = tmp_path / ns
        run_dir.mkdir()
        procs = WorkerProcesses(s, s.broker_url, teachers[ns], run_dir)
        procs.start("student")
        procs.start("teacher")
        workers.append(procs)
    try:
        for procs in workers:
            procs.wait_ready(timeout=180)
        for ns, (dataset, topic, _, id_field, text_field, shape) in CASCADES.items():
            producer = confluent_kafka.Producer({"bootstrap.servers": settings.bootstrap_servers})
            sent[ns] = {}
            for i, ex in enumerate(load_examples(dataset, split="stream", limit=PER_CASCADE)):
                ident, trace = f"{ns}-{i}", f"trace-{ns}-{i}".encode()
                value = shape(ident, ex.text)
                if i % 2:  # half: the id only in the Kafka key
                    value = shape(None, ex.text)
                    producer.produce(topic, key=ident.encode(), value=orjson.dumps(value),
                                     headers=[("trace-id", trace)])
                else:  # half: keyless, the id in its field
                    producer.produce(topic, value=orjson.dumps(value), headers=[("trace-id", trace)])
                sent[ns][ident] = trace
            for j in range(BAD):  # neither an id nor a key / no text
                producer.produce(topic, value=orjson.dumps(shape(None, f"no id {j}") if j % 2 else {"other": j}))
            assert producer.flush(30) == 0
        got = {ns: librdkafka_records(settings, f"{ns}.predictions", PER_CASCADE, timeout=300) for ns in CASCADES}
        dead = {ns: librdkafka_records(settings, f"{ns}.dead-letter", BAD, timeout=60) for ns in CASCADES}
        for procs in workers:
            procs.check_alive()
    finally:
        for procs in workers:
            procs.stop()

    for ns, messages in got.items():
        answers = [(orjson.loads(m.value()), dict(m.headers() or [])) for m in messages]
        ids = [a["id"] for a, _ in answers]
        assert sorted(ids) == sorted(sent[ns]), ns  # exactly one prediction per record, none of the other's
        assert all(headers.get("trace-id") == sent[ns][a["id"]] for a, headers in answers), ns
        assert {a["source"] for a, _ in answers} == {"student", "teacher"} or len(answers) == PER_CASCADE
        assert all("content" not in a and "body" not in a.get("review", {}) for a, _ in answers)  # text not copied
        reasons = [orjson.loads(m.value())["reason"] for m in dead[ns]]
        assert reasons == ["schema"] * BAD, (ns, reasons)
        assert all(orjson.loads(m.value())["source_topic"] == CASCADES[ns][1] for m in dead[ns])


def test_a_student_started_before_its_topics_exist_waits_with_a_message_then_works(tmp_path, librdkafka_records,
                                                                                  quick_teacher):
    """A fresh broker without any topic: the worker says what it waits for, then answers once they exist."""
    from streamer.kafka import EmbeddedBroker, free_port
    from streamer.kafka.topic_io import produce
    from streamer.settings import Settings

    with EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log") as broker:
        s = Settings(broker=broker.url, data_dir=tmp_path / "data", namespace="late", warmup_labels=0,
                     policy="fixed", threshold=0.0, teacher_model=quick_teacher)
        procs = WorkerProcesses(s, s.broker_url, s.teacher_model_ref, tmp_path)
        procs.start("student")
        try:
            log = tmp_path / "student.log"
            deadline = time.monotonic() + 60
            while "does not exist" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
                time.sleep(0.5)
            waiting = log.read_text()
            asyncio.run(ensure_topics(s))
            procs.wait_ready(timeout=120)
            asyncio.run(produce(s, "late.events", [orjson.dumps({"id": f"x{i}", "text": "fine"}) for i in range(20)],
                                progress=False))
            escalated = librdkafka_records(s, "late.escalations", 20, timeout=60)
            procs.check_alive()
        finally:
            procs.stop()
    assert "topic late.snapshots does not exist" in waiting and "streamer topics create" in waiting
    assert len(escalated) == 20  # an untrained student escalates: the worker is consuming
