"""Named-entity recognition: a BIO tag per token, scored by entity-level F1.

A sentence's tokens are separated by single spaces in ``text``; its label is the tags,
separated by single spaces. Predictions gain an ``entities`` list with character offsets.

>>> task = NERTask()
>>> task.default_student, task.default_dataset
('ner-embed', 'wnut16')
>>> task.enrich({"label": "B-person O"}, "Ann sings")["entities"]
[{'type': 'person', 'text': 'Ann', 'start': 0, 'end': 3}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamer.datasets import Example
from streamer.models.bio import OUTSIDE, align_word_labels, entities, entity_f1
from streamer.models.tagger import NERStudent
from streamer.models.teacher import NERTeacher
from streamer.tasks.base import Task


class NERTask(Task):
    name = "ner"
    description = "named-entity recognition: a BIO tag per space-separated token"
    #: the default reads the teacher's distilled embeddings (word codes as token features)
    students = {"ner-embed": lambda resources: NERStudent(embeddings=resources.embeddings()),
                "ner": lambda _: NERStudent(binary=False), "ner-binary": lambda _: NERStudent(binary=True)}
    student_classes = {"ner-embed": NERStudent, "ner": NERStudent, "ner-binary": NERStudent}
    datasets = ("wnut16",)
    teacher_class = NERTeacher
    metric = "entity F1"
    compare_students = True  # full tagging against the reference's binary policy
    warm_starts_students = False  # not measured for NER: its students start from nothing, as before
    table_columns = (("F1 cascade", "f1_cascade"), ("F1 teacher", "f1_teacher_only"),
                     ("F1 student", "f1_student_only"), ("F1 rel.", "f1_cascade_relative_to_teacher"))

    def score(self, gold: Sequence[str], predicted: Sequence[str]) -> float:
        return entity_f1(gold, predicted)["f1"]

    def enrich(self, prediction: dict[str, Any], text: str) -> dict[str, Any]:
        prediction["entities"] = entities(text, prediction["label"])
        return prediction

    def blank_answer(self, text: str) -> str:
        return " ".join(OUTSIDE for _ in text.split(" "))

    def evaluation_figures(self, gold: Sequence[str], cascade: Sequence[str], teacher: Sequence[str],
                           student: Sequence[str]) -> dict[str, float | None]:
        f1_cascade, f1_teacher = self.score(gold, cascade), self.score(gold, teacher)
        return {"f1_cascade": f1_cascade, "f1_teacher_only": f1_teacher, "f1_student_only": self.score(gold, student),
                "f1_cascade_relative_to_teacher": round(f1_cascade / f1_teacher, 4) if f1_teacher else None}

    def live_figures(self, gold_by_id: Mapping[str, str], predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, float | None] = {}
        for name, source in (("student_answered", "student"), ("teacher_answered", "teacher"), ("all", None)):
            chosen = [p for p in predictions if source is None or p["source"] == source]
            out[name] = self.score([gold_by_id[p["id"]] for p in chosen], [p["label"] for p in chosen]) if chosen else None
        return {"entity_f1": out}

    def training_labels(self, examples: Sequence[Example]) -> list[str]:
        tags = {tag for e in examples for tag in e.label.split(" ")}
        return [OUTSIDE, *sorted(tags - {OUTSIDE})]

    def encode_training_batch(self, tokenizer: Any, batch: Sequence[Example], label2id: Mapping[str, int],
                              max_length: int) -> tuple[Any, Any]:
        import torch

        words = [e.text.split(" ") for e in batch]
        enc = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        target = [align_word_labels(enc.word_ids(i), e.label.split(" "), dict(label2id)) for i, e in enumerate(batch)]
        return enc, torch.tensor(target)
