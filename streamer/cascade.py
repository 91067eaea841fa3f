"""The triage in your own code: the same decisions the workers take, without Kafka.

A :class:`Cascade` holds a student, its threshold policy and a teacher. :meth:`Cascade.answer`
lets the student answer when it is confident and asks the teacher otherwise (the teacher's
label is learned at once); :meth:`Cascade.route` and :meth:`Cascade.learn` split the two steps
when the teacher answers elsewhere (in a batch, another service, a human).

>>> import streamer
>>> def teacher(texts):  # any Teacher, or a callable: texts -> [(label, confidence)]
...     return [("fresh" if "good" in t or "fun" in t else "rotten", 0.99) for t in texts]
>>> cascade = streamer.Cascade(streamer.Settings(warmup_labels=20, policy="fixed", threshold=0.8, student="nb"), teacher)
>>> answers = [cascade.answer(t) for t in ["a good fun film", "a dull bad mess"] * 30]
>>> answers[0].source, answers[-1].source, answers[-1].label
('teacher', 'student', 'rotten')
>>> cascade.threshold, cascade.teacher_calls, cascade.student.version
(0.8, 20, 20)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

from streamer.models.student import Student
from streamer.settings import Settings
from streamer.triage import Route, Triage, build_triage
from streamer.workers.teacher_logic import Labeller, load_configured_teacher

#: A teacher: a :class:`~streamer.models.teacher.Teacher` (anything with ``predict``), or a plain callable.
TeacherLike = Union[Labeller, Callable[[list[str]], Sequence[tuple[str, float]]]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The cascade's answer for one text: who gave it, and the student's route."""

    label: str
    confidence: float
    source: str  # "student" or "teacher"
    route: Route


class Cascade:
    """A student in front of a teacher, deciding text by text."""

    def __init__(self, settings: Settings | None = None, teacher: TeacherLike | None = None,
                 triage: Triage | None = None) -> None:
        self.settings = settings or Settings()
        if triage is None:
            # a warm start is labelled by the teacher model the settings name, not by a teacher passed in beside
            # settings that name none (it would teach this student another teacher's answers)
            named = teacher is None or self.settings.teacher_model is not None
            triage = build_triage(self.settings if named else self.settings.replace(warm_start=False))
        self.triage = triage
        self.teacher = teacher
        self.teacher_calls = 0

    @classmethod
    def load(cls, settings: Settings) -> "Cascade":
        """A cascade with the teacher the settings name (``teacher_model``, ``teacher_class``, the task's)."""
        return cls(settings, load_configured_teacher(settings), build_triage(settings))

    @property
    def student(self) -> Student:
        return self.triage.student

    @property
    def threshold(self) -> float:
        """The student answers when its confidence is at least this."""
        return self.triage.policy.threshold

    @property
    def estimated_agreement(self) -> float | None:
        """The online policy's estimate of the cascade's agreement with the teacher (``None`` until known)."""
        return getattr(self.triage.policy, "estimated_agreement", lambda: None)()

    def route(self, text: str) -> Route:
        """The student's guess and whether the text goes to the teacher."""
        return self.triage.route(text)

    def learn(self, text: str, label: str, route: Route) -> None:
        """Learn the teacher's ``label`` for a text the student escalated (``route`` is what :meth:`route` said)."""
        self.triage.learn(text, label, student_label=route.label, student_confidence=route.confidence,
                          weight=route.weight, reason=route.reason or "low_confidence")

    def ask_teacher(self, texts: list[str]) -> list[tuple[str, float]]:
        if self.teacher is None:
            raise RuntimeError("this cascade has no teacher: give one, or use route() and learn()")
        self.teacher_calls += len(texts)
        predict = getattr(self.teacher, "predict", self.teacher)
        return list(predict(texts))

    def answer(self, text: str) -> Answer:
        """The student's answer when it is sure enough, else the teacher's (which the student then learns)."""
        return self.answer_many([text])[0]

    def answer_many(self, texts: Sequence[str]) -> list[Answer]:
        """:meth:`answer` for several texts; the escalated ones go to the teacher in one batch."""
        routes = self.triage.route_many(texts)
        escalated = [i for i, r in enumerate(routes) if r.escalate]
        labels = dict(zip(escalated, self.ask_teacher([texts[i] for i in escalated]))) if escalated else {}
        answers = []
        for i, (text, route) in enumerate(zip(texts, routes)):
            if i in labels:
                label, confidence = labels[i]
                self.learn(text, label, route)
                answers.append(Answer(label, confidence, "teacher", route))
            else:
                answers.append(Answer(route.label or "", route.confidence, "student", route))
        return answers
