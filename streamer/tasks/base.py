"""What a task is: everything that differs between, say, classification and NER, in one object.

A task names its student kinds (the first is its default), its teacher class, its shipped
datasets (the first is its default), how answers are scored, how a prediction is enriched
and how its teacher is fine-tuned. Code outside :mod:`streamer.tasks` asks the task and
never compares task names.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from streamer.datasets import Example
from streamer.models.student import BaseStudent, Student, StudentResources
from streamer.models.teacher import Teacher, load_teacher_class

log = logging.getLogger(__name__)

#: the last warm-started student built in this process (``evaluate`` builds one per replay)
_WARM_STUDENTS: dict[tuple, Any] = {}


class Task:
    """Base class of every task; subclasses fill in the class attributes and the scoring."""

    #: the task's name (``--task``, ``STREAMER_TASK``)
    name: ClassVar[str]
    description: ClassVar[str]
    #: student kind -> factory of a fresh student from the resources it may need; the first kind is the default
    students: ClassVar[Mapping[str, Callable[[StudentResources], BaseStudent]]]
    #: student kind -> its class (restores checkpoints)
    student_classes: ClassVar[Mapping[str, type[BaseStudent]]]
    #: shipped dataset names; the first is the default
    datasets: ClassVar[Sequence[str]]
    teacher_class: ClassVar[type[Teacher]]
    #: what :meth:`score` measures, for reports
    metric: ClassVar[str]
    #: ``streamer evaluate`` compares all student kinds side by side unless one is asked for
    compare_students: ClassVar[bool] = False
    #: ``streamer teacher train`` labels its training texts as a warm start for this task's fresh students
    warm_starts_students: ClassVar[bool] = True

    # --- students and teacher -----------------------------------------------------------

    @property
    def default_student(self) -> str:
        return next(iter(self.students))

    @property
    def default_dataset(self) -> str:
        return self.datasets[0]

    def new_student(self, kind: str | None = None, *, teacher_model: str | None = None,
                    data_dir: Path | None = None, warm_start: bool = False) -> Student:
        """A fresh student of ``kind`` (the default kind when ``None``); a student built on the teacher's
        distilled embeddings reads them from ``teacher_model`` (distilling them once if missing). With
        ``warm_start`` it first learns the texts that teacher labelled offline, where it has them
        (:mod:`streamer.models.warm_start`); else it is untrained."""
        kind = kind or self.default_student
        if kind not in self.students:
            raise ValueError(f"student for task {self.name} must be one of {tuple(self.students)}, got {kind!r}")
        resources = StudentResources(teacher_model, data_dir)
        start = resources.warm_start() if warm_start else None
        if start is None:
            return self.students[kind](resources)
        key = (self.name, kind, teacher_model, str(data_dir), start.teacher_version, hash(tuple(start.texts)),
               hash(tuple(start.labels)))
        if key not in _WARM_STUDENTS:  # learnt once per process; every caller gets its own copy
            started = time.perf_counter()
            student = self.students[kind](resources)
            student.warm_start(start.texts, start.labels)
            log.info("student %s: warm start from %d texts labelled by teacher %s (%s) in %.1f s", kind, len(start),
                     start.teacher_version, start.source, time.perf_counter() - started)
            _WARM_STUDENTS.clear()
            _WARM_STUDENTS[key] = student
        return copy.deepcopy(_WARM_STUDENTS[key])

    def restore_student(self, state: Mapping[str, Any]) -> Student:
        """A student rebuilt from its :meth:`~streamer.models.student.Student.state`."""
        return self.student_classes[state["kind"]].from_state(state)

    def load_teacher(self, model_ref: str, *, device: str = "auto", max_length: int = 128, batch_size: int = 64,
                     teacher_class: str | None = None) -> Teacher:
        """This task's teacher (or the ``"module:Class"`` Teacher subclass ``teacher_class`` names) loaded from a
        model directory or id."""
        cls = load_teacher_class(teacher_class) if teacher_class else self.teacher_class
        return cls(model_ref, device=device, max_length=max_length, batch_size=batch_size)

    def evaluation_students(self, chosen: str | None) -> list[str]:
        """The student kinds ``streamer evaluate`` replays: the chosen one, or the task's comparison."""
        if chosen or not self.compare_students:
            return [chosen or self.default_student]
        return list(self.students)

    # --- answers ------------------------------------------------------------------------

    def score(self, gold: Sequence[str], predicted: Sequence[str]) -> float:
        """How good ``predicted`` is against ``gold`` (:attr:`metric`); exact-match accuracy by default."""
        return sum(g == p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0

    def enrich(self, prediction: dict[str, Any], text: str) -> dict[str, Any]:
        """Add task-specific fields to a prediction record (nothing by default)."""
        return prediction

    def blank_answer(self, text: str) -> str:
        """The answer counted for a student that has none yet (scoring only)."""
        return ""

    def evaluation_figures(self, gold: Sequence[str], cascade: Sequence[str], teacher: Sequence[str],
                           student: Sequence[str]) -> dict[str, float | None]:
        """Figures beyond accuracy that ``streamer evaluate`` reports (none by default)."""
        return {}

    #: (column header, figure name) of the quality columns of ``streamer evaluate``'s table
    table_columns: ClassVar[Sequence[tuple[str, str]]] = (
        ("acc cascade", "accuracy_cascade"), ("acc teacher", "accuracy_teacher_only"),
        ("acc student", "accuracy_student_only"))

    def live_figures(self, gold_by_id: Mapping[str, str], predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Figures beyond accuracy for the demo's report, from the predictions read off the topic."""
        return {}

    # --- teacher training ---------------------------------------------------------------

    def training_labels(self, examples: Sequence[Example]) -> list[str]:
        """The teacher's output labels, in id order."""
        return sorted({e.label for e in examples})

    def encode_training_batch(self, tokenizer: Any, batch: Sequence[Example], label2id: Mapping[str, int],
                              max_length: int) -> tuple[Any, Any]:
        """Model inputs and targets of one fine-tuning batch."""
        raise NotImplementedError

    def score_teacher(self, model_dir: Path, test: Sequence[Example], max_length: int) -> float:
        """A freshly trained teacher's :attr:`metric` on held-out examples."""
        teacher = self.load_teacher(str(model_dir), device="cpu", max_length=max_length)
        answers = teacher.predict([e.text for e in test])
        return self.score([e.label for e in test], [label for label, _ in answers])
