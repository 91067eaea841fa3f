"""Unit tests of the workers' decision logic, in process and without a broker.

Both workers' logic (:class:`StudentLogic`, :class:`TeacherLogic`) takes a ``send``; here
it is a collecting one. Their transports are tested on the real broker (test_end_to_end,
test_recovery).
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
import orjson
import pytest

from streamer.records.catalogue import Catalogue
from streamer.settings import Settings
from streamer.workers.student_logic import StudentLogic
from streamer.workers.teacher_logic import Incoming, TeacherLogic


class Collector:
    """A ``send`` that records (topic, key, decoded value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers=()) -> None:
        self.sent.append((topic, key, orjson.loads(value)))


def run_student(tmp_path: Path, values: list[bytes], learned=(), warmup: int = 0, **settings) -> tuple[StudentLogic, list]:
    options = {"policy": "fixed", "threshold": 0.8, "student": "nb", **settings}
    worker = StudentLogic(Settings(data_dir=tmp_path, warmup_labels=warmup, **options), Catalogue.load())
    for text, label in learned:
        worker.triage.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    send = Collector()

    async def go() -> None:
        for offset, value in enumerate(values):
            await worker.handle_event(value, "events", 0, offset, 1_000, send)

    asyncio.run(go())
    return worker, send.sent


def test_untrained_student_escalates_as_warmup(tmp_path):
    _, sent = run_student(tmp_path, [orjson.dumps({"id": "1", "text": "a film", "src": "x"})], warmup=5)
    [(topic, key, record)] = sent
    assert topic == "escalations" and key == b"1"
    assert record["reason"] == "warmup" and record["event"] == {"src": "x"}


def test_confident_student_answers_and_passes_fields_through(tmp_path):
    learned = [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20
    worker, sent = run_student(tmp_path, [orjson.dumps({"id": "9", "text": "wonderful film", "lang": "en"})], learned)
    [(topic, key, record)] = sent
    assert topic == "predictions" and key == b"9"
    assert record["source"] == "student" and record["label"] == "fresh" and record["confidence"] >= 0.8
    assert record["lang"] == "en" and record["student_version"] == 40
    assert worker.metrics.value("streamer_predictions_total", source="student") == 1


def test_bad_events_go_to_dead_letter_and_the_stream_continues(tmp_path):
    values = [b"\xff\xfe", b"{oops", b'{"id": "1"}', orjson.dumps({"id": "2", "text": "fine"})]
    _, sent = run_student(tmp_path, values, warmup=1)
    dead = [(key, r) for t, key, r in sent if t == "dead-letter"]
    assert [r["reason"] for _, r in dead] == ["invalid_utf8", "invalid_json", "schema"]
    assert [key for key, _ in dead] == [b"events/0/0", b"events/0/1", b"events/0/2"]
    assert [t for t, _, _ in sent][-1] == "escalations"


def test_late_escalations_get_a_provisional_answer_until_the_label_arrives(tmp_path):
    learned = [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20
    events = [orjson.dumps({"id": "a", "text": "wonderful mess"}), orjson.dumps({"id": "b", "text": "moving mess"})]
    worker, sent = run_student(tmp_path, events, learned, teacher_timeout=5.0, threshold=1.0)
    assert [t for t, _, _ in sent] == ["escalations", "escalations"] and set(worker.state.pending) == {"a", "b"}
    esc_b = sent[1][2]
    label_b = {"id": "b", "text": esc_b["text"], "label": "rotten", "teacher_version": "t", "reason": esc_b["reason"],
               "student_label": esc_b["student_label"], "student_confidence": esc_b["student_confidence"],
               "weight": 1.0, "labelled_time": 1}
    send = Collector()

    async def go() -> int:
        worker.learn_label(orjson.dumps(label_b))  # b answered in time
        return await worker.publish_provisional(send, now=10**9)

    assert asyncio.run(go()) == 1
    [(topic, key, record)] = send.sent
    assert topic == "predictions" and key == b"a" and record["provisional"] is True and record["source"] == "student"


def test_a_predictor_learns_nothing_but_forgets_the_escalations_the_teacher_answered(tmp_path):
    """A predictor (STREAMER_LEARNING=learner) reads labels only to drop pending provisional answers."""
    learned = [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20
    events = [orjson.dumps({"id": "a", "text": "wonderful mess"}), orjson.dumps({"id": "b", "text": "moving mess"})]
    worker, _ = run_student(tmp_path, events, learned, teacher_timeout=5.0, threshold=1.0)
    version = worker.triage.student.version
    worker.note_answered([orjson.dumps({"id": "b", "text": "moving mess", "label": "rotten"}), b"{oops", None])
    assert set(worker.state.pending) == {"a"} and worker.triage.student.version == version


def test_a_predictor_routes_with_a_new_snapshot_from_the_next_batch_on(tmp_path):
    learned = [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20
    worker, _ = run_student(tmp_path, [], learned)
    snapshot = pickle.loads(pickle.dumps(worker.triage.serving()))
    snapshot.learn("fine film", "fresh", student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    worker.offer_triage(snapshot)  # arrives while a batch is out: nothing changes until the next one
    assert worker.triage is not snapshot and worker.triage.student.version == 40
    send = Collector()
    asyncio.run(worker.handle_event(orjson.dumps({"id": "n", "text": "wonderful film"}), "events", 0, 0, 1, send))
    assert worker.triage is snapshot and send.sent[0][2]["student_version"] == 41


def test_a_batch_is_predicted_at_once_and_one_failing_text_costs_only_its_event(tmp_path, quick_teacher):
    """The default (embedding) student routes a consumed batch in one prediction; when that prediction fails,
    each event is routed alone and only the one the student fails on is dead-lettered."""
    from streamer.models.embedding_student import EmbeddingStudent
    from streamer.workers.student_logic import InputRecord

    logic = StudentLogic(Settings(data_dir=tmp_path, warmup_labels=0, policy="fixed", threshold=0.0,
                                  teacher_model=quick_teacher), Catalogue.load())
    assert isinstance(logic.triage.student, EmbeddingStudent)
    for text, label in [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20:
        logic.triage.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    texts = ["wonderful film", "awful mess", "BOOM", "moving film"]
    records = [InputRecord(orjson.dumps({"id": str(i), "text": t}), "events", 0, i, 1_000) for i, t in enumerate(texts)]
    student, calls = logic.triage.student, []
    expected = [student.predict(t) for t in texts if t != "BOOM"]

    def predict_many(batch):
        calls.append(len(batch))
        return EmbeddingStudent.predict_many(student, batch)

    student.predict_many = predict_many
    send = Collector()
    asyncio.run(logic.handle_records(records[:2] + records[3:], send))
    assert calls == [3]  # one batched prediction for three events
    assert [(r["label"], r["confidence"]) for _, _, r in send.sent] == [
        (label, pytest.approx(conf)) for label, conf in expected]

    def predict(text):
        if text == "BOOM":
            raise ValueError("the model broke")
        return EmbeddingStudent.predict_many(student, [text])[0]

    student.predict_many = lambda batch: [predict(t) for t in batch]
    student.predict = predict
    send = Collector()
    asyncio.run(logic.handle_records(records, send))
    assert [(t, k) for t, k, _ in send.sent] == [("predictions", b"0"), ("predictions", b"1"),
                                                 ("dead-letter", b"events/0/2"), ("predictions", b"3")]
    assert send.sent[2][2]["exception"] == "ValueError"


class StubTeacher:
    """A stand-in model: labels every text by its length (the agent's plumbing is what is tested)."""

    version = "stub-1"

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        return [("long" if len(t) > 5 else "short", 0.9) for t in texts]


ESCALATION = {"id": "e1", "text": "a long text", "event": {"src": "x"}, "reason": "low_confidence",
              "student_label": "short", "student_confidence": 0.6, "student_version": 3, "threshold": 0.8,
              "weight": 1.0, "event_time": 1000, "escalated_time": 1001}


def answer(logic: TeacherLogic, values: list[bytes]) -> list:
    send = Collector()
    asyncio.run(logic.answer([Incoming(v, "escalations", 1, i) for i, v in enumerate(values)], send))
    return send.sent


def test_teacher_answers_feeds_back_and_dead_letters(tmp_path):
    logic = TeacherLogic(Settings(data_dir=tmp_path), Catalogue.load(), StubTeacher())
    sent = answer(logic, [b"not json", orjson.dumps(ESCALATION)])
    assert [(topic, key) for topic, key, _ in sent] == [("dead-letter", b"escalations/1/0"), ("predictions", b"e1"),
                                                        ("labels", b"e1")]
    by_topic = {topic: record for topic, _, record in sent}
    assert by_topic["dead-letter"]["reason"] == "invalid_json"
    assert by_topic["predictions"]["label"] == "long" and by_topic["predictions"]["source"] == "teacher"
    assert by_topic["predictions"]["src"] == "x" and by_topic["labels"]["student_label"] == "short"
    assert Catalogue.load()["labels"].validate(by_topic["labels"]) is None
    assert logic.metrics.value("streamer_predictions_total", source="teacher") == 1
    assert logic.metrics.value("streamer_teacher_batch_size_count") == 1


class StubTagger:
    version = "stub-ner"

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        return [(" ".join("B-person" if w[:1].isupper() else "O" for w in t.split(" ")), 0.9) for t in texts]


def test_the_task_enriches_teacher_answers(tmp_path):
    logic = TeacherLogic(Settings(data_dir=tmp_path, task="ner"), Catalogue.load(), StubTagger())
    sent = answer(logic, [orjson.dumps({**ESCALATION, "text": "hi Ann"})])
    [prediction] = [record for topic, _, record in sent if topic == "predictions"]
    assert prediction["entities"] == [{"type": "person", "text": "Ann", "start": 3, "end": 6}]
