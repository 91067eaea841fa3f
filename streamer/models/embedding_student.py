"""The embedding student: a softmax regression on the teacher's distilled static embeddings, averaged with
naive Bayes over the teacher's tokens.

A text is tokenised once, by the teacher's own tokenizer (:class:`~streamer.models.embeddings.StaticEmbeddings`,
batched in Rust for a batch of events). Two halves read the token ids:

* **embedding heads**: the mean of the tokens' rows of the embedding table distilled from the *fine-tuned*
  teacher (so it carries the teacher's task), standardised with running statistics, into two heads averaged
  half and half: a softmax regression learned by SGD (learning rate decaying as 1/sqrt(t), L2) and a
  one-hidden-layer network (:class:`EmbeddingMLP`, an Adam step on each label and 15 replayed ones), which
  separates what a linear head cannot (a tweet's "neutral" is the absence of both polarities). With
  ``step_labels=8`` both take labels 8 at a time (one by one or in batches, the same student): a learner learns
  2.5x faster, at a cost of 1 to 4 points of savings (README, "Learning off the hot path");
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

import copy
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
    ``t``-th label. Classes are indices, added by :meth:`add_class`. Labels are kept until ``step_labels`` have
    come, then learned together: the running standardisation takes them all, and each label's gradient, taken
    at the weights before them, is applied with its own step (one by one or in a batch, the same weights).

    >>> import numpy as np
    >>> head = EmbeddingSoftmax(dims=2, step_labels=4); head.add_class(); head.add_class()
    >>> for x, y in [((1.0, 0.0), 0), ((0.0, 1.0), 1)] * 40:
    ...     head.learn(np.array(x), y)
    >>> head.seen, head.probabilities(np.array([[1.0, 0.0]])).argmax(axis=1).tolist()
    (80, [0])
    """

    #: heads pickled before labels were learned in steps learn each at once
    step_labels = 1

    def __init__(self, dims: int, learning_rate: float = 0.03, l2: float = 1e-4, step_labels: int = 1) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.step_labels = step_labels
        self.weights = np.zeros((0, dims), dtype=np.float64)
        self.bias = np.zeros(0, dtype=np.float64)
        self.seen = 0
        self.mean = np.zeros(dims, dtype=np.float64)
        self.sum_sq = np.zeros(dims, dtype=np.float64)  # the running sum of squared deviations
        self.waiting: list[tuple[np.ndarray, int]] = []

    def add_class(self) -> None:
        self.weights = np.vstack([self.weights, np.zeros((1, self.weights.shape[1]))])
        self.bias = np.append(self.bias, 0.0)

    def _standardised(self, vectors: np.ndarray) -> np.ndarray:
        scale = np.sqrt(self.sum_sq / max(self.seen - 1, 1)) + 1e-6 if self.seen > 1 else 1.0
        return (vectors - self.mean) / scale

    def observe(self, vectors: np.ndarray) -> None:
        """Update the running standardisation with one embedding (Welford) or a batch of them (Chan et al.'s
        merge of two means and sums of squares)."""
        if vectors.ndim == 1:  # once per label on the default path: the cheaper update
            self.seen += 1
            delta = vectors - self.mean
            self.mean += delta / self.seen
            self.sum_sq += delta * (vectors - self.mean)
            return
        n, seen = len(vectors), self.seen
        batch_mean = vectors.mean(axis=0)
        delta = batch_mean - self.mean
        self.seen = seen + n
        self.mean += delta * (n / self.seen)
        self.sum_sq += ((vectors - batch_mean) ** 2).sum(axis=0) + delta**2 * (seen * n / self.seen)

    def learn(self, vector: np.ndarray, y: int) -> None:
        """Keep the label; learn the kept ones once ``step_labels`` have come."""
        if self.step_labels == 1:  # one SGD step (also a head pickled before steps took several labels)
            self.observe(vector)
            z = self._standardised(vector)
            p = softmax_rows((self.weights @ z + self.bias)[None, :])[0]
            p[y] -= 1.0
            step = self.learning_rate / math.sqrt(self.seen)
            self.weights *= 1.0 - step * self.l2
            self.weights -= step * np.outer(p, z)
            self.bias -= step * p
            return
        self.waiting.append((vector, y))
        if len(self.waiting) >= self.step_labels:
            self._step(*self._take_waiting())

    def _take_waiting(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept labels' embeddings and classes, no longer kept."""
        vectors, ys = np.array([v for v, _ in self.waiting]), np.array([y for _, y in self.waiting])
        self.waiting = []
        return vectors, ys

    def learn_steps(self, vectors: np.ndarray, ys: np.ndarray, step: int) -> None:
        """Learn a batch ``step`` labels at a time (after any kept ones), whatever :attr:`step_labels` says."""
        if self.waiting:
            kept, kept_ys = self._take_waiting()
            vectors, ys = np.vstack([kept, vectors]), np.concatenate((kept_ys, ys))
        for start in range(0, len(ys), step):
            self._step(vectors[start:start + step], ys[start:start + step])

    def _step(self, vectors: np.ndarray, ys: np.ndarray) -> None:
        """SGD on a batch: the statistics take it first, every gradient is taken at the weights before it."""
        self.observe(vectors)
        z = self._standardised(vectors)
        p = softmax_rows(z @ self.weights.T + self.bias)
        p[np.arange(len(ys)), ys] -= 1.0
        steps = self.learning_rate / np.sqrt(np.arange(self.seen - len(ys) + 1, self.seen + 1))
        self.weights *= float(np.prod(1.0 - steps * self.l2))
        p *= steps[:, None]
        self.weights -= p.T @ z
        self.bias -= p.sum(axis=0)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """One row of class probabilities per embedding."""
        return softmax_rows(self._standardised(vectors) @ self.weights.T + self.bias)


class EmbeddingMLP:
    """A one-hidden-layer ReLU network on standardised text embeddings, learned online: every ``step_labels``
    labels take one Adam step on a minibatch of themselves and ``replay`` labels drawn from the last ``memory``
    (weights and kept labels in float32).
    The output layer starts at zero (uniform probabilities) and grows a row per class (:meth:`add_class`);
    initialisation and replay draw from a generator seeded with ``seed``, so a replay is reproducible. It reads
    the running standardisation of ``scaler`` (the softmax head beside it, which updates it on every label); without
    one it keeps its own.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(4000, 2)); y = (X[:, 0] * X[:, 1] > 0).astype(int)  # XOR: no line separates it
    >>> mlp = EmbeddingMLP(dims=2, hidden=32); mlp.add_class(); mlp.add_class()
    >>> for x, label in zip(X, y):
    ...     mlp.learn(x, label)
    >>> float((mlp.probabilities(X[-500:]).argmax(axis=1) == y[-500:]).mean()) > 0.9
    True
    """

    #: labels kept since the last step (networks pickled before steps took several labels step on each)
    pending = 0
    step_labels = 1
    #: the weights' type (networks pickled before float32 go on in float64)
    dtype: Any = np.float64

    def __init__(self, dims: int, hidden: int = 128, learning_rate: float = 1e-3, l2: float = 1e-4,
                 replay: int = 15, memory: int = 5000, seed: int = 0, scaler: EmbeddingSoftmax | None = None,
                 step_labels: int = 1) -> None:
        self.learning_rate, self.l2, self.replay, self.memory = learning_rate, l2, replay, memory
        self.rng = np.random.default_rng(seed)
        self.owns_scaler = scaler is None
        self.scaler = EmbeddingSoftmax(dims) if scaler is None else scaler  # its running standardisation
        self.dtype = np.float32  # half the memory traffic of float64: a step is about 1.7x faster
        self.w1 = self.rng.normal(0.0, math.sqrt(2.0 / dims), (hidden, dims)).astype(self.dtype)
        self.b1 = np.zeros(hidden, dtype=self.dtype)
        self.w2 = np.zeros((0, hidden), dtype=self.dtype)
        self.b2 = np.zeros(0, dtype=self.dtype)
        self.kept = np.zeros((0, dims), dtype=np.float32)  # grows (doubling) up to ``memory`` rows
        self.kept_labels = np.zeros(0, dtype=np.int64)
        self.step_labels = step_labels
        self.seen = 0
        self.steps = 0
        self.moments: list[tuple[np.ndarray, np.ndarray]] = []

    def add_class(self) -> None:
        self.w2 = np.vstack([self.w2, np.zeros((1, self.w2.shape[1]), dtype=self.w2.dtype)])
        self.b2 = np.append(self.b2, self.b2.dtype.type(0))
        self.moments = [(np.zeros_like(p), np.zeros_like(p)) for p in (self.w1, self.b1, self.w2, self.b2)]

    def serving(self) -> "EmbeddingMLP":
        """A copy that predicts as this one and cannot go on learning: no replay memory, no Adam moments."""
        served = copy.copy(self)
        served.kept, served.kept_labels, served.moments = self.kept[:0], self.kept_labels[:0], []
        return served

    def _standardised(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(self.scaler._standardised(vectors), dtype=self.dtype)

    def _hidden(self, vectors: np.ndarray) -> np.ndarray:
        return np.maximum(self._standardised(vectors) @ self.w1.T + self.b1, 0.0)

    def learn(self, vector: np.ndarray, y: int) -> None:
        """Keep the label; once ``step_labels`` are kept since the last step, one Adam step on them and
        ``replay`` kept ones (so labels learned one by one or in a batch give the same network)."""
        self._keep(vector[None, :], np.array([y]))
        if self.pending >= self.step_labels:
            self._step_on_pending()

    def learn_steps(self, vectors: np.ndarray, ys: np.ndarray, step: int) -> None:
        """Learn a batch with one Adam step per ``step`` labels (any kept since the last step join the first),
        whatever :attr:`step_labels` says."""
        for start in range(0, len(ys), step):
            self._keep(vectors[start:start + step], ys[start:start + step])
            self._step_on_pending()

    def _keep(self, vectors: np.ndarray, ys: np.ndarray) -> None:
        """Keep labelled embeddings in the replay memory (a ring of ``memory`` rows, grown by doubling)."""
        if self.owns_scaler:
            self.scaler.observe(vectors if len(vectors) > 1 else vectors[0])
        slots = np.arange(self.seen, self.seen + len(ys)) % self.memory
        if slots.max() >= len(self.kept):
            grown = min(self.memory, max(64, 2 * len(self.kept), int(slots.max()) + 1))
            self.kept = np.resize(self.kept, (grown, self.kept.shape[1]))
            self.kept_labels = np.resize(self.kept_labels, grown)
        self.kept[slots], self.kept_labels[slots] = vectors, ys
        self.seen += len(ys)
        self.pending += len(ys)

    def _step_on_pending(self) -> None:
        fresh = (np.arange(self.seen - self.pending, self.seen) % self.memory)
        self.pending = 0
        self._step(np.concatenate((fresh, self.rng.integers(0, min(self.seen, self.memory), self.replay))))

    def _step(self, rows: np.ndarray) -> None:
        """One Adam step on the mean loss of the kept rows ``rows``."""
        x, labels = self.kept[rows].astype(np.float64), self.kept_labels[rows]
        z = self._standardised(x)
        h = np.maximum(z @ self.w1.T + self.b1, 0.0)
        grad = softmax_rows(h @ self.w2.T + self.b2)
        grad[np.arange(len(rows)), labels] -= 1.0
        grad /= len(rows)
        back = (grad @ self.w2) * (h > 0)
        grads = (back.T @ z + self.l2 * self.w1, back.sum(axis=0), grad.T @ h + self.l2 * self.w2, grad.sum(axis=0))
        self.steps += 1
        step = self.learning_rate / (1 - 0.9**self.steps)
        unbias = 1.0 / (1 - 0.999**self.steps)
        for i, (param, g) in enumerate(zip((self.w1, self.b1, self.w2, self.b2), grads)):
            # Adam, in place: the same update with a third of the temporary arrays (1.8x faster per label)
            m, v = self.moments[i]
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            g *= g
            g *= 0.001
            v += g
            t = v * unbias
            np.sqrt(t, out=t)
            t += 1e-8
            np.divide(m, t, out=t)
            t *= step
            param -= t

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """One row of class probabilities per embedding."""
        return softmax_rows(self._hidden(vectors) @ self.w2.T + self.b2)


def distinct_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``keys``, sorted, and how many times each occurs: ``np.unique(keys,
    return_counts=True)`` by one sort (numpy 2.4's hashing ``unique`` is about 20x slower at these sizes).

    >>> [a.tolist() for a in distinct_counts(np.array([7, 3, 7, 7]))], [len(a) for a in distinct_counts(np.array([]))]
    ([[3, 7], [1, 3]], [0, 0])
    """
    return sorted_runs(np.sort(keys))


def sorted_runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of the sorted array ``ordered`` and how many times each occurs (no sort).

    >>> [a.tolist() for a in sorted_runs(np.array([3, 7, 7, 7]))]
    [[3, 7], [1, 3]]
    """
    edges = np.ones(len(ordered) + 1, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=edges[1:-1])
    starts = np.flatnonzero(edges)
    return ordered[starts[:-1]], np.diff(starts)


def key_type(bound: int) -> type:
    """The integer type of keys below ``bound``: int32 where it holds them (sorting 60,000 keys of int32 takes 0.6
    of the time int64 takes), else int64.

    >>> key_type(2**31).__name__, key_type(2**31 + 1).__name__
    ('int32', 'int64')
    """
    return np.int32 if bound <= 2**31 else np.int64


def token_occurrences(tokens: Tokens, vocabulary: int) -> tuple[np.ndarray, np.ndarray]:
    """Every feature of each text, repeats included: its token ids, and its token bigrams hashed into
    :data:`BIGRAM_BUCKETS` after them. Returns ``(text index, feature)`` pairs.

    >>> rows, features = token_occurrences(Tokens.of([[5, 7, 5], [], [9]]), vocabulary=10)
    >>> rows.tolist(), [int(f) for f in features if f < 10]
    ([0, 0, 0, 2, 0, 0], [5, 7, 5, 9])
    """
    flat = tokens.flat
    rows = np.repeat(np.arange(len(tokens.lengths), dtype=np.int64), tokens.lengths)
    same = rows[:-1] == rows[1:]  # consecutive tokens of one text
    pairs = vocabulary + (flat[:-1][same] * 1_000_003 + flat[1:][same]) % BIGRAM_BUCKETS
    return np.concatenate((rows, rows[:-1][same])), np.concatenate((flat, pairs))


def token_features(tokens: Tokens, vocabulary: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's distinct features, for a batch at once: its token ids, and its token bigrams hashed into
    :data:`BIGRAM_BUCKETS` after them. Returns ``(text index, feature)`` pairs, sorted by text.

    >>> rows, features = token_features(Tokens.of([[5, 7, 5], [], [9]]), vocabulary=10)
    >>> rows.tolist(), [int(f) for f in features[rows == 0] if f < 10], features[rows == 2].tolist()
    ([0, 0, 0, 0, 2], [5, 7], [9])
    """
    rows, features = token_occurrences(tokens, vocabulary)
    width = vocabulary + BIGRAM_BUCKETS
    kind = key_type(len(tokens.lengths) * width)
    keys, _ = distinct_counts(rows.astype(kind) * width + features.astype(kind))
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
        self.learn_many(tokens, np.array([y]))

    def learn_many(self, tokens: Tokens, ys: np.ndarray) -> None:
        """Learn a batch of texts' labels (``ys``: one class index per text): counts add up, so this is exactly
        one :meth:`learn` per text."""
        rows, features = token_occurrences(tokens, self.vocabulary)
        width, texts = self.counts.shape[1], max(len(tokens.lengths), 1)
        kind = key_type(self.counts.shape[0] * width * texts)
        # one sort of (class, feature, text) keys: their distinct values are each text's distinct features, and
        # those of one (class, feature) cell are next to each other (0.6 of the time of two sorts of int64)
        triples, _ = distinct_counts((ys.astype(kind)[rows] * width + features.astype(kind)) * texts
                                     + rows.astype(kind))
        cells, times = sorted_runs(triples // texts)
        classes, cell_features = cells // width, cells % width
        self.counts[classes, cell_features] += times  # each cell once: no np.add.at needed
        self.totals += np.bincount(classes, weights=times, minlength=len(self.totals))
        self.class_counts += np.bincount(ys, minlength=len(self.class_counts))
        new, _ = distinct_counts(cell_features[~self.known[cell_features]])
        self.features_seen += len(new)
        self.known[new] = True

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
    """``weight`` x the embedding heads + (1 - ``weight``) x :class:`TokenNaiveBayes`, all learning every label;
    the embedding heads are (1 - ``mlp_share``) x :class:`EmbeddingSoftmax` + ``mlp_share`` x
    :class:`EmbeddingMLP` (``hidden`` units; ``mlp_learning_rate``, ``mlp_replay``). Both embedding heads learn
    ``step_labels`` labels at a time. A River classifier over ``{"text": ...}`` whose ``predict_proba_many``
    takes a list of them."""

    #: checkpoints written before the network half existed load with these (and predict as they did)
    mlp: EmbeddingMLP | None = None
    mlp_share = 0.0

    def __init__(self, embeddings: StaticEmbeddings, weight: float = 0.7, learning_rate: float = 0.03,
                 l2: float = 1e-4, alpha: float = 2.0, mlp_share: float = 0.5, hidden: int = 128,
                 step_labels: int = 1, mlp_learning_rate: float = 1e-3, mlp_replay: int = 15) -> None:
        self.embeddings = embeddings
        self.weight = weight
        self.learning_rate = learning_rate
        self.l2 = l2
        self.alpha = alpha
        self.mlp_share = mlp_share
        self.hidden = hidden
        self.step_labels = step_labels
        self.mlp_learning_rate = mlp_learning_rate
        self.mlp_replay = mlp_replay
        self.classes: list[Any] = []
        self.head = EmbeddingSoftmax(embeddings.dims, learning_rate, l2, step_labels=step_labels)
        self.mlp = EmbeddingMLP(embeddings.dims, hidden, mlp_learning_rate, l2, replay=mlp_replay, scaler=self.head,
                                step_labels=step_labels) if mlp_share > 0 else None
        self.nb = TokenNaiveBayes(embeddings.table.shape[0], alpha)

    def serving(self) -> "EmbeddingNaiveBayes":
        """A copy that predicts as this one, without the network half's learning state (a snapshot's size)."""
        served = copy.copy(self)
        if self.mlp is not None:
            served.mlp = self.mlp.serving()
        return served

    def _parts(self) -> list[Any]:
        return [part for part in (self.head, self.mlp, self.nb) if part is not None]

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x: dict, y: Any) -> None:
        if y not in self.classes:
            self.classes.append(y)
            for part in self._parts():
                part.add_class()
        tokens = self.embeddings.token_ids([x["text"]])
        index = self.classes.index(y)
        vector = self.embeddings.mean_vectors(tokens)[0].astype(np.float64)
        self.head.learn(vector, index)  # updates the standardisation the network half reads too
        if self.mlp is not None:
            self.mlp.learn(vector, index)
        self.nb.learn(tokens, index)

    def learn_many(self, X: list[dict], ys: list[Any], step: int = 1) -> None:
        """:meth:`learn_one` for a batch, with the same result: texts are tokenised, embedded and counted for the
        whole batch at once; the embedding heads still take their labels in order. With ``step`` > 1 the embedding
        heads take ``step`` labels a step instead (a learner catching up on a backlog), the batch's new classes
        first."""
        tokens = self.embeddings.token_ids([x["text"] for x in X])
        vectors = self.embeddings.mean_vectors(tokens).astype(np.float64)
        if step > 1:
            for y in dict.fromkeys(ys):
                if y not in self.classes:
                    self.classes.append(y)
                    for part in self._parts():
                        part.add_class()
            index_of = {c: i for i, c in enumerate(self.classes)}
            labels = np.fromiter((index_of[y] for y in ys), dtype=np.int64, count=len(ys))
            self.head.learn_steps(vectors, labels, step)
            if self.mlp is not None:
                self.mlp.learn_steps(vectors, labels, step)
            self.nb.learn_many(tokens, labels)
            return
        indices = []
        for vector, y in zip(vectors, ys):
            if y not in self.classes:  # where a label brings it, as learn_one would (a new class resets Adam)
                self.classes.append(y)
                for part in self._parts():
                    part.add_class()
            index = self.classes.index(y)
            self.head.learn(vector, index)  # updates the standardisation the network half reads too
            if self.mlp is not None:
                self.mlp.learn(vector, index)
            indices.append(index)
        self.nb.learn_many(tokens, np.array(indices, dtype=np.int64))

    def probability_rows(self, texts: list[str]) -> np.ndarray:
        """One row per text, one column per class of :attr:`classes` (none before any label)."""
        if not self.classes:
            return np.zeros((len(texts), 0))
        tokens = self.embeddings.token_ids(texts)  # tokenised and flattened once for both halves
        vectors = self.embeddings.mean_vectors(tokens)
        embedded = self.head.probabilities(vectors)
        if self.mlp is not None and self.mlp_share > 0:
            embedded = (1.0 - self.mlp_share) * embedded + self.mlp_share * self.mlp.probabilities(vectors)
        return self.weight * embedded + (1.0 - self.weight) * self.nb.probabilities(tokens)

    def predict_proba_one(self, x: dict) -> dict[Any, float]:
        return self.predict_proba_many([x])[0]

    def predict_proba_many(self, X: list[dict]) -> list[dict[Any, float]]:
        """Probabilities for a batch of ``{"text": ...}`` (one tokenizer call)."""
        return [dict(zip(self.classes, row)) for row in self.probability_rows([x["text"] for x in X]).tolist()]


class EmbeddingStudent(BaseStudent):
    """The default classification student: :class:`EmbeddingNaiveBayes` on the teacher's static embeddings."""

    def __init__(self, embeddings: StaticEmbeddings, kind: str = "embed-nb", **params: Any) -> None:
        super().__init__(kind, EmbeddingNaiveBayes(embeddings, **params))

    def serving(self) -> "EmbeddingStudent":
        served = copy.copy(self)
        served.model = self.model.serving()
        return served

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

    def learn_batch(self, texts: list[str], labels: list[str], step: int = 1) -> None:
        self.model.learn_many([{"text": text} for text in texts], labels, step=step)
