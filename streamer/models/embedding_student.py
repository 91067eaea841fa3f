"""The embedding student: a softmax regression on the teacher's distilled static embeddings, averaged with
naive Bayes.

A text's vector (:class:`~streamer.models.embeddings.StaticEmbeddings`: the mean of its tokens' rows,
distilled from the *fine-tuned* teacher, so it carries the teacher's task) is standardised with running
statistics and fed to a softmax regression learned by SGD (learning rate decaying as 1/sqrt(t), L2). Its
class probabilities are averaged with a naive Bayes student's (``nb-binary``, 0.7/0.3 by default): the
embeddings generalise across words the student has never been taught, naive Bayes keeps the confidences
steady while the regression moves (alone, the regression's confidences drift as it learns, and the
threshold policy undershoots its target). Both halves are River classifiers (``learn_one`` /
``predict_proba_one``; ``predict_proba_many`` embeds a batch of texts in one tokenizer call).

>>> import tempfile
>>> from pathlib import Path
>>> from streamer.models.embeddings import StaticEmbeddings
>>> folder = Path(tempfile.mkdtemp())
>>> _ = StaticEmbeddings.write_example(folder, ["[UNK]", "warm", "funny", "dull", "boring", "film"], dims=8)
>>> s = EmbeddingStudent(StaticEmbeddings.load(folder))
>>> s.predict("warm funny film")
(None, 0.0)
>>> for text, label in [("warm funny film", "fresh"), ("dull boring film", "rotten")] * 20:
...     s.learn(text, label)
>>> label, confidence = s.predict("funny warm")
>>> label, confidence > 0.5, s.version
('fresh', True, 40)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import base

from streamer.models.embeddings import StaticEmbeddings
from streamer.models.naive_bayes import build_pipeline, naive_bayes_probabilities
from streamer.models.student import BaseStudent

Probabilities = dict[Any, float]


class EmbeddingSoftmax(base.Classifier):
    """Softmax regression by SGD on standardised text embeddings; classes are added as they are seen.

    ``x`` is ``{"text": ...}``; ``learning_rate / sqrt(t)`` is the step of the ``t``-th label.
    """

    def __init__(self, embeddings: StaticEmbeddings, learning_rate: float = 0.03, l2: float = 1e-4) -> None:
        self.embeddings = embeddings
        self.learning_rate = learning_rate
        self.l2 = l2
        dims = embeddings.dims
        self.classes: list[Any] = []
        self.weights = np.zeros((0, dims), dtype=np.float64)
        self.bias = np.zeros(0, dtype=np.float64)
        self.seen = 0
        self.mean = np.zeros(dims, dtype=np.float64)
        self.sum_sq = np.zeros(dims, dtype=np.float64)  # Welford's running sum of squared deviations

    @property
    def _multiclass(self) -> bool:
        return True

    def _standardised(self, vectors: np.ndarray) -> np.ndarray:
        scale = np.sqrt(self.sum_sq / max(self.seen - 1, 1)) + 1e-6 if self.seen > 1 else 1.0
        return (vectors - self.mean) / scale

    def learn_vector(self, vector: np.ndarray, y: Any) -> None:
        """One SGD step on an embedding (the statistics of the standardisation update first)."""
        if y not in self.classes:
            self.classes.append(y)
            self.weights = np.vstack([self.weights, np.zeros((1, self.weights.shape[1]))])
            self.bias = np.append(self.bias, 0.0)
        self.seen += 1
        delta = vector - self.mean
        self.mean += delta / self.seen
        self.sum_sq += delta * (vector - self.mean)
        z = self._standardised(vector)
        logits = self.weights @ z + self.bias
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p[self.classes.index(y)] -= 1.0
        step = self.learning_rate / math.sqrt(self.seen)
        self.weights *= 1.0 - step * self.l2
        self.weights -= step * np.outer(p, z)
        self.bias -= step * p

    def proba_vectors(self, vectors: np.ndarray) -> list[Probabilities]:
        """Class probabilities of each embedding (empty before any label)."""
        if not self.classes:
            return [{} for _ in range(len(vectors))]
        logits = self._standardised(vectors) @ self.weights.T + self.bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return [dict(zip(self.classes, row)) for row in p.tolist()]

    def learn_one(self, x: dict, y: Any) -> None:
        self.learn_vector(self.embeddings.embed([x["text"]])[0].astype(np.float64), y)

    def predict_proba_one(self, x: dict) -> Probabilities:
        return self.proba_vectors(self.embeddings.embed([x["text"]]))[0]

    def predict_proba_many(self, X: list[dict]) -> list[Probabilities]:
        """Probabilities for a batch of ``{"text": ...}`` (one tokenizer call)."""
        return self.proba_vectors(self.embeddings.embed([x["text"] for x in X]))


class EmbeddingEnsemble(base.Classifier):
    """``weight`` x :class:`EmbeddingSoftmax` + (1 - ``weight``) x a naive Bayes text pipeline, both learning
    every label."""

    def __init__(self, embeddings: StaticEmbeddings, weight: float = 0.7, naive_bayes: str = "nb-binary",
                 learning_rate: float = 0.03, l2: float = 1e-4) -> None:
        self.embeddings = embeddings
        self.weight = weight
        self.naive_bayes = naive_bayes
        self.learning_rate = learning_rate
        self.l2 = l2
        self.head = EmbeddingSoftmax(embeddings, learning_rate, l2)
        self.nb = build_pipeline(naive_bayes)

    @property
    def _multiclass(self) -> bool:
        return True

    def _mix(self, head: Probabilities, text: str) -> Probabilities:
        nb = naive_bayes_probabilities(self.nb, text)
        w = self.weight
        return {c: w * head.get(c, 0.0) + (1.0 - w) * nb.get(c, 0.0) for c in head.keys() | nb.keys()}

    def learn_one(self, x: dict, y: Any) -> None:
        self.head.learn_one(x, y)
        self.nb.learn_one(x, y)

    def predict_proba_one(self, x: dict) -> Probabilities:
        return self._mix(self.head.predict_proba_one(x), x["text"])

    def predict_proba_many(self, X: list[dict]) -> list[Probabilities]:
        """Probabilities for a batch of ``{"text": ...}`` (the embeddings in one tokenizer call)."""
        return [self._mix(head, x["text"]) for head, x in zip(self.head.predict_proba_many(X), X)]


def best(probabilities: Probabilities) -> tuple[str | None, float]:
    """The most probable class and its probability; ``(None, 0.0)`` when there is none."""
    if not probabilities:
        return None, 0.0
    label = max(probabilities, key=probabilities.__getitem__)
    return label, min(max(float(probabilities[label]), 0.0), 1.0)


class EmbeddingStudent(BaseStudent):
    """The default classification student: :class:`EmbeddingEnsemble` on the teacher's static embeddings."""

    def __init__(self, embeddings: StaticEmbeddings, kind: str = "embed-nb", **params: Any) -> None:
        super().__init__(kind, EmbeddingEnsemble(embeddings, **params))

    def predict(self, text: str) -> tuple[str | None, float]:
        return best(self.model.predict_proba_one({"text": text}))

    def predict_many(self, texts: list[str]) -> list[tuple[str | None, float]]:
        """:meth:`predict` for a batch of texts, with the embeddings computed in one tokenizer call."""
        return [best(p) for p in self.model.predict_proba_many([{"text": t} for t in texts])]

    def learn_one(self, text: str, label: str) -> None:
        self.model.learn_one({"text": text}, label)
