"""One contract, checked on every student kind of every task (as River checks every estimator).

A new student kind registered with a task is picked up here without any other change. Every student is
built with the (briefly trained) test teacher: the embedding student reads its distilled embeddings, the
others ignore it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from streamer.datasets import load_examples
from streamer.models.student import Student
from streamer.settings import Settings
from streamer.tasks import TASKS, Task
from streamer.triage import build_triage, triage_config
from streamer.models.embeddings import word_cache_of
from streamer.triage.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from streamer.triage.router import Feedback
from streamer.triage.snapshot import SnapshotAssembler, decode_chunk, open_snapshot, pack_snapshot, pickle_snapshot

KINDS = [(task, kind) for task in TASKS.values() for kind in task.students]
SAMPLE = 300


def sample(task: Task) -> list:
    return load_examples(task.default_dataset, split="stream", limit=SAMPLE)


def trained(task: Task, kind: str, teacher: str, n: int = SAMPLE) -> Student:
    student = task.new_student(kind, teacher_model=teacher)
    for ex in sample(task)[:n]:
        student.learn(ex.text, ex.label)
    return student


@pytest.fixture(params=KINDS, ids=[f"{task.name}:{kind}" for task, kind in KINDS])
def task_kind(request, quick_teacher: str) -> tuple[Task, str, str]:
    """A task, one of its student kinds, and the teacher model students are built with."""
    return (*request.param, quick_teacher)


def test_a_student_follows_the_protocol_and_names_its_kind(task_kind):
    task, kind, teacher = task_kind
    student = task.new_student(kind, teacher_model=teacher)
    assert isinstance(student, Student) and student.kind == kind and student.version == 0


def test_an_untrained_student_has_no_answer(task_kind):
    task, kind, teacher = task_kind
    assert task.new_student(kind, teacher_model=teacher).predict(sample(task)[0].text) == (None, 0.0)


def test_confidence_is_a_probability_and_version_counts_labels(task_kind):
    task, kind, teacher = task_kind
    student = task.new_student(kind, teacher_model=teacher)
    labels = {ex.label for ex in sample(task)}
    for i, ex in enumerate(sample(task)):
        label, confidence = student.predict(ex.text)
        assert 0.0 <= confidence <= 1.0
        assert (label is None) == (i == 0)
        assert label is None or isinstance(label, str)
        student.learn(ex.text, ex.label)
        assert student.version == i + 1
    answers = {student.predict(ex.text)[0] for ex in sample(task)}
    assert answers & labels  # it answers with labels it was taught


def test_learning_a_batch_is_learning_each_label_in_order(task_kind):
    task, kind, teacher = task_kind
    one_by_one = trained(task, kind, teacher, 200)
    batched = task.new_student(kind, teacher_model=teacher)
    examples = sample(task)[:200]
    for start in range(0, 200, 64):
        chunk = examples[start:start + 64]
        batched.learn_many([ex.text for ex in chunk], [ex.label for ex in chunk])
    assert batched.version == one_by_one.version == 200
    probes = [ex.text for ex in sample(task)[200:]]
    assert [batched.predict(t) for t in probes] == [one_by_one.predict(t) for t in probes]


def test_a_warm_start_teaches_without_counting_as_stream_labels(task_kind):
    task, kind, teacher = task_kind
    student = task.new_student(kind, teacher_model=teacher)
    taught = sample(task)[:150]
    student.warm_start([ex.text for ex in taught], [ex.label for ex in taught])
    assert (student.version, student.warm_labels) == (0, 150)
    assert {student.predict(ex.text)[0] for ex in taught} & {ex.label for ex in taught}
    restored = task.restore_student(pickle.loads(pickle.dumps(student.state())))
    assert (restored.version, restored.warm_labels) == (0, 150)


def test_state_round_trip_gives_the_same_answers(task_kind):
    task, kind, teacher = task_kind
    student = trained(task, kind, teacher, 150)
    restored = task.restore_student(pickle.loads(pickle.dumps(student.state())))
    assert (restored.kind, restored.version) == (kind, 150)
    probes = [ex.text for ex in sample(task)[150:]]
    assert [restored.predict(t) for t in probes] == [student.predict(t) for t in probes]
    restored.learn(sample(task)[0].text, sample(task)[0].label)  # and it keeps learning
    assert restored.version == 151


def test_a_checkpoint_of_the_triage_round_trips(task_kind, tmp_path: Path):
    task, kind, teacher = task_kind
    settings = Settings(task=task.name, student=kind, warmup_labels=20, teacher_model=teacher)
    triage = build_triage(settings)
    for ex in sample(task)[:100]:
        route = triage.route(ex.text)
        triage.learn(ex.text, ex.label, student_label=route.label, student_confidence=route.confidence,
                     weight=route.weight, reason=route.reason or "low_confidence")
    write_checkpoint(tmp_path / "s.ckpt", Checkpoint(triage, {0: 100}, triage_config(settings)))
    restored = read_checkpoint(tmp_path / "s.ckpt")
    assert restored is not None and restored.config == triage_config(settings)
    probes = [ex.text for ex in sample(task)[100:]]
    assert [restored.triage.student.predict(t) for t in probes] == [triage.student.predict(t) for t in probes]


def test_the_same_seed_replays_identically(task_kind):
    task, kind, teacher = task_kind

    def replay(seed: int) -> list:
        triage = build_triage(Settings(task=task.name, student=kind, warmup_labels=30, seed=seed, audit_rate=0.2,
                                          teacher_model=teacher))
        routes = []
        for ex in sample(task):
            route = triage.route(ex.text)
            routes.append(route)
            if route.escalate:
                triage.learn(ex.text, ex.label, student_label=route.label, student_confidence=route.confidence,
                             weight=route.weight, reason=route.reason)
        return routes

    first = replay(7)
    assert replay(7) == first
    assert any(r.reason == "audit" for r in first) or not any(not r.escalate for r in first)


def test_a_snapshot_serves_the_same_answers_and_the_learner_goes_on(task_kind):
    task, kind, teacher = task_kind
    settings = Settings(task=task.name, student=kind, warmup_labels=20, teacher_model=teacher)
    triage = build_triage(settings)
    examples = sample(task)
    triage.learn_many([Feedback(ex.text, ex.label, None, 0.5, 1.0, "low_confidence") for ex in examples[:150]],
                      record_routes=True)
    key = b"k" * 32
    records = pack_snapshot(pickle_snapshot(triage, {0: 150}), version=triage.student.version, student=kind, key=key)
    assert all(len(value) < 1024 * 1024 for _, value in records)
    assembler = SnapshotAssembler()
    loaded = open_snapshot([assembler.add(decode_chunk(v)) for _, v in records][-1], key)
    probes = [ex.text for ex in examples[150:]]
    assert loaded.version == 150 and loaded.label_offsets == {0: 150}
    cache = word_cache_of(triage.student)  # the words its tokenizer met ride along, for a predictor's cold cache
    assert (len(loaded.words) == len(cache) > 0) if cache is not None else loaded.words is None
    assert [r.label for r in loaded.triage.route_many(probes)] == [r.label for r in triage.route_many(probes)]
    assert loaded.triage.policy.threshold == triage.policy.threshold
    # publishing leaves the learner's own student whole: it learns on exactly as before
    twin = build_triage(settings)
    twin.learn_many([Feedback(ex.text, ex.label, None, 0.5, 1.0, "low_confidence") for ex in examples[:150]])
    more = examples[150:200]
    triage.student.learn_many([ex.text for ex in more], [ex.label for ex in more])
    twin.student.learn_many([ex.text for ex in more], [ex.label for ex in more])
    assert [triage.student.predict(t) for t in probes] == [twin.student.predict(t) for t in probes]
