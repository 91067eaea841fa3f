"""Static token embeddings distilled from the teacher (Model2Vec), and the text vectors students build from them.

``streamer teacher train`` distils them from the teacher it has just fine-tuned and saves them in
``<teacher dir>/static-embeddings/``; for a teacher given by id, or a directory without them, the first
command or worker that needs them distils them once (with progress, under a lock) and caches them:
beside the teacher when its directory is writable, else under ``<data_dir>/embeddings/``. They carry the
teacher's version: a teacher retrained in place gets its embeddings distilled again.

A text's vector is the mean of its tokens' rows (the tokenizer is the teacher's, without special
tokens), normalised to unit length. The table is loaded once per process and shared; pickling a
:class:`StaticEmbeddings` stores where it lives and which teacher version it came from, never the table,
so checkpoints stay small and refuse to restore onto embeddings of another teacher.

>>> import numpy as np, tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> table = StaticEmbeddings.write_example(folder, ["[UNK]", "good", "film"], dims=4)
>>> emb = StaticEmbeddings.load(folder)
>>> vectors = emb.embed(["good film", "???"])
>>> vectors.shape, round(float(np.linalg.norm(vectors[0])), 3), float(np.abs(vectors[1]).sum())
((2, 4), 1.0, 0.0)
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from streamer.models.word_cache import WordCache, word_cache_for

log = logging.getLogger(__name__)

#: where a teacher directory keeps its distilled embeddings
EMBEDDINGS_DIR = "static-embeddings"
META_FILE = "streamer_embeddings.json"
#: dimensions kept by PCA when distilling (256 in float16: about 15 MB for MiniLM's 30k-token vocabulary)
PCA_DIMS = 256
#: characters of a text that are tokenised (a static mean gains nothing from more; keeps huge texts cheap)
MAX_CHARS = 4000


class Tokens(NamedTuple):
    """Token ids of a batch of texts: all of them in one array, and how many belong to each text, in order."""

    flat: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, ids: list[list[int]]) -> "Tokens":
        """From one list of ids per text.

        >>> Tokens.of([[5, 7], [], [9]]).lengths.tolist()
        [2, 0, 1]
        """
        return cls(np.fromiter(chain.from_iterable(ids), dtype=np.int64),
                   np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids)))


class EmbeddingsError(RuntimeError):
    """The embeddings cannot be loaded or distilled, or are not the ones a checkpoint was built on."""


class StaticEmbeddings:
    """A token embedding table and its tokenizer: texts in, unit-length mean vectors out."""

    def __init__(self, folder: Path, table: np.ndarray, tokenizer: Any, teacher_version: str) -> None:
        self.folder = Path(folder)
        self.table = table
        self.tokenizer = tokenizer
        self.teacher_version = teacher_version
        unk = tokenizer.token_to_id(getattr(getattr(tokenizer, "model", None), "unk_token", None) or "[UNK]")
        self.unk_id = -1 if unk is None else unk
        #: ids by whitespace-separated words, each tokenised once (None: a tokenizer whose tokens cross words)
        self.word_cache = word_cache_for(tokenizer, self.unk_id)

    @property
    def dims(self) -> int:
        return int(self.table.shape[1])

    # --- loading: once per process --------------------------------------------------------

    _loaded: dict[Path, "StaticEmbeddings"] = {}

    @classmethod
    def load(cls, folder: Path, teacher_version: str | None = None) -> "StaticEmbeddings":
        """The embeddings in ``folder`` (shared within the process); :class:`EmbeddingsError` when missing, or
        when ``teacher_version`` is given and they come from another version of the teacher."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder).resolve()
        emb = cls._loaded.get(folder)
        if emb is None:
            meta = read_embeddings_meta(folder)
            if not meta:
                raise EmbeddingsError(f"no distilled embeddings in {folder}")
            arrays = load_file(str(folder / "model.safetensors"))
            table = np.asarray(arrays.get("embeddings", next(iter(arrays.values()))), dtype=np.float32)
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            emb = cls._loaded[folder] = cls(folder, table, tokenizer, str(meta.get("teacher_version", "")))
            log.info("static embeddings loaded from %s: %d tokens x %d dims (teacher %s)", folder, table.shape[0],
                     table.shape[1], emb.teacher_version)
        if teacher_version is not None and emb.teacher_version != teacher_version:
            raise EmbeddingsError(f"the embeddings in {folder} come from teacher {emb.teacher_version!r}, "
                                  f"not {teacher_version!r}")
        return emb

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as a reference (folder and teacher version), never as the table."""
        return StaticEmbeddings.load, (self.folder, self.teacher_version)

    # --- vectors --------------------------------------------------------------------------

    def token_ids(self, texts: list[str]) -> "Tokens":
        """The teacher tokenizer's ids of each text (no special tokens, unknown tokens left out), flattened once:
        word by word from :attr:`word_cache` when the tokenizer allows it (the same ids, 6-8x faster on one core)."""
        if self.word_cache is not None:
            return Tokens(*self.word_cache.tokens([t[:MAX_CHARS] for t in texts]))
        encodings = self.tokenizer.encode_batch_fast([t[:MAX_CHARS] for t in texts], add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        flat = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum()))
        known = flat != self.unk_id
        if not known.all():
            lengths = np.bincount(np.repeat(np.arange(len(texts)), lengths)[known], minlength=len(texts))
            flat = flat[known]
        return Tokens(flat, lengths)

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length row per text (zeros for a text with no known token)."""
        return self.mean_vectors(self.token_ids(texts))

    def mean_vectors(self, tokens: "Tokens") -> np.ndarray:
        """One unit-length row per text: the mean of its tokens' rows (zeros for a text without tokens).

        The sums are one sparse-by-dense product (texts x vocabulary counts, times the table): about 7x faster
        than gathering every token's row and summing per text.
        """
        from scipy.sparse import csr_matrix

        counts = csr_matrix((np.ones(len(tokens.flat), dtype=np.float32), tokens.flat,
                             np.concatenate(([0], np.cumsum(tokens.lengths)))),
                            shape=(len(tokens.lengths), self.table.shape[0]))
        sums = np.asarray(counts @ self.table, dtype=np.float32)
        return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def write_example(folder: Path, vocabulary: list[str], dims: int = 4, seed: int = 0) -> np.ndarray:
        """A tiny random table over a word-level ``vocabulary`` (first entry the unknown token), for examples."""
        from safetensors.numpy import save_file
        from tokenizers import Tokenizer, models, pre_tokenizers

        tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token=vocabulary[0]))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(folder / "tokenizer.json"))
        table = np.random.default_rng(seed).normal(size=(len(vocabulary), dims)).astype(np.float16)
        save_file({"embeddings": table}, str(folder / "model.safetensors"))
        (folder / META_FILE).write_bytes(orjson.dumps({"teacher_version": "example", "dims": dims}))
        return table


def word_cache_of(student: Any) -> WordCache | None:
    """The word cache of the static embeddings ``student`` reads (its own or its model's); ``None`` for a student
    without them or a tokenizer without a word cache."""
    embeddings = getattr(student, "embeddings", None) or getattr(getattr(student, "model", None), "embeddings", None)
    return embeddings.word_cache if isinstance(embeddings, StaticEmbeddings) else None


def read_embeddings_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not (path.is_file() and (Path(folder) / "model.safetensors").is_file()):
        return {}
    return orjson.loads(path.read_bytes())


def teacher_version_of(teacher_ref: str) -> str:
    """The version a teacher's embeddings carry: its training metadata's version, else its id or path."""
    from streamer.models.teacher import read_meta

    local = Path(teacher_ref)
    meta = read_meta(local) if local.is_dir() else {}
    return str(meta.get("version") or teacher_ref)


def embeddings_folder(teacher_ref: str, data_dir: Path) -> Path:
    """Where ``teacher_ref``'s embeddings live: inside a writable teacher directory, else in ``data_dir``."""
    local = Path(teacher_ref)
    if local.is_dir() and (read_embeddings_meta(local / EMBEDDINGS_DIR) or os.access(local, os.W_OK)):
        return local / EMBEDDINGS_DIR
    return Path(data_dir) / "embeddings" / re.sub(r"[^A-Za-z0-9._-]+", "--", teacher_ref.strip("/"))


def distill_embeddings(teacher_ref: str, folder: Path, *, pca_dims: int = PCA_DIMS, progress: bool = True) -> Path:
    """Distil static embeddings from the teacher's encoder into ``folder`` (replaced atomically).

    Model2Vec runs every vocabulary token through the teacher once (mean pooling, PCA to ``pca_dims``,
    float16); about 15 s on 2 CPU cores for MiniLM.
    """
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise EmbeddingsError(f"distilling embeddings needs model2vec and skeletoken ({exc}); "
                              "pip install model2vec==0.10.0 'skeletoken>=0.6,<0.7'") from exc
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    print(f"Distilling static embeddings from the teacher {teacher_ref} (Model2Vec, {pca_dims} dims; once, "
          f"saved to {folder}) ...", file=sys.stderr, flush=True)
    quiet = not progress and "TQDM_DISABLE" not in os.environ  # Model2Vec's own progress bar
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        model = distill(model_name=str(teacher_ref), pca_dims=pca_dims)
    except Exception as exc:  # noqa: BLE001 - whatever the model loader raises, say what failed
        raise EmbeddingsError(f"could not distil embeddings from {teacher_ref!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        if quiet:
            os.environ.pop("TQDM_DISABLE", None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".distilling-", dir=folder.parent))
    model.save_pretrained(str(staging))
    meta = {"teacher_version": teacher_version_of(teacher_ref), "teacher": str(teacher_ref), "pca_dims": pca_dims,
            "vocabulary": int(model.embedding.shape[0]), "seconds": round(time.perf_counter() - started, 1)}
    (staging / META_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    print(f"Static embeddings ready: {meta['vocabulary']} tokens x {pca_dims} dims in {meta['seconds']:.0f} s.",
          file=sys.stderr, flush=True)
    return folder


def ensure_embeddings(teacher_ref: str, data_dir: Path, *, progress: bool = True) -> Path:
    """The folder of ``teacher_ref``'s current embeddings, distilled now (once, under a lock) when missing or
    distilled from an older version of the teacher."""
    local = Path(teacher_ref)
    if not local.exists() and (teacher_ref.startswith((".", "/", "~")) or os.sep in teacher_ref and local.parent.exists()):
        raise EmbeddingsError(f"no teacher model at {teacher_ref}: the student reads the static embeddings distilled "
                              "from the teacher; train one with `streamer teacher train` or point --teacher-model / "
                              "STREAMER_TEACHER_MODEL at a model directory or id")
    folder = embeddings_folder(teacher_ref, data_dir)
    version = teacher_version_of(teacher_ref)
    if read_embeddings_meta(folder).get("teacher_version") == version:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker distilling the same teacher: wait for it
        if read_embeddings_meta(folder).get("teacher_version") != version:
            distill_embeddings(teacher_ref, folder, progress=progress)
    return folder


__all__ = ["EMBEDDINGS_DIR", "EmbeddingsError", "StaticEmbeddings", "Tokens", "distill_embeddings", "embeddings_folder",
           "ensure_embeddings", "word_cache_of"]
