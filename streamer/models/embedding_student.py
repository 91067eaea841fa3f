"""The embedding student: a softmax regression on the teacher's distilled static embeddings, averaged with
naive Bayes over the teacher's tokens.

A text is tokenised once, by the teacher's own tokenizer (:class:`~streamer.models.embeddings.StaticEmbeddings`,
batched in Rust for a batch of events). Two halves read the token ids:

* **embedding softmax**: the mean of the tokens' rows of the embedding table distilled from the *fine-tuned*
  teacher (so it carries the teacher's task), standardised with running statistics, into a softmax
  regression learned by SGD (learning rate decaying as 1/sqrt(t), L2);
* **token naive Bayes**: multinomial naive Bayes over the text's distinct tokens and hashed token bigrams
  (each counted once, alpha 2), as the ``nb-binary`` student does over words.

Their class probabilities are averaged, 0.7/0.3 by default: the embeddings generalise to words the student
was never taught; naive Bayes keeps the confidences steady while the regression moves (alone, the
regression's confidences drift as it learns and the threshold policy undershoots its target). Everything is
numpy over the token ids, so a batch of texts costs one tokenizer call and a few array operations.

>>> import tempfile
>>> from pathlib import Path
>>> from streamer.models.embeddings import StaticEmbeddings, Tokens
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
>>> s.predict_many(["funny warm", "boring dull"])[1][0]
'rotten'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import base

from streamer.models.embeddings import StaticEmbeddings, Tokens
from streamer.models.student import BaseStudent

#: hashed buckets of token bigrams (beside one feature per vocabulary token)
BIGRAM_BUCKETS = 2**18


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


class EmbeddingSoftmax:
    """Softmax regression by SGD on standardised text embeddings; ``learning_rate / sqrt(t)`` is the step of the
    ``t``-th label. Classes are indices, added by :meth:`add_class`."""

    def __init__(self, dims: int, learning_rate: float = 0.03, l2: float = 1e-4) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.weights = np.zeros((0, dims), dtype=np.float64)
        self.bias = np.zeros(0, dtype=np.float64)
        self.seen = 0
        self.mean = np.zeros(dims, dtype=np.float64)
        self.sum_sq = np.zeros(dims, dtype=np.float64)  # Welford's running sum of squared deviations

    def add_class(self) -> None:
        self.weights = np.vstack([self.weights, np.zeros((1, self.weights.shape[1]))])
        self.bias = np.append(self.bias, 0.0)

    def _standardised(self, vectors: np.ndarray) -> np.ndarray:
        scale = np.sqrt(self.sum_sq / max(self.seen - 1, 1)) + 1e-6 if self.seen > 1 else 1.0
        return (vectors - self.mean) / scale

    def learn(self, vector: np.ndarray, y: int) -> None:
        """One SGD step (the standardisation's statistics update first)."""
        self.seen += 1
        delta = vector - self.mean
        self.mean += delta / self.seen
        self.sum_sq += delta * (vector - self.mean)
        z = self._standardised(vector)
        p = softmax_rows((self.weights @ z + self.bias)[None, :])[0]
        p[y] -= 1.0
        step = self.learning_rate / math.sqrt(self.seen)
        self.weights *= 1.0 - step * self.l2
        self.weights -= step * np.outer(p, z)
        self.bias -= step * p

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """One row of class probabilities per embedding."""
        return softmax_rows(self._standardised(vectors) @ self.weights.T + self.bias)


def token_features(tokens: Tokens, vocabulary: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's distinct features, for a batch at once: its token ids, and its token bigrams hashed into
    :data:`BIGRAM_BUCKETS` after them. Returns ``(text index, feature)`` pairs, sorted by text.

    >>> rows, features = token_features(Tokens.of([[5, 7, 5], [], [9]]), vocabulary=10)
    >>> rows.tolist(), [int(f) for f in features[rows == 0] if f < 10], features[rows == 2].tolist()
    ([0, 0, 0, 0, 2], [5, 7], [9])
    """
    flat = tokens.flat
    rows = np.repeat(np.arange(len(tokens.lengths), dtype=np.int64), tokens.lengths)
    same = rows[:-1] == rows[1:]  # consecutive tokens of one text
    pairs = vocabulary + (flat[:-1][same] * 1_000_003 + flat[1:][same]) % BIGRAM_BUCKETS
    width = vocabulary + BIGRAM_BUCKETS
    keys = np.unique(np.concatenate((rows * width + flat, rows[:-1][same] * width + pairs)))
    return keys // width, keys % width


class TokenNaiveBayes:
    """Multinomial naive Bayes over binary token and token-bigram features, in numpy (classes are indices)."""

    def __init__(self, vocabulary: int, alpha: float = 2.0) -> None:
        self.vocabulary = vocabulary
        self.alpha = alpha
        self.counts = np.zeros((0, vocabulary + BIGRAM_BUCKETS), dtype=np.float32)
        self.totals = np.zeros(0, dtype=np.float64)
        self.class_counts = np.zeros(0, dtype=np.float64)
        self.known = np.zeros(vocabulary + BIGRAM_BUCKETS, dtype=bool)
        self.features_seen = 0

    def add_class(self) -> None:
        self.counts = np.vstack([self.counts, np.zeros((1, self.counts.shape[1]), dtype=np.float32)])
        self.totals = np.append(self.totals, 0.0)
        self.class_counts = np.append(self.class_counts, 0.0)

    def learn(self, tokens: Tokens, y: int) -> None:
        """Learn one text's label (``tokens`` of that text alone)."""
        _, features = token_features(tokens, self.vocabulary)
        self.counts[y, features] += 1.0
        self.totals[y] += len(features)
        self.class_counts[y] += 1.0
        self.features_seen += int((~self.known[features]).sum())
        self.known[features] = True

    def probabilities(self, tokens: Tokens) -> np.ndarray:
        """One row of class probabilities per text (a text without tokens gets the prior)."""
        rows, features = token_features(tokens, self.vocabulary)
        n, classes = len(tokens.lengths), len(self.totals)
        log_counts = np.log(self.counts[:, features] + self.alpha)  # classes x feature occurrences
        sums = np.stack([np.bincount(rows, weights=log_counts[k], minlength=n) for k in range(classes)], axis=1)
        per_text = np.bincount(rows, minlength=n)[:, None]
        log_total = np.log(self.totals + self.alpha * max(self.features_seen, 1))
        prior = np.log(self.class_counts / self.class_counts.sum())
        return softmax_rows(sums - per_text * log_total + prior)


class EmbeddingNaiveBayes(base.Classifier):
    """``weight`` x :class:`EmbeddingSoftmax` + (1 - ``weight``) x :class:`TokenNaiveBayes`, both learning every
    label; a River classifier over ``{"text": ...}`` whose ``predict_proba_many`` takes a list of them."""

    def __init__(self, embeddings: StaticEmbeddings, weight: float = 0.7, learning_rate: float = 0.03,
                 l2: float = 1e-4, alpha: float = 2.0) -> None:
        self.embeddings = embeddings
        self.weight = weight
        self.learning_rate = learning_rate
        self.l2 = l2
        self.alpha = alpha
        self.classes: list[Any] = []
        self.head = EmbeddingSoftmax(embeddings.dims, learning_rate, l2)
        self.nb = TokenNaiveBayes(embeddings.table.shape[0], alpha)

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x: dict, y: Any) -> None:
        if y not in self.classes:
            self.classes.append(y)
            self.head.add_class()
            self.nb.add_class()
        tokens = self.embeddings.token_ids([x["text"]])
        index = self.classes.index(y)
        self.head.learn(self.embeddings.mean_vectors(tokens)[0].astype(np.float64), index)
        self.nb.learn(tokens, index)

    def probability_rows(self, texts: list[str]) -> np.ndarray:
        """One row per text, one column per class of :attr:`classes` (none before any label)."""
        if not self.classes:
            return np.zeros((len(texts), 0))
        tokens = self.embeddings.token_ids(texts)  # tokenised and flattened once for both halves
        return (self.weight * self.head.probabilities(self.embeddings.mean_vectors(tokens))
                + (1.0 - self.weight) * self.nb.probabilities(tokens))

    def predict_proba_one(self, x: dict) -> dict[Any, float]:
        return self.predict_proba_many([x])[0]

    def predict_proba_many(self, X: list[dict]) -> list[dict[Any, float]]:
        """Probabilities for a batch of ``{"text": ...}`` (one tokenizer call)."""
        return [dict(zip(self.classes, row)) for row in self.probability_rows([x["text"] for x in X]).tolist()]


class EmbeddingStudent(BaseStudent):
    """The default classification student: :class:`EmbeddingNaiveBayes` on the teacher's static embeddings."""

    def __init__(self, embeddings: StaticEmbeddings, kind: str = "embed-nb", **params: Any) -> None:
        super().__init__(kind, EmbeddingNaiveBayes(embeddings, **params))

    def predict(self, text: str) -> tuple[str | None, float]:
        return self.predict_many([text])[0]

    def predict_many(self, texts: list[str]) -> list[tuple[str | None, float]]:
        """:meth:`predict` for a batch of texts: one tokenizer call and a few array operations."""
        if not self.model.classes:
            return [(None, 0.0)] * len(texts)
        rows = self.model.probability_rows(texts)
        best = rows.argmax(axis=1)
        classes = self.model.classes
        return [(classes[b], min(max(float(row[b]), 0.0), 1.0)) for b, row in zip(best.tolist(), rows)]

    def learn_one(self, text: str, label: str) -> None:
        self.model.learn_one({"text": text}, label)
