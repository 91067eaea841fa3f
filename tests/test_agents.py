"""Unit tests of the Faust agents without a broker (``agent.test_context()``); sends are captured."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest.mock import patch

import orjson
from streamer.catalogue import Catalogue
from streamer.settings import Settings
from streamer.student_worker import build_student_app


def capture_sends(sent: list):
    """A stand-in for ``Topic.send`` that records (topic, key, decoded value)."""

    async def send(topic, *args, **kwargs):
        sent.append((topic.get_topic_name(), kwargs["key"], orjson.loads(kwargs["value"])))

    return send


def run_student(tmp_path: Path, values: list[bytes], learned: list[tuple[str, str]] = (), warmup: int = 0):
    app = build_student_app(Settings(data_dir=tmp_path, warmup_labels=warmup, policy="fixed", threshold=0.8),
                            Catalogue.load())
    app.finalize()
    app.flow_control.resume()
    for text, label in learned:
        app.triage.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    sent: list = []

    async def go() -> None:
        with patch("faust.topics.Topic.send", new=capture_sends(sent)):
            async with app.agents["student"].test_context() as agent:
                for value in values:
                    await agent.put(value, key=b"k")
                await asyncio.sleep(0.1)

    asyncio.run(go())
    return sent


def test_untrained_student_escalates_as_warmup(tmp_path):
    sent = run_student(tmp_path, [orjson.dumps({"id": "1", "text": "a film", "src": "x"})], warmup=5)
    [(topic, key, record)] = sent
    assert topic == "escalations" and key == b"1"
    assert record["reason"] == "warmup" and record["event"] == {"src": "x"}


def test_confident_student_answers_and_passes_fields_through(tmp_path):
    learned = [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20
    sent = run_student(tmp_path, [orjson.dumps({"id": "9", "text": "wonderful film", "lang": "en"})], learned)
    [(topic, key, record)] = sent
    assert topic == "predictions" and key == b"9"
    assert record["source"] == "student" and record["label"] == "fresh" and record["confidence"] >= 0.8
    assert record["lang"] == "en" and record["student_version"] == 40


def test_bad_events_go_to_dead_letter_and_the_stream_continues(tmp_path):
    values = [b"\xff\xfe", b"{oops", b'{"id": "1"}', orjson.dumps({"id": "2", "text": "fine"})]
    sent = run_student(tmp_path, values, warmup=1)
    reasons = [r["reason"] for t, _, r in sent if t == "dead-letter"]
    assert reasons == ["invalid_utf8", "invalid_json", "schema"]
    assert [t for t, _, _ in sent][-1] == "escalations"
