"""Teacher faults: a teacher that raises or answers wrongly on some texts, positions beyond the model's limit,
CUDA running out of memory, and users' own teacher classes.

The logic tests run :class:`TeacherLogic` in process with a collecting ``send`` (as test_workers does); the
model tests use the briefly trained ``quick_teacher``; out of memory is raised by a Teacher subclass, since no
GPU is needed to exercise the halving.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path

import orjson
import pytest
import torch

from streamer.models.teacher import Teacher, TeacherNotFound
from streamer.records.catalogue import Catalogue
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.workers.teacher_logic import Incoming, TeacherLogic, load_configured_teacher

MARK = "POISON"


class Collector:
    """A ``send`` that records (topic, key, decoded value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers=()) -> None:
        self.sent.append((topic, key, orjson.loads(value)))

    def on(self, topic: str) -> list[tuple[bytes | None, dict]]:
        return [(key, record) for t, key, record in self.sent if t == topic]


def escalation(i: int, text: str) -> bytes:
    return orjson.dumps({"id": f"e{i}", "text": text, "event": {}, "reason": "low_confidence",
                         "student_label": "pos", "student_confidence": 0.6, "student_version": 3, "threshold": 0.8,
                         "weight": 1.0, "event_time": 1000, "escalated_time": 1001})


def texts_marked(n: int, marked: set[int]) -> list[str]:
    return [f"text {i} {MARK}" if i in marked else f"text {i} fine" for i in range(n)]


def answer(teacher: object, texts: list[str], task: str = "classify") -> tuple[Collector, list[bytes], TeacherLogic]:
    logic = TeacherLogic(Settings(task=task), Catalogue.load(), teacher)  # type: ignore[arg-type]
    values = [escalation(i, text) for i, text in enumerate(texts)]
    send = Collector()
    asyncio.run(logic.answer([Incoming(v, "escalations", 1, 100 + i) for i, v in enumerate(values)], send))
    return send, values, logic


class RaisesOnMark:
    """Raises on any batch that holds a marked text, like a model that chokes on one input."""

    version = "stub-raises"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        self.batches.append(len(texts))
        if any(MARK in t for t in texts):
            raise KeyError("token id out of range")
        return [("pos", 0.9) for _ in texts]


def test_a_failing_batch_is_split_until_only_the_failing_records_are_dead_lettered(caplog):
    marked = {0, 5, 6, 13}
    teacher = RaisesOnMark()
    with caplog.at_level(logging.WARNING, logger="streamer.workers.teacher_logic"):
        send, values, logic = answer(teacher, texts_marked(16, marked))
    unmarked = [f"e{i}".encode() for i in range(16) if i not in marked]
    assert [key for key, _ in send.on("predictions")] == unmarked
    assert [key for key, _ in send.on("labels")] == unmarked
    dead = send.on("dead-letter")
    assert [key for key, _ in dead] == [f"escalations/1/{100 + i}".encode() for i in sorted(marked)]
    assert all(r["reason"] == "teacher_error" and r["exception"] == "KeyError" for _, r in dead)
    assert [r["value_text"].encode() for _, r in dead] == [values[i] for i in sorted(marked)]  # original bytes
    assert logic.metrics.value("streamer_dead_letters_total", topic="escalations", reason="teacher_error") == 4
    assert logic.metrics.value("streamer_predictions_total", source="teacher") == 12
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and all("KeyError" in r.getMessage() for r in warnings)  # one per record, not split
    assert teacher.batches[0] == 16 and max(teacher.batches[1:]) == 8 and len(teacher.batches) < 2 * 16


def test_a_batch_of_only_bad_records_is_dead_lettered_when_the_teacher_answers_a_probe():
    teacher = RaisesOnMark()
    send, _, logic = answer(teacher, texts_marked(5, set(range(5))))
    assert send.on("predictions") == [] and len(send.on("dead-letter")) == 5
    assert logic.metrics.value("streamer_teacher_retries_total") == 0  # not taken for an outage


class DownFor:
    """Fails on every text (a model server that is down) for ``seconds`` after it is built, then answers."""

    version = "stub-down"

    def __init__(self, seconds: float) -> None:
        import time

        self.until = time.monotonic() + seconds

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        import time

        if time.monotonic() < self.until:
            raise ConnectionError("the model server is unreachable")
        return [("pos", 0.9) for _ in texts]


def outage_logic(teacher: object, retry_timeout: float) -> TeacherLogic:
    return TeacherLogic(Settings(teacher_retry_timeout=retry_timeout), Catalogue.load(), teacher)  # type: ignore


def handed_over_until_answered(logic: TeacherLogic, batch: list[Incoming], send: Collector) -> list[float]:
    """Hand ``batch`` to the logic again after each :class:`RetryBatch`, as the worker does; the delays asked."""
    import time

    from streamer.workers.runtime import RetryBatch

    delays = []
    while True:
        try:
            asyncio.run(logic.answer(batch, send))
            return delays
        except RetryBatch as retry:
            assert send.sent == []  # nothing is sent for a batch handed back
            delays.append(retry.delay)
            time.sleep(retry.delay)


def test_a_teacher_down_for_a_while_is_retried_and_nothing_is_dead_lettered(caplog):
    logic, send = outage_logic(DownFor(1.2), retry_timeout=30.0), Collector()
    batch = [Incoming(escalation(i, f"text {i}"), "escalations", 0, i) for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="streamer.workers.teacher_logic"):
        delays = handed_over_until_answered(logic, batch, send)
    assert delays[:2] == [0.5, 1.0]  # backoff
    assert len(send.on("predictions")) == 6 and send.on("dead-letter") == []
    assert logic.metrics.value("streamer_teacher_retries_total") == len(delays)
    messages = [r.getMessage() for r in caplog.records]
    assert any("an outage, not bad records" in m for m in messages)
    assert any("the teacher answers again" in m for m in messages)


def test_a_teacher_down_for_good_gives_up_after_the_retry_timeout_uncommitted():
    from streamer.workers.teacher_logic import TeacherUnavailable

    logic, send = outage_logic(DownFor(3600), retry_timeout=1.0), Collector()
    with pytest.raises(TeacherUnavailable, match="stays uncommitted"):
        handed_over_until_answered(logic, [Incoming(escalation(0, "text"), "escalations", 0, 0)], send)
    assert send.sent == []  # nothing answered, nothing dead-lettered: the worker exits and the batch is redone


class AnswersWronglyOnMark:
    """Answers a batch holding a marked text with one answer too few, one too many, or a malformed one."""

    version = "stub-wrong"

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def predict(self, texts: list[str]) -> list:
        answers: list = [("pos", 0.9) for _ in texts]
        if any(MARK in t for t in texts):
            if self.fault == "too_few":
                answers.pop()
            elif self.fault == "too_many":
                answers.append(("neg", 0.5))
            else:
                answers[[MARK in t for t in texts].index(True)] = (None, 0.9)
        return answers


@pytest.mark.parametrize("fault", ["too_few", "too_many", "malformed"])
def test_a_wrong_number_or_shape_of_answers_fails_only_the_records_behind_it(fault):
    send, _, _ = answer(AnswersWronglyOnMark(fault), texts_marked(9, {4}))
    assert [key for key, _ in send.on("predictions")] == [f"e{i}".encode() for i in range(9) if i != 4]
    [(key, dead)] = send.on("dead-letter")
    assert key == b"escalations/1/104" and dead["reason"] == "teacher_error" and dead["exception"] == "ValueError"
    assert "one (label: str, confidence) per text" in dead["error"]


def test_max_length_is_clamped_to_the_models_positions_and_long_texts_are_answered(quick_teacher, caplog):
    with caplog.at_level(logging.WARNING, logger="streamer.models.teacher"):
        teacher = Teacher(quick_teacher, device="cpu", max_length=4096)
    assert teacher.max_length == teacher.model.config.max_position_embeddings == 512
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamer.models.teacher"]
    assert warnings == ["teacher max_length 4096 is beyond the model's limit of 512 positions: using 512"]
    [(label, confidence)] = teacher.predict([" ".join(["wonderful"] * 3000)])
    assert label in teacher.labels and 0.0 <= confidence <= 1.0
    assert Teacher(quick_teacher, device="cpu", max_length=64).max_length == 64


class OutOfMemoryAbove(Teacher):
    """Runs out of CUDA memory on batches larger than ``limit`` (no model: Teacher.predict's batching is tested)."""

    def __init__(self, limit: int, batch_size: int, error: type[RuntimeError] = torch.cuda.OutOfMemoryError) -> None:
        self.limit, self.batch_size, self.error = limit, batch_size, error
        self.calls: list[int] = []

    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        self.calls.append(len(texts))
        if len(texts) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [(t.upper(), 1.0) for t in texts]


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_cuda_memory_halves_the_batch_size_and_retries(error, caplog):
    teacher = OutOfMemoryAbove(limit=5, batch_size=16, error=error)
    texts = [f"text {'x' * (i * 7 % 11)} {i}" for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="streamer.models.teacher"):
        assert teacher.predict(texts) == [(t.upper(), 1.0) for t in texts]  # every text, in input order
    assert teacher.calls == [16, 8, 4, 4, 4, 4, 4] and teacher.batch_size == 4
    assert len([r for r in caplog.records if "out of CUDA memory" in r.getMessage()]) == 2
    assert teacher.predict(texts[:8]) == [(t.upper(), 1.0) for t in texts[:8]] and teacher.batch_size == 4  # kept


def test_out_of_memory_on_one_text_and_other_errors_raise():
    teacher = OutOfMemoryAbove(limit=0, batch_size=4)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        teacher.predict(["a", "b", "c"])
    assert teacher.calls == [3, 1] and teacher.batch_size == 1
    other = OutOfMemoryAbove(limit=0, batch_size=4, error=ValueError)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        other.predict(["a", "b", "c"])
    assert other.calls == [3] and other.batch_size == 4  # not memory: no retry


TEACHERS_MODULE = '''
from streamer.models.teacher import Teacher


class FailsOnMark(Teacher):
    """The task's teacher, except that it raises on texts that hold the mark."""

    def predict_batch(self, texts):
        if any("POISON" in t for t in texts):
            raise RuntimeError("chaos")
        return super().predict_batch(texts)


class NotATeacher:
    def __init__(self, *args, **kwargs):
        pass
'''


@pytest.fixture()
def teachers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_teachers.py").write_text(textwrap.dedent(TEACHERS_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_teachers"


def test_a_configured_teacher_class_is_loaded_with_the_settings_and_its_failures_are_isolated(
        quick_teacher, teachers_module):
    settings = Settings(teacher_model=quick_teacher, teacher_class=f"{teachers_module}:FailsOnMark",
                        teacher_device="cpu", teacher_max_length=32, teacher_batch_size=8)
    teacher = load_configured_teacher(settings)
    assert type(teacher).__name__ == "FailsOnMark" and isinstance(teacher, Teacher)
    assert (teacher.device, teacher.max_length, teacher.batch_size) == ("cpu", 32, 8)
    send, _, _ = answer(teacher, texts_marked(10, {2, 7}))
    assert [key for key, _ in send.on("predictions")] == [f"e{i}".encode() for i in range(10) if i not in {2, 7}]
    assert all(r["label"] in teacher.labels for _, r in send.on("predictions"))
    dead = [(r["exception"], r["error"]) for _, r in send.on("dead-letter")]
    assert dead == [("RuntimeError", "RuntimeError: chaos")] * 2


@pytest.mark.parametrize("path, message", [
    ("{module}:NotATeacher", "is not a subclass of streamer.models.teacher.Teacher"),
    ("{module}:Missing", "AttributeError"),
    ("no_such_module_for_streamer:Teacher", "ModuleNotFoundError: No module named 'no_such_module_for_streamer'"),
    ("{module}.FailsOnMark", "must look like 'module:Class'"),
])
def test_a_bad_teacher_class_is_a_clear_one_line_error(teachers_module, path, message):
    with pytest.raises(TeacherNotFound) as raised:
        get_task("classify").load_teacher("unused-model", teacher_class=path.format(module=teachers_module))
    assert message in str(raised.value) and "\n" not in str(raised.value)
