"""Bad records, forged labels, replayed labels and unsafe checkpoints, in process (the chaos test runs them on
the broker): each is dead-lettered, bounded, ignored or refused, and the worker carries on."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import orjson
import pytest

from streamer.models.naive_bayes import NaiveBayesStudent
from streamer.models.student import FEATURE_BUCKETS
from streamer.records import Catalogue, Rejection, dead_letter, encode
from streamer.records.signing import sign_escalation, sign_label
from streamer.settings import Settings
from streamer.triage import build_triage, triage_config
from streamer.triage.checkpoint import Checkpoint, CheckpointError, read_checkpoint, write_checkpoint
from streamer.workers.student_logic import StudentLogic

TRAINING = [("wonderful moving film", "fresh"), ("tedious awful mess", "rotten")] * 20


class Collector:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers=()) -> None:
        self.sent.append((topic, key, orjson.loads(value)))


def student(tmp_path: Path, **options) -> StudentLogic:
    """A student worker's logic with a naive Bayes student (these tests are about the labels and checkpoints around
    any student; ``test_student_contract`` covers every kind's own checkpoints)."""
    settings = Settings(data_dir=tmp_path, warmup_labels=0, student="nb",
                        **{"policy": "online", "audit_rate": 0.05, **options})
    logic = StudentLogic(settings, Catalogue.load(), triage=build_triage(settings))
    for text, label in TRAINING:
        logic.triage.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    return logic


def label(esc: dict, value: str, **changes) -> bytes:
    """The teacher's label ``value`` for ``esc`` (signed by the teacher when ``esc`` is signed), then ``changes``
    applied to it as someone without the key would: after the signature."""
    record = {"id": esc["id"], "text": esc["text"], "label": value, "teacher_version": "t", "reason": esc["reason"],
              "student_label": esc["student_label"], "student_confidence": esc["student_confidence"],
              "weight": esc["weight"], "labelled_time": 1}
    if "signature" in esc:
        record["signature"] = sign_label(b"secret", record)
    return orjson.dumps({**record, **changes})


def run(coro):
    return asyncio.run(coro)


def escalate(logic: StudentLogic, event_id: str, text: str = "wonderful mess") -> dict:
    send = Collector()
    run(logic.handle_event(orjson.dumps({"id": event_id, "text": text}), "events", 0, 0, 1, send))
    [(topic, _, record)] = send.sent
    assert topic == "escalations"
    return record


def test_dead_letters_are_bounded_whatever_the_input():
    value = os.urandom(2_000_000)
    record = dead_letter(value, Rejection("too_large", "x" * 10_000), "labels", 3, 9)
    assert len(encode(record)) < 200_000 < 1 << 20
    assert record["value_bytes"] == 2_000_000 and record["value_truncated"] is True
    assert record["value_sha256"] == hashlib.sha256(value).hexdigest() and len(record["error"]) == 2000
    assert Catalogue.load()["dead-letter"].validate(record) is None


def test_an_event_the_student_fails_on_is_dead_lettered_and_the_next_one_is_answered(tmp_path):
    logic = student(tmp_path, threshold=0.5, policy="fixed")

    class Broken(NaiveBayesStudent):
        def predict(self, text):
            if "boom" in text:
                raise ZeroDivisionError("the model broke")
            return super().predict(text)

    broken = Broken()
    broken.model, broken.version = logic.triage.student.model, logic.triage.student.version
    logic.triage.student = broken
    send = Collector()
    for offset, text in enumerate(["boom film", "wonderful film"]):
        run(logic.handle_event(orjson.dumps({"id": str(offset), "text": text}), "events", 1, offset, 1, send))
    (t1, k1, dead), (t2, _, answer) = send.sent
    assert (t1, k1, dead["reason"], dead["exception"]) == ("dead-letter", b"events/1/0", "processing_error",
                                                           "ZeroDivisionError")
    assert t2 == "predictions" and answer["label"] == "fresh" and answer["final"] is True


def test_with_a_label_key_escalations_are_signed_and_only_signed_labels_are_learned(tmp_path):
    logic = student(tmp_path, label_key="secret", threshold=1.0)
    esc = escalate(logic, "a")
    assert esc["signature"] == sign_escalation(b"secret", esc)
    version = logic.triage.student.version
    forged = label(esc, "rotten", weight=1e300, student_confidence=0.01)  # the signature no longer matches
    unsigned = label({k: v for k, v in esc.items() if k != "signature"}, "rotten")
    relabelled = label(esc, "rotten", label="fresh")  # a signed label replayed with another label
    student_signed = label(esc, "rotten", signature=esc["signature"])  # the escalation's signature is not a label's
    non_ascii = label(esc, "rotten", signature="\u00e9" * 64)  # hmac.compare_digest raises on such a str
    for bad in (forged, unsigned, relabelled, student_signed, non_ascii):
        assert not logic.learn_label(bad)
    assert not logic.learn_labels_safely([label(esc, "rotten", signature=12345)], 0, 9)
    assert logic.triage.student.version == version
    assert logic.metrics.value("streamer_labels_rejected_total", reason="unauthenticated") == 5
    assert logic.metrics.value("streamer_labels_rejected_total", reason="schema") == 1  # a number is no signature
    assert logic.learn_label(label(esc, "rotten")) and logic.triage.student.version == version + 1


def test_a_label_the_student_cannot_take_is_counted_and_the_worker_carries_on(tmp_path):
    logic = student(tmp_path, threshold=1.0)
    esc = escalate(logic, "e")

    def broken(*args, **kwargs):
        raise TypeError("an unexpected failure inside the student")

    logic.triage.learn_many = broken
    assert logic.learn_labels_safely([label(esc, "rotten")], 2, 41) == 0
    assert logic.metrics.value("streamer_labels_rejected_total", reason="processing_error") == 1


def test_the_teacher_answers_only_signed_escalations_and_signs_its_labels(tmp_path):
    from streamer.workers.teacher_logic import Incoming, TeacherLogic

    class Stub:
        version = "stub"

        def predict(self, texts):
            return [("fresh", 0.9) for _ in texts]

    settings = Settings(data_dir=tmp_path, label_key="secret", student="nb")
    logic = student(tmp_path, label_key="secret", threshold=1.0)
    esc = escalate(logic, "f")
    tampered = {**esc, "weight": 1.0 / 0.05}
    non_ascii = {**esc, "signature": "\u00e9" * 64}
    send = Collector()
    teacher = TeacherLogic(settings, Catalogue.load(), Stub())
    run(teacher.answer([Incoming(orjson.dumps(e), "escalations", 0, i) for i, e in enumerate([esc, tampered,
                                                                                                non_ascii])], send))
    by_topic = {}
    for topic, key, record in send.sent:
        by_topic.setdefault(topic, []).append(record)
    assert [d["reason"] for d in by_topic["dead-letter"]] == ["unauthenticated", "unauthenticated"]
    [answered] = by_topic["labels"]
    assert answered["signature"] == sign_label(b"secret", answered) != esc["signature"]
    assert logic.learn_label(orjson.dumps(answered))


def test_the_teacher_group_reports_bad_labels_once(tmp_path):
    from streamer.workers.teacher_logic import Incoming, TeacherLogic

    settings = Settings(data_dir=tmp_path, label_key="secret", student="nb")
    esc = escalate(student(tmp_path, label_key="secret", threshold=1.0), "d")
    teacher = TeacherLogic(settings, Catalogue.load(), teacher=None)  # auditing labels needs no model
    send = Collector()
    values = [label(esc, "rotten"), label(esc, "rotten", signature="0" * 64), b"not json"]
    run(teacher.audit_labels([Incoming(v, "labels", 1, i) for i, v in enumerate(values)], send))
    assert [(k, r["reason"]) for _, k, r in send.sent] == [(b"labels/1/1", "unauthenticated"),
                                                            (b"labels/1/2", "invalid_json")]


def test_without_a_key_a_forged_weight_is_bounded_and_a_replayed_label_is_learned_once(tmp_path):
    logic = student(tmp_path, threshold=1.0)
    esc = escalate(logic, "b")
    version = logic.triage.student.version
    replayed = label(esc, "rotten", weight=1e300, student_confidence=0.01)
    assert logic.learn_label(replayed)
    assert not logic.learn_label(replayed)  # the teacher published it again (a crash before its commit)
    assert logic.triage.student.version == version + 1
    assert max(w for _, _, w in logic.triage.policy.labelled) == pytest.approx(1 / 0.05)


def test_predictions_say_whether_they_are_final(tmp_path):
    logic = student(tmp_path, teacher_timeout=5.0, threshold=1.0)
    escalate(logic, "c")
    send = Collector()
    run(logic.publish_provisional(send, now=10**9))
    [(_, _, provisional)] = send.sent
    assert provisional["final"] is False and provisional["provisional"] is True


def checkpointed(tmp_path: Path) -> Path:
    settings = Settings(data_dir=tmp_path, student="nb")
    triage = build_triage(settings)
    triage.learn("fine", "pos", student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    path = tmp_path / "ckpt" / "student.ckpt"
    write_checkpoint(path, Checkpoint(triage, {0: 1}, triage_config(settings), learned_ids=["x"]))
    return path


def test_checkpoints_are_private_authenticated_and_refused_when_tampered(tmp_path):
    path = checkpointed(tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((path.parent / "checkpoint.key").stat().st_mode & 0o777) == "0o600"
    assert read_checkpoint(path).learned_ids == ["x"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails authentication"):
        read_checkpoint(path)


def test_a_planted_pickle_is_never_unpickled(tmp_path):
    import pickle

    path = checkpointed(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path.write_bytes(pickle.dumps({"format": 2, "triage": Payload()}))
    with pytest.raises(CheckpointError, match="written before checkpoints were authenticated"):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoints_are_not_written_or_read_through_symbolic_links(tmp_path):
    path = checkpointed(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    link = path.with_name("linked.ckpt")
    link.symlink_to(target)
    with pytest.raises(CheckpointError, match="not a symbolic link"):
        read_checkpoint(link)
    tmp = path.with_name(path.name + ".tmp")
    tmp.symlink_to(target)  # a link planted where the next write goes first
    write_checkpoint(path, read_checkpoint(path))
    assert target.read_bytes() == b"keep" and read_checkpoint(path) is not None


def test_student_memory_is_bounded_by_hashed_features():
    s = NaiveBayesStudent("nb")
    for i in range(3000):
        s.learn(" ".join(f"w{i}x{j}" for j in range(30)), "a" if i % 2 else "b")
    features = s.model["MultinomialNB"].feature_counts
    assert 0 < len(features) <= FEATURE_BUCKETS and all(isinstance(f, int) for f in features)


def test_a_periodic_checkpoint_written_by_a_forked_writer_restores_the_student(tmp_path):
    logic = student(tmp_path, checkpoint_path=tmp_path / "bg.ckpt")
    version = logic.triage.student.version
    run(logic.state.checkpoint_in_background("periodic"))
    restored = read_checkpoint(tmp_path / "bg.ckpt")
    assert restored.triage.student.version == version
    assert restored.triage.student.predict("wonderful film") == logic.triage.student.predict("wonderful film")


def test_a_periodic_checkpoint_is_skipped_when_nothing_was_learned_since_the_last(tmp_path):
    path = tmp_path / "bg.ckpt"
    logic = student(tmp_path, checkpoint_path=path)
    run(logic.state.checkpoint_in_background("periodic"))
    path.unlink()
    run(logic.state.checkpoint_in_background("periodic"))  # the same state: nothing to write
    assert not path.exists()
    logic.triage.learn("one more warm film", "fresh", student_label=None, student_confidence=0.0, weight=1.0,
                       reason="warmup")
    run(logic.state.checkpoint_in_background("periodic"))
    assert read_checkpoint(path).triage.student.version == logic.triage.student.version


@pytest.fixture
def slow_forked_writer(monkeypatch):
    """Checkpoint writes take 0.5 s in a forked writer (as a large student's do), none in the worker itself."""
    import os
    import time

    from streamer.workers import student_logic

    parent, write = os.getpid(), student_logic.write_checkpoint_bytes

    def slow_in_the_writer(*args):
        if os.getpid() != parent:
            time.sleep(0.5)
        return write(*args)

    monkeypatch.setattr(student_logic, "write_checkpoint_bytes", slow_in_the_writer)


def test_a_shutdown_checkpoint_waits_for_a_background_writer_and_keeps_the_newer_state(tmp_path, slow_forked_writer):
    """A periodic checkpoint's forked writer may still run when the worker stops: the shutdown checkpoint waits
    for it (they share the temporary file) and its newer state is the one left on disk."""
    path = tmp_path / "c.ckpt"
    logic = student(tmp_path, checkpoint_path=path)

    async def go() -> None:
        periodic = asyncio.create_task(logic.state.checkpoint_in_background("periodic"))
        await asyncio.sleep(0)  # the writer is forked with the state of this moment
        logic.triage.learn("one more warm film", "fresh", student_label=None, student_confidence=0.0, weight=1.0,
                           reason="warmup")
        logic.state.checkpoint("shutdown")
        await periodic

    run(go())
    assert read_checkpoint(path).triage.student.version == len(TRAINING) + 1


def test_a_shutdown_checkpoint_waits_for_the_writer_of_a_cancelled_periodic_checkpoint(tmp_path, slow_forked_writer):
    """The worker cancels its timers before the shutdown checkpoint: a periodic checkpoint cancelled while its
    forked writer still runs must still be waited for, or both write through the same temporary file (one fails
    with FileNotFoundError) and the older snapshot can land last."""
    import time

    path = tmp_path / "c.ckpt"
    logic = student(tmp_path, checkpoint_path=path)

    async def go() -> None:
        periodic = asyncio.create_task(logic.state.checkpoint_in_background("periodic"))
        await asyncio.sleep(0.05)  # forked and waiting for its writer
        periodic.cancel()
        with pytest.raises(asyncio.CancelledError):
            await periodic
        logic.triage.learn("one more warm film", "fresh", student_label=None, student_confidence=0.0, weight=1.0,
                           reason="warmup")
        logic.state.checkpoint("shutdown")

    run(go())
    time.sleep(1.0)  # a writer that was not waited for would have replaced the file by now
    assert read_checkpoint(path).triage.student.version == len(TRAINING) + 1
