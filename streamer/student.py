"""The student (BabyBear): a cheap River pipeline that learns teacher labels online.

>>> s = Student()
>>> s.predict("a warm, funny film")
(None, 0.0)
>>> for text, label in [("warm funny film", "fresh"), ("dull boring mess", "rotten")] * 3:
...     s.learn(text, label)
>>> label, confidence = s.predict("funny and warm")
>>> label, confidence > 0.5, s.version
('fresh', True, 6)
"""

from __future__ import annotations

import math
import pickle
from typing import Any

from river import base, compose, feature_extraction, naive_bayes

from streamer.settings import STUDENTS


def present(counts: dict[Any, float]) -> dict[Any, int]:
    """Binary features: each n-gram counts once however often it occurs."""
    return dict.fromkeys(counts, 1)


def build_pipeline(kind: str = "nb") -> base.Classifier:
    """A text-in River classifier.

    ``nb``: lower-cased word counts into multinomial naive Bayes, alpha 1 (the default).
    ``nb-bigram``: the same with word bigrams added.
    ``nb-binary``: word unigrams and bigrams, accents stripped, counted once each, alpha 2
    (less over-confident on short texts: it saves more teacher calls at high targets).
    """
    if kind == "nb":
        features = feature_extraction.BagOfWords(on="text", lowercase=True, strip_accents=False)
        return compose.Pipeline(features, naive_bayes.MultinomialNB(alpha=1.0))
    if kind == "nb-bigram":
        features = feature_extraction.BagOfWords(on="text", lowercase=True, strip_accents=False, ngram_range=(1, 2))
        return compose.Pipeline(features, naive_bayes.MultinomialNB(alpha=1.0))
    if kind == "nb-binary":
        features = feature_extraction.BagOfWords(on="text", lowercase=True, strip_accents=True, ngram_range=(1, 2))
        return compose.Pipeline(features, compose.FuncTransformer(present), naive_bayes.MultinomialNB(alpha=2.0))
    raise ValueError(f"unknown student {kind!r}; choose one of {STUDENTS}")


class Student:
    """Wraps a River classifier: predict with a confidence, learn one label at a time.

    ``version`` is the number of labels learned so far; predictions carry it.
    """

    def __init__(self, kind: str = "nb") -> None:
        self.kind = kind
        self.model = build_pipeline(kind)
        self.version = 0

    def predict(self, text: str) -> tuple[str | None, float]:
        """The most probable label and its probability; ``(None, 0.0)`` before any learning.

        Same figures as the pipeline's ``predict_proba_one``, computed without its generic
        overhead (scipy's ``logsumexp`` on a handful of classes costs more than the model).
        """
        *transforms, classifier = self.model.steps.values()
        x: dict[str, Any] = {"text": text}
        for step in transforms:
            x = step.transform_one(x)
        jll = classifier.joint_log_likelihood(x)
        if not jll:
            return None, 0.0
        label = max(jll, key=jll.__getitem__)
        best = jll[label]
        return label, 1.0 / sum(math.exp(v - best) for v in jll.values())

    def learn(self, text: str, label: str) -> None:
        self.model.learn_one({"text": text}, label)
        self.version += 1

    def to_bytes(self) -> bytes:
        return pickle.dumps({"kind": self.kind, "model": self.model, "version": self.version})

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Student":
        state: dict[str, Any] = pickle.loads(blob)  # noqa: S301 - our own checkpoint files
        student = cls.__new__(cls)
        student.kind = state["kind"]
        student.model = state["model"]
        student.version = state["version"]
        return student
