"""The student family: one protocol every student implements and the base class that does most of it.

A student predicts a label with a confidence, learns one teacher label at a time, counts
the labels it has learned (``version``; predictions carry it) and gives its state for
checkpoints. A fresh student may first learn texts the teacher labelled offline
(:meth:`BaseStudent.warm_start`, :mod:`streamer.models.warm_start`); those do not count in ``version``.
Students are River estimators underneath; which kinds exist is up to the tasks (:mod:`streamer.tasks`), and
``tests/test_student_contract.py`` checks every one.

>>> from streamer.models.naive_bayes import NaiveBayesStudent
>>> s = NaiveBayesStudent("nb")
>>> s.learn("fine film", "pos"); s.version
1
>>> restored = NaiveBayesStudent.from_state(s.state())
>>> restored.version, restored.predict("fine film") == s.predict("fine film")
(1, True)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from streamer.models.embeddings import StaticEmbeddings
    from streamer.models.warm_start import WarmStart

#: Texts learned in one call of a warm start (a label a step still: the student is the one learning them one by one
#: makes; the embedding student tokenises, embeds and counts each call's texts at once)
WARM_START_BATCH = 256


@runtime_checkable
class Student(Protocol):
    """What the triage needs of a student."""

    kind: str
    version: int

    def predict(self, text: str) -> tuple[str | None, float]:
        """The most probable label and its probability in [0, 1]; ``(None, 0.0)`` before any learning."""

    def learn(self, text: str, label: str) -> None:
        """Learn one label; ``version`` grows by one."""

    def learn_many(self, texts: list[str], labels: list[str], *, step: int = 1) -> None:
        """Learn labels in order, as many :meth:`learn` calls would (the same student after them); ``version``
        grows by their number. ``step`` > 1: a student that learns by optimiser steps may take that many labels
        a step (a learner catching up on a backlog); others learn as ever."""

    def check_label(self, text: str, label: str) -> None:
        """Raise ``ValueError`` when this student cannot learn ``label`` for ``text``."""

    def serving(self) -> "Student":
        """This student for predictors, which never learn: the same predictions, without learning-only state."""

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild this student (picklable; ``kind`` and ``version`` included)."""


@dataclass(frozen=True)
class StudentResources:
    """What a new student may need besides its kind: the teacher (whose distilled embeddings the embedding
    student reads) and the data folder (where embeddings of a teacher given by id are cached)."""

    teacher_model: str | None = None
    data_dir: Path | None = None

    @property
    def _data_dir(self) -> Path:
        return self.data_dir or Path.home() / ".cache" / "babybear-streamer"

    def warm_start(self) -> "WarmStart | None":
        """The texts the teacher labelled offline for its students (none without a teacher or when it has none
        yet; nothing is distilled or fetched for this)."""
        from streamer.models.embeddings import embeddings_folder, teacher_version_of
        from streamer.models.warm_start import read_warm_start

        if not self.teacher_model:
            return None
        return read_warm_start(embeddings_folder(self.teacher_model, self._data_dir),
                               teacher_version=teacher_version_of(self.teacher_model))

    def embeddings(self) -> "StaticEmbeddings":
        """The teacher's static embeddings, distilled now if it has none yet."""
        from streamer.models.embeddings import StaticEmbeddings, ensure_embeddings

        if not self.teacher_model:
            raise ValueError("this student reads the teacher's distilled embeddings: give the teacher model "
                             "(--teacher-model or STREAMER_TEACHER_MODEL)")
        return StaticEmbeddings.load(ensure_embeddings(self.teacher_model, self._data_dir))


class BaseStudent:
    """A student around one River model: subclasses implement :meth:`predict` and :meth:`learn_one`."""

    #: labels learned before the stream (:meth:`warm_start`); checkpoints written before warm starts have none
    warm_labels = 0

    def __init__(self, kind: str, model: Any) -> None:
        self.kind = kind
        self.model = model
        self.version = 0

    def predict(self, text: str) -> tuple[str | None, float]:
        raise NotImplementedError

    def learn_one(self, text: str, label: str) -> None:
        raise NotImplementedError

    def learn(self, text: str, label: str) -> None:
        self.learn_one(text, label)
        self.version += 1

    def check_label(self, text: str, label: str) -> None:
        """Raise ``ValueError`` when this student cannot learn ``label`` for ``text`` (checked before a batch is
        learned, so a batch is learned whole or not at all); any label will do here."""

    def learn_batch(self, texts: list[str], labels: list[str], step: int = 1) -> None:
        """Learn labels in order into the model (one :meth:`learn_one` each here; students that can do it for the
        whole batch at once override this, with the same result; ``step``: see :meth:`learn_many`)."""
        for text, label in zip(texts, labels, strict=True):
            self.learn_one(text, label)

    def learn_many(self, texts: list[str], labels: list[str], *, step: int = 1) -> None:
        """:meth:`learn` for a batch: the same student as one :meth:`learn` per label, in order (``step`` > 1: the
        embedding student's heads take that many labels a step; see :class:`Student`).

        >>> from streamer.models.naive_bayes import NaiveBayesStudent
        >>> one, many = NaiveBayesStudent("nb"), NaiveBayesStudent("nb")
        >>> for text, label in [("fine film", "pos"), ("dull film", "neg")]:
        ...     one.learn(text, label)
        >>> many.learn_many(["fine film", "dull film"], ["pos", "neg"])
        >>> many.version, many.predict("fine") == one.predict("fine")
        (2, True)
        """
        self.learn_batch(texts, labels, step)
        self.version += len(texts)

    def warm_start(self, texts: list[str], labels: list[str]) -> None:
        """Learn texts the teacher labelled offline, before the stream (``version`` stays as it is).

        >>> from streamer.models.naive_bayes import NaiveBayesStudent
        >>> s = NaiveBayesStudent("nb"); s.warm_start(["fine film", "dull film"] * 5, ["pos", "neg"] * 5)
        >>> s.predict("fine")[0], s.version, s.warm_labels
        ('pos', 0, 10)
        """
        from threadpoolctl import threadpool_limits

        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts and {len(labels)} labels")
        with threadpool_limits(limits=1, user_api="blas"):  # thousands of steps on tiny matrices: 3x faster
            for start in range(0, len(texts), WARM_START_BATCH):  # the same student as one by one
                self.learn_batch(texts[start:start + WARM_START_BATCH], labels[start:start + WARM_START_BATCH])
        self.warm_labels += len(texts)

    def serving(self) -> "BaseStudent":
        """This student as predictors that never learn need it (a learner's snapshot): the student itself here;
        a student with state only learning uses (replay memory, optimiser moments) leaves it out of a copy."""
        return self

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "model": self.model, "warm_labels": self.warm_labels}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "BaseStudent":
        student = cls.__new__(cls)
        student.__dict__.update(state)
        return student


def most_probable(joint_log_likelihood: Mapping[str, float]) -> tuple[str | None, float]:
    """The label of highest joint log-likelihood and its normalised probability; ``(None, 0.0)`` when empty.

    Softmax over the classes without scipy's ``logsumexp``, which costs more than the model on a
    handful of classes.

    >>> label, p = most_probable({"pos": math.log(3), "neg": math.log(1)})
    >>> label, round(p, 2)
    ('pos', 0.75)
    """
    if not joint_log_likelihood:
        return None, 0.0
    label = max(joint_log_likelihood, key=joint_log_likelihood.__getitem__)
    best = joint_log_likelihood[label]
    return label, 1.0 / sum(math.exp(v - best) for v in joint_log_likelihood.values())


#: Feature buckets of every student: memory stays bounded however many distinct words a stream brings.
FEATURE_BUCKETS = 2**20


def hashed(features: Mapping[str, float]) -> dict[int, float]:
    """Features folded into :data:`FEATURE_BUCKETS` buckets by CRC-32 (stable across processes, unlike ``hash``).

    >>> hashed({"w=paris": 1, "w=rome": 1}) == {zlib.crc32(b"w=paris") % FEATURE_BUCKETS: 1,
    ...                                           zlib.crc32(b"w=rome") % FEATURE_BUCKETS: 1}
    True
    """
    out: dict[int, float] = {}
    for name, value in features.items():
        bucket = zlib.crc32(name.encode()) % FEATURE_BUCKETS
        out[bucket] = out.get(bucket, 0) + value
    return out
