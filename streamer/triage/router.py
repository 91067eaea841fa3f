"""Routing: the student answers or escalates, and learns every teacher label.

The same :class:`Triage` object runs inside the student worker and inside the
in-process replay of ``streamer evaluate``, so both take the same decisions.

>>> from streamer.models.naive_bayes import NaiveBayesStudent
>>> from streamer.triage.policies import FixedPolicy
>>> t = Triage(NaiveBayesStudent(), FixedPolicy(0.8), warmup_labels=2)
>>> t.route("great fun").reason
'warmup'
>>> for text, label in [("great fun", "pos"), ("awful bore", "neg")] * 5:
...     t.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
>>> r = t.route("great fun")
>>> r.label, r.escalate
('pos', False)
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from streamer.models.student import Student
from streamer.tasks import get_task
from streamer.triage.policies import (REASON_AUDIT, REASON_CALIBRATION, REASON_LOW_CONFIDENCE, REASON_WARMUP,
                                      UNINFORMATIVE_REASONS, ThresholdPolicy, build_policy)

if TYPE_CHECKING:
    from streamer.settings import Settings


@dataclass(frozen=True, slots=True)
class Route:
    """The student's guess for one event and where the event goes."""

    label: str | None
    confidence: float
    escalate: bool
    reason: str | None
    weight: float
    threshold: float


class Triage:
    """A student, a threshold policy and a warm-up: decides each event's route."""

    def __init__(self, student: Student, policy: ThresholdPolicy, warmup_labels: int = 100, seed: int = 0) -> None:
        self.student = student
        self.policy = policy
        self.warmup_labels = warmup_labels
        self._rng = random.Random(seed)

    def route(self, text: str) -> Route:
        return self._route(*self.student.predict(text))

    def route_many(self, texts: list[str]) -> list[Route]:
        """:meth:`route` for a batch of texts, in order (one batched prediction when the student has
        ``predict_many``); the same routes as one :meth:`route` call per text with no learning in between."""
        predict_many = getattr(self.student, "predict_many", None)
        guesses = predict_many(texts) if predict_many else [self.student.predict(t) for t in texts]
        return [self._route(label, confidence) for label, confidence in guesses]

    def _route(self, label: str | None, confidence: float) -> Route:
        threshold = self.policy.threshold
        if self.student.version < self.warmup_labels or label is None:
            if label is None or not getattr(self.student, "warm_labels", 0):
                return Route(label, confidence, True, REASON_WARMUP, 1.0, threshold)
            # a warm-started student's guesses already mean something: its warm-up labels calibrate the policy
            self.policy.record(confidence)
            return Route(label, confidence, True, REASON_CALIBRATION, 1.0, threshold)
        self.policy.record(confidence)
        if confidence < threshold:
            return Route(label, confidence, True, REASON_LOW_CONFIDENCE, 1.0, threshold)
        rate = self.policy.audit_rate
        if rate > 0.0 and self._rng.random() < rate:
            return Route(label, confidence, True, REASON_AUDIT, 1.0 / rate, threshold)
        return Route(label, confidence, False, None, 1.0, threshold)

    def serving(self) -> "Triage":
        """This triage as a predictor loads it from a learner's snapshot: the same routes, the student without
        its learning-only state (:meth:`Student.serving`). Predictors never learn."""
        served = copy.copy(self)
        served.student = self.student.serving()
        return served

    def learn(self, text: str, label: str, *, student_label: str | None, student_confidence: float,
              weight: float, reason: str) -> None:
        """Learn one teacher label and tell the policy how the student's routed guess fared."""
        self.student.learn(text, label)
        self.policy.observe(student_confidence, student_label == label, weight, reason)

    def learn_many(self, labels: list["Feedback"], *, record_routes: bool = False, step: int = 1) -> None:
        """:meth:`learn` for a batch of teacher labels, in order (the student learns them in one call).

        ``record_routes``: the policy is also told each label's routed confidence, ``weight`` times (rounded at
        random), as :meth:`route` tells it of every event. A learner routes nothing, yet its policy needs the
        confidences of the whole stream: every event below the threshold is escalated (weight 1) and each audit
        stands for 1/audit rate events above it, so the labels estimate that distribution without bias.
        ``step``: labels a step for a student that learns by steps (a learner catching up on a backlog).
        """
        self.student.learn_many([f.text for f in labels], [f.label for f in labels], step=step)
        if record_routes:
            for f in labels:
                if f.reason not in UNINFORMATIVE_REASONS:
                    copies = int(f.weight)
                    for _ in range(copies + (self._rng.random() < f.weight - copies)):
                        self.policy.record(f.student_confidence)
        self.policy.observe_many((f.student_confidence, f.student_label == f.label, f.weight, f.reason) for f in labels)

    def reseed(self, seed: int | None = None) -> None:
        """A new audit draw (``None``: from the system's randomness): predictors loading the same snapshot must
        not audit in step."""
        self._rng = random.Random(seed)


class Feedback(NamedTuple):
    """One teacher label as the triage learns it: the text, the label, and how the student had routed it (a
    named tuple: a learner makes one per label, about 3x faster than a frozen dataclass)."""

    text: str
    label: str
    student_label: str | None
    student_confidence: float
    weight: float
    reason: str


def triage_config(settings: "Settings") -> dict[str, object]:
    """The settings a triage is built from (a checkpoint restores its policy only when they still match)."""
    config: dict[str, object] = {name: getattr(settings, name) for name in (
        "task", "policy", "threshold", "target", "audit_rate", "calibration_events", "warmup_labels", "seed")}
    config["student"] = settings.student_kind
    return config


def build_triage(settings: "Settings") -> Triage:
    """A fresh student (warm-started when ``settings.warm_start`` and the teacher has labelled texts for it) and
    threshold policy as ``settings`` describe them."""
    policy = build_policy(settings.policy, threshold=settings.threshold, target=settings.target,
                          audit_rate=settings.audit_rate, calibration_events=settings.calibration_events)
    student = get_task(settings.task).new_student(settings.student_kind, teacher_model=settings.teacher_model_ref,
                                                  data_dir=settings.data_dir, warm_start=settings.warm_start)
    return Triage(student, policy, warmup_labels=settings.warmup_labels, seed=settings.seed)
