"""Student checkpoints: the learned triage state and the ``labels`` offsets it has learned up to.

A checkpoint is written atomically (temporary file, then rename) so a crash mid-write
leaves the previous one intact. On start the worker restores it and replays only the
labels after the saved offsets, so a restart does not fall back to warm-up. Checkpoints
written before the package layout changed (format 1) still load: their class paths are
mapped to where the classes live now.

>>> import tempfile
>>> from streamer.models.naive_bayes import NaiveBayesStudent
>>> from streamer.triage.policies import FixedPolicy
>>> from streamer.triage.router import Triage
>>> path = Path(tempfile.mkdtemp()) / "student.ckpt"
>>> t = Triage(NaiveBayesStudent(), FixedPolicy(0.8), warmup_labels=0)
>>> t.learn("fine film", "pos", student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
>>> size = write_checkpoint(path, Checkpoint(t, {0: 1, 3: 0}))
>>> restored = read_checkpoint(path)
>>> restored.triage.student.version, restored.label_offsets
(1, {0: 1, 3: 0})
"""

from __future__ import annotations

import fcntl
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from streamer.triage.router import Triage

FORMAT_VERSION = 2
#: Formats this version reads (1: written before the package layout of tasks/models/triage).
READABLE_FORMATS = (1, 2)
#: Where format-1 checkpoints' classes and functions live now: (module, name) -> (module, name).
MOVED = {
    ("streamer.student", "Student"): ("streamer.models.naive_bayes", "NaiveBayesStudent"),
    ("streamer.student", "present"): ("streamer.models.naive_bayes", "present"),
    ("streamer.ner", "NERStudent"): ("streamer.models.tagger", "NERStudent"),
    ("streamer.triage", "Triage"): ("streamer.triage.router", "Triage"),
    **{("streamer.policies", name): ("streamer.triage.policies", name)
       for name in ("FixedPolicy", "PaperPolicy", "OnlinePolicy")},
}


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used."""


@dataclass
class Checkpoint:
    """A triage (student, policy, audit RNG) and, per ``labels`` partition, the next offset to learn."""

    triage: Triage
    label_offsets: dict[int, int]
    config: dict[str, Any] = field(default_factory=dict)
    written_time: float = field(default_factory=time.time)


def lock_checkpoint(path: Path) -> IO[bytes]:
    """Hold ``path``'s lock file for this process's lifetime; :class:`CheckpointError` if another worker has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise CheckpointError(f"another student worker is using the checkpoint {path}; give each worker its own "
                              f"(--checkpoint-path or STREAMER_CHECKPOINT_PATH)") from exc
    return handle


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> int:
    """Write ``checkpoint`` to ``path`` atomically; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = pickle.dumps({"format": FORMAT_VERSION, "triage": checkpoint.triage,
                         "label_offsets": dict(checkpoint.label_offsets), "config": checkpoint.config,
                         "written_time": time.time()},
                        protocol=pickle.HIGHEST_PROTOCOL)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(blob)


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, ``None`` when there is none; :class:`CheckpointError` when unreadable."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            state = _CheckpointUnpickler(fh).load()  # noqa: S301 - written by this worker
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
        raise CheckpointError(f"cannot read the student checkpoint {path}: {exc!r}; "
                              f"move it away to start from scratch") from exc
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a student checkpoint of a format this version reads "
                              f"{READABLE_FORMATS}; move it away to start from scratch")
    return Checkpoint(state["triage"], {int(p): int(o) for p, o in state["label_offsets"].items()},
                      state.get("config", {}), state["written_time"])


class _CheckpointUnpickler(pickle.Unpickler):
    """Reads checkpoints of every readable format: classes that moved are looked up where they are now."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = MOVED.get((module, name), (module, name))
        return super().find_class(module, name)
