"""A fresh student's head start: texts the teacher labelled offline, learned before the first event.

``streamer teacher train`` labels its own training split with the teacher it has just fine-tuned and saves the
texts and the teacher's labels beside the teacher's distilled embeddings (``warm-start.json`` in the folder
:func:`~streamer.models.embeddings.embeddings_folder` names); ``streamer teacher distill --dataset D`` (or
``--file F``) does the same for a teacher given by id or path. Every fresh student (a new worker, one whose
checkpoint no longer fits, each ``evaluate`` replay) learns them first when ``STREAMER_WARM_START`` is on (the
default), so it meets the stream knowing what the teacher answers on thousands of texts rather than nothing. They
do not count in the student's ``version`` (the labels it learned from the stream), and they carry the teacher's
version: labels of an older teacher are ignored.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = write_warm_start(folder, ["fine film", "dull film"], ["pos", "neg"], teacher_version="t1", source="demo")
>>> start = read_warm_start(folder, teacher_version="t1")
>>> start.texts, start.labels, start.source, read_warm_start(folder, teacher_version="t2")
(['fine film', 'dull film'], ['pos', 'neg'], 'demo', None)
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

#: the file beside the distilled embeddings that holds the teacher-labelled texts
WARM_START_FILE = "warm-start.json"


@dataclass(frozen=True)
class WarmStart:
    """Texts and the teacher's labels for them, from ``source`` (e.g. the teacher's training split)."""

    texts: list[str]
    labels: list[str]
    source: str
    teacher_version: str

    def __len__(self) -> int:
        return len(self.texts)


def write_warm_start(folder: Path, texts: list[str], labels: list[str], *, teacher_version: str,
                     source: str) -> Path:
    """Save ``texts`` and the teacher's ``labels`` for them into ``folder`` (replaced atomically)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps({"teacher_version": teacher_version, "source": source, "texts": texts, "labels": labels})
    fd, staging = tempfile.mkstemp(prefix=".warm-start-", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.chmod(staging, 0o644)  # readable by workers running as another user on a shared volume
    os.replace(staging, folder / WARM_START_FILE)
    return folder / WARM_START_FILE


def read_warm_start(folder: Path, *, teacher_version: str) -> WarmStart | None:
    """The warm start saved in ``folder``; ``None`` when there is none or it was labelled by another version
    of the teacher (logged)."""
    path = Path(folder) / WARM_START_FILE
    if not path.is_file():
        return None
    data = orjson.loads(path.read_bytes())
    if data.get("teacher_version") != teacher_version:
        log.warning("ignoring %s: labelled by teacher %s, the teacher is now %s (`streamer teacher distill "
                    "--dataset/--file` labels texts again)", path, data.get("teacher_version"), teacher_version)
        return None
    return WarmStart(list(data["texts"]), list(data["labels"]), str(data.get("source", "")), teacher_version)


__all__ = ["WARM_START_FILE", "WarmStart", "read_warm_start", "write_warm_start"]
